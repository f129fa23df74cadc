//! The operations behind the Transit-compatible `hmac` and `verify` routes (docs/transit.md):
//! HMAC-SHA256 under a per-version key derived from the scheme's data key with its own label
//! (`scheme-transit-hmac-key`). Encrypt, decrypt, rewrap and the key routes are Veil's own
//! protect, unprotect, rewrap and scheme operations; only their spelling differs (`trim` is
//! [`super::schemes::trim_versions`]).

use std::collections::HashMap;

use subtle::ConstantTimeEq;

use super::{check_batch, Ctx, ItemError, OpError};
use crate::auth::Principal;
use crate::crypto::kdf;
use crate::crypto::secret::SecretKey;
use crate::ids::KeyVersion;
use crate::policy;
use crate::scheme::{Operation, Scheme};
use crate::store::KeyState;

/// A MAC of a Transit `hmac` call: 32 bytes of HMAC-SHA256.
pub type Mac = [u8; 32];

/// The scheme, if the caller may produce or check keyed digests with it (its `protect` roles).
fn hmac_scheme(ctx: &mut Ctx<'_>, who: &Principal, name: &str) -> Result<Scheme, OpError> {
    let scheme = ctx.noted_scheme(who, name)?;
    if !policy::allows(who, &scheme.policy, Operation::Protect) {
        return Err(OpError::forbidden("computing HMACs with this key (policy.protect)"));
    }
    if scheme.erased_at.is_some() {
        return Err(OpError::SchemeErased(scheme.name));
    }
    Ok(scheme)
}

/// The HMAC key of one version, or the per-item error of a version that cannot be used.
fn version_hmac_key(
    ctx: &mut Ctx<'_>,
    scheme: &Scheme,
    version: KeyVersion,
) -> Result<Result<SecretKey, ItemError>, OpError> {
    if version > scheme.current_version {
        return Ok(Err(ItemError::DECRYPTION_FAILED));
    }
    let Some(dk) = ctx.store.data_key(&scheme.tenant, &scheme.name, version)? else {
        return Ok(Err(ItemError::DECRYPTION_FAILED));
    };
    if dk.state == KeyState::Destroyed {
        return Ok(Err(ItemError::KEY_VERSION_DESTROYED));
    }
    if dk.state == KeyState::Retired || version < scheme.min_decryption_version {
        return Ok(Err(ItemError::KEY_VERSION_RETIRED));
    }
    let Some(dek) = ctx.unwrap_data_key(scheme, Some(dk), None)? else {
        return Ok(Err(ItemError::DECRYPTION_FAILED));
    };
    Ok(Ok(kdf::scheme_transit_hmac_key(&dek, &scheme.tenant, &scheme.name, version)))
}

/// HMAC-SHA256 of each input under the scheme's key `version` (`None`: the current one), which
/// must be between `min_decryption_version` and the current version (`key_version_not_found`,
/// `key_version_retired` otherwise). Returns the version used and one MAC per input.
pub fn transit_hmac(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    version: Option<KeyVersion>,
    inputs: &[Result<Vec<u8>, ItemError>],
) -> Result<(KeyVersion, Vec<Result<Mac, ItemError>>), OpError> {
    check_batch(ctx.config, inputs.len())?;
    let scheme = hmac_scheme(ctx, who, name)?;
    let version = version.unwrap_or(scheme.current_version);
    ctx.audit.version(version);
    let key = match version_hmac_key(ctx, &scheme, version)? {
        Ok(k) => k,
        Err(e) if e == ItemError::DECRYPTION_FAILED => return Err(OpError::KeyVersionNotFound(version)),
        Err(e) if e == ItemError::KEY_VERSION_DESTROYED => return Err(OpError::KeyVersionDestroyed(version)),
        Err(_) => {
            return Err(OpError::invalid_field("key_version is below the key's min_decryption_version"))
        }
    };
    let max = ctx.config.limits.max_value_bytes;
    let macs = inputs
        .iter()
        .map(|i| match i {
            Err(e) => Err(e.clone()),
            Ok(v) if v.len() > max => Err(ItemError::VALUE_TOO_LARGE),
            Ok(v) => Ok(kdf::hmac_sha256(&key, v)),
        })
        .collect();
    Ok((version, macs))
}

/// One input to check: the message and the HMAC it claims (version and MAC, or why it does not parse).
pub struct VerifyItem {
    pub input: Result<Vec<u8>, ItemError>,
    pub mac: Result<(KeyVersion, Vec<u8>), ItemError>,
}

/// Whether each item's MAC is the HMAC of its input under the version it names, compared in
/// constant time. A version that cannot be used (retired, destroyed, unknown) is that item's error.
pub fn transit_verify(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &str,
    items: &[VerifyItem],
) -> Result<Vec<Result<bool, ItemError>>, OpError> {
    check_batch(ctx.config, items.len())?;
    let scheme = hmac_scheme(ctx, who, name)?;
    let mut keys: HashMap<KeyVersion, Result<SecretKey, ItemError>> = HashMap::new();
    let max = ctx.config.limits.max_value_bytes;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let (input, (version, mac)) = match (&item.input, &item.mac) {
            (Err(e), _) | (_, Err(e)) => {
                out.push(Err(e.clone()));
                continue;
            }
            (Ok(i), Ok(m)) => (i, m),
        };
        if input.len() > max {
            out.push(Err(ItemError::VALUE_TOO_LARGE));
            continue;
        }
        if !keys.contains_key(version) {
            ctx.audit.version(*version);
            let k = version_hmac_key(ctx, &scheme, *version)?;
            keys.insert(*version, k);
        }
        out.push(match keys.get(version) {
            Some(Ok(key)) => {
                let expected = kdf::hmac_sha256(key, input);
                Ok(mac.len() == expected.len() && bool::from(expected.ct_eq(&mac[..])))
            }
            Some(Err(e)) => Err(e.clone()),
            None => Err(ItemError::DECRYPTION_FAILED),
        });
    }
    Ok(out)
}
