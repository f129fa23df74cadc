//! Veil's operations, shared by the HTTP API and the exported WIT interface: find the scheme,
//! check the policy, get the key (one unwrap per scheme version per request), run the primitive.
//!
//! One file per area: [`schemes`] (create, list, get, rotate, version lifecycle), [`data`]
//! (protect, unprotect, rewrap, mask); [`error`] says what failed. This module holds what they share: the request's [`Ctx`]
//! and its key helpers, and the request limits.

mod api_keys;
pub mod audit;
mod data;
mod erase;
mod error;
pub mod jobs;
mod rekey;
pub mod scheme_cache;
pub mod schemes;
pub mod seals;
mod subjects;
mod transit;

pub use api_keys::{authenticate, create_api_key, list_api_keys, revoke_api_key, NewApiKey};
pub use data::{
    mask, protect, protect_spelled, rewrap, rewrap_in, unprotect, unprotect_in, unprotect_or_mask, Plaintext,
    Spelling, Unprotected,
};
pub use erase::{erase_scheme, erase_tenant};
pub use error::{ItemError, OpError};
pub use jobs::{
    cancel_job, create_job, get_job, job_failures, step_job, JobDatabases, JobView, NewJob, StepOutcome,
};
pub use rekey::{rekey, Rekeyed};
pub use schemes::{
    check_kek_allowed, create_scheme, destroy_version, forget_cached_deks, get_scheme, list_schemes,
    list_versions, rotate, rotate_if_current, update_scheme, NewScheme,
};
pub use subjects::{erase_subject, erase_subjects, erasure_keys, get_erasure, value_key, Subject};
pub use transit::{transit_hmac, transit_verify, Mac, VerifyItem};

use crate::auth::Principal;
use crate::config::Config;
use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName};
use crate::kms::cache::DekCache;
use crate::kms::{Kek, Keks, KeyContext, KmsError};
use crate::scheme::{KekRef, Scheme};
use crate::store::sql::{SqlConn, SqlValue};
use crate::store::{DataKey, KeyState, Store};
use crate::subjects::SubjectId;

/// Longest subject and context accepted, in characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them, so that the OpenAPI document states the limit exactly): at most 4
/// bytes each in UTF-8, so the AAD stays bounded.
pub const MAX_SUBJECT_CHARS: usize = 256;
pub const MAX_CONTEXT_CHARS: usize = 1024;

/// What one request works with: its configuration, its database connection, its randomness.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub store: Store<'a>,
    pub rng: Csprng,
    pub now: i64,
    /// The KEK providers this request has used, and its count of KMS calls.
    pub keks: Keks<'a>,
    /// The opt-in DEK cache in the host key-value store, when configured.
    pub dek_cache: Option<DekCache>,
    /// How re-encryption jobs reach customer databases (the door's); `None`: jobs are off.
    pub job_databases: Option<&'a dyn JobDatabases>,
    /// What the running operation notes for its audit entry.
    pub audit: audit::Note,
    /// The scheme cache (beside the DEK cache, with a key derived from its key), made on first use.
    scheme_cache: std::cell::OnceCell<Option<scheme_cache::SchemeCache>>,
}

/// What a protect tells the DEK cache about the version's seal count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sealing {
    /// Not a protect (unprotect, mask, rewrap's reads): the entry's age bounds it.
    Nothing,
    /// A protect that reserved nothing this time (sampled reservations): the count is read from
    /// the store only if the key has to be unwrapped and cached.
    Unreserved,
    /// A protect that reserved `n` seals, bringing the version's count to `total`.
    Reserved { total: u64, n: u64 },
}

/// Drops the scheme cache's entries of every scheme this request wrote, once its writes are
/// committed (or rolled back) and before the door answers: the context lives exactly as long as
/// the request's work (`host::with_request`, the in-process tests).
impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        let changed = self.store.take_changed_schemes();
        if changed.is_empty() {
            return;
        }
        if let Some((cache, dek_cache)) = self.warm_caches() {
            for (tenant, scheme) in &changed {
                cache.forget(dek_cache.kv(), tenant, scheme);
            }
        }
    }
}

impl<'a> Ctx<'a> {
    /// A context whose KEK providers have no outbound HTTP (native builds and tests).
    pub fn new(config: &'a Config, conn: &'a dyn SqlConn, rng: Csprng, now: i64) -> Self {
        Self::with_keks(config, conn, rng, now, Keks::offline(config.kek_settings()))
    }

    /// A context with the door's KEK providers (outbound HTTP, the host's key-value store).
    pub fn with_keks(
        config: &'a Config,
        conn: &'a dyn SqlConn,
        rng: Csprng,
        now: i64,
        keks: Keks<'a>,
    ) -> Self {
        Ctx {
            config,
            store: Store::new(conn),
            rng,
            now,
            keks,
            dek_cache: None,
            job_databases: None,
            audit: audit::Note::default(),
            scheme_cache: std::cell::OnceCell::new(),
        }
    }

    /// The scheme cache and the DEK cache it lives beside, when both are on.
    pub(crate) fn warm_caches(&self) -> Option<(&scheme_cache::SchemeCache, &DekCache)> {
        let dek_cache = self.dek_cache.as_ref()?;
        let cache = self
            .scheme_cache
            .get_or_init(|| {
                let settings = self.config.dek_cache.as_ref()?;
                Some(scheme_cache::SchemeCache::new(&settings.key, settings.scheme_max_age_secs?))
            })
            .as_ref()?;
        Some((cache, dek_cache))
    }

    fn kek(&mut self, r: &KekRef) -> Result<&dyn Kek, OpError> {
        Ok(self.keks.get(r, &mut self.rng)?)
    }

    fn unwrap_dek(&mut self, scheme: &Scheme, version: KeyVersion) -> Result<Option<SecretKey>, OpError> {
        let dk = self.store.data_key(&scheme.tenant, &scheme.name, version)?;
        self.unwrap_data_key(scheme, dk, None)
    }

    /// Unwraps a data key already read from the store (through the DEK cache if it is on).
    /// `sealing` is `(total, n)` on the protect path: the version's seal count after this
    /// request reserved its `n` values, which bounds how long a cache entry serves.
    fn unwrap_data_key(
        &mut self,
        scheme: &Scheme,
        dk: Option<DataKey>,
        sealing: Option<(u64, u64)>,
    ) -> Result<Option<SecretKey>, OpError> {
        let sealing = sealing.map_or(Sealing::Nothing, |(total, n)| Sealing::Reserved { total, n });
        self.unwrap_sealing(scheme, dk, sealing)
    }

    /// [`Ctx::unwrap_data_key`] with what the protect path knows of the version's seal count.
    fn unwrap_sealing(
        &mut self,
        scheme: &Scheme,
        dk: Option<DataKey>,
        sealing: Sealing,
    ) -> Result<Option<SecretKey>, OpError> {
        let Some(dk) = dk else {
            return Ok(None);
        };
        let version = dk.version;
        if dk.state == KeyState::Destroyed {
            return Ok(None);
        }
        // The dev-mode gate comes before the cache: a cached local-KEK data key must not outlive
        // the deployment's permission to use the local KEK.
        if scheme.kek == KekRef::Local && !self.config.dev_mode {
            return Err(KmsError::DevModeRequired.into());
        }
        let ctx = KeyContext { tenant: &scheme.tenant, scheme: &scheme.name, version };
        let now = u64::try_from(self.now).unwrap_or(0);
        let total = match sealing {
            Sealing::Reserved { total, .. } => Some(total),
            Sealing::Nothing | Sealing::Unreserved => None,
        };
        if let Some(cache) = &self.dek_cache {
            if let Some(dek) = cache.get(ctx, &dk.wrapped, now, total) {
                return Ok(Some(dek));
            }
        }
        let kek = dk.kek.as_ref().unwrap_or(&scheme.kek);
        let dek = self.kek(kek)?.unwrap(&dk.wrapped, ctx)?;
        if self.dek_cache.is_some() {
            let seals_before = match sealing {
                Sealing::Reserved { total, n } => total.saturating_sub(n),
                // A protect that reserved nothing: the version's count now (one read, only when
                // the vault was asked anyway), so that the entry serves its full `max_uses`.
                Sealing::Unreserved => self.store.seals(&scheme.tenant, &scheme.name, version)?,
                // Off the protect path the count is unknown here: 0 is the conservative start (the
                // entry then serves protects for at most `max_uses` values in all).
                Sealing::Nothing => 0,
            };
            if let Some(cache) = &self.dek_cache {
                cache.put(&mut self.rng, ctx, &dk.wrapped, &dek, now, seals_before);
            }
        }
        Ok(Some(dek))
    }

    /// Puts a scheme's row read from the database into the scheme cache (when it is on).
    fn cache_scheme_row(&mut self, tenant: &crate::ids::TenantId, name: &SchemeName, row: &[SqlValue]) {
        if self.warm_caches().is_none() {
            return;
        }
        let (Some(Some(cache)), Some(dek_cache)) = (self.scheme_cache.get(), self.dek_cache.as_ref()) else {
            return;
        };
        let now = u64::try_from(self.now).unwrap_or(0);
        cache.put(dek_cache.kv(), &mut self.rng, tenant, name, row, now);
    }

    fn scheme(&self, who: &Principal, name: &str) -> Result<Scheme, OpError> {
        let name = parse_scheme_name(name)?;
        self.store.get_scheme(&who.tenant, &name)?.ok_or(OpError::SchemeNotFound(name))
    }

    /// Like [`Ctx::scheme`], noting the scheme for the audit entry.
    fn noted_scheme(&mut self, who: &Principal, name: &str) -> Result<Scheme, OpError> {
        let s = self.scheme(who, name)?;
        self.audit.scheme(&s);
        Ok(s)
    }
}

/// A scheme name from a request field (`scheme`, or the route's `{name}`).
fn parse_scheme_name(name: &str) -> Result<SchemeName, OpError> {
    SchemeName::parse(name).map_err(|e| OpError::invalid_field(format!("scheme: {e}")))
}

/// Checks the subject (1-256 characters) and the context (at most 1024 characters) of a request.
fn check_binding(subject: Option<&str>, context: Option<&str>) -> Result<Option<SubjectId>, OpError> {
    let subject = subject.map(SubjectId::parse).transpose().map_err(OpError::invalid_field)?;
    let longer = |v: Option<&str>, max: usize| v.is_some_and(|v| v.len() > max && v.chars().count() > max);
    if longer(context, MAX_CONTEXT_CHARS) {
        return Err(OpError::invalid_field(format!("context is longer than {MAX_CONTEXT_CHARS} characters")));
    }
    Ok(subject)
}

fn check_batch(config: &Config, n: usize) -> Result<(), OpError> {
    let max = config.limits.max_batch;
    if n > max {
        return Err(OpError::BatchTooLarge { values: n, max });
    }
    Ok(())
}

/// The longest token a value of `max_value_bytes` can produce.
pub fn max_token_len(max_value_bytes: usize) -> usize {
    let sealed = 24 + max_value_bytes + 16;
    "veil.1.".len() + 64 + 1 + 10 + 1 + sealed.div_ceil(3) * 4
}
