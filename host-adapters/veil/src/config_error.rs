//! A start-up failure caused by the user's input, and the macro that returns one. Its own file
//! so that fuzz/ can compile the manifest reader (`manifest.rs`, `variables.rs`) with it.

/// A start-up failure caused by the user's input (flags, manifest, variables): exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Returns early with a [`ConfigError`] (exit code 2).
#[macro_export]
macro_rules! config_bail {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::ConfigError(format!($($arg)*))))
    };
}
