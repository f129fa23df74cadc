//! Golden vectors for the frozen KEK bindings (tests/vectors/veil-*-v1.txt, written by
//! tests/vectors/generate-kek-binding-v1.py from the layouts in docs/testing.md, independently of
//! this code). Each test rebuilds the bytes from the file's fields, drives Veil's real code path
//! (the local KEK, the Azure and AWS providers through [`Keks`] over a scripted transport, the DEK
//! cache over an in-memory store) and compares what it produced or sent with the file. A change to
//! any of these encodings fails here: it would orphan every stored data key or cache entry.

use std::rc::Rc;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::cache::{CacheLimits, DekCache};
use super::local::LocalKek;
use super::transport::testing::{FakeClock, ScriptedTransport};
use super::{context_bytes, Kek, Keks, KeyContext, KmsError, WrappedDek};
use crate::config::Config;
use crate::crypto::aead::{AeadKey, Algorithm};
use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;
use crate::crypto::testvec::{self, hex, Case};
use crate::ids::{KeyVersion, SchemeName, TenantId};
use crate::kv::mem::MemKv;
use crate::scheme::KekRef;
use crate::vars::Variables;

struct Ids {
    tenant: TenantId,
    scheme: SchemeName,
    version: KeyVersion,
}

impl Ids {
    fn of(c: &Case) -> Ids {
        Ids {
            tenant: TenantId::parse(c.get("tenant")).unwrap_or_else(|e| panic!("{}: {e}", c.name())),
            scheme: SchemeName::parse(c.get("scheme")).unwrap_or_else(|e| panic!("{}: {e}", c.name())),
            version: KeyVersion::new(c.get("version").parse().unwrap_or(0))
                .unwrap_or_else(|e| panic!("{}: {e}", c.name())),
        }
    }
    fn ctx(&self) -> KeyContext<'_> {
        KeyContext { tenant: &self.tenant, scheme: &self.scheme, version: self.version }
    }
}

fn key(c: &Case, field: &str) -> SecretKey {
    SecretKey::try_from_slice(&c.hex(field))
        .unwrap_or_else(|| panic!("{}: {field} is not 32 bytes", c.name()))
}

fn seed(c: &Case) -> [u8; 32] {
    c.hex("rng_seed").try_into().unwrap_or_else(|_| panic!("{}: rng_seed is not 32 bytes", c.name()))
}

/// The first `n` bytes [`Csprng::from_seed`] gives: the nonce of the first seal.
fn first_bytes(seed: [u8; 32], n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    Csprng::from_seed(seed).fill(&mut b);
    b
}

/// The frozen length prefix of [`context_bytes`]: 4 bytes, big-endian.
fn lp32(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(field);
}

/// The layout of docs/testing.md, written out here on its own.
fn expected_context(label: &str, ids: &Ids) -> Vec<u8> {
    let mut out = Vec::new();
    lp32(&mut out, label.as_bytes());
    lp32(&mut out, ids.tenant.as_str().as_bytes());
    lp32(&mut out, ids.scheme.as_str().as_bytes());
    out.extend_from_slice(&ids.version.get().to_be_bytes());
    out
}

const LOCAL_LABEL: &str = "veil/v1/local-kek-wrap";
const AZURE_LABEL: &str = "veil/v1/azure-kv-wrap";

#[test]
fn kek_context_bytes_v1() {
    let cases = testvec::parse(include_str!("../../tests/vectors/veil-kek-context-v1.txt"));
    assert_eq!(cases.len(), 12);
    for c in &cases {
        let ids = Ids::of(c);
        let label = c.get("label");
        assert!([LOCAL_LABEL, AZURE_LABEL].contains(&label), "{}", c.name());
        assert_eq!(hex(&expected_context(label, &ids)), c.get("context"), "{}: the file", c.name());
        assert_eq!(hex(&context_bytes(label, ids.ctx())), c.get("context"), "{}", c.name());
    }
    for label in [LOCAL_LABEL, AZURE_LABEL] {
        assert_eq!(cases.iter().filter(|c| c.get("label") == label).count(), 6, "{label}");
    }
}

#[test]
fn local_kek_wrap_v1() {
    let cases = testvec::parse(include_str!("../../tests/vectors/veil-local-kek-wrap-v1.txt"));
    assert_eq!(cases.len(), 4);
    for c in &cases {
        let (ids, kek, dek, n) = (Ids::of(c), key(c, "kek"), key(c, "dek"), c.name());
        // Rebuilt from the fields: the AAD, the nonce the seeded generator gives, the sealed blob.
        let aad = expected_context(LOCAL_LABEL, &ids);
        assert_eq!(hex(&aad), c.get("aad"), "{n}: aad");
        assert_eq!(hex(&first_bytes(seed(c), 12)), c.get("nonce"), "{n}: nonce");
        let sealed =
            AeadKey::new(Algorithm::Aes256Gcm, &kek).seal_with_nonce(&c.hex("nonce"), &aad, &c.hex("dek"));
        assert_eq!(sealed.map(|b| hex(&b)).as_deref(), Ok(c.get("blob")), "{n}: blob from the fields");
        // What the local KEK itself writes, and that it unwraps the frozen blob.
        let w = LocalKek::new(&kek, Csprng::from_seed(seed(c))).wrap(&dek, ids.ctx()).expect("wrap");
        assert_eq!(hex(&w.blob), c.get("blob"), "{n}: LocalKek::wrap");
        assert_eq!((w.kek_id.as_str(), w.kek_version.as_str()), ("local", c.get("kek_version")), "{n}");
        let frozen = WrappedDek {
            blob: c.hex("blob"),
            kek_id: "local".into(),
            kek_version: c.get("kek_version").into(),
        };
        let back =
            LocalKek::new(&kek, Csprng::from_seed([0; 32])).unwrap(&frozen, ids.ctx()).expect("unwrap");
        assert_eq!(back.expose_secret(), dek.expose_secret(), "{n}: unwrap");
    }
}

/// Deployment variables for the test (names from docs/configuration.md).
struct Vars(&'static [(&'static str, &'static str)]);

impl Variables for Vars {
    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }
}

fn keks<'a>(config: &'a Config, t: &Rc<ScriptedTransport>) -> Keks<'a> {
    Keks::new(config.kek_settings(), t.clone(), Rc::new(FakeClock::at_unix(1_700_000_000)))
}

const KEY_URL: &str = "https://contoso.vault.azure.net/keys/veil-kek";
const KID: &str = "https://contoso.vault.azure.net/keys/veil-kek/0123456789abcdef0123456789abcdef";

#[test]
fn azure_wrapkey_value_v1() {
    let cases = testvec::parse(include_str!("../../tests/vectors/veil-azure-wrap-value-v1.txt"));
    assert_eq!(cases.len(), 6);
    let config = Config::load(&Vars(&[
        ("azure_tenant_id", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
        ("azure_client_id", "00000000-1111-2222-3333-444444444444"),
        ("azure_client_secret", "secret"),
        ("jwt_audience", "veil-unit-tests"),
    ]))
    .expect("config");
    let t = Rc::new(ScriptedTransport::default());
    let mut k = keks(&config, &t);
    let mut rng = Csprng::from_seed([7; 32]);
    let kek = KekRef::AzureKeyvault { key_url: KEY_URL.into() };
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    t.respond(200, &[], br#"{"access_token":"tok","expires_in":3600}"#);
    for (i, c) in cases.iter().enumerate() {
        let (ids, dek, n) = (Ids::of(c), key(c, "dek"), c.name());
        // Rebuilt from the fields: DEK || SHA-256(context).
        assert_eq!(hex(&expected_context(AZURE_LABEL, &ids)), c.get("context"), "{n}: context");
        let value = [c.hex("dek"), Sha256::digest(c.hex("context")).to_vec()].concat();
        assert_eq!(hex(&value), c.get("value"), "{n}: value from the fields");
        assert_eq!(b64url.encode(&value), c.get("value_b64url"), "{n}");

        t.respond(200, &[], format!(r#"{{"kid":"{KID}","value":"AAAA"}}"#).as_bytes());
        let w = k.get(&kek, &mut rng).expect("azure").wrap(&dek, ids.ctx()).expect("wrap");
        let sent = t.requests().last().map(|r| r.body_json()).unwrap_or_default();
        assert_eq!(sent["value"], c.get("value_b64url"), "{n}: the wrapkey value sent");
        assert_eq!(sent["alg"], "RSA-OAEP-256", "{n}");

        // Key Vault gives the value back on unwrapkey: it unwraps to the DEK under this context...
        t.respond(200, &[], format!(r#"{{"kid":"{KID}","value":"{}"}}"#, c.get("value_b64url")).as_bytes());
        let back = k.get(&kek, &mut rng).expect("azure").unwrap(&w, ids.ctx()).expect("unwrap");
        assert_eq!(back.expose_secret(), dek.expose_secret(), "{n}: unwrap");
        // ...and under no other: the next case's value is refused for this one's context.
        let other = &cases[(i + 1) % cases.len()];
        t.respond(
            200,
            &[],
            format!(r#"{{"kid":"{KID}","value":"{}"}}"#, other.get("value_b64url")).as_bytes(),
        );
        let refused = k.get(&kek, &mut rng).expect("azure").unwrap(&w, ids.ctx());
        assert_eq!(refused.err(), Some(KmsError::UnwrapFailed), "{n}: another binding");
    }
    assert_eq!(t.requests().len(), 1 + 3 * cases.len(), "one token, then wrap, unwrap, unwrap per case");
    assert_eq!(t.pending(), 0);
}

const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn aws_encryption_context_v1() {
    let cases = testvec::parse(include_str!("../../tests/vectors/veil-aws-encryption-context-v1.txt"));
    assert_eq!(cases.len(), 6);
    let config = Config::load(&Vars(&[
        ("aws_access_key_id", "AKIDEXAMPLE"),
        ("aws_secret_access_key", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        ("jwt_audience", "veil-unit-tests"),
    ]))
    .expect("config");
    let t = Rc::new(ScriptedTransport::default());
    let mut k = keks(&config, &t);
    let mut rng = Csprng::from_seed([7; 32]);
    let kek = KekRef::AwsKms { key_id: ARN.into() };
    let b64 = base64::engine::general_purpose::STANDARD;
    for c in &cases {
        let (ids, n) = (Ids::of(c), c.name());
        let expected: serde_json::Value =
            serde_json::from_str(c.get("encryption_context")).unwrap_or_else(|e| panic!("{n}: {e}"));
        // Rebuilt from the fields: exactly three pairs, the version in decimal.
        let rebuilt = serde_json::json!({
            "veil:tenant": c.get("tenant"),
            "veil:scheme": c.get("scheme"),
            "veil:version": ids.version.get().to_string(),
        });
        assert_eq!(rebuilt, expected, "{n}: the file");

        let dek = SecretKey::from_bytes([0x5a; 32]);
        t.respond(200, &[], format!(r#"{{"CiphertextBlob":"AAAA","KeyId":"{ARN}"}}"#).as_bytes());
        let w = k.get(&kek, &mut rng).expect("aws").wrap(&dek, ids.ctx()).expect("wrap");
        t.respond(
            200,
            &[],
            format!(r#"{{"KeyId":"{ARN}","Plaintext":"{}"}}"#, b64.encode([0x5a; 32])).as_bytes(),
        );
        k.get(&kek, &mut rng).expect("aws").unwrap(&w, ids.ctx()).expect("unwrap");
        let reqs = t.requests();
        let [.., encrypt, decrypt] = reqs.as_slice() else { panic!("{n}: two requests") };
        assert_eq!(encrypt.header("x-amz-target"), Some("TrentService.Encrypt"));
        assert_eq!(decrypt.header("x-amz-target"), Some("TrentService.Decrypt"));
        for r in [encrypt, decrypt] {
            assert_eq!(r.body_json()["EncryptionContext"], expected, "{n}: {:?}", r.header("x-amz-target"));
        }
    }
    assert_eq!(t.requests().len(), 2 * cases.len());
}

/// The slot part of the cache layout (docs/testing.md): 8-byte length prefixes, like `Fields`.
fn cache_slot(ids: &Ids) -> Vec<u8> {
    let mut s = Vec::new();
    for f in [ids.tenant.as_str().as_bytes(), ids.scheme.as_str().as_bytes()] {
        s.extend_from_slice(&(f.len() as u64).to_be_bytes());
        s.extend_from_slice(f);
    }
    s.extend_from_slice(&ids.version.get().to_be_bytes());
    s
}

#[test]
fn dek_cache_entries_v1() {
    let cases = testvec::parse(include_str!("../../tests/vectors/veil-dek-cache-v1.txt"));
    assert_eq!(cases.len(), 3);
    for c in &cases {
        let (ids, n) = (Ids::of(c), c.name());
        let (cache_key, dek) = (key(c, "cache_key"), key(c, "dek"));
        let wrapped = WrappedDek {
            blob: c.hex("wrapped_blob"),
            kek_id: c.get("kek_id").into(),
            kek_version: c.get("kek_version").into(),
        };
        let num = |f: &str| -> u64 { c.get(f).parse().unwrap_or_else(|_| panic!("{n}: {f}")) };
        let (now, max_age_secs) = (num("now"), num("max_age_secs"));
        let expiry = now + max_age_secs;

        // Rebuilt from the fields: the store key, the AAD (with uses = 1) and the record.
        let slot = cache_slot(&ids);
        assert_eq!(
            format!("veil/dek-cache/v1/{}", hex(&Sha256::digest(&slot)[..16])),
            c.get("entry_key"),
            "{n}"
        );
        let mut h = Sha256::new();
        for part in [wrapped.kek_id.as_bytes(), &[0], wrapped.kek_version.as_bytes(), &[0], &wrapped.blob] {
            h.update(part);
        }
        let label = b"veil/v1/dek-cache";
        let aad = [
            &(label.len() as u64).to_be_bytes()[..],
            label,
            &slot,
            &h.finalize(),
            &expiry.to_be_bytes(),
            &1u32.to_be_bytes(),
        ]
        .concat();
        assert_eq!(hex(&aad), c.get("aad"), "{n}: aad");
        let nonce = first_bytes(seed(c), 12);
        let sealed = AeadKey::new(Algorithm::Aes256Gcm, &cache_key)
            .seal_with_nonce(&nonce, &aad, dek.expose_secret())
            .expect("nonce");
        let record = [&expiry.to_be_bytes()[..], &1u32.to_be_bytes(), &sealed].concat();
        assert_eq!(hex(&record), c.get("record"), "{n}: record from the fields");

        // This build neither writes nor reads the v1 layout (docs/kms.md "DEK cache"): `put`
        // writes one v2 entry and no v1 key; a store holding only the frozen v1 record is a miss,
        // and the record is left as it is for an older build sharing the store.
        let kv = MemKv::default();
        let limits = CacheLimits { max_age_secs, max_uses: 10 };
        let cache = DekCache::new(Box::new(kv.clone()), &cache_key, limits);
        cache.put(&mut Csprng::from_seed(seed(c)), ids.ctx(), &wrapped, &dek, now, 0);
        let keys: Vec<String> = kv.0.borrow().keys().cloned().collect();
        assert_eq!(keys.len(), 1, "{n}");
        assert!(keys[0].starts_with("veil/dek-cache/v2/") && keys[0] != c.get("entry_key"), "{n}");
        let kv = MemKv::default();
        kv.0.borrow_mut().insert(c.get("entry_key").into(), c.hex("record"));
        let cache = DekCache::new(Box::new(kv.clone()), &cache_key, limits);
        assert!(cache.get(ids.ctx(), &wrapped, now, None).is_none(), "{n}: a v1 entry is a miss");
        assert_eq!(kv.0.borrow().get(c.get("entry_key")), Some(&c.hex("record")), "{n}: left alone");
    }
}

#[test]
fn dek_cache_entries_v2() {
    let cases = testvec::parse(include_str!("../../tests/vectors/veil-dek-cache-v2.txt"));
    assert_eq!(cases.len(), 3);
    for c in &cases {
        let (ids, n) = (Ids::of(c), c.name());
        let (cache_key, dek) = (key(c, "cache_key"), key(c, "dek"));
        let wrapped = WrappedDek {
            blob: c.hex("wrapped_blob"),
            kek_id: c.get("kek_id").into(),
            kek_version: c.get("kek_version").into(),
        };
        let num = |f: &str| -> u64 { c.get(f).parse().unwrap_or_else(|_| panic!("{n}: {f}")) };
        let (now, max_age_secs, seals_at_put) = (num("now"), num("max_age_secs"), num("seals_at_put"));
        let expiry = now + max_age_secs;

        // Rebuilt from the fields: the store key, the AAD and the record.
        let slot = cache_slot(&ids);
        assert_eq!(
            format!("veil/dek-cache/v2/{}", hex(&Sha256::digest(&slot)[..16])),
            c.get("entry_key"),
            "{n}"
        );
        let mut h = Sha256::new();
        for part in [wrapped.kek_id.as_bytes(), &[0], wrapped.kek_version.as_bytes(), &[0], &wrapped.blob] {
            h.update(part);
        }
        let label = b"veil/v2/dek-cache";
        let aad = [
            &(label.len() as u64).to_be_bytes()[..],
            label,
            &slot,
            &h.finalize(),
            &expiry.to_be_bytes(),
            &seals_at_put.to_be_bytes(),
        ]
        .concat();
        assert_eq!(hex(&aad), c.get("aad"), "{n}: aad");
        let nonce = first_bytes(seed(c), 24);
        let sealed = AeadKey::new(Algorithm::XChaCha20Poly1305, &cache_key)
            .seal_with_nonce(&nonce, &aad, dek.expose_secret())
            .expect("nonce");
        let record = [&expiry.to_be_bytes()[..], &seals_at_put.to_be_bytes(), &sealed].concat();
        assert_eq!(hex(&record), c.get("record"), "{n}: record from the fields");

        // What the cache writes: exactly that one entry.
        let kv = MemKv::default();
        let limits = CacheLimits { max_age_secs, max_uses: 10 };
        let cache = DekCache::new(Box::new(kv.clone()), &cache_key, limits);
        cache.put(&mut Csprng::from_seed(seed(c)), ids.ctx(), &wrapped, &dek, now, seals_at_put);
        let stored: Vec<(String, String)> = kv.0.borrow().iter().map(|(k, v)| (k.clone(), hex(v))).collect();
        assert_eq!(stored, [(c.get("entry_key").to_string(), c.get("record").to_string())], "{n}");

        // A fresh cache over a store holding the frozen record reads the DEK back, and counts
        // uses from the record's seal count.
        let kv = MemKv::default();
        kv.0.borrow_mut().insert(c.get("entry_key").into(), c.hex("record"));
        let cache = DekCache::new(Box::new(kv.clone()), &cache_key, limits);
        let got = cache.get(ids.ctx(), &wrapped, now, Some(seals_at_put)).expect("a hit");
        assert_eq!(got.expose_secret(), dek.expose_secret(), "{n}: get");
        if let Some(over) = seals_at_put.checked_add(11) {
            assert!(cache.get(ids.ctx(), &wrapped, now, Some(over)).is_none(), "{n}: used up");
        }
    }
}
