//! Scheme administration: create (with its first data key), list, get, rotate.

use super::{Ctx, OpError};
use crate::auth::Principal;
use crate::crypto::aead::Algorithm;
use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName};
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

/// Creates a scheme with a fresh data key (version 1), wrapped by its KEK.
pub fn create_scheme(ctx: &mut Ctx<'_>, who: &Principal, new: NewScheme) -> Result<Scheme, OpError> {
    if !policy::may_create_schemes(who) {
        return Err(OpError::forbidden("creating schemes (tenant role \"admin\" needed)"));
    }
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

/// Adds a data-key version only if `expected` is still the scheme's current one, with no policy
/// check: for rotations Veil decides itself (a key version near its seal bound, issue 19 item 6).
/// Many requests racing to rotate the same version make exactly one new version: the store's
/// conditional update lets one win, and the others find the scheme moved on and are done too.
/// Returns the scheme as it is afterwards (re-read when another request won).
pub fn rotate_if_current(
    ctx: &mut Ctx<'_>,
    scheme: &Scheme,
    expected: KeyVersion,
) -> Result<Scheme, OpError> {
    if scheme.current_version != expected {
        return Ok(scheme.clone());
    }
    let next = expected.next().ok_or(OpError::VersionsExhausted)?;
    let dek = SecretKey::generate(&mut ctx.rng);
    let kctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version: next };
    let wrapped = ctx.kek(&scheme.kek)?.wrap(&dek, kctx)?;
    drop(dek);
    match ctx.store.add_key_version(&scheme.tenant, &scheme.name, expected, &wrapped, ctx.now) {
        Ok(v) => {
            eprintln!(
                "veil: scheme {}/{} rotated to key version {v}: version {expected} reached its seal limit",
                scheme.tenant, scheme.name
            );
            Ok(Scheme { current_version: v, ..scheme.clone() })
        }
        Err(StoreError::Conflict) => ctx
            .store
            .get_scheme(&scheme.tenant, &scheme.name)?
            .ok_or_else(|| OpError::SchemeNotFound(scheme.name.clone())),
        Err(e) => Err(e.into()),
    }
}
