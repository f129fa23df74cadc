//! `/v1/schemes`: create, list, get, update and rotate schemes; list and destroy key versions.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{non_null, parse, ApiResponse};
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::crypto::aead::Algorithm;
use crate::ids::{KeyVersion, SchemeName};
use crate::ops::{self, Ctx, NewScheme};
use crate::scheme::{mask::MaskRule, AuditMode, KekRef, Policy, RotationPeriod, Scheme};
use crate::store::{KeyVersionRecord, SchemeChange};

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

/// `PATCH /v1/schemes/{name}` → 200 and the scheme.
pub(super) fn update(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let change = parse_change(body)?;
    Ok(ApiResponse::json(200, &scheme_view(&ops::update_scheme(ctx, who, name, &change)?)))
}

/// `GET /v1/schemes/{name}/versions`.
pub(super) fn versions(ctx: &mut Ctx<'_>, who: &Principal, name: &str) -> Result<ApiResponse, ApiError> {
    let (scheme, versions) = ops::list_versions(ctx, who, name)?;
    let list: Vec<Value> = versions.iter().map(|v| version_view(&scheme, v)).collect();
    Ok(ApiResponse::json(200, &json!({ "versions": list })))
}

/// `POST /v1/schemes/{name}/versions/{v}/destroy` → 200 and the version as now stored.
pub(super) fn destroy(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    version: &str,
) -> Result<ApiResponse, ApiError> {
    let version = parse_route_version(version)?;
    ops::destroy_version(ctx, who, name, version)?;
    let (scheme, versions) = ops::list_versions(ctx, who, name)?;
    let v = versions.iter().find(|r| r.key.version == version).ok_or_else(ApiError::internal)?;
    Ok(ApiResponse::json(200, &version_view(&scheme, v)))
}

/// `POST /v1/schemes/{name}/rekey` → 200, the versions (each with the KEK that now wraps it) and
/// the versions this call rewrapped.
pub(super) fn rekey(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let kek = rekey_kek(body)?;
    let done = ops::rekey(ctx, who, name, kek)?;
    let list: Vec<Value> = done.versions.iter().map(|v| version_view(&done.scheme, v)).collect();
    let rewrapped: Vec<u32> = done.rewrapped.iter().map(|v| v.get()).collect();
    Ok(ApiResponse::json(
        200,
        &json!({"scheme": scheme_view(&done.scheme), "versions": list, "rewrapped": rewrapped}),
    ))
}

/// Reads the body of `POST /v1/schemes/{name}/rekey` (empty, or `{"kek": ...}`): the new KEK, if any.
pub(super) fn rekey_kek(body: &[u8]) -> Result<Option<KekRef>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let b: RekeyBody = parse(body)?;
    b.kek.map(parse_kek).transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RekeyBody {
    #[serde(default, deserialize_with = "super::non_null")]
    kek: Option<Value>,
}

fn parse_kek(v: Value) -> Result<KekRef, ApiError> {
    let shape = || {
        ApiError::invalid_field(
            "kek: {\"provider\":\"local\"}, {\"provider\":\"aws-kms\",\"key_id\":...} or {\"provider\":\"azure-keyvault\",\"key_url\":...}",
        )
    };
    // serde ignores unknown fields beside the tag of a unit variant (`local`): the document
    // allows none, so they are refused here for every provider.
    if let Some(fields) = v.as_object() {
        let allowed: &[&str] = match fields.get("provider").and_then(Value::as_str) {
            Some("local") => &["provider"],
            Some("aws-kms") => &["provider", "key_id"],
            Some("azure-keyvault") => &["provider", "key_url"],
            _ => &[],
        };
        if fields.keys().any(|k| !allowed.contains(&k.as_str())) {
            return Err(shape());
        }
    }
    let kek: KekRef = serde_json::from_value(v).map_err(|_| shape())?;
    kek.validate().map_err(ApiError::invalid_field)?;
    Ok(kek)
}

/// A version number in a route: 1 to 2^32-1, digits only.
fn parse_route_version(v: &str) -> Result<KeyVersion, ApiError> {
    let bad = || ApiError::invalid_field("the key version in the path is a whole number from 1");
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    v.parse::<u32>().ok().and_then(|n| KeyVersion::new(n).ok()).ok_or_else(bad)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSchemeBody {
    #[serde(default, deserialize_with = "super::non_null")]
    min_decryption_version: Option<Value>,
    /// Absent: unchanged; `null`: removed; a string: set.
    #[serde(default, deserialize_with = "present")]
    rotation_period: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::non_null")]
    mask_on_deny: Option<bool>,
    #[serde(default, deserialize_with = "super::non_null")]
    audit: Option<String>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Reads the body of `PATCH /v1/schemes/{name}`: its whole parsing, before any operation.
pub(super) fn parse_change(body: &[u8]) -> Result<SchemeChange, ApiError> {
    let b: UpdateSchemeBody = parse(body)?;
    if b.min_decryption_version.is_none()
        && b.rotation_period.is_none()
        && b.mask_on_deny.is_none()
        && b.audit.is_none()
    {
        return Err(ApiError::invalid_field(
            "give one or more of min_decryption_version, rotation_period, mask_on_deny and audit",
        ));
    }
    let audit = b.audit.as_deref().map(parse_audit).transpose()?;
    let min_decryption_version = match b.min_decryption_version {
        None => None,
        Some(v) => Some(
            // JSON Schema's `integer` also admits a whole number written with a fraction (`2.0`)
            v.as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
                        .map(|f| f as u64)
                })
                .and_then(|n| u32::try_from(n).ok())
                .and_then(|n| KeyVersion::new(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "min_decryption_version must be a whole number from 1 to the current version",
                    )
                })?,
        ),
    };
    let rotation_period = match b.rotation_period {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => Some(Some(RotationPeriod::parse(&p).map_err(ApiError::invalid_field)?)),
    };
    Ok(SchemeChange { min_decryption_version, rotation_period, mask_on_deny: b.mask_on_deny, audit })
}

/// A scheme's `audit` setting, at create or in a change.
fn parse_audit(a: &str) -> Result<AuditMode, ApiError> {
    AuditMode::parse(a).ok_or_else(|| ApiError::invalid_field("audit: one of all, denied, none"))
}
/// Longest scheme description, in characters (as the OpenAPI document's `maxLength` counts).
const MAX_DESCRIPTION_CHARS: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSchemeBody {
    name: String,
    #[serde(default, deserialize_with = "non_null")]
    algorithm: Option<String>,
    kek: Value,
    #[serde(default)]
    policy: Policy,
    #[serde(default, deserialize_with = "non_null")]
    mask: Option<Value>,
    #[serde(default, deserialize_with = "non_null")]
    description: Option<String>,
    #[serde(default)]
    rotation_period: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    audit: Option<String>,
    mask_on_deny: Option<bool>,
    context_required: Option<bool>,
}

/// Reads the body of `POST /v1/schemes`: its whole parsing and validation, before any operation.
pub(super) fn parse_new_scheme(body: &[u8]) -> Result<NewScheme, ApiError> {
    let b: CreateSchemeBody = parse(body)?;
    let name = SchemeName::parse(&b.name).map_err(|e| ApiError::invalid_field(format!("name: {e}")))?;
    let algorithm = match b.algorithm.as_deref() {
        None => Algorithm::Aes256Gcm,
        Some(a) => Algorithm::parse(a).ok_or_else(|| {
            ApiError::invalid_field("algorithm: one of aes-256-gcm, chacha20-poly1305, xchacha20-poly1305")
        })?,
    };
    let kek = parse_kek(b.kek)?;
    let mask = match b.mask {
        None => MaskRule::Redact,
        Some(v) => serde_path_to_error::deserialize::<_, MaskRule>(v)
            .map_err(|e| ApiError::invalid_field(super::shape_error(&e, Some("mask"))))?,
    };
    mask.validate().map_err(|e| ApiError::invalid_field(format!("mask: {e}")))?;
    b.policy.validate().map_err(ApiError::invalid_field)?;
    if b.description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS) {
        return Err(ApiError::invalid_field(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    let rotation_period = b
        .rotation_period
        .as_deref()
        .map(RotationPeriod::parse)
        .transpose()
        .map_err(ApiError::invalid_field)?;
    let audit = b.audit.as_deref().map(parse_audit).transpose()?.unwrap_or(AuditMode::All);
    Ok(NewScheme {
        name,
        algorithm,
        kek,
        policy: b.policy,
        mask,
        rotation_period,
        audit,
        mask_on_deny: b.mask_on_deny.unwrap_or(false),
        context_required: b.context_required.unwrap_or(false),
    })
}

fn scheme_view(s: &Scheme) -> Value {
    json!({
        "name": s.name.as_str(),
        "algorithm": s.algorithm.as_str(),
        "kek": s.kek,
        "policy": s.policy,
        "mask": s.mask,
        "current_version": s.current_version.get(),
        "min_decryption_version": s.min_decryption_version.get(),
        "rotation_period": s.rotation_period.map(|p| p.to_string()),
        "audit": s.audit.as_str(),
        "mask_on_deny": s.mask_on_deny,
        "context_required": s.context_required,
        "created_at": rfc3339(s.created_at),
        "erased_at": s.erased_at.map(rfc3339),
    })
}

/// One key version: its state, its KEK and when; who destroyed it and when, if it is destroyed.
fn version_view(scheme: &Scheme, r: &KeyVersionRecord) -> Value {
    let kek = r.key.kek.as_ref().unwrap_or(&scheme.kek);
    let mut v = json!({
        "version": r.key.version.get(),
        "state": r.key.state.as_str(),
        "created_at": rfc3339(r.key.created_at),
        "kek": kek,
        "kek_version": r.key.wrapped.kek_version,
    });
    if let (Some(at), Some(obj)) = (r.destroyed_at, v.as_object_mut()) {
        obj.insert("destroyed_at".into(), json!(rfc3339(at)));
        obj.insert("destroyed_by".into(), json!(r.destroyed_by));
    }
    v
}
