//! JWT (RFC 7519) checks around jwt-simple: our own reading of the unverified header (to pick the
//! key), the typed-key verification, and the claims jwt-simple does not enforce for us.

use std::collections::{BTreeSet, HashSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::{
    Duration, ECDSAP256PublicKeyLike, EdDSAPublicKeyLike, HS256Key, JWTClaims, MACLike, NoCustomClaims,
    RSAPublicKeyLike, UnixTimeStamp, VerificationOptions,
};
use jwt_simple::JWTError;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::{Alg, PublicKey};
use super::{AuthError, VerifiedClaims};
use crate::ids::TenantId;

/// Largest token accepted, in bytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The parts of a token we read before verifying it. Nothing here is trusted yet.
pub(crate) struct UnverifiedToken<'a> {
    pub(crate) alg: Alg,
    pub(crate) kid: Option<String>,
    pub(crate) token: &'a str,
    payload_b64: &'a str,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Splits the compact JWS, decodes the header and checks the algorithm is one we accept.
pub(crate) fn parse(token: &str) -> Result<UnverifiedToken<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid("token too large"));
    }
    let malformed = AuthError::Invalid("malformed token");
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let header = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| AuthError::Invalid("malformed token"))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|_| AuthError::Invalid("malformed token"))?;
    if URL_SAFE_NO_PAD.decode(payload_b64).is_err() || URL_SAFE_NO_PAD.decode(signature_b64).is_err() {
        return Err(malformed);
    }
    let alg = Alg::from_header(&header.alg).ok_or(AuthError::Invalid("algorithm not allowed"))?;
    Ok(UnverifiedToken { alg, kid: header.kid, token, payload_b64 })
}

/// What the deployment enforces beyond the signature.
pub(crate) struct ClaimRules<'a> {
    pub(crate) issuer: Option<&'a str>,
    pub(crate) audience: Option<&'a str>,
    pub(crate) tenant_claim: &'a str,
    pub(crate) roles_claim: &'a str,
    pub(crate) leeway_secs: u64,
    /// `jwt_max_lifetime_secs`: the longest `exp - iat` accepted; `iat` is then required.
    pub(crate) max_lifetime_secs: Option<u64>,
    pub(crate) now_secs: u64,
}

impl ClaimRules<'_> {
    fn options(&self) -> VerificationOptions {
        let set = |v: Option<&str>| v.map(|s| HashSet::from([s.to_owned()]));
        VerificationOptions {
            allowed_issuers: set(self.issuer),
            allowed_audiences: set(self.audience),
            time_tolerance: Some(Duration::from_secs(self.leeway_secs)),
            max_token_length: Some(MAX_TOKEN_BYTES),
            // Our clock, not coarsetime's: the caller decides what "now" is (and tests can).
            artificial_time: Some(UnixTimeStamp::from_secs(self.now_secs)),
            ..VerificationOptions::default()
        }
    }
}

/// Outcome of trying one key: a bad signature lets the caller try the next candidate key;
/// anything else is final.
pub(crate) enum Attempt {
    Verified(VerifiedClaims),
    BadSignature,
    Rejected(AuthError),
}

/// Verifies with an HS256 secret (dev mode only; the caller checks that).
pub(crate) fn verify_hs256(t: &UnverifiedToken<'_>, secret: &[u8], rules: &ClaimRules<'_>) -> Attempt {
    let key = HS256Key::from_bytes(secret);
    finish(t, key.verify_token::<NoCustomClaims>(t.token, Some(rules.options())), rules)
}

/// Verifies with a public key; the key's type must be the header's algorithm.
pub(crate) fn verify_public(t: &UnverifiedToken<'_>, key: &PublicKey, rules: &ClaimRules<'_>) -> Attempt {
    if key.alg() != t.alg {
        return Attempt::Rejected(AuthError::Invalid("algorithm does not match key"));
    }
    let options = Some(rules.options());
    let result = match key {
        PublicKey::Rs256(k) => k.verify_token::<NoCustomClaims>(t.token, options),
        PublicKey::Es256(k) => k.verify_token::<NoCustomClaims>(t.token, options),
        PublicKey::EdDsa(k) => k.verify_token::<NoCustomClaims>(t.token, options),
    };
    finish(t, result, rules)
}

fn finish(
    t: &UnverifiedToken<'_>,
    result: Result<JWTClaims<NoCustomClaims>, jwt_simple::Error>,
    rules: &ClaimRules<'_>,
) -> Attempt {
    match result {
        Ok(claims) => match extract(t, &claims, rules) {
            Ok(verified) => Attempt::Verified(verified),
            Err(e) => Attempt::Rejected(e),
        },
        Err(e) => match e.downcast_ref::<JWTError>() {
            Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag) => Attempt::BadSignature,
            Some(je) => Attempt::Rejected(AuthError::Invalid(reason(je))),
            None => Attempt::Rejected(AuthError::Invalid("malformed token")),
        },
    }
}

/// A short, fixed reason for a jwt-simple refusal; never its Display (which may grow details).
fn reason(e: &JWTError) -> &'static str {
    match e {
        JWTError::TokenHasExpired => "token expired",
        JWTError::TokenNotValidYet => "token not yet valid",
        JWTError::ClockDrift => "token issued in the future",
        JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing => "issuer not accepted",
        JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing => "audience not accepted",
        JWTError::TokenTooLong => "token too large",
        JWTError::AlgorithmMismatch => "algorithm not allowed",
        JWTError::NotJWT => "token type not accepted",
        JWTError::UnknownCriticalExtension => "unsupported critical header",
        JWTError::WeakKey => "algorithm not allowed",
        _ => "malformed token",
    }
}

/// The checks jwt-simple leaves to us, on a token whose signature and standard claims it has
/// already accepted: `exp` must be present (jwt-simple treats it as optional) and, like `nbf`
/// and `iat`, a non-negative number (jwt-simple reads -1 as "the end of time"); then the tenant
/// and roles claims.
fn extract(
    t: &UnverifiedToken<'_>,
    claims: &JWTClaims<NoCustomClaims>,
    rules: &ClaimRules<'_>,
) -> Result<VerifiedClaims, AuthError> {
    let payload = URL_SAFE_NO_PAD.decode(t.payload_b64).map_err(|_| AuthError::Invalid("malformed token"))?;
    let payload: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| AuthError::Invalid("malformed token"))?;

    let exp = match payload.get("exp") {
        None | Some(Value::Null) => return Err(AuthError::Invalid("missing exp claim")),
        Some(v) => timestamp(v).ok_or(AuthError::Invalid("invalid exp claim"))?,
    };
    let mut iat = None;
    for name in ["nbf", "iat"] {
        if let Some(v) = payload.get(name).filter(|v| !v.is_null()) {
            let at = timestamp(v).ok_or(AuthError::Invalid("invalid time claim"))?;
            if name == "iat" {
                iat = Some(at);
            }
        }
    }
    check_lifetime(iat, exp, rules.max_lifetime_secs)?;
    // Belt and braces: jwt-simple has checked exp with the leeway; check our reading agrees.
    if exp.saturating_add(rules.leeway_secs) < rules.now_secs {
        return Err(AuthError::Invalid("token expired"));
    }

    let tenant = payload
        .get(rules.tenant_claim)
        .and_then(Value::as_str)
        .and_then(|s| TenantId::parse(s).ok())
        .ok_or(AuthError::Invalid("missing or invalid tenant claim"))?;
    let roles = roles(payload.get(rules.roles_claim))?;
    Ok(VerifiedClaims { tenant, roles, subject: claims.subject.clone().unwrap_or_default(), exp })
}

/// `jwt_max_lifetime_secs`: a token must say when it was issued, and live no longer than that.
fn check_lifetime(iat: Option<u64>, exp: u64, max: Option<u64>) -> Result<(), AuthError> {
    let Some(max) = max else { return Ok(()) };
    let iat = iat.ok_or(AuthError::Invalid("missing iat claim"))?;
    if exp.saturating_sub(iat) > max {
        return Err(AuthError::Invalid("token lifetime too long"));
    }
    Ok(())
}

/// A NumericDate (RFC 7519 §2): a non-negative number of seconds; fractions are dropped.
fn timestamp(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // The float→int cast saturates; the range check keeps negative and NaN out.
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// Roles: a JSON array of strings, or one space-separated string (OAuth `scope` style).
fn roles(v: Option<&Value>) -> Result<BTreeSet<String>, AuthError> {
    let invalid = || AuthError::Invalid("invalid roles claim");
    match v {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => {
            items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid)).collect()
        }
        Some(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_non_negative_numbers() {
        assert_eq!(timestamp(&json!(17)), Some(17));
        assert_eq!(timestamp(&json!(17.9)), Some(17));
        assert_eq!(timestamp(&json!(-1)), None);
        assert_eq!(timestamp(&json!(-0.5)), None);
        assert_eq!(timestamp(&json!("17")), None);
    }

    #[test]
    fn lifetime_is_checked_only_when_set() {
        assert!(check_lifetime(None, 5000, None).is_ok());
        assert!(check_lifetime(Some(1000), 1000 + 3600, Some(3600)).is_ok());
        assert!(check_lifetime(Some(1000), 900, Some(1)).is_ok(), "exp before iat is no lifetime");
        assert!(matches!(
            check_lifetime(Some(1000), 1000 + 3601, Some(3600)),
            Err(AuthError::Invalid("token lifetime too long"))
        ));
        assert!(matches!(
            check_lifetime(None, 5000, Some(3600)),
            Err(AuthError::Invalid("missing iat claim"))
        ));
    }

    #[test]
    fn roles_accept_arrays_and_space_separated_strings_only() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(roles(None).ok(), Some(set(&[])));
        assert_eq!(roles(Some(&json!("a  b a"))).ok(), Some(set(&["a", "b"])));
        assert_eq!(roles(Some(&json!(["x", "y"]))).ok(), Some(set(&["x", "y"])));
        assert!(matches!(roles(Some(&json!(["x", 1]))), Err(AuthError::Invalid("invalid roles claim"))));
        assert!(matches!(roles(Some(&json!({"a": 1}))), Err(AuthError::Invalid("invalid roles claim"))));
    }

    #[test]
    fn header_algorithms_outside_the_list_are_refused() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for alg in ["none", "None", "HS512", "PS256", "RS384", "ES384", "ES256K", "Ed25519"] {
            let token = format!("{}.{}.", b64(&format!(r#"{{"alg":"{alg}"}}"#)), b64("{}"));
            assert!(
                matches!(parse(&token), Err(AuthError::Invalid("algorithm not allowed"))),
                "{alg} accepted"
            );
        }
        assert!(matches!(parse("a.b"), Err(AuthError::Invalid("malformed token"))));
        assert!(matches!(parse("a.b.c.d"), Err(AuthError::Invalid("malformed token"))));
    }
}
