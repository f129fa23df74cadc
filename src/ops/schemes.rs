//! Scheme administration: create (with its first data key), list, get, rotate.

use super::{Ctx, OpError};
use crate::auth::Principal;
use crate::config::Config;
use crate::crypto::aead::Algorithm;
use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use crate::kms::KeyContext;
use crate::policy;
use crate::scheme::{mask::MaskRule, KekRef, Operation, Policy, Scheme};
use crate::store::StoreError;

/// How often a rotation re-reads and retries when a concurrent rotation won (each lost race
/// means another rotation succeeded, so N concurrent rotations need at most N attempts).
const ROTATE_ATTEMPTS: u32 = 32;
/// The longest pause between two attempts; pauses grow from 1 ms and are jittered so that
/// racing rotations spread out instead of colliding again.
const ROTATE_MAX_BACKOFF_MS: u64 = 50;

/// The fields a new scheme is made of, already parsed from the request.
pub struct NewScheme {
    pub name: SchemeName,
    pub algorithm: Algorithm,
    pub kek: KekRef,
    pub policy: Policy,
    pub mask: MaskRule,
}

/// Refuses a KEK that the operator's `kek_allow` list does not let `tenant` name, before any
/// KMS call (issue 19 item 3; docs/kms.md § Which keys tenants may use). Called on every path
/// that makes a scheme use a KEK: create, rotate, and a change of KEK (rekey). The refusal is
/// logged for operators with the key's id (no key material, no token).
pub fn check_kek_allowed(config: &Config, tenant: &TenantId, kek: &KekRef) -> Result<(), OpError> {
    if matches!(kek, KekRef::Local) {
        return Ok(());
    }
    let settings = config.kms.get()?;
    let id = match kek {
        KekRef::AwsKms { key_id } => key_id.as_str(),
        KekRef::AzureKeyvault { key_url } => key_url.as_str(),
        KekRef::Local => "local",
    };
    let shown: String = id.chars().filter(|c| !c.is_control()).take(256).collect();
    // A key URL that would steer the vault token to a local listener is refused like a key
    // outside the list (docs/kms.md § Private endpoints).
    if let KekRef::AzureKeyvault { key_url } = kek {
        let allow_private = config.dev_mode || settings.allow_private_endpoints;
        if let Err(why) = crate::kms::endpoint::check_vault_url(key_url, "the key_url", allow_private) {
            eprintln!("veil: tenant {tenant}: Azure key {shown:?} refused: {why}");
            return Err(OpError::KekNotAllowed);
        }
    }
    if settings.kek_allow.allows(config.dev_mode, tenant, kek) {
        return Ok(());
    }
    eprintln!("veil: kek_allow refused tenant {tenant}: {} key {shown:?} is not allowed", kek.provider());
    Err(OpError::KekNotAllowed)
}

/// Creates a scheme with a fresh data key (version 1), wrapped by its KEK.
pub fn create_scheme(ctx: &mut Ctx<'_>, who: &Principal, new: NewScheme) -> Result<Scheme, OpError> {
    if !policy::may_create_schemes(who) {
        return Err(OpError::forbidden("creating schemes (tenant role \"admin\" needed)"));
    }
    check_kek_allowed(ctx.config, &who.tenant, &new.kek)?;
    let scheme = Scheme {
        tenant: who.tenant.clone(),
        name: new.name,
        algorithm: new.algorithm,
        kek: new.kek,
        policy: new.policy,
        mask: new.mask,
        current_version: KeyVersion::FIRST,
        created_at: ctx.now,
    };
    let dek = SecretKey::generate(&mut ctx.rng);
    let kctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version: KeyVersion::FIRST };
    let wrapped = ctx.kek(&scheme.kek)?.wrap(&dek, kctx)?;
    drop(dek);
    match ctx.store.create_scheme(&scheme, &wrapped, ctx.now) {
        Ok(()) => Ok(scheme),
        Err(StoreError::Exists) => Err(OpError::SchemeExists(scheme.name)),
        Err(e) => Err(e.into()),
    }
}

pub fn list_schemes(ctx: &Ctx<'_>, who: &Principal) -> Result<Vec<Scheme>, OpError> {
    Ok(ctx.store.list_schemes(&who.tenant)?)
}

pub fn get_scheme(ctx: &Ctx<'_>, who: &Principal, name: &str) -> Result<Scheme, OpError> {
    ctx.scheme(who, name)
}

/// Adds a data-key version and makes it current; concurrent rotations each add one version.
pub fn rotate(ctx: &mut Ctx<'_>, who: &Principal, name: &str) -> Result<Scheme, OpError> {
    let mut scheme = ctx.scheme(who, name)?;
    if !policy::allows(who, &scheme.policy, Operation::Admin) {
        return Err(OpError::forbidden("administering this scheme"));
    }
    check_kek_allowed(ctx.config, &scheme.tenant, &scheme.kek)?;
    for attempt in 0..ROTATE_ATTEMPTS {
        if attempt > 0 {
            let cap = (1u64 << attempt.min(6)).min(ROTATE_MAX_BACKOFF_MS);
            let mut jitter = [0u8; 1];
            ctx.rng.fill(&mut jitter);
            let pause = cap / 2 + u64::from(jitter[0]) % (cap / 2 + 1);
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
        let next = scheme.current_version.next().ok_or(OpError::VersionsExhausted)?;
        let dek = SecretKey::generate(&mut ctx.rng);
        let kctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version: next };
        let wrapped = ctx.kek(&scheme.kek)?.wrap(&dek, kctx)?;
        drop(dek);
        match ctx.store.add_key_version(
            &scheme.tenant,
            &scheme.name,
            scheme.current_version,
            &wrapped,
            ctx.now,
        ) {
            Ok(v) => {
                scheme.current_version = v;
                return Ok(scheme);
            }
            Err(StoreError::Conflict) => {
                scheme = ctx.scheme(who, name)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(OpError::Conflict)
}
