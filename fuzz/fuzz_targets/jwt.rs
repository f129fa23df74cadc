//! JWT verification (`auth::Authenticator::verify_jwt`: the header parsing in `auth::jwt`, key
//! selection, jwt-simple, our claims checks). The first byte picks the mode: a raw token, or a
//! header and a payload (split at the first 0x00) that the target signs with the HS256 dev
//! secret, so that the claims checks see every payload. Never panics; a refusal is
//! `invalid_credentials` (or `auth_unavailable` when the JWKS URL is needed) with a fixed reason;
//! an accepted token carries a valid tenant and an `exp` that has not passed.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::Sha256;
use veil::auth::{AuthConfig, AuthError, Authenticator, JwksFetcher};
use veil::ids::TenantId;

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";
const RSA_PUB: &str = include_str!("../../tests/keys/rsa-a.pub.pem");
const LEEWAY: u64 = 60;

/// The JWKS URL never answers here (the `jwks` target fuzzes documents).
struct NoJwks;
impl JwksFetcher for NoJwks {
    fn fetch_jwks(&self, _: &str) -> Result<String, String> {
        Err("offline".into())
    }
}

thread_local! {
    static AUTH: Authenticator = Authenticator::new(AuthConfig {
        dev_mode: true,
        hs256_secret: Some(SECRET.to_vec().into()),
        public_key_pem: Some(RSA_PUB.into()),
        jwks_url: Some("https://issuer.example/jwks".into()),
        leeway_secs: LEEWAY,
        ..AuthConfig::default()
    })
    .expect("authenticator");
}

fn signed(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        let (header, payload) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        signed(header, payload)
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    match AUTH.with(|a| a.verify_jwt(&token, &NoJwks)) {
        Ok(claims) => {
            let payload = token.split('.').nth(1).expect("three parts");
            let payload: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON");
            let tenant = payload["tenant"].as_str().expect("a tenant claim");
            assert_eq!(TenantId::parse(tenant).expect("a valid tenant"), claims.tenant);
            assert!(claims.exp.saturating_add(LEEWAY) >= now, "expired token accepted");
        }
        Err(AuthError::Invalid(reason)) => {
            assert!(!reason.is_empty());
        }
        Err(AuthError::JwksUnavailable) => {}
        Err(e) => panic!("unexpected refusal {}: {e}", e.code()),
    }
});
