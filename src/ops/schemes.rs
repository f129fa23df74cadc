//! Scheme administration: create (with its first data key), list, get, rotate, and the version
//! lifecycle: the versions view, the minimum decryption version and rotation period, destroy.

use super::{Ctx, OpError};
use crate::auth::Principal;
use crate::config::Config;
use crate::crypto::aead::Algorithm;
use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use crate::kms::KeyContext;
use crate::policy;
use crate::scheme::{mask::MaskRule, AuditMode, KekRef, Operation, Policy, RotationPeriod, Scheme};
use crate::store::{ChangeOutcome, DestroyOutcome, KeyState, KeyVersionRecord, SchemeChange, StoreError};

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
    pub rotation_period: Option<RotationPeriod>,
    pub audit: AuditMode,
    pub mask_on_deny: bool,
    /// Every Transit data call must carry a context (a Transit `derived` key).
    pub context_required: bool,
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
    ctx.audit.scheme_name(new.name.as_str());
    if !policy::may_create_schemes(who) {
        return Err(OpError::forbidden("creating schemes (tenant role \"admin\" needed)"));
    }
    check_kek_allowed(ctx.config, &who.tenant, &new.kek)?;
    // A name is reused only by creating a new scheme over an erased one: its key versions carry
    // on above the erased ones, so that no old token ever names a live key (docs/erasure.md).
    let erased_current = match ctx.store.get_scheme(&who.tenant, &new.name)? {
        None => None,
        Some(old) if old.erased_at.is_some() => Some(old.current_version),
        Some(_) => return Err(OpError::SchemeExists(new.name)),
    };
    let first = match erased_current {
        None => KeyVersion::FIRST,
        Some(v) => v.next().ok_or(OpError::VersionsExhausted)?,
    };
    let scheme = Scheme {
        tenant: who.tenant.clone(),
        name: new.name,
        algorithm: new.algorithm,
        kek: new.kek,
        policy: new.policy,
        mask: new.mask,
        current_version: first,
        min_decryption_version: first,
        rotation_period: new.rotation_period,
        audit: new.audit,
        mask_on_deny: new.mask_on_deny,
        context_required: new.context_required,
        created_at: ctx.now,
        erased_at: None,
    };
    let dek = SecretKey::generate(&mut ctx.rng);
    let kctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version: first };
    let wrapped = ctx.kek(&scheme.kek)?.wrap(&dek, kctx)?;
    drop(dek);
    let stored = match erased_current {
        None => ctx.store.create_scheme(&scheme, &wrapped, ctx.now),
        Some(v) => ctx.store.recreate_erased_scheme(&scheme, v, &wrapped, ctx.now),
    };
    match stored {
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
    let mut scheme = admin_scheme(ctx, who, name)?;
    check_kek_allowed(ctx.config, &scheme.tenant, &scheme.kek)?;
    for attempt in 0..ROTATE_ATTEMPTS {
        if attempt > 0 {
            let cap = (1u64 << attempt.min(6)).min(ROTATE_MAX_BACKOFF_MS);
            let mut jitter = [0u8; 1];
            ctx.rng.fill(&mut jitter);
            let pause = cap / 2 + u64::from(jitter[0]) % (cap / 2 + 1);
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
        if let Some((version, _dek)) = rotate_if_current(ctx, &scheme, scheme.current_version)? {
            scheme.current_version = version;
            ctx.audit.version(version);
            return Ok(scheme);
        }
        scheme = admin_scheme(ctx, who, name)?;
    }
    Err(OpError::Conflict)
}

/// Adds version `expected + 1` (a fresh data key, wrapped by the scheme's KEK) only if `expected`
/// is still the scheme's current version: of many concurrent calls with the same `expected`,
/// exactly one rotates (a compare-and-set in the store, on SQLite and PostgreSQL alike).
///
/// Returns the new version and its data key when this call rotated, `None` when another writer
/// had moved the scheme on (re-read it for the version now current). No policy check: the caller
/// decides who may rotate (an admin's request, a protect past `rotation_period`).
pub fn rotate_if_current(
    ctx: &mut Ctx<'_>,
    scheme: &Scheme,
    expected: KeyVersion,
) -> Result<Option<(KeyVersion, SecretKey)>, OpError> {
    let next = expected.next().ok_or(OpError::VersionsExhausted)?;
    let dek = SecretKey::generate(&mut ctx.rng);
    let kctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version: next };
    let wrapped = ctx.kek(&scheme.kek)?.wrap(&dek, kctx)?;
    match ctx.store.add_key_version(&scheme.tenant, &scheme.name, expected, &wrapped, &scheme.kek, ctx.now) {
        Ok(v) => Ok(Some((v, dek))),
        Err(StoreError::Conflict) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A scheme's data-key versions, oldest first (never key bytes, wrapped or not).
pub fn list_versions(
    ctx: &Ctx<'_>,
    who: &Principal,
    name: &str,
) -> Result<(Scheme, Vec<KeyVersionRecord>), OpError> {
    let name = super::parse_scheme_name(name)?;
    ctx.store.list_key_versions(&who.tenant, &name)?.ok_or(OpError::SchemeNotFound(name))
}

/// Changes a scheme's `min_decryption_version` and/or `rotation_period`. Raising the minimum
/// retires the versions below it; lowering it re-activates them, unless one is destroyed.
pub fn update_scheme(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    change: &SchemeChange,
) -> Result<Scheme, OpError> {
    let scheme = admin_scheme(ctx, who, name)?;
    match ctx.store.update_scheme(&scheme.tenant, &scheme.name, change, ctx.now)? {
        ChangeOutcome::Changed(s) => Ok(*s),
        ChangeOutcome::SchemeNotFound => Err(OpError::SchemeNotFound(scheme.name)),
        // a minimum above the current version names a version that does not exist (yet)
        ChangeOutcome::AboveCurrent(_) => {
            Err(OpError::KeyVersionNotFound(change.min_decryption_version.ok_or(OpError::Internal)?))
        }
        ChangeOutcome::Destroyed(v) => Err(OpError::KeyVersionDestroyed(v)),
    }
}

/// Destroys a retired data-key version: its wrapped key is deleted from the store and any cached
/// copy from the DEK cache. Its tokens can never be unprotected again.
pub fn destroy_version(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    version: KeyVersion,
) -> Result<(), OpError> {
    let scheme = admin_scheme(ctx, who, name)?;
    ctx.audit.version(version);
    let outcome =
        ctx.store.destroy_key_version(&scheme.tenant, &scheme.name, version, &who.subject, ctx.now)?;
    match outcome {
        DestroyOutcome::Destroyed => {
            forget_cached_deks(ctx, &scheme.tenant, &[(scheme.name.clone(), version)]);
            Ok(())
        }
        DestroyOutcome::SchemeNotFound => Err(OpError::SchemeNotFound(scheme.name)),
        DestroyOutcome::VersionNotFound => Err(OpError::KeyVersionNotFound(version)),
        DestroyOutcome::Active => Err(OpError::KeyVersionActive(version)),
        DestroyOutcome::AlreadyDestroyed => Err(OpError::KeyVersionDestroyed(version)),
    }
}

/// Why a Transit `trim` was refused (Transit's rules; nothing is destroyed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimRefusal {
    /// Below the key's current `min_available_version`.
    Decremented,
    /// Zero.
    NotPositive,
    /// Above the key's `min_decryption_version`.
    AboveMinDecryption,
}

/// The lowest version still available when the versions below it are all destroyed (Transit's
/// `min_available_version`), or 0 when no version below the first available one is destroyed.
pub fn min_available_version(versions: &[KeyVersionRecord]) -> u32 {
    let Some(first) = versions.iter().find(|r| r.key.state != KeyState::Destroyed) else {
        return 0;
    };
    let below = versions.iter().filter(|r| r.key.version < first.key.version).count();
    if below == 0 {
        0
    } else {
        first.key.version.get()
    }
}

/// Trims a scheme (Transit's `keys/{name}/trim`): destroys every version of the key below `min_available`
/// (Veil's version destroy, `POST /v1/schemes/{name}/versions/{v}/destroy`, once per version),
/// which must be from 1 to the key's `min_decryption_version` and not below what is already
/// trimmed. Administering the key is needed. Returns the versions it destroyed.
pub fn trim_versions(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    min_available: u64,
) -> Result<Result<Vec<KeyVersion>, TrimRefusal>, OpError> {
    let scheme = admin_scheme(ctx, who, name)?;
    ctx.audit.scheme(&scheme);
    let (_, versions) = ctx
        .store
        .list_key_versions(&scheme.tenant, &scheme.name)?
        .ok_or(OpError::SchemeNotFound(scheme.name.clone()))?;
    if min_available < u64::from(min_available_version(&versions)) {
        return Ok(Err(TrimRefusal::Decremented));
    }
    if min_available == 0 {
        return Ok(Err(TrimRefusal::NotPositive));
    }
    if min_available > u64::from(scheme.min_decryption_version.get()) {
        return Ok(Err(TrimRefusal::AboveMinDecryption));
    }
    let mut destroyed = Vec::new();
    for r in versions.iter().filter(|r| u64::from(r.key.version.get()) < min_available) {
        if r.key.state == KeyState::Destroyed {
            continue;
        }
        let v = r.key.version;
        ctx.audit.version(v);
        match ctx.store.destroy_key_version(&scheme.tenant, &scheme.name, v, &who.subject, ctx.now)? {
            DestroyOutcome::Destroyed => destroyed.push(v),
            DestroyOutcome::AlreadyDestroyed => {}
            DestroyOutcome::SchemeNotFound => return Err(OpError::SchemeNotFound(scheme.name)),
            DestroyOutcome::VersionNotFound => return Err(OpError::KeyVersionNotFound(v)),
            // a concurrent change lowered the minimum below this version since it was read
            DestroyOutcome::Active => return Err(OpError::Conflict),
        }
    }
    let slots: Vec<_> = destroyed.iter().map(|v| (scheme.name.clone(), *v)).collect();
    forget_cached_deks(ctx, &scheme.tenant, &slots);
    Ok(Ok(destroyed))
}

/// Drops the DEK cache's copies of these destroyed versions (a no-op without the cache). Entries
/// of a destroyed version could not be used anyway (their seal binds the wrapped key, now gone,
/// and destroyed versions are refused before the cache is asked); this removes the key material.
pub fn forget_cached_deks(ctx: &Ctx<'_>, tenant: &crate::ids::TenantId, slots: &[(SchemeName, KeyVersion)]) {
    if let Some(cache) = &ctx.dek_cache {
        for (scheme, version) in slots {
            cache.forget(KeyContext { tenant, scheme, version: *version });
        }
    }
}

/// The scheme, if the caller may administer it.
pub(super) fn admin_scheme(ctx: &Ctx<'_>, who: &Principal, name: &str) -> Result<Scheme, OpError> {
    let scheme = ctx.scheme(who, name)?;
    if !policy::allows(who, &scheme.policy, Operation::Admin) {
        return Err(OpError::forbidden("administering this scheme"));
    }
    if scheme.erased_at.is_some() {
        return Err(OpError::SchemeErased(scheme.name));
    }
    Ok(scheme)
}
