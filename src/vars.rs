//! Where configuration values come from, and the few rules every setting is parsed by. A leaf:
//! [`crate::config`] and each provider's settings ([`crate::kms`]) read their variables here.

use std::fmt;

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

impl std::error::Error for ConfigError {}

/// Exactly `true` or `false` (surrounding white space aside); unset is `false`. Nothing else
/// (`1`, `yes`, `TRUE`) is accepted, so that the component and the host's dev-mode warning,
/// which compares with `true`, can never disagree about a switch.
pub(crate) fn parse_bool(name: &str, v: Option<String>) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::trim) {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ConfigError(format!("variable {name} must be true or false"))),
    }
}

/// A whole number from 1 to `ceiling`; unset is `default`.
pub(crate) fn parse_limit(
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

/// The variable's value with surrounding white space removed; `None` when that leaves nothing.
pub(crate) fn trimmed(vars: &dyn Variables, name: &str) -> Option<String> {
    vars.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Only `true` and `false` are booleans; `1`/`yes` once turned dev mode on in the component
    /// while the host (which compares with `true`) gave no warning.
    #[test]
    fn booleans_are_only_true_or_false() {
        assert_eq!(parse_bool("dev_mode", None), Ok(false));
        assert_eq!(parse_bool("dev_mode", Some("true".into())), Ok(true));
        assert_eq!(parse_bool("dev_mode", Some(" false ".into())), Ok(false));
        for bad in ["1", "0", "yes", "no", "TRUE", "True", "on", "t", ""] {
            let e = parse_bool("dev_mode", Some(bad.into())).expect_err(bad);
            assert_eq!(e.0, "variable dev_mode must be true or false", "{bad:?}");
        }
    }

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
}
