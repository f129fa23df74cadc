//! `fermyon:spin/variables@2.0.0` and `wasi:config/store@0.2.0-draft-2024-09-27`: the
//! component's variables, resolved once at start-up. Both read the same values (the component
//! reads each variable it needs with `variables.get`, once per instance; `get-all` is there for
//! other components, as Spin offers it).

use std::sync::atomic::{AtomicU32, Ordering};

use wasmtime::component::HasData;

use super::bindings::fermyon::spin::variables::{Error, Host};
use super::bindings::wasi::config::store::{Error as ConfigError, Host as ConfigHost};
use crate::variables::{ComponentVariables, GetError};

/// The `HasData` marker for the variables interfaces.
pub struct Variables;

impl HasData for Variables {
    type Data<'a> = VariablesView<'a>;
}

/// What the variables interfaces need from the store.
pub struct VariablesView<'a> {
    pub variables: &'a ComponentVariables,
    /// Counts the calls (`get` and `get-all` of either interface) for `--debug-host-calls`.
    pub reads: &'a AtomicU32,
}

impl VariablesView<'_> {
    fn count(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

impl Host for VariablesView<'_> {
    fn get(&mut self, name: String) -> Result<String, Error> {
        self.count();
        match self.variables.get(&name) {
            Ok(value) => Ok(value.expose().to_string()),
            Err(GetError::InvalidName(m)) => Err(Error::InvalidName(m)),
            Err(GetError::Undefined(m)) => Err(Error::Undefined(m)),
        }
    }
}

impl ConfigHost for VariablesView<'_> {
    fn get(&mut self, key: String) -> Result<Option<String>, ConfigError> {
        self.count();
        match self.variables.get(&key) {
            Ok(value) => Ok(Some(value.expose().to_string())),
            Err(GetError::InvalidName(m)) => Err(ConfigError::Upstream(m)),
            Err(GetError::Undefined(_)) => Ok(None),
        }
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, ConfigError> {
        self.count();
        Ok(self.variables.all().map(|(name, value)| (name.to_string(), value.expose().to_string())).collect())
    }
}
