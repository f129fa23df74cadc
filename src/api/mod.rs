//! The HTTP API (docs/api.md): routes, JSON bodies, limits and error statuses. The only room
//! that knows about HTTP; the work itself is in [`crate::ops`].

pub mod error;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{Authenticator, JwksFetcher, Principal};
use crate::clock::rfc3339;
use crate::crypto::aead::Algorithm;
use crate::ids::SchemeName;
use crate::ops::{self, Ctx, NewScheme};
use crate::scheme::{mask::MaskRule, KekRef, Policy, Scheme};
use error::{ApiError, ItemError};

/// The OpenAPI 3.1 description served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// An HTTP request as the door hands it over (body already read within `max_body_bytes`).
#[derive(Debug)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
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

/// The routes, for matching and for 405's `Allow` header.
enum Route<'p> {
    Health,
    OpenApi,
    Schemes,
    Scheme(&'p str),
    Rotate(&'p str),
    Protect,
    Unprotect,
    Mask,
}

fn route(path: &str) -> Option<(Route<'_>, &'static str)> {
    let r = match path {
        "/healthz" => (Route::Health, "GET"),
        "/v1/openapi.json" => (Route::OpenApi, "GET"),
        "/v1/schemes" => (Route::Schemes, "GET, POST"),
        "/v1/protect" => (Route::Protect, "POST"),
        "/v1/unprotect" => (Route::Unprotect, "POST"),
        "/v1/mask" => (Route::Mask, "POST"),
        _ => {
            let rest = path.strip_prefix("/v1/schemes/")?;
            match rest.split_once('/') {
                None if !rest.is_empty() => (Route::Scheme(rest), "GET"),
                Some((name, "rotate")) if !name.is_empty() => (Route::Rotate(name), "POST"),
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
    pub auth: Result<&'a Authenticator, ApiError>,
    pub jwks: &'a dyn JwksFetcher,
}

/// Answers one request. Never panics on input; every failure is a JSON error.
pub fn handle(deps: Deps<'_, '_>, req: &ApiRequest<'_>) -> ApiResponse {
    match dispatch(deps, req) {
        Ok(r) => r,
        Err(e) => ApiResponse::error(&e),
    }
}

fn dispatch(deps: Deps<'_, '_>, req: &ApiRequest<'_>) -> Result<ApiResponse, ApiError> {
    let Some((route, allow)) = route(req.path) else {
        return Err(ApiError::new(404, "not_found", "no such route; see /v1/openapi.json"));
    };
    let allowed = allow.split(", ").any(|m| m == req.method);
    if !allowed {
        let mut r = ApiResponse::error(&ApiError::new(
            405,
            "method_not_allowed",
            format!("{} is not allowed here; allowed: {allow}", req.method),
        ));
        r.headers.push(("allow", allow.to_string()));
        return Ok(r);
    }
    match route {
        Route::Health => return Ok(ApiResponse::json(200, &json!({"status": "ok"}))),
        Route::OpenApi => {
            return Ok(ApiResponse { status: 200, headers: Vec::new(), body: OPENAPI.as_bytes().to_vec() })
        }
        _ => {}
    }
    if req.method == "POST" {
        check_content_type(req.content_type)?;
    }
    let who = deps.auth?.authenticate(req.authorization, deps.jwks)?;
    let ctx = deps.ctx;
    match route {
        Route::Schemes if req.method == "POST" => {
            let new = parse_new_scheme(req.body)?;
            let s = ops::create_scheme(ctx, &who, new)?;
            Ok(ApiResponse::json(201, &scheme_view(&s)))
        }
        Route::Schemes => {
            let list: Vec<Value> = ops::list_schemes(ctx, &who)?.iter().map(scheme_view).collect();
            Ok(ApiResponse::json(200, &json!({ "schemes": list })))
        }
        Route::Scheme(name) => Ok(ApiResponse::json(200, &scheme_view(&ops::get_scheme(ctx, &who, name)?))),
        Route::Rotate(name) => Ok(ApiResponse::json(200, &scheme_view(&ops::rotate(ctx, &who, name)?))),
        Route::Protect => protect(ctx, &who, req.body),
        Route::Unprotect => unprotect(ctx, &who, req.body),
        Route::Mask => mask(ctx, &who, req.body),
        Route::Health | Route::OpenApi => Err(ApiError::internal()),
    }
}

fn check_content_type(ct: Option<&str>) -> Result<(), ApiError> {
    match ct {
        None => Ok(()),
        Some(ct) => {
            let mime = ct.split(';').next().unwrap_or("").trim();
            if mime.eq_ignore_ascii_case("application/json") {
                Ok(())
            } else {
                Err(ApiError::new(415, "unsupported_media_type", "send the body as application/json"))
            }
        }
    }
}

/// Parses a JSON body: not JSON at all → 400 `invalid_json`; the wrong shape → 400 `invalid_request`.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(400, "invalid_json", format!("the body is not valid JSON: {}", json_where(&e)))
    })?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(400, "invalid_request", format!("the request does not match its schema: {e}"))
    })
}

/// Where the JSON broke, without echoing the input.
fn json_where(e: &serde_json::Error) -> String {
    format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSchemeBody {
    name: String,
    #[serde(default)]
    algorithm: Option<String>,
    kek: Value,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    mask: Option<Value>,
    #[serde(default)]
    description: Option<String>,
}

fn parse_new_scheme(body: &[u8]) -> Result<NewScheme, ApiError> {
    let b: CreateSchemeBody = parse(body)?;
    let name = SchemeName::parse(&b.name).map_err(|e| ApiError::invalid_field(format!("name: {e}")))?;
    let algorithm = match b.algorithm.as_deref() {
        None => Algorithm::Aes256Gcm,
        Some(a) => Algorithm::parse(a).ok_or_else(|| {
            ApiError::invalid_field("algorithm: one of aes-256-gcm, chacha20-poly1305, xchacha20-poly1305")
        })?,
    };
    let kek: KekRef = serde_json::from_value(b.kek).map_err(|_| {
        ApiError::invalid_field(
            "kek: {\"provider\":\"local\"}, {\"provider\":\"aws-kms\",\"key_id\":...} or {\"provider\":\"azure-keyvault\",\"key_url\":...}",
        )
    })?;
    let mask = match b.mask {
        None => MaskRule::Redact,
        Some(v) => serde_json::from_value::<MaskRule>(v)
            .map_err(|e| ApiError::invalid_field(format!("mask: {e}")))?,
    };
    mask.validate().map_err(|e| ApiError::invalid_field(format!("mask: {e}")))?;
    b.policy.validate().map_err(ApiError::invalid_field)?;
    if b.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(ApiError::invalid_field("description is longer than 1024 bytes"));
    }
    Ok(NewScheme { name, algorithm, kek, policy: b.policy, mask })
}

fn scheme_view(s: &Scheme) -> Value {
    json!({
        "name": s.name.as_str(),
        "algorithm": s.algorithm.as_str(),
        "kek": s.kek,
        "policy": s.policy,
        "mask": s.mask,
        "current_version": s.current_version.get(),
        "created_at": rfc3339(s.created_at),
    })
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectBody {
    scheme: String,
    values: Vec<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnprotectBody {
    values: Vec<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaskBody {
    scheme: String,
    values: Vec<String>,
}

fn item<T: Serialize>(r: Result<T, ItemError>) -> Value {
    match r {
        Ok(v) => json!({ "value": v }),
        Err(e) => json!({ "error": e }),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn protect(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b: ProtectBody = parse(body)?;
    let values: Vec<Result<Vec<u8>, ItemError>> = b
        .values
        .into_iter()
        .map(|v| match b.encoding {
            Encoding::Utf8 => Ok(v.into_bytes()),
            Encoding::Base64 => B64.decode(v.as_bytes()).map_err(|_| ItemError::INVALID_ENCODING),
        })
        .collect();
    let (version, results) =
        ops::protect(ctx, who, &b.scheme, &values, b.subject.as_deref(), b.context.as_deref())?;
    let results: Vec<Value> = results.into_iter().map(item).collect();
    Ok(ApiResponse::json(200, &json!({"scheme": b.scheme, "key_version": version.get(), "results": results})))
}

fn unprotect(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b: UnprotectBody = parse(body)?;
    let tokens: Vec<&str> = b.values.iter().map(String::as_str).collect();
    let results = ops::unprotect(ctx, who, &tokens, b.subject.as_deref(), b.context.as_deref())?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| {
            item(r.and_then(|pt| match b.encoding {
                Encoding::Base64 => Ok(B64.encode(&pt[..])),
                Encoding::Utf8 => {
                    std::str::from_utf8(&pt).map(str::to_owned).map_err(|_| ItemError::NOT_UTF8)
                }
            }))
        })
        .collect();
    Ok(ApiResponse::json(200, &json!({ "results": results })))
}

fn mask(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b: MaskBody = parse(body)?;
    let values: Vec<&str> = b.values.iter().map(String::as_str).collect();
    let results: Vec<Value> = ops::mask(ctx, who, &b.scheme, &values)?.into_iter().map(item).collect();
    Ok(ApiResponse::json(200, &json!({ "results": results })))
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
