//! Veil's operations, shared by the HTTP API and the exported WIT interface: find the scheme,
//! check the policy, get the key (one unwrap per scheme version per request), run the primitive.

use std::collections::HashMap;

use crate::api::error::{ApiError, ItemError};
use crate::auth::Principal;
use crate::config::Config;
use crate::crypto::aead::{AeadKey, Algorithm};
use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;
use crate::crypto::{kdf, token};
use crate::ids::{KeyVersion, SchemeName};
use crate::kms::cache::DekCache;
use crate::kms::{Kek, Keks, KeyContext};
use crate::policy;
use crate::scheme::{mask::MaskRule, KekRef, Operation, Policy, Scheme};
use crate::store::sql::SqlConn;
use crate::store::{DataKey, KeyState, Store, StoreError};

/// Longest subject and context accepted (bytes).
pub const MAX_SUBJECT_BYTES: usize = 256;
pub const MAX_CONTEXT_BYTES: usize = 1024;
/// How often a rotation re-reads and retries when a concurrent rotation won (each lost race
/// means another rotation succeeded, so N concurrent rotations need at most N attempts).
const ROTATE_ATTEMPTS: u32 = 32;
/// The longest pause between two attempts; pauses grow from 1 ms and are jittered so that
/// racing rotations spread out instead of colliding again.
const ROTATE_MAX_BACKOFF_MS: u64 = 50;

/// What one request works with: its configuration, its database connection, its randomness.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub store: Store<'a>,
    pub rng: Csprng,
    pub now: i64,
    /// The KEK providers this request has used, and its count of KMS calls.
    pub keks: Keks,
    /// The opt-in DEK cache in the host key-value store, when configured.
    pub dek_cache: Option<DekCache>,
}

impl<'a> Ctx<'a> {
    pub fn new(config: &'a Config, conn: &'a dyn SqlConn, rng: Csprng, now: i64) -> Self {
        Ctx { config, store: Store::new(conn), rng, now, keks: Keks::default(), dek_cache: None }
    }

    fn kek(&mut self, r: &KekRef) -> Result<&dyn Kek, ApiError> {
        Ok(self.keks.get(r, self.config, &mut self.rng)?)
    }

    fn unwrap_dek(&mut self, scheme: &Scheme, version: KeyVersion) -> Result<Option<SecretKey>, ApiError> {
        let dk = self.store.data_key(&scheme.tenant, &scheme.name, version)?;
        self.unwrap_data_key(scheme, dk)
    }

    /// Unwraps a data key already read from the store (through the DEK cache if it is on).
    fn unwrap_data_key(
        &mut self,
        scheme: &Scheme,
        dk: Option<DataKey>,
    ) -> Result<Option<SecretKey>, ApiError> {
        let Some(dk) = dk else {
            return Ok(None);
        };
        let version = dk.version;
        if dk.state == KeyState::Destroyed {
            return Ok(None);
        }
        let ctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version };
        let now = u64::try_from(self.now).unwrap_or(0);
        if let Some(cache) = &self.dek_cache {
            if let Some(dek) = cache.get(&mut self.rng, ctx, &dk.wrapped, now) {
                return Ok(Some(dek));
            }
        }
        let dek = self.kek(&scheme.kek)?.unwrap(&dk.wrapped, ctx)?;
        if let Some(cache) = &self.dek_cache {
            cache.put(&mut self.rng, ctx, &dk.wrapped, &dek, now);
        }
        Ok(Some(dek))
    }

    fn scheme(&self, who: &Principal, name: &str) -> Result<Scheme, ApiError> {
        let name = SchemeName::parse(name).map_err(|e| ApiError::invalid_field(format!("scheme: {e}")))?;
        self.store.get_scheme(&who.tenant, &name)?.ok_or_else(|| not_found(&name))
    }
}

fn not_found(name: &SchemeName) -> ApiError {
    ApiError::new(404, "scheme_not_found", format!("no scheme named \"{name}\" in this tenant"))
}

fn check_binding(subject: Option<&str>, context: Option<&str>) -> Result<(), ApiError> {
    if subject.is_some_and(|s| s.len() > MAX_SUBJECT_BYTES) {
        return Err(ApiError::invalid_field(format!("subject is longer than {MAX_SUBJECT_BYTES} bytes")));
    }
    if context.is_some_and(|c| c.len() > MAX_CONTEXT_BYTES) {
        return Err(ApiError::invalid_field(format!("context is longer than {MAX_CONTEXT_BYTES} bytes")));
    }
    Ok(())
}

fn check_batch(config: &Config, n: usize) -> Result<(), ApiError> {
    if n > config.limits.max_batch {
        return Err(ApiError::new(
            413,
            "batch_too_large",
            format!("{n} values is more than max_batch ({})", config.limits.max_batch),
        ));
    }
    Ok(())
}

/// The longest token a value of `max_value_bytes` can produce.
pub fn max_token_len(max_value_bytes: usize) -> usize {
    let sealed = 24 + max_value_bytes + 16;
    "veil.1.".len() + 64 + 1 + 10 + 1 + sealed.div_ceil(3) * 4
}

/// The fields a new scheme is made of, already parsed from the request.
pub struct NewScheme {
    pub name: SchemeName,
    pub algorithm: Algorithm,
    pub kek: KekRef,
    pub policy: Policy,
    pub mask: MaskRule,
}

/// Creates a scheme with a fresh data key (version 1), wrapped by its KEK.
pub fn create_scheme(ctx: &mut Ctx<'_>, who: &Principal, new: NewScheme) -> Result<Scheme, ApiError> {
    if !policy::may_create_schemes(who) {
        return Err(ApiError::forbidden("creating schemes (tenant role \"admin\" needed)"));
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
        Err(StoreError::Exists) => Err(ApiError::new(
            409,
            "scheme_exists",
            format!("a scheme named \"{}\" already exists in this tenant", scheme.name),
        )),
        Err(e) => Err(e.into()),
    }
}

pub fn list_schemes(ctx: &Ctx<'_>, who: &Principal) -> Result<Vec<Scheme>, ApiError> {
    Ok(ctx.store.list_schemes(&who.tenant)?)
}

pub fn get_scheme(ctx: &Ctx<'_>, who: &Principal, name: &str) -> Result<Scheme, ApiError> {
    ctx.scheme(who, name)
}

/// Adds a data-key version and makes it current; concurrent rotations each add one version.
pub fn rotate(ctx: &mut Ctx<'_>, who: &Principal, name: &str) -> Result<Scheme, ApiError> {
    let mut scheme = ctx.scheme(who, name)?;
    if !policy::allows(who, &scheme.policy, Operation::Admin) {
        return Err(ApiError::forbidden("administering this scheme"));
    }
    for attempt in 0..ROTATE_ATTEMPTS {
        if attempt > 0 {
            let cap = (1u64 << attempt.min(6)).min(ROTATE_MAX_BACKOFF_MS);
            let mut jitter = [0u8; 1];
            ctx.rng.fill(&mut jitter);
            let pause = cap / 2 + u64::from(jitter[0]) % (cap / 2 + 1);
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
        let next = scheme
            .current_version
            .next()
            .ok_or_else(|| ApiError::new(409, "key_versions_exhausted", "no key version is left"))?;
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
    Err(ApiError::new(409, "conflict", "the scheme kept changing under concurrent rotations; retry"))
}

/// Protects each value; per-item failures (an over-long value) leave the others untouched.
pub fn protect(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    scheme: &str,
    values: &[Result<Vec<u8>, ItemError>],
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<(KeyVersion, Vec<Result<String, ItemError>>), ApiError> {
    check_batch(ctx.config, values.len())?;
    check_binding(subject, context)?;
    let name = SchemeName::parse(scheme).map_err(|e| ApiError::invalid_field(format!("scheme: {e}")))?;
    let (scheme, current) =
        ctx.store.get_scheme_with_current_key(&who.tenant, &name)?.ok_or_else(|| not_found(&name))?;
    if !policy::allows(who, &scheme.policy, Operation::Protect) {
        return Err(ApiError::forbidden("protecting with this scheme"));
    }
    let version = scheme.current_version;
    let dek = ctx.unwrap_data_key(&scheme, current)?.ok_or_else(|| {
        eprintln!("veil: scheme {}/{} has no usable current data key", scheme.tenant, scheme.name);
        ApiError::internal()
    })?;
    let key =
        AeadKey::new(scheme.algorithm, &kdf::scheme_data_key(&dek, &scheme.tenant, &scheme.name, version));
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
) -> Result<Vec<Result<zeroize::Zeroizing<Vec<u8>>, ItemError>>, ApiError> {
    check_batch(ctx.config, tokens.len())?;
    check_binding(subject, context)?;
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
    let mut fetched: HashMap<(SchemeName, KeyVersion), Option<DataKey>> = HashMap::new();
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
                return Err(ApiError::forbidden(&format!("unprotecting with scheme \"{}\"", s.name)));
            }
        }
        schemes.insert(p.scheme.clone(), found);
    }
    // One unwrap (and one AAD) per scheme version per request.
    let mut keys: HashMap<(SchemeName, KeyVersion), Option<(AeadKey, Vec<u8>)>> = HashMap::new();
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
        if !keys.contains_key(&slot) {
            let key = if p.key_version > scheme.current_version {
                None
            } else {
                let dek = match fetched.remove(&slot) {
                    Some(dk) => ctx.unwrap_data_key(scheme, dk)?,
                    None => ctx.unwrap_dek(scheme, p.key_version)?,
                };
                dek.map(|dek| {
                    let key = AeadKey::new(
                        scheme.algorithm,
                        &kdf::scheme_data_key(&dek, &scheme.tenant, &scheme.name, p.key_version),
                    );
                    (key, token::aad(&who.tenant, &p.scheme, p.key_version, subject, context))
                })
            };
            keys.insert(slot.clone(), key);
        }
        let result = match keys.get(&slot) {
            // The same as token::unprotect, with the slot's AAD built once.
            Some(Some((key, aad))) => key.open(aad, &p.sealed).map_err(|_| ItemError::DECRYPTION_FAILED),
            _ => Err(ItemError::DECRYPTION_FAILED),
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
) -> Result<Vec<Result<Option<String>, ItemError>>, ApiError> {
    check_batch(ctx.config, values.len())?;
    let scheme = ctx.scheme(who, scheme)?;
    if !policy::allows(who, &scheme.policy, Operation::Mask) {
        return Err(ApiError::forbidden("masking with this scheme"));
    }
    let mask_key = if scheme.mask.needs_key() {
        let version = scheme.current_version;
        let dek = ctx.unwrap_dek(&scheme, version)?.ok_or_else(ApiError::internal)?;
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
            scheme.mask.apply(v, mask_key.as_ref()).map(Ok).map_err(|_| ApiError::internal())
        })
        .collect()
}
