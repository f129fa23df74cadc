//! The vault settings (DESIGN §12, docs/kms.md): what the providers share (timeout, retries) and
//! each provider's own ([`super::aws::Settings`], [`super::azure::Settings`]), read on first use.

use super::{aws, azure};
use crate::vars::{parse_bool, ConfigError, Variables};

pub const DEFAULT_KMS_TIMEOUT_MS: u64 = 5_000;
pub const MAX_KMS_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_KMS_MAX_RETRIES: u32 = 3;
pub const MAX_KMS_MAX_RETRIES: u32 = 10;

/// Settings shared by the KMS providers, and each provider's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Per-request timeout for vault and token endpoints (`kms_timeout_ms`).
    pub timeout_ms: u64,
    /// Retries after a throttled, failed or unreachable request (`kms_max_retries`).
    pub max_retries: u32,
    pub aws: aws::Settings,
    pub azure: azure::Settings,
    /// Which vault keys tenants may name (`kek_allow`, [`super::allow`]).
    pub kek_allow: super::allow::KekAllow,
    /// `kms_allow_private_endpoints`: vault and KMS URLs may be `http://` or name loopback,
    /// link-local and private addresses outside dev mode ([`super::endpoint`]).
    pub allow_private_endpoints: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout_ms: DEFAULT_KMS_TIMEOUT_MS,
            max_retries: DEFAULT_KMS_MAX_RETRIES,
            aws: aws::Settings::default(),
            azure: azure::Settings::default(),
            kek_allow: super::allow::KekAllow::default(),
            allow_private_endpoints: false,
        }
    }
}

impl Settings {
    /// Reads `kms_timeout_ms`, `kms_max_retries`, `kek_allow` and every provider's variables.
    pub fn load(vars: &dyn Variables) -> Result<Settings, ConfigError> {
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
        let azure = azure::Settings::load(vars)?;
        let aws = aws::Settings::load(vars)?;
        let kek_allow = super::allow::KekAllow::load(vars)?;
        let allow_private_endpoints =
            parse_bool("kms_allow_private_endpoints", vars.get("kms_allow_private_endpoints"))?;
        Ok(Settings { timeout_ms, max_retries, aws, azure, kek_allow, allow_private_endpoints })
    }
}

/// The vault settings, loaded at once or on first use: they are many variables, and a request
/// on the local KEK or a warm DEK cache needs none of them.
pub type LazySettings = crate::vars::Lazy<Settings>;

impl crate::vars::Load for Settings {
    fn load(vars: &dyn Variables) -> Result<Self, ConfigError> {
        Settings::load(vars)
    }
}
