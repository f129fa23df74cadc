//! The opt-in DEK cache (DESIGN §4): unwrapped data keys kept in the host's key-value store so
//! that requests after the first skip the vault. Every entry (layout v2, docs/kms.md "DEK cache")
//! is sealed with XChaCha20-Poly1305 (192-bit random nonces: no practical bound on how many
//! entries one cache key may seal) under a cache key from the secret variable `dek_cache_key`;
//! its AAD binds the tenant, scheme, key version, a hash of the wrapped key it came from, its
//! expiry and the version's seal count when it was cached, so an entry cannot be moved to another
//! key slot, extended, or reset.
//!
//! An entry is written once, when a request had to ask the vault, and never re-sealed on a hit.
//! It expires after `dek_cache_max_age_secs`; on the protect path it is also dropped once
//! `dek_cache_max_uses` values have been sealed under its key version since it was cached. That
//! count is the version's seal counter in the metadata database (which every protect request
//! advances before sealing: `Store::reserve_seals`), not a number kept in the entry: it only
//! grows, so replaying an older entry into the key-value store cannot reset it.
//! Entries of the v1 layout (AES-256-GCM, re-sealed with a use count on every hit; frozen in
//! tests/vectors/veil-dek-cache-v1.txt) live under another prefix: this build neither reads nor
//! writes them (a miss), and an older build running beside it during a deploy keeps its own.
//! The cache never fails a request: any store or decode error is a miss.

use std::fmt;

use sha2::{Digest, Sha256};

use super::{KeyContext, WrappedDek};
use crate::crypto::aead::{AeadKey, Algorithm};
use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;
use crate::vars::{parse_bool, parse_limit, ConfigError, Variables};

const AAD_LABEL: &[u8] = b"veil/v2/dek-cache";
const KEY_PREFIX: &str = "veil/dek-cache/v2/";
/// expiry (u64be) ‖ seals_at_put (u64be) ‖ nonce (24) ‖ sealed DEK ‖ tag
const RECORD_LEN: usize = 8 + 8 + 24 + 32 + 16;

pub use crate::kv::KeyValue;

/// Cache limits (variables `dek_cache_max_age_secs`, `dek_cache_max_uses`: values sealed under
/// the cached key version, across every instance, since the entry was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_age_secs: u64,
    pub max_uses: u32,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits { max_age_secs: 300, max_uses: 10_000 }
    }
}

pub const MAX_DEK_CACHE_AGE_SECS: usize = 86_400;
pub const MAX_DEK_CACHE_USES: usize = 10_000_000;
/// The scheme cache's default and longest max age: a few seconds is what a PATCH or an erasure
/// may take to reach other processes (docs/kms.md, "The scheme cache").
pub const DEFAULT_SCHEME_CACHE_AGE_SECS: usize = 2;
pub const MAX_SCHEME_CACHE_AGE_SECS: usize = 60;

/// The opt-in DEK cache: its sealing key and limits (docs/kms.md § DEK cache).
pub struct Settings {
    pub key: SecretKey,
    pub limits: CacheLimits,
    /// The scheme cache's max age (`scheme_cache_max_age_secs`); `None` when `scheme_cache` is
    /// `false`. It lives beside the DEK cache, sealed under a key derived from `dek_cache_key`,
    /// so it needs no secret of its own and is on whenever the DEK cache is (docs/kms.md).
    pub scheme_max_age_secs: Option<u64>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("cache::Settings")
            .field("key", &"<secret>")
            .field("limits", &self.limits)
            .field("scheme_max_age_secs", &self.scheme_max_age_secs)
            .finish()
    }
}

impl Settings {
    /// Reads `dek_cache`, `dek_cache_key`, `dek_cache_max_age_secs` and `dek_cache_max_uses`,
    /// and the scheme cache's `scheme_cache` (default `true`) and `scheme_cache_max_age_secs`;
    /// `None` when the DEK cache is off (the scheme cache is then off too).
    pub fn load(vars: &dyn Variables) -> Result<Option<Self>, ConfigError> {
        if !parse_bool("dek_cache", vars.get("dek_cache"))? {
            return Ok(None);
        }
        use base64::Engine as _;
        let b64 = vars.get("dek_cache_key").ok_or_else(|| {
            ConfigError("dek_cache is on but dek_cache_key (base64 of 32 bytes) is not set".into())
        })?;
        let raw = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| ConfigError("variable dek_cache_key is not base64".into()))?,
        );
        let key = SecretKey::try_from_slice(&raw)
            .ok_or_else(|| ConfigError("variable dek_cache_key must decode to exactly 32 bytes".into()))?;
        let d = CacheLimits::default();
        let max_age =
            parse_limit(vars, "dek_cache_max_age_secs", d.max_age_secs as usize, MAX_DEK_CACHE_AGE_SECS)?;
        let max_uses = parse_limit(vars, "dek_cache_max_uses", d.max_uses as usize, MAX_DEK_CACHE_USES)?;
        let scheme_max_age_secs =
            if parse_bool("scheme_cache", vars.get("scheme_cache").or(Some("true".into())))? {
                Some(parse_limit(
                    vars,
                    "scheme_cache_max_age_secs",
                    DEFAULT_SCHEME_CACHE_AGE_SECS,
                    MAX_SCHEME_CACHE_AGE_SECS,
                )? as u64)
            } else {
                None
            };
        Ok(Some(Settings {
            key,
            limits: CacheLimits {
                max_age_secs: max_age as u64,
                max_uses: u32::try_from(max_uses).unwrap_or(u32::MAX),
            },
            scheme_max_age_secs,
        }))
    }
}

pub struct DekCache {
    kv: Box<dyn KeyValue>,
    seal: AeadKey,
    limits: CacheLimits,
}

impl fmt::Debug for DekCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DekCache").field("limits", &self.limits).finish_non_exhaustive()
    }
}

fn lp(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

fn slot(ctx: KeyContext<'_>) -> Vec<u8> {
    let mut s = Vec::with_capacity(96);
    lp(&mut s, ctx.tenant.as_str().as_bytes());
    lp(&mut s, ctx.scheme.as_str().as_bytes());
    s.extend_from_slice(&ctx.version.get().to_be_bytes());
    s
}

fn entry_key(ctx: KeyContext<'_>) -> String {
    let digest = Sha256::digest(slot(ctx));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_PREFIX}{hex}")
}

fn aad(ctx: KeyContext<'_>, wrapped: &WrappedDek, expiry: u64, seals_at_put: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(160);
    lp(&mut a, AAD_LABEL);
    a.extend_from_slice(&slot(ctx));
    let mut h = Sha256::new();
    h.update(wrapped.kek_id.as_bytes());
    h.update([0]);
    h.update(wrapped.kek_version.as_bytes());
    h.update([0]);
    h.update(&wrapped.blob);
    a.extend_from_slice(&h.finalize());
    a.extend_from_slice(&expiry.to_be_bytes());
    a.extend_from_slice(&seals_at_put.to_be_bytes());
    a
}

impl DekCache {
    pub fn new(kv: Box<dyn KeyValue>, cache_key: &SecretKey, limits: CacheLimits) -> Self {
        DekCache { kv, seal: AeadKey::new(Algorithm::XChaCha20Poly1305, cache_key), limits }
    }

    fn drop_entry(&self, key: &str) {
        let _ = self.kv.delete(key);
    }

    /// The store the entries live in (the scheme cache keeps its entries beside them).
    pub fn kv(&self) -> &dyn KeyValue {
        self.kv.as_ref()
    }

    /// The cached DEK for this key slot and wrapped key; `None` on a miss, or for an entry that
    /// has expired, does not open (then it is deleted), or, when `seals` (the version's seal count
    /// including the caller's own reservation) is given, has seen more than `max_uses` values
    /// sealed since it was cached (deleted too).
    pub fn get(
        &self,
        ctx: KeyContext<'_>,
        wrapped: &WrappedDek,
        now: u64,
        seals: Option<u64>,
    ) -> Option<SecretKey> {
        let (dek, seals_at_put) = self.get_entry(ctx, wrapped, now)?;
        if seals.is_some_and(|n| self.used_up(seals_at_put, n)) {
            self.forget(ctx);
            return None;
        }
        Some(dek)
    }

    /// Whether an entry cached at seal count `seals_at_put` is used up once the version's count
    /// is `seals` (more than `max_uses` values sealed since it was cached).
    pub fn used_up(&self, seals_at_put: u64, seals: u64) -> bool {
        seals.saturating_sub(seals_at_put) > u64::from(self.limits.max_uses)
    }

    /// The cached DEK and the seal count it was cached at, checking its age and seal only (the
    /// caller checks the use count with [`DekCache::used_up`] when it knows the version's count).
    pub fn get_entry(&self, ctx: KeyContext<'_>, wrapped: &WrappedDek, now: u64) -> Option<(SecretKey, u64)> {
        let key = entry_key(ctx);
        let record = match self.kv.get(&key) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                eprintln!("veil: DEK cache read failed (continuing without): {e}");
                return None;
            }
        };
        if record.len() != RECORD_LEN {
            self.drop_entry(&key);
            return None;
        }
        let expiry = u64::from_be_bytes(record[..8].try_into().ok()?);
        let seals_at_put = u64::from_be_bytes(record[8..16].try_into().ok()?);
        if now >= expiry {
            self.drop_entry(&key);
            return None;
        }
        let Ok(plain) = self.seal.open(&aad(ctx, wrapped, expiry, seals_at_put), &record[16..]) else {
            self.drop_entry(&key);
            return None;
        };
        Some((SecretKey::try_from_slice(&plain)?, seals_at_put))
    }

    /// Drops the entry of this key slot, if any (its version was destroyed).
    pub fn forget(&self, ctx: KeyContext<'_>) {
        if let Err(e) = self.kv.delete(&entry_key(ctx)) {
            eprintln!("veil: DEK cache delete failed: {e}");
        }
    }

    /// Caches a freshly unwrapped DEK for at most `max_age_secs`; `seals_at_put` is the version's
    /// seal count before the request that unwrapped it (0 where the request seals nothing).
    pub fn put(
        &self,
        rng: &mut Csprng,
        ctx: KeyContext<'_>,
        wrapped: &WrappedDek,
        dek: &SecretKey,
        now: u64,
        seals_at_put: u64,
    ) {
        let expiry = now.saturating_add(self.limits.max_age_secs);
        let sealed = self.seal.seal(rng, &aad(ctx, wrapped, expiry, seals_at_put), dek.expose_secret());
        let mut record = Vec::with_capacity(RECORD_LEN);
        record.extend_from_slice(&expiry.to_be_bytes());
        record.extend_from_slice(&seals_at_put.to_be_bytes());
        record.extend_from_slice(&sealed);
        if let Err(e) = self.kv.set(&entry_key(ctx), &record) {
            eprintln!("veil: DEK cache write failed (continuing without): {e}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids::{KeyVersion, SchemeName, TenantId};

    pub use crate::kv::mem::MemKv;

    struct Fixture {
        kv: MemKv,
        tenant: TenantId,
        scheme: SchemeName,
        wrapped: WrappedDek,
        dek: SecretKey,
    }

    fn fixture() -> Fixture {
        Fixture {
            kv: MemKv::default(),
            tenant: TenantId::parse("acme").expect("t"),
            scheme: SchemeName::parse("pii").expect("s"),
            wrapped: WrappedDek { blob: vec![1; 60], kek_id: "local".into(), kek_version: "f00d".into() },
            dek: SecretKey::from_bytes([42; 32]),
        }
    }

    fn cache(kv: &MemKv, key: u8, limits: CacheLimits) -> DekCache {
        DekCache::new(Box::new(kv.clone()), &SecretKey::from_bytes([key; 32]), limits)
    }

    impl Fixture {
        fn ctx(&self, v: u32) -> KeyContext<'_> {
            KeyContext { tenant: &self.tenant, scheme: &self.scheme, version: KeyVersion::new(v).expect("v") }
        }
    }

    #[test]
    fn hit_after_put_and_nothing_in_clear() {
        let f = fixture();
        let mut rng = Csprng::from_seed([3; 32]);
        let c = cache(&f.kv, 9, CacheLimits::default());
        assert!(c.get(f.ctx(1), &f.wrapped, 100, None).is_none());
        c.put(&mut rng, f.ctx(1), &f.wrapped, &f.dek, 100, 0);
        let got = c.get(f.ctx(1), &f.wrapped, 101, None).expect("hit");
        assert_eq!(got.expose_secret(), f.dek.expose_secret());
        for (k, v) in f.kv.0.borrow().iter() {
            assert!(k.starts_with("veil/dek-cache/v2/"), "{k}");
            assert_eq!(v.len(), RECORD_LEN);
            assert!(!v.windows(32).any(|w| w == [42u8; 32]), "the DEK is stored in clear");
        }
        // another version, another wrapped key, or another cache key: misses
        assert!(c.get(f.ctx(2), &f.wrapped, 101, None).is_none());
        let other = WrappedDek { blob: vec![2; 60], ..f.wrapped.clone() };
        assert!(c.get(f.ctx(1), &other, 101, None).is_none());
    }

    /// A hit writes nothing: the entry is sealed once, when it is cached (no nonce per hit).
    #[test]
    fn hits_never_rewrite_the_entry() {
        let f = fixture();
        let mut rng = Csprng::from_seed([3; 32]);
        let c = cache(&f.kv, 9, CacheLimits::default());
        c.put(&mut rng, f.ctx(1), &f.wrapped, &f.dek, 100, 5);
        let before = f.kv.0.borrow().clone();
        for n in 6..50 {
            assert!(c.get(f.ctx(1), &f.wrapped, 101, Some(n)).is_some());
            assert!(c.get(f.ctx(1), &f.wrapped, 101, None).is_some());
        }
        assert_eq!(*f.kv.0.borrow(), before);
    }

    #[test]
    fn expiry_and_max_uses_are_honoured() {
        let f = fixture();
        let mut rng = Csprng::from_seed([3; 32]);
        let c = cache(&f.kv, 9, CacheLimits { max_age_secs: 10, max_uses: 3 });
        // cached by a request that sealed 1 value when the version had sealed 7: 7 + 1 + 2 more
        c.put(&mut rng, f.ctx(1), &f.wrapped, &f.dek, 100, 7);
        assert!(c.get(f.ctx(1), &f.wrapped, 109, Some(9)).is_some());
        assert!(c.get(f.ctx(1), &f.wrapped, 109, Some(10)).is_some());
        assert!(c.get(f.ctx(1), &f.wrapped, 109, None).is_some(), "unprotect: age only");
        assert!(c.get(f.ctx(1), &f.wrapped, 109, Some(11)).is_none()); // used up, and deleted
        assert!(f.kv.0.borrow().is_empty());
        c.put(&mut rng, f.ctx(1), &f.wrapped, &f.dek, 100, 0);
        assert!(c.get(f.ctx(1), &f.wrapped, 110, None).is_none()); // expired
        assert!(f.kv.0.borrow().is_empty());
    }

    /// Issue 19 item 6: the use count is the database's seal counter, which only grows; an older
    /// sealed entry replayed into the key-value store does not reset it (on the v1 layout the
    /// count lived in the entry, so the replay below brought a used-up key back to life).
    #[test]
    fn a_replayed_older_entry_cannot_reset_the_use_count() {
        let f = fixture();
        let mut rng = Csprng::from_seed([3; 32]);
        let c = cache(&f.kv, 9, CacheLimits { max_age_secs: 300, max_uses: 3 });
        let key = entry_key(f.ctx(1));
        c.put(&mut rng, f.ctx(1), &f.wrapped, &f.dek, 100, 0);
        let old = f.kv.0.borrow()[&key].clone();
        assert!(c.get(f.ctx(1), &f.wrapped, 101, Some(3)).is_some());
        assert!(c.get(f.ctx(1), &f.wrapped, 101, Some(4)).is_none(), "used up");
        // the next request asks the vault and caches the key again at seal count 4
        c.put(&mut rng, f.ctx(1), &f.wrapped, &f.dek, 101, 4);
        let newer = f.kv.0.borrow()[&key].clone();
        assert!(c.get(f.ctx(1), &f.wrapped, 102, Some(6)).is_some());
        // replaying the first entry over the second: it is older, so used up already
        f.kv.0.borrow_mut().insert(key.clone(), old.clone());
        assert!(c.get(f.ctx(1), &f.wrapped, 102, Some(6)).is_none());
        assert!(f.kv.0.borrow().is_empty(), "the replayed entry is deleted");
        // replaying the newer entry after its own uses ran out: used up as well
        f.kv.0.borrow_mut().insert(key.clone(), newer);
        assert!(c.get(f.ctx(1), &f.wrapped, 102, Some(8)).is_none());
        // and the counter in a record cannot be lowered: its AAD binds it
        let mut forged = old;
        forged[8..16].copy_from_slice(&100u64.to_be_bytes());
        f.kv.0.borrow_mut().insert(key, forged);
        assert!(c.get(f.ctx(1), &f.wrapped, 102, Some(101)).is_none());
    }

    #[test]
    fn forget_removes_the_entry() {
        let f = fixture();
        let mut rng = Csprng::from_seed([3; 32]);
        let c = cache(&f.kv, 9, CacheLimits::default());
        c.put(&mut rng, f.ctx(1), &f.wrapped, &f.dek, 100, 0);
        c.put(&mut rng, f.ctx(2), &f.wrapped, &f.dek, 100, 0);
        c.forget(f.ctx(1));
        assert!(!f.kv.0.borrow().contains_key(&entry_key(f.ctx(1))));
        assert!(c.get(f.ctx(1), &f.wrapped, 101, None).is_none());
        assert!(c.get(f.ctx(2), &f.wrapped, 101, None).is_some(), "other versions stay");
        c.forget(f.ctx(3)); // nothing cached: no error
    }

    #[test]
    fn tampered_moved_or_foreign_entries_are_refused() {
        let f = fixture();
        let mut rng = Csprng::from_seed([3; 32]);
        let c = cache(&f.kv, 9, CacheLimits::default());
        c.put(&mut rng, f.ctx(1), &f.wrapped, &f.dek, 100, 0);
        let key1 = entry_key(f.ctx(1));
        let record = f.kv.0.borrow()[&key1].clone();
        // extending the expiry in the record breaks the seal
        let mut extended = record.clone();
        extended[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        f.kv.0.borrow_mut().insert(key1.clone(), extended);
        assert!(c.get(f.ctx(1), &f.wrapped, 101, None).is_none());
        // the same record moved to version 2's slot does not open there
        f.kv.0.borrow_mut().insert(entry_key(f.ctx(2)), record.clone());
        assert!(c.get(f.ctx(2), &f.wrapped, 101, None).is_none());
        // a cache with another cache key cannot read it
        f.kv.0.borrow_mut().insert(key1, record);
        assert!(cache(&f.kv, 8, CacheLimits::default()).get(f.ctx(1), &f.wrapped, 101, None).is_none());
    }
}
