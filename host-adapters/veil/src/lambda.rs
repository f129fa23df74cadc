//! `veil lambda` (also the binary invoked as `bootstrap`): an AWS Lambda custom runtime. It polls
//! the runtime API at `$AWS_LAMBDA_RUNTIME_API` (`GET /2018-06-01/runtime/invocation/next`),
//! turns each event into a request for the component, and posts the answer back
//! (`.../invocation/{id}/response`), or an error (`.../invocation/{id}/error`); a start-up
//! failure goes to `/2018-06-01/runtime/init/error` before the process exits.
//!
//! Events (docs/deploy/aws-lambda.md):
//! * Lambda Function URLs and API Gateway HTTP APIs, payload format 2.0 (`rawPath`,
//!   `rawQueryString`, `cookies`, comma-joined `headers`, `isBase64Encoded` bodies);
//! * API Gateway payload format 1.0 (`httpMethod`, `path`, `multiValueHeaders`,
//!   `multiValueQueryStringParameters`), answered in the same format;
//! * direct invocations `{"action": "job_step", "job": "<id>"}` (EventBridge schedules, Step
//!   Functions): `POST /v1/jobs/<id>/step` with the event's `authorization`, if any; and
//!   `{"action": "rekey", "scheme"?, "kek"?}`: KEK rotation of one scheme or every scheme of the
//!   credential's tenant, driven as `veil rekey` drives it (crate::rekey).
//!
//! Each invocation's `Lambda-Runtime-Deadline-Ms` caps the request deadline (less a margin in
//! which the answer can still be posted).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::cli::ServeArgs;
use crate::serve::{self, Mode, Server, ShutdownSignals};
use crate::{config_bail, ConfigError};

/// The runtime API's version prefix.
const API: &str = "/2018-06-01/runtime";
/// Time kept back from an invocation's deadline to post the answer.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);
/// The most an event may be (Lambda's own synchronous payload limit is 6 MB).
const MAX_EVENT_BYTES: usize = 8 << 20;
/// How often `next` may fail in a row before the runtime gives up.
const NEXT_ATTEMPTS: u32 = 5;

/// The runtime API at `host:port`.
struct RuntimeApi {
    authority: String,
}

/// One answer from the runtime API.
struct ApiAnswer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl RuntimeApi {
    async fn call(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<ApiAnswer> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot reach the Lambda runtime API at {}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("Lambda runtime API: handshake failed")?;
        let connection = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        let response = send.send_request(request).await.context("Lambda runtime API: request failed")?;
        let (parts, body) = response.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_EVENT_BYTES);
        let body = limited
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime API: cannot read the answer: {e}"))?
            .to_bytes();
        drop(send);
        connection.abort();
        Ok(ApiAnswer { status: parts.status, headers: parts.headers, body })
    }

    /// Posts to `path` and checks for the 202 the API gives an accepted report.
    async fn post(&self, path: &str, extra: &[(&str, &str)], body: Vec<u8>) -> Result<()> {
        let answer = self.call(Method::POST, path, extra, body).await?;
        if answer.status != StatusCode::ACCEPTED {
            anyhow::bail!("Lambda runtime API: POST {path} answered {}", answer.status.as_u16());
        }
        Ok(())
    }

    /// Reports invocation `id` as failed with `error_type` and `message`.
    async fn invocation_error(&self, id: &str, error_type: &str, message: &str) -> Result<()> {
        let body = error_body(error_type, message);
        self.post(
            &format!("{API}/invocation/{id}/error"),
            &[("lambda-runtime-function-error-type", error_type)],
            body,
        )
        .await
    }

    async fn init_error(&self, error_type: &str, message: &str) -> Result<()> {
        let body = error_body(error_type, message);
        self.post(&format!("{API}/init/error"), &[("lambda-runtime-function-error-type", error_type)], body)
            .await
    }
}

/// The runtime API's `ErrorRequest` document.
fn error_body(error_type: &str, message: &str) -> Vec<u8> {
    json!({ "errorMessage": message, "errorType": error_type, "stackTrace": [] }).to_string().into_bytes()
}

/// An event that is no request Veil understands; the message never repeats the event's values.
#[derive(Debug, PartialEq, Eq)]
struct InvalidEvent(&'static str);

/// Which answer format the event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Payload format 2.0 (Function URLs, HTTP APIs).
    V2,
    /// Payload format 1.0 (REST APIs, HTTP APIs so configured).
    V1,
    /// A direct invocation: `{"statusCode", "body"}` with the body as JSON.
    Direct,
}

/// An event turned into a request for the component.
struct Translated {
    request: Request<Full<Bytes>>,
    peer: SocketAddr,
    format: Format,
}

fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn header_name(name: &str) -> Result<HeaderName, InvalidEvent> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| InvalidEvent("a header name is not valid HTTP"))
}

fn header_value(value: &str) -> Result<HeaderValue, InvalidEvent> {
    HeaderValue::from_str(value).map_err(|_| InvalidEvent("a header value is not valid HTTP"))
}

fn event_body(event: &Value) -> Result<Bytes, InvalidEvent> {
    let Some(text) = str_field(event, "body") else {
        return Ok(Bytes::new());
    };
    if event.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(|_| InvalidEvent("`body` is not valid base64 though `isBase64Encoded` is true"))
    } else {
        Ok(Bytes::copy_from_slice(text.as_bytes()))
    }
}

fn peer_of(ip: Option<&str>) -> SocketAddr {
    let ip = ip.and_then(|s| s.parse::<IpAddr>().ok()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    SocketAddr::new(ip, 0)
}

/// What a query key or value keeps unencoded: RFC 3986's unreserved characters.
const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes one query pair (1.0 events carry decoded values).
fn push_query(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.extend(percent_encoding::utf8_percent_encode(key, QUERY));
    out.push('=');
    out.extend(percent_encoding::utf8_percent_encode(value, QUERY));
}

fn build(
    method: &str,
    path_and_query: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, InvalidEvent> {
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| InvalidEvent("the HTTP method is not valid"))?;
    if !path_and_query.starts_with('/') {
        return Err(InvalidEvent("the request path does not start with `/`"));
    }
    let uri = http::Uri::try_from(path_and_query)
        .map_err(|_| InvalidEvent("the request path is not a valid URI"))?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Payload format 2.0: headers comma-joined already, cookies apart, the query raw.
fn from_v2(event: &Value) -> Result<Translated, InvalidEvent> {
    let http = event.get("requestContext").and_then(|c| c.get("http"));
    let method = http
        .and_then(|h| str_field(h, "method"))
        .ok_or(InvalidEvent("`requestContext.http.method` is missing"))?;
    let path = str_field(event, "rawPath").ok_or(InvalidEvent("`rawPath` is missing"))?;
    let mut target = path.to_string();
    if let Some(q) = str_field(event, "rawQueryString").filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(q);
    }
    let mut headers = HeaderMap::new();
    if let Some(map) = event.get("headers").and_then(Value::as_object) {
        for (name, value) in map {
            let value = value.as_str().ok_or(InvalidEvent("a header value is not a string"))?;
            headers.append(header_name(name)?, header_value(value)?);
        }
    }
    if let Some(cookies) = event.get("cookies").and_then(Value::as_array) {
        let cookies: Vec<&str> = cookies.iter().filter_map(Value::as_str).collect();
        if !cookies.is_empty() {
            headers.insert(http::header::COOKIE, header_value(&cookies.join("; "))?);
        }
    }
    if !headers.contains_key(http::header::HOST) {
        if let Some(domain) = event.get("requestContext").and_then(|c| str_field(c, "domainName")) {
            headers.insert(http::header::HOST, header_value(domain)?);
        }
    }
    let peer = peer_of(http.and_then(|h| str_field(h, "sourceIp")));
    Ok(Translated { request: build(method, &target, headers, event_body(event)?)?, peer, format: Format::V2 })
}

/// Payload format 1.0: `multiValueHeaders` and `multiValueQueryStringParameters` win over the
/// single-valued maps, as API Gateway fills both.
fn from_v1(event: &Value) -> Result<Translated, InvalidEvent> {
    let method = str_field(event, "httpMethod").ok_or(InvalidEvent("`httpMethod` is missing"))?;
    let path = str_field(event, "path").ok_or(InvalidEvent("`path` is missing"))?;
    let mut query = String::new();
    if let Some(multi) = event.get("multiValueQueryStringParameters").and_then(Value::as_object) {
        for (key, values) in multi {
            for v in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
                push_query(&mut query, key, v);
            }
        }
    } else if let Some(single) = event.get("queryStringParameters").and_then(Value::as_object) {
        for (key, v) in single {
            if let Some(v) = v.as_str() {
                push_query(&mut query, key, v);
            }
        }
    }
    let target = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
    let mut headers = HeaderMap::new();
    if let Some(multi) = event.get("multiValueHeaders").and_then(Value::as_object) {
        for (name, values) in multi {
            let name = header_name(name)?;
            for v in values.as_array().into_iter().flatten() {
                let v = v.as_str().ok_or(InvalidEvent("a header value is not a string"))?;
                headers.append(name.clone(), header_value(v)?);
            }
        }
    } else if let Some(single) = event.get("headers").and_then(Value::as_object) {
        for (name, v) in single {
            let v = v.as_str().ok_or(InvalidEvent("a header value is not a string"))?;
            headers.append(header_name(name)?, header_value(v)?);
        }
    }
    let ip =
        event.get("requestContext").and_then(|c| c.get("identity")).and_then(|i| str_field(i, "sourceIp"));
    Ok(Translated {
        request: build(method, &target, headers, event_body(event)?)?,
        peer: peer_of(ip),
        format: Format::V1,
    })
}

/// A job id as it may appear in a path segment.
fn valid_job_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `{"action": "job_step", "job": "<id>", "authorization": "Bearer <jwt>"?}`.
fn from_direct(event: &Value, action: &str) -> Result<Translated, InvalidEvent> {
    match action {
        "job_step" => {
            let job = str_field(event, "job").ok_or(InvalidEvent("`job` is missing or not a string"))?;
            if !valid_job_id(job) {
                return Err(InvalidEvent("`job` is not a job id (1-128 letters, digits, `-`, `_`)"));
            }
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(auth) = event.get("authorization") {
                let auth = auth.as_str().ok_or(InvalidEvent("`authorization` is not a string"))?;
                headers.insert(http::header::AUTHORIZATION, header_value(auth)?);
            }
            let request = build("POST", &format!("/v1/jobs/{job}/step"), headers, Bytes::from_static(b"{}"))?;
            Ok(Translated { request, peer: peer_of(None), format: Format::Direct })
        }
        _ => Err(InvalidEvent("unknown `action`; Veil knows `job_step` and `rekey`")),
    }
}

/// `{"action": "rekey", "scheme"?: "<name>", "kek"?: {...}, "authorization"?: "Bearer <jwt>"}`.
struct RekeyEvent {
    scheme: Option<String>,
    kek: Option<Value>,
    authorization: Option<HeaderValue>,
}

fn rekey_event(event: &Value) -> Result<RekeyEvent, InvalidEvent> {
    let scheme = match event.get("scheme") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(InvalidEvent("`scheme` is not a string")),
    };
    let kek = match event.get("kek") {
        None | Some(Value::Null) => None,
        Some(k @ Value::Object(_)) => Some(k.clone()),
        Some(_) => return Err(InvalidEvent("`kek` is not a JSON object")),
    };
    let authorization = match event.get("authorization") {
        None => None,
        Some(a) => {
            let a = a.as_str().ok_or(InvalidEvent("`authorization` is not a string"))?;
            let mut v = header_value(a)?;
            v.set_sensitive(true);
            Some(v)
        }
    };
    Ok(RekeyEvent { scheme, kek, authorization })
}

/// What an event asks for.
enum Event {
    /// One request for the component.
    Http(Translated),
    /// A rekey: one request per scheme.
    Rekey(RekeyEvent),
}

/// Recognises the event's kind by its fields.
fn translate(event: &[u8]) -> Result<Event, InvalidEvent> {
    let event: Value = serde_json::from_slice(event).map_err(|_| InvalidEvent("the event is not JSON"))?;
    if event.get("action").and_then(Value::as_str) == Some("rekey") {
        return rekey_event(&event).map(Event::Rekey);
    }
    translate_http(&event).map(Event::Http)
}

fn translate_http(event: &Value) -> Result<Translated, InvalidEvent> {
    if !event.is_object() {
        return Err(InvalidEvent("the event is not a JSON object"));
    }
    if let Some(action) = event.get("action") {
        let action = action.as_str().ok_or(InvalidEvent("`action` is not a string"))?;
        return from_direct(event, action);
    }
    if event.get("requestContext").and_then(|c| c.get("http")).is_some() {
        return from_v2(event);
    }
    if event.get("httpMethod").is_some() {
        return from_v1(event);
    }
    Err(InvalidEvent("neither an HTTP event (payload format 1.0 or 2.0) nor an `action`"))
}

/// The component's answer in the event's format.
fn answer(format: Format, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Value {
    let text = std::str::from_utf8(body).ok();
    let (body_field, base64) = match text {
        Some(t) => (Value::String(t.to_string()), false),
        None => (Value::String(base64::engine::general_purpose::STANDARD.encode(body)), true),
    };
    match format {
        Format::Direct => {
            let body = serde_json::from_slice::<Value>(body).unwrap_or(body_field);
            json!({ "statusCode": status.as_u16(), "body": body })
        }
        Format::V2 => {
            let mut single = Map::new();
            let mut cookies = Vec::new();
            for name in headers.keys() {
                let values: Vec<&str> =
                    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
                if name == http::header::SET_COOKIE {
                    cookies.extend(values.into_iter().map(|v| Value::String(v.to_string())));
                } else {
                    single.insert(name.as_str().to_string(), Value::String(values.join(",")));
                }
            }
            json!({
                "statusCode": status.as_u16(),
                "headers": single,
                "cookies": cookies,
                "body": body_field,
                "isBase64Encoded": base64,
            })
        }
        Format::V1 => {
            let mut multi = Map::new();
            for name in headers.keys() {
                let values: Vec<Value> = headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(|v| Value::String(v.to_string()))
                    .collect();
                multi.insert(name.as_str().to_string(), Value::Array(values));
            }
            json!({
                "statusCode": status.as_u16(),
                "multiValueHeaders": multi,
                "body": body_field,
                "isBase64Encoded": base64,
            })
        }
    }
}

/// `Lambda-Runtime-Deadline-Ms` (Unix ms) as an instant, less [`DEADLINE_MARGIN`].
fn deadline_of(headers: &HeaderMap) -> Option<Instant> {
    let ms = headers.get("lambda-runtime-deadline-ms")?.to_str().ok()?.trim().parse::<u64>().ok()?;
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    let left = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN))
}

async fn collect(response: Response<HyperOutgoingBody>) -> Result<(StatusCode, HeaderMap, Bytes)> {
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the component's answer: {e:?}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, bytes))
}

/// Handles one invocation: its answer, or its error, goes back to the runtime API.
async fn invoke(api: &RuntimeApi, server: &Arc<Server>, next: ApiAnswer, verbose: bool) -> Result<()> {
    let Some(id) = next.headers.get("lambda-runtime-aws-request-id").and_then(|v| v.to_str().ok()) else {
        anyhow::bail!("Lambda runtime API: an invocation without Lambda-Runtime-Aws-Request-Id");
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        anyhow::bail!("Lambda runtime API: a malformed Lambda-Runtime-Aws-Request-Id");
    }
    let id = id.to_string();
    let started = Instant::now();
    let translated = match translate(&next.body) {
        Ok(Event::Http(t)) => t,
        Ok(Event::Rekey(r)) => {
            return match rekey(server, r, deadline_of(&next.headers)).await {
                Ok(document) => {
                    if verbose {
                        eprintln!("veil: invocation {id}: rekey {}ms", started.elapsed().as_millis());
                    }
                    api.post(&format!("{API}/invocation/{id}/response"), &[], document).await
                }
                Err(e) => {
                    eprintln!("veil: invocation {id}: rekey: {e:#}");
                    api.invocation_error(
                        &id,
                        "Runtime.ResponseError",
                        "the component's answer could not be read",
                    )
                    .await
                }
            };
        }
        Err(InvalidEvent(why)) => {
            eprintln!("veil: invocation {id}: invalid event: {why}");
            return api.invocation_error(&id, "Runtime.InvalidEvent", why).await;
        }
    };
    let label = format!("{} {}", translated.request.method(), translated.request.uri().path());
    let response = server.respond(translated.request, translated.peer, deadline_of(&next.headers)).await;
    match collect(response).await {
        Ok((status, headers, body)) => {
            if verbose {
                eprintln!(
                    "veil: invocation {id}: {label} {} {}ms",
                    status.as_u16(),
                    started.elapsed().as_millis()
                );
            }
            let document = answer(translated.format, status, &headers, &body).to_string().into_bytes();
            api.post(&format!("{API}/invocation/{id}/response"), &[], document).await
        }
        Err(e) => {
            eprintln!("veil: invocation {id}: {label}: {e:#}");
            api.invocation_error(&id, "Runtime.ResponseError", "the component's answer could not be read")
                .await
        }
    }
}

/// Runs a rekey event: `{"statusCode", "body"}` with the report as the body; the status is 200
/// when every scheme was rekeyed, else the first failed scheme's. When the schemes cannot be
/// listed, the component's own answer.
async fn rekey(server: &Arc<Server>, event: RekeyEvent, deadline: Option<Instant>) -> Result<Vec<u8>> {
    let run = crate::rekey::drive(
        server,
        event.authorization.as_ref(),
        event.scheme.as_deref(),
        event.kek.as_ref(),
        deadline,
        |_| {},
    )
    .await?;
    let doc = match run {
        Ok(report) => {
            let status = report
                .failed()
                .find_map(|s| match s.outcome {
                    crate::rekey::Outcome::Failed { status, .. } => Some(status),
                    crate::rekey::Outcome::Rekeyed { .. } => None,
                })
                .unwrap_or(200);
            json!({ "statusCode": status, "body": report.to_json() })
        }
        Err(crate::rekey::ListFailed { status, body }) => json!({ "statusCode": status, "body": body }),
    };
    Ok(doc.to_string().into_bytes())
}

/// `--manifest` relative to `$LAMBDA_TASK_ROOT` (where Lambda unpacks the zip) when that is set.
fn manifest_path(args: &ServeArgs, task_root: Option<PathBuf>) -> PathBuf {
    match task_root {
        Some(root) if args.manifest.is_relative() => root.join(&args.manifest),
        _ => args.manifest.clone(),
    }
}

pub fn run(mut args: ServeArgs) -> Result<()> {
    let authority = match std::env::var("AWS_LAMBDA_RUNTIME_API") {
        Ok(a) if !a.trim().is_empty() => a.trim().to_string(),
        _ => {
            config_bail!("AWS_LAMBDA_RUNTIME_API is not set: `veil lambda` is started by the Lambda service")
        }
    };
    args.manifest = manifest_path(&args, std::env::var_os("LAMBDA_TASK_ROOT").map(PathBuf::from));
    let verbose = args.verbose || std::env::var("VEIL_LOG").is_ok_and(|v| v.eq_ignore_ascii_case("debug"));
    let api = RuntimeApi { authority };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let prepared = match serve::prepare(&args, Mode::Lambda) {
        Ok(p) => p,
        Err(e) => {
            let error_type = if e.chain().any(|c| c.is::<ConfigError>()) {
                "Runtime.ConfigError"
            } else {
                "Runtime.InitError"
            };
            if let Err(report) = runtime.block_on(api.init_error(error_type, &format!("{e:#}"))) {
                eprintln!("veil: cannot report the init error: {report:#}");
            }
            return Err(e);
        }
    };
    let result = runtime.block_on(async move {
        let mut signals = ShutdownSignals::register()?;
        let server = prepared.server(&args, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        println!("veil: lambda runtime polling http://{}{API}/invocation/next", api.authority);
        let next_path = format!("{API}/invocation/next");
        let mut failures = 0;
        loop {
            let next = tokio::select! {
                next = api.call(Method::GET, &next_path, &[], Vec::new()) => next,
                _ = signals.recv() => break,
            };
            let next = match next {
                Ok(n) if n.status == StatusCode::OK => n,
                Ok(n) => Err(anyhow::anyhow!("Lambda runtime API: next answered {}", n.status.as_u16()))?,
                Err(e) => {
                    failures += 1;
                    if failures >= NEXT_ATTEMPTS {
                        return Err(e);
                    }
                    eprintln!("veil: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << failures)).await;
                    continue;
                }
            };
            failures = 0;
            if let Err(e) = invoke(&api, &server, next, verbose).await {
                eprintln!("veil: {e:#}");
            }
        }
        eprintln!("veil: shutting down");
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(event: Value) -> Translated {
        match translate(event.to_string().as_bytes()).map_err(|e| e.0).unwrap() {
            Event::Http(t) => t,
            Event::Rekey(_) => panic!("a rekey event"),
        }
    }

    /// A `Full` body (ready at once).
    fn body_of(r: &Request<Full<Bytes>>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async { r.body().clone().collect().await.unwrap().to_bytes() })
    }

    #[test]
    fn a_v2_event_becomes_the_request() {
        let x = t(json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/v1/protect", "rawQueryString": "a=1&b=%20",
            "cookies": ["c1=v1", "c2=v2"],
            "headers": {"content-type": "application/json", "x-multi": "one,two", "host": "abc.lambda-url.eu-west-1.on.aws"},
            "requestContext": {"http": {"method": "POST", "path": "/v1/protect", "sourceIp": "203.0.113.7"}},
            "body": "eyJhIjoxfQ==", "isBase64Encoded": true
        }));
        assert_eq!(x.format, Format::V2);
        assert_eq!(x.request.method(), Method::POST);
        assert_eq!(x.request.uri().to_string(), "/v1/protect?a=1&b=%20");
        assert_eq!(x.request.headers()["cookie"], "c1=v1; c2=v2");
        assert_eq!(x.request.headers()["x-multi"], "one,two");
        assert_eq!(x.peer, "203.0.113.7:0".parse().unwrap());
        assert_eq!(body_of(&x.request), Bytes::from_static(b"{\"a\":1}"));
    }

    #[test]
    fn a_v1_event_keeps_every_value() {
        let x = t(json!({
            "httpMethod": "GET", "path": "/v1/schemes",
            "headers": {"x-a": "last"}, "multiValueHeaders": {"x-a": ["first", "last"]},
            "queryStringParameters": {"q": "z"}, "multiValueQueryStringParameters": {"q": ["y z", "&"]},
            "requestContext": {"identity": {"sourceIp": "198.51.100.1"}}, "body": null, "isBase64Encoded": false
        }));
        assert_eq!(x.format, Format::V1);
        assert_eq!(x.request.uri().to_string(), "/v1/schemes?q=y%20z&q=%26");
        let values: Vec<_> = x.request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["first", "last"]);
        assert_eq!(body_of(&x.request), Bytes::new());
    }

    #[test]
    fn a_job_step_is_a_post_to_the_job() {
        let x = t(json!({"action": "job_step", "job": "job_01-x", "authorization": "Bearer t"}));
        assert_eq!((x.format, x.request.method().as_str()), (Format::Direct, "POST"));
        assert_eq!(x.request.uri().path(), "/v1/jobs/job_01-x/step");
        assert_eq!(x.request.headers()["authorization"], "Bearer t");
    }

    #[test]
    fn a_rekey_event_keeps_scheme_kek_and_credential() {
        let e = json!({"action": "rekey", "scheme": "pii", "kek": {"provider": "local"}, "authorization": "Bearer t"});
        let Ok(Event::Rekey(r)) = translate(e.to_string().as_bytes()) else { panic!("not a rekey") };
        assert_eq!((r.scheme.as_deref(), r.kek), (Some("pii"), Some(json!({"provider": "local"}))));
        assert_eq!(r.authorization.unwrap(), "Bearer t");
        let Ok(Event::Rekey(r)) = translate(br#"{"action":"rekey"}"#) else { panic!("not a rekey") };
        assert!(r.scheme.is_none() && r.kek.is_none() && r.authorization.is_none());
    }

    #[test]
    fn bad_events_say_why_without_their_values() {
        let bad = |v: &str| translate(v.as_bytes()).map(|_| ()).unwrap_err().0;
        assert_eq!(bad("nope"), "the event is not JSON");
        assert_eq!(bad("[1]"), "the event is not a JSON object");
        assert_eq!(bad(r#"{"x":1}"#), "neither an HTTP event (payload format 1.0 or 2.0) nor an `action`");
        assert_eq!(
            bad(r#"{"action":"secret-value"}"#),
            "unknown `action`; Veil knows `job_step` and `rekey`"
        );
        assert_eq!(bad(r#"{"action":"rekey","scheme":7}"#), "`scheme` is not a string");
        assert_eq!(bad(r#"{"action":"rekey","kek":"local"}"#), "`kek` is not a JSON object");
        assert_eq!(bad(r#"{"action":"rekey","authorization":1}"#), "`authorization` is not a string");
        assert_eq!(
            bad(r#"{"action":"job_step","job":"../x"}"#),
            "`job` is not a job id (1-128 letters, digits, `-`, `_`)"
        );
        assert_eq!(
            bad(
                r#"{"rawPath":"/v1/protect","requestContext":{"http":{"method":"POST"}},"body":"%%","isBase64Encoded":true}"#
            ),
            "`body` is not valid base64 though `isBase64Encoded` is true"
        );
        assert_eq!(
            bad(r#"{"rawPath":"v1","requestContext":{"http":{"method":"GET"}}}"#),
            "the request path does not start with `/`"
        );
    }

    #[test]
    fn answers_take_the_events_format() {
        let mut h = HeaderMap::new();
        h.append("content-type", HeaderValue::from_static("application/json"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.append("vary", HeaderValue::from_static("x"));
        h.append("vary", HeaderValue::from_static("y"));
        let v2 = answer(Format::V2, StatusCode::OK, &h, b"{\"k\":1}");
        assert_eq!(
            v2,
            json!({"statusCode": 200, "headers": {"content-type": "application/json", "vary": "x,y"},
                   "cookies": ["a=1", "b=2"], "body": "{\"k\":1}", "isBase64Encoded": false})
        );
        let v1 = answer(Format::V1, StatusCode::NOT_FOUND, &h, &[0xff, 0x00]);
        assert_eq!(v1["multiValueHeaders"]["set-cookie"], json!(["a=1", "b=2"]));
        assert_eq!((v1["body"].as_str(), v1["isBase64Encoded"].as_bool()), (Some("/wA="), Some(true)));
        let direct =
            answer(Format::Direct, StatusCode::NOT_FOUND, &h, b"{\"error\":{\"code\":\"not_found\"}}");
        assert_eq!(direct, json!({"statusCode": 404, "body": {"error": {"code": "not_found"}}}));
    }

    #[test]
    fn the_deadline_keeps_a_margin() {
        let mut h = HeaderMap::new();
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 3_000;
        h.insert("lambda-runtime-deadline-ms", HeaderValue::from_str(&ms.to_string()).unwrap());
        let left = deadline_of(&h).unwrap().saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_millis(2_950) && left > Duration::from_millis(2_500), "{left:?}");
        h.insert("lambda-runtime-deadline-ms", HeaderValue::from_static("1"));
        assert!(deadline_of(&h).unwrap() <= Instant::now());
        assert!(deadline_of(&HeaderMap::new()).is_none());
        use clap::Parser as _;
        let crate::cli::Command::Lambda(args) = crate::cli::Cli::parse_from(["bootstrap", "lambda"]).command
        else {
            panic!("not the lambda command")
        };
        assert_eq!(manifest_path(&args, Some("/var/task".into())), PathBuf::from("/var/task/spin.toml"));
        assert_eq!(manifest_path(&args, None), PathBuf::from("spin.toml"));
    }
}
