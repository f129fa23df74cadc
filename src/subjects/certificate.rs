//! Erasure certificates (docs/erasure.md, "Certificates"): a JSON object whose `signature` is
//! Ed25519 (RFC 8032) over the canonical JSON of every other field, and the JWKS of `OKP` keys
//! that verifies it. Pinned by tests/vectors/veil-erasure-certificate-v1.txt.
//!
//! Canonical JSON here is RFC 8785 (JCS) for the values certificates hold (objects, nested
//! ones such as a scope certificate's `key_versions` too, arrays, strings, booleans, null and
//! integers): members sorted by key, no white space, strings
//! escaped minimally. serde_json's compact output of a `Value` (its maps are sorted) is exactly
//! that for these values, so it is what is signed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::crypto::sign::{SigningKey, VerifyingKey, SIGNATURE_LEN};

/// The certificate format version (the `version` field).
pub const FORMAT_VERSION: i64 = 1;
/// The only signature algorithm (the `alg` field).
pub const ALG: &str = "Ed25519";

/// The canonical bytes a certificate's signature covers: every field but `signature`.
pub fn signed_bytes(cert: &Map<String, Value>) -> Vec<u8> {
    let mut fields = cert.clone();
    fields.remove("signature");
    // Serialising a Value with string keys cannot fail.
    serde_json::to_vec(&Value::Object(fields)).unwrap_or_default()
}

/// Adds `issuer`, `key_id`, `alg` and `version` to `fields` and signs them.
pub fn sign(mut fields: Map<String, Value>, issuer: &str, key: &SigningKey, kid: &str) -> Map<String, Value> {
    fields.insert("issuer".into(), issuer.into());
    fields.insert("key_id".into(), kid.into());
    fields.insert("alg".into(), ALG.into());
    fields.insert("version".into(), FORMAT_VERSION.into());
    let sig = key.sign(&signed_bytes(&fields));
    fields.insert("signature".into(), URL_SAFE_NO_PAD.encode(sig).into());
    fields
}

/// Why a certificate does not verify; the messages name the rule, never a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    NotAnObject,
    UnsupportedAlg,
    UnknownKey,
    MalformedSignature,
    BadSignature,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyError::NotAnObject => "the certificate is not a JSON object",
            VerifyError::UnsupportedAlg => "the certificate's alg is not \"Ed25519\"",
            VerifyError::UnknownKey => "no verification key has the certificate's key_id",
            VerifyError::MalformedSignature => "the signature is not base64url of 64 bytes",
            VerifyError::BadSignature => {
                "the signature does not verify: the certificate was changed or not signed by this key"
            }
        })
    }
}

/// Verifies a certificate against the keys (kid, key) it may be signed by.
pub fn verify(cert: &Value, keys: &[(String, VerifyingKey)]) -> Result<(), VerifyError> {
    let obj = cert.as_object().ok_or(VerifyError::NotAnObject)?;
    if obj.get("alg").and_then(Value::as_str) != Some(ALG) {
        return Err(VerifyError::UnsupportedAlg);
    }
    let kid = obj.get("key_id").and_then(Value::as_str).ok_or(VerifyError::UnknownKey)?;
    let (_, key) = keys.iter().find(|(k, _)| k == kid).ok_or(VerifyError::UnknownKey)?;
    let sig = obj
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .filter(|s| s.len() == SIGNATURE_LEN)
        .ok_or(VerifyError::MalformedSignature)?;
    key.verify(&signed_bytes(obj), &sig).map_err(|_| VerifyError::BadSignature)
}

/// The JWKS (RFC 7517, RFC 8037) of the verification keys: `{"keys": [{"kty": "OKP",
/// "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid", "x"}]}`.
pub fn jwks(keys: &[(String, VerifyingKey)]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, k)| {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
                               "x": URL_SAFE_NO_PAD.encode(k.to_bytes())})
        })
        .collect();
    serde_json::json!({ "keys": keys })
}

/// Parses a JWKS of Ed25519 `OKP` keys, each with a `kid` (what [`jwks`] writes).
pub fn parse_jwks(doc: &str) -> Result<Vec<(String, VerifyingKey)>, &'static str> {
    let v: Value = serde_json::from_str(doc).map_err(|_| "not JSON")?;
    let keys = v.get("keys").and_then(Value::as_array).ok_or("no \"keys\" array")?;
    let mut out: Vec<(String, VerifyingKey)> = Vec::with_capacity(keys.len());
    for k in keys {
        if k.get("kty").and_then(Value::as_str) != Some("OKP")
            || k.get("crv").and_then(Value::as_str) != Some("Ed25519")
        {
            return Err("a key is not kty OKP, crv Ed25519");
        }
        let kid = k.get("kid").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or("a key has no kid")?;
        let x = k
            .get("x")
            .and_then(Value::as_str)
            .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
            .ok_or("a key's x is not base64url")?;
        let key = VerifyingKey::from_slice(&x).map_err(|_| "a key's x is not a valid Ed25519 public key")?;
        if out.iter().any(|(k, _)| k == kid) {
            return Err("two keys have the same kid");
        }
        out.push((kid.to_owned(), key));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret::SecretKey;
    use crate::crypto::testvec::{self, hex};

    /// Golden certificates: the canonical bytes, the signature and the verification, from a
    /// fixed seed (Ed25519 is deterministic). An independent Python check reads the same file
    /// (tests/integration/test_subjects.py).
    #[test]
    fn golden_certificates() {
        let cases = testvec::parse(include_str!("../../tests/vectors/veil-erasure-certificate-v1.txt"));
        assert!(cases.len() >= 2);
        for c in &cases {
            let name = c.name();
            let seed = SecretKey::try_from_slice(&c.hex("seed")).unwrap_or_else(|| panic!("{name}: seed"));
            let key = SigningKey::from_seed(&seed);
            assert_eq!(hex(&key.verifying_key().to_bytes()), c.get("public_key"), "{name}");
            let fields: Value =
                serde_json::from_str(c.get("fields")).unwrap_or_else(|e| panic!("{name}: {e}"));
            let Value::Object(fields) = fields else { panic!("{name}: fields") };
            let cert = sign(fields, c.get("issuer"), &key, c.get("kid"));
            assert_eq!(String::from_utf8_lossy(&signed_bytes(&cert)), c.get("signed"), "{name}");
            let whole = serde_json::to_string(&Value::Object(cert.clone())).unwrap_or_default();
            assert_eq!(whole, c.get("certificate"), "{name}");
            let keys = [(c.get("kid").to_owned(), key.verifying_key())];
            assert_eq!(verify(&Value::Object(cert.clone()), &keys), Ok(()), "{name}");
            // One changed field, an unknown kid, a missing signature.
            for (field, value) in
                [("tenant", Value::from("other")), ("erased_at", Value::from(1)), ("alg", "EdDSA".into())]
            {
                let mut bad = cert.clone();
                bad.insert(field.into(), value);
                assert!(verify(&Value::Object(bad), &keys).is_err(), "{name}: {field}");
            }
            let other = [("other".to_owned(), key.verifying_key())];
            assert_eq!(verify(&Value::Object(cert.clone()), &other), Err(VerifyError::UnknownKey));
            let mut unsigned = cert.clone();
            unsigned.remove("signature");
            assert_eq!(verify(&Value::Object(unsigned), &keys), Err(VerifyError::MalformedSignature));
        }
    }

    #[test]
    fn jwks_round_trips_and_refuses_bad_keys() {
        let a = SigningKey::from_seed(&SecretKey::from_bytes([7; 32])).verifying_key();
        let b = SigningKey::from_seed(&SecretKey::from_bytes([8; 32])).verifying_key();
        let keys = vec![("a".to_owned(), a), ("b".to_owned(), b)];
        let doc = jwks(&keys).to_string();
        assert_eq!(parse_jwks(&doc), Ok(keys));
        for bad in [
            "[]",
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"AA"}]}"#,
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}"#,
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"AA"}]}"#,
        ] {
            assert!(parse_jwks(bad).is_err(), "{bad}");
        }
        let twice = jwks(&[("a".to_owned(), a), ("a".to_owned(), b)]).to_string();
        assert_eq!(parse_jwks(&twice), Err("two keys have the same kid"));
    }
}
