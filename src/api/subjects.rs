//! `/v1/subjects/{id}/erase`, `/v1/subjects/erase`, `/v1/schemes/{name}/erase`,
//! `/v1/tenant/erase`, `/v1/erasures/{id}` and `/.well-known/veil/erasure-keys` (docs/api.md §
//! Data subjects, § Erasing a scheme or the tenant; docs/erasure.md).

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{item, parse, ApiResponse};
use crate::auth::Principal;
use crate::ops::{self, Ctx};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkEraseBody {
    subjects: Vec<String>,
}

/// Decodes a percent-encoded path segment into UTF-8; `None` for a bad escape or non-UTF-8.
pub(super) fn percent_decode(segment: &str) -> Option<String> {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The body of a scheme or tenant erasure: `{"confirm": "<name or tenant id>"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    #[serde(default, deserialize_with = "super::non_null")]
    confirm: Option<String>,
}

/// The `confirm` of a scheme or tenant erasure; an empty body has none.
pub(super) fn confirm(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(parse::<ConfirmBody>(body)?.confirm)
}

/// `POST /v1/schemes/{name}/erase` → 200 and the certificate.
pub(super) fn erase_scheme(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let confirm = confirm(body)?;
    Ok(ApiResponse::json(200, &ops::erase_scheme(ctx, who, name, confirm.as_deref())?))
}

/// `POST /v1/tenant/erase` → 200 and the certificate.
pub(super) fn erase_tenant(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let confirm = confirm(body)?;
    Ok(ApiResponse::json(200, &ops::erase_tenant(ctx, who, confirm.as_deref())?))
}

pub(super) fn erase(ctx: &mut Ctx<'_>, who: &Principal, raw_id: &str) -> Result<ApiResponse, ApiError> {
    let id = percent_decode(raw_id)
        .ok_or_else(|| ApiError::invalid_field("the subject in the path is not percent-encoded UTF-8"))?;
    let cert = ops::erase_subject(ctx, who, &id)?;
    Ok(ApiResponse::json(200, &cert))
}

/// The subjects of `POST /v1/subjects/erase`.
pub(super) fn bulk_subjects(body: &[u8]) -> Result<Vec<String>, ApiError> {
    Ok(parse::<BulkEraseBody>(body)?.subjects)
}

pub(super) fn erase_bulk(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let subjects = bulk_subjects(body)?;
    let results: Vec<Value> = ops::erase_subjects(ctx, who, &subjects)?.into_iter().map(item).collect();
    Ok(ApiResponse::json(200, &json!({ "results": results })))
}

pub(super) fn get_erasure(ctx: &Ctx<'_>, who: &Principal, id: &str) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse::json(200, &ops::get_erasure(ctx, who, id)?))
}

pub(super) fn erasure_keys(ctx: &Ctx<'_>) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse::json(200, &ops::erasure_keys(ctx)?))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn path_segments_decode() {
        assert_eq!(percent_decode("user-42").as_deref(), Some("user-42"));
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        for bad in ["%", "%2", "%zz", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
