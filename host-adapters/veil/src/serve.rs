//! `veil serve`: an HTTP/1.1 server that runs one fresh component instance per request, or,
//! with `--reuse-instances N`, keeps instances for up to N requests each (see
//! docs/architecture.md, "Instance reuse").

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::cli::ServeArgs;
use crate::engine::{self, EngineSettings, HostServices, InstanceState};
use crate::manifest::Manifest;
use crate::outbound::AllowedHosts;
use crate::spin::postgres::{PgSettings, Pools};
use crate::spin::sqlite::Databases;
use crate::variables::{effective, AppVariables, ComponentVariables};
use crate::{config_bail, ConfigError};

/// How long in-flight requests may run on after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A Spin HTTP route: exact (`/a`) or wildcard (`/a/...`, `/...`).
#[derive(Debug, Clone)]
pub struct Route {
    raw: String,
    prefix: String,
    wildcard: bool,
}

impl Route {
    pub fn parse(raw: &str) -> Route {
        let (prefix, wildcard) = match raw.strip_suffix("/...") {
            Some(p) => (p, true),
            None => (raw.trim_end_matches('/'), false),
        };
        Route { raw: raw.to_string(), prefix: prefix.to_string(), wildcard }
    }

    /// The part of `path` after the route's prefix (Spin's `spin-path-info`), if it matches.
    pub fn path_info<'p>(&self, path: &'p str) -> Option<&'p str> {
        if !self.wildcard {
            let trimmed = path.trim_end_matches('/');
            return (trimmed == self.prefix).then_some("");
        }
        let rest = path.strip_prefix(self.prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// Why a request produced no component response.
#[derive(Debug)]
struct RequestTimedOut;

impl std::fmt::Display for RequestTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request deadline passed")
    }
}

impl std::error::Error for RequestTimedOut {}

enum Outcome {
    Completed,
    TimedOut,
    Failed,
}

/// An instance with its store, kept between requests when reuse is on.
struct Warm {
    store: Store<InstanceState>,
    proxy: Proxy,
    /// Requests this instance has completed.
    served: u32,
}

struct Server {
    pre: ProxyPre<InstanceState>,
    /// Requests one instance may serve (`--reuse-instances`); 1 = a fresh instance per request.
    reuse_limit: u32,
    /// Instances that completed their last request cleanly, most recent last.
    idle: std::sync::Mutex<Vec<Warm>>,
    services: Arc<HostServices>,
    route: Route,
    request_timeout: Duration,
    permits: Arc<Semaphore>,
    verbose: bool,
    local_addr: SocketAddr,
}

fn body(bytes: impl Into<Bytes>) -> HyperOutgoingBody {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

fn error_response(code: &str, message: &str) -> Response<HyperOutgoingBody> {
    let json = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut response = Response::new(body(json));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn internal_error() -> Response<HyperOutgoingBody> {
    error_response("internal", "the component failed while handling the request")
}

fn timeout_error() -> Response<HyperOutgoingBody> {
    error_response("timeout", "the component did not finish handling the request in time")
}

fn set_header(req: &mut Request<Incoming>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        req.headers_mut().insert(name, v);
    }
}

/// Interrupts the guest at `deadline` (checked at every epoch tick, which also yields).
fn arm_deadline(store: &mut Store<InstanceState>, deadline: Instant) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(RequestTimedOut))
        } else {
            // Yield every tick so one busy guest cannot starve a worker thread.
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

impl Server {
    /// A fresh instance in a fresh store.
    async fn instantiate(&self, deadline: Instant) -> wasmtime::Result<Warm> {
        let mut store = Store::new(self.pre.engine(), InstanceState::new(&self.services));
        arm_deadline(&mut store, deadline);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Warm { store, proxy, served: 0 })
    }

    fn take_idle(&self) -> Option<Warm> {
        if self.reuse_limit <= 1 {
            return None;
        }
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }

    /// Keeps an instance that completed a request for the next one, unless reuse is off, it has
    /// served its quota, or the request left anything in its resource table (a connection, a
    /// stream, a key-value handle): nothing host-side of one request may reach the next.
    fn put_back(&self, warm: Warm) {
        if self.reuse_limit <= 1 || warm.served >= self.reuse_limit {
            return;
        }
        if !warm.store.data().table_is_empty() {
            if self.verbose {
                eprintln!("veil: an instance left host resources open; discarding it");
            }
            return;
        }
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(warm);
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<HyperOutgoingBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let response = self.dispatch(req, peer, &method, &path).await;
        if self.verbose {
            eprintln!(
                "veil: {method} {path} {} {}ms",
                response.status().as_u16(),
                start.elapsed().as_millis()
            );
        }
        response
    }

    async fn dispatch(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        method: &http::Method,
        path: &str,
    ) -> Response<HyperOutgoingBody> {
        let Some(path_info) = self.route.path_info(path).map(str::to_string) else {
            let mut response = Response::new(body("Not Found"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        };

        // The request metadata Spin gives components.
        if !req.headers().contains_key(http::header::HOST) {
            set_header(&mut req, "host", &self.local_addr.to_string());
        }
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        let component_route = self.route.raw.strip_suffix("/...").unwrap_or(&self.route.raw).to_string();
        set_header(&mut req, "spin-full-url", &format!("http://{host}{path_and_query}"));
        set_header(&mut req, "spin-path-info", &path_info);
        set_header(&mut req, "spin-matched-route", &self.route.raw);
        set_header(&mut req, "spin-raw-component-route", &self.route.raw);
        set_header(&mut req, "spin-component-route", &component_route);
        set_header(&mut req, "spin-base-path", "/");
        set_header(&mut req, "spin-client-addr", &peer.to_string());

        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return internal_error();
        };

        let deadline = Instant::now() + self.request_timeout;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let server = self.clone();
        let timeout = self.request_timeout;
        let label = format!("{method} {path}");
        let task = tokio::spawn(async move {
            let _permit = permit;
            let run = async {
                let mut warm = match server.take_idle() {
                    Some(mut w) => {
                        arm_deadline(&mut w.store, deadline);
                        w
                    }
                    None => server.instantiate(deadline).await?,
                };
                let (request, outparam) = {
                    let mut http = warm.store.data_mut().http();
                    let request = http.new_incoming_request(Scheme::Http, req)?;
                    (request, http.new_response_outparam(sender)?)
                };
                warm.proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut warm.store, request, outparam)
                    .await?;
                warm.served += 1;
                if server.verbose && server.reuse_limit > 1 {
                    eprintln!(
                        "veil: {label}: instance request {} of at most {}",
                        warm.served, server.reuse_limit
                    );
                }
                server.put_back(warm);
                Ok::<(), wasmtime::Error>(())
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(Ok(())) => Outcome::Completed,
                Ok(Err(e)) if e.is::<RequestTimedOut>() => {
                    eprintln!("veil: {label}: interrupted after {}s (request deadline)", timeout.as_secs());
                    Outcome::TimedOut
                }
                Err(_) => {
                    eprintln!("veil: {label}: abandoned after {}s (request deadline)", timeout.as_secs());
                    Outcome::TimedOut
                }
                Ok(Err(e)) => {
                    eprintln!("veil: {label}: the component trapped: {e:?}");
                    Outcome::Failed
                }
            }
        });

        match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => {
                eprintln!("veil: {method} {path}: the component responded with error {code:?}");
                internal_error()
            }
            Err(_) => match task.await {
                Ok(Outcome::TimedOut) => timeout_error(),
                Ok(Outcome::Completed) => {
                    eprintln!("veil: {method} {path}: the component returned without a response");
                    internal_error()
                }
                Ok(Outcome::Failed) => internal_error(),
                Err(e) => {
                    eprintln!("veil: {method} {path}: the request task failed: {e}");
                    internal_error()
                }
            },
        }
    }
}

/// Resolves `SIGINT` or `SIGTERM`.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                eprintln!("veil: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn accept_loop(server: Arc<Server>, listener: TcpListener) {
    let graceful = GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // E.g. EMFILE: back off instead of spinning.
                        eprintln!("veil: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                let verbose = server.verbose;
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req, peer).await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        if verbose {
                            eprintln!("veil: connection from {peer}: {e}");
                        }
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    eprintln!("veil: shutting down; finishing in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        eprintln!("veil: in-flight requests still running after {}s; exiting", SHUTDOWN_GRACE.as_secs());
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    let verbose = args.verbose || std::env::var("VEIL_LOG").is_ok_and(|v| v.eq_ignore_ascii_case("debug"));
    let manifest = Manifest::load(&args.manifest)?;
    let (trigger, component) = manifest.http_component()?;
    let app = AppVariables::from_env(&manifest.variables)?;
    let variables = ComponentVariables::resolve(&app, &component.variables)?;

    let mut hosts = Vec::new();
    let mut shown_hosts = Vec::new();
    for entry in &component.allowed_outbound_hosts {
        match app.expand(entry)? {
            Some(v) => {
                shown_hosts.push(if v.is_secret() { "<secret>".to_string() } else { v.expose().to_string() });
                hosts.push(v.expose().to_string());
            }
            None => config_bail!("allowed_outbound_hosts entry `{entry}` refers to a variable with no value"),
        }
    }
    let allowed_hosts = AllowedHosts::parse(&hosts)?;

    let state_dir = args.state_dir.clone().unwrap_or_else(|| manifest.dir.join(".veil"));
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| ConfigError(format!("cannot create state directory {}: {e}", state_dir.display())))?;
    let databases = Databases::open(&state_dir, &component.sqlite_databases)?;

    eprintln!(
        "veil: component `{}` from {} (route {})",
        component.id,
        component.source.display(),
        trigger.route
    );
    for db in databases.iter() {
        eprintln!("veil: sqlite database `{}` at {} (WAL)", db.name(), db.path().display());
    }
    eprintln!(
        "veil: allowed outbound hosts: {}",
        if shown_hosts.is_empty() { "none".to_string() } else { shown_hosts.join(", ") }
    );
    let key_value = crate::spin::key_value::KeyValueStores::new(&component.key_value_stores);
    for label in key_value.labels() {
        eprintln!("veil: key-value store `{label}` (in memory)");
    }
    if effective(&app, Some(&variables), "dev_mode").is_some_and(|v| v.expose().trim() == "true") {
        eprintln!("veil: WARNING: dev mode (dev_mode = true): dev-only keys and tokens are accepted; never use this in production");
    }

    let max_memory_bytes = usize::try_from(u64::from(args.max_memory_mib) << 20)?;
    let settings = EngineSettings {
        max_instances: args.max_instances,
        max_memory_bytes,
        cache_dir: (!args.no_cache).then(|| state_dir.join("cache")),
    };
    let engine = engine::new_engine(&settings)?;
    let started = Instant::now();
    let wasm = engine::load_component(&engine, &component.source)?;
    eprintln!("veil: component ready in {} ms", started.elapsed().as_millis());
    let capacity = engine::instance_capacity(&wasm, settings.max_instances)?;
    let (pre, unprovided) = engine::pre_instantiate(&engine, &wasm)?;
    for import in &unprovided {
        eprintln!("veil: warning: import `{import}` is not provided by veil; calling it traps");
    }
    engine::start_epoch_ticker(&engine);

    let services = Arc::new(HostServices {
        variables,
        databases,
        key_value,
        postgres: Pools::new(PgSettings {
            max_per_address: args.pg_pool_size as usize,
            statement_timeout: Duration::from_millis(args.pg_statement_timeout_ms),
            acquire_timeout: Duration::from_secs(5),
            verbose,
        }),
        allowed_hosts: Arc::new(allowed_hosts),
        environment: component.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    });
    let route = Route::parse(&trigger.route);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local_addr = listener.local_addr()?;
        let server = Arc::new(Server {
            pre,
            reuse_limit: args.reuse_instances.max(1),
            idle: std::sync::Mutex::new(Vec::new()),
            services,
            route,
            request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
            permits: Arc::new(Semaphore::new(capacity as usize)),
            verbose,
            local_addr,
        });
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "veil: listening on http://{local_addr}")?;
        stdout.flush()?;
        drop(stdout);
        accept_loop(server, listener).await;
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes() {
        let all = Route::parse("/...");
        assert_eq!(all.path_info("/"), Some("/"));
        assert_eq!(all.path_info("/v1/protect"), Some("/v1/protect"));
        let api = Route::parse("/api/...");
        assert_eq!(api.path_info("/api"), Some(""));
        assert_eq!(api.path_info("/api/x/y"), Some("/x/y"));
        assert_eq!(api.path_info("/apix"), None);
        let exact = Route::parse("/health");
        assert_eq!(exact.path_info("/health"), Some(""));
        assert_eq!(exact.path_info("/health/"), Some(""));
        assert_eq!(exact.path_info("/health/x"), None);
        let root = Route::parse("/");
        assert_eq!(root.path_info("/"), Some(""));
        assert_eq!(root.path_info("/x"), None);
    }
}
