//! `/v1/api-keys`: create (the key is shown once), list and revoke API keys (docs/api.md § API keys).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{non_null, parse, ApiResponse};
use crate::auth::Principal;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::ops::{self, Ctx};
use crate::store::ApiKeyRecord;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApiKeyBody {
    label: String,
    roles: Vec<String>,
    #[serde(default, deserialize_with = "non_null")]
    expires_at: Option<String>,
}

/// A create body as the operation takes it: the label, the roles (each at most once) and the
/// expiry (Unix seconds), if any.
pub(super) type NewKeyBody = (String, BTreeSet<String>, Option<i64>);

/// Parses a `POST /v1/api-keys` body (shared with the fuzz target).
pub(super) fn parse_create(body: &[u8]) -> Result<NewKeyBody, ApiError> {
    let b: CreateApiKeyBody = parse(body)?;
    let expires_at = b
        .expires_at
        .as_deref()
        .map(|t| {
            parse_rfc3339(t).ok_or_else(|| {
                ApiError::invalid_field("expires_at: an RFC 3339 time such as 2027-01-31T00:00:00Z")
            })
        })
        .transpose()?;
    let n = b.roles.len();
    let roles: BTreeSet<String> = b.roles.into_iter().collect();
    if roles.len() != n {
        return Err(ApiError::invalid_field("roles: each role at most once"));
    }
    Ok((b.label, roles, expires_at))
}

/// `POST /v1/api-keys` → 201 with the key, shown only here.
pub(super) fn create(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let (label, roles, expires_at) = parse_create(body)?;
    let new = ops::create_api_key(ctx, who, &label, roles, expires_at)?;
    let mut view = key_view(&new.record);
    if let Some(obj) = view.as_object_mut() {
        obj.insert("key".into(), json!(new.key.as_str()));
    }
    // The door sends `cache-control: no-store` with every response, this one included.
    Ok(ApiResponse::json(201, &view))
}

/// `GET /v1/api-keys`.
pub(super) fn list(ctx: &mut Ctx<'_>, who: &Principal) -> Result<ApiResponse, ApiError> {
    let keys: Vec<Value> = ops::list_api_keys(ctx, who)?.iter().map(key_view).collect();
    Ok(ApiResponse::json(200, &json!({ "api_keys": keys })))
}

/// `DELETE /v1/api-keys/{id}` → 200 and the key as now stored (revoked).
pub(super) fn revoke(ctx: &mut Ctx<'_>, who: &Principal, id: &str) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse::json(200, &key_view(&ops::revoke_api_key(ctx, who, id)?)))
}

/// A key as listed: never its secret or the secret's hash.
fn key_view(k: &ApiKeyRecord) -> Value {
    json!({
        "id": k.id,
        "label": k.label,
        "roles": k.roles,
        "created_at": rfc3339(k.created_at),
        "expires_at": k.expires_at.map(rfc3339),
        "last_used_at": k.last_used_at.map(rfc3339),
        "revoked_at": k.revoked_at.map(rfc3339),
    })
}
