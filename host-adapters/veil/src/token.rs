//! `veil token`: dev-mode HS256 JWTs (RFC 7519 / RFC 7515) signed with the `jwt_hs256_secret` variable.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value as Json};
use sha2::Sha256;

use crate::cli::TokenArgs;
use crate::manifest::Manifest;
use crate::variables::{effective, AppVariables, ComponentVariables};
use crate::{config_bail, ConfigError};

/// The shortest accepted HS256 secret, in bytes (the HMAC-SHA256 output size).
const MIN_SECRET_BYTES: usize = 32;

/// Parses a lifetime such as `30s`, `15m`, `1h` or `2d` into seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("invalid ttl `{text}` (use e.g. 30s, 15m, 1h, 2d)"))?;
    let scale = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid ttl unit in `{text}` (use s, m, h or d)")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("ttl must be positive".to_string()),
        Some(secs) => Ok(secs),
        None => Err(format!("ttl `{text}` is too large")),
    }
}

/// Signs `header` and `payload` (JSON texts) as a compact JWS with HMAC-SHA256.
pub fn sign_hs256(secret: &[u8], header: &str, payload: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.as_bytes()),
        URL_SAFE_NO_PAD.encode(payload.as_bytes())
    );
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length; this arm cannot be reached.
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(signing_input.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// What goes into a dev token, besides the signing secret.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    pub subject: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub tenant_claim: String,
    pub roles_claim: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub issued_at: u64,
    pub ttl_secs: u64,
}

impl TokenClaims {
    /// The JSON payload.
    pub fn to_json(&self) -> String {
        let mut claims = Map::new();
        claims.insert("sub".into(), Json::from(self.subject.clone()));
        claims.insert(self.tenant_claim.clone(), Json::from(self.tenant.clone()));
        claims.insert(self.roles_claim.clone(), Json::from(self.roles.clone()));
        claims.insert("iat".into(), Json::from(self.issued_at));
        claims.insert("nbf".into(), Json::from(self.issued_at));
        claims.insert("exp".into(), Json::from(self.issued_at + self.ttl_secs));
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), Json::from(iss.clone()));
        }
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), Json::from(aud.clone()));
        }
        Json::Object(claims).to_string()
    }
}

/// The fixed JOSE header of every dev token.
pub const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

pub fn run(args: TokenArgs) -> Result<()> {
    let ttl_secs = parse_ttl(&args.ttl).map_err(ConfigError)?;
    let manifest = Manifest::load(&args.manifest)?;
    let app = AppVariables::from_env(&manifest.variables, false)?;
    let component = match manifest.http_component() {
        Ok((_, c)) => Some(ComponentVariables::resolve(&app, &c.variables)?),
        Err(_) => None,
    };
    let var = |name: &str| effective(&app, component.as_ref(), name).filter(|v| !v.expose().is_empty());

    if var("dev_mode").as_ref().map(|v| v.expose().trim()) != Some("true") {
        config_bail!("refusing to issue a dev token: the `dev_mode` variable is not `true`");
    }
    let Some(secret) = var("jwt_hs256_secret") else {
        config_bail!("refusing to issue a dev token: the `jwt_hs256_secret` variable has no value");
    };
    if secret.expose().len() < MIN_SECRET_BYTES {
        config_bail!(
            "refusing to issue a dev token: `jwt_hs256_secret` is shorter than {MIN_SECRET_BYTES} bytes"
        );
    }
    let roles: Vec<String> =
        args.roles.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = TokenClaims {
        subject: args.subject,
        tenant: args.tenant,
        roles,
        tenant_claim: var("jwt_tenant_claim").map_or_else(|| "tenant".into(), |v| v.expose().to_string()),
        roles_claim: var("jwt_roles_claim").map_or_else(|| "roles".into(), |v| v.expose().to_string()),
        issuer: var("jwt_issuer").map(|v| v.expose().to_string()),
        audience: var("jwt_audience").map(|v| v.expose().to_string()),
        issued_at: now,
        ttl_secs,
    };
    println!("{}", sign_hs256(secret.expose().as_bytes(), HEADER, &claims.to_json()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("30s"), Ok(30));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("-1h").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }

    /// Known answer computed independently with Python's `hmac`, `hashlib` and `base64`:
    /// `b64url(header) + "." + b64url(payload)`, HMAC-SHA256 with the secret, unpadded.
    #[test]
    fn hs256_known_answer() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let payload = r#"{"sub":"dev","tenant":"acme","roles":["admin","reader"],"iat":1700000000,"nbf":1700000000,"exp":1700003600}"#;
        assert_eq!(sign_hs256(secret, HEADER, payload), EXPECTED);
    }

    const EXPECTED: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkZXYiLCJ0ZW5hbnQiOiJhY21lIiwicm9sZXMiOlsiYWRtaW4iLCJyZWFkZXIiXSwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMH0.sJR9ALs_WDkq1qe1O2Z3iDBwwUbQ-8WOAWRxfs2WV-k";

    #[test]
    fn claims_json() {
        let c = TokenClaims {
            subject: "dev".into(),
            tenant: "acme".into(),
            roles: vec!["admin".into()],
            tenant_claim: "https://veil/tenant".into(),
            roles_claim: "groups".into(),
            issuer: Some("veil-dev".into()),
            audience: None,
            issued_at: 10,
            ttl_secs: 5,
        };
        let v: Json = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["https://veil/tenant"], "acme");
        assert_eq!(v["groups"], serde_json::json!(["admin"]));
        assert_eq!(v["exp"], 15);
        assert_eq!(v["nbf"], 10);
        assert_eq!(v["iss"], "veil-dev");
        assert!(v.get("aud").is_none());
    }
}
