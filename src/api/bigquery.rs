//! BigQuery remote functions (docs/bigquery.md): `POST /v1/bigquery` with `calls` in and
//! `replies` out, in order; the scheme and operation come from the function's
//! `user_defined_context`. A whole-request failure carries BigQuery's `errorMessage` beside
//! Veil's `error`.

use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::rows::{self, OnError, RowOp};
use super::{non_null, parse, ApiResponse};
use crate::auth::Principal;
use crate::ops::Ctx;

/// BigQuery's request body; `requestId`, `caller`, `sessionUser` and any other field are tolerated.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    /// Each call: the function's one argument (`null` for SQL `NULL`).
    calls: Vec<(Option<String>,)>,
    user_defined_context: Context,
}

/// The function's `user_defined_context` (`OPTIONS (user_defined_context = [...])`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Context {
    scheme: String,
    operation: String,
    #[serde(default, deserialize_with = "non_null")]
    on_error: Option<String>,
}

/// A BigQuery batch as read from its body: what to run, with which scheme, on which values.
pub(super) struct Batch {
    pub(super) op: RowOp,
    pub(super) scheme: String,
    pub(super) on_error: OnError,
    /// Each call's argument (`None` for SQL `NULL`).
    pub(super) values: Vec<Option<String>>,
}

/// Reads a BigQuery request body (the operation and `on_error` included).
pub(super) fn parse_batch(body: &[u8]) -> Result<Batch, ApiError> {
    let b: Body = parse(body)?;
    let c = b.user_defined_context;
    let op = RowOp::parse(&c.operation).ok_or_else(|| {
        ApiError::new(
            400,
            "invalid_request",
            "userDefinedContext.operation is one of `protect`, `unprotect`, `rewrap`, `mask`",
        )
    })?;
    let on_error = OnError::parse(c.on_error.as_deref(), "userDefinedContext.on_error")?;
    let values: Vec<Option<String>> = b.calls.into_iter().map(|(v,)| v).collect();
    Ok(Batch { op, scheme: c.scheme, on_error, values })
}

pub(super) fn call(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b = parse_batch(body)?;
    let replies = rows::finish(rows::run(ctx, who, b.op, &b.scheme, &b.values)?, b.on_error)?;
    Ok(ApiResponse::json(200, &json!({ "replies": replies })))
}

/// A whole-request failure as BigQuery reads it (`errorMessage`) and as Veil's clients do (`error`).
pub(super) fn error_response(e: &ApiError) -> ApiResponse {
    let mut r = ApiResponse::error(e);
    let body = json!({"errorMessage": format!("{}: {}", e.code, e.message),
                      "error": {"code": e.code, "message": e.message}});
    r.body = body.to_string().into_bytes();
    r
}
