//! `fermyon:spin/variables@2.0.0`: the component's variables, resolved once at start-up.

use wasmtime::component::HasData;

use super::bindings::fermyon::spin::variables::{Error, Host};
use crate::variables::{ComponentVariables, GetError};

/// The `HasData` marker for the variables interface.
pub struct Variables;

impl HasData for Variables {
    type Data<'a> = VariablesView<'a>;
}

/// What `variables.get` needs from the store.
pub struct VariablesView<'a> {
    pub variables: &'a ComponentVariables,
}

impl Host for VariablesView<'_> {
    fn get(&mut self, name: String) -> Result<String, Error> {
        match self.variables.get(&name) {
            Ok(value) => Ok(value.expose().to_string()),
            Err(GetError::InvalidName(m)) => Err(Error::InvalidName(m)),
            Err(GetError::Undefined(m)) => Err(Error::Undefined(m)),
        }
    }
}
