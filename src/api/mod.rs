//! The HTTP API (docs/api.md): routes, JSON bodies, limits and error statuses. The only room
//! that knows about HTTP; the work itself is in [`crate::ops`].
//!
//! The route table is [`route`]; each area's handlers (parse the body, call the operation, shape
//! the answer) live in their own file: [`schemes`], [`data`] and [`subjects`]. Statuses come from [`error`].

mod audit;
mod bigquery;
mod data;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod jobs;
mod keys;
mod rows;
mod schemes;
mod snowflake;
mod subjects;
mod transit;

use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::{Authenticator, JwksFetcher};
use crate::ops::{self, Ctx, ItemError, OpError};
use error::ApiError;

/// The OpenAPI 3.1 description served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// An HTTP request as the door hands it over (body already read within `max_body_bytes`).
#[derive(Debug)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string after `?` (empty when none).
    pub query: &'a str,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// Every other header the door passed on, names in lowercase (values that are UTF-8 only);
    /// read through [`ApiRequest::header`].
    pub headers: &'a [(String, String)],
    /// The `X-API-Key` header, if any: an API key instead of `Authorization: Bearer veil_…`.
    pub api_key: Option<&'a str>,
    pub body: &'a [u8],
}

impl ApiRequest<'_> {
    /// The first value of a header (`name` in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What goes back: status, extra headers and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn json(status: u16, body: &impl Serialize) -> Self {
        match serde_json::to_vec(body) {
            Ok(body) => ApiResponse { status, headers: Vec::new(), body },
            Err(_) => ApiResponse::error(&ApiError::internal()),
        }
    }

    pub fn error(e: &ApiError) -> Self {
        let body = json!({"error": {"code": e.code, "message": e.message}});
        let mut r =
            ApiResponse { status: e.status, headers: Vec::new(), body: body.to_string().into_bytes() };
        if e.status == 401 {
            r.headers.push(("www-authenticate", "Bearer".into()));
        }
        r
    }
}

/// Where the document states a batch's `max_batch` limit.
const BATCH_MAX_ITEMS: [&str; 4] = [
    "/components/schemas/Values/maxItems",
    "/components/schemas/EraseSubjectsRequest/properties/subjects/maxItems",
    "/components/schemas/SnowflakeRequest/properties/data/maxItems",
    "/components/schemas/BigQueryRequest/properties/calls/maxItems",
];

/// The document as served: [`OPENAPI`] with this deployment's `max_batch` as the `maxItems` of
/// every batch (the file states the default, 1000), so that a client generating requests from it
/// (schemathesis, tests/integration/test_openapi.py) is never told that a refused batch is valid.
fn openapi_document(max_batch: usize) -> Vec<u8> {
    let mut doc: Value = match serde_json::from_str(OPENAPI) {
        Ok(doc) => doc,
        Err(_) => return OPENAPI.as_bytes().to_vec(),
    };
    let mut changed = false;
    for pointer in BATCH_MAX_ITEMS {
        if let Some(n) = doc.pointer_mut(pointer) {
            if n.as_u64() != Some(max_batch as u64) {
                *n = json!(max_batch);
                changed = true;
            }
        }
    }
    if !changed {
        return OPENAPI.as_bytes().to_vec();
    }
    serde_json::to_vec_pretty(&doc).unwrap_or_else(|_| OPENAPI.as_bytes().to_vec())
}

/// The routes, for matching and for 405's `Allow` header.
enum Route<'p> {
    Health,
    OpenApi,
    Schemes,
    Scheme(&'p str),
    Rotate(&'p str),
    Versions(&'p str),
    Rekey(&'p str),
    Destroy(&'p str, &'p str),
    EraseScheme(&'p str),
    EraseTenant,
    Protect,
    Unprotect,
    Rewrap,
    Mask,
    EraseSubject(&'p str),
    EraseSubjects,
    Erasure(&'p str),
    ErasureKeys,
    Jobs,
    Job(&'p str),
    JobStep(&'p str),
    JobFailures(&'p str),
    JobCancel(&'p str),
    Snowflake(rows::RowOp, Option<&'p str>),
    BigQuery,
    Audit,
    AuditVerify,
    ApiKeys,
    ApiKey(&'p str),
    /// A Transit-compatible route under `transit_mount` (docs/transit.md).
    Transit(transit::Op<'p>),
}

/// The route table: every path Veil answers, with the methods it allows.
fn route(path: &str) -> Option<(Route<'_>, &'static str)> {
    let r = match path {
        "/healthz" => (Route::Health, "GET"),
        "/v1/openapi.json" => (Route::OpenApi, "GET"),
        "/v1/schemes" => (Route::Schemes, "GET, POST"),
        "/v1/protect" => (Route::Protect, "POST"),
        "/v1/unprotect" => (Route::Unprotect, "POST"),
        "/v1/rewrap" => (Route::Rewrap, "POST"),
        "/v1/mask" => (Route::Mask, "POST"),
        "/v1/subjects/erase" => (Route::EraseSubjects, "POST"),
        "/v1/tenant/erase" => (Route::EraseTenant, "POST"),
        "/.well-known/veil/erasure-keys" => (Route::ErasureKeys, "GET"),
        "/v1/jobs" => (Route::Jobs, "POST"),
        _ if path.starts_with("/v1/jobs/") => {
            let rest = path.strip_prefix("/v1/jobs/")?;
            let parts: Vec<&str> = rest.split('/').collect();
            match parts[..] {
                [id] if !id.is_empty() => (Route::Job(id), "GET"),
                [id, "step"] if !id.is_empty() => (Route::JobStep(id), "POST"),
                [id, "failures"] if !id.is_empty() => (Route::JobFailures(id), "GET"),
                [id, "cancel"] if !id.is_empty() => (Route::JobCancel(id), "POST"),
                _ => return None,
            }
        }
        "/v1/bigquery" => (Route::BigQuery, "POST"),
        _ if path.starts_with("/v1/snowflake/") => {
            let rest = path.strip_prefix("/v1/snowflake/")?;
            let (op, scheme) = match rest.split_once('/') {
                Some((op, scheme)) if !scheme.is_empty() && !scheme.contains('/') => (op, Some(scheme)),
                Some(_) => return None,
                None => (rest, None),
            };
            (Route::Snowflake(rows::RowOp::parse(op)?, scheme), "POST")
        }
        "/v1/audit" => (Route::Audit, "GET"),
        "/v1/audit/verify" => (Route::AuditVerify, "GET"),
        "/v1/api-keys" => (Route::ApiKeys, "GET, POST"),
        _ if path.starts_with("/v1/api-keys/") => {
            let id = path.strip_prefix("/v1/api-keys/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            (Route::ApiKey(id), "DELETE")
        }
        _ if path.starts_with("/v1/subjects/") => {
            let id = path.strip_prefix("/v1/subjects/")?.strip_suffix("/erase")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            (Route::EraseSubject(id), "POST")
        }
        _ if path.starts_with("/v1/erasures/") => {
            let id = path.strip_prefix("/v1/erasures/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            (Route::Erasure(id), "GET")
        }
        _ => {
            let rest = path.strip_prefix("/v1/schemes/")?;
            let parts: Vec<&str> = rest.split('/').collect();
            match parts[..] {
                [name] if !name.is_empty() => (Route::Scheme(name), "GET, PATCH"),
                [name, "rotate"] if !name.is_empty() => (Route::Rotate(name), "POST"),
                [name, "versions"] if !name.is_empty() => (Route::Versions(name), "GET"),
                [name, "rekey"] if !name.is_empty() => (Route::Rekey(name), "POST"),
                [name, "erase"] if !name.is_empty() => (Route::EraseScheme(name), "POST"),
                [name, "versions", v, "destroy"] if !name.is_empty() && !v.is_empty() => {
                    (Route::Destroy(name, v), "POST")
                }
                _ => return None,
            }
        }
    };
    Some(r)
}

/// What a request may touch besides its own data: its context (config, store, randomness),
/// the authenticator, and the outbound fetcher for JWKS documents.
pub struct Deps<'a, 'c> {
    pub ctx: &'a mut Ctx<'c>,
    /// The authenticator, or why it could not be built (answered only on routes that need it).
    pub auth: Result<&'a Authenticator, OpError>,
    pub jwks: &'a dyn JwksFetcher,
}

/// Answers one request. Never panics on input; every failure is a JSON error.
pub fn handle(deps: Deps<'_, '_>, req: &ApiRequest<'_>) -> ApiResponse {
    // A path that is no native route and lies under `transit_mount` is answered as Transit does.
    let transit = route(req.path).is_none() && transit::under_mount(deps.ctx.config, req.path);
    match dispatch(deps, req) {
        Ok(r) => r,
        // BigQuery shows a failed call's `errorMessage` to the query's user.
        Err(e) if req.path == "/v1/bigquery" => bigquery::error_response(&e),
        Err(e) if transit => transit::error_response(&e),
        Err(e) => ApiResponse::error(&e),
    }
}

fn dispatch(deps: Deps<'_, '_>, req: &ApiRequest<'_>) -> Result<ApiResponse, ApiError> {
    let found = match route(req.path) {
        Some(r) => Some(r),
        None => transit::route(deps.ctx.config, req.path)?.map(|(op, allow)| (Route::Transit(op), allow)),
    };
    let Some((route, allow)) = found else {
        return Err(ApiError::new(404, "not_found", "no such route; see /v1/openapi.json"));
    };
    let allowed = allow.split(", ").any(|m| m == req.method);
    if !allowed {
        let e = ApiError::new(
            405,
            "method_not_allowed",
            format!("{} is not allowed here; allowed: {allow}", req.method),
        );
        let (mut r, allow) = match route {
            Route::Transit(_) => (transit::error_response(&e), transit::documented_methods(allow)),
            _ => (ApiResponse::error(&e), allow.to_string()),
        };
        r.headers.push(("allow", allow));
        return Ok(r);
    }
    match route {
        Route::Health => return Ok(ApiResponse::json(200, &json!({"status": "ok"}))),
        Route::OpenApi => {
            let body = openapi_document(deps.ctx.config.limits.max_batch);
            return Ok(ApiResponse { status: 200, headers: Vec::new(), body });
        }
        Route::ErasureKeys => return subjects::erasure_keys(deps.ctx),
        _ => {}
    }
    if req.method == "POST" || req.method == "PATCH" {
        check_content_type(req.content_type)?;
    }
    let ctx = deps.ctx;
    // Transit clients send their token as `X-Vault-Token` (docs/transit.md).
    let vault_token = match route {
        Route::Transit(_) => {
            transit::check_headers(req)?;
            transit::authorization(req)?
        }
        _ => None,
    };
    let authorization = vault_token.as_deref().or(req.authorization);
    let who = crate::ops::authenticate(ctx, deps.auth, authorization, req.api_key, deps.jwks)?;
    // Every authenticated request is audited (docs/audit.md): without the tenant's audit key no
    // operation runs, and an entry that cannot be written withholds the operation's answer.
    // From here on the operation's writes wait for its entry: `record` commits both, or neither.
    let key = ops::audit::begin(ctx, &who)?;
    let (operation, kind) = audit_operation(&route, req.method);
    if let Some(name) = route_scheme(&route) {
        ctx.audit.scheme_name(name);
    }
    let result = match route {
        Route::Schemes if req.method == "POST" => schemes::create(ctx, &who, req.body),
        Route::Schemes => schemes::list(ctx, &who),
        Route::Scheme(name) if req.method == "PATCH" => schemes::update(ctx, &who, name, req.body),
        Route::Scheme(name) => schemes::get(ctx, &who, name),
        Route::Rotate(name) => schemes::rotate(ctx, &who, name),
        Route::Versions(name) => schemes::versions(ctx, &who, name),
        Route::Rekey(name) => schemes::rekey(ctx, &who, name, req.body),
        Route::Destroy(name, v) => schemes::destroy(ctx, &who, name, v),
        Route::EraseScheme(name) => subjects::erase_scheme(ctx, &who, name, req.body),
        Route::EraseTenant => subjects::erase_tenant(ctx, &who, req.body),
        Route::Protect => data::protect(ctx, &who, req.body),
        Route::Unprotect => data::unprotect(ctx, &who, req.body),
        Route::Rewrap => data::rewrap(ctx, &who, req.body),
        Route::Mask => data::mask(ctx, &who, req.body),
        Route::EraseSubject(id) => subjects::erase(ctx, &who, id),
        Route::EraseSubjects => subjects::erase_bulk(ctx, &who, req.body),
        Route::Erasure(id) => subjects::get_erasure(ctx, &who, id),
        Route::Jobs => jobs::create(ctx, &who, req.body),
        Route::Job(id) => jobs::get(ctx, &who, id),
        Route::JobStep(id) => jobs::step(ctx, &who, id, req.body),
        Route::JobFailures(id) => jobs::failures(ctx, &who, id),
        Route::JobCancel(id) => jobs::cancel(ctx, &who, id, req.body),
        Route::Snowflake(op, scheme) => snowflake::call(ctx, &who, req, op, scheme),
        Route::BigQuery => bigquery::call(ctx, &who, req.body),
        Route::Audit => audit::list(ctx, &who, &key, req.query),
        Route::AuditVerify => audit::verify(ctx, &who, &key, req.query),
        Route::ApiKeys if req.method == "POST" => keys::create(ctx, &who, req.body),
        Route::ApiKeys => keys::list(ctx, &who),
        Route::ApiKey(id) => keys::revoke(ctx, &who, id),
        Route::Transit(op) => transit::call(ctx, &who, req, op),
        Route::Health | Route::OpenApi | Route::ErasureKeys => Err(ApiError::internal()),
    };
    let (status, code) = match &result {
        Ok(r) => (r.status, None),
        Err(e) => (e.status, Some(e.code)),
    };
    // A failed entry withholds a successful answer; a failed operation keeps its own error (the
    // store that refused the operation usually refuses the entry too).
    match ops::audit::record(ctx, &who, &key, operation, kind, status, code) {
        Err(e) if result.is_ok() => Err(e.into()),
        _ => result,
    }
}

/// The operation name an audit entry records for a route (docs/audit.md), and whether it is a
/// data operation (audited as its scheme's `audit` setting says) or administrative (always).
/// A new route adds its line here.
fn audit_operation(route: &Route<'_>, method: &str) -> (&'static str, ops::audit::Kind) {
    use ops::audit::Kind::{Admin, Data};
    match route {
        Route::Schemes if method == "POST" => ("scheme.create", Admin),
        Route::Schemes => ("scheme.list", Admin),
        Route::Scheme(_) if method == "PATCH" => ("scheme.update", Admin),
        Route::Scheme(_) => ("scheme.get", Admin),
        Route::Rotate(_) => ("scheme.rotate", Admin),
        Route::Versions(_) => ("scheme.versions", Admin),
        Route::Rekey(_) => ("scheme.rekey", Admin),
        Route::Destroy(..) => ("key_version.destroy", Admin),
        Route::Protect => ("protect", Data),
        Route::Unprotect => ("unprotect", Data),
        Route::Rewrap => ("rewrap", Data),
        Route::Mask => ("mask", Data),
        Route::EraseSubject(_) => ("subject.erase", Admin),
        Route::EraseSubjects => ("subjects.erase", Admin),
        Route::Erasure(_) => ("erasure.get", Admin),
        Route::EraseScheme(_) => ("scheme.erase", Admin),
        Route::EraseTenant => ("tenant.erase", Admin),
        Route::Jobs => ("job.create", Admin),
        Route::Job(_) => ("job.get", Admin),
        Route::JobStep(_) => ("job.step", Admin),
        Route::JobFailures(_) => ("job.failures", Admin),
        Route::JobCancel(_) => ("job.cancel", Admin),
        Route::Snowflake(op, _) => match op {
            rows::RowOp::Protect => ("snowflake.protect", Data),
            rows::RowOp::Unprotect => ("snowflake.unprotect", Data),
            rows::RowOp::Rewrap => ("snowflake.rewrap", Data),
            rows::RowOp::Mask => ("snowflake.mask", Data),
        },
        Route::BigQuery => ("bigquery", Data),
        Route::ApiKeys if method == "POST" => ("api_key.create", Admin),
        Route::ApiKeys => ("api_key.list", Admin),
        Route::ApiKey(_) => ("api_key.revoke", Admin),
        Route::Transit(op) => op.audit_operation(method),
        Route::Audit => ("audit.list", Admin),
        Route::AuditVerify => ("audit.verify", Admin),
        Route::Health => ("health", Admin),
        Route::OpenApi => ("openapi", Admin),
        Route::ErasureKeys => ("erasure_keys", Admin),
    }
}

/// The scheme a route names in its path, if any.
fn route_scheme<'p>(route: &Route<'p>) -> Option<&'p str> {
    match route {
        Route::Scheme(n)
        | Route::Rotate(n)
        | Route::Versions(n)
        | Route::Rekey(n)
        | Route::Destroy(n, _)
        | Route::EraseScheme(n)
        | Route::Snowflake(_, Some(n)) => Some(n),
        Route::Transit(op) => op.scheme(),
        _ => None,
    }
}

fn check_content_type(ct: Option<&str>) -> Result<(), ApiError> {
    match ct {
        None => Ok(()),
        Some(ct) => {
            let mime = ct.split(';').next().unwrap_or("").trim();
            if mime.eq_ignore_ascii_case("application/json") {
                Ok(())
            } else if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                // What `curl -d` sends unless told otherwise.
                Err(ApiError::new(
                    415,
                    "unsupported_media_type",
                    "the body is sent as a form (application/x-www-form-urlencoded, curl -d's default); \
                     send JSON with the header `Content-Type: application/json` (curl -H), or none",
                ))
            } else {
                Err(ApiError::new(
                    415,
                    "unsupported_media_type",
                    "send the body as JSON with the header `Content-Type: application/json`, or none",
                ))
            }
        }
    }
}

/// Parses a JSON body: not JSON at all → 400 `invalid_json`; the wrong shape → 400 `invalid_request`.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(400, "invalid_json", format!("the body is not valid JSON: {}", json_where(&e)))
    })?;
    // Every body is a JSON object: serde would also read a struct from an array of its fields
    // in order (`[null, null]`), which the document does not allow.
    if !value.is_object() {
        return Err(ApiError::new(400, "invalid_request", "the request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        ApiError::new(
            400,
            "invalid_request",
            format!("the request does not match its schema: {}", shape_error(&e, None)),
        )
    })
}

/// A deserialisation failure as the field's path and what was expected there, never the value
/// that was sent: serde's own text (`invalid type: string "4111…", expected a sequence`) quotes
/// the input, which may be a plaintext, a token or a secret.
/// `root` names what was being read when it is a field (`mask`), `None` for the whole body.
pub(crate) fn shape_error(e: &serde_path_to_error::Error<serde_json::Error>, root: Option<&str>) -> String {
    let serde_text = e.inner().to_string();
    let what = expected_part(&serde_text);
    // For an unknown field the path ends with that field's name, which the client chose.
    let segments: Vec<&serde_path_to_error::Segment> = e.path().iter().collect();
    let segments = match segments.split_last() {
        Some((serde_path_to_error::Segment::Map { .. }, rest)) if serde_text.starts_with("unknown field") => {
            rest
        }
        _ => &segments[..],
    };
    match (root, safe_path(segments)) {
        (Some(r), Some(p)) if p.starts_with('[') => format!("`{r}{p}` {what}"),
        (Some(r), Some(p)) => format!("`{r}.{p}` {what}"),
        (Some(r), None) => format!("`{r}` {what}"),
        (None, Some(p)) => format!("`{p}` {what}"),
        (None, None) => format!("the body {what}"),
    }
}

/// The path (`values[2]`, `mask.n`); a segment that is not one of the API's own field names
/// is shown as `?`, so a key the client chose is never repeated back.
fn safe_path(segments: &[&serde_path_to_error::Segment]) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in segments {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if is_api_name(key) { key.as_str() } else { "?" });
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Every field name of the request bodies (docs/api.md): the only words a path may repeat.
const API_FIELDS: &[&str] = &[
    "scheme",
    "data",
    "calls",
    "userDefinedContext",
    "operation",
    "on_error",
    "values",
    "subject",
    "context",
    "encoding",
    "name",
    "algorithm",
    "kek",
    "provider",
    "key_id",
    "key_url",
    "policy",
    "protect",
    "unprotect",
    "mask",
    "admin",
    "description",
    "rule",
    "n",
    "char",
    "length",
    "rewrap",
    "rotation_period",
    "audit",
    "min_decryption_version",
    "version",
    "subjects",
    "confirm",
    "database",
    "table",
    "key_column",
    "token_column",
    "subject_column",
    "batch_size",
    "target_version",
    "label",
    "roles",
    "expires_at",
    "mask_on_deny",
    "context_required",
];

fn is_api_name(s: &str) -> bool {
    API_FIELDS.contains(&s)
}

/// What serde says was expected, from the text after its last `, expected ` (the deserialiser's
/// own words, e.g. `a sequence`, ``one of `utf8`, `base64` ``), or a fixed phrase; never the
/// unexpected value, the unknown field's name or the unknown variant.
fn expected_part(serde_text: &str) -> String {
    let serde_text = serde_text.split(" at line ").next().unwrap_or(serde_text);
    if let Some(field) = serde_text.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
        if is_api_name(field) {
            return format!("is missing the field `{field}`");
        }
        return "is missing a required field".into();
    }
    let expected = serde_text
        .rsplit_once(", expected ")
        .map(|(_, x)| x)
        .filter(|x| x.len() <= 200 && x.bytes().all(|b| b.is_ascii_alphanumeric() || b" `,_-.".contains(&b)));
    let unknown_field = serde_text.starts_with("unknown field");
    match (expected, unknown_field) {
        (Some(x), true) => format!("has a field it does not know; expected {x}"),
        (None, true) => "has a field it does not know".into(),
        (Some(x), false) => format!("has the wrong type or value; expected {x}"),
        (None, false) => "has the wrong type or value".into(),
    }
}

/// For an optional field whose document type is not nullable: absent is `None`, `null` is refused
/// (400 `invalid_request`) like any other wrong type, instead of being read as absent. A caller who
/// sends `"context": null` meaning "no context" and one who meant to bind a context both learn it.
fn non_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Where the JSON broke, without echoing the input.
fn json_where(e: &serde_json::Error) -> String {
    format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())
}

/// One entry of a batch's `results`: `{"value": ...}` or `{"error": {"code","message"}}`.
fn item<T: Serialize>(r: Result<T, ItemError>) -> Value {
    match r {
        Ok(v) => json!({ "value": v }),
        Err(e) => json!({ "error": e }),
    }
}

/// The answer when the body is over `max_body_bytes` (the door stops reading at the limit).
pub fn body_too_large(limit: usize) -> ApiResponse {
    ApiResponse::error(&ApiError::new(
        413,
        "body_too_large",
        format!("the body is larger than max_body_bytes ({limit})"),
    ))
}

#[cfg(test)]
mod tests;
