//! Key derivation (HKDF-SHA256, RFC 5869) and HMAC-SHA256 (RFC 2104), with fixed,
//! versioned labels. The layouts are documented in docs/token-format.md and pinned by
//! tests/vectors/veil-kdf-v1.txt: changing a label changes every key.
//!
//! ```text
//! info = LP("veil") ‖ LP(purpose) ‖ u32be(KDF_LABEL_VERSION) ‖ purpose fields…
//! LP(x) = u64be(len(x)) ‖ x
//! ```

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::secret::SecretKey;
use super::Fields;
use crate::ids::{KeyVersion, SchemeName, TenantId};

/// The domain every Veil label starts with.
pub const DOMAIN: &str = "veil";
/// The version of the labels below; a new layout gets a new number, never a silent change.
pub const KDF_LABEL_VERSION: u32 = 1;
/// Purpose of the per-tenant scheme key that encrypts values.
pub const PURPOSE_SCHEME_DATA_KEY: &str = "scheme-data-key";
/// Purpose of the per-tenant scheme key for the `hmac` mask rule.
pub const PURPOSE_SCHEME_MASK_KEY: &str = "scheme-mask-key";
/// Purpose of the per-tenant scheme key of the Transit-compatible `hmac` and `verify` routes.
pub const PURPOSE_SCHEME_TRANSIT_HMAC_KEY: &str = "scheme-transit-hmac-key";
/// Purpose of the per-subject key (data subjects, DESIGN §4).
pub const PURPOSE_SUBJECT_KEY: &str = "subject-key";
/// Purpose of the per-tenant key that turns subject ids into their keyed digests.
pub const PURPOSE_SUBJECT_DIGEST_KEY: &str = "subject-digest-key";

/// HKDF-SHA256 extract-then-expand into `okm`. `salt = None` means the RFC's default salt
/// (32 zero bytes). Fails only if `okm` is longer than 255 × 32 bytes.
pub fn hkdf_sha256(
    salt: Option<&[u8]>,
    ikm: &[u8],
    info: &[u8],
    okm: &mut [u8],
) -> Result<(), hkdf::InvalidLength> {
    Hkdf::<Sha256>::new(salt, ikm).expand(info, okm)
}

#[expect(clippy::expect_used, reason = "a 32-byte output is always within HKDF-SHA256's limit")]
fn derive_key(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> SecretKey {
    let mut okm = Zeroizing::new([0u8; 32]);
    hkdf_sha256(salt, ikm, info, &mut okm[..]).expect("32 bytes is within HKDF-SHA256's 8160-byte limit");
    SecretKey::from_bytes(*okm)
}

fn scheme_info(purpose: &str, tenant: &TenantId, scheme: &SchemeName, version: KeyVersion) -> Vec<u8> {
    Fields::new()
        .str(DOMAIN)
        .str(purpose)
        .u32(KDF_LABEL_VERSION)
        .str(tenant.as_str())
        .str(scheme.as_str())
        .u32(version.get())
        .finish()
}

/// The per-tenant scheme key that encrypts values:
/// `HKDF(salt = none, ikm = DEK, info = LP("veil") ‖ LP("scheme-data-key") ‖ u32be(1) ‖
/// LP(tenant) ‖ LP(scheme) ‖ u32be(version))`.
pub fn scheme_data_key(
    dek: &SecretKey,
    tenant: &TenantId,
    scheme: &SchemeName,
    version: KeyVersion,
) -> SecretKey {
    let info = scheme_info(PURPOSE_SCHEME_DATA_KEY, tenant, scheme, version);
    derive_key(None, dek.expose_secret(), &info)
}

/// The per-tenant HMAC key for the `hmac` mask rule; same layout as
/// [`scheme_data_key`] with the purpose `scheme-mask-key`.
pub fn scheme_mask_key(
    dek: &SecretKey,
    tenant: &TenantId,
    scheme: &SchemeName,
    version: KeyVersion,
) -> SecretKey {
    let info = scheme_info(PURPOSE_SCHEME_MASK_KEY, tenant, scheme, version);
    derive_key(None, dek.expose_secret(), &info)
}

/// The per-tenant HMAC key of the Transit-compatible `hmac`/`verify` routes (docs/transit.md);
/// same layout as [`scheme_data_key`] with the purpose `scheme-transit-hmac-key`, so it is never
/// the `hmac` mask rule's key.
pub fn scheme_transit_hmac_key(
    dek: &SecretKey,
    tenant: &TenantId,
    scheme: &SchemeName,
    version: KeyVersion,
) -> SecretKey {
    let info = scheme_info(PURPOSE_SCHEME_TRANSIT_HMAC_KEY, tenant, scheme, version);
    derive_key(None, dek.expose_secret(), &info)
}

/// The per-subject key: `HKDF(salt = subject secret, ikm = scheme key, info = LP("veil") ‖
/// LP("subject-key") ‖ u32be(1) ‖ LP(subject id))`. Deleting the random subject secret
/// makes this key unrecoverable even to whoever holds the KEK and every DEK.
pub fn subject_key(scheme_key: &SecretKey, subject_secret: &SecretKey, subject_id: &str) -> SecretKey {
    let info =
        Fields::new().str(DOMAIN).str(PURPOSE_SUBJECT_KEY).u32(KDF_LABEL_VERSION).str(subject_id).finish();
    derive_key(Some(subject_secret.expose_secret()), scheme_key.expose_secret(), &info)
}

/// The per-tenant subject digest key: `HKDF(salt = none, ikm = subject_digest_key variable,
/// info = LP("veil") ‖ LP("subject-digest-key") ‖ u32be(1) ‖ LP(tenant))`.
pub fn subject_digest_key(root: &SecretKey, tenant: &TenantId) -> SecretKey {
    let info = Fields::new()
        .str(DOMAIN)
        .str(PURPOSE_SUBJECT_DIGEST_KEY)
        .u32(KDF_LABEL_VERSION)
        .str(tenant.as_str())
        .finish();
    derive_key(None, root.expose_secret(), &info)
}

/// The keyed digest a subject is stored and certified under: `HMAC-SHA256(subject digest key
/// of the tenant, subject id bytes)`. The database never holds the id itself.
pub fn subject_digest(tenant_digest_key: &SecretKey, subject_id: &str) -> [u8; 32] {
    hmac_sha256(tenant_digest_key, subject_id.as_bytes())
}

/// HMAC-SHA256 of `msg` under a 32-byte key.
#[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
pub fn hmac_sha256(key: &SecretKey, msg: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret()).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::testvec::{self, hex};

    #[test]
    fn rfc5869_sha256_cases() {
        let cases = testvec::parse(include_str!("../../tests/vectors/hkdf-sha256-rfc5869.txt"));
        assert_eq!(cases.len(), 3);
        for c in &cases {
            let salt = c.hex("salt");
            // RFC 5869 A.3 gives a zero-length salt, which HKDF treats like "not provided".
            let salt = if salt.is_empty() { None } else { Some(&salt[..]) };
            let expected = c.hex("okm");
            let mut okm = vec![0u8; c.get("l").parse().unwrap_or(0)];
            assert_eq!(okm.len(), expected.len(), "{}", c.name());
            assert!(hkdf_sha256(salt, &c.hex("ikm"), &c.hex("info"), &mut okm).is_ok());
            assert_eq!(hex(&okm), hex(&expected), "{}", c.name());
            let (prk, _) = Hkdf::<Sha256>::extract(salt, &c.hex("ikm"));
            assert_eq!(hex(&prk), c.get("prk"), "{}", c.name());
        }
        assert!(hkdf_sha256(None, b"k", b"", &mut [0u8; 255 * 32 + 1]).is_err());
    }

    #[test]
    fn rfc4231_hmac_sha256_cases() {
        // Our keys are always 32 bytes. HMAC zero-pads keys shorter than the 64-byte block,
        // so an RFC 4231 key of up to 32 bytes, zero-padded to 32, gives the RFC's answer.
        let cases = testvec::parse(include_str!("../../tests/vectors/hmac-sha256-rfc4231.txt"));
        assert_eq!(cases.len(), 4);
        for c in &cases {
            let mut key = [0u8; 32];
            let k = c.hex("key");
            key[..k.len()].copy_from_slice(&k);
            let mac = hmac_sha256(&SecretKey::from_bytes(key), &c.hex("data"));
            assert_eq!(hex(&mac), c.get("mac"), "{}", c.name());
        }
    }

    fn ids(c: &testvec::Case) -> (TenantId, SchemeName, KeyVersion) {
        let t = TenantId::parse(c.get("tenant")).unwrap_or_else(|e| panic!("{e}"));
        let s = SchemeName::parse(c.get("scheme")).unwrap_or_else(|e| panic!("{e}"));
        let v = KeyVersion::new(c.get("version").parse().unwrap_or(0)).unwrap_or_else(|e| panic!("{e}"));
        (t, s, v)
    }

    /// Golden vectors: the labels and layouts must never change by accident.
    #[test]
    fn veil_kdf_golden() {
        let cases = testvec::parse(include_str!("../../tests/vectors/veil-kdf-v1.txt"));
        let mut n = 0;
        for c in &cases {
            let key = |f: &str| SecretKey::try_from_slice(&c.hex(f)).unwrap_or_else(|| panic!("{f}"));
            match c.get("kind") {
                "scheme" => {
                    let (t, s, v) = ids(c);
                    let dek = key("dek");
                    assert_eq!(
                        hex(&scheme_info(PURPOSE_SCHEME_DATA_KEY, &t, &s, v)),
                        c.get("data_info"),
                        "{}",
                        c.name()
                    );
                    assert_eq!(
                        hex(scheme_data_key(&dek, &t, &s, v).expose_secret()),
                        c.get("data_key"),
                        "{}",
                        c.name()
                    );
                    assert_eq!(
                        hex(scheme_mask_key(&dek, &t, &s, v).expose_secret()),
                        c.get("mask_key"),
                        "{}",
                        c.name()
                    );
                }
                "subject" => {
                    let k = subject_key(&key("scheme_key"), &key("subject_secret"), c.get("subject_id"));
                    assert_eq!(hex(k.expose_secret()), c.get("subject_key"), "{}", c.name());
                }
                other => panic!("unknown kind {other}"),
            }
            n += 1;
        }
        assert!(n >= 5);
    }

    /// Golden subject digests, written by an independent implementation (tests/harness/veilformat.py).
    #[test]
    fn veil_subject_digest_golden() {
        let cases = testvec::parse(include_str!("../../tests/vectors/veil-subject-v1.txt"));
        let mut n = 0;
        for c in cases.iter().filter(|c| c.get("kind") == "subject-digest") {
            let root = SecretKey::try_from_slice(&c.hex("digest_root")).unwrap_or_else(|| panic!("root"));
            let t = TenantId::parse(c.get("tenant")).unwrap_or_else(|e| panic!("{e}"));
            let tk = subject_digest_key(&root, &t);
            assert_eq!(hex(tk.expose_secret()), c.get("tenant_digest_key"), "{}", c.name());
            assert_eq!(
                hex(&subject_digest(&tk, c.get("subject_id"))),
                c.get("subject_digest"),
                "{}",
                c.name()
            );
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn every_input_separates_keys() {
        let dek = SecretKey::from_bytes([1; 32]);
        let t = |s: &str| TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"));
        let s = |x: &str| SchemeName::parse(x).unwrap_or_else(|e| panic!("{e}"));
        let v = |n: u32| KeyVersion::new(n).unwrap_or_else(|e| panic!("{e}"));
        let base = hex(scheme_data_key(&dek, &t("ab"), &s("c"), v(1)).expose_secret());
        let others = [
            scheme_data_key(&dek, &t("a"), &s("bc"), v(1)),
            scheme_data_key(&dek, &t("ab"), &s("c"), v(2)),
            scheme_data_key(&dek, &t("ab"), &s("d"), v(1)),
            scheme_data_key(&SecretKey::from_bytes([2; 32]), &t("ab"), &s("c"), v(1)),
            scheme_mask_key(&dek, &t("ab"), &s("c"), v(1)),
            scheme_transit_hmac_key(&dek, &t("ab"), &s("c"), v(1)),
        ];
        for o in &others {
            assert_ne!(hex(o.expose_secret()), base);
        }
        let sk = SecretKey::from_bytes([3; 32]);
        let a = subject_key(&dek, &sk, "u1");
        assert_ne!(hex(a.expose_secret()), hex(subject_key(&dek, &sk, "u2").expose_secret()));
        assert_ne!(
            hex(a.expose_secret()),
            hex(subject_key(&dek, &SecretKey::from_bytes([4; 32]), "u1").expose_secret())
        );
    }
}
