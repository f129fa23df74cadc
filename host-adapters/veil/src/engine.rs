//! The wasmtime side: engine and pooling allocator, the linker, per-instance state, the pre-instance.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceTable, ResourceType};
use wasmtime::{Cache, CacheConfig, Config, Enabled, Engine, PoolingAllocationConfig, ProfilingStrategy};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::outbound::{AllowedHosts, OutboundHttp};
use crate::spin::{self, postgres::Pools, sqlite::Databases, SpinView};
use crate::variables::ComponentVariables;

/// Converts a wasmtime error (its own type since wasmtime 42) into an `anyhow::Error`,
/// keeping the whole chain in the message.
pub fn wasmtime_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// How often the epoch advances; also the guest's preemption interval.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Pool slots per instance: one linear memory (what Rust components have), a few tables and
/// core instances. A component needing more memories gets proportionally fewer concurrent
/// instances (see [`instance_capacity`]) rather than failing at instantiation.
const MEMORIES_PER_INSTANCE: u32 = 1;
const TABLES_PER_INSTANCE: u32 = 4;
const CORE_INSTANCES_PER_INSTANCE: u32 = 20;
/// Resident bytes kept (and reset in place) per pool slot instead of being decommitted.
const KEEP_RESIDENT: usize = 1 << 20;

/// Sizing of the engine and its pooling allocator.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Component instances that may be alive at once.
    pub max_instances: u32,
    /// The most a linear memory may grow to.
    pub max_memory_bytes: usize,
    /// Where wasmtime caches compiled code, if anywhere.
    pub cache_dir: Option<PathBuf>,
    /// Compile with guest debugging, so that the host may read instances' linear memory
    /// (`--debug-scan-memory`, tests only: slower code, no signal-based traps).
    pub guest_debug: bool,
}

/// Builds the engine: Cranelift, epoch interruption, and a pooling allocator sized by
/// `max_instances`. Each memory slot keeps wasmtime's default reservation (4 GiB + 32 MiB guard,
/// address space only, so bounds checks stay elided): 100 instances reserve about 400 GiB rather
/// than the terabytes of the 1000-slot default. `max_memory_bytes` caps what a memory may use.
pub fn new_engine(settings: &EngineSettings) -> Result<Engine> {
    let n = settings.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n * CORE_INSTANCES_PER_INSTANCE)
        .total_memories(n * MEMORIES_PER_INSTANCE)
        .total_tables(n * TABLES_PER_INSTANCE)
        .total_stacks(n)
        .max_memory_size(settings.max_memory_bytes)
        // DESIGN §13: reset slots in place rather than `madvise` them away (fewer TLB shootdowns).
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT)
        .decommit_batch_size(64);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        // No collector is compiled in (no `gc-*` feature), and Rust components need none.
        .gc_support(false)
        .allocation_strategy(pool)
        .profiler(profiling_strategy()?);
    if settings.guest_debug {
        config.guest_debug(true);
    }
    if let Some(dir) = &settings.cache_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
        let mut cache = CacheConfig::new();
        cache.with_directory(std::path::absolute(dir)?);
        config.cache(Some(Cache::new(cache).map_err(wasmtime_err)?));
    }
    Engine::new(&config).map_err(wasmtime_err)
}

/// `VEIL_PROFILE=perfmap` (or `jitdump`) makes wasmtime describe the guest's compiled code to
/// `perf`, so that `perf record` attributes samples to guest functions (benches/profile.sh).
fn profiling_strategy() -> Result<ProfilingStrategy> {
    match std::env::var("VEIL_PROFILE").ok().as_deref().map(str::trim) {
        None | Some("") | Some("none") => Ok(ProfilingStrategy::None),
        Some("perfmap") => Ok(ProfilingStrategy::PerfMap),
        Some("jitdump") => Ok(ProfilingStrategy::JitDump),
        Some(other) => crate::config_bail!("VEIL_PROFILE must be none, perfmap or jitdump, not `{other}`"),
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as the process lives.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("veil-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| eprintln!("veil: cannot start the epoch thread: {e}"));
}

/// Compiles (or loads from the cache) the component at `path`.
pub fn load_component(engine: &Engine, path: &Path) -> Result<Component> {
    let bytes = std::fs::read(path)
        .map_err(|e| crate::ConfigError(format!("cannot read component {}: {e}", path.display())))?;
    Component::new(engine, &bytes)
        .map_err(wasmtime_err)
        .with_context(|| format!("cannot compile component {}", path.display()))
}

/// How many instances of `component` the pool holds at once, given its memories and tables.
pub fn instance_capacity(component: &Component, max_instances: u32) -> Result<u32> {
    let n = max_instances.max(1);
    let Some(req) = component.resources_required() else {
        return Ok(n);
    };
    let by_memories = (n * MEMORIES_PER_INSTANCE).checked_div(req.num_memories).unwrap_or(n);
    let by_tables = (n * TABLES_PER_INSTANCE).checked_div(req.num_tables).unwrap_or(n);
    let capacity = n.min(by_memories).min(by_tables);
    if capacity == 0 {
        anyhow::bail!(
            "the component needs {} memories and {} tables per instance, more than the pool holds",
            req.num_memories,
            req.num_tables
        );
    }
    eprintln!(
        "veil: pool: up to {capacity} concurrent instances ({} memories, {} tables each)",
        req.num_memories, req.num_tables
    );
    Ok(capacity)
}

/// Everything an instance of the served component shares with the others.
pub struct HostServices {
    pub variables: ComponentVariables,
    pub databases: Databases,
    pub postgres: Pools,
    pub key_value: spin::key_value::KeyValueStores,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub environment: Vec<(String, String)>,
}

/// The per-request store data.
pub struct InstanceState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHttp,
    table: ResourceTable,
    services: Arc<HostServices>,
    /// What the guest did during the current request (`--debug-host-calls`); the server swaps in
    /// fresh counts for each request.
    pub counts: Arc<DebugCounts>,
    /// The size of the instance's linear memory, in bytes (kept by the resource limiter).
    pub memory_bytes: usize,
}

/// Per-request counts for `--debug-host-calls`: variable reads (host calls), growths of the
/// guest's linear memory, and SQL statements the guest ran (`spin:sqlite` and `spin:postgres`).
#[derive(Debug, Default)]
pub struct DebugCounts {
    pub variable_reads: AtomicU32,
    pub memory_grows: AtomicU32,
    /// `--debug-scan-memory`: occurrences of the pattern in the instance's memory after the request.
    pub memory_matches: AtomicU32,
    /// The serial number of the instance that served the request.
    pub instance: std::sync::atomic::AtomicU64,
    pub sql_statements: AtomicU32,
}

/// Follows the size of linear memory (instance reuse retires an instance that grew large) and
/// counts its growths (`--debug-host-calls`); every growth is allowed here, the pooling allocator
/// enforces `--max-memory-mib`.
impl wasmtime::ResourceLimiter for InstanceState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The first call is the instance's initial memory, not a growth.
        if current > 0 {
            self.counts.memory_grows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.memory_bytes = self.memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl InstanceState {
    pub fn new(services: &Arc<HostServices>) -> Self {
        let mut wasi = WasiCtx::builder();
        // Guest stdout goes to our stderr: our stdout carries only the `listening` line.
        wasi.stdout(std::io::stderr()).stderr(std::io::stderr()).envs(&services.environment);
        InstanceState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHttp::new(services.allowed_hosts.clone()),
            table: ResourceTable::new(),
            services: services.clone(),
            counts: Arc::default(),
            memory_bytes: 0,
        }
    }
}

/// How many times `pattern` occurs in the linear memories of the store's instances (each memory
/// once). Needs an engine built with `guest_debug` (otherwise nothing is visible: 0).
pub fn count_in_memory(store: &mut wasmtime::Store<InstanceState>, pattern: &[u8]) -> u32 {
    if pattern.is_empty() {
        return 0;
    }
    let mut seen = std::collections::HashSet::new();
    let mut matches = 0u32;
    for instance in store.debug_all_instances() {
        let mut index = 0;
        while let Some(memory) = instance.debug_memory(&mut *store, index) {
            index += 1;
            if !seen.insert(memory.data_ptr(&*store) as usize) {
                continue;
            }
            let data = memory.data(&*store);
            let n = data.windows(pattern.len()).filter(|w| *w == pattern).count();
            matches = matches.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
    matches
}

impl InstanceState {
    /// No host resource (connection, stream, key-value store, request) is left in the table.
    pub fn table_is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl SpinView for InstanceState {
    fn sqlite(&mut self) -> spin::sqlite::SqliteView<'_> {
        spin::sqlite::SqliteView {
            databases: &self.services.databases,
            table: &mut self.table,
            statements: &self.counts.sql_statements,
        }
    }

    fn postgres(&mut self) -> spin::postgres::PgView<'_> {
        spin::postgres::PgView {
            pools: &self.services.postgres,
            allowed: &self.services.allowed_hosts,
            table: &mut self.table,
            statements: &self.counts.sql_statements,
        }
    }

    fn variables(&mut self) -> spin::variables::VariablesView<'_> {
        spin::variables::VariablesView {
            variables: &self.services.variables,
            reads: &self.counts.variable_reads,
        }
    }

    fn key_value(&mut self) -> spin::key_value::KeyValueView<'_> {
        spin::key_value::KeyValueView { stores: &self.services.key_value, table: &mut self.table }
    }
}

/// True for imports veil implements; anything else is stubbed to trap when called.
fn is_provided(import: &str) -> bool {
    import.starts_with("wasi:")
        || import.starts_with("spin:sqlite/sqlite@3.")
        || import.starts_with("spin:postgres/postgres@4.")
        || import.starts_with("fermyon:spin/variables@2.")
        || import.starts_with("fermyon:spin/key-value@2.")
}

/// Defines every import veil does not implement (say `spin:key-value`) so that instantiation
/// succeeds and only a call traps. Wasmtime's `define_unknown_imports_as_traps` is not used: it
/// also re-defines semver-matched WASI instances (`wasi:http/types@0.2.0` against the linker's
/// newer 0.2.x), replacing their resources with dummies.
fn stub_unprovided(
    linker: &mut Linker<InstanceState>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<Vec<String>> {
    let mut stubbed = Vec::new();
    let mut next_resource = 0u32;
    let component_type = component.component_type();
    for (name, item) in component_type.imports(engine) {
        if is_provided(name) {
            continue;
        }
        match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let mut root = linker.root();
                let mut stub = root.instance(name)?;
                for (export, item) in instance.exports(engine) {
                    match item.ty {
                        ComponentItem::ComponentFunc(_) => {
                            let what = format!("{name}#{export}");
                            stub.func_new(export, move |_, _, _, _| {
                                wasmtime::bail!("`{what}` is not provided by veil")
                            })?;
                        }
                        ComponentItem::Resource(_) => {
                            stub.resource(export, ResourceType::host_dynamic(next_resource), |_, _| Ok(()))?;
                            next_resource += 1;
                        }
                        _ => {}
                    }
                }
            }
            ComponentItem::ComponentFunc(_) => {
                let what = name.to_string();
                linker
                    .root()
                    .func_new(name, move |_, _, _, _| wasmtime::bail!("`{what}` is not provided by veil"))?;
            }
            _ => {}
        }
        stubbed.push(name.to_string());
    }
    Ok(stubbed)
}

/// Links WASI 0.2, `wasi:http` and the Spin interfaces, then pre-instantiates the component.
/// Returns the pre-instance and the imports that will trap because veil does not provide them.
pub fn pre_instantiate(
    engine: &Engine,
    component: &Component,
) -> Result<(ProxyPre<InstanceState>, Vec<String>)> {
    let mut linker: Linker<InstanceState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasmtime_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wasmtime_err)?;
    spin::add_to_linker(&mut linker).map_err(wasmtime_err)?;

    let unprovided = stub_unprovided(&mut linker, engine, component).map_err(wasmtime_err)?;
    let pre = linker.instantiate_pre(component).map_err(wasmtime_err)?;
    let pre = ProxyPre::new(pre)
        .map_err(wasmtime_err)
        .context("the component does not export wasi:http/incoming-handler")?;
    Ok((pre, unprovided))
}
