//! `/v1/protect`, `/v1/unprotect`, `/v1/rewrap`, `/v1/mask`: batches of values in, per-item
//! results out.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{item, non_null, parse, ApiResponse};
use crate::auth::Principal;
use crate::ops::{self, Ctx, ItemError, Unprotected};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Encoding {
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectBody {
    scheme: String,
    values: Vec<String>,
    #[serde(default, deserialize_with = "non_null")]
    subject: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    context: Option<String>,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnprotectBody {
    /// When given, a token of another scheme is the per-item error `scheme_mismatch`.
    #[serde(default, deserialize_with = "non_null")]
    pub(super) scheme: Option<String>,
    pub(super) values: Vec<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub(super) subject: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub(super) context: Option<String>,
    #[serde(default)]
    pub(super) encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RewrapBody {
    /// As in [`UnprotectBody::scheme`].
    #[serde(default, deserialize_with = "non_null")]
    pub(super) scheme: Option<String>,
    pub(super) values: Vec<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub(super) subject: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub(super) context: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MaskBody {
    pub(super) scheme: String,
    pub(super) values: Vec<String>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The body of `/v1/protect` with its values decoded (a value that is not base64 fails alone).
pub(super) struct ProtectInput {
    pub(super) scheme: String,
    pub(super) values: Vec<Result<Vec<u8>, ItemError>>,
    pub(super) subject: Option<String>,
    pub(super) context: Option<String>,
}

/// Reads the body of `/v1/protect`: its whole parsing, before any operation.
pub(super) fn protect_input(body: &[u8]) -> Result<ProtectInput, ApiError> {
    let b: ProtectBody = parse(body)?;
    let values = b
        .values
        .into_iter()
        .map(|v| match b.encoding {
            Encoding::Utf8 => Ok(v.into_bytes()),
            Encoding::Base64 => B64.decode(v.as_bytes()).map_err(|_| ItemError::INVALID_ENCODING),
        })
        .collect();
    Ok(ProtectInput { scheme: b.scheme, values, subject: b.subject, context: b.context })
}

pub(super) fn protect(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b = protect_input(body)?;
    let (version, results) =
        ops::protect(ctx, who, &b.scheme, &b.values, b.subject.as_deref(), b.context.as_deref())?;
    ctx.audit.items(results.len(), results.iter().filter(|r| r.is_err()).count());
    let results: Vec<Value> = results.into_iter().map(item).collect();
    Ok(ApiResponse::json(200, &json!({"scheme": b.scheme, "key_version": version.get(), "results": results})))
}

pub(super) fn unprotect(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b: UnprotectBody = parse(body)?;
    let tokens: Vec<&str> = b.values.iter().map(String::as_str).collect();
    let results = ops::unprotect_or_mask(
        ctx,
        who,
        b.scheme.as_deref(),
        &tokens,
        b.subject.as_deref(),
        b.context.as_deref(),
    )?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            // A masked value is text whatever `encoding` says: the rule already made it so.
            Ok(Unprotected::Masked(v)) => json!({"value": v, "masked": true}),
            Ok(Unprotected::Plain(pt)) => item(match b.encoding {
                Encoding::Base64 => Ok(B64.encode(&pt[..])),
                Encoding::Utf8 => {
                    std::str::from_utf8(&pt).map(str::to_owned).map_err(|_| ItemError::NOT_UTF8)
                }
            }),
            Err(e) => item::<String>(Err(e)),
        })
        .collect();
    note_items(ctx, &results);
    Ok(ApiResponse::json(200, &json!({ "results": results })))
}

/// The batch's counts for the audit entry: items, and those that failed on their own.
fn note_items(ctx: &mut Ctx<'_>, results: &[Value]) {
    ctx.audit.items(results.len(), results.iter().filter(|r| r.get("error").is_some()).count());
}

pub(super) fn rewrap(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b: RewrapBody = parse(body)?;
    let tokens: Vec<&str> = b.values.iter().map(String::as_str).collect();
    let results =
        ops::rewrap_in(ctx, who, b.scheme.as_deref(), &tokens, b.subject.as_deref(), b.context.as_deref())?;
    let results: Vec<Value> = results.into_iter().map(item).collect();
    note_items(ctx, &results);
    Ok(ApiResponse::json(200, &json!({ "results": results })))
}

pub(super) fn mask(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b: MaskBody = parse(body)?;
    let values: Vec<&str> = b.values.iter().map(String::as_str).collect();
    let results: Vec<Value> = ops::mask(ctx, who, &b.scheme, &values)?.into_iter().map(item).collect();
    note_items(ctx, &results);
    Ok(ApiResponse::json(200, &json!({ "results": results })))
}
