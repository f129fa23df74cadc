//! Erasure of a whole scheme or a whole tenant (docs/erasure.md, "Erasing a scheme or a
//! tenant"): every key version of the scope destroyed in one transaction (rows kept as
//! `destroyed`), for a tenant every subject secret deleted too, cached data keys dropped, and a
//! signed certificate returned. Irreversible and idempotent.

use serde_json::{Map, Value};

use super::subjects::{certificate_id, parse_stored};
use super::{parse_scheme_name, Ctx, OpError};
use crate::auth::Principal;
use crate::policy;
use crate::store::{ScopeErased, ScopeErasure};
use crate::subjects::certificate;

fn check_may_erase(who: &Principal) -> Result<(), OpError> {
    if policy::may_erase_scopes(who) {
        Ok(())
    } else {
        Err(OpError::forbidden("erasing a scheme or the tenant (tenant role \"admin\" needed)"))
    }
}

/// Erases the scheme `name`: `confirm` must be that name.
pub fn erase_scheme(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    confirm: Option<&str>,
) -> Result<Value, OpError> {
    check_may_erase(who)?;
    let name = parse_scheme_name(name)?;
    if confirm != Some(name.as_str()) {
        return Err(OpError::ConfirmationMismatch("the scheme's name"));
    }
    erase(ctx, who, "scheme", Some(&name))
}

/// Erases the caller's whole tenant: `confirm` must be the tenant's id.
pub fn erase_tenant(ctx: &mut Ctx<'_>, who: &Principal, confirm: Option<&str>) -> Result<Value, OpError> {
    check_may_erase(who)?;
    if confirm != Some(who.tenant.as_str()) {
        return Err(OpError::ConfirmationMismatch("the tenant's id"));
    }
    erase(ctx, who, "tenant", None)
}

fn erase(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scope: &'static str,
    scheme: Option<&crate::ids::SchemeName>,
) -> Result<Value, OpError> {
    let settings = ctx.config.subjects.get()?;
    // Without a signing key nothing is destroyed: Veil never erases without a certificate.
    let (key, kid) = settings.signer()?;
    let cert_id = certificate_id(ctx);
    let now = ctx.now;
    let make = |done: &ScopeErased| {
        let mut f = Map::new();
        f.insert("certificate_id".into(), cert_id.clone().into());
        f.insert("scope".into(), scope.into());
        f.insert("tenant".into(), who.tenant.as_str().into());
        f.insert("erased_at".into(), now.into());
        let names: Vec<Value> = done.versions.iter().map(|(n, _)| n.as_str().into()).collect();
        f.insert("schemes".into(), names.into());
        let versions: Map<String, Value> = done
            .versions
            .iter()
            .map(|(n, vs)| (n.as_str().to_owned(), vs.iter().map(|v| Value::from(v.get())).collect()))
            .collect();
        f.insert("key_versions".into(), versions.into());
        if let Some(n) = done.subject_secrets_deleted {
            f.insert("subject_secrets_deleted".into(), n.into());
        }
        let cert = Value::Object(certificate::sign(f, &settings.issuer, key, kid));
        (cert_id.clone(), cert.to_string())
    };
    let outcome = match scheme {
        Some(name) => ctx.store.erase_scheme(&who.tenant, name, &who.subject, now, &make)?,
        None => ctx.store.erase_tenant(&who.tenant, &who.subject, now, &make)?,
    };
    let (json, destroyed) = match outcome {
        ScopeErasure::SchemeNotFound => {
            return Err(OpError::SchemeNotFound(scheme.cloned().ok_or(OpError::Internal)?))
        }
        ScopeErasure::Erased { certificate, destroyed } => (certificate, destroyed),
    };
    super::forget_cached_deks(ctx, &who.tenant, &destroyed);
    let cert = parse_stored(&json)?;
    let id = cert.get("certificate_id").and_then(Value::as_str).unwrap_or("?");
    let what = scheme.map_or_else(|| "the whole tenant".to_owned(), |s| format!("scheme {s}"));
    eprintln!(
        "veil: tenant {}: {what} erased by {} ({} key versions destroyed now; certificate {id})",
        who.tenant,
        who.subject,
        destroyed.len()
    );
    Ok(cert)
}
