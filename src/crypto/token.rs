//! Veil's token format, version 1: `veil.1.<scheme>.<key-version>.<payload>`.
//!
//! The grammar, the AAD layout and the key-derivation labels are specified in
//! docs/token-format.md (included below) and pinned by tests/vectors/veil-token-v1.txt.
//! Parsing is strict (one spelling per token) and never panics on untrusted input.
//!
#![doc = include_str!("../../docs/token-format.md")]

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::aead::{AeadKey, Algorithm};
use super::rng::Csprng;
use super::{DecryptError, Fields};
use crate::ids::{KeyVersion, SchemeName, TenantId};

/// The token format version written by [`encode`] and the only one [`parse`] accepts.
pub const FORMAT_VERSION: u8 = 1;
/// Every token starts with this, followed by `.`.
pub const PREFIX: &str = "veil";
/// The AAD's purpose label, after the `veil` domain.
pub const AAD_LABEL: &str = "token-aad";
/// The shortest payload any algorithm can produce: a 12-byte nonce and a 16-byte tag.
pub const MIN_SEALED_LEN: usize = Algorithm::MIN_NONCE_LEN + Algorithm::TAG_LEN;

/// A syntactically valid token. Whether it decrypts is decided by [`unprotect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    pub scheme: SchemeName,
    pub key_version: KeyVersion,
    /// The decoded payload: `nonce ‖ ciphertext ‖ tag`.
    pub sealed: Vec<u8>,
}

/// Why a string is not a token. The messages never echo the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a Veil token, or not in the one canonical spelling.
    Malformed,
    /// A Veil token of a format version this build does not read.
    UnsupportedVersion,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "the value is not a well-formed Veil token",
            TokenError::UnsupportedVersion => "the token's format version is not supported",
        })
    }
}

impl std::error::Error for TokenError {}

/// A canonical decimal: 1–10 ASCII digits, no leading zero (so also not `0`).
fn canonical_decimal(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 10 || b[0] == b'0' || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.parse().ok()
}

/// Parses a token strictly: exactly `veil.1.<scheme>.<key-version>.<payload>`, ASCII only,
/// no whitespace, a canonical key version in 1..=4294967295, and canonical unpadded base64url
/// of at least 28 bytes.
pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
    use TokenError::{Malformed, UnsupportedVersion};
    if !token.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_')) {
        return Err(Malformed);
    }
    let mut head = token.splitn(3, '.');
    if head.next() != Some(PREFIX) {
        return Err(Malformed);
    }
    let format = head.next().ok_or(Malformed)?;
    if format != "1" {
        // A well-spelled other version is "unsupported"; anything else is just malformed.
        return Err(if format == "0" || canonical_decimal(format).is_some() {
            UnsupportedVersion
        } else {
            Malformed
        });
    }
    let mut rest = head.next().ok_or(Malformed)?.split('.');
    let (Some(scheme), Some(version), Some(payload), None) =
        (rest.next(), rest.next(), rest.next(), rest.next())
    else {
        return Err(Malformed);
    };
    let scheme = SchemeName::parse(scheme).map_err(|_| Malformed)?;
    let version = canonical_decimal(version).and_then(|v| u32::try_from(v).ok()).ok_or(Malformed)?;
    let key_version = KeyVersion::new(version).map_err(|_| Malformed)?;
    // URL_SAFE_NO_PAD rejects padding, characters outside the alphabet, impossible lengths
    // and set trailing bits, so every payload has exactly one spelling.
    let sealed = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Malformed)?;
    if sealed.len() < MIN_SEALED_LEN {
        return Err(Malformed);
    }
    Ok(ParsedToken { scheme, key_version, sealed })
}

/// Writes `veil.1.<scheme>.<version>.<base64url(sealed)>`.
pub fn encode(scheme: &SchemeName, version: KeyVersion, sealed: &[u8]) -> String {
    with_head(&head(scheme, version), sealed)
}

/// `head` followed by the unpadded base64url of `sealed`, in one allocation.
fn with_head(head: &str, sealed: &[u8]) -> String {
    let mut s = String::with_capacity(head.len() + sealed.len().div_ceil(3) * 4);
    s.push_str(head);
    URL_SAFE_NO_PAD.encode_string(sealed, &mut s);
    s
}

/// Everything of a token before its payload: `veil.1.<scheme>.<version>.`.
fn head(scheme: &SchemeName, version: KeyVersion) -> String {
    format!("{PREFIX}.{FORMAT_VERSION}.{}.{}.", scheme.as_str(), version.get())
}

/// The additional authenticated data of a token:
/// `LP("veil") ‖ LP("token-aad") ‖ u8(1) ‖ LP(tenant) ‖ LP(scheme) ‖ u32be(key version) ‖
/// OPT(subject) ‖ OPT(context)`, where `LP(x) = u64be(len x) ‖ x`, `OPT(None) = 00` and
/// `OPT(Some(x)) = 01 ‖ LP(x)` (so `None` ≠ `Some("")`).
pub fn aad(
    tenant: &TenantId,
    scheme: &SchemeName,
    version: KeyVersion,
    subject: Option<&str>,
    context: Option<&str>,
) -> Vec<u8> {
    Fields::new()
        .str(super::kdf::DOMAIN)
        .str(AAD_LABEL)
        .u8(FORMAT_VERSION)
        .str(tenant.as_str())
        .str(scheme.as_str())
        .u32(version.get())
        .opt_str(subject)
        .opt_str(context)
        .finish()
}

/// Encrypts one value into a token bound to tenant, scheme, key version, subject and context.
#[expect(clippy::too_many_arguments, reason = "the API's fixed call shape: each argument is one bound field")]
pub fn protect(
    key: &AeadKey,
    rng: &mut Csprng,
    tenant: &TenantId,
    scheme: &SchemeName,
    version: KeyVersion,
    subject: Option<&str>,
    context: Option<&str>,
    plaintext: &[u8],
) -> String {
    Sealer::new(key, tenant, scheme, version, subject, context).protect(rng, plaintext)
}

/// Protects many values under one binding (tenant, scheme, key version, subject, context):
/// the AAD and the token head are built once, and one buffer is reused for every value, so
/// each value costs a nonce, the AEAD and the base64 of its payload. Same tokens as [`protect`].
pub struct Sealer<'k> {
    key: &'k AeadKey,
    aad: Vec<u8>,
    head: String,
    /// `nonce ‖ ciphertext ‖ tag` of the value being sealed; briefly holds its plaintext.
    buf: Zeroizing<Vec<u8>>,
}

impl<'k> Sealer<'k> {
    pub fn new(
        key: &'k AeadKey,
        tenant: &TenantId,
        scheme: &SchemeName,
        version: KeyVersion,
        subject: Option<&str>,
        context: Option<&str>,
    ) -> Self {
        Sealer {
            key,
            aad: aad(tenant, scheme, version, subject, context),
            head: head(scheme, version),
            buf: Zeroizing::new(Vec::new()),
        }
    }

    /// One token for `plaintext`, with a fresh nonce from `rng`.
    pub fn protect(&mut self, rng: &mut Csprng, plaintext: &[u8]) -> String {
        self.key.seal_into(rng, &self.aad, plaintext, &mut self.buf);
        with_head(&self.head, &self.buf)
    }

    /// The same sealing spelled as a Transit ciphertext of `version` (the Sealer's), `vault:v<N>:`
    /// and the standard base64 of the payload ([`super::transit`]).
    pub fn protect_transit(&mut self, rng: &mut Csprng, version: KeyVersion, plaintext: &[u8]) -> String {
        self.key.seal_into(rng, &self.aad, plaintext, &mut self.buf);
        super::transit::encode(version, &self.buf)
    }
}

/// Decrypts a parsed token. `key` must be the scheme key of `token.scheme` at
/// `token.key_version`; any mismatch (key, tenant, subject, context, a changed byte) is the
/// same opaque [`DecryptError`].
pub fn unprotect(
    key: &AeadKey,
    tenant: &TenantId,
    token: &ParsedToken,
    subject: Option<&str>,
    context: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let ad = aad(tenant, &token.scheme, token.key_version, subject, context);
    key.open(&ad, &token.sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kdf;
    use crate::crypto::secret::SecretKey;
    use crate::crypto::testvec::{self, hex};

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }
    fn scheme(s: &str) -> SchemeName {
        SchemeName::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }
    fn ver(n: u32) -> KeyVersion {
        KeyVersion::new(n).unwrap_or_else(|e| panic!("{e}"))
    }
    /// `none` or a JSON string (so `""` is `Some("")`).
    fn opt_field(c: &testvec::Case, k: &str) -> Option<String> {
        match c.get(k) {
            "none" => None,
            s => Some(serde_json::from_str::<String>(s).unwrap_or_else(|e| panic!("{k}: {e}"))),
        }
    }

    #[test]
    fn golden_tokens_v1() {
        let cases = testvec::parse(include_str!("../../tests/vectors/veil-token-v1.txt"));
        assert!(cases.len() >= 8);
        let mut algs = std::collections::HashSet::new();
        for c in &cases {
            let name = c.name();
            let alg = Algorithm::parse(c.get("algorithm")).unwrap_or_else(|| panic!("{name}: algorithm"));
            algs.insert(alg);
            let dek = SecretKey::try_from_slice(&c.hex("dek")).unwrap_or_else(|| panic!("{name}: dek"));
            let (t, s, v) = (
                tenant(c.get("tenant")),
                scheme(c.get("scheme")),
                ver(c.get("version").parse().unwrap_or(0)),
            );
            let (subject, context) = (opt_field(c, "subject"), opt_field(c, "context"));
            let (subject, context) = (subject.as_deref(), context.as_deref());
            let pt = c.hex("plaintext");
            if let Some(text) = c.opt("plaintext_utf8") {
                let text: String = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(text.as_bytes(), &pt[..], "{name}: plaintext_utf8");
            }

            let sk = kdf::scheme_data_key(&dek, &t, &s, v);
            assert_eq!(hex(sk.expose_secret()), c.get("scheme_key"), "{name}: scheme_key");
            let ad = aad(&t, &s, v, subject, context);
            assert_eq!(hex(&ad), c.get("aad"), "{name}: aad");
            let key = AeadKey::new(alg, &sk);
            let sealed =
                key.seal_with_nonce(&c.hex("nonce"), &ad, &pt).unwrap_or_else(|_| panic!("{name}: nonce"));
            let token = encode(&s, v, &sealed);
            assert_eq!(token, c.get("token"), "{name}: token");

            let parsed = parse(&token).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((&parsed.scheme, parsed.key_version, &parsed.sealed), (&s, v, &sealed));
            let opened = unprotect(&key, &t, &parsed, subject, context).map(|p| p.to_vec());
            assert_eq!(opened, Ok(pt.clone()), "{name}: open");
        }
        assert_eq!(algs.len(), 3, "one case per algorithm at least");
    }

    /// Tokens of a data subject: sealed under the subject key (scheme key + subject secret),
    /// from vectors written by an independent implementation (tests/harness/veilformat.py).
    #[test]
    fn golden_subject_tokens_v1() {
        let cases = testvec::parse(include_str!("../../tests/vectors/veil-subject-v1.txt"));
        let mut n = 0;
        for c in cases.iter().filter(|c| c.get("kind") == "subject-token") {
            let name = c.name();
            let key = |f: &str| SecretKey::try_from_slice(&c.hex(f)).unwrap_or_else(|| panic!("{name}: {f}"));
            let (t, s, v) = (
                tenant(c.get("tenant")),
                scheme(c.get("scheme")),
                ver(c.get("version").parse().unwrap_or(0)),
            );
            let sk = kdf::scheme_data_key(&key("dek"), &t, &s, v);
            assert_eq!(hex(sk.expose_secret()), c.get("scheme_key"), "{name}");
            let subk = kdf::subject_key(&sk, &key("subject_secret"), c.get("subject_id"));
            assert_eq!(hex(subk.expose_secret()), c.get("subject_key"), "{name}");
            let context = opt_field(c, "context");
            let aead = AeadKey::new(Algorithm::Aes256Gcm, &subk);
            let ad = aad(&t, &s, v, Some(c.get("subject_id")), context.as_deref());
            let sealed = aead
                .seal_with_nonce(&c.hex("nonce"), &ad, &c.hex("plaintext"))
                .unwrap_or_else(|_| panic!("{name}"));
            assert_eq!(encode(&s, v, &sealed), c.get("token"), "{name}");
            let parsed = parse(c.get("token")).unwrap_or_else(|e| panic!("{name}: {e}"));
            let opened = unprotect(&aead, &t, &parsed, Some(c.get("subject_id")), context.as_deref());
            assert_eq!(opened.map(|p| p.to_vec()), Ok(c.hex("plaintext")), "{name}");
            // The scheme key alone (no subject secret) does not open it.
            let bare = AeadKey::new(Algorithm::Aes256Gcm, &sk);
            assert!(unprotect(&bare, &t, &parsed, Some(c.get("subject_id")), context.as_deref()).is_err());
            n += 1;
        }
        assert_eq!(n, 3);
    }

    /// A bound setup: key, tenant, scheme, version, subject, context, plaintext and token.
    struct Fixture {
        key: AeadKey,
        t: TenantId,
        token: String,
    }

    fn fixture(alg: Algorithm, rng: &mut Csprng) -> Fixture {
        let dek = SecretKey::from_bytes([0x42; 32]);
        let (t, s, v) = (tenant("acme"), scheme("pii"), ver(3));
        let key = AeadKey::new(alg, &kdf::scheme_data_key(&dek, &t, &s, v));
        let token = protect(&key, rng, &t, &s, v, Some("user-1"), Some("ctx"), "Zoë 🙂 secret".as_bytes());
        Fixture { key, t, token }
    }

    #[test]
    fn protect_unprotect_and_every_binding() {
        let mut rng = Csprng::from_seed([5; 32]);
        for alg in Algorithm::ALL {
            let f = fixture(alg, &mut rng);
            let p = parse(&f.token).unwrap_or_else(|e| panic!("{e}"));
            let ok = unprotect(&f.key, &f.t, &p, Some("user-1"), Some("ctx")).map(|p| p.to_vec());
            assert_eq!(ok, Ok("Zoë 🙂 secret".as_bytes().to_vec()));
            // Wrong tenant, subject, context (incl. None vs Some("")).
            for (t, sub, ctx) in [
                ("acme2", Some("user-1"), Some("ctx")),
                ("acme", Some("user-2"), Some("ctx")),
                ("acme", None, Some("ctx")),
                ("acme", Some("user-1"), Some("ctx2")),
                ("acme", Some("user-1"), None),
                ("acme", Some("user-1"), Some("")),
                ("acme", Some("user-1ctx"), Some("")),
            ] {
                assert_eq!(
                    unprotect(&f.key, &tenant(t), &p, sub, ctx),
                    Err(DecryptError),
                    "{t} {sub:?} {ctx:?}"
                );
            }
            // Wrong scheme or version in the token, with the same key.
            for (s, v) in [("pij", 3), ("pii", 4), ("pii", 2)] {
                let q = ParsedToken { scheme: scheme(s), key_version: ver(v), sealed: p.sealed.clone() };
                assert_eq!(unprotect(&f.key, &f.t, &q, Some("user-1"), Some("ctx")), Err(DecryptError));
            }
            // Wrong key (another scheme's key).
            let other = AeadKey::new(alg, &SecretKey::from_bytes([0x43; 32]));
            assert_eq!(unprotect(&other, &f.t, &p, Some("user-1"), Some("ctx")), Err(DecryptError));
        }
    }

    /// A batch's Sealer writes exactly the tokens that one `protect` call per value writes
    /// (same RNG stream), whatever the order of value lengths its reused buffer sees.
    #[test]
    fn sealer_matches_protect_per_value() {
        let values: [&[u8]; 5] = [&[0x61; 1024], b"", b"short", &[0xff; 64], &[0u8; 2048]];
        for alg in Algorithm::ALL {
            let dek = SecretKey::from_bytes([0x42; 32]);
            let (t, s, v) = (tenant("acme"), scheme("pii"), ver(7));
            let key = AeadKey::new(alg, &kdf::scheme_data_key(&dek, &t, &s, v));
            let (mut a, mut b) = (Csprng::from_seed([9; 32]), Csprng::from_seed([9; 32]));
            let mut sealer = Sealer::new(&key, &t, &s, v, Some("subj"), None);
            for value in values {
                let batch = sealer.protect(&mut a, value);
                let one = protect(&key, &mut b, &t, &s, v, Some("subj"), None, value);
                assert_eq!(batch, one, "{alg}, {} bytes", value.len());
                let p = parse(&batch).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!((p.scheme.as_str(), p.key_version), ("pii", v));
                let back = unprotect(&key, &t, &p, Some("subj"), None).map(|p| p.to_vec());
                assert_eq!(back, Ok(value.to_vec()), "{alg}, {} bytes", value.len());
                assert_eq!(unprotect(&key, &t, &p, None, None), Err(DecryptError));
            }
        }
    }

    /// Any single-character change or truncation is rejected by parse or by decryption.
    #[test]
    fn one_character_changed_or_truncated_fails() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
        let mut rng = Csprng::from_seed([6; 32]);
        for alg in Algorithm::ALL {
            let f = fixture(alg, &mut rng);
            let check = |s: &str| match parse(s) {
                Err(_) => {}
                Ok(p) => assert_eq!(
                    unprotect(&f.key, &f.t, &p, Some("user-1"), Some("ctx")),
                    Err(DecryptError),
                    "{s}"
                ),
            };
            let b = f.token.as_bytes();
            for i in 0..b.len() {
                for &c in alphabet.iter().filter(|&&c| c != b[i]) {
                    let mut m = b.to_vec();
                    m[i] = c;
                    check(&String::from_utf8_lossy(&m));
                }
                check(&f.token[..i]);
                check(&format!("{}{}", &f.token[..i], &f.token[i + 1..]));
            }
        }
    }

    fn good() -> String {
        encode(&scheme("pii"), ver(12), &[0xa5; 40])
    }

    #[test]
    fn parse_accepts_the_canonical_form() {
        let t = good();
        assert!(t.starts_with("veil.1.pii.12."), "{t}");
        let p = parse(&t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.scheme.as_str(), p.key_version.get(), p.sealed), ("pii", 12, vec![0xa5; 40]));
        let max = encode(&scheme("a"), ver(u32::MAX), &[0; 28]);
        assert_eq!(parse(&max).map(|p| p.key_version.get()), Ok(u32::MAX));
    }

    #[test]
    fn parse_rejects_malformed_forms() {
        use TokenError::{Malformed, UnsupportedVersion};
        let t = good();
        let payload = t.rsplit('.').next().unwrap_or_default().to_owned();
        let p28 = URL_SAFE_NO_PAD.encode([7u8; 28]);
        let p27 = URL_SAFE_NO_PAD.encode([7u8; 27]);
        // 40 bytes → 54 chars, the last carrying 2 unused bits: setting one is non-canonical.
        const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = B64.find(payload.chars().last().unwrap_or('A')).unwrap_or(0);
        let noncanon = format!("{}{}", &payload[..payload.len() - 1], char::from(B64.as_bytes()[last | 1]));
        assert!(URL_SAFE_NO_PAD.decode(&noncanon).is_err(), "test setup: {noncanon}");
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), Malformed),
            ("veil".into(), Malformed),
            ("veil.1".into(), Malformed),
            ("veil.1.pii.12".into(), Malformed),
            (format!(" {t}"), Malformed),
            (format!("{t} "), Malformed),
            (format!("{t}\n"), Malformed),
            (t.replacen(".pii.", ". pii.", 1), Malformed),
            (format!("{t}="), Malformed),
            (format!("veil.1.pii.12.{}==", URL_SAFE_NO_PAD.encode([1u8; 31])), Malformed),
            (format!("veil.1.pii.12.{noncanon}"), Malformed),
            (
                format!("veil.1.pii.12.{}", payload.replacen(|c: char| c.is_ascii_alphanumeric(), "+", 1)),
                Malformed,
            ),
            (
                format!("veil.1.pii.12.{}", payload.replacen(|c: char| c.is_ascii_alphanumeric(), "/", 1)),
                Malformed,
            ),
            (format!("veil.1.pii.12.{}", &payload[..payload.len() - 1]), Malformed), // impossible length
            (format!("veil.1.pii.012.{payload}"), Malformed),
            (format!("veil.1.pii.0.{payload}"), Malformed),
            (format!("veil.1.pii.+12.{payload}"), Malformed),
            (format!("veil.1.pii.-1.{payload}"), Malformed),
            (format!("veil.1.pii.4294967296.{payload}"), Malformed),
            (format!("veil.1.pii.99999999999999999999999.{payload}"), Malformed),
            (format!("veil.1.pii..{payload}"), Malformed),
            (format!("veil.1.pii.1e3.{payload}"), Malformed),
            (format!("veil.1.Pii.12.{payload}"), Malformed),
            (format!("veil.1..12.{payload}"), Malformed),
            (format!("veil.1.{}.12.{payload}", "a".repeat(65)), Malformed),
            (format!("veil.1.pii.12.{payload}.x"), Malformed),
            (format!("veil.1.pii.12.{payload}."), Malformed),
            ("veil.1.pii.12.".into(), Malformed),
            (format!("Veil.1.pii.12.{payload}"), Malformed),
            (format!("veil2.1.pii.12.{payload}"), Malformed),
            (format!("vault.1.pii.12.{payload}"), Malformed),
            (format!(".veil.1.pii.12.{payload}"), Malformed),
            (format!("veil.01.pii.12.{payload}"), Malformed),
            (format!("veil.v1.pii.12.{payload}"), Malformed),
            (format!("veil..pii.12.{payload}"), Malformed),
            (format!("veil.2.pii.12.{payload}"), UnsupportedVersion),
            (format!("veil.0.pii.12.{payload}"), UnsupportedVersion),
            ("veil.2.anything".into(), UnsupportedVersion),
            (format!("veil.1.pii.12.{p27}"), Malformed),
            (format!("veil.1.pii.12.{payload}\u{e9}"), Malformed),
            (format!("veil.1.p\u{ef}i.12.{payload}"), Malformed),
            (format!("veil.1.pii.12.{payload}\0"), Malformed),
            (format!("veil\u{ff0e}1.pii.12.{payload}"), Malformed),
        ];
        for (s, want) in &cases {
            assert_eq!(parse(s), Err(*want), "{s:?}");
        }
        assert!(parse(&format!("veil.1.pii.12.{p28}")).is_ok());
        // Messages never echo the input.
        for e in [Malformed, UnsupportedVersion] {
            assert!(!e.to_string().contains("veil."));
        }
    }

    #[test]
    fn aad_is_unambiguous() {
        let (t, s, v) = (tenant("acme"), scheme("pii"), ver(1));
        let all = [
            aad(&t, &s, v, None, None),
            aad(&t, &s, v, Some(""), None),
            aad(&t, &s, v, None, Some("")),
            aad(&t, &s, v, Some(""), Some("")),
            aad(&t, &s, v, Some("a"), Some("b")),
            aad(&t, &s, v, Some("ab"), Some("")),
            aad(&t, &s, v, Some(""), Some("ab")),
            aad(&t, &s, ver(2), None, None),
            aad(&tenant("acmepii"), &scheme("a"), v, None, None),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    /// Random strings and random mutations of valid tokens never panic.
    #[test]
    fn fuzzish_never_panics() {
        use rand_core::RngCore;
        let mut rng = Csprng::from_seed([8; 32]);
        let f = fixture(Algorithm::Aes256Gcm, &mut rng);
        let fx = fixture(Algorithm::XChaCha20Poly1305, &mut rng);
        let chars = b"veil.1-_09azAZ=+/ \x00\xff";
        for i in 0..20_000u32 {
            let len = (rng.next_u32() % 120) as usize;
            let mut b = vec![0u8; len];
            match i % 3 {
                0 => rng.fill(&mut b),
                1 => b.iter_mut().for_each(|x| *x = chars[(rng.next_u32() as usize) % chars.len()]),
                _ => {
                    b = if i % 2 == 0 { f.token.clone().into_bytes() } else { fx.token.clone().into_bytes() };
                    for _ in 0..=rng.next_u32() % 3 {
                        let pos = (rng.next_u32() as usize) % b.len();
                        b[pos] = chars[(rng.next_u32() as usize) % chars.len()];
                    }
                    b.truncate((rng.next_u32() as usize) % (b.len() + 1));
                }
            }
            let s = String::from_utf8_lossy(&b);
            if let Ok(p) = parse(&s) {
                assert!(p.sealed.len() >= MIN_SEALED_LEN);
                let _ = unprotect(&f.key, &f.t, &p, Some("user-1"), Some("ctx"));
                let _ = unprotect(&fx.key, &fx.t, &p, None, None);
            }
        }
    }
}
