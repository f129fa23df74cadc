//! `veil run`: runs a WASI 0.2 command component (such as the in-wasm core benchmark) on the same
//! engine settings as `serve`'s compiler, with the caller's stdio and arguments and nothing else:
//! no files, no network, no environment.

use anyhow::{Context, Result};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::cli::RunArgs;
use crate::engine::wasmtime_err;

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let mut config = Config::new();
    config.wasm_component_model(true).gc_support(false);
    let engine = Engine::new(&config).map_err(wasmtime_err)?;
    let component = Component::from_file(&engine, &args.component)
        .map_err(wasmtime_err)
        .with_context(|| format!("cannot load {}", args.component.display()))?;
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasmtime_err)?;
    let name = args.component.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio().arg(name).args(&args.args);
    let mut store = Store::new(&engine, State { wasi: wasi.build(), table: ResourceTable::new() });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = rt.block_on(async {
        let command = Command::instantiate_async(&mut store, &component, &linker).await?;
        command.wasi_cli_run().call_run(&mut store).await
    });
    match outcome.map_err(wasmtime_err)? {
        Ok(()) => Ok(()),
        Err(()) => anyhow::bail!("{} exited with a failure status", args.component.display()),
    }
}
