//! Data subjects: the per-subject key behind protect/unprotect with a `subject`, and erasure
//! (one subject, a batch, certificate lookup, the verification keys). docs/erasure.md.

use serde_json::{Map, Value};

use super::{check_batch, Ctx, ItemError, OpError};
use crate::auth::Principal;
use crate::crypto::aead::AeadKey;
use crate::crypto::kdf;
use crate::crypto::secret::SecretKey;
use crate::ids::KeyVersion;
use crate::policy;
use crate::scheme::Scheme;
use crate::store::{StoreError, SubjectSecret};
use crate::subjects::{certificate, SubjectDigest, SubjectId};

/// How often a first protect retries when an erasure deleted the secret it had just created.
const CREATE_ATTEMPTS: u32 = 3;

/// A request's data subject, resolved once: its id, its digest, and its secret if it has one.
pub struct Subject {
    pub id: SubjectId,
    pub digest: SubjectDigest,
    /// `None`: the subject has no secret (never protected for, or erased).
    pub secret: Option<SubjectSecret>,
}

impl Subject {
    /// The subject for a protect (or the re-protect half of a rewrap): its secret, created on
    /// first use (race-free: concurrent first uses agree on one secret).
    pub fn for_protect(ctx: &mut Ctx<'_>, who: &Principal, id: SubjectId) -> Result<Subject, OpError> {
        let digest = ctx.config.subjects.get()?.digest(&who.tenant, &id)?;
        for _ in 0..CREATE_ATTEMPTS {
            let fresh = SecretKey::generate(&mut ctx.rng);
            match ctx.store.subject_secret_or_create(&who.tenant, &digest, fresh, ctx.now) {
                Ok(s) => return Ok(Subject { id, digest, secret: Some(s) }),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpError::Conflict)
    }

    /// The subject for an unprotect (or the open half of a rewrap): never creates a secret.
    pub fn for_unprotect(ctx: &Ctx<'_>, who: &Principal, id: SubjectId) -> Result<Subject, OpError> {
        let digest = ctx.config.subjects.get()?.digest(&who.tenant, &id)?;
        let secret = ctx.store.subject_secret(&who.tenant, &digest)?;
        Ok(Subject { id, digest, secret })
    }

    /// The per-item error for a token of this subject that does not open: `subject_erased` when
    /// the tenant holds an erasure certificate for the subject, else `decryption_failed`.
    pub fn open_failure(&self, ctx: &Ctx<'_>, who: &Principal) -> Result<ItemError, OpError> {
        Ok(if ctx.store.subject_was_erased(&who.tenant, &self.digest)? {
            ItemError::SUBJECT_ERASED
        } else {
            ItemError::DECRYPTION_FAILED
        })
    }
}

/// The key that seals values of `scheme` at `version` (for lifecycle's rewrap and job steps as
/// well as protect/unprotect): the scheme data key, or with a subject the per-subject key
/// derived from it and the subject's secret. `Ok(None)` when the data key is gone (destroyed) or
/// the subject has no secret.
pub fn value_key(
    ctx: &mut Ctx<'_>,
    scheme: &Scheme,
    version: KeyVersion,
    subject: Option<&Subject>,
) -> Result<Option<AeadKey>, OpError> {
    let Some(dek) = ctx.unwrap_dek(scheme, version)? else { return Ok(None) };
    Ok(derive_value_key(scheme, version, &dek, subject))
}

/// [`value_key`] from an unwrapped data key.
pub(super) fn derive_value_key(
    scheme: &Scheme,
    version: KeyVersion,
    dek: &SecretKey,
    subject: Option<&Subject>,
) -> Option<AeadKey> {
    let scheme_key = kdf::scheme_data_key(dek, &scheme.tenant, &scheme.name, version);
    match subject {
        None => Some(AeadKey::new(scheme.algorithm, &scheme_key)),
        Some(Subject { secret: None, .. }) => None,
        Some(Subject { id, secret: Some(s), .. }) => {
            Some(AeadKey::new(scheme.algorithm, &kdf::subject_key(&scheme_key, &s.secret, id.as_str())))
        }
    }
}

fn check_may_erase(who: &Principal) -> Result<(), OpError> {
    if policy::may_erase_subjects(who) {
        Ok(())
    } else {
        Err(OpError::forbidden("erasing data subjects (tenant role \"admin\" or \"privacy\" needed)"))
    }
}

/// A fresh certificate id: 16 random bytes in lower-case hex.
pub(super) fn certificate_id(ctx: &mut Ctx<'_>) -> String {
    let mut b = [0u8; 16];
    ctx.rng.fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Erases one subject (docs/erasure.md): deletes its secret and returns the signed certificate;
/// a repeated erase returns the certificate already issued.
pub fn erase_subject(ctx: &mut Ctx<'_>, who: &Principal, id: &str) -> Result<Value, OpError> {
    check_may_erase(who)?;
    let id = SubjectId::parse(id).map_err(OpError::invalid_field)?;
    erase_one(ctx, who, &id)
}

/// Erases each subject of a batch; an invalid id is a per-item `invalid_subject`.
pub fn erase_subjects(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    ids: &[String],
) -> Result<Vec<Result<Value, ItemError>>, OpError> {
    check_may_erase(who)?;
    check_batch(ctx.config, ids.len())?;
    ids.iter()
        .map(|id| match SubjectId::parse(id) {
            Err(_) => Ok(Err(ItemError::INVALID_SUBJECT)),
            Ok(id) => erase_one(ctx, who, &id).map(Ok),
        })
        .collect()
}

fn erase_one(ctx: &mut Ctx<'_>, who: &Principal, id: &SubjectId) -> Result<Value, OpError> {
    let settings = ctx.config.subjects.get()?;
    let digest = settings.digest(&who.tenant, id)?;
    let (key, kid) = settings.signer()?;
    // Every token of the subject, in any scheme of the tenant, was sealed with its one secret.
    let schemes: Vec<Value> =
        ctx.store.list_schemes(&who.tenant)?.into_iter().map(|s| s.name.as_str().into()).collect();
    let cert_id = certificate_id(ctx);
    let now = ctx.now;
    let make = |created: Option<i64>| {
        let mut f = Map::new();
        f.insert("certificate_id".into(), cert_id.clone().into());
        f.insert("scope".into(), "subject".into());
        f.insert("tenant".into(), who.tenant.as_str().into());
        f.insert("subject_digest".into(), digest.to_hex().into());
        f.insert("erased_at".into(), now.into());
        f.insert("secret_existed".into(), created.is_some().into());
        f.insert("secret_created_at".into(), created.map_or(Value::Null, Value::from));
        f.insert("schemes".into(), schemes.clone().into());
        let cert = Value::Object(certificate::sign(f, &settings.issuer, key, kid));
        (cert_id.clone(), cert.to_string())
    };
    let json = ctx.store.erase_subject(&who.tenant, &digest, now, &make)?;
    parse_stored(&json)
}

pub(super) fn parse_stored(json: &str) -> Result<Value, OpError> {
    serde_json::from_str(json).map_err(|_| {
        eprintln!("veil: a stored erasure certificate is not JSON");
        OpError::Internal
    })
}

/// A stored certificate of the caller's tenant.
pub fn get_erasure(ctx: &Ctx<'_>, who: &Principal, id: &str) -> Result<Value, OpError> {
    check_may_erase(who)?;
    let valid = id.len() == 32 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return Err(OpError::ErasureNotFound);
    }
    let json = ctx.store.erasure(&who.tenant, id)?.ok_or(OpError::ErasureNotFound)?;
    parse_stored(&json)
}

/// The JWKS of erasure verification keys (public; no authentication).
pub fn erasure_keys(ctx: &Ctx<'_>) -> Result<Value, OpError> {
    Ok(certificate::jwks(&ctx.config.subjects.get()?.verification_keys()))
}
