//! The HTTP entry point: read the request within the body limit, answer through `api`.

use futures::StreamExt;
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;

use super::{with_request, SpinVariables};
use crate::api::{self, error::ApiError, ApiRequest, ApiResponse, Deps};
use crate::config::Config;
use crate::ops::OpError;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let (response, dev_mode) = respond(req).await;
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("content-type".into(), b"application/json".to_vec()),
        ("cache-control".into(), b"no-store".to_vec()),
    ];
    if dev_mode {
        headers.push(("veil-dev-mode".into(), b"true".to_vec()));
    }
    for (k, v) in response.headers {
        headers.push((k.into(), v.into_bytes()));
    }
    let fields = Fields::from_list(&headers).unwrap_or_else(|_| Fields::new());
    let outgoing = OutgoingResponse::new(fields);
    let _ = outgoing.set_status_code(response.status);
    if let Err(e) = out.set_with_body(outgoing, response.body).await {
        eprintln!("veil: could not send the response: {e:?}");
    }
}

fn header(fields: &Fields, name: &str) -> Option<String> {
    let values = fields.get(name);
    let first = values.into_iter().next()?;
    String::from_utf8(first).ok()
}

async fn respond(req: IncomingRequest) -> (ApiResponse, bool) {
    let mut config = match Config::load_deferred(std::rc::Rc::new(SpinVariables)) {
        Ok(c) => c,
        Err(e) => return (ApiResponse::error(&ApiError::from(OpError::from(e))), false),
    };
    let dev = config.dev_mode;
    let method = req.method().to_string();
    let path_query = req.path_with_query().unwrap_or_default();
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path_query.clone(), String::new()),
    };
    let headers = req.headers();
    let authorization = header(&headers, "authorization");
    let api_key = header(&headers, "x-api-key");
    let content_type = header(&headers, "content-type");
    let declared_len = header(&headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let other_headers: Vec<(String, String)> = headers
        .entries()
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), String::from_utf8(v).ok()?)))
        .filter(|(k, _)| k != "authorization")
        .collect();
    drop(headers);

    let limit = config.limits.max_body_bytes;
    if declared_len.is_some_and(|n| n > limit as u64) {
        return (api::body_too_large(limit), dev);
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if body.len() + c.len() > limit {
                    return (api::body_too_large(limit), dev);
                }
                body.extend_from_slice(&c);
            }
            Err(_) => {
                let e = ApiError::new(400, "invalid_request", "the request body could not be read");
                return (ApiResponse::error(&e), dev);
            }
        }
    }
    drop(stream);

    let request = ApiRequest {
        method: &method,
        path: &path,
        query: &query,
        content_type: content_type.as_deref(),
        authorization: authorization.as_deref(),
        headers: &other_headers,
        api_key: api_key.as_deref(),
        body: &body,
    };
    let auth_config = std::mem::take(&mut config.auth);
    let response = with_request(&config, auth_config, |ctx, auth, outbound| {
        let mut response = api::handle(Deps { ctx, auth, jwks: outbound }, &request);
        // How many KEK operations this request cost (docs/kms.md); counts only, never key data.
        response.headers.push(("veil-kms-calls", ctx.keks.stats().header_value()));
        response
    });
    (response.unwrap_or_else(|e| ApiResponse::error(&ApiError::from(e))), dev)
}
