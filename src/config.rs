//! Deployment configuration, read from Spin variables once per request (DESIGN §12).

use std::cell::OnceCell;
use std::fmt;
use std::rc::Rc;

use zeroize::Zeroizing;

use crate::auth::AuthConfig;

/// Where configuration values come from: Spin variables in the component, a map in tests.
pub trait Variables {
    /// The variable's value; `None` when it is undefined or empty.
    fn get(&self, name: &str) -> Option<String>;
}

/// Why the deployment's configuration is unusable; the message names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// Everything a request needs to know about the deployment.
pub struct Config {
    pub dev_mode: bool,
    /// base64 of the dev-only local KEK (`local_kek`), still encoded; decoded only when used.
    pub local_kek_b64: Option<Zeroizing<String>>,
    pub database_url: Option<Zeroizing<String>>,
    pub limits: Limits,
    pub auth: AuthConfig,
    /// AWS KMS and Azure Key Vault settings (docs/kms.md), read when a vault is first needed.
    pub kms: LazyKms,
    /// The opt-in DEK cache (`dek_cache*`); `None` when off.
    pub dek_cache: Option<DekCacheSettings>,
}

/// The KMS settings, loaded at once ([`Config::load`]) or on first use ([`Config::load_deferred`]):
/// they are 18 variables, and a request on the local KEK or a warm DEK cache needs none of them.
pub struct LazyKms {
    source: Option<Rc<dyn Variables>>,
    cell: OnceCell<Result<KmsSettings, ConfigError>>,
}

impl LazyKms {
    fn loaded(settings: KmsSettings) -> Self {
        LazyKms { source: None, cell: OnceCell::from(Ok(settings)) }
    }

    /// The settings; a malformed KMS variable is an error for every request that needs a vault.
    pub fn get(&self) -> Result<&KmsSettings, ConfigError> {
        self.cell
            .get_or_init(|| match &self.source {
                Some(vars) => KmsSettings::load(vars.as_ref()),
                None => Ok(KmsSettings::default()),
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl fmt::Debug for LazyKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cell.get() {
            Some(Ok(k)) => k.fmt(f),
            Some(Err(e)) => write!(f, "LazyKms(error: {e})"),
            None => f.write_str("LazyKms(not loaded yet)"),
        }
    }
}

/// The opt-in DEK cache: its sealing key and limits (docs/kms.md § DEK cache).
pub struct DekCacheSettings {
    pub key: crate::crypto::secret::SecretKey,
    pub limits: crate::kms::cache::CacheLimits,
}

impl fmt::Debug for DekCacheSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DekCacheSettings").field("key", &"<secret>").field("limits", &self.limits).finish()
    }
}

pub const MAX_DEK_CACHE_AGE_SECS: usize = 86_400;
pub const MAX_DEK_CACHE_USES: usize = 10_000_000;

impl DekCacheSettings {
    fn load(vars: &dyn Variables) -> Result<Option<Self>, ConfigError> {
        if !parse_bool("dek_cache", vars.get("dek_cache"))? {
            return Ok(None);
        }
        use base64::Engine as _;
        let b64 = vars.get("dek_cache_key").ok_or_else(|| {
            ConfigError("dek_cache is on but dek_cache_key (base64 of 32 bytes) is not set".into())
        })?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| ConfigError("variable dek_cache_key is not base64".into()))?,
        );
        let key = crate::crypto::secret::SecretKey::try_from_slice(&raw)
            .ok_or_else(|| ConfigError("variable dek_cache_key must decode to exactly 32 bytes".into()))?;
        let d = crate::kms::cache::CacheLimits::default();
        let max_age =
            parse_limit(vars, "dek_cache_max_age_secs", d.max_age_secs as usize, MAX_DEK_CACHE_AGE_SECS)?;
        let max_uses = parse_limit(vars, "dek_cache_max_uses", d.max_uses as usize, MAX_DEK_CACHE_USES)?;
        Ok(Some(DekCacheSettings {
            key,
            limits: crate::kms::cache::CacheLimits {
                max_age_secs: max_age as u64,
                max_uses: u32::try_from(max_uses).unwrap_or(u32::MAX),
            },
        }))
    }
}

/// Settings shared by the KMS providers, and each provider's own (DESIGN §12, docs/kms.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsSettings {
    /// Per-request timeout for vault and token endpoints (`kms_timeout_ms`).
    pub timeout_ms: u64,
    /// Retries after a throttled, failed or unreachable request (`kms_max_retries`).
    pub max_retries: u32,
    pub aws: AwsSettings,
    pub azure: AzureSettings,
}

pub const DEFAULT_KMS_TIMEOUT_MS: u64 = 5_000;
pub const MAX_KMS_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_KMS_MAX_RETRIES: u32 = 3;
pub const MAX_KMS_MAX_RETRIES: u32 = 10;
pub const DEFAULT_AZURE_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const DEFAULT_AZURE_KEYVAULT_API_VERSION: &str = "7.5";
pub const DEFAULT_AZURE_IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// AWS KMS credentials and endpoint.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AwsSettings {
    /// `aws_region`; when unset, the region in the key ARN is used.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Zeroizing<String>>,
    pub session_token: Option<Zeroizing<String>>,
    /// `aws_kms_endpoint`; default `https://kms.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<secret>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<secret>"))
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Azure Key Vault: where tokens come from, and how wrapkey/unwrapkey are called.
#[derive(Clone, PartialEq, Eq)]
pub struct AzureSettings {
    pub tenant_id: Option<String>,
    /// The app registration (with a secret) or the user-assigned managed identity (without).
    pub client_id: Option<String>,
    pub client_secret: Option<Zeroizing<String>>,
    pub authority_host: String,
    /// Managed identity on App Service / Functions (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`).
    pub identity_endpoint: Option<String>,
    pub identity_header: Option<Zeroizing<String>>,
    /// The IMDS token URL (`azure_imds_endpoint`, overridable for tests).
    pub imds_endpoint: String,
    /// Key Vault REST `api-version` (`azure_keyvault_api_version`).
    pub api_version: String,
    /// `azure_keyvault_wrap_alg`: `RSA-OAEP-256` or `A256KW`; default by the key URL's host.
    pub wrap_alg: Option<String>,
}

impl Default for AzureSettings {
    fn default() -> Self {
        AzureSettings {
            tenant_id: None,
            client_id: None,
            client_secret: None,
            authority_host: DEFAULT_AZURE_AUTHORITY_HOST.into(),
            identity_endpoint: None,
            identity_header: None,
            imds_endpoint: DEFAULT_AZURE_IMDS_ENDPOINT.into(),
            api_version: DEFAULT_AZURE_KEYVAULT_API_VERSION.into(),
            wrap_alg: None,
        }
    }
}

impl fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureSettings")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<secret>"))
            .field("authority_host", &self.authority_host)
            .field("identity_endpoint", &self.identity_endpoint)
            .field("identity_header", &self.identity_header.as_ref().map(|_| "<secret>"))
            .field("imds_endpoint", &self.imds_endpoint)
            .field("api_version", &self.api_version)
            .field("wrap_alg", &self.wrap_alg)
            .finish()
    }
}

impl Default for KmsSettings {
    fn default() -> Self {
        KmsSettings {
            timeout_ms: DEFAULT_KMS_TIMEOUT_MS,
            max_retries: DEFAULT_KMS_MAX_RETRIES,
            aws: AwsSettings::default(),
            azure: AzureSettings::default(),
        }
    }
}

impl KmsSettings {
    fn load(vars: &dyn Variables) -> Result<KmsSettings, ConfigError> {
        let timeout_ms = match vars.get("kms_timeout_ms") {
            None => DEFAULT_KMS_TIMEOUT_MS,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (1..=MAX_KMS_TIMEOUT_MS).contains(&n) => n,
                _ => {
                    return Err(ConfigError(format!(
                        "variable kms_timeout_ms must be a whole number from 1 to {MAX_KMS_TIMEOUT_MS}"
                    )))
                }
            },
        };
        let max_retries = match vars.get("kms_max_retries") {
            None => DEFAULT_KMS_MAX_RETRIES,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n <= MAX_KMS_MAX_RETRIES => n,
                _ => {
                    return Err(ConfigError(format!(
                        "variable kms_max_retries must be a whole number from 0 to {MAX_KMS_MAX_RETRIES}"
                    )))
                }
            },
        };
        let api_version = vars
            .get("azure_keyvault_api_version")
            .unwrap_or_else(|| DEFAULT_AZURE_KEYVAULT_API_VERSION.into());
        if api_version.is_empty()
            || api_version.len() > 32
            || !api_version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ConfigError("variable azure_keyvault_api_version must look like 7.5".into()));
        }
        let wrap_alg = vars.get("azure_keyvault_wrap_alg").map(|a| a.trim().to_string());
        if let Some(a) = &wrap_alg {
            if a != "RSA-OAEP-256" && a != "A256KW" {
                return Err(ConfigError(
                    "variable azure_keyvault_wrap_alg must be RSA-OAEP-256 or A256KW".into(),
                ));
            }
        }
        let trim = |name: &str| vars.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Ok(KmsSettings {
            timeout_ms,
            max_retries,
            aws: AwsSettings {
                region: trim("aws_region"),
                access_key_id: trim("aws_access_key_id"),
                secret_access_key: vars.get("aws_secret_access_key").map(Zeroizing::new),
                session_token: vars.get("aws_session_token").map(Zeroizing::new),
                endpoint: trim("aws_kms_endpoint"),
            },
            azure: AzureSettings {
                tenant_id: trim("azure_tenant_id"),
                client_id: trim("azure_client_id"),
                client_secret: vars.get("azure_client_secret").map(Zeroizing::new),
                authority_host: trim("azure_authority_host")
                    .unwrap_or_else(|| DEFAULT_AZURE_AUTHORITY_HOST.into()),
                identity_endpoint: trim("azure_identity_endpoint"),
                identity_header: vars.get("azure_identity_header").map(Zeroizing::new),
                imds_endpoint: trim("azure_imds_endpoint")
                    .unwrap_or_else(|| DEFAULT_AZURE_IMDS_ENDPOINT.into()),
                api_version,
                wrap_alg,
            },
        })
    }
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

fn parse_bool(name: &str, v: Option<String>) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::trim) {
        None => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some("false") | Some("0") | Some("no") => Ok(false),
        Some(_) => Err(ConfigError(format!("variable {name} must be true or false"))),
    }
}

fn parse_limit(
    vars: &dyn Variables,
    name: &str,
    default: usize,
    ceiling: usize,
) -> Result<usize, ConfigError> {
    match vars.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 && n <= ceiling => Ok(n),
            _ => Err(ConfigError(format!("variable {name} must be a whole number from 1 to {ceiling}"))),
        },
    }
}

impl Config {
    /// Reads and checks every variable now.
    pub fn load(vars: &dyn Variables) -> Result<Config, ConfigError> {
        let mut c = Self::load_core(vars)?;
        c.kms = LazyKms::loaded(KmsSettings::load(vars)?);
        Ok(c)
    }

    /// Like [`Config::load`], but the KMS variables are read when a vault is first needed: the
    /// component's per-request path, where each variable is a host call.
    pub fn load_deferred(vars: Rc<dyn Variables>) -> Result<Config, ConfigError> {
        let mut c = Self::load_core(vars.as_ref())?;
        c.kms = LazyKms { source: Some(vars), cell: OnceCell::new() };
        Ok(c)
    }

    fn load_core(vars: &dyn Variables) -> Result<Config, ConfigError> {
        let dev_mode = parse_bool("dev_mode", vars.get("dev_mode"))?;
        let d = Limits::default();
        let limits = Limits {
            max_body_bytes: parse_limit(vars, "max_body_bytes", d.max_body_bytes, MAX_BODY_CEILING)?,
            max_batch: parse_limit(vars, "max_batch", d.max_batch, MAX_BATCH_CEILING)?,
            max_value_bytes: parse_limit(vars, "max_value_bytes", d.max_value_bytes, MAX_BODY_CEILING)?,
        };
        let leeway_secs = 60;
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
            token_cache_max_age_secs: match vars.get("jwt_cache_max_age_secs") {
                None => AuthConfig::default().token_cache_max_age_secs,
                Some(v) => v.trim().parse::<u64>().ok().filter(|n| *n <= 3600).ok_or_else(|| {
                    ConfigError(
                        "variable jwt_cache_max_age_secs must be a whole number from 0 to 3600".into(),
                    )
                })?,
            },
        };
        let database_url = vars.get("database_url").map(Zeroizing::new);
        if let Some(url) = &database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError(
                    "variable database_url must be empty (SQLite) or a postgres:// URL".into(),
                ));
            }
        }
        Ok(Config {
            dev_mode,
            local_kek_b64: vars.get("local_kek").map(Zeroizing::new),
            database_url,
            limits,
            auth,
            kms: LazyKms::loaded(KmsSettings::default()),
            dek_cache: DekCacheSettings::load(vars)?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Variables from a map, for tests.
    #[derive(Default)]
    pub struct MapVars(pub HashMap<String, String>);

    impl MapVars {
        pub fn with(mut self, k: &str, v: &str) -> Self {
            self.0.insert(k.into(), v.into());
            self
        }
    }

    impl Variables for MapVars {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).filter(|v| !v.is_empty()).cloned()
        }
    }

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
