//! The `veil` host's manifest reader: `Manifest::parse` (host-adapters/veil/src/manifest.rs),
//! then what `veil serve` does with the result: the one HTTP component, the application
//! variables from their defaults and the component's `{{ name }}` templates (variables.rs).
//! The host is a binary crate, so its files are compiled here as they are (`#[path]`), with its
//! `ConfigError` (config_error.rs). Never panics; every refusal is a `ConfigError` (exit code 2,
//! the user's input), never another error; an accepted manifest's routes start with `/` and name
//! a declared component.
#![no_main]
#![allow(dead_code, reason = "the host's modules have items only its other modules use")]

#[path = "../../host-adapters/veil/src/config_error.rs"]
mod config_error;
#[path = "../../host-adapters/veil/src/manifest.rs"]
mod manifest;
#[path = "../../host-adapters/veil/src/variables.rs"]
mod variables;

use std::path::Path;

use libfuzzer_sys::fuzz_target;

pub use config_error::ConfigError;

fn is_config_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<ConfigError>())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let m = match manifest::Manifest::parse(text, Path::new("/srv/app")) {
        Ok(m) => m,
        Err(e) => {
            assert!(is_config_error(&e), "not a ConfigError: {e:#}");
            return;
        }
    };
    for t in &m.http_triggers {
        assert!(t.route.starts_with('/'), "{:?}", t.route);
        assert!(m.components.contains_key(&t.component));
    }
    for (id, c) in &m.components {
        assert_eq!(id, &c.id);
        assert!(c.source.starts_with("/srv/app") || c.source.is_absolute());
    }
    if let Err(e) = m.http_component() {
        assert!(is_config_error(&e), "not a ConfigError: {e:#}");
    }
    let app = match variables::AppVariables::resolve(&m.variables, |_| None) {
        Ok(app) => app,
        Err(e) => {
            assert!(is_config_error(&e), "not a ConfigError: {e:#}");
            return;
        }
    };
    for c in m.components.values() {
        match variables::ComponentVariables::resolve(&app, &c.variables) {
            Ok(vars) => {
                for name in c.variables.keys() {
                    let _ = vars.get(name);
                }
            }
            Err(e) => assert!(is_config_error(&e), "not a ConfigError: {e:#}"),
        }
    }
});
