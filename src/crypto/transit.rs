//! The Vault/OpenBao Transit spelling of Veil's tokens and keyed digests (docs/token-format.md,
//! "Transit ciphertexts"): `vault:v<key-version>:<base64(payload)>`, standard base64 with padding.
//!
//! A Transit ciphertext carries the same payload (`nonce ‖ ciphertext ‖ tag`), sealed under the
//! same key and AAD, as the Veil token of the scheme that the route names (`.../encrypt/{name}`):
//! the name is not written into the ciphertext because every Transit call names its key in the
//! path. [`to_token`] and [`from_token`] convert between the two spellings without any key.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use super::token::{self, MIN_SEALED_LEN};
use crate::ids::{KeyVersion, SchemeName};

/// Every Transit ciphertext and HMAC starts with this.
pub const PREFIX: &str = "vault:v";

/// Why a string is not a Transit ciphertext or HMAC. The messages never echo the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitFormatError {
    /// No `vault:` prefix.
    NoPrefix,
    /// A prefix, but not `v<version>:` with a canonical version from 1.
    BadVersion,
    /// The payload is not standard base64, or too short.
    BadPayload,
}

impl TransitFormatError {
    pub fn message(self) -> &'static str {
        match self {
            TransitFormatError::NoPrefix => "invalid ciphertext: no prefix",
            TransitFormatError::BadVersion => "invalid ciphertext: wrong version",
            TransitFormatError::BadPayload => "invalid ciphertext: not base64, or too short",
        }
    }
}

/// Splits `vault:v<N>:<rest>` into the version and `rest` (not yet decoded).
fn split(s: &str) -> Result<(KeyVersion, &str), TransitFormatError> {
    let rest = s.strip_prefix(PREFIX).ok_or(if s.starts_with("vault:") {
        TransitFormatError::BadVersion
    } else {
        TransitFormatError::NoPrefix
    })?;
    let (digits, payload) = rest.split_once(':').ok_or(TransitFormatError::BadVersion)?;
    let canonical = !digits.is_empty()
        && digits.len() <= 10
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    let version = canonical
        .then(|| digits.parse::<u32>().ok())
        .flatten()
        .and_then(|n| KeyVersion::new(n).ok())
        .ok_or(TransitFormatError::BadVersion)?;
    Ok((version, payload))
}

/// Reads `vault:v<N>:<base64>`: the key version and the decoded payload.
pub fn parse(s: &str) -> Result<(KeyVersion, Vec<u8>), TransitFormatError> {
    let (version, payload) = split(s)?;
    let sealed = STANDARD.decode(payload).map_err(|_| TransitFormatError::BadPayload)?;
    if sealed.len() < MIN_SEALED_LEN {
        return Err(TransitFormatError::BadPayload);
    }
    Ok((version, sealed))
}

/// Writes `vault:v<N>:<base64(bytes)>`.
pub fn encode(version: KeyVersion, bytes: &[u8]) -> String {
    let mut s = String::with_capacity(16 + bytes.len().div_ceil(3) * 4);
    s.push_str(PREFIX);
    s.push_str(&version.get().to_string());
    s.push(':');
    STANDARD.encode_string(bytes, &mut s);
    s
}

/// The Veil token that a Transit ciphertext of scheme `scheme` is (same payload, same AAD).
pub fn to_token(scheme: &SchemeName, ciphertext: &str) -> Result<String, TransitFormatError> {
    let (version, sealed) = parse(ciphertext)?;
    Ok(token::encode(scheme, version, &sealed))
}

/// The Transit spelling of a Veil token, and its key version (`None`: not a Veil token).
pub fn from_token(veil_token: &str) -> Option<(String, KeyVersion)> {
    let p = token::parse(veil_token).ok()?;
    Some((encode(p.key_version, &p.sealed), p.key_version))
}

/// Reads a Transit HMAC `vault:v<N>:<base64 of 32 bytes>`.
pub fn parse_hmac(s: &str) -> Result<(KeyVersion, Vec<u8>), TransitFormatError> {
    let (version, payload) = split(s)?;
    let mac = STANDARD.decode(payload).map_err(|_| TransitFormatError::BadPayload)?;
    Ok((version, mac))
}

/// The standard base64 (with padding) of `bytes`: how a Transit `context` becomes Veil's context
/// string, so that one context has one spelling whichever base64 variant the client sent.
pub fn canonical_b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes base64 as Transit clients send it: standard alphabet, padded or not; also the
/// URL-safe alphabet, which some clients produce.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE};
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::aead::{AeadKey, Algorithm};
    use crate::crypto::kdf;
    use crate::crypto::secret::SecretKey;
    use crate::crypto::testvec::{self, hex};
    use crate::ids::TenantId;

    fn v(n: u32) -> KeyVersion {
        KeyVersion::new(n).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn round_trips_and_refuses_other_spellings() {
        let sealed = [7u8; 40];
        let ct = encode(v(3), &sealed);
        assert!(ct.starts_with("vault:v3:"));
        assert_eq!(parse(&ct), Ok((v(3), sealed.to_vec())));
        let s = SchemeName::parse("pii").unwrap_or_else(|e| panic!("{e}"));
        let tok = to_token(&s, &ct).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(from_token(&tok), Some((ct.clone(), v(3))));
        for (bad, why) in [
            ("garbage", TransitFormatError::NoPrefix),
            ("vault:x1:AAAA", TransitFormatError::BadVersion),
            ("vault:v0:AAAA", TransitFormatError::BadVersion),
            ("vault:v01:AAAA", TransitFormatError::BadVersion),
            ("vault:v4294967296:AAAA", TransitFormatError::BadVersion),
            ("vault:v1", TransitFormatError::BadVersion),
            ("vault:v1:AAAA", TransitFormatError::BadPayload),
            ("vault:v1:!!!!", TransitFormatError::BadPayload),
        ] {
            assert_eq!(parse(bad), Err(why), "{bad}");
        }
    }

    /// Golden vectors (tests/vectors/veil-transit-v1.txt): a Transit ciphertext is the Veil
    /// token's payload under the same scheme key and AAD; the HMAC key has its own label.
    #[test]
    fn golden_transit_v1() {
        let cases = testvec::parse(include_str!("../../tests/vectors/veil-transit-v1.txt"));
        let mut n = 0;
        for c in &cases {
            let name = c.name();
            let dek = SecretKey::try_from_slice(&c.hex("dek")).unwrap_or_else(|| panic!("{name}: dek"));
            let t = TenantId::parse(c.get("tenant")).unwrap_or_else(|e| panic!("{e}"));
            let s = SchemeName::parse(c.get("scheme")).unwrap_or_else(|e| panic!("{e}"));
            let ver = v(c.get("version").parse().unwrap_or(0));
            match c.get("kind") {
                "ciphertext" => {
                    let alg = Algorithm::parse(c.get("algorithm")).unwrap_or_else(|| panic!("{name}"));
                    let context = match c.get("context_b64") {
                        "none" => None,
                        b64 => Some(canonical_b64(&decode_b64(b64).unwrap_or_else(|| panic!("{name}")))),
                    };
                    let key = AeadKey::new(alg, &kdf::scheme_data_key(&dek, &t, &s, ver));
                    let ad = token::aad(&t, &s, ver, None, context.as_deref());
                    let sealed = key
                        .seal_with_nonce(&c.hex("nonce"), &ad, &c.hex("plaintext"))
                        .unwrap_or_else(|_| panic!("{name}"));
                    let ct = encode(ver, &sealed);
                    assert_eq!(ct, c.get("ciphertext"), "{name}");
                    assert_eq!(to_token(&s, &ct).as_deref(), Ok(c.get("veil_token")), "{name}");
                    let (_, parsed) = parse(&ct).unwrap_or_else(|e| panic!("{e:?}"));
                    assert_eq!(key.open(&ad, &parsed).map(|p| p.to_vec()), Ok(c.hex("plaintext")), "{name}");
                }
                "hmac" => {
                    let k = kdf::scheme_transit_hmac_key(&dek, &t, &s, ver);
                    assert_eq!(hex(k.expose_secret()), c.get("hmac_key"), "{name}");
                    let mac = kdf::hmac_sha256(&k, &c.hex("input"));
                    assert_eq!(encode(ver, &mac), c.get("hmac"), "{name}");
                }
                other => panic!("unknown kind {other}"),
            }
            n += 1;
        }
        assert!(n >= 4, "{n}");
    }
}
