//! `/v1/schemes`: create, list, get and rotate schemes.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{parse, ApiResponse};
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::crypto::aead::Algorithm;
use crate::ids::SchemeName;
use crate::ops::{self, Ctx, NewScheme};
use crate::scheme::{mask::MaskRule, KekRef, Policy, Scheme};

/// `POST /v1/schemes` → 201 and the scheme.
pub(super) fn create(ctx: &mut Ctx<'_>, who: &Principal, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let new = parse_new_scheme(body)?;
    let s = ops::create_scheme(ctx, who, new)?;
    Ok(ApiResponse::json(201, &scheme_view(&s)))
}

/// `GET /v1/schemes`.
pub(super) fn list(ctx: &mut Ctx<'_>, who: &Principal) -> Result<ApiResponse, ApiError> {
    let list: Vec<Value> = ops::list_schemes(ctx, who)?.iter().map(scheme_view).collect();
    Ok(ApiResponse::json(200, &json!({ "schemes": list })))
}

/// `GET /v1/schemes/{name}`.
pub(super) fn get(ctx: &mut Ctx<'_>, who: &Principal, name: &str) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse::json(200, &scheme_view(&ops::get_scheme(ctx, who, name)?)))
}

/// `POST /v1/schemes/{name}/rotate`.
pub(super) fn rotate(ctx: &mut Ctx<'_>, who: &Principal, name: &str) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse::json(200, &scheme_view(&ops::rotate(ctx, who, name)?)))
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
        Some(v) => serde_path_to_error::deserialize::<_, MaskRule>(v)
            .map_err(|e| ApiError::invalid_field(super::shape_error(&e, Some("mask"))))?,
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
