//! Data subjects (DESIGN §4, docs/erasure.md): subject ids, their keyed digests, the settings
//! of subject keys and erasure certificates. The work (protect with a subject, erase) is in
//! [`crate::ops`]; the certificate format (canonical JSON, Ed25519, JWKS) is [`certificate`].

pub mod certificate;

use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::crypto::kdf;
use crate::crypto::secret::SecretKey;
use crate::crypto::sign::{SigningKey, VerifyingKey};
use crate::ids::TenantId;
use crate::vars::{trimmed, ConfigError, Variables};

/// Longest subject id accepted, in characters (Unicode scalar values, as JSON Schema counts).
pub const MAX_SUBJECT_CHARS: usize = 256;
/// Longest `erasure_signing_kid`, in bytes.
pub const MAX_KID_BYTES: usize = 64;
/// The issuer named in certificates when `erasure_issuer` is unset.
pub const DEFAULT_ISSUER: &str = "veil";

/// A data subject's id as the caller gives it: 1–256 characters, otherwise opaque. It is
/// never stored: the store only sees its [`SubjectDigest`].
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectId(String);

impl SubjectId {
    /// Checks the length; the message never echoes the id.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("subject is empty");
        }
        if s.len() > MAX_SUBJECT_CHARS && s.chars().count() > MAX_SUBJECT_CHARS {
            return Err("subject is longer than 256 characters");
        }
        Ok(SubjectId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A subject id is personal data: it is not printed.
impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectId(..)")
    }
}

/// HMAC-SHA256 of a subject id under its tenant's subject digest key: how the store finds a
/// subject, and what an erasure certificate names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectDigest(pub [u8; 32]);

impl SubjectDigest {
    /// Lower-case hex, as in certificates.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The variables of subjects and erasure (docs/configuration.md): read on first use, checked
/// for form when read; a missing secret is an error only for the operation that needs it.
pub struct Settings {
    digest_root: Option<SecretKey>,
    signing: Option<(SigningKey, String)>,
    pub issuer: String,
    /// Public keys of earlier signing keys (`erasure_previous_keys`), published beside the current one.
    previous: Vec<(String, VerifyingKey)>,
}

fn b64_key(vars: &dyn Variables, name: &str) -> Result<Option<SecretKey>, ConfigError> {
    let Some(v) = vars.get(name).map(Zeroizing::new) else { return Ok(None) };
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|_| ConfigError(format!("variable {name} must be base64 of 32 bytes")))?,
    );
    SecretKey::try_from_slice(&raw)
        .map(Some)
        .ok_or_else(|| ConfigError(format!("variable {name} must be base64 of 32 bytes")))
}

impl Settings {
    /// Reads `subject_digest_key`, `erasure_signing_key`, `erasure_signing_kid`,
    /// `erasure_issuer` and `erasure_previous_keys`.
    pub fn load(vars: &dyn Variables) -> Result<Settings, ConfigError> {
        let digest_root = b64_key(vars, "subject_digest_key")?;
        let seed = b64_key(vars, "erasure_signing_key")?;
        let kid = trimmed(vars, "erasure_signing_kid");
        let signing = match (seed, kid) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(ConfigError(
                    "variable erasure_signing_kid must be set when erasure_signing_key is".into(),
                ))
            }
            (Some(seed), Some(kid)) => {
                check_kid("erasure_signing_kid", &kid)?;
                Some((SigningKey::from_seed(&seed), kid))
            }
        };
        let issuer = trimmed(vars, "erasure_issuer").unwrap_or_else(|| DEFAULT_ISSUER.into());
        if issuer.len() > 256 || issuer.chars().any(char::is_control) {
            return Err(ConfigError(
                "variable erasure_issuer must be at most 256 printable characters".into(),
            ));
        }
        let previous = match trimmed(vars, "erasure_previous_keys") {
            None => Vec::new(),
            Some(doc) => certificate::parse_jwks(&doc).map_err(|why| {
                ConfigError(format!("variable erasure_previous_keys is not an Ed25519 JWKS: {why}"))
            })?,
        };
        if let Some((_, kid)) = &signing {
            if previous.iter().any(|(k, _)| k == kid) {
                return Err(ConfigError(
                    "variable erasure_previous_keys repeats the kid of erasure_signing_kid".into(),
                ));
            }
        }
        Ok(Settings { digest_root, signing, issuer, previous })
    }

    /// The tenant's subject digest key; `misconfigured` without `subject_digest_key`.
    pub fn digest_key(&self, tenant: &TenantId) -> Result<SecretKey, ConfigError> {
        let root = self.digest_root.as_ref().ok_or_else(|| {
            ConfigError("subjects need the variable subject_digest_key (base64 of 32 bytes)".into())
        })?;
        Ok(kdf::subject_digest_key(root, tenant))
    }

    /// The digest of `subject` in `tenant`.
    pub fn digest(&self, tenant: &TenantId, subject: &SubjectId) -> Result<SubjectDigest, ConfigError> {
        Ok(SubjectDigest(kdf::subject_digest(&self.digest_key(tenant)?, subject.as_str())))
    }

    /// The signing key and its kid; `misconfigured` without `erasure_signing_key`: Veil never
    /// hands out an unsigned certificate.
    pub fn signer(&self) -> Result<(&SigningKey, &str), ConfigError> {
        self.signing.as_ref().map(|(k, kid)| (k, kid.as_str())).ok_or_else(|| {
            ConfigError(
                "erasure needs the variables erasure_signing_key (base64 of a 32-byte Ed25519 seed) \
                 and erasure_signing_kid"
                    .into(),
            )
        })
    }

    /// Every verification key to publish: the current one first, then the earlier ones.
    pub fn verification_keys(&self) -> Vec<(String, VerifyingKey)> {
        let mut keys: Vec<(String, VerifyingKey)> =
            self.signing.iter().map(|(k, kid)| (kid.clone(), k.verifying_key())).collect();
        keys.extend(self.previous.iter().cloned());
        keys
    }
}

fn check_kid(name: &str, kid: &str) -> Result<(), ConfigError> {
    let ok = !kid.is_empty()
        && kid.len() <= MAX_KID_BYTES
        && kid.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError(format!("variable {name} must be 1-{MAX_KID_BYTES} characters of [A-Za-z0-9._-]")))
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("subjects::Settings")
            .field("subject_digest_key", &self.digest_root.as_ref().map(|_| "<secret>"))
            .field("erasure_signing_kid", &self.signing.as_ref().map(|(_, kid)| kid))
            .field("issuer", &self.issuer)
            .field("previous_keys", &self.previous.len())
            .finish()
    }
}

/// [`Settings`] loaded at once or on first use (a request without subjects reads none of them).
pub type LazySettings = crate::vars::Lazy<Settings>;

impl crate::vars::Load for Settings {
    fn load(vars: &dyn Variables) -> Result<Self, ConfigError> {
        Settings::load(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::tests::MapVars;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn subject_ids_are_1_to_256_characters() {
        assert!(SubjectId::parse("").is_err());
        assert!(SubjectId::parse(&"s".repeat(256)).is_ok());
        assert!(SubjectId::parse(&"s".repeat(257)).is_err());
        assert!(SubjectId::parse(&"é".repeat(256)).is_ok());
        assert!(SubjectId::parse(&"é".repeat(257)).is_err());
        let id = SubjectId::parse("customer-42").map(|s| format!("{s:?}"));
        assert_eq!(id.as_deref(), Ok("SubjectId(..)"));
    }

    #[test]
    fn missing_secrets_are_errors_only_when_used() {
        let s = Settings::load(&MapVars::default()).expect("nothing set is fine");
        let t = TenantId::parse("t").expect("tenant");
        assert!(s.digest_key(&t).is_err());
        assert!(s.signer().is_err());
        assert!(s.verification_keys().is_empty());
        assert_eq!(s.issuer, "veil");
    }

    #[test]
    fn settings_are_checked_and_secrets_hidden() {
        let ok = Settings::load(
            &MapVars::default()
                .with("subject_digest_key", KEY)
                .with("erasure_signing_key", KEY)
                .with("erasure_signing_kid", "erasure-2026"),
        )
        .expect("settings");
        assert_eq!(ok.signer().map(|(_, kid)| kid.to_owned()).ok().as_deref(), Some("erasure-2026"));
        assert!(!format!("{ok:?}").contains(KEY));
        for (k, v) in [
            ("subject_digest_key", "AAEC"),
            ("subject_digest_key", "not base64!"),
            ("erasure_signing_key", "AAEC"),
            ("erasure_signing_kid", "a b"),
            ("erasure_previous_keys", "{}"),
        ] {
            let vars = MapVars::default()
                .with("erasure_signing_key", KEY)
                .with("erasure_signing_kid", "k1")
                .with(k, v);
            let e = Settings::load(&vars).map(|_| ()).expect_err(k);
            assert!(!e.0.contains(v), "{e}");
        }
        assert!(Settings::load(&MapVars::default().with("erasure_signing_key", KEY)).is_err(), "kid needed");
    }
}
