//! The scheme cache (issue 20, lever 3): what a protect reads from the metadata database — the
//! scheme and its current data key, as one row — kept in the host key-value store for a few
//! seconds, so that a warm protect (this entry and the DEK cache's both hit) runs no SQL at all.
//!
//! The key-value store is untrusted (DESIGN §11b): every entry is sealed with XChaCha20-Poly1305
//! under a key derived from `dek_cache_key`, its AAD binds the tenant, the scheme and the entry's
//! expiry, and its store key is a keyed hash of (tenant, scheme), so neither names nor contents
//! show and an entry copied to another slot, extended or forged does not open (a miss, and it is
//! deleted). Any store error is a miss. Layout (docs/kms.md, "The scheme cache"):
//!
//! ```text
//! key    = "veil/scheme-cache/v1/" ‖ hex(HMAC-SHA256(name key, LP(tenant) ‖ LP(scheme))[..16])
//! record = expiry (u64be) ‖ nonce (24) ‖ XChaCha20-Poly1305(row) ‖ tag
//! aad    = LP("veil/v1/scheme-cache") ‖ LP(tenant) ‖ LP(scheme) ‖ expiry (u64be)
//! row    = u16be(columns) ‖ per column: tag (0 null, 1 int, 2 text, 3 blob) ‖ i64be | u32be(len) ‖ bytes
//! seal key = HMAC-SHA256(dek_cache_key, "veil/v1/scheme-cache/seal"), name key likewise with "…/name"
//! ```
//!
//! Entries are dropped by every write to their scheme in the same key-value store before the
//! writing request answers ([`crate::store::Store::take_changed_schemes`]); elsewhere they live at
//! most `scheme_cache_max_age_secs`.

use crate::crypto::aead::{AeadKey, Algorithm};
use crate::crypto::kdf::hmac_sha256;
use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;
use crate::crypto::Fields;
use crate::ids::{SchemeName, TenantId};
use crate::kv::KeyValue;
use crate::store::sql::SqlValue;
use crate::store::SchemeRow;

const AAD_LABEL: &[u8] = b"veil/v1/scheme-cache";
const KEY_PREFIX: &str = "veil/scheme-cache/v1/";
/// The most columns and bytes a decoded row may have (a scheme row is ~21 short columns).
const MAX_COLUMNS: usize = 64;

/// The sealing and naming keys of the scheme cache, and its max age.
pub struct SchemeCache {
    seal: AeadKey,
    names: SecretKey,
    max_age_secs: u64,
}

impl std::fmt::Debug for SchemeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemeCache").field("max_age_secs", &self.max_age_secs).finish_non_exhaustive()
    }
}

/// tenant and scheme, each length-prefixed (`crypto::Fields`)
fn slot(tenant: &TenantId, scheme: &SchemeName) -> Fields {
    Fields::new().str(tenant.as_str()).str(scheme.as_str())
}

fn aad(tenant: &TenantId, scheme: &SchemeName, expiry: u64) -> Vec<u8> {
    Fields::new().bytes(AAD_LABEL).str(tenant.as_str()).str(scheme.as_str()).u64(expiry).finish()
}

/// The row's columns, each tagged (the layout above).
pub(crate) fn encode_row(row: &[SqlValue]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&u16::try_from(row.len()).unwrap_or(u16::MAX).to_be_bytes());
    for v in row {
        match v {
            SqlValue::Null => out.push(0),
            SqlValue::Int(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_be_bytes());
            }
            SqlValue::Text(t) => {
                out.push(2);
                out.extend_from_slice(&u32::try_from(t.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            SqlValue::Blob(b) => {
                out.push(3);
                out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// The inverse of [`encode_row`]; `None` for anything that does not decode whole.
pub(crate) fn decode_row(mut bytes: &[u8]) -> Option<SchemeRow> {
    fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Some(head)
    }
    let count = usize::from(u16::from_be_bytes(take(&mut bytes, 2)?.try_into().ok()?));
    if count > MAX_COLUMNS {
        return None;
    }
    let mut row = Vec::with_capacity(count);
    for _ in 0..count {
        let tag = take(&mut bytes, 1)?[0];
        row.push(match tag {
            0 => SqlValue::Null,
            1 => SqlValue::Int(i64::from_be_bytes(take(&mut bytes, 8)?.try_into().ok()?)),
            2 | 3 => {
                let len = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
                let data = take(&mut bytes, len)?;
                if tag == 2 {
                    SqlValue::Text(String::from_utf8(data.to_vec()).ok()?)
                } else {
                    SqlValue::Blob(data.to_vec())
                }
            }
            _ => return None,
        });
    }
    bytes.is_empty().then_some(row)
}

impl SchemeCache {
    /// The cache sealed under keys derived from the DEK cache's key.
    pub fn new(cache_key: &SecretKey, max_age_secs: u64) -> Self {
        let seal = SecretKey::from_bytes(hmac_sha256(cache_key, b"veil/v1/scheme-cache/seal"));
        let names = SecretKey::from_bytes(hmac_sha256(cache_key, b"veil/v1/scheme-cache/name"));
        SchemeCache { seal: AeadKey::new(Algorithm::XChaCha20Poly1305, &seal), names, max_age_secs }
    }

    fn entry_key(&self, tenant: &TenantId, scheme: &SchemeName) -> String {
        let mac = hmac_sha256(&self.names, &slot(tenant, scheme).finish());
        let hex: String = mac[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{KEY_PREFIX}{hex}")
    }

    /// The cached row of this scheme; `None` on a miss, or for an entry that has expired, does
    /// not open or does not decode (then it is deleted).
    pub fn get(
        &self,
        kv: &dyn KeyValue,
        tenant: &TenantId,
        scheme: &SchemeName,
        now: u64,
    ) -> Option<SchemeRow> {
        let key = self.entry_key(tenant, scheme);
        let record = match kv.get(&key) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                eprintln!("veil: scheme cache read failed (continuing without): {e}");
                return None;
            }
        };
        let row = (record.len() > 8)
            .then(|| u64::from_be_bytes(record[..8].try_into().unwrap_or([0; 8])))
            .filter(|expiry| now < *expiry && *expiry <= now.saturating_add(self.max_age_secs))
            .and_then(|expiry| self.seal.open(&aad(tenant, scheme, expiry), &record[8..]).ok())
            .and_then(|plain| decode_row(&plain));
        if row.is_none() {
            let _ = kv.delete(&key);
        }
        row
    }

    /// Caches this scheme's row for `max_age_secs`.
    pub fn put(
        &self,
        kv: &dyn KeyValue,
        rng: &mut Csprng,
        tenant: &TenantId,
        scheme: &SchemeName,
        row: &[SqlValue],
        now: u64,
    ) {
        let expiry = now.saturating_add(self.max_age_secs);
        let sealed = self.seal.seal(rng, &aad(tenant, scheme, expiry), &encode_row(row));
        let mut record = Vec::with_capacity(8 + sealed.len());
        record.extend_from_slice(&expiry.to_be_bytes());
        record.extend_from_slice(&sealed);
        if let Err(e) = kv.set(&self.entry_key(tenant, scheme), &record) {
            eprintln!("veil: scheme cache write failed (continuing without): {e}");
        }
    }

    /// Drops this scheme's entry, if any (a write changed the scheme or its keys).
    pub fn forget(&self, kv: &dyn KeyValue, tenant: &TenantId, scheme: &SchemeName) {
        if let Err(e) = kv.delete(&self.entry_key(tenant, scheme)) {
            eprintln!("veil: scheme cache delete failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::mem::MemKv;

    fn names() -> (TenantId, SchemeName) {
        (TenantId::parse("acme").expect("t"), SchemeName::parse("pii").expect("s"))
    }

    fn row() -> SchemeRow {
        vec![
            SqlValue::Text("acme".into()),
            SqlValue::Int(-7),
            SqlValue::Null,
            SqlValue::Blob(vec![0, 1, 2, 255]),
            SqlValue::Text(String::new()),
        ]
    }

    #[test]
    fn rows_round_trip_and_truncations_do_not_decode() {
        let bytes = encode_row(&row());
        assert_eq!(decode_row(&bytes), Some(row()));
        for cut in 0..bytes.len() {
            assert_eq!(decode_row(&bytes[..cut]), None, "{cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_row(&longer), None);
        let mut bad_tag = bytes;
        bad_tag[2] = 9;
        assert_eq!(decode_row(&bad_tag), None);
    }

    #[test]
    fn hit_within_max_age_then_expired_and_nothing_in_clear() {
        let kv = MemKv::default();
        let (t, s) = names();
        let c = SchemeCache::new(&SecretKey::from_bytes([7; 32]), 2);
        let mut rng = Csprng::from_seed([1; 32]);
        assert_eq!(c.get(&kv, &t, &s, 100), None);
        c.put(&kv, &mut rng, &t, &s, &row(), 100);
        assert_eq!(c.get(&kv, &t, &s, 101), Some(row()));
        for (k, v) in kv.0.borrow().iter() {
            assert!(k.starts_with(KEY_PREFIX) && !k.contains("acme") && !k.contains("pii"), "{k}");
            assert!(!v.windows(4).any(|w| w == b"acme"), "the row is stored in clear");
        }
        assert_eq!(c.get(&kv, &t, &s, 102), None, "expired");
        assert!(kv.0.borrow().is_empty(), "and deleted");
    }

    #[test]
    fn forged_moved_extended_or_foreign_entries_are_misses() {
        let kv = MemKv::default();
        let (t, s) = names();
        let other = SchemeName::parse("cards").expect("s");
        let c = SchemeCache::new(&SecretKey::from_bytes([7; 32]), 5);
        let mut rng = Csprng::from_seed([1; 32]);
        c.put(&kv, &mut rng, &t, &s, &row(), 100);
        let key = c.entry_key(&t, &s);
        let record = kv.0.borrow()[&key].clone();
        // moved to another scheme's slot
        kv.0.borrow_mut().insert(c.entry_key(&t, &other), record.clone());
        assert_eq!(c.get(&kv, &t, &other, 101), None);
        // its expiry extended (within the max age of now, so only the seal refuses it)
        let mut extended = record.clone();
        extended[..8].copy_from_slice(&104u64.to_be_bytes());
        kv.0.borrow_mut().insert(key.clone(), extended);
        assert_eq!(c.get(&kv, &t, &s, 101), None);
        // an expiry further ahead than the max age is refused before opening
        let mut far = record.clone();
        far[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        kv.0.borrow_mut().insert(key.clone(), far);
        assert_eq!(c.get(&kv, &t, &s, 101), None);
        // forged bytes, and a cache under another key
        let mut forged = 105u64.to_be_bytes().to_vec();
        forged.extend_from_slice(&encode_row(&row()));
        kv.0.borrow_mut().insert(key.clone(), forged);
        assert_eq!(c.get(&kv, &t, &s, 101), None);
        kv.0.borrow_mut().insert(key.clone(), record);
        let foreign = SchemeCache::new(&SecretKey::from_bytes([8; 32]), 5);
        assert_eq!(foreign.get(&kv, &t, &s, 101), None);
        assert_ne!(foreign.entry_key(&t, &s), key, "names are keyed");
    }

    #[test]
    fn forget_drops_only_that_scheme() {
        let kv = MemKv::default();
        let (t, s) = names();
        let other = SchemeName::parse("cards").expect("s");
        let c = SchemeCache::new(&SecretKey::from_bytes([7; 32]), 5);
        let mut rng = Csprng::from_seed([1; 32]);
        c.put(&kv, &mut rng, &t, &s, &row(), 100);
        c.put(&kv, &mut rng, &t, &other, &row(), 100);
        c.forget(&kv, &t, &s);
        assert_eq!(c.get(&kv, &t, &s, 101), None);
        assert_eq!(c.get(&kv, &t, &other, 101), Some(row()));
    }
}
