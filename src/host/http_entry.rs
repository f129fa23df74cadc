//! The HTTP doors: `wasi:http/incoming-handler` (what Spin calls; resources and streams) and the
//! lean `veil:gateway/http` export (what Veil's own host calls; bytes in, bytes out). Both read
//! the request head with [`head`], the body within the same limit, and answer with [`answer`], so
//! that the two give the same status, headers and body for every request.

use futures::StreamExt;
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;

use super::{with_request, SpinVariables};
use crate::api::{self, error::ApiError, ApiRequest, ApiResponse, Deps};
use crate::config::Config;
use crate::ops::OpError;

/// A header list as the doors carry it: names in lowercase, raw values.
pub(crate) type HeaderList = Vec<(String, Vec<u8>)>;

/// A request's method, path, query and headers, with the configuration it will be served under.
pub(crate) struct Head {
    config: Config,
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    api_key: Option<String>,
    content_type: Option<String>,
    /// Every header but `authorization` whose value is UTF-8, names in lowercase.
    other_headers: Vec<(String, String)>,
}

/// An answer and whether dev mode labels it.
pub(crate) struct Answer {
    response: ApiResponse,
    dev_mode: bool,
}

impl Answer {
    fn new(response: ApiResponse, dev_mode: bool) -> Self {
        Answer { response, dev_mode }
    }

    /// The status, the headers every answer carries followed by the handler's, and the body.
    pub(crate) fn into_parts(self) -> (u16, HeaderList, Vec<u8>) {
        let mut headers: HeaderList = vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("cache-control".into(), b"no-store".to_vec()),
        ];
        if self.dev_mode {
            headers.push(("veil-dev-mode".into(), b"true".to_vec()));
        }
        for (k, v) in self.response.headers {
            headers.push((k.into(), v.into_bytes()));
        }
        (self.response.status, headers, self.response.body)
    }
}

impl Head {
    /// The most body this request may have (`max_body_bytes`).
    pub(crate) fn body_limit(&self) -> usize {
        self.config.limits.max_body_bytes
    }

    fn too_large(&self) -> Answer {
        Answer::new(api::body_too_large(self.body_limit()), self.config.dev_mode)
    }

    /// The answer to a body that could not be read.
    fn unreadable(&self) -> Answer {
        let e = ApiError::new(400, "invalid_request", "the request body could not be read");
        Answer::new(ApiResponse::error(&e), self.config.dev_mode)
    }
}

/// The first value of header `name` (lowercase), if it is UTF-8.
fn first(headers: &HeaderList, name: &str) -> Option<String> {
    let (_, v) = headers.iter().find(|(k, _)| k == name)?;
    String::from_utf8(v.clone()).ok()
}

/// Loads the configuration and reads the request head; a refusal that needs no body (the
/// configuration is unusable, `content-length` is over the limit) is the answer at once.
pub(crate) fn head(method: String, path: String, query: String, headers: HeaderList) -> Result<Head, Answer> {
    let mut headers = headers;
    for (k, _) in headers.iter_mut() {
        k.make_ascii_lowercase();
    }
    let config = match Config::load_deferred(std::rc::Rc::new(SpinVariables)) {
        Ok(c) => c,
        Err(e) => return Err(Answer::new(ApiResponse::error(&ApiError::from(OpError::from(e))), false)),
    };
    let authorization = first(&headers, "authorization");
    let api_key = first(&headers, "x-api-key");
    let content_type = first(&headers, "content-type");
    let declared_len = first(&headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let other_headers: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| k != "authorization")
        .filter_map(|(k, v)| Some((k, String::from_utf8(v).ok()?)))
        .collect();
    let head = Head { config, method, path, query, authorization, api_key, content_type, other_headers };
    if declared_len.is_some_and(|n| n > head.body_limit() as u64) {
        return Err(head.too_large());
    }
    Ok(head)
}

/// Answers a request whose body has been read within [`Head::body_limit`].
pub(crate) fn answer(head: Head, body: &[u8]) -> Answer {
    let Head { mut config, method, path, query, authorization, api_key, content_type, other_headers } = head;
    let dev = config.dev_mode;
    if body.len() > config.limits.max_body_bytes {
        return Answer::new(api::body_too_large(config.limits.max_body_bytes), dev);
    }
    let request = ApiRequest {
        method: &method,
        path: &path,
        query: &query,
        content_type: content_type.as_deref(),
        authorization: authorization.as_deref(),
        headers: &other_headers,
        api_key: api_key.as_deref(),
        body,
    };
    let auth_config = std::mem::take(&mut config.auth);
    let response = with_request(&config, auth_config, |ctx, auth, outbound| {
        let mut response = api::handle(Deps { ctx, auth, jwks: outbound }, &request);
        // How many KEK operations this request cost (docs/kms.md); counts only, never key data.
        response.headers.push(("veil-kms-calls", ctx.keks.stats().header_value()));
        response
    });
    Answer::new(response.unwrap_or_else(|e| ApiResponse::error(&ApiError::from(e))), dev)
}

/// The lean door (`veil:gateway/http`): the host has read the body already.
pub(crate) fn handle_lean(
    method: String,
    path: String,
    query: String,
    headers: HeaderList,
    body: &[u8],
) -> Answer {
    match head(method, path, query, headers) {
        Ok(head) => answer(head, body),
        Err(refusal) => refusal,
    }
}

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let (status, headers, body) = respond(req).await.into_parts();
    let fields = Fields::from_list(&headers).unwrap_or_else(|_| Fields::new());
    let outgoing = OutgoingResponse::new(fields);
    let _ = outgoing.set_status_code(status);
    if let Err(e) = out.set_with_body(outgoing, body).await {
        eprintln!("veil: could not send the response: {e:?}");
    }
    // The request's frames are popped: wipe what they left on the stack (its heap blocks were
    // wiped as they were freed).
    veil_scrub_alloc::scrub_stack();
}

async fn respond(req: IncomingRequest) -> Answer {
    let method = req.method().to_string();
    let path_query = req.path_with_query().unwrap_or_default();
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path_query, String::new()),
    };
    // One host call for every header (rather than one per header read).
    let entries = req.headers().entries();
    let head = match head(method, path, query, entries) {
        Ok(head) => head,
        Err(refusal) => return refusal,
    };
    let limit = head.body_limit();
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if body.len() + c.len() > limit {
                    return head.too_large();
                }
                body.extend_from_slice(&c);
            }
            Err(_) => return head.unreadable(),
        }
    }
    drop(stream);
    answer(head, &body)
}
