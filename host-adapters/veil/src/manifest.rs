//! The subset of the Spin manifest v2 (`spin.toml`) that the host reads; unknown keys are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::{config_bail, ConfigError};

/// An application variable declared under `[variables]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VariableDecl {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

/// A `[component.<id>]` table, with `source` resolved against the manifest's directory.
#[derive(Debug, Clone)]
pub struct ComponentDecl {
    pub id: String,
    pub source: PathBuf,
    pub allowed_outbound_hosts: Vec<String>,
    pub sqlite_databases: Vec<String>,
    pub key_value_stores: Vec<String>,
    /// Component variables: name → template over application variables.
    pub variables: BTreeMap<String, String>,
    /// Environment variables given to the guest (`environment = { K = "v" }`).
    pub environment: BTreeMap<String, String>,
}

/// One `[[trigger.http]]` entry with a public route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
}

/// A parsed manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The directory holding the manifest; relative paths are resolved against it.
    pub dir: PathBuf,
    pub variables: BTreeMap<String, VariableDecl>,
    pub components: BTreeMap<String, ComponentDecl>,
    pub http_triggers: Vec<HttpTrigger>,
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: Option<toml::Value>,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: toml::Value,
    component: toml::Value,
}

#[derive(Deserialize)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads and parses the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read manifest {}: {e}", path.display())))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Self::parse(&text, &dir).with_context(|| format!("in manifest {}", path.display()))
    }

    /// Parses manifest text; `dir` is the directory relative paths are resolved against.
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ConfigError(format!("malformed manifest: {e}")))?;
        match raw.spin_manifest_version {
            Some(toml::Value::Integer(2)) => {}
            Some(toml::Value::String(s)) if s == "2" => {}
            Some(other) => config_bail!("unsupported spin_manifest_version {other}; veil reads version 2"),
            None => config_bail!("missing spin_manifest_version (veil reads version 2)"),
        }
        for (name, decl) in &raw.variables {
            check_variable_name(name)?;
            if decl.required && decl.default.is_some() {
                config_bail!("variable `{name}` is required and has a default: choose one");
            }
        }

        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            let source = match &c.source {
                toml::Value::String(s) => dir.join(s),
                _ => config_bail!("component `{id}`: only a local file path is supported as `source`"),
            };
            for name in c.variables.keys() {
                check_variable_name(name)?;
            }
            for db in &c.sqlite_databases {
                if db.is_empty() || !db.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
                {
                    config_bail!(
                        "component `{id}`: invalid sqlite database name `{db}` (letters, digits, `_`, `-`)"
                    );
                }
            }
            components.insert(
                id.clone(),
                ComponentDecl {
                    id,
                    source,
                    allowed_outbound_hosts: c.allowed_outbound_hosts,
                    sqlite_databases: c.sqlite_databases,
                    key_value_stores: c.key_value_stores,
                    variables: c.variables,
                    environment: c.environment,
                },
            );
        }

        let mut http_triggers = Vec::new();
        for t in raw.trigger.http {
            let component = match t.component {
                toml::Value::String(s) => s,
                _ => config_bail!("[[trigger.http]]: only a component id is supported as `component`"),
            };
            if !components.contains_key(&component) {
                config_bail!("[[trigger.http]] refers to unknown component `{component}`");
            }
            match t.route {
                toml::Value::String(route) => {
                    if !route.starts_with('/') {
                        config_bail!("[[trigger.http]] route `{route}` must start with `/`");
                    }
                    http_triggers.push(HttpTrigger { route, component });
                }
                // `route = { private = true }`: reachable only in-process, not over HTTP.
                toml::Value::Table(_) => {}
                other => config_bail!("[[trigger.http]]: invalid route {other}"),
            }
        }

        Ok(Manifest { dir: dir.to_path_buf(), variables: raw.variables, components, http_triggers })
    }

    /// The single component with a public HTTP route, and its trigger.
    pub fn http_component(&self) -> Result<(&HttpTrigger, &ComponentDecl)> {
        let mut ids: Vec<&str> = self.http_triggers.iter().map(|t| t.component.as_str()).collect();
        ids.dedup();
        match self.http_triggers.as_slice() {
            [] => config_bail!("the manifest has no [[trigger.http]] with a public route"),
            [t] => Ok((t, &self.components[&t.component])),
            _ => config_bail!(
                "the manifest has {} HTTP triggers ({}); veil serves exactly one component",
                self.http_triggers.len(),
                ids.join(", ")
            ),
        }
    }
}

/// Spin's rule: lowercase ASCII letters, digits and `_`, starting with a letter.
fn check_variable_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        config_bail!(
            "invalid variable name `{name}` (lowercase letters, digits and `_`, starting with a letter)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
spin_manifest_version = 2

[application]
name = "veil"
version = "0.1.0"
something_new = true

[variables]
dev_mode = { default = "false" }
jwt_hs256_secret = { required = true, secret = true }
region = { default = "eu" }

[[trigger.http]]
route = "/..."
component = "veil"

[[trigger.http]]
route = { private = true }
component = "veil"

[component.veil]
source = "target/wasm32-wasip2/release/veil.wasm"
allowed_outbound_hosts = ["https://*.vault.azure.net", "http://127.0.0.1:*"]
sqlite_databases = ["default"]
key_value_stores = ["default"]
[component.veil.variables]
dev_mode = "{{ dev_mode }}"
kek_url = "https://{{region}}.example.com"
[component.veil.build]
command = "cargo build"
"#;

    #[test]
    fn parses_sample() {
        let m = Manifest::parse(SAMPLE, Path::new("/app")).unwrap();
        assert_eq!(m.variables.len(), 3);
        assert!(m.variables["jwt_hs256_secret"].required);
        assert!(m.variables["jwt_hs256_secret"].secret);
        assert_eq!(m.variables["dev_mode"].default.as_deref(), Some("false"));
        let (t, c) = m.http_component().unwrap();
        assert_eq!(t.route, "/...");
        assert_eq!(c.source, Path::new("/app/target/wasm32-wasip2/release/veil.wasm"));
        assert_eq!(c.allowed_outbound_hosts.len(), 2);
        assert_eq!(c.sqlite_databases, vec!["default"]);
        assert_eq!(c.key_value_stores, vec!["default"]);
        assert_eq!(c.variables["kek_url"], "https://{{region}}.example.com");
    }

    fn is_config_error(r: Result<Manifest>) -> bool {
        r.is_err_and(|e| e.is::<ConfigError>())
    }

    #[test]
    fn rejects_malformed() {
        let dir = Path::new("/app");
        assert!(is_config_error(Manifest::parse("spin_manifest_version = 2\n[variables\n", dir)));
        assert!(is_config_error(Manifest::parse("spin_manifest_version = 1\n", dir)));
        assert!(is_config_error(Manifest::parse("[variables]\n", dir)));
        assert!(is_config_error(Manifest::parse(
            "spin_manifest_version = 2\n[variables]\nBad = { default = \"x\" }\n",
            dir
        )));
        assert!(is_config_error(Manifest::parse(
            "spin_manifest_version = 2\n[variables]\nx = { default = \"x\", required = true }\n",
            dir
        )));
        assert!(is_config_error(Manifest::parse(
            "spin_manifest_version = 2\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"nope\"\n",
            dir
        )));
    }

    #[test]
    fn needs_exactly_one_http_component() {
        let dir = Path::new("/app");
        let none = Manifest::parse("spin_manifest_version = 2\n", dir).unwrap();
        assert!(none.http_component().is_err());
        let two = Manifest::parse(
            "spin_manifest_version = 2\n\
             [[trigger.http]]\nroute = \"/a\"\ncomponent = \"a\"\n\
             [[trigger.http]]\nroute = \"/b\"\ncomponent = \"b\"\n\
             [component.a]\nsource = \"a.wasm\"\n[component.b]\nsource = \"b.wasm\"\n",
            dir,
        )
        .unwrap();
        assert!(two.http_component().is_err());
    }
}
