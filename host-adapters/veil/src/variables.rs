//! Spin variables: application values from `SPIN_VARIABLE_<NAME>` or defaults, and `{{ name }}` templates.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::config_bail;
use crate::manifest::VariableDecl;

/// The environment variable that overrides application variable `name`, as in Spin.
pub fn env_var_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// A resolved value; `Debug` never shows the text, so values cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Value {
    text: String,
    secret: bool,
}

impl Value {
    /// The value itself; callers must not log it when [`Value::is_secret`].
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Whether the value is, or was built from, a `secret = true` variable.
    pub fn is_secret(&self) -> bool {
        self.secret
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.secret { "Value(<secret>)" } else { "Value(..)" })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

/// A string with `{{ name }}` references to application variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses `text`; an unterminated `{{` or an empty reference is an error.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!("unterminated `{{{{` in `{text}`"));
            };
            let name = after[..end].trim();
            if name.is_empty() {
                return Err(format!("empty `{{{{ }}}}` in `{text}`"));
            }
            parts.push(Part::Variable(name.to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template(parts))
    }
}

/// Application variables (`[variables]`) with their resolved values.
#[derive(Debug, Clone)]
pub struct AppVariables {
    values: BTreeMap<String, (Option<String>, bool)>,
}

impl AppVariables {
    /// Resolves each declared variable: the environment override if set, else the default.
    /// A `required` variable without a value is an error.
    pub fn resolve(
        decls: &BTreeMap<String, VariableDecl>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut values = BTreeMap::new();
        for (name, decl) in decls {
            let value = env(&env_var_name(name)).or_else(|| decl.default.clone());
            if decl.required && value.is_none() {
                config_bail!("required variable `{name}` has no value; set {}", env_var_name(name));
            }
            values.insert(name.clone(), (value, decl.secret));
        }
        Ok(AppVariables { values })
    }

    /// [`AppVariables::resolve`] with the process environment, through [`platform_lookup`].
    pub fn from_env(decls: &BTreeMap<String, VariableDecl>, platform: bool) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok();
        Self::resolve(decls, |k| platform_lookup(k, platform, env))
    }

    /// The value of application variable `name`, if declared and set.
    pub fn get(&self, name: &str) -> Option<Value> {
        let (value, secret) = self.values.get(name)?;
        value.as_ref().map(|text| Value { text: text.clone(), secret: *secret })
    }

    /// Expands a template. `Ok(None)` when a referenced variable has no value;
    /// an error when the template is malformed or references an undeclared variable.
    pub fn expand(&self, template: &str) -> Result<Option<Value>> {
        let template = match Template::parse(template) {
            Ok(t) => t,
            Err(e) => config_bail!("{e}"),
        };
        let mut text = String::new();
        let mut secret = false;
        for part in template.0 {
            match part {
                Part::Literal(s) => text.push_str(&s),
                Part::Variable(name) => match self.values.get(&name) {
                    None => config_bail!("template refers to undeclared variable `{name}`"),
                    Some((None, _)) => return Ok(None),
                    Some((Some(v), s)) => {
                        text.push_str(v);
                        secret |= *s;
                    }
                },
            }
        }
        Ok(Some(Value { text, secret }))
    }
}

/// The value for `SPIN_VARIABLE_<NAME>` (`key`): that variable if set; on a platform
/// (`platform`: Azure Functions, AWS Lambda) then the plain `<NAME>` (an app setting, a Lambda
/// environment variable: `DATABASE_URL`, and the `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` Lambda sets from the execution role); then,
/// everywhere, what App Service and Functions give a managed identity: `IDENTITY_ENDPOINT` for
/// `azure_identity_endpoint`, its origin for `allow_identity_url`, `IDENTITY_HEADER` for
/// `azure_identity_header` (docs/kms.md). An empty value counts as unset for the fallbacks.
pub fn platform_lookup(key: &str, platform: bool, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(v) = env(key) {
        return Some(v);
    }
    let plain = key.strip_prefix("SPIN_VARIABLE_")?;
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if platform {
        if let Some(v) = set(plain) {
            return Some(v);
        }
    }
    match plain {
        "AZURE_IDENTITY_ENDPOINT" => set("IDENTITY_ENDPOINT"),
        "AZURE_IDENTITY_HEADER" => set("IDENTITY_HEADER"),
        "ALLOW_IDENTITY_URL" => set("IDENTITY_ENDPOINT").and_then(|url| origin(&url)),
        _ => None,
    }
}

/// `scheme://authority` of an absolute URL (what `allowed_outbound_hosts` takes).
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    (!scheme.is_empty() && !authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// Why `variables.get` failed, mirroring the WIT error cases the host uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetError {
    InvalidName(String),
    Undefined(String),
}

/// The variables a component sees (`[component.<id>.variables]`), expanded once at start-up.
#[derive(Debug, Clone, Default)]
pub struct ComponentVariables {
    values: BTreeMap<String, Option<Value>>,
}

impl ComponentVariables {
    /// Expands every component variable's template against the application variables.
    pub fn resolve(app: &AppVariables, decls: &BTreeMap<String, String>) -> Result<Self> {
        let mut values = BTreeMap::new();
        for (name, template) in decls {
            let value =
                app.expand(template).map_err(|e| e.context(format!("component variable `{name}`")))?;
            values.insert(name.clone(), value);
        }
        Ok(ComponentVariables { values })
    }

    /// Every variable that has a value, in name order (`wasi:config/store.get-all`).
    pub fn all(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().filter_map(|(name, value)| Some((name.as_str(), value.as_ref()?)))
    }

    /// The guest-facing lookup: invalid names and missing values are errors, as in Spin.
    pub fn get(&self, name: &str) -> Result<&Value, GetError> {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(GetError::InvalidName(format!("invalid variable name `{name}`")));
        }
        match self.values.get(name) {
            Some(Some(v)) => Ok(v),
            _ => Err(GetError::Undefined(format!("no variable for `{name}`"))),
        }
    }
}

/// A variable as the component would see it, falling back to the application variable
/// of the same name (for host-side decisions such as dev mode and `veil token`).
pub fn effective(app: &AppVariables, component: Option<&ComponentVariables>, name: &str) -> Option<Value> {
    if let Some(c) = component {
        if let Some(v) = c.values.get(name) {
            return v.clone();
        }
    }
    app.get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls() -> BTreeMap<String, VariableDecl> {
        let mut d = BTreeMap::new();
        d.insert("dev_mode".into(), VariableDecl { default: Some("false".into()), ..Default::default() });
        d.insert("secret_key".into(), VariableDecl { required: true, secret: true, ..Default::default() });
        d.insert("region".into(), VariableDecl { default: Some("eu".into()), ..Default::default() });
        d.insert("unset".into(), VariableDecl::default());
        d
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn platform_names_and_the_managed_identity_fill_in() {
        let e = env(&[
            ("SPIN_VARIABLE_MAX_BATCH", "7"),
            ("MAX_BATCH", "9"),
            ("DATABASE_URL", "postgres://db/x"),
            ("AWS_REGION", "eu-west-1"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token?x=1"),
            ("IDENTITY_HEADER", "h"),
            ("JWT_ISSUER", "  "),
        ]);
        let look = |k: &str, p: bool| platform_lookup(k, p, &e);
        // SPIN_VARIABLE_* first, everywhere.
        assert_eq!(look("SPIN_VARIABLE_MAX_BATCH", true).as_deref(), Some("7"));
        assert_eq!(look("SPIN_VARIABLE_MAX_BATCH", false).as_deref(), Some("7"));
        // Plain names only on a platform.
        assert_eq!(look("SPIN_VARIABLE_DATABASE_URL", true).as_deref(), Some("postgres://db/x"));
        assert_eq!(look("SPIN_VARIABLE_DATABASE_URL", false), None);
        assert_eq!(look("SPIN_VARIABLE_AWS_REGION", true).as_deref(), Some("eu-west-1"));
        assert_eq!(look("SPIN_VARIABLE_JWT_ISSUER", true), None);
        // The managed identity, everywhere.
        for p in [false, true] {
            assert_eq!(
                look("SPIN_VARIABLE_AZURE_IDENTITY_ENDPOINT", p).as_deref(),
                Some("http://127.0.0.1:41741/msi/token?x=1")
            );
            assert_eq!(look("SPIN_VARIABLE_AZURE_IDENTITY_HEADER", p).as_deref(), Some("h"));
            assert_eq!(
                look("SPIN_VARIABLE_ALLOW_IDENTITY_URL", p).as_deref(),
                Some("http://127.0.0.1:41741")
            );
        }
        assert_eq!(look("OTHER", true), None);
        assert_eq!(
            origin("https://user@vault.example:8443/keys?x"),
            Some("https://vault.example:8443".into())
        );
        assert_eq!(origin("no-scheme"), None);
    }

    #[test]
    fn template_parsing() {
        assert_eq!(Template::parse("plain").unwrap().0, vec![Part::Literal("plain".into())]);
        assert_eq!(
            Template::parse("a{{ x }}b{{y}}").unwrap().0,
            vec![
                Part::Literal("a".into()),
                Part::Variable("x".into()),
                Part::Literal("b".into()),
                Part::Variable("y".into())
            ]
        );
        assert!(Template::parse("a{{ x").is_err());
        assert!(Template::parse("{{  }}").is_err());
    }

    #[test]
    fn env_overrides_default_and_required_needs_value() {
        assert!(AppVariables::resolve(&decls(), env(&[])).is_err());
        let app = AppVariables::resolve(
            &decls(),
            env(&[("SPIN_VARIABLE_SECRET_KEY", "s3cret"), ("SPIN_VARIABLE_DEV_MODE", "true")]),
        )
        .unwrap();
        assert_eq!(app.get("dev_mode").unwrap().expose(), "true");
        assert_eq!(app.get("region").unwrap().expose(), "eu");
        assert!(app.get("secret_key").unwrap().is_secret());
        assert!(app.get("unset").is_none());
        assert_eq!(env_var_name("jwt_hs256_secret"), "SPIN_VARIABLE_JWT_HS256_SECRET");
    }

    #[test]
    fn expansion_and_component_get() {
        let app = AppVariables::resolve(&decls(), env(&[("SPIN_VARIABLE_SECRET_KEY", "k")])).unwrap();
        assert_eq!(
            app.expand("https://{{ region }}.x:{{region}}").unwrap().unwrap().expose(),
            "https://eu.x:eu"
        );
        assert!(app.expand("{{ secret_key }}-x").unwrap().unwrap().is_secret());
        assert!(app.expand("{{ unset }}").unwrap().is_none());
        assert!(app.expand("{{ nope }}").is_err());

        let mut cdecl = BTreeMap::new();
        cdecl.insert("dev_mode".to_string(), "{{ dev_mode }}".to_string());
        cdecl.insert("literal".to_string(), "just text".to_string());
        cdecl.insert("maybe".to_string(), "{{ unset }}".to_string());
        let c = ComponentVariables::resolve(&app, &cdecl).unwrap();
        assert_eq!(c.get("dev_mode").unwrap().expose(), "false");
        assert_eq!(c.get("literal").unwrap().expose(), "just text");
        assert!(matches!(c.get("maybe"), Err(GetError::Undefined(_))));
        assert!(matches!(c.get("region"), Err(GetError::Undefined(_))));
        assert!(matches!(c.get("Bad-Name"), Err(GetError::InvalidName(_))));
        assert_eq!(effective(&app, Some(&c), "region").unwrap().expose(), "eu");
        assert!(format!("{:?}", app.get("secret_key").unwrap()).contains("<secret>"));
    }
}
