//! The data path: protect, unprotect and mask batches of values.

use std::collections::HashMap;

use super::subjects::{derive_value_key, Subject};
use super::{check_batch, check_binding, max_token_len, parse_scheme_name, Ctx, ItemError, OpError};
use crate::auth::Principal;
use crate::crypto::aead::AeadKey;
use crate::crypto::{kdf, token};
use crate::ids::{KeyVersion, SchemeName};
use crate::policy;
use crate::scheme::{Operation, Scheme};
use crate::store::DataKey;

/// An unprotected value: wiped when dropped.
pub type Plaintext = zeroize::Zeroizing<Vec<u8>>;

/// A scheme version within one request (each is unwrapped at most once).
type Slot = (SchemeName, KeyVersion);

/// Protects each value; per-item failures (an over-long value) leave the others untouched.
pub fn protect(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: &str,
    values: &[Result<Vec<u8>, ItemError>],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<(KeyVersion, Vec<Result<String, ItemError>>), OpError> {
    check_batch(ctx.config, values.len())?;
    let subject_id = check_binding(subject, context)?;
    let name = parse_scheme_name(scheme)?;
    let (scheme, current) =
        ctx.store.get_scheme_with_current_key(&who.tenant, &name)?.ok_or(OpError::SchemeNotFound(name))?;
    if !policy::allows(who, &scheme.policy, Operation::Protect) {
        return Err(OpError::forbidden("protecting with this scheme"));
    }
    let version = scheme.current_version;
    let subject_state = match subject_id {
        Some(id) => Some(Subject::for_protect(ctx, who, id)?),
        None => None,
    };
    let dek = ctx.unwrap_data_key(&scheme, current)?.ok_or_else(|| {
        eprintln!("veil: scheme {}/{} has no usable current data key", scheme.tenant, scheme.name);
        OpError::Internal
    })?;
    let key = derive_value_key(&scheme, version, &dek, subject_state.as_ref()).ok_or(OpError::Internal)?;
    drop(dek);
    let max = ctx.config.limits.max_value_bytes;
    let mut sealer = token::Sealer::new(&key, &scheme.tenant, &scheme.name, version, subject, context);
    let results = values
        .iter()
        .map(|v| match v {
            Err(e) => Err(e.clone()),
            Ok(pt) if pt.len() > max => Err(ItemError::VALUE_TOO_LARGE),
            Ok(pt) => Ok(sealer.protect(&mut ctx.rng, pt)),
        })
        .collect();
    Ok((version, results))
}

/// Unprotects each token. If the caller may not unprotect a scheme that a token names, the whole
/// batch is refused before anything is decrypted.
pub fn unprotect(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    tokens: &[&str],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Vec<Result<Plaintext, ItemError>>, OpError> {
    check_batch(ctx.config, tokens.len())?;
    let mut subject_id = check_binding(subject, context)?;
    let max_len = max_token_len(ctx.config.limits.max_value_bytes);
    let parsed: Vec<Result<token::ParsedToken, ItemError>> = tokens
        .iter()
        .map(|t| {
            if t.len() > max_len {
                Err(ItemError::VALUE_TOO_LARGE)
            } else {
                token::parse(t).map_err(|_| ItemError::INVALID_TOKEN)
            }
        })
        .collect();
    // Every scheme named in the batch, checked before any decryption; each read brings along the
    // data key of the first token naming it (one round trip for the common one-version batch).
    let mut schemes: HashMap<SchemeName, Option<Scheme>> = HashMap::new();
    let mut fetched: HashMap<Slot, Option<DataKey>> = HashMap::new();
    for p in parsed.iter().flatten() {
        if schemes.contains_key(&p.scheme) {
            continue;
        }
        let found = ctx.store.get_scheme_with_key(&who.tenant, &p.scheme, p.key_version)?;
        let found = found.map(|(s, key)| {
            fetched.insert((p.scheme.clone(), p.key_version), key);
            s
        });
        if let Some(s) = &found {
            if !policy::allows(who, &s.policy, Operation::Unprotect) {
                return Err(OpError::forbidden(format!("unprotecting with scheme \"{}\"", s.name)));
            }
        }
        schemes.insert(p.scheme.clone(), found);
    }
    // The subject's secret, read once (never created) when the first token needs it.
    let mut subject_state: Option<Subject> = None;
    let mut erased: Option<ItemError> = None;
    // One unwrap (and one AAD) per scheme version per request.
    let mut keys: HashMap<Slot, Option<(AeadKey, Vec<u8>)>> = HashMap::new();
    let mut out = Vec::with_capacity(parsed.len());
    for p in parsed {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let Some(Some(scheme)) = schemes.get(&p.scheme) else {
            out.push(Err(ItemError::DECRYPTION_FAILED));
            continue;
        };
        let slot = (p.scheme.clone(), p.key_version);
        if let Some(id) = subject_id.take() {
            subject_state = Some(Subject::for_unprotect(ctx, who, id)?);
        }
        if !keys.contains_key(&slot) {
            let key = if p.key_version > scheme.current_version {
                None
            } else {
                let dek = match fetched.remove(&slot) {
                    Some(dk) => ctx.unwrap_data_key(scheme, dk)?,
                    None => ctx.unwrap_dek(scheme, p.key_version)?,
                };
                dek.and_then(|dek| {
                    let key = derive_value_key(scheme, p.key_version, &dek, subject_state.as_ref())?;
                    Some((key, token::aad(&who.tenant, &p.scheme, p.key_version, subject, context)))
                })
            };
            keys.insert(slot.clone(), key);
        }
        let result = match keys.get(&slot) {
            // The same as token::unprotect, with the slot's AAD built once.
            Some(Some((key, aad))) => key.open(aad, &p.sealed).map_err(|_| ItemError::DECRYPTION_FAILED),
            _ => Err(ItemError::DECRYPTION_FAILED),
        };
        let result = match (result, &subject_state) {
            // Erased subjects are told apart from tampering by the certificate Veil keeps.
            (Err(_), Some(s)) => Err(erased.get_or_insert(s.open_failure(ctx, who)?).clone()),
            (r, _) => r,
        };
        out.push(result);
    }
    Ok(out)
}

/// Masks each value with the scheme's rule; `None` is a JSON null (the `nullify` rule).
pub fn mask(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: &str,
    values: &[&str],
) -> Result<Vec<Result<Option<String>, ItemError>>, OpError> {
    check_batch(ctx.config, values.len())?;
    let scheme = ctx.scheme(who, scheme)?;
    if !policy::allows(who, &scheme.policy, Operation::Mask) {
        return Err(OpError::forbidden("masking with this scheme"));
    }
    let mask_key = if scheme.mask.needs_key() {
        let version = scheme.current_version;
        let dek = ctx.unwrap_dek(&scheme, version)?.ok_or(OpError::Internal)?;
        Some(kdf::scheme_mask_key(&dek, &scheme.tenant, &scheme.name, version))
    } else {
        None
    };
    let max = ctx.config.limits.max_value_bytes;
    values
        .iter()
        .map(|v| {
            if v.len() > max {
                return Ok(Err(ItemError::VALUE_TOO_LARGE));
            }
            scheme.mask.apply(v, mask_key.as_ref()).map(Ok).map_err(|_| OpError::Internal)
        })
        .collect()
}
