//! Public verification keys: JWK sets (RFC 7517/7518/8037) and single PEM keys, parsed once into
//! jwt-simple's typed keys. Each key is bound to exactly one JWS algorithm, which is what stops
//! algorithm confusion: a key is only ever used with the algorithm its type (and `alg`) allows.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use jwt_simple::prelude::{ES256PublicKey, Ed25519PublicKey, RS256PublicKey};
use serde::Deserialize;

use super::keys::{Alg, PublicKey};

/// Smallest RSA modulus accepted, in bits (NIST SP 800-131A: 2048).
const MIN_RSA_BITS: usize = 2048;

/// Base64url as found in JWKs: padding tolerated (some IdPs emit it), alphabet strict.
const JWK_B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One verification key with the `kid` that selects it.
#[derive(Clone)]
pub(crate) struct VerificationKey {
    pub(crate) kid: Option<String>,
    pub(crate) key: PublicKey,
}

/// The keys from one source (inline JWKS + PEM, or a fetched JWKS).
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerificationKey>,
}

/// Which keys of a set a token may be verified with.
pub(crate) enum Selection<'a> {
    /// Keys whose `kid` and algorithm fit the token, to try in order.
    Found(Vec<&'a VerificationKey>),
    /// The token's `kid` names a key of this set, but for another algorithm.
    WrongAlgorithm,
    /// Nothing in this set fits.
    NotFound,
}

impl KeySet {
    pub(crate) fn push(&mut self, key: VerificationKey) {
        self.keys.push(key);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys for a token with header `alg` and `kid`. A `kid` selects the keys carrying it; if no
    /// key carries it, keys without a `kid` (a PEM key) are candidates. No `kid`: every key of
    /// the right type.
    pub(crate) fn select(&self, alg: Alg, kid: Option<&str>) -> Selection<'_> {
        if let Some(kid) = kid {
            let named: Vec<_> = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if !named.is_empty() {
                let fitting: Vec<_> = named.into_iter().filter(|k| k.key.alg() == alg).collect();
                return if fitting.is_empty() {
                    Selection::WrongAlgorithm
                } else {
                    Selection::Found(fitting)
                };
            }
            let unnamed: Vec<_> =
                self.keys.iter().filter(|k| k.kid.is_none() && k.key.alg() == alg).collect();
            return if unnamed.is_empty() { Selection::NotFound } else { Selection::Found(unnamed) };
        }
        let fitting: Vec<_> = self.keys.iter().filter(|k| k.key.alg() == alg).collect();
        if fitting.is_empty() {
            Selection::NotFound
        } else {
            Selection::Found(fitting)
        }
    }
}

/// How to treat a key of a supported type whose material is broken.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// Configured by the operator: a broken key is a configuration error.
    Strict,
    /// Fetched from an IdP: skip the broken key, keep the others.
    Lenient,
}

#[derive(Deserialize)]
struct JwkSetDoc {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a JWK Set. Keys not meant for signatures (`use` ≠ `sig`, `key_ops` without `verify`),
/// of unsupported types/curves (including `oct`), or declaring another `alg` are skipped.
/// The error text names the key by position and `kid`, never its material.
pub(crate) fn parse_jwks(doc: &str, strictness: Strictness) -> Result<KeySet, String> {
    let doc: JwkSetDoc = serde_json::from_str(doc)
        .map_err(|_| "not a JWK Set (a JSON object with a \"keys\" array)".to_owned())?;
    let mut set = KeySet::default();
    for (i, value) in doc.keys.into_iter().enumerate() {
        match parse_jwk(value) {
            Ok(Some(key)) => set.push(key),
            Ok(None) => {}
            Err(reason) if strictness == Strictness::Strict => return Err(format!("key #{i}: {reason}")),
            Err(_) => {}
        }
    }
    Ok(set)
}

/// One JWK: `Ok(None)` when it is not a key we use, `Err` when it should be and is broken.
fn parse_jwk(value: serde_json::Value) -> Result<Option<VerificationKey>, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "malformed JWK".to_owned())?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if jwk.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify")) {
        return Ok(None);
    }
    let named = |what: &str| match &jwk.kid {
        Some(kid) => format!("{what} (kid {kid:?})"),
        None => what.to_owned(),
    };
    let alg_is = |expected: &[&str]| jwk.alg.as_deref().is_none_or(|a| expected.contains(&a));
    let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            if !alg_is(&["RS256"]) {
                return Ok(None);
            }
            let n = b64_member(jwk.n.as_deref()).ok_or_else(|| named("RSA key without a valid \"n\""))?;
            let e = b64_member(jwk.e.as_deref()).ok_or_else(|| named("RSA key without a valid \"e\""))?;
            PublicKey::Rs256(Box::new(rsa_key(&n, &e).map_err(&named)?))
        }
        ("EC", Some("P-256")) => {
            if !alg_is(&["ES256"]) {
                return Ok(None);
            }
            let x = b64_member(jwk.x.as_deref()).filter(|x| x.len() == 32);
            let y = b64_member(jwk.y.as_deref()).filter(|y| y.len() == 32);
            let (Some(x), Some(y)) = (x, y) else {
                return Err(named("P-256 key without 32-byte \"x\" and \"y\""));
            };
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            PublicKey::Es256(
                ES256PublicKey::from_bytes(&point).map_err(|_| named("P-256 key not on the curve"))?,
            )
        }
        ("OKP", Some("Ed25519")) => {
            if !alg_is(&["EdDSA", "Ed25519"]) {
                return Ok(None);
            }
            let x = b64_member(jwk.x.as_deref())
                .filter(|x| x.len() == 32)
                .ok_or_else(|| named("Ed25519 key without a 32-byte \"x\""))?;
            PublicKey::EdDsa(Ed25519PublicKey::from_bytes(&x).map_err(|_| named("invalid Ed25519 key"))?)
        }
        _ => return Ok(None),
    };
    Ok(Some(VerificationKey { kid: jwk.kid, key }))
}

fn b64_member(value: Option<&str>) -> Option<Vec<u8>> {
    JWK_B64.decode(value?).ok().filter(|v| !v.is_empty())
}

fn rsa_key(n: &[u8], e: &[u8]) -> Result<RS256PublicKey, &'static str> {
    if rsa_bits(n) < MIN_RSA_BITS {
        return Err("RSA modulus shorter than 2048 bits");
    }
    RS256PublicKey::from_components(n, e).map_err(|_| "invalid RSA key")
}

fn rsa_bits(n: &[u8]) -> usize {
    let n = &n[n.iter().take_while(|&&b| b == 0).count()..];
    match n.first() {
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

/// Parses one PEM public key (SubjectPublicKeyInfo, or PKCS#1 for RSA): RSA → RS256,
/// P-256 → ES256, Ed25519 → EdDSA.
pub(crate) fn parse_pem(pem: &str) -> Result<VerificationKey, String> {
    let key = if let Ok(k) = RS256PublicKey::from_pem(pem) {
        let c = k.to_components();
        PublicKey::Rs256(Box::new(rsa_key(&c.n, &c.e).map_err(str::to_owned)?))
    } else if let Ok(k) = ES256PublicKey::from_pem(pem) {
        PublicKey::Es256(k)
    } else if let Ok(k) = Ed25519PublicKey::from_pem(pem) {
        PublicKey::EdDsa(k)
    } else {
        return Err("not an RSA, P-256 or Ed25519 public key in PEM".to_owned());
    };
    Ok(VerificationKey { kid: None, key })
}

/// Labels that derive the JWKS cache's keys from `jwt_cache_key` (HMAC-SHA256(secret, label)).
const URL_CACHE_SLOT_LABEL: &[u8] = b"veil/v1/jwks-cache/slot";
const URL_CACHE_SEAL_LABEL: &[u8] = b"veil/v1/jwks-cache/seal";
const URL_CACHE_AAD_LABEL: &[u8] = b"veil/v1/jwks-cache/entry";
const URL_CACHE_PREFIX: &str = "veil/jwks/v1/";

/// The JWKS URL's document and the time of the last fetch attempt, kept in the host key-value
/// store (docs/auth.md § JWKS URL). The store is untrusted: both entries are named by
/// HMAC-SHA256 of the URL and sealed (XChaCha20-Poly1305) with their name and time as AAD, under
/// keys derived from `jwt_cache_key`; an entry that does not open is treated as absent.
pub(crate) struct UrlCache {
    kv: Box<dyn crate::kv::KeyValue>,
    slot_key: zeroize::Zeroizing<[u8; 32]>,
    seal: crate::crypto::aead::AeadKey,
    rng: std::cell::RefCell<crate::crypto::rng::Csprng>,
    /// How long a fetched document is used (`jwt_jwks_cache_secs`).
    pub(crate) ttl_secs: u64,
    /// At most one fetch is attempted per this many seconds (`jwt_jwks_refetch_secs`).
    pub(crate) refetch_secs: u64,
}

/// Which of the two entries of a URL.
#[derive(Clone, Copy)]
enum Entry {
    Document,
    Attempt,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Document => "doc",
            Entry::Attempt => "attempt",
        }
    }
}

impl UrlCache {
    pub(crate) fn new(
        kv: Box<dyn crate::kv::KeyValue>,
        secret: &crate::crypto::secret::SecretKey,
        rng: crate::crypto::rng::Csprng,
        ttl_secs: u64,
        refetch_secs: u64,
    ) -> Self {
        use crate::crypto::secret::SecretKey;
        let seal = SecretKey::from_bytes(super::hmac_sha256(secret.expose_secret(), &[URL_CACHE_SEAL_LABEL]));
        Self {
            kv,
            slot_key: zeroize::Zeroizing::new(super::hmac_sha256(
                secret.expose_secret(),
                &[URL_CACHE_SLOT_LABEL],
            )),
            seal: crate::crypto::aead::AeadKey::new(crate::crypto::aead::Algorithm::XChaCha20Poly1305, &seal),
            rng: std::cell::RefCell::new(rng),
            ttl_secs,
            refetch_secs,
        }
    }

    fn slot(&self, entry: Entry, url: &str) -> String {
        let mac = super::hmac_sha256(&self.slot_key[..], &[url.as_bytes()]);
        format!("{URL_CACHE_PREFIX}{}/{}", entry.name(), super::hex32(&mac))
    }

    fn aad(slot: &str, url: &str, at: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(URL_CACHE_AAD_LABEL.len() + slot.len() + url.len() + 24);
        aad.extend_from_slice(URL_CACHE_AAD_LABEL);
        for part in [slot.as_bytes(), url.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(&at.to_be_bytes());
        aad
    }

    /// An entry's time and contents, if it opens and is not from the future.
    fn read(&self, entry: Entry, url: &str, now: u64) -> Option<(u64, zeroize::Zeroizing<Vec<u8>>)> {
        let slot = self.slot(entry, url);
        let bytes = self.kv.get(&slot).ok()??;
        let (at, sealed) = bytes.split_first_chunk::<8>()?;
        let at = u64::from_be_bytes(*at);
        let plain = self.seal.open(&Self::aad(&slot, url, at), sealed).ok()?;
        (at <= now).then_some((at, plain))
    }

    fn write(&self, entry: Entry, url: &str, at: u64, plain: &[u8]) {
        let slot = self.slot(entry, url);
        let sealed = self.seal.seal(&mut self.rng.borrow_mut(), &Self::aad(&slot, url, at), plain);
        let mut record = Vec::with_capacity(8 + sealed.len());
        record.extend_from_slice(&at.to_be_bytes());
        record.extend_from_slice(&sealed);
        let _ = self.kv.set(&slot, &record);
    }

    /// The document fetched less than `ttl_secs` ago, if any.
    pub(crate) fn document(&self, url: &str, now: u64) -> Option<String> {
        let (at, plain) = self.read(Entry::Document, url, now)?;
        if now.saturating_sub(at) >= self.ttl_secs {
            return None;
        }
        String::from_utf8(plain.to_vec()).ok()
    }

    pub(crate) fn store_document(&self, url: &str, now: u64, doc: &str) {
        self.write(Entry::Document, url, now, doc.as_bytes());
    }

    /// Whether a fetch was attempted less than `refetch_secs` ago (the negative cache).
    pub(crate) fn attempted_recently(&self, url: &str, now: u64) -> bool {
        self.read(Entry::Attempt, url, now).is_some_and(|(at, _)| now.saturating_sub(at) < self.refetch_secs)
    }

    pub(crate) fn record_attempt(&self, url: &str, now: u64) {
        self.write(Entry::Attempt, url, now, b"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_bits_counts_from_the_top_set_bit() {
        assert_eq!(rsa_bits(&[]), 0);
        assert_eq!(rsa_bits(&[0, 0, 1]), 1);
        assert_eq!(rsa_bits(&[0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0, 0x7f, 0]), 15);
    }

    #[test]
    fn unusable_keys_are_skipped_and_broken_ones_refused_when_strict() {
        let doc = r#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
            {"kty":"EC","crv":"P-384","x":"AA","y":"AA"},
            {"kty":"OKP","crv":"X25519","x":"AA"},
            {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","alg":"PS256","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","key_ops":["encrypt"],"n":"AQAB","e":"AQAB"}
        ]}"#;
        assert!(parse_jwks(doc, Strictness::Strict).expect("only skipped keys").is_empty());
        let broken = r#"{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]}"#;
        let err = parse_jwks(broken, Strictness::Strict).err().expect("short modulus refused");
        assert!(err.contains("2048"), "{err}");
        assert!(parse_jwks(broken, Strictness::Lenient).expect("skipped").is_empty());
        assert!(parse_jwks("{\"keys\":{}}", Strictness::Lenient).is_err());
    }
}
