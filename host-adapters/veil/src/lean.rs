//! The component's own world (wit/veil.wit) on the host side: `veil:gateway/protection` (for
//! `veil wit-call`) and `veil:gateway/http`, the lean request/response door that `veil serve`,
//! Azure Functions and Lambda call by default instead of `wasi:http/incoming-handler`
//! (`--entry`, docs/configuration.md). A request goes in as method, path, query, headers and body
//! bytes, the answer comes back as status, headers and body bytes: no wasi-http resources, no
//! body streams, no response channel.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Host bindings of Veil's world: its `protection` and `http` exports.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/veil.wit",
        world: "veil",
        exports: { default: async },
    });
}

pub use bindings::exports::veil::gateway::http::{Request as LeanRequest, Response as LeanResponse};

/// Which export of the component answers HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Entry {
    /// `veil:gateway/http`: plain bytes in and out (the default; falls back to `wasi-http` for a
    /// component that does not export it).
    Lean,
    /// `wasi:http/incoming-handler`, as Spin calls it.
    WasiHttp,
}

impl Entry {
    pub fn name(self) -> &'static str {
        match self {
            Entry::Lean => "lean (veil:gateway/http)",
            Entry::WasiHttp => "wasi-http (wasi:http/incoming-handler)",
        }
    }
}

/// The lean request for `req`, whose body the host has read: headers in the order hyper holds
/// them, names in lowercase (as `wasi:http` gives them to the component).
pub async fn request(req: Request<Full<Bytes>>) -> LeanRequest {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        // No copy: the host read the body into one buffer that nothing else holds.
        Ok(collected) => Vec::from(collected.to_bytes()),
        Err(never) => match never {},
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    LeanRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    }
}

/// The HTTP response for the component's answer; `None` for a status no response can have.
/// Headers that are not valid HTTP are all dropped, as the `wasi:http` door drops them
/// (`Fields::from_list` refuses the whole list).
pub fn response(answer: LeanResponse) -> Option<Response<HyperOutgoingBody>> {
    let status = StatusCode::from_u16(answer.status).ok()?;
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    for (name, value) in answer.headers {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => {
                headers.clear();
                break;
            }
        }
    }
    let mut response = Response::new(crate::serve::body(answer.body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Some(response)
}
