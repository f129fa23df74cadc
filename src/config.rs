//! Deployment configuration, read from Spin variables once per request (DESIGN §12). This module
//! only composes: each provider reads its own variables ([`crate::kms::Settings`],
//! [`crate::kms::cache::Settings`]), and the parsing rules live in [`crate::vars`].

use std::fmt;
use std::rc::Rc;

use zeroize::Zeroizing;

use crate::auth::AuthConfig;
use crate::kms::{self, KekSettings};
use crate::scheme::{KekRef, Policy};
use crate::subjects;
use crate::vars::{parse_bool, parse_limit};
use crate::vars::{ConfigError, Load as _, Variables};

/// Request limits (docs/api.md § Limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: 1 << 20, max_batch: 1000, max_value_bytes: 64 << 10 }
    }
}

/// Hard ceilings on what the limits may be configured to, so a typo cannot disable them.
pub const MAX_BODY_CEILING: usize = 64 << 20;
pub const MAX_BATCH_CEILING: usize = 100_000;

/// The largest `max_seals_per_key` accepted: the largest per-algorithm bound (2^48).
pub const MAX_SEALS_CEILING: u64 = 1 << 48;

/// Everything a request needs to know about the deployment.
pub struct Config {
    pub dev_mode: bool,
    /// base64 of the dev-only local KEK (`local_kek`), still encoded; decoded only when used.
    pub local_kek_b64: Option<Zeroizing<String>>,
    pub database_url: Option<Zeroizing<String>>,
    pub limits: Limits,
    pub auth: AuthConfig,
    /// AWS KMS and Azure Key Vault settings (docs/kms.md), read when a vault is first needed.
    pub kms: kms::LazySettings,
    /// The opt-in DEK cache (`dek_cache*`); `None` when off.
    pub dek_cache: Option<kms::cache::Settings>,
    /// Subject digests and erasure signing (`subject_digest_key`, `erasure_*`), read on first use.
    pub subjects: subjects::LazySettings,
    /// `max_seals_per_key`: rotate a scheme once its current key version has sealed this many
    /// values, if that is below the algorithm's own bound ([`crate::crypto::aead::Algorithm::max_seals`]).
    pub max_seals_per_key: Option<u64>,
    /// The audit log's master key (`audit_master_key`, docs/audit.md).
    pub audit: crate::audit::Settings,
    /// The Transit-compatible routes (`transit_*`, docs/transit.md), read when a path is not one
    /// of the native routes.
    pub transit: TransitLazy,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("dev_mode", &self.dev_mode)
            .field("local_kek", &self.local_kek_b64.as_ref().map(|_| "<secret>"))
            .field("database_url", &self.database_url.as_ref().map(|_| "<secret>"))
            .field("limits", &self.limits)
            .field("kms", &self.kms)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// How many values a key version of `algorithm` may seal before the scheme rotates.
    pub fn seal_limit(&self, algorithm: crate::crypto::aead::Algorithm) -> u64 {
        let bound = algorithm.max_seals();
        self.max_seals_per_key.map_or(bound, |n| n.min(bound))
    }

    /// Reads and checks every variable now.
    pub fn load(vars: &dyn Variables) -> Result<Config, ConfigError> {
        Self::load_with(vars, || {
            Ok((
                kms::LazySettings::loaded(kms::Settings::load(vars)?),
                subjects::LazySettings::loaded(subjects::Settings::load(vars)?),
                TransitLazy::loaded(TransitSettings::load(vars)?),
            ))
        })
    }

    /// Like [`Config::load`], but the KMS variables are read when a vault is first needed: the
    /// component's per-request path, where each variable is a host call.
    pub fn load_deferred(vars: Rc<dyn Variables>) -> Result<Config, ConfigError> {
        Self::load_with(vars.as_ref(), || {
            Ok((
                kms::LazySettings::deferred(vars.clone()),
                subjects::LazySettings::deferred(vars.clone()),
                TransitLazy::deferred(vars.clone()),
            ))
        })
    }

    /// What the KEK providers of a request are built from ([`kms::Keks`]).
    pub fn kek_settings(&self) -> KekSettings<'_> {
        KekSettings {
            dev_mode: self.dev_mode,
            local_kek_b64: self.local_kek_b64.as_deref().map(String::as_str),
            vaults: &self.kms,
        }
    }

    /// Everything but the vault settings, which `kms` provides (read now or deferred) once the
    /// rest has been checked.
    fn load_with(
        vars: &dyn Variables,
        lazy: impl FnOnce() -> Result<(kms::LazySettings, subjects::LazySettings, TransitLazy), ConfigError>,
    ) -> Result<Config, ConfigError> {
        let dev_mode = parse_bool("dev_mode", vars.get("dev_mode"))?;
        let d = Limits::default();
        let limits = Limits {
            max_body_bytes: parse_limit(vars, "max_body_bytes", d.max_body_bytes, MAX_BODY_CEILING)?,
            max_batch: parse_limit(vars, "max_batch", d.max_batch, MAX_BATCH_CEILING)?,
            max_value_bytes: parse_limit(vars, "max_value_bytes", d.max_value_bytes, MAX_BODY_CEILING)?,
        };
        let leeway_secs = 60;
        let local_kek_b64 = vars.get("local_kek").map(Zeroizing::new);
        let token_cache_key = token_cache_key(vars, dev_mode, local_kek_b64.as_deref().map(String::as_str))?;
        let auth = AuthConfig {
            dev_mode,
            hs256_secret: vars.get("jwt_hs256_secret").map(|s| Zeroizing::new(s.into_bytes())),
            jwks_inline: vars.get("jwt_jwks"),
            public_key_pem: vars.get("jwt_public_key_pem"),
            jwks_url: vars.get("jwt_jwks_url"),
            issuer: vars.get("jwt_issuer"),
            audience: vars.get("jwt_audience"),
            tenant_claim: vars.get("jwt_tenant_claim").unwrap_or_else(|| "tenant".into()),
            roles_claim: vars.get("jwt_roles_claim").unwrap_or_else(|| "roles".into()),
            leeway_secs,
            max_lifetime_secs: match vars.get("jwt_max_lifetime_secs").filter(|v| !v.trim().is_empty()) {
                None => None,
                Some(v) => Some(
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=crate::auth::MAX_TOKEN_LIFETIME_CEILING_SECS).contains(n))
                        .ok_or_else(|| {
                            ConfigError(format!(
                                "variable jwt_max_lifetime_secs must be a whole number from 1 to {}",
                                crate::auth::MAX_TOKEN_LIFETIME_CEILING_SECS
                            ))
                        })?,
                ),
            },
            jwks_cache_secs: parse_secs(
                vars,
                "jwt_jwks_cache_secs",
                crate::auth::DEFAULT_JWKS_CACHE_SECS,
                1,
                86_400,
            )?,
            jwks_refetch_secs: parse_secs(
                vars,
                "jwt_jwks_refetch_secs",
                crate::auth::DEFAULT_JWKS_REFETCH_SECS,
                5,
                3600,
            )?,
            token_cache_max_age_secs: match vars.get("jwt_cache_max_age_secs") {
                None => AuthConfig::default().token_cache_max_age_secs,
                Some(v) => v.trim().parse::<u64>().ok().filter(|n| *n <= 3600).ok_or_else(|| {
                    ConfigError(
                        "variable jwt_cache_max_age_secs must be a whole number from 0 to 3600".into(),
                    )
                })?,
            },
            token_cache_key,
        };
        check_production_auth(&auth)?;
        let database_url = vars.get("database_url").map(Zeroizing::new);
        if let Some(url) = &database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError(
                    "variable database_url must be empty (SQLite) or a postgres:// URL".into(),
                ));
            }
        }
        let dek_cache = kms::cache::Settings::load(vars)?;
        let max_seals_per_key = match vars.get("max_seals_per_key") {
            None => None,
            Some(v) => Some(
                v.trim().parse::<u64>().ok().filter(|n| (1..=MAX_SEALS_CEILING).contains(n)).ok_or_else(
                    || {
                        ConfigError(format!(
                            "variable max_seals_per_key must be a whole number from 1 to {MAX_SEALS_CEILING}"
                        ))
                    },
                )?,
            ),
        };
        let audit = crate::audit::Settings::load(vars)?;
        let (kms, subjects, transit) = lazy()?;
        Ok(Config {
            dev_mode,
            local_kek_b64,
            database_url,
            limits,
            auth,
            kms,
            dek_cache,
            subjects,
            max_seals_per_key,
            audit,
            transit,
        })
    }
}

/// The Transit-compatible routes' settings (docs/transit.md, docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitSettings {
    /// `transit_mount`: the path prefix, `/v1/transit/` by default; `None` (`off`): no Transit routes.
    pub mount: Option<String>,
    /// `transit_kek`: the KEK of a key created through `POST <mount>keys/{name}`.
    pub kek: KekRef,
    /// `transit_policy`: the policy of a key created through `POST <mount>keys/{name}`.
    pub policy: Policy,
}

/// [`TransitSettings`], read on first use.
pub type TransitLazy = crate::vars::Lazy<TransitSettings>;

/// The default mount, as Vault and OpenBao mount Transit.
pub const DEFAULT_TRANSIT_MOUNT: &str = "/v1/transit/";

impl crate::vars::Load for TransitSettings {
    fn load(vars: &dyn Variables) -> Result<Self, ConfigError> {
        let mount = match crate::vars::trimmed(vars, "transit_mount") {
            None => Some(DEFAULT_TRANSIT_MOUNT.to_string()),
            Some(m) if m == "off" => None,
            Some(m) if valid_mount(&m) => Some(m),
            Some(_) => {
                return Err(ConfigError(
                    "variable transit_mount must be `off` or a path such as /v1/transit/: segments of \
                     A-Z a-z 0-9 . _ - each followed by /"
                        .into(),
                ))
            }
        };
        let kek = match crate::vars::trimmed(vars, "transit_kek") {
            None => KekRef::Local,
            Some(v) => serde_json::from_str::<KekRef>(&v)
                .ok()
                .filter(|k| k.validate().is_ok())
                .ok_or_else(|| ConfigError("variable transit_kek must be a scheme's kek in JSON".into()))?,
        };
        let policy = match crate::vars::trimmed(vars, "transit_policy") {
            None => default_transit_policy(),
            Some(v) => {
                serde_json::from_str::<Policy>(&v).ok().filter(|p| p.validate().is_ok()).ok_or_else(|| {
                    ConfigError("variable transit_policy must be a scheme's policy in JSON".into())
                })?
            }
        };
        Ok(TransitSettings { mount, kek, policy })
    }
}

/// The policy of a key created through Transit when `transit_policy` is unset: the tenant role
/// `admin` (which alone may create keys) may do everything, nobody else anything.
pub fn default_transit_policy() -> Policy {
    let admin = vec![crate::policy::TENANT_ADMIN_ROLE.to_string()];
    Policy {
        protect: admin.clone(),
        unprotect: admin.clone(),
        mask: Vec::new(),
        admin: admin.clone(),
        rewrap: admin,
    }
}

/// `/` then one or more segments of `[A-Za-z0-9._-]`, each followed by `/`; never `/` alone.
fn valid_mount(m: &str) -> bool {
    let Some(inner) = m.strip_prefix('/').and_then(|r| r.strip_suffix('/')) else {
        return false;
    };
    m.len() <= 128
        && !inner.is_empty()
        && inner.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// A whole number of seconds from `min` to `max`; unset or empty: `default`.
fn parse_secs(
    vars: &dyn Variables,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match vars.get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v.trim().parse::<u64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
            ConfigError(format!("variable {name} must be a whole number from {min} to {max}"))
        }),
    }
}

/// Outside dev mode a token must be addressed to this deployment (`jwt_audience`) and, when its
/// key comes from a JWKS (`jwt_jwks_url`, `jwt_jwks`), issued by a named issuer (`jwt_issuer`):
/// otherwise any token the identity provider signs for any application would do. A deployment
/// without them is refused whole (500 `misconfigured` on every route; `veil serve` says so when it
/// starts).
fn check_production_auth(auth: &AuthConfig) -> Result<(), ConfigError> {
    if auth.dev_mode {
        return Ok(());
    }
    let set = |v: &Option<String>| v.as_ref().is_some_and(|s| !s.trim().is_empty());
    if !set(&auth.audience) {
        return Err(ConfigError("jwt_audience must be set outside dev mode (docs/auth.md)".into()));
    }
    if (set(&auth.jwks_url) || set(&auth.jwks_inline)) && !set(&auth.issuer) {
        return Err(ConfigError(
            "jwt_issuer must be set outside dev mode when JWKS keys are used (docs/auth.md)".into(),
        ));
    }
    if let Some(url) = auth.jwks_url.as_deref().filter(|u| !u.trim().is_empty()) {
        if !url.trim_start().starts_with("https://") {
            return Err(ConfigError(
                "jwt_jwks_url must be an https:// URL outside dev mode (docs/auth.md)".into(),
            ));
        }
        if auth.token_cache_key.is_none() {
            return Err(ConfigError(
                "jwt_cache_key must be set outside dev mode when jwt_jwks_url is used: it seals the cached \
                 JWKS document (docs/auth.md)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// The verified-token cache's secret: `jwt_cache_key` (base64 of 32 bytes); unset, in dev mode
/// one derived from `local_kek`, outside dev mode none (the cache is off: every token is verified).
fn token_cache_key(
    vars: &dyn Variables,
    dev_mode: bool,
    local_kek_b64: Option<&str>,
) -> Result<Option<crate::crypto::secret::SecretKey>, ConfigError> {
    use crate::crypto::secret::SecretKey;
    use base64::Engine as _;
    let decode =
        |b64: &str| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok().map(Zeroizing::new);
    if let Some(b64) = vars.get("jwt_cache_key") {
        let raw = decode(&b64).ok_or_else(|| ConfigError("variable jwt_cache_key is not base64".into()))?;
        return SecretKey::try_from_slice(&raw)
            .map(Some)
            .ok_or_else(|| ConfigError("variable jwt_cache_key must decode to exactly 32 bytes".into()));
    }
    if !dev_mode {
        return Ok(None);
    }
    let kek = local_kek_b64.and_then(decode).and_then(|raw| SecretKey::try_from_slice(&raw));
    Ok(kek.as_ref().map(crate::auth::dev_token_cache_key))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kms::Settings as KmsSettings;
    pub use crate::vars::tests::MapVars;

    /// Deferred KMS settings read no KMS variable until asked, then report a bad one.
    #[test]
    fn kms_settings_are_read_on_first_use_when_deferred() {
        struct Counting(MapVars, std::cell::RefCell<Vec<String>>);
        impl Variables for Counting {
            fn get(&self, name: &str) -> Option<String> {
                self.1.borrow_mut().push(name.to_owned());
                self.0.get(name)
            }
        }
        let vars = Rc::new(Counting(MapVars::default().with("kms_timeout_ms", "nope"), Default::default()));
        let c = Config::load_deferred(vars.clone()).expect("the rest of the configuration is fine");
        assert!(!vars.1.borrow().iter().any(|n| n.starts_with("kms_") || n.starts_with("aws_")));
        let e = c.kms.get().expect_err("a bad kms_timeout_ms");
        assert!(e.0.contains("kms_timeout_ms"), "{e}");
        assert!(Config::load(&vars.0).is_err(), "the eager load refuses it at once");
    }

    /// Outside dev mode a deployment names its audience, and its issuer when JWKS keys are used.
    #[test]
    fn production_needs_audience_and_issuer() {
        let e = Config::load(&MapVars::default().with("jwt_audience", "")).expect_err("no audience");
        assert!(e.0.contains("jwt_audience must be set outside dev mode"), "{e}");
        let jwks = MapVars::default().with("jwt_issuer", "").with("jwt_jwks", "{\"keys\":[]}");
        let e = Config::load(&jwks).expect_err("no issuer");
        assert!(e.0.contains("jwt_issuer must be set"), "{e}");
        let url = MapVars::default().with("jwt_issuer", "").with("jwt_jwks_url", "https://idp.example/jwks");
        assert!(Config::load(&url).is_err());
        // a PEM key is not a JWKS: the audience suffices
        let pem = MapVars::default().with("jwt_issuer", "").with("jwt_public_key_pem", "x");
        assert!(Config::load(&pem).is_ok());
        // dev mode needs neither
        let dev = MapVars::default().with("jwt_audience", "").with("jwt_issuer", "").with("dev_mode", "true");
        assert!(Config::load(&dev).is_ok());
    }

    #[test]
    fn token_cache_key_from_the_variable_or_dev_mode_only() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let c = Config::load(&MapVars::default().with("jwt_cache_key", &b64)).expect("config");
        assert_eq!(c.auth.token_cache_key.as_ref().map(|k| *k.expose_secret()), Some([5u8; 32]));
        assert!(Config::load(&MapVars::default()).expect("config").auth.token_cache_key.is_none());
        assert!(Config::load(&MapVars::default().with("jwt_cache_key", "AAEC")).is_err());
        let kek = base64::engine::general_purpose::STANDARD.encode([6u8; 32]);
        let dev =
            Config::load(&MapVars::default().with("dev_mode", "true").with("local_kek", &kek)).expect("dev");
        assert!(dev.auth.token_cache_key.is_some(), "dev mode derives one from local_kek");
    }

    #[test]
    fn max_lifetime_is_optional_and_bounded() {
        assert_eq!(Config::load(&MapVars::default()).expect("config").auth.max_lifetime_secs, None);
        let c = Config::load(&MapVars::default().with("jwt_max_lifetime_secs", " 3600 ")).expect("config");
        assert_eq!(c.auth.max_lifetime_secs, Some(3600));
        assert_eq!(
            Config::load(&MapVars::default().with("jwt_max_lifetime_secs", "86400"))
                .expect("ceiling")
                .auth
                .max_lifetime_secs,
            Some(86_400)
        );
        for bad in ["0", "86401", "-1", "1h", "1.5"] {
            let e = Config::load(&MapVars::default().with("jwt_max_lifetime_secs", bad)).expect_err(bad);
            assert!(e.0.contains("jwt_max_lifetime_secs must be a whole number from 1 to 86400"), "{e}");
        }
    }

    #[test]
    fn jwks_url_outside_dev_mode_is_https_with_a_cache_key() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let base =
            || MapVars::default().with("jwt_issuer", "https://idp.example/").with("jwt_cache_key", &key);
        let c = Config::load(&base().with("jwt_jwks_url", "https://idp.example/jwks")).expect("https");
        assert_eq!((c.auth.jwks_cache_secs, c.auth.jwks_refetch_secs), (300, 60));
        let e = Config::load(&base().with("jwt_jwks_url", "http://idp.example/jwks")).expect_err("http");
        assert!(e.0.contains("jwt_jwks_url must be an https:// URL outside dev mode"), "{e}");
        let no_key =
            MapVars::default().with("jwt_issuer", "i").with("jwt_jwks_url", "https://idp.example/jwks");
        let e = Config::load(&no_key).expect_err("no cache key");
        assert!(e.0.contains("jwt_cache_key must be set outside dev mode"), "{e}");
        let dev = MapVars::default().with("dev_mode", "true").with("jwt_jwks_url", "http://127.0.0.1:1/jwks");
        assert!(Config::load(&dev).is_ok(), "dev mode may use http");
        let c = Config::load(&base().with("jwt_jwks_cache_secs", "600").with("jwt_jwks_refetch_secs", "5"))
            .expect("settings");
        assert_eq!((c.auth.jwks_cache_secs, c.auth.jwks_refetch_secs), (600, 5));
        for (name, bad) in [
            ("jwt_jwks_cache_secs", "0"),
            ("jwt_jwks_cache_secs", "86401"),
            ("jwt_jwks_refetch_secs", "4"),
            ("jwt_jwks_refetch_secs", "3601"),
            ("jwt_jwks_refetch_secs", "x"),
        ] {
            let e = Config::load(&base().with(name, bad)).expect_err(bad);
            assert!(e.0.contains(&format!("variable {name} must be a whole number from")), "{e}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::load(&MapVars::default()).expect("config");
        assert!(!c.dev_mode);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.auth.tenant_claim, "tenant");
    }

    #[test]
    fn dek_cache_settings() {
        assert!(Config::load(&MapVars::default()).expect("config").dek_cache.is_none());
        assert!(Config::load(&MapVars::default().with("dek_cache", "true")).is_err());
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let c = Config::load(&MapVars::default().with("dek_cache", "true").with("dek_cache_key", key))
            .expect("config");
        let d = c.dek_cache.expect("on");
        assert_eq!(d.limits, crate::kms::cache::CacheLimits::default());
        assert!(!format!("{d:?}").contains(key));
        let short = Config::load(&MapVars::default().with("dek_cache", "true").with("dek_cache_key", "AAEC"));
        assert!(short.is_err());
    }

    #[test]
    fn seal_limits_per_algorithm_and_configured_down() {
        use crate::crypto::aead::Algorithm;
        let c = Config::load(&MapVars::default()).expect("config");
        assert_eq!(c.seal_limit(Algorithm::Aes256Gcm), 1 << 31);
        assert_eq!(c.seal_limit(Algorithm::ChaCha20Poly1305), 1 << 31);
        assert_eq!(c.seal_limit(Algorithm::XChaCha20Poly1305), 1 << 48);
        let c = Config::load(&MapVars::default().with("max_seals_per_key", "5")).expect("config");
        assert!(Algorithm::ALL.iter().all(|a| c.seal_limit(*a) == 5));
        let c = Config::load(&MapVars::default().with("max_seals_per_key", "4294967296")).expect("config");
        assert_eq!(c.seal_limit(Algorithm::Aes256Gcm), 1 << 31, "never above the algorithm's bound");
        assert_eq!(c.seal_limit(Algorithm::XChaCha20Poly1305), 1 << 32);
        for bad in ["0", "-1", "many", "281474976710657"] {
            let e = Config::load(&MapVars::default().with("max_seals_per_key", bad)).expect_err(bad);
            assert!(e.0.contains("max_seals_per_key") && !e.0.contains("many"), "{e}");
        }
    }

    #[test]
    fn limits_are_checked() {
        let c = Config::load(&MapVars::default().with("max_batch", "10")).expect("config");
        assert_eq!(c.limits.max_batch, 10);
        for bad in ["0", "-1", "ten", "100000000000"] {
            assert!(Config::load(&MapVars::default().with("max_batch", bad)).is_err(), "{bad}");
        }
        assert!(Config::load(&MapVars::default().with("dev_mode", "maybe")).is_err());
    }

    #[test]
    fn kms_settings_defaults_checks_and_secrets_hidden() {
        let c = Config::load(&MapVars::default()).expect("config");
        assert_eq!(c.kms.get().expect("kms"), &KmsSettings::default());
        assert_eq!(c.kms.get().expect("kms").azure.api_version, "7.5");
        assert_eq!(c.kms.get().expect("kms").timeout_ms, 5000);
        let c = Config::load(
            &MapVars::default()
                .with("aws_region", "eu-west-1")
                .with("aws_access_key_id", "AKIDEXAMPLE")
                .with("aws_secret_access_key", "very-secret-aws")
                .with("aws_session_token", "very-secret-session")
                .with("azure_client_secret", "very-secret-azure")
                .with("azure_identity_header", "very-secret-header")
                .with("kms_timeout_ms", "250")
                .with("kms_max_retries", "0"),
        )
        .expect("config");
        assert_eq!(c.kms.get().expect("kms").aws.region.as_deref(), Some("eu-west-1"));
        let k = c.kms.get().expect("kms");
        assert_eq!((k.timeout_ms, k.max_retries), (250, 0));
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("AKIDEXAMPLE"));
        for (k, v) in [
            ("kms_timeout_ms", "0"),
            ("kms_timeout_ms", "600000"),
            ("kms_max_retries", "11"),
            ("kms_max_retries", "-1"),
            ("azure_keyvault_api_version", "7.5&x=1"),
            ("azure_keyvault_wrap_alg", "RSA1_5"),
        ] {
            assert!(Config::load(&MapVars::default().with(k, v)).is_err(), "{k}={v}");
        }
    }
}
