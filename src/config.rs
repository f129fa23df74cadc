//! Deployment configuration, read from Spin variables once per request (DESIGN §12).

use std::fmt;

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
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("dev_mode", &self.dev_mode)
            .field("local_kek", &self.local_kek_b64.as_ref().map(|_| "<secret>"))
            .field("database_url", &self.database_url.as_ref().map(|_| "<secret>"))
            .field("limits", &self.limits)
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
    pub fn load(vars: &dyn Variables) -> Result<Config, ConfigError> {
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
        };
        Ok(Config {
            dev_mode,
            local_kek_b64: vars.get("local_kek").map(Zeroizing::new),
            database_url: vars.get("database_url").map(Zeroizing::new),
            limits,
            auth,
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

    #[test]
    fn defaults() {
        let c = Config::load(&MapVars::default()).expect("config");
        assert!(!c.dev_mode);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.auth.tenant_claim, "tenant");
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
}
