//! The data path: protect, unprotect, rewrap and mask batches of values.

use std::collections::{HashMap, HashSet};

use super::schemes::rotate_if_current;
use super::subjects::{derive_value_key, Subject};
use super::{
    check_batch, check_binding, max_token_len, parse_scheme_name, seals, Ctx, ItemError, OpError, Sealing,
};
use crate::auth::Principal;
use crate::crypto::aead::AeadKey;
use crate::crypto::secret::SecretKey;
use crate::crypto::{kdf, token};
use crate::ids::{KeyVersion, SchemeName};
use crate::kms::KeyContext;
use crate::policy;
use crate::scheme::{KekRef, Operation, Scheme};
use crate::store::{decode_scheme_row, DataKey, KeyState};

/// An unprotected value: wiped when dropped.
pub type Plaintext = zeroize::Zeroizing<Vec<u8>>;

/// A scheme version within one request (each is unwrapped at most once).
type Slot = (SchemeName, KeyVersion);

/// How [`protect_spelled`] writes its tokens: Veil's own grammar, or Transit's `vault:v<N>:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    Veil,
    Transit,
}

/// Protects each value; per-item failures (an over-long value) leave the others untouched.
pub fn protect(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: &str,
    values: &[Result<Vec<u8>, ItemError>],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<(KeyVersion, Vec<Result<String, ItemError>>), OpError> {
    protect_spelled(ctx, who, scheme, values, subject, context, Spelling::Veil)
}

/// [`protect`], with the tokens spelled as `spelling` says (the Transit routes write Transit's
/// ciphertexts directly: the same payload, key and AAD; docs/token-format.md).
pub fn protect_spelled(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: &str,
    values: &[Result<Vec<u8>, ItemError>],
    subject: Option<&str>,
    context: Option<&str>,
    spelling: Spelling,
) -> Result<(KeyVersion, Vec<Result<String, ItemError>>), OpError> {
    check_batch(ctx.config, values.len())?;
    let subject_id = check_binding(subject, context)?;
    let name = parse_scheme_name(scheme)?;
    let max = ctx.config.limits.max_value_bytes;
    let n = values.iter().filter(|v| matches!(v, Ok(pt) if pt.len() <= max)).count() as u64;
    let CurrentKey { scheme, current, sealing, dek } = current_key_with_seals(ctx, who, &name, n)?;
    let version = scheme.current_version;
    ctx.audit.version(version);
    let dek = match dek {
        Some(dek) => dek,
        None => ctx.unwrap_sealing(&scheme, current, sealing)?.ok_or_else(|| {
            eprintln!("veil: scheme {}/{} has no usable current data key", scheme.tenant, scheme.name);
            OpError::Internal
        })?,
    };
    // After the unwrap: a subject's first secret is a write, which holds the request's write
    // transaction open until the audit entry commits it, and no KMS call should wait inside it.
    let subject_state = match subject_id {
        Some(id) => Some(Subject::for_protect(ctx, who, id)?),
        None => None,
    };
    let key = derive_value_key(&scheme, version, &dek, subject_state.as_ref()).ok_or(OpError::Internal)?;
    drop(dek);
    let mut sealer = token::Sealer::new(&key, &scheme.tenant, &scheme.name, version, subject, context);
    let results = values
        .iter()
        .map(|v| match v {
            Err(e) => Err(e.clone()),
            Ok(pt) if pt.len() > max => Err(ItemError::VALUE_TOO_LARGE),
            Ok(pt) if spelling == Spelling::Transit => Ok(sealer.protect_transit(&mut ctx.rng, version, pt)),
            Ok(pt) => Ok(sealer.protect(&mut ctx.rng, pt)),
        })
        .collect();
    Ok((version, results))
}

/// A scheme, its current data key, what the DEK cache is told of the version's seal count, and
/// the unwrapped data key itself when the warm path (scheme cache and DEK cache) served it.
struct CurrentKey {
    scheme: Scheme,
    current: Option<DataKey>,
    sealing: Sealing,
    dek: Option<SecretKey>,
}

/// How often a protect re-reads the scheme after its current version reached the seal limit or its
/// rotation period (each time one rotation happened, by this request or a concurrent one).
const SEAL_LIMIT_ATTEMPTS: u32 = 8;

/// The scheme and its current data key, with this request's `n` values reserved in the current
/// version's seal count (issue 19 item 6) by sampling (`ops::seals`: whole blocks, and one more
/// with the probability of the rest; exact counting for small limits). A version whose count
/// would pass the scheme's seal limit seals nothing more: the scheme is rotated (exactly one new
/// version however many requests cross the limit together) and the reservation is made on the
/// new version.
///
/// The first read may come from the scheme cache (docs/kms.md, "The scheme cache"), only together
/// with a DEK-cache hit for the key it names: a cached row never sends a wrapped key to the vault,
/// so a stale entry cannot bring back a key destroyed since. Policy, erasure, rotation period and
/// seal limit are checked on every request, on whichever row was read.
fn current_key_with_seals(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &SchemeName,
    n: u64,
) -> Result<CurrentKey, OpError> {
    let mut reserve: Option<u64> = None;
    let mut warm = true;
    for _ in 0..SEAL_LIMIT_ATTEMPTS {
        let read = if warm { warm_read(ctx, who, name) } else { None };
        warm = false;
        let (scheme, current, mut cached) = match read {
            Some((s, dk, cached)) => (s, Some(dk), Some(cached)),
            None => {
                let (s, dk) = cold_read(ctx, who, name)?;
                (s, dk, None)
            }
        };
        ctx.audit.scheme(&scheme);
        if !policy::allows(who, &scheme.policy, Operation::Protect) {
            return Err(OpError::forbidden("protecting with this scheme"));
        }
        if scheme.erased_at.is_some() {
            return Err(OpError::SchemeErased(scheme.name));
        }
        // Past the rotation period, the first protect rotates (exactly one of many concurrent
        // ones); every one of them then re-reads the scheme and uses the version it made.
        if let (Some(period), Some(dk)) = (scheme.rotation_period, &current) {
            if period.is_due(dk.created_at, ctx.now) {
                let _rotated = rotate_if_current(ctx, &scheme, scheme.current_version)?;
                continue;
            }
        }
        if n == 0 {
            let dek = cached.map(|(dek, _)| dek);
            return Ok(CurrentKey { scheme, current, sealing: Sealing::Nothing, dek });
        }
        let limit = ctx.config.seal_limit(scheme.algorithm);
        if n > limit {
            let max = usize::try_from(limit).unwrap_or(usize::MAX);
            return Err(OpError::BatchTooLarge { values: n as usize, max });
        }
        // Drawn once per request: a retry after a rotation reserves the same amount.
        let r = *reserve.get_or_insert_with(|| seals::reservation(n, seals::block_size(limit), &mut ctx.rng));
        if r == 0 {
            let dek = cached.map(|(dek, _)| dek);
            return Ok(CurrentKey { scheme, current, sealing: Sealing::Unreserved, dek });
        }
        let version = scheme.current_version;
        let total = ctx.store.reserve_seals(&scheme.tenant, &scheme.name, version, r)?;
        if total > limit {
            let _rotated = rotate_if_current(ctx, &scheme, version)?;
            continue;
        }
        let sealing = Sealing::Reserved { total, n: r };
        if let Some((dek, seals_at_put)) = cached.take() {
            let used_up = ctx.dek_cache.as_ref().is_some_and(|c| c.used_up(seals_at_put, total));
            if !used_up {
                return Ok(CurrentKey { scheme, current, sealing, dek: Some(dek) });
            }
            // The cached key has sealed its `dek_cache_max_uses`: drop it, and unwrap the key as
            // the database has it now (never the cached row's copy of the wrapped key).
            if let Some(c) = &ctx.dek_cache {
                c.forget(KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version });
            }
            let current = ctx.store.data_key(&scheme.tenant, &scheme.name, version)?;
            if !current.as_ref().is_some_and(|dk| dk.state == KeyState::Active) {
                continue; // destroyed meanwhile (an erasure elsewhere): the database read decides
            }
            return Ok(CurrentKey { scheme, current, sealing, dek: None });
        }
        return Ok(CurrentKey { scheme, current, sealing, dek: None });
    }
    Err(OpError::Conflict)
}

/// The warm path: the scheme cache's row of `name` and the DEK cache's key for its current
/// version (`None` unless both hit, the row is a live scheme whose current key is active, and its
/// KEK may be used by this deployment; the database read decides everything else).
fn warm_read(
    ctx: &Ctx<'_>,
    who: &Principal,
    name: &SchemeName,
) -> Option<(Scheme, DataKey, (SecretKey, u64))> {
    let (cache, dek_cache) = ctx.warm_caches()?;
    let now = u64::try_from(ctx.now).ok()?;
    let row = cache.get(dek_cache.kv(), &who.tenant, name, now)?;
    let Ok((scheme, Some(dk))) = decode_scheme_row(&row) else { return None };
    let usable = scheme.tenant == who.tenant
        && scheme.name == *name
        && scheme.erased_at.is_none()
        && dk.state == KeyState::Active
        && dk.version == scheme.current_version
        && (scheme.kek != KekRef::Local || ctx.config.dev_mode);
    if !usable {
        return None;
    }
    let kctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version: dk.version };
    let cached = dek_cache.get_entry(kctx, &dk.wrapped, now)?;
    Some((scheme, dk, cached))
}

/// The database read of the protect path; a live scheme with an active current key is cached
/// for the next requests, unless this request has written a scheme (its reads may show writes
/// that are not committed yet, and would be undone if the request fails).
fn cold_read(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    name: &SchemeName,
) -> Result<(Scheme, Option<DataKey>), OpError> {
    let (scheme, current, row) = ctx
        .store
        .get_scheme_row_with_current_key(&who.tenant, name)?
        .ok_or_else(|| OpError::SchemeNotFound(name.clone()))?;
    let live = scheme.erased_at.is_none()
        && current
            .as_ref()
            .is_some_and(|dk| dk.state == KeyState::Active && dk.version == scheme.current_version);
    if live && !ctx.store.wrote_schemes() {
        ctx.cache_scheme_row(&who.tenant, name, &row);
    }
    Ok((scheme, current))
}

/// Unprotects each token. If the caller may not unprotect a scheme that a token names, the whole
/// batch is refused before anything is decrypted (whatever the scheme's `mask_on_deny`: this is
/// the WIT export's unprotect, whose answer has no room for a masked flag).
pub fn unprotect(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    tokens: &[&str],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Vec<Result<Plaintext, ItemError>>, OpError> {
    unprotect_in(ctx, who, None, tokens, subject, context)
}

/// [`unprotect`] with the scheme the caller expects (`"scheme"` in the body): when given, the
/// scheme must exist in the tenant (404 `scheme_not_found`), and a token of another scheme is the
/// per-item error `scheme_mismatch`, opened by nobody and never checked against that scheme's policy.
pub fn unprotect_in(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: Option<&str>,
    tokens: &[&str],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Vec<Result<Plaintext, ItemError>>, OpError> {
    let only = scheme.map(parse_scheme_name).transpose()?;
    let opened =
        open_batch(ctx, who, Open::new(Operation::Unprotect, only.as_ref()), tokens, subject, context)?;
    Ok(opened.items.into_iter().map(|r| r.map(|(_, pt)| pt)).collect())
}

/// One value from [`unprotect_or_mask`]: the plaintext, or the value masked by its scheme's rule
/// (`None`: the `nullify` rule's null) because the caller may only mask with that scheme.
pub enum Unprotected {
    Plain(Plaintext),
    Masked(Option<String>),
}

/// Unprotect as the HTTP API serves it: a scheme with `mask_on_deny` gives a caller who may mask
/// but not unprotect with it each value masked by its rule instead of `403 forbidden`. Anyone
/// else is refused as by [`unprotect`] (deny by default). A masked value that is not UTF-8 text
/// gets `not_utf8` (the mask rules work on text).
pub fn unprotect_or_mask(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: Option<&str>,
    tokens: &[&str],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Vec<Result<Unprotected, ItemError>>, OpError> {
    let only = scheme.map(parse_scheme_name).transpose()?;
    let opened = open_batch(
        ctx,
        who,
        Open { mask_on_deny: true, ..Open::new(Operation::Unprotect, only.as_ref()) },
        tokens,
        subject,
        context,
    )?;
    let mut mask_keys: HashMap<SchemeName, crate::crypto::secret::SecretKey> = HashMap::new();
    let mut out = Vec::with_capacity(opened.items.len());
    for item in opened.items {
        let ((name, _), pt) = match item {
            Ok(ok) => ok,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        if !opened.masked.contains(&name) {
            out.push(Ok(Unprotected::Plain(pt)));
            continue;
        }
        let Some(Some(scheme)) = opened.schemes.get(&name) else {
            out.push(Err(ItemError::DECRYPTION_FAILED));
            continue;
        };
        if scheme.mask.needs_key() && !mask_keys.contains_key(&name) {
            let version = scheme.current_version;
            let dek = ctx.unwrap_dek(scheme, version)?.ok_or(OpError::Internal)?;
            mask_keys.insert(name.clone(), kdf::scheme_mask_key(&dek, &scheme.tenant, &scheme.name, version));
        }
        let Ok(text) = std::str::from_utf8(&pt) else {
            out.push(Err(ItemError::NOT_UTF8));
            continue;
        };
        let masked = scheme.mask.apply(text, mask_keys.get(&name)).map_err(|_| OpError::Internal)?;
        drop(pt);
        out.push(Ok(Unprotected::Masked(masked)));
    }
    Ok(out)
}

/// Re-encrypts each token under its scheme's current version, inside Veil: the caller gets
/// tokens back, never plaintext. A token already at the current version comes back unchanged
/// (once it has been checked to open); per-item errors are those of unprotect. If the caller may
/// not rewrap a scheme that a token names (`policy.rewrap`, or administering it), the whole batch
/// is refused before anything is decrypted.
pub fn rewrap(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    tokens: &[&str],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Vec<Result<String, ItemError>>, OpError> {
    rewrap_in(ctx, who, None, tokens, subject, context)
}

/// [`rewrap`] with the scheme the caller expects, as in [`unprotect_in`].
pub fn rewrap_in(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: Option<&str>,
    tokens: &[&str],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Vec<Result<String, ItemError>>, OpError> {
    let only = scheme.map(parse_scheme_name).transpose()?;
    let mut opened =
        open_batch(ctx, who, Open::new(Operation::Rewrap, only.as_ref()), tokens, subject, context)?;
    let items = std::mem::take(&mut opened.items);
    let mut out = Vec::with_capacity(items.len());
    for (item, token) in items.into_iter().zip(tokens) {
        let (slot, pt) = match item {
            Ok(ok) => ok,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let Some(Some(scheme)) = opened.schemes.get(&slot.0) else {
            out.push(Err(ItemError::DECRYPTION_FAILED));
            continue;
        };
        let current = scheme.current_version;
        if slot.1 == current {
            out.push(Ok((*token).to_owned()));
            continue;
        }
        let target = (slot.0.clone(), current);
        if !opened.keys.contains_key(&target) {
            let key = version_key(ctx, scheme, current, None, opened.subject.as_ref(), subject, context)?;
            opened.keys.insert(target.clone(), key);
        }
        match opened.keys.get(&target) {
            Some(Ok((key, _))) => {
                let mut sealer =
                    token::Sealer::new(key, &scheme.tenant, &scheme.name, current, subject, context);
                out.push(Ok(sealer.protect(&mut ctx.rng, &pt)));
            }
            _ => {
                // The current version is always active; a store that says otherwise is broken.
                eprintln!("veil: scheme {}/{} has no usable current data key", scheme.tenant, scheme.name);
                return Err(OpError::Internal);
            }
        }
    }
    Ok(out)
}

/// A batch of tokens opened: per token its scheme version and plaintext (or its item error),
/// with the schemes and version keys read on the way (reused to seal, by rewrap).
struct Opened {
    items: Vec<Result<(Slot, Plaintext), ItemError>>,
    schemes: HashMap<SchemeName, Option<Scheme>>,
    keys: HashMap<Slot, Result<(AeadKey, Vec<u8>), ItemError>>,
    /// The request's data subject, if any (its secret read, never created).
    subject: Option<Subject>,
    /// Schemes whose values the caller gets masked, not in plaintext (`mask_on_deny`).
    masked: HashSet<SchemeName>,
}

/// What [`open_batch`] opens for: the operation, the scheme the caller expects (`only`) and
/// whether `mask_on_deny` schemes may be opened for masking.
#[derive(Clone, Copy)]
struct Open<'s> {
    op: Operation,
    only: Option<&'s SchemeName>,
    mask_on_deny: bool,
}

impl<'s> Open<'s> {
    fn new(op: Operation, only: Option<&'s SchemeName>) -> Self {
        Open { op, only, mask_on_deny: false }
    }

    /// May `who` open tokens of `s`: `Ok(false)` to do `op` with them, `Ok(true)` only to mask
    /// them (`mask_on_deny`), otherwise `forbidden`.
    fn admit(&self, who: &Principal, s: &Scheme) -> Result<bool, OpError> {
        if policy::allows(who, &s.policy, self.op) {
            Ok(false)
        } else if self.mask_on_deny && s.mask_on_deny && policy::allows(who, &s.policy, Operation::Mask) {
            Ok(true)
        } else {
            let verb = if self.op == Operation::Rewrap { "rewrapping" } else { "unprotecting" };
            Err(OpError::forbidden(format!("{verb} with scheme \"{}\"", s.name)))
        }
    }
}

/// Opens each token, after checking that the caller may do `op` with every scheme the batch names.
/// With `only`, a token of any other scheme is `scheme_mismatch` and its scheme is not read.
/// With `mask_on_deny`, a scheme that has it on and that the caller may mask with (but not `op`)
/// is opened too and listed in [`Opened::masked`]: its values must only leave masked.
fn open_batch(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    how: Open<'_>,
    tokens: &[&str],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Opened, OpError> {
    let only = how.only;
    let mut masked = HashSet::new();
    check_batch(ctx.config, tokens.len())?;
    let mut subject_id = check_binding(subject, context)?;
    let max_len = max_token_len(ctx.config.limits.max_value_bytes);
    let parsed: Vec<Result<token::ParsedToken, ItemError>> = tokens
        .iter()
        .map(|t| {
            if t.len() > max_len {
                Err(ItemError::VALUE_TOO_LARGE)
            } else {
                match token::parse(t) {
                    Ok(p) if only.is_some_and(|s| *s != p.scheme) => Err(ItemError::SCHEME_MISMATCH),
                    Ok(p) => Ok(p),
                    Err(_) => Err(ItemError::INVALID_TOKEN),
                }
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
            ctx.audit.scheme(s);
            if how.admit(who, s)? {
                masked.insert(s.name.clone());
            }
        }
        schemes.insert(p.scheme.clone(), found);
    }
    // The expected scheme must exist, whether or not a token of it came.
    if let Some(name) = only {
        let known = match schemes.get(name) {
            Some(found) => found.is_some(),
            None => {
                let found = ctx.store.get_scheme(&who.tenant, name)?;
                if let Some(s) = &found {
                    how.admit(who, s)?;
                }
                found.is_some()
            }
        };
        if !known {
            return Err(OpError::SchemeNotFound(name.clone()));
        }
    }
    // The subject's secret, read once (never created) when the first token needs it.
    let mut subject_state: Option<Subject> = None;
    let mut erased: Option<ItemError> = None;
    // One unwrap (and one AAD) per scheme version per request.
    let mut keys: HashMap<Slot, Result<(AeadKey, Vec<u8>), ItemError>> = HashMap::new();
    let mut items = Vec::with_capacity(parsed.len());
    for p in parsed {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                items.push(Err(e));
                continue;
            }
        };
        let Some(Some(scheme)) = schemes.get(&p.scheme) else {
            items.push(Err(ItemError::DECRYPTION_FAILED));
            continue;
        };
        let slot = (p.scheme.clone(), p.key_version);
        ctx.audit.version(p.key_version);
        if let Some(id) = subject_id.take() {
            subject_state = Some(Subject::for_unprotect(ctx, who, id)?);
        }
        if !keys.contains_key(&slot) {
            let key = version_key(
                ctx,
                scheme,
                p.key_version,
                fetched.remove(&slot),
                subject_state.as_ref(),
                subject,
                context,
            )?;
            keys.insert(slot.clone(), key);
        }
        let result = match keys.get(&slot) {
            // The same as token::unprotect, with the slot's AAD built once.
            Some(Ok((key, aad))) => key.open(aad, &p.sealed).map_err(|_| ItemError::DECRYPTION_FAILED),
            Some(Err(e)) => Err(e.clone()),
            None => Err(ItemError::DECRYPTION_FAILED),
        };
        let result = match (result, &subject_state) {
            // Erased subjects are told apart from tampering by the certificate Veil keeps.
            (Err(e), Some(s)) if e == ItemError::DECRYPTION_FAILED => {
                Err(erased.get_or_insert(s.open_failure(ctx, who)?).clone())
            }
            (r, _) => r,
        };
        items.push(result.map(|pt| (slot, pt)));
    }
    Ok(Opened { items, schemes, keys, subject: subject_state, masked })
}

/// The key and AAD that open tokens of one scheme version, or the per-item error its tokens get:
/// `key_version_destroyed`, `key_version_retired` (below `min_decryption_version`), or
/// `decryption_failed` (no such version). `fetched` is the version's row if already read
/// (`None`: not read yet).
fn version_key(
    ctx: &mut Ctx<'_>,
    scheme: &Scheme,
    version: KeyVersion,
    fetched: Option<Option<DataKey>>,
    subject_state: Option<&Subject>,
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Result<(AeadKey, Vec<u8>), ItemError>, OpError> {
    if version > scheme.current_version {
        return Ok(Err(ItemError::DECRYPTION_FAILED));
    }
    let dk = match fetched {
        Some(dk) => dk,
        None => ctx.store.data_key(&scheme.tenant, &scheme.name, version)?,
    };
    let Some(dk) = dk else { return Ok(Err(ItemError::DECRYPTION_FAILED)) };
    if dk.state == KeyState::Destroyed {
        return Ok(Err(ItemError::KEY_VERSION_DESTROYED));
    }
    if dk.state == KeyState::Retired || version < scheme.min_decryption_version {
        return Ok(Err(ItemError::KEY_VERSION_RETIRED));
    }
    let Some(dek) = ctx.unwrap_data_key(scheme, Some(dk), None)? else {
        return Ok(Err(ItemError::DECRYPTION_FAILED));
    };
    let Some(key) = derive_value_key(scheme, version, &dek, subject_state) else {
        return Ok(Err(ItemError::DECRYPTION_FAILED));
    };
    Ok(Ok((key, token::aad(&scheme.tenant, &scheme.name, version, subject, context))))
}

/// Masks each value with the scheme's rule; `None` is a JSON null (the `nullify` rule).
pub fn mask(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: &str,
    values: &[&str],
) -> Result<Vec<Result<Option<String>, ItemError>>, OpError> {
    check_batch(ctx.config, values.len())?;
    let scheme = ctx.noted_scheme(who, scheme)?;
    if !policy::allows(who, &scheme.policy, Operation::Mask) {
        return Err(OpError::forbidden("masking with this scheme"));
    }
    if scheme.erased_at.is_some() {
        return Err(OpError::SchemeErased(scheme.name));
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
