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

/// `true`/`1`/`yes` or `false`/`0`/`no`; unset is `false`.
pub(crate) fn parse_bool(name: &str, v: Option<String>) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::trim) {
        None => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some("false") | Some("0") | Some("no") => Ok(false),
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
