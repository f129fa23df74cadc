//! `veil serve`: an HTTP/1.1 server that keeps a component instance after a request for the next
//! request with the same credential, up to `--reuse-instances N` requests each, or with
//! `--fresh-instances` runs a fresh instance per request (docs/architecture.md, "Instance reuse").
//!
//! Slow clients cannot starve it (docs/configuration.md, "Slow clients and overload"): a request's
//! body is read into memory by the host, within the component's `max_body_bytes` and
//! `--body-read-timeout-ms`, before the request waits (at most `--queue-timeout-ms`) for an
//! instance slot; at most `--max-connections` connections are open at once.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyIndices, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::cli::ServeArgs;
use crate::engine::{self, EngineSettings, HostServices, InstanceState};
use crate::lean::{self, bindings::Veil, bindings::VeilIndices, Entry};
use crate::manifest::Manifest;
use crate::outbound::AllowedHosts;
use crate::reuse::{IdlePools, Scope, Scoper};
use crate::spin::postgres::{PgSettings, Pools};
use crate::spin::sqlite::Databases;
use crate::variables::{effective, AppVariables, ComponentVariables};
use crate::{config_bail, ConfigError};

/// How long in-flight requests may run on after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The component's default `max_body_bytes` (1 MiB) and the most it accepts (64 MiB).
const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
const MAX_BODY_CEILING: usize = 64 << 20;
/// What `Retry-After` says to a client turned away with 503 `overloaded`, in seconds.
const RETRY_AFTER_SECS: &str = "1";
/// A kept instance whose linear memory grew past this is retired rather than kept: idle instances
/// hold at most this much memory each (a typical request never grows the initial 4 MiB).
const REUSE_MAX_MEMORY: usize = 16 << 20;
/// How often, at most, the host says again that the connection limit is reached.
const CONNECTION_LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

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

/// The export an instance answers HTTP requests through.
enum Door {
    WasiHttp(Proxy),
    Lean(Veil),
}

/// An instance with its store, kept between requests when reuse is on.
struct Warm {
    store: Store<InstanceState>,
    door: Door,
    /// Requests this instance has completed.
    served: u32,
    /// Which instance this is (`veil-debug-instance`): instances are numbered as they start.
    serial: u64,
}

pub(crate) struct Server {
    pre: ProxyPre<InstanceState>,
    /// The component's `wasi:http/incoming-handler` export.
    proxy_indices: ProxyIndices,
    /// Its `veil:gateway/http` export, when requests go through the lean door.
    lean_indices: Option<VeilIndices>,
    /// `--debug-host-calls`: each answer says how many variable reads its request made.
    debug_host_calls: bool,
    /// The component's `max_body_bytes`: the most body the host reads for it.
    body_limit: usize,
    /// How long the headers, then the whole body, of a request may take to arrive.
    body_read_timeout: Duration,
    /// How long a request may wait for an instance slot.
    queue_timeout: Duration,
    /// `dev_mode = true`: the host's own answers carry `veil-dev-mode: true`, as the component's do.
    dev_mode: bool,
    /// `--debug-scan-memory`: the bytes counted in an instance's memory after each request.
    scan_memory: Option<Vec<u8>>,
    /// Requests one instance may serve (`--reuse-instances`); 1 = a fresh instance per request.
    reuse_limit: u32,
    /// Instances that completed their last request cleanly, by the scope of their credential.
    idle: IdlePools<Warm>,
    /// Derives a request's scope from its credential headers.
    scoper: Scoper,
    /// The pool slots in all (the permits' count): running instances plus idle ones fit in it.
    capacity: usize,
    /// The most instances kept idle at once (`--reuse-max-idle`, at most `capacity`).
    max_idle: usize,
    /// The serial number of the next instance.
    next_serial: std::sync::atomic::AtomicU64,
    services: Arc<HostServices>,
    route: Route,
    request_timeout: Duration,
    permits: Arc<Semaphore>,
    verbose: bool,
    local_addr: SocketAddr,
    /// Azure Functions: a leading `/api` (the Functions host's default route prefix) is removed
    /// before routing, so that `/api/v1/...` and `/v1/...` reach the same routes.
    strip_api_prefix: bool,
}

/// Where the host takes its requests from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `veil serve`: HTTP/1.1 on `--listen`.
    Serve,
    /// `veil azure-functions`: HTTP/1.1 on `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`, requests
    /// forwarded unchanged by the Functions host, `/api` prefix accepted (docs/deploy/azure-functions.md).
    AzureFunctions,
    /// `veil lambda` (or the binary invoked as `bootstrap`): events from the Lambda runtime API.
    Lambda,
}

impl Mode {
    /// Whether settings may also come from plain environment names (app settings, Lambda
    /// environment) beside `SPIN_VARIABLE_*`.
    fn platform(self) -> bool {
        self != Mode::Serve
    }
}

/// Removes a leading `/api` segment from the request's path (the query is kept).
fn strip_api<B>(req: &mut Request<B>) {
    let Some(pq) = req.uri().path_and_query() else { return };
    let rest = match pq.as_str().strip_prefix("/api") {
        Some(rest) if rest.starts_with('/') || rest.starts_with('?') => rest.to_string(),
        Some("") => "/".to_string(),
        _ => return,
    };
    let rest = if rest.starts_with('?') { format!("/{rest}") } else { rest };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = http::uri::PathAndQuery::try_from(rest) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Spin's answer for a path no trigger route matches.
fn not_found() -> Response<HyperOutgoingBody> {
    let mut response = Response::new(body("Not Found"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

pub(crate) fn body(bytes: impl Into<Bytes>) -> HyperOutgoingBody {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// A JSON error the host answers itself, with the headers the component puts on its own.
fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    dev_mode: bool,
) -> Response<HyperOutgoingBody> {
    let json = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut response = Response::new(body(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if dev_mode {
        headers.insert("veil-dev-mode", HeaderValue::from_static("true"));
    }
    response
}

/// The component's `max_body_bytes` as the component reads it: unset or empty → 1 MiB; a value it
/// would refuse (it then answers 500 `misconfigured`) → the ceiling, so that the request reaches it.
fn body_limit(value: Option<&str>) -> usize {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_BODY_CEILING).contains(&n) => n,
            _ => MAX_BODY_CEILING,
        },
    }
}

fn set_header<B>(req: &mut Request<B>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        req.headers_mut().insert(name, v);
    }
}

/// Interrupts the guest at `deadline` (checked at every epoch tick, which also yields).
pub(crate) fn arm_deadline(store: &mut Store<InstanceState>, deadline: Instant) {
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
    fn error(&self, status: StatusCode, code: &str, message: &str) -> Response<HyperOutgoingBody> {
        error_response(status, code, message, self.dev_mode)
    }

    fn internal_error(&self) -> Response<HyperOutgoingBody> {
        self.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the component failed while handling the request",
        )
    }

    fn timeout_error(&self) -> Response<HyperOutgoingBody> {
        self.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "timeout",
            "the component did not finish handling the request in time",
        )
    }

    /// The component's own 413 (src/api: `body_too_large`), word for word.
    fn body_too_large(&self) -> Response<HyperOutgoingBody> {
        self.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the body is larger than max_body_bytes ({})", self.body_limit),
        )
    }

    fn overloaded(&self) -> Response<HyperOutgoingBody> {
        let mut response = self.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "every instance is busy; retry after the time in Retry-After",
        );
        response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        response
    }

    /// Reads the whole body into memory before the request takes an instance slot, so that a slow
    /// or stalled client holds only its connection: within the component's `max_body_bytes` (413
    /// as the component answers it) and `--body-read-timeout-ms` (408 `request_timeout`).
    async fn read_body(
        &self,
        req: Request<Incoming>,
    ) -> Result<Request<Full<Bytes>>, Response<HyperOutgoingBody>> {
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.body_limit as u64) {
            return Err(self.body_too_large());
        }
        let (parts, incoming) = req.into_parts();
        let limited = Limited::new(incoming, self.body_limit);
        match tokio::time::timeout(self.body_read_timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(Request::from_parts(parts, Full::new(collected.to_bytes()))),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(self.body_too_large()),
            Ok(Err(_)) => Err(self.error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request body could not be read",
            )),
            Err(_) => Err(self.error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                &format!(
                    "the request body did not arrive within {} ms (--body-read-timeout-ms)",
                    self.body_read_timeout.as_millis()
                ),
            )),
        }
    }

    /// A fresh instance in a fresh store, with the export requests go through.
    async fn instantiate(&self, deadline: Instant) -> wasmtime::Result<Warm> {
        // Idle instances hold pool slots: leave one for this request (it holds a permit, so the
        // running ones, itself included, fit in the pool).
        if self.reuse_limit > 1 {
            let running = self.capacity.saturating_sub(self.permits.available_permits());
            drop(self.idle.shrink_to(self.max_idle.min(self.capacity.saturating_sub(running.max(1)))));
        }
        let new_store = || {
            let mut store = Store::new(self.pre.engine(), InstanceState::new(&self.services));
            arm_deadline(&mut store, deadline);
            store.limiter(|state| state);
            store
        };
        let mut store = new_store();
        let instance = match self.pre.instance_pre().instantiate_async(&mut store).await {
            Ok(instance) => instance,
            // A slot still held by an idle instance (a race with another request): free them all
            // and try once more.
            Err(_) if self.reuse_limit > 1 && !self.idle.shrink_to(0).is_empty() => {
                store = new_store();
                self.pre.instance_pre().instantiate_async(&mut store).await?
            }
            Err(e) => return Err(e),
        };
        let door = match &self.lean_indices {
            Some(indices) => Door::Lean(indices.load(&mut store, &instance)?),
            None => Door::WasiHttp(self.proxy_indices.load(&mut store, &instance)?),
        };
        let serial = self.next_serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Warm { store, door, served: 0, serial })
    }

    /// An idle instance of the request's scope, if there is one.
    fn take_idle(&self, scope: Scope) -> Option<Warm> {
        if self.reuse_limit <= 1 {
            return None;
        }
        let (warm, expired) = self.idle.take(scope, Instant::now());
        drop(expired);
        warm
    }

    /// Keeps an instance that completed a request for the next request of the same scope, unless
    /// reuse is off, it has served its quota, its memory grew past [`REUSE_MAX_MEMORY`], or the
    /// request left anything in its resource table (a connection, a stream, a key-value handle):
    /// nothing host-side of one request may reach the next.
    fn put_back(&self, scope: Scope, warm: Warm) {
        if self.reuse_limit <= 1 || warm.served >= self.reuse_limit {
            return;
        }
        if warm.store.data().memory_bytes > REUSE_MAX_MEMORY {
            if self.verbose {
                eprintln!("veil: an instance's memory grew past {} MiB; retiring it", REUSE_MAX_MEMORY >> 20);
            }
            return;
        }
        if !warm.store.data().table_is_empty() {
            if self.verbose {
                eprintln!("veil: an instance left host resources open; discarding it");
            }
            return;
        }
        // Dropped (outside the pools' lock) when it returns: what had to make room, what expired.
        drop(self.idle.put(scope, warm, self.max_idle, Instant::now()));
    }

    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<HyperOutgoingBody> {
        if self.strip_api_prefix {
            strip_api(&mut req);
        }
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let response = self.dispatch(req, peer, &path).await;
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
        req: Request<Incoming>,
        peer: SocketAddr,
        path: &str,
    ) -> Response<HyperOutgoingBody> {
        if self.route.path_info(path).is_none() {
            return not_found();
        }

        // The body first, then a slot: a slow body must not hold an instance.
        let req = match self.read_body(req).await {
            Ok(req) => req,
            Err(response) => return response,
        };
        self.respond(req, peer, None).await
    }

    /// Runs a request whose body is already in memory through an instance; `deadline` (a Lambda
    /// invocation's) shortens the request deadline when it comes first.
    pub(crate) async fn respond(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
        peer: SocketAddr,
        deadline: Option<Instant>,
    ) -> Response<HyperOutgoingBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let Some(path_info) = self.route.path_info(&path).map(str::to_string) else {
            return not_found();
        };
        // Only an instance kept for exactly this credential may serve it (src/reuse.rs).
        let scope = if self.reuse_limit > 1 { self.scoper.scope(req.headers()) } else { Scope::Anonymous };

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

        let permit =
            match tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return self.internal_error(),
                Err(_) => {
                    if self.verbose {
                        eprintln!(
                            "veil: {method} {path}: no instance free within {} ms (--queue-timeout-ms)",
                            self.queue_timeout.as_millis()
                        );
                    }
                    return self.overloaded();
                }
            };

        let own = Instant::now() + self.request_timeout;
        let deadline = deadline.map_or(own, |d| d.min(own));
        if deadline <= Instant::now() {
            // A Lambda invocation whose time is already up: nothing is run past the deadline.
            eprintln!("veil: {method} {path}: the deadline passed before the request started");
            return self.timeout_error();
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let server = self.clone();
        let timeout = deadline.saturating_duration_since(Instant::now());
        let label = format!("{method} {path}");
        let counts = Arc::new(engine::DebugCounts::default());
        let request_counts = counts.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let run = async {
                let mut warm = match server.take_idle(scope) {
                    Some(mut w) => {
                        arm_deadline(&mut w.store, deadline);
                        w
                    }
                    None => server.instantiate(deadline).await?,
                };
                warm.store.data_mut().counts = request_counts.clone();
                request_counts.instance.store(warm.serial, std::sync::atomic::Ordering::Relaxed);
                match &warm.door {
                    Door::WasiHttp(proxy) => {
                        let (request, outparam) = {
                            let mut http = warm.store.data_mut().http();
                            let req = req
                                .map(|b| b.map_err(|never: Infallible| -> hyper::Error { match never {} }));
                            let request = http.new_incoming_request(Scheme::Http, req)?;
                            (request, http.new_response_outparam(sender)?)
                        };
                        proxy
                            .wasi_http_incoming_handler()
                            .call_handle(&mut warm.store, request, outparam)
                            .await?;
                    }
                    Door::Lean(veil) => {
                        let request = lean::request(req).await;
                        let answer = veil.veil_gateway_http().call_handle(&mut warm.store, &request).await?;
                        drop(request);
                        match lean::response(answer) {
                            Some(response) => {
                                let _ = sender.send(Ok(response));
                            }
                            None => eprintln!("veil: {label}: the component answered with an invalid status"),
                        }
                    }
                }
                warm.served += 1;
                if let Some(pattern) = &server.scan_memory {
                    let n = engine::count_in_memory(&mut warm.store, pattern);
                    request_counts.memory_matches.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                if server.verbose && server.reuse_limit > 1 {
                    eprintln!(
                        "veil: {label}: instance request {} of at most {}",
                        warm.served, server.reuse_limit
                    );
                }
                server.put_back(scope, warm);
                Ok::<(), wasmtime::Error>(())
            };
            match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(())) => Outcome::Completed,
                Ok(Err(e)) if e.is::<RequestTimedOut>() => {
                    eprintln!(
                        "veil: {label}: interrupted after {} ms (request deadline)",
                        timeout.as_millis()
                    );
                    Outcome::TimedOut
                }
                Err(_) => {
                    eprintln!("veil: {label}: abandoned after {} ms (request deadline)", timeout.as_millis());
                    Outcome::TimedOut
                }
                Ok(Err(e)) => {
                    eprintln!("veil: {label}: the component trapped: {e:?}");
                    Outcome::Failed
                }
            }
        });

        match receiver.await {
            Ok(Ok(mut response)) => {
                if self.scan_memory.is_some() {
                    // The scan runs after the guest returns, which may be after it answered.
                    let completed = matches!(task.await, Ok(Outcome::Completed));
                    if completed {
                        use std::sync::atomic::Ordering::Relaxed;
                        response.headers_mut().insert(
                            "veil-debug-memory-matches",
                            HeaderValue::from(counts.memory_matches.load(Relaxed)),
                        );
                    }
                }
                if self.debug_host_calls {
                    use std::sync::atomic::Ordering::Relaxed;
                    let h = response.headers_mut();
                    h.insert("veil-debug-instance", HeaderValue::from(counts.instance.load(Relaxed)));
                    h.insert(
                        "veil-debug-variable-reads",
                        HeaderValue::from(counts.variable_reads.load(Relaxed)),
                    );
                    h.insert("veil-debug-memory-grows", HeaderValue::from(counts.memory_grows.load(Relaxed)));
                    h.insert(
                        "veil-debug-sql-statements",
                        HeaderValue::from(counts.sql_statements.load(Relaxed)),
                    );
                }
                response
            }
            Ok(Err(code)) => {
                eprintln!("veil: {method} {path}: the component responded with error {code:?}");
                self.internal_error()
            }
            Err(_) => match task.await {
                Ok(Outcome::TimedOut) => self.timeout_error(),
                Ok(Outcome::Completed) => {
                    eprintln!("veil: {method} {path}: the component returned without a response");
                    self.internal_error()
                }
                Ok(Outcome::Failed) => self.internal_error(),
                Err(e) => {
                    eprintln!("veil: {method} {path}: the request task failed: {e}");
                    self.internal_error()
                }
            },
        }
    }
}

/// `SIGINT` and `SIGTERM`, registered before the host says it is listening: from then on either
/// one stops it cleanly (exit 0), however soon it comes. Registering them lazily, on the first
/// poll of a future, left a window in which the default action (death by signal) applied.
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers; must run inside the tokio runtime.
    pub fn register() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Resolves at the first `SIGINT` or `SIGTERM` since [`ShutdownSignals::register`].
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Connection handling: the cap on open connections and hyper's settings for each.
struct Connections {
    permits: Arc<Semaphore>,
    max: usize,
    /// `--body-read-timeout-ms`, also the headers' (and a kept-alive connection's idle) limit.
    header_timeout: Duration,
}

async fn accept_loop(
    server: Arc<Server>,
    listener: TcpListener,
    connections: Connections,
    mut signals: ShutdownSignals,
) {
    let graceful = GracefulShutdown::new();
    let shutdown = signals.recv();
    tokio::pin!(shutdown);
    let mut last_limit_log: Option<Instant> = None;
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's listen backlog until
        // one closes (each is bounded by the header, body and idle timeouts).
        let permit = match connections.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_limit_log.is_none_or(|t| t.elapsed() >= CONNECTION_LIMIT_LOG_EVERY) {
                    last_limit_log = Some(Instant::now());
                    eprintln!(
                        "veil: {} connections open (--max-connections); new ones wait in the listen backlog",
                        connections.max
                    );
                }
                tokio::select! {
                    permit = connections.permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
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
                    .header_read_timeout(connections.header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _permit = permit;
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

/// `veil serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    run_http(args, Mode::Serve)
}

/// The host, ready to take requests: everything but where they come from.
pub struct Prepared {
    pre: ProxyPre<InstanceState>,
    proxy_indices: ProxyIndices,
    lean_indices: Option<VeilIndices>,
    body_limit: usize,
    dev_mode: bool,
    services: Arc<HostServices>,
    route: Route,
    capacity: u32,
    verbose: bool,
    mode: Mode,
    scan_memory: Option<Vec<u8>>,
}

impl Prepared {
    /// The pre-instance and the host services an instance's store is built from (`veil wit-call`).
    pub(crate) fn instance_parts(&self) -> (&ProxyPre<InstanceState>, &Arc<HostServices>) {
        (&self.pre, &self.services)
    }

    /// The server for requests arriving at `local_addr` (the `Host` of a request without one).
    pub(crate) fn server(self, args: &ServeArgs, local_addr: SocketAddr) -> Result<Arc<Server>> {
        let debug_host_calls =
            args.debug_host_calls || std::env::var("VEIL_DEBUG_HOST_CALLS").is_ok_and(|v| v.trim() == "1");
        let reuse_limit = if args.fresh_instances { 1 } else { args.reuse_instances.max(1) };
        Ok(Arc::new(Server {
            pre: self.pre,
            proxy_indices: self.proxy_indices,
            lean_indices: self.lean_indices,
            debug_host_calls,
            body_limit: self.body_limit,
            body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
            queue_timeout: Duration::from_millis(args.queue_timeout_ms),
            dev_mode: self.dev_mode,
            scan_memory: self.scan_memory,
            reuse_limit,
            idle: IdlePools::new(Duration::from_secs(args.reuse_idle_secs.max(1))),
            scoper: Scoper::new().context("cannot read /dev/urandom for the instance pools' key")?,
            capacity: self.capacity as usize,
            max_idle: (args.reuse_max_idle as usize).min(self.capacity as usize),
            next_serial: std::sync::atomic::AtomicU64::new(1),
            services: self.services,
            route: self.route,
            request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
            permits: Arc::new(Semaphore::new(self.capacity as usize)),
            verbose: self.verbose,
            local_addr,
            strip_api_prefix: self.mode == Mode::AzureFunctions,
        }))
    }
}

/// The state directory when `--state-dir` is not given: `.veil` beside the manifest for
/// `veil serve`; on a platform, whose application directory is read-only, `<tmp>/veil`.
fn default_state_dir(manifest: &Manifest, mode: Mode) -> std::path::PathBuf {
    if mode.platform() {
        std::env::temp_dir().join("veil")
    } else {
        manifest.dir.join(".veil")
    }
}

/// Reads the manifest and variables, opens the stores and compiles the component.
pub fn prepare(args: &ServeArgs, mode: Mode) -> Result<Prepared> {
    let verbose = args.verbose || std::env::var("VEIL_LOG").is_ok_and(|v| v.eq_ignore_ascii_case("debug"));
    let manifest = Manifest::load(&args.manifest)?;
    let (trigger, component) = manifest.http_component()?;
    let app = AppVariables::from_env(&manifest.variables, mode.platform())?;
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

    let state_dir = args.state_dir.clone().unwrap_or_else(|| default_state_dir(&manifest, mode));
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| ConfigError(format!("cannot create state directory {}: {e}", state_dir.display())))?;
    let databases = Databases::open(
        &state_dir,
        &component.sqlite_databases,
        Duration::from_millis(args.sqlite_busy_timeout_ms),
    )?;

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
    let kv_limits = crate::spin::key_value::Limits {
        max_entries: args.kv_max_entries as usize,
        max_bytes: usize::try_from(u64::from(args.kv_max_mib) << 20)?,
    };
    let key_value = match &args.kv_file {
        None => crate::spin::key_value::KeyValueStores::new(&component.key_value_stores, kv_limits),
        Some(path) => {
            crate::spin::key_value::KeyValueStores::in_file(&component.key_value_stores, kv_limits, path)?
        }
    };
    let kv_where = match key_value.file() {
        None => "in memory".to_string(),
        Some(path) => format!("in the file {}", path.display()),
    };
    for label in key_value.labels() {
        eprintln!(
            "veil: key-value store `{label}` ({kv_where}, at most {} entries and {} MiB; least recently used evicted first)",
            args.kv_max_entries, args.kv_max_mib
        );
    }
    // The same rule as the component's (`src/vars.rs` parse_bool): exactly `true` or `false`.
    let dev_mode_value = effective(&app, Some(&variables), "dev_mode").map(|v| v.expose().trim().to_string());
    let dev_mode = dev_mode_value.as_deref() == Some("true");
    if dev_mode {
        eprintln!("veil: WARNING: dev mode (dev_mode = true): dev-only keys and tokens are accepted; never use this in production");
    } else if dev_mode_value.as_deref().is_some_and(|v| !v.is_empty() && v != "false") {
        eprintln!("veil: WARNING: dev_mode must be true or false; the component answers every request with 500 misconfigured");
    }
    // The component's rule (src/config.rs, `check_production_auth`): outside dev mode, tokens
    // must be addressed to this deployment and, with JWKS keys, come from a named issuer.
    if !dev_mode {
        let set = |name: &str| {
            effective(&app, Some(&variables), name).is_some_and(|v| !v.expose().trim().is_empty())
        };
        if !set("jwt_audience") {
            eprintln!("veil: error: jwt_audience is not set and dev_mode is not true: the component refuses to serve (every request is answered 500 misconfigured); see docs/auth.md");
        } else if (set("jwt_jwks_url") || set("jwt_jwks")) && !set("jwt_issuer") {
            eprintln!("veil: error: jwt_issuer is not set while JWKS keys are configured and dev_mode is not true: the component refuses to serve (every request is answered 500 misconfigured); see docs/auth.md");
        } else if set("jwt_jwks_url") {
            let url =
                effective(&app, Some(&variables), "jwt_jwks_url").map(|v| v.expose().trim().to_string());
            if !url.is_some_and(|u| u.starts_with("https://")) {
                eprintln!("veil: error: jwt_jwks_url is not an https:// URL and dev_mode is not true: the component refuses to serve (every request is answered 500 misconfigured); see docs/auth.md");
            } else if !set("jwt_cache_key") {
                eprintln!("veil: error: jwt_jwks_url is set without jwt_cache_key and dev_mode is not true: the component refuses to serve (every request is answered 500 misconfigured); see docs/auth.md");
            }
        }
    }
    // The component's own limit, as it will read it (an undeclared variable reads as unset).
    let body_limit = body_limit(variables.get("max_body_bytes").ok().map(|v| v.expose()));

    let max_memory_bytes = usize::try_from(u64::from(args.max_memory_mib) << 20)?;
    let scan_memory = match args.debug_scan_memory.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
        None => None,
        Some(hex) => match decode_hex(hex) {
            Some(bytes) => {
                eprintln!("veil: debug: counting a pattern in instances' memory after each request (guest debugging on; slower)");
                Some(bytes)
            }
            None => config_bail!(
                "--debug-scan-memory (VEIL_DEBUG_SCAN_MEMORY) must be an even number of hex digits"
            ),
        },
    };
    let settings = EngineSettings {
        max_instances: args.max_instances,
        max_memory_bytes,
        cache_dir: (!args.no_cache).then(|| state_dir.join("cache")),
        guest_debug: scan_memory.is_some(),
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
    let proxy_indices = ProxyIndices::new(pre.instance_pre()).map_err(engine::wasmtime_err)?;
    let lean_indices = match args.entry {
        Entry::WasiHttp => None,
        Entry::Lean => {
            match VeilIndices::new(pre.instance_pre()) {
                Ok(indices) => Some(indices),
                Err(e) => {
                    eprintln!("veil: the component does not export veil:gateway/http ({e}); serving through wasi:http");
                    None
                }
            }
        }
    };
    let entry = if lean_indices.is_some() { Entry::Lean } else { Entry::WasiHttp };
    eprintln!("veil: HTTP entry: {}", entry.name());

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

    Ok(Prepared {
        pre,
        proxy_indices,
        lean_indices,
        body_limit,
        dev_mode,
        services,
        route,
        capacity,
        verbose,
        mode,
        scan_memory,
    })
}

/// Bytes from hex digits (either case); `None` for anything else or an odd count.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// The address to listen on: `--listen`, or for Azure Functions `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`.
fn listen_address(args: &ServeArgs, mode: Mode) -> Result<String> {
    if mode != Mode::AzureFunctions {
        return Ok(args.listen.clone());
    }
    match std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Ok(port) if port.trim().parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(format!("127.0.0.1:{}", port.trim()))
        }
        Ok(_) => config_bail!("FUNCTIONS_CUSTOMHANDLER_PORT must be a port number (1-65535)"),
        Err(_) => config_bail!(
            "FUNCTIONS_CUSTOMHANDLER_PORT is not set: `veil azure-functions` is started by the Functions host"
        ),
    }
}

/// `veil serve` and `veil azure-functions`: HTTP/1.1 until SIGINT or SIGTERM.
pub fn run_http(args: ServeArgs, mode: Mode) -> Result<()> {
    let listen = listen_address(&args, mode)?;
    let prepared = prepare(&args, mode)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(async move {
        // Before anything can reach us: a signal from now on is a clean stop.
        let signals = ShutdownSignals::register()?;
        let listener =
            TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let local_addr = listener.local_addr()?;
        let server = prepared.server(&args, local_addr)?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "veil: listening on http://{local_addr}")?;
        stdout.flush()?;
        drop(stdout);
        let connections = Connections {
            permits: Arc::new(Semaphore::new(args.max_connections as usize)),
            max: args.max_connections as usize,
            header_timeout: Duration::from_millis(args.body_read_timeout_ms),
        };
        accept_loop(server, listener, connections, signals).await;
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

#[cfg(test)]
mod tests {
    use super::{body_limit, Route, DEFAULT_MAX_BODY_BYTES, MAX_BODY_CEILING};

    #[test]
    fn the_body_limit_follows_the_components_variable() {
        assert_eq!(body_limit(None), DEFAULT_MAX_BODY_BYTES);
        assert_eq!(body_limit(Some("  ")), DEFAULT_MAX_BODY_BYTES);
        assert_eq!(body_limit(Some(" 2048 ")), 2048);
        assert_eq!(body_limit(Some("67108864")), MAX_BODY_CEILING);
        // Values the component refuses (500 misconfigured): the host lets the request reach it.
        for bad in ["0", "67108865", "-1", "1k"] {
            assert_eq!(body_limit(Some(bad)), MAX_BODY_CEILING, "{bad}");
        }
    }

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
