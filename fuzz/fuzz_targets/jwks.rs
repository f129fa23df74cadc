//! JWK Set and PEM key parsing (`auth::jwks`), through the authenticator as deployments use it:
//! `jwt_jwks` (strict: a broken key is a configuration error), the document behind
//! `jwt_jwks_url` (lenient: broken keys are skipped) and `jwt_public_key_pem`. The first byte
//! picks JWKS or PEM. Never panics; refusals are `auth_misconfigured` (static keys) or
//! `auth_unavailable` / `invalid_credentials` (fetched keys) and never show key material; a
//! token with a made-up signature never verifies, whatever the keys.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use veil::auth::{AuthConfig, AuthError, Authenticator, JwksFetcher};
use veil_fuzz::assert_no_echo;

/// An RS256 token (header `{"alg":"RS256","kid":"k1"}`) whose signature is 256 zero bytes.
fn rs256_token() -> String {
    let signature = URL_SAFE_NO_PAD.encode([0u8; 256]);
    format!("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJ0ZW5hbnQiOiJhY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.{signature}")
}

/// Where the authenticator's fixed messages are written (see `assert_no_echo`).
const AUTH_SOURCES: &[&str] =
    &[include_str!("../../src/auth/jwks.rs"), include_str!("../../src/auth/mod.rs")];

struct Doc<'a>(&'a str);
impl JwksFetcher for Doc<'_> {
    fn fetch_jwks(&self, _: &str) -> Result<String, String> {
        Ok(self.0.to_owned())
    }
}

/// Key material in a JWK Set: every string member of a key but its `kid` (which errors name),
/// and but a string that some `kid` of the set contains (an error naming that kid shows it).
fn material(doc: &str) -> Vec<Vec<u8>> {
    let Ok(v) = serde_json::from_str::<Value>(doc) else {
        return Vec::new();
    };
    let keys: Vec<&serde_json::Map<String, Value>> =
        v["keys"].as_array().into_iter().flatten().filter_map(Value::as_object).collect();
    let kids: Vec<&str> = keys.iter().filter_map(|k| k.get("kid").and_then(Value::as_str)).collect();
    let mut out = Vec::new();
    for key in keys {
        for (name, member) in key {
            if let (false, Some(s)) = (name == "kid", member.as_str()) {
                if s.len() >= 12 && !kids.iter().any(|kid| kid.contains(s)) {
                    out.push(s.as_bytes().to_vec());
                }
            }
        }
    }
    out
}

fn static_keys(cfg: AuthConfig) -> Result<(), AuthError> {
    Authenticator::new(cfg).expect("a key source is set").check_static_keys()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(doc) = std::str::from_utf8(rest) else {
        return;
    };
    if doc.trim().is_empty() {
        return; // an empty key source counts as unset: nothing to parse
    }
    if mode % 2 == 0 {
        match static_keys(AuthConfig { jwks_inline: Some(doc.into()), ..AuthConfig::default() }) {
            Ok(()) => {}
            Err(e @ AuthError::Config(_)) => {
                assert_no_echo("jwt_jwks error", &e.to_string(), &material(doc), AUTH_SOURCES)
            }
            Err(e) => panic!("jwt_jwks refused as {}", e.code()),
        }
        let fetched = Authenticator::new(AuthConfig {
            jwks_url: Some("https://issuer.example/jwks".into()),
            ..AuthConfig::default()
        })
        .expect("authenticator");
        match fetched.verify_jwt(&rs256_token(), &Doc(doc)) {
            Ok(_) => panic!("a made-up signature verified"),
            Err(AuthError::JwksUnavailable | AuthError::Invalid(_)) => {}
            Err(e) => panic!("fetched JWKS refused as {}", e.code()),
        }
    } else {
        match static_keys(AuthConfig { public_key_pem: Some(doc.into()), ..AuthConfig::default() }) {
            Ok(()) => {}
            Err(e @ AuthError::Config(_)) => {
                let whole = if doc.len() >= 12 { vec![doc.as_bytes().to_vec()] } else { Vec::new() };
                assert_no_echo("jwt_public_key_pem error", &e.to_string(), &whole, AUTH_SOURCES);
            }
            Err(e) => panic!("jwt_public_key_pem refused as {}", e.code()),
        }
    }
});
