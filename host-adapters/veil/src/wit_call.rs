//! `veil wit-call` (hidden; for tests): calls the component's exported `veil:gateway/protection`
//! interface in process, as another component composed with Veil would, instead of HTTP. It reads
//! `{"calls": [...]}` (JSON) on stdin, runs each call in a fresh instance (as a request would be),
//! and prints `{"answers": [...]}` with each answer in the HTTP API's shape (`{"results": [...]}`
//! with `{"value"}` or `{"error": {"code", "message"}}` items, or `{"error": {...}}` for the whole
//! call), so a test can compare the two doors answer for answer.
//!
//! A call: `{"op": "protect", "credential", "scheme", "values": [strings], "subject"?, "context"?}`,
//! `{"op": "unprotect" | "rewrap", "credential", "tokens": [...], "subject"?, "context"?}` or
//! `{"op": "mask", "credential", "scheme", "values": [...]}`; `credential` is what would be the
//! HTTP `Authorization` header.

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};
use wasmtime::Store;

use crate::cli::{ServeArgs, WitCallArgs};
use crate::engine::{HostServices, InstanceState};
use crate::serve::{self, Mode};

use crate::lean::bindings;
use bindings::exports::veil::gateway::protection::Error as WitError;

/// How long one call may run.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// The most stdin may hold.
const MAX_INPUT_BYTES: u64 = 16 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    calls: Vec<Call>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Call {
    Protect {
        credential: String,
        scheme: String,
        values: Vec<String>,
        subject: Option<String>,
        context: Option<String>,
    },
    Unprotect {
        credential: String,
        tokens: Vec<String>,
        subject: Option<String>,
        context: Option<String>,
    },
    Rewrap {
        credential: String,
        tokens: Vec<String>,
        subject: Option<String>,
        context: Option<String>,
    },
    Mask {
        credential: String,
        scheme: String,
        values: Vec<String>,
    },
}

fn error_json(e: &WitError) -> Value {
    json!({"error": {"code": e.code, "message": e.message}})
}

/// A batch's answer in the HTTP shape; `value` turns one item's success into JSON.
fn answer<T>(r: Result<Vec<Result<T, WitError>>, WitError>, value: impl Fn(T) -> Value) -> Value {
    match r {
        Ok(items) => {
            let results: Vec<Value> = items
                .into_iter()
                .map(|i| match i {
                    Ok(v) => json!({ "value": value(v) }),
                    Err(e) => error_json(&e),
                })
                .collect();
            json!({ "results": results })
        }
        Err(e) => error_json(&e),
    }
}

/// Runs one call in a fresh instance.
async fn run_call(
    pre: &wasmtime_wasi_http::p2::bindings::ProxyPre<InstanceState>,
    services: &Arc<HostServices>,
    call: Call,
) -> Result<Value> {
    let instance_pre = pre.instance_pre();
    let mut store = Store::new(instance_pre.engine(), InstanceState::new(services));
    serve::arm_deadline(&mut store, Instant::now() + CALL_DEADLINE);
    let instance = instance_pre.instantiate_async(&mut store).await.map_err(crate::engine::wasmtime_err)?;
    let veil = bindings::Veil::new(&mut store, &instance).map_err(crate::engine::wasmtime_err)?;
    let p = veil.veil_gateway_protection();
    let traps = crate::engine::wasmtime_err;
    Ok(match call {
        Call::Protect { credential, scheme, values, subject, context } => {
            let values: Vec<Vec<u8>> = values.into_iter().map(String::into_bytes).collect();
            let r = p
                .call_protect(
                    &mut store,
                    &credential,
                    &scheme,
                    &values,
                    subject.as_deref(),
                    context.as_deref(),
                )
                .await
                .map_err(traps)?;
            answer(r, Value::String)
        }
        Call::Unprotect { credential, tokens, subject, context } => {
            let r = p
                .call_unprotect(&mut store, &credential, &tokens, subject.as_deref(), context.as_deref())
                .await
                .map_err(traps)?;
            answer(r, |bytes| match String::from_utf8(bytes) {
                Ok(s) => Value::String(s),
                Err(e) => json!({ "bytes": e.into_bytes() }),
            })
        }
        Call::Rewrap { credential, tokens, subject, context } => {
            let r = p
                .call_rewrap(&mut store, &credential, &tokens, subject.as_deref(), context.as_deref())
                .await
                .map_err(traps)?;
            answer(r, Value::String)
        }
        Call::Mask { credential, scheme, values } => {
            let r = p.call_mask(&mut store, &credential, &scheme, &values).await.map_err(traps)?;
            answer(r, |v| v.map_or(Value::Null, Value::String))
        }
    })
}

pub fn run(args: WitCallArgs) -> Result<()> {
    let mut text = String::new();
    std::io::stdin().take(MAX_INPUT_BYTES).read_to_string(&mut text).context("cannot read stdin")?;
    let input: Input = serde_json::from_str(&text).map_err(|e| {
        crate::ConfigError(format!("stdin is not a call list (line {}, column {})", e.line(), e.column()))
    })?;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut host = Defaults::parse_from(["veil-wit-call"]).serve;
    host.manifest = args.manifest;
    host.state_dir = args.state_dir;
    host.max_instances = 1;
    host.pg_pool_size = 2;
    let prepared = serve::prepare(&host, Mode::Serve)?;
    let (pre, services) = prepared.instance_parts();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let answers = runtime.block_on(async {
        let mut answers = Vec::with_capacity(input.calls.len());
        for call in input.calls {
            answers.push(run_call(pre, services, call).await?);
        }
        anyhow::Ok(answers)
    })?;
    println!("{}", json!({ "answers": answers }));
    Ok(())
}
