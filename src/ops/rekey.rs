//! KEK rotation (rekey): every data-key version that is not destroyed is unwrapped under the KEK
//! that wraps it and wrapped again under the new one. No token changes and no data is touched.
//!
//! Safe to interrupt: each version's new wrap is checked by unwrapping it (and comparing the data
//! key, in constant time) before it replaces the old blob, one version per transaction, and each
//! version records the KEK that wraps it, so a half-done rekey leaves every version readable. The
//! scheme's own KEK (the one new versions get) changes last, in the transaction of the request's
//! audit entry; running the rekey again finishes it.

use subtle::ConstantTimeEq;

use super::schemes::admin_scheme;
use super::{Ctx, OpError};
use crate::auth::Principal;
use crate::ids::KeyVersion;
use crate::kms::KeyContext;
use crate::scheme::{KekRef, Scheme};
use crate::store::{KeyState, KeyVersionRecord};

/// What a rekey did: the scheme as it now is, its versions, and which versions it rewrapped.
pub struct Rekeyed {
    pub scheme: Scheme,
    pub versions: Vec<KeyVersionRecord>,
    pub rewrapped: Vec<KeyVersion>,
}

/// Rewraps every version of the scheme that is not destroyed under `kek` (`None`: the scheme's
/// KEK again, which picks up the newest key version of a vault that versions its keys). When
/// `kek` is a new KEK, versions it already wraps (an earlier, interrupted run) are left alone.
pub fn rekey(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    kek: Option<KekRef>,
) -> Result<Rekeyed, OpError> {
    let scheme = admin_scheme(ctx, who, name)?;
    let target = kek.unwrap_or_else(|| scheme.kek.clone());
    // The operator's kek_allow list, before any KMS call (issue 19 item 3).
    super::check_kek_allowed(ctx.config, &scheme.tenant, &target)?;
    let (_, versions) = super::list_versions(ctx, who, name)?;
    let moving = target != scheme.kek;
    let mut rewrapped = Vec::new();
    for r in versions {
        let dk = r.key;
        if dk.state == KeyState::Destroyed {
            continue;
        }
        let current = dk.kek.clone().unwrap_or_else(|| scheme.kek.clone());
        if moving && current == target {
            continue;
        }
        let kctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version: dk.version };
        let dek = ctx.kek(&current)?.unwrap(&dk.wrapped, kctx)?;
        let new = ctx.kek(&target)?.wrap(&dek, kctx)?;
        let check = ctx.kek(&target)?.unwrap(&new, kctx)?;
        if !bool::from(check.ct_eq(&dek)) {
            eprintln!(
                "veil: rekey of {}/{} version {}: the new wrap did not unwrap to the same key; left as it was",
                scheme.tenant, scheme.name, dk.version
            );
            return Err(OpError::Internal);
        }
        drop((dek, check));
        let replaced =
            ctx.store.replace_wrapped_key(&scheme.tenant, &scheme.name, &dk, &new, &target, ctx.now)?;
        // Each version is committed as it is done (not with the request's audit entry), so that
        // an interrupted rekey keeps what it did and no KMS call waits inside a write transaction.
        ctx.store.commit_writes()?;
        if replaced {
            rewrapped.push(dk.version);
        }
        // Not replaced: destroyed or rewrapped meanwhile by another writer; nothing to do.
    }
    ctx.store.set_scheme_kek(&scheme.tenant, &scheme.name, &target, ctx.now)?;
    let (scheme, versions) = super::list_versions(ctx, who, name)?;
    Ok(Rekeyed { scheme, versions, rewrapped })
}
