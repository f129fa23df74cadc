//! Where configuration values come from, and the few rules every setting is parsed by. A leaf:
//! [`crate::config`] and each provider's settings ([`crate::kms`]) read their variables here.

use std::cell::OnceCell;
use std::fmt;
use std::rc::Rc;

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

/// A room's settings, read from the variables by [`Load::load`].
pub trait Load: Sized {
    fn load(vars: &dyn Variables) -> Result<Self, ConfigError>;
}

/// A room's settings, loaded at once ([`Lazy::loaded`]) or on first use ([`Lazy::deferred`]):
/// every variable is a host call, so a request that never needs a room's settings (the vaults'
/// on the local KEK or a warm DEK cache, the subjects' without a subject) reads none of them.
/// A malformed variable is then an error for every request that needs the room, and only those.
pub struct Lazy<T> {
    source: Option<Rc<dyn Variables>>,
    cell: OnceCell<Result<T, ConfigError>>,
}

impl<T: Load> Lazy<T> {
    pub fn loaded(settings: T) -> Self {
        Lazy { source: None, cell: OnceCell::from(Ok(settings)) }
    }

    /// Nothing is read until [`Lazy::get`] is first called.
    pub fn deferred(vars: Rc<dyn Variables>) -> Self {
        Lazy { source: Some(vars), cell: OnceCell::new() }
    }

    pub fn get(&self) -> Result<&T, ConfigError> {
        self.cell
            .get_or_init(|| match &self.source {
                Some(vars) => T::load(vars.as_ref()),
                // `loaded` fills the cell, so there is always a source when it is empty
                None => Err(ConfigError("settings were not loaded".into())),
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl<T: fmt::Debug> fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cell.get() {
            Some(Ok(s)) => s.fmt(f),
            Some(Err(e)) => write!(f, "Lazy(error: {e})"),
            None => f.write_str("Lazy(not loaded yet)"),
        }
    }
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

    /// Variables from a map, for tests. The default names an audience and an issuer, which a
    /// deployment outside dev mode must have (`config::check_production_auth`); set either to ""
    /// to unset it.
    pub struct MapVars(pub HashMap<String, String>);

    impl Default for MapVars {
        fn default() -> Self {
            let mut m = HashMap::new();
            m.insert("jwt_audience".to_owned(), "veil-unit-tests".to_owned());
            m.insert("jwt_issuer".to_owned(), "veil-unit-tests".to_owned());
            MapVars(m)
        }
    }

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
