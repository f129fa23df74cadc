//! Unit tests with real keys: RSA-2048 pairs from `tests/keys/` (openssl), P-256 and Ed25519
//! pairs generated here; tokens signed with jwt-simple's private keys.

use std::cell::Cell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair, Ed25519KeyPair, EdDSAKeyPairLike, HS256Key,
    JWTClaims, MACLike, RS256KeyPair, RSAKeyPairLike,
};
use serde_json::{json, Map, Value};

use super::*;

const NOW: u64 = 1_750_000_000;
const SECRET: &[u8] = b"dev-secret-dev-secret-dev-secret!";
const RSA_A: &str = include_str!("../../tests/keys/rsa-a.key.pem");
const RSA_A_PUB: &str = include_str!("../../tests/keys/rsa-a.pub.pem");
const RSA_B: &str = include_str!("../../tests/keys/rsa-b.key.pem");

/// A fetcher that must not be called.
struct NoFetch;
impl JwksFetcher for NoFetch {
    fn fetch_jwks(&self, _url: &str) -> Result<String, String> {
        panic!("JWKS fetched although the static keys should have sufficed")
    }
}

/// A fetcher serving a fixed answer and counting calls.
struct FakeFetcher {
    answer: Result<String, String>,
    calls: Cell<usize>,
}
impl FakeFetcher {
    fn new(answer: Result<String, String>) -> Self {
        Self { answer, calls: Cell::new(0) }
    }
}
impl JwksFetcher for FakeFetcher {
    fn fetch_jwks(&self, url: &str) -> Result<String, String> {
        assert_eq!(url, "https://idp.example/jwks");
        self.calls.set(self.calls.get() + 1);
        self.answer.clone()
    }
}

/// The payload of a valid token at `NOW`; tests edit it.
fn payload() -> Map<String, Value> {
    let v = json!({"tenant": "acme", "roles": ["protect", "unprotect"], "sub": "alice", "iat": NOW, "exp": NOW + 600});
    v.as_object().unwrap().clone()
}

fn with(mut p: Map<String, Value>, key: &str, value: Value) -> Map<String, Value> {
    p.insert(key.to_owned(), value);
    p
}

fn without(mut p: Map<String, Value>, key: &str) -> Map<String, Value> {
    p.remove(key);
    p
}

/// Claims whose JSON is exactly `p` (every standard field left to the map).
fn claims(p: Map<String, Value>) -> JWTClaims<Map<String, Value>> {
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: p,
    }
}

fn rsa(pem: &str, kid: &str) -> RS256KeyPair {
    RS256KeyPair::from_pem(pem).unwrap().with_key_id(kid)
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn rsa_jwk(kp: &RS256KeyPair, kid: &str) -> Value {
    let c = kp.public_key().to_components();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&c.n), "e": b64(&c.e)})
}

fn p256_jwk(kp: &ES256KeyPair, kid: &str) -> Value {
    let point = kp.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])})
}

fn ed25519_jwk(kp: &Ed25519KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64(&kp.public_key().to_bytes())})
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn config() -> AuthConfig {
    AuthConfig::default()
}

fn dev_config() -> AuthConfig {
    AuthConfig { dev_mode: true, hs256_secret: Some(Zeroizing::new(SECRET.to_vec())), ..config() }
}

fn auth(cfg: AuthConfig) -> Authenticator {
    Authenticator::new(cfg).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn check(a: &Authenticator, token: &str) -> Result<Principal, AuthError> {
    a.authenticate_at(Some(&bearer(token)), &NoFetch, NOW)
}

fn hs256(p: Map<String, Value>) -> String {
    HS256Key::from_bytes(SECRET).authenticate(claims(p)).unwrap()
}

fn roles(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

macro_rules! assert_invalid {
    ($result:expr, $reason:expr) => {
        match $result {
            Err(AuthError::Invalid(r)) => assert_eq!(r, $reason),
            other => panic!("expected Invalid({:?}), got {:?}", $reason, other),
        }
    };
}

// ---- accepted ----

#[test]
fn hs256_in_dev_mode() {
    let p = check(&auth(dev_config()), &hs256(payload())).unwrap();
    assert_eq!(p.tenant.as_str(), "acme");
    assert_eq!(p.roles, roles(&["protect", "unprotect"]));
    assert_eq!(p.subject, "alice");
}

#[test]
fn authenticate_uses_the_real_clock() {
    let now = now_secs();
    let p = with(with(payload(), "iat", json!(now)), "exp", json!(now + 600));
    assert!(auth(dev_config()).authenticate(Some(&bearer(&hs256(p))), &NoFetch).is_ok());
}

#[test]
fn rs256_via_inline_jwks_with_kid() {
    let (a, b) = (rsa(RSA_A, "a"), rsa(RSA_B, "b"));
    let authn =
        auth(AuthConfig { jwks_inline: Some(jwks(&[rsa_jwk(&a, "a"), rsa_jwk(&b, "b")])), ..config() });
    let token = b.sign(claims(payload())).unwrap();
    assert_eq!(check(&authn, &token).unwrap().tenant.as_str(), "acme");
}

#[test]
fn rs256_via_pem() {
    let authn = auth(AuthConfig { public_key_pem: Some(RSA_A_PUB.to_owned()), ..config() });
    let token = rsa(RSA_A, "any").sign(claims(payload())).unwrap();
    assert!(check(&authn, &token).is_ok());
}

#[test]
fn es256_via_pem() {
    let kp = ES256KeyPair::generate();
    let authn = auth(AuthConfig { public_key_pem: Some(kp.public_key().to_pem().unwrap()), ..config() });
    assert!(check(&authn, &kp.sign(claims(payload())).unwrap()).is_ok());
}

#[test]
fn es256_via_jwks_without_kid_in_the_token() {
    let (k1, k2) = (ES256KeyPair::generate(), ES256KeyPair::generate());
    let authn =
        auth(AuthConfig { jwks_inline: Some(jwks(&[p256_jwk(&k1, "1"), p256_jwk(&k2, "2")])), ..config() });
    assert!(check(&authn, &k2.sign(claims(payload())).unwrap()).is_ok());
}

#[test]
fn eddsa_via_jwks() {
    let kp = Ed25519KeyPair::generate().with_key_id("ed");
    let authn = auth(AuthConfig { jwks_inline: Some(jwks(&[ed25519_jwk(&kp, "ed")])), ..config() });
    assert!(check(&authn, &kp.sign(claims(payload())).unwrap()).is_ok());
}

#[test]
fn eddsa_via_pem() {
    let kp = Ed25519KeyPair::generate();
    let authn = auth(AuthConfig { public_key_pem: Some(kp.public_key().to_pem()), ..config() });
    assert!(check(&authn, &kp.sign(claims(payload())).unwrap()).is_ok());
}

#[test]
fn jwks_url_is_fetched_lazily_and_once() {
    let ed = Ed25519KeyPair::generate().with_key_id("remote");
    let es = ES256KeyPair::generate().with_key_id("static");
    let fetcher = FakeFetcher::new(Ok(jwks(&[ed25519_jwk(&ed, "remote")])));
    let authn = auth(AuthConfig {
        jwks_inline: Some(jwks(&[p256_jwk(&es, "static")])),
        jwks_url: Some("https://idp.example/jwks".to_owned()),
        ..config()
    });
    let header = |t: &str| bearer(t);
    // A static key suffices: no fetch.
    let static_token = es.sign(claims(payload())).unwrap();
    authn.authenticate_at(Some(&header(&static_token)), &fetcher, NOW).unwrap();
    assert_eq!(fetcher.calls.get(), 0);
    // Keys only the URL has: one fetch, however many tokens.
    for tenant in ["t1", "t2", "t3"] {
        let token = ed.sign(claims(with(payload(), "tenant", json!(tenant)))).unwrap();
        let p = authn.authenticate_at(Some(&header(&token)), &fetcher, NOW).unwrap();
        assert_eq!(p.tenant.as_str(), tenant);
    }
    // An unknown kid does not refetch either.
    let stranger = Ed25519KeyPair::generate().with_key_id("unknown");
    let token = stranger.sign(claims(payload())).unwrap();
    assert_invalid!(authn.authenticate_at(Some(&header(&token)), &fetcher, NOW), "no key for this token");
    assert_eq!(fetcher.calls.get(), 1);
}

#[test]
fn roles_as_array_and_as_space_separated_string() {
    let authn = auth(dev_config());
    let p = check(&authn, &hs256(with(payload(), "roles", json!(["admin"])))).unwrap();
    assert_eq!(p.roles, roles(&["admin"]));
    let p = check(&authn, &hs256(with(payload(), "roles", json!("protect  mask admin")))).unwrap();
    assert_eq!(p.roles, roles(&["admin", "mask", "protect"]));
    let p = check(&authn, &hs256(without(payload(), "roles"))).unwrap();
    assert!(p.roles.is_empty());
    // A custom roles claim, as an IdP's `scope`.
    let authn = auth(AuthConfig { roles_claim: "scope".to_owned(), ..dev_config() });
    let p = check(&authn, &hs256(with(payload(), "scope", json!("veil.protect veil.mask")))).unwrap();
    assert_eq!(p.roles, roles(&["veil.mask", "veil.protect"]));
}

#[test]
fn issuer_and_audience_as_string_or_array() {
    let authn = auth(AuthConfig {
        issuer: Some("https://idp".into()),
        audience: Some("veil".into()),
        ..dev_config()
    });
    let p = with(payload(), "iss", json!("https://idp"));
    assert!(check(&authn, &hs256(with(p.clone(), "aud", json!("veil")))).is_ok());
    assert!(check(&authn, &hs256(with(p, "aud", json!(["other", "veil"])))).is_ok());
}

#[test]
fn leeway_applies_to_exp_and_nbf() {
    let authn = auth(dev_config());
    assert!(check(&authn, &hs256(with(payload(), "exp", json!(NOW - 30)))).is_ok());
    assert!(check(&authn, &hs256(with(payload(), "nbf", json!(NOW + 30)))).is_ok());
}

#[test]
fn max_lifetime_refuses_long_lived_tokens_and_tokens_without_iat() {
    let authn = auth(AuthConfig { max_lifetime_secs: Some(600), ..dev_config() });
    assert!(check(&authn, &hs256(payload())).is_ok(), "exp - iat = 600 is the limit itself");
    let long = with(payload(), "exp", json!(NOW + 601));
    assert_invalid!(check(&authn, &hs256(long.clone())), "token lifetime too long");
    assert_invalid!(check(&authn, &hs256(without(payload(), "iat"))), "missing iat claim");
    // Without the setting, both are fine.
    assert!(check(&auth(dev_config()), &hs256(long)).is_ok());
    assert!(check(&auth(dev_config()), &hs256(without(payload(), "iat"))).is_ok());
    for bad in [0, MAX_TOKEN_LIFETIME_CEILING_SECS + 1] {
        let cfg = AuthConfig { max_lifetime_secs: Some(bad), ..dev_config() };
        assert!(matches!(Authenticator::new(cfg), Err(AuthError::Config(_))), "{bad}");
    }
}

#[test]
fn a_custom_tenant_claim_and_no_subject() {
    let authn = auth(AuthConfig { tenant_claim: "org".to_owned(), ..dev_config() });
    let p = without(with(without(payload(), "tenant"), "org", json!("Org-7.eu_1")), "sub");
    let principal = check(&authn, &hs256(p)).unwrap();
    assert_eq!(principal.tenant.as_str(), "Org-7.eu_1");
    assert_eq!(principal.subject, "");
}

#[test]
fn verified_claims_round_trip_for_a_cache() {
    let authn = auth(dev_config());
    let token = hs256(payload());
    let v = authn.verify_jwt_at(&token, &NoFetch, NOW).unwrap();
    assert_eq!(v.exp, NOW + 600);
    let stored = serde_json::to_string(&v).unwrap();
    assert_eq!(serde_json::from_str::<VerifiedClaims>(&stored).unwrap(), v);
    let forged = stored.replace("acme", "bad tenant!");
    assert!(serde_json::from_str::<VerifiedClaims>(&forged).is_err());
    assert!(!v.is_expired(NOW + 600, 0) && v.is_expired(NOW + 601, 0));
}

// ---- refused ----

#[test]
fn no_header_is_missing() {
    let authn = auth(dev_config());
    assert!(matches!(authn.authenticate_at(None, &NoFetch, NOW), Err(AuthError::Missing)));
    assert!(matches!(authn.authenticate_at(Some("  "), &NoFetch, NOW), Err(AuthError::Missing)));
}

#[test]
fn schemes_other_than_bearer() {
    let authn = auth(dev_config());
    let token = hs256(payload());
    for header in [format!("Basic {token}"), format!("Token {token}"), token.clone()] {
        assert_invalid!(
            authn.authenticate_at(Some(&header), &NoFetch, NOW),
            "unsupported authorization scheme"
        );
    }
    assert!(authn.authenticate_at(Some(&format!("bearer  {token}")), &NoFetch, NOW).is_ok());
    assert_invalid!(authn.authenticate_at(Some("Bearer"), &NoFetch, NOW), "malformed authorization header");
    assert_invalid!(
        authn.authenticate_at(Some("Bearer a b"), &NoFetch, NOW),
        "malformed authorization header"
    );
}

#[test]
fn api_keys_are_parsed_strictly() {
    let authn = auth(dev_config());
    assert_invalid!(authn.authenticate_at(Some("Bearer veil_k1.s3cret"), &NoFetch, NOW), "malformed api key");
    let id = "0123456789abcdef0123456789abcdef";
    let secret = "A".repeat(API_KEY_SECRET_LEN);
    let good = format!("veil_{id}.{secret}");
    let Credential::ApiKey(k) = presented(Some(&format!("Bearer {good}")), None).expect("bearer") else {
        panic!("not an api key")
    };
    assert_eq!(k.id, id);
    assert_eq!(k.secret_sha256(), api_key_secret_sha256(&secret));
    assert!(matches!(presented(None, Some(&good)), Ok(Credential::ApiKey(_))));
    assert!(matches!(presented(Some(&format!("Bearer {good}")), Some(&good)), Err(AuthError::Invalid(_))));
    for bad in [
        format!("veil_{}.{secret}", id.to_uppercase()),
        format!("veil_{id}{secret}"),
        format!("veil_{id}.{secret}="),
        format!("veil_{id}.{}", &secret[1..]),
        format!("veil_{}.{secret}", &id[1..]),
        format!("veil_{id}.{}+", &secret[1..]),
    ] {
        assert!(matches!(presented(None, Some(&bad)), Err(AuthError::Invalid("malformed api key"))), "{bad}");
    }
    assert!(matches!(presented(None, None), Err(AuthError::Missing)));
}

#[test]
fn garbage() {
    let authn = auth(dev_config());
    for token in ["garbage", "a.b.c", "eyJ.eyJ.sig", "!!.??.**", "e30.e30.", "..", "x.y.z.w"] {
        assert_invalid!(check(&authn, token), "malformed token");
    }
}

#[test]
fn hs256_outside_dev_mode() {
    let cfg = AuthConfig { dev_mode: false, public_key_pem: Some(RSA_A_PUB.to_owned()), ..dev_config() };
    assert_invalid!(check(&auth(cfg), &hs256(payload())), "algorithm not allowed");
}

#[test]
fn hs256_with_a_wrong_secret() {
    let token =
        HS256Key::from_bytes(b"another-secret-another-secret-xx").authenticate(claims(payload())).unwrap();
    assert_invalid!(check(&auth(dev_config()), &token), "signature does not verify");
}

#[test]
fn rs256_signed_by_another_key() {
    let a = rsa(RSA_A, "a");
    let authn = auth(AuthConfig { jwks_inline: Some(jwks(&[rsa_jwk(&a, "a")])), ..config() });
    // Same kid, wrong private key.
    let token = rsa(RSA_B, "a").sign(claims(payload())).unwrap();
    assert_invalid!(check(&authn, &token), "signature does not verify");
    // Also against the PEM key, where no kid selects anything.
    let authn = auth(AuthConfig { public_key_pem: Some(RSA_A_PUB.to_owned()), ..config() });
    assert_invalid!(check(&authn, &token), "signature does not verify");
}

#[test]
fn tampered_payload() {
    let kp = ES256KeyPair::generate();
    let authn = auth(AuthConfig { public_key_pem: Some(kp.public_key().to_pem().unwrap()), ..config() });
    let token = kp.sign(claims(payload())).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let evil = b64(serde_json::to_string(&with(payload(), "tenant", json!("victim"))).unwrap().as_bytes());
    assert_invalid!(check(&authn, &format!("{}.{evil}.{}", parts[0], parts[2])), "signature does not verify");
}

#[test]
fn alg_none() {
    let body = b64(serde_json::to_string(&payload()).unwrap().as_bytes());
    let authn = auth(AuthConfig { public_key_pem: Some(RSA_A_PUB.to_owned()), ..dev_config() });
    for alg in ["none", "NONE", "nOnE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        assert_invalid!(check(&authn, &format!("{header}.{body}.")), "algorithm not allowed");
        assert_invalid!(check(&authn, &format!("{header}.{body}.c2ln")), "algorithm not allowed");
    }
}

#[test]
fn hs256_signed_with_the_public_key() {
    // The classic confusion: the RSA public key's bytes (PEM, DER, JWK n) used as an HMAC secret.
    let a = rsa(RSA_A, "a");
    let der = a.public_key().to_der().unwrap();
    let n = a.public_key().to_components().n;
    let cfgs = [
        AuthConfig { public_key_pem: Some(RSA_A_PUB.to_owned()), ..config() },
        AuthConfig { jwks_inline: Some(jwks(&[rsa_jwk(&a, "a")])), ..config() },
        AuthConfig { public_key_pem: Some(RSA_A_PUB.to_owned()), ..dev_config() },
    ];
    for cfg in cfgs {
        let dev = cfg.dev_mode;
        let authn = auth(cfg);
        for secret in [RSA_A_PUB.as_bytes(), &der[..], &n[..]] {
            let key = HS256Key::from_bytes(secret).with_key_id("a");
            let token = key.authenticate(claims(payload())).unwrap();
            let expected = if dev { "signature does not verify" } else { "algorithm not allowed" };
            assert_invalid!(check(&authn, &token), expected);
        }
    }
}

#[test]
fn header_alg_must_match_the_key_type() {
    let a = rsa(RSA_A, "rsa-1");
    let es = ES256KeyPair::generate();
    let authn = auth(AuthConfig {
        jwks_inline: Some(jwks(&[rsa_jwk(&a, "rsa-1"), p256_jwk(&es, "ec-1")])),
        ..config()
    });
    // ES256 header whose kid names the RSA key.
    let token = ES256KeyPair::generate().with_key_id("rsa-1").sign(claims(payload())).unwrap();
    assert_invalid!(check(&authn, &token), "algorithm does not match key");
    // RS256 header whose kid names the EC key.
    let token = rsa(RSA_A, "ec-1").sign(claims(payload())).unwrap();
    assert_invalid!(check(&authn, &token), "algorithm does not match key");
    // ES256 against a PEM RSA key (no kid): no ES256 key to try.
    let authn = auth(AuthConfig { public_key_pem: Some(RSA_A_PUB.to_owned()), ..config() });
    assert_invalid!(check(&authn, &es.sign(claims(payload())).unwrap()), "no key for this token");
}

#[test]
fn jwk_alg_must_match_the_header() {
    let kp = Ed25519KeyPair::generate().with_key_id("k");
    let mut jwk = ed25519_jwk(&kp, "k");
    jwk["alg"] = json!("RS256");
    let other = ES256KeyPair::generate();
    let authn = auth(AuthConfig { jwks_inline: Some(jwks(&[jwk, p256_jwk(&other, "o")])), ..config() });
    // The Ed25519 JWK declares another alg, so it is not a key at all.
    assert_invalid!(check(&authn, &kp.sign(claims(payload())).unwrap()), "no key for this token");
}

#[test]
fn expired() {
    let authn = auth(dev_config());
    assert_invalid!(check(&authn, &hs256(with(payload(), "exp", json!(NOW - 61)))), "token expired");
    assert_invalid!(check(&authn, &hs256(without(payload(), "exp"))), "missing exp claim");
    // jwt-simple alone would read -1 as u64::MAX seconds: never expiring.
    assert_invalid!(check(&authn, &hs256(with(payload(), "exp", json!(-1)))), "invalid exp claim");
    assert_invalid!(check(&authn, &hs256(with(payload(), "exp", json!("soon")))), "malformed token");
}

#[test]
fn not_yet_valid() {
    let authn = auth(dev_config());
    assert_invalid!(check(&authn, &hs256(with(payload(), "nbf", json!(NOW + 61)))), "token not yet valid");
    assert_invalid!(
        check(&authn, &hs256(with(payload(), "iat", json!(NOW + 3600)))),
        "token issued in the future"
    );
}

#[test]
fn wrong_issuer() {
    let authn = auth(AuthConfig { issuer: Some("https://idp".into()), ..dev_config() });
    assert_invalid!(
        check(&authn, &hs256(with(payload(), "iss", json!("https://evil")))),
        "issuer not accepted"
    );
    assert_invalid!(check(&authn, &hs256(payload())), "issuer not accepted");
}

#[test]
fn wrong_audience() {
    let authn = auth(AuthConfig { audience: Some("veil".into()), ..dev_config() });
    assert_invalid!(check(&authn, &hs256(with(payload(), "aud", json!("other")))), "audience not accepted");
    assert_invalid!(
        check(&authn, &hs256(with(payload(), "aud", json!(["a", "b"])))),
        "audience not accepted"
    );
    assert_invalid!(check(&authn, &hs256(payload())), "audience not accepted");
}

#[test]
fn missing_tenant() {
    let authn = auth(dev_config());
    assert_invalid!(check(&authn, &hs256(without(payload(), "tenant"))), "missing or invalid tenant claim");
    assert_invalid!(
        check(&authn, &hs256(with(payload(), "tenant", json!(42)))),
        "missing or invalid tenant claim"
    );
}

#[test]
fn tenant_with_bad_characters() {
    let authn = auth(dev_config());
    for bad in ["", "acme/evil", "ac me", "-acme", "acme\n", &"a".repeat(65)] {
        assert_invalid!(
            check(&authn, &hs256(with(payload(), "tenant", json!(bad)))),
            "missing or invalid tenant claim"
        );
    }
}

#[test]
fn invalid_roles_claim() {
    let authn = auth(dev_config());
    assert_invalid!(check(&authn, &hs256(with(payload(), "roles", json!(["a", 1])))), "invalid roles claim");
}

#[test]
fn token_over_8_kib() {
    let authn = auth(dev_config());
    let token = hs256(with(payload(), "pad", json!("x".repeat(8 * 1024))));
    assert!(token.len() > 8 * 1024);
    assert_invalid!(check(&authn, &token), "token too large");
}

#[test]
fn jwks_fetch_failure() {
    let kp = Ed25519KeyPair::generate().with_key_id("k");
    let token = kp.sign(claims(payload())).unwrap();
    for answer in [Err("connection refused".to_owned()), Ok("<html>".to_owned()), Ok("{}".to_owned())] {
        let fetcher = FakeFetcher::new(answer);
        let authn = auth(AuthConfig { jwks_url: Some("https://idp.example/jwks".to_owned()), ..config() });
        for _ in 0..2 {
            let r = authn.authenticate_at(Some(&bearer(&token)), &fetcher, NOW);
            assert!(matches!(r, Err(AuthError::JwksUnavailable)), "{r:?}");
        }
        assert_eq!(fetcher.calls.get(), 1);
    }
}

#[test]
fn bad_inline_jwks() {
    let a = rsa(RSA_A, "a");
    let mut broken = rsa_jwk(&a, "a");
    broken["n"] = json!("AQAB");
    let only_oct = json!({"kty": "oct", "k": b64(SECRET)});
    for doc in ["not json".to_owned(), "{}".to_owned(), jwks(&[broken]), jwks(&[only_oct]), jwks(&[])] {
        let r = Authenticator::new(AuthConfig { jwks_inline: Some(doc), ..config() })
            .map(|a| a.check_static_keys());
        assert!(matches!(r, Ok(Err(AuthError::Config(_)))), "{r:?}");
    }
}

/// A malformed inline JWKS is parsed only when a token needs it: an HS256 dev token still
/// works, and every RS256 token gets the configuration error (never a verification).
#[test]
fn bad_inline_jwks_is_reported_when_first_needed() {
    let a = rsa(RSA_A, "a");
    let mut broken = rsa_jwk(&a, "a");
    broken["n"] = json!("AQAB");
    let authn = auth(AuthConfig { jwks_inline: Some(jwks(&[broken])), ..dev_config() });
    assert_eq!(check(&authn, &hs256(payload())).ok().map(|p| p.tenant.to_string()), Some("acme".to_owned()));
    let token = a.sign(claims(payload())).unwrap();
    for _ in 0..2 {
        assert!(matches!(check(&authn, &token), Err(AuthError::Config(m)) if m.starts_with("jwt_jwks")));
    }
}

#[test]
fn other_misconfigurations() {
    let config_err = |cfg: AuthConfig| {
        matches!(Authenticator::new(cfg).and_then(|a| a.check_static_keys()), Err(AuthError::Config(_)))
    };
    assert!(config_err(config()), "no key at all");
    assert!(config_err(AuthConfig {
        public_key_pem: Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into()),
        ..config()
    }));
    assert!(
        config_err(AuthConfig { public_key_pem: Some(RSA_A.to_owned()), ..config() }),
        "a private key is not a public key"
    );
    assert!(config_err(AuthConfig { hs256_secret: Some(Zeroizing::new(vec![7; 31])), ..dev_config() }));
    assert!(config_err(AuthConfig { leeway_secs: 3601, ..dev_config() }));
    // A secret outside dev mode is ignored, not an error.
    assert!(Authenticator::new(AuthConfig {
        jwks_url: Some("https://idp.example/jwks".into()),
        ..dev_config_off()
    })
    .is_ok());
    assert!(config_err(dev_config_off()), "the ignored secret is not a key");
}

fn dev_config_off() -> AuthConfig {
    AuthConfig { dev_mode: false, ..dev_config() }
}

#[test]
fn nothing_sensitive_in_debug_or_errors() {
    let cfg = AuthConfig { jwks_url: Some("https://idp.example/jwks?key=abc".into()), ..dev_config() };
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("dev-secret") && !shown.contains("key=abc"), "{shown}");
    let authn = auth(cfg);
    let shown = format!("{authn:?}");
    assert!(!shown.contains("dev-secret"), "{shown}");
    let token = hs256(with(payload(), "tenant", json!("bad tenant")));
    let err = check(&authn, &token).unwrap_err();
    assert!(!format!("{err:?} {err}").contains("bad tenant"));
    assert_eq!(err.code(), "invalid_credentials");
}

mod token_cache {
    use super::*;
    use crate::kv::mem::MemKv;

    const SECRET: [u8; 32] = [42; 32];

    fn cached_auth(audience: Option<&str>, kv: &MemKv, max_age: u64) -> Authenticator {
        auth_with_url(audience).with_token_cache(
            Box::new(kv.clone()),
            max_age,
            &SecretKey::from_bytes(SECRET),
            Csprng::from_seed([1; 32]),
        )
    }

    fn rs256_via_url(audience: Option<&str>) -> (Authenticator, MemKv) {
        let kv = MemKv::default();
        (cached_auth(audience, &kv, 60), kv)
    }

    fn auth_with_url(audience: Option<&str>) -> Authenticator {
        Authenticator::new(AuthConfig {
            jwks_url: Some("https://idp.example/jwks".into()),
            audience: audience.map(str::to_owned),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn jwks_a() -> String {
        jwks(&[rsa_jwk(&rsa(RSA_A, "a"), "a")])
    }

    /// An RS256 token (kid "a") with exactly these claims besides tenant and roles.
    fn token(exp: u64, aud: Option<&str>) -> String {
        token_for("acme", exp, aud)
    }

    fn token_for(tenant: &str, exp: u64, aud: Option<&str>) -> String {
        let mut c = json!({"tenant": tenant, "roles": ["app"], "exp": exp, "iat": NOW});
        if let Some(a) = aud {
            c["aud"] = json!(a);
        }
        rsa(RSA_A, "a").sign(claims(c.as_object().unwrap().clone())).unwrap()
    }

    fn slot_of(auth: &Authenticator, t: &str) -> String {
        Authenticator::cache_slot(auth.token_cache.as_ref().unwrap(), t)
    }

    #[test]
    fn a_second_request_is_served_from_the_cache_until_exp() {
        let fetcher = FakeFetcher::new(Ok(jwks_a()));
        let (auth, kv) = rs256_via_url(None);
        let t = token(NOW + 30, None);
        assert_eq!(
            auth.authenticate_at(Some(&format!("Bearer {t}")), &fetcher, NOW).unwrap().tenant.as_str(),
            "acme"
        );
        assert_eq!(fetcher.calls.get(), 1);
        // a new request (new authenticator, same store): no verification, so no JWKS fetch
        let again = cached_auth(None, &kv, 60);
        let quiet = FakeFetcher::new(Err("must not be called".into()));
        assert!(again.authenticate_at(Some(&format!("Bearer {t}")), &quiet, NOW + 10).is_ok());
        assert_eq!(quiet.calls.get(), 0);
        // past exp the cache is not consulted: full verification says expired
        let late = cached_auth(None, &kv, 60);
        let err =
            late.authenticate_at(Some(&format!("Bearer {t}")), &FakeFetcher::new(Ok(jwks_a())), NOW + 200);
        assert!(matches!(err, Err(AuthError::Invalid(_))), "{err:?}");
    }

    #[test]
    fn a_tampered_token_is_never_served_from_the_cache() {
        let fetcher = FakeFetcher::new(Ok(jwks_a()));
        let (auth, _kv) = rs256_via_url(None);
        let t = token(NOW + 30, None);
        assert!(auth.authenticate_at(Some(&format!("Bearer {t}")), &fetcher, NOW).is_ok());
        let mut bad = t.clone().into_bytes();
        let i = bad.len() - 5;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        let err = auth.authenticate_at(Some(&format!("Bearer {bad}")), &fetcher, NOW + 1);
        assert!(matches!(err, Err(AuthError::Invalid(_))), "{err:?}");
    }

    #[test]
    fn another_audience_is_not_accepted_from_the_cache() {
        let (auth_a, kv) = rs256_via_url(Some("api-a"));
        let t = token(NOW + 30, Some("api-a"));
        assert!(auth_a
            .authenticate_at(Some(&format!("Bearer {t}")), &FakeFetcher::new(Ok(jwks_a())), NOW)
            .is_ok());
        // a deployment expecting another audience shares the store but not the verification
        let auth_b = cached_auth(Some("api-b"), &kv, 60);
        let err =
            auth_b.authenticate_at(Some(&format!("Bearer {t}")), &FakeFetcher::new(Ok(jwks_a())), NOW + 1);
        assert!(matches!(err, Err(AuthError::Invalid(_))), "{err:?}");
    }

    #[test]
    fn hs256_dev_tokens_bypass_the_cache() {
        let kv = MemKv::default();
        let auth = auth(dev_config()).with_token_cache(
            Box::new(kv.clone()),
            60,
            &SecretKey::from_bytes(SECRET),
            Csprng::from_seed([1; 32]),
        );
        assert!(check(&auth, &hs256(payload())).is_ok());
        assert!(kv.0.borrow().is_empty(), "an HS256 verification is cheaper than the cache");
    }

    #[test]
    fn a_stale_entry_is_deleted_when_read() {
        let fetcher = FakeFetcher::new(Ok(jwks_a()));
        let kv = MemKv::default();
        let auth = cached_auth(None, &kv, 5);
        let t = token(NOW + 3600, None);
        assert!(auth.authenticate_at(Some(&format!("Bearer {t}")), &fetcher, NOW).is_ok());
        let slot = slot_of(&auth, &t);
        assert!(kv.0.borrow().contains_key(&slot));
        // another deployment's settings: a miss, but its entry is left alone
        let other = cached_auth(Some("api-b"), &kv, 5);
        assert!(other.cached(&t, NOW + 1).is_none());
        assert!(kv.0.borrow().contains_key(&slot));
        // still fresh: a hit, kept
        assert!(auth.cached(&t, NOW + 4).is_some());
        assert!(kv.0.borrow().contains_key(&slot));
        // past its max age: a miss, and the entry is gone (the store holds nothing else)
        assert!(auth.cached(&t, NOW + 5).is_none());
        assert!(kv.0.borrow().is_empty(), "the stale entry was not deleted");
        // an entry too short to be one is deleted as well
        kv.0.borrow_mut().insert(slot.clone(), b"short".to_vec());
        assert!(auth.cached(&t, NOW).is_none());
        assert!(kv.0.borrow().is_empty(), "the undecodable entry was not deleted");
    }

    #[test]
    fn entries_never_outlive_max_age_and_hold_no_token_or_claims_in_clear() {
        let fetcher = FakeFetcher::new(Ok(jwks_a()));
        let kv = MemKv::default();
        let auth = cached_auth(None, &kv, 5);
        let t = token(NOW + 3600, None);
        assert!(auth.authenticate_at(Some(&format!("Bearer {t}")), &fetcher, NOW).is_ok());
        let (slot, entry) = kv.0.borrow().iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
        assert_eq!(entry[..8], (NOW + 5).to_be_bytes());
        let text = String::from_utf8_lossy(&entry);
        assert!(!text.contains(&t) && !text.contains("acme"), "sealed, not in clear");
        let sha = hex32(&Sha256::digest(t.as_bytes()).into());
        assert!(!slot.contains(&sha), "the slot is not the token's plain SHA-256");
        // another cache secret names another slot
        let other = auth_with_url(None).with_token_cache(
            Box::new(kv.clone()),
            5,
            &SecretKey::from_bytes([7; 32]),
            Csprng::from_seed([2; 32]),
        );
        assert_ne!(slot_of(&other, &t), slot);
    }

    /// The store is untrusted: an entry forged without the secret (plain JSON as the old layout
    /// had, or bytes sealed under another secret), or a valid entry copied into another token's
    /// slot, is never accepted; the token is verified in full instead.
    #[test]
    fn forged_or_copied_entries_are_never_accepted() {
        let fetcher = FakeFetcher::new(Ok(jwks_a()));
        let kv = MemKv::default();
        let auth = cached_auth(None, &kv, 60);
        let victim = token_for("acme", NOW + 600, None);
        let attacker = token_for("evil", NOW + 600, None);
        assert!(auth.authenticate_at(Some(&format!("Bearer {victim}")), &fetcher, NOW).is_ok());
        let victim_entry = kv.0.borrow().get(&slot_of(&auth, &victim)).cloned().unwrap();
        // copied: the victim's sealed entry in the attacker token's slot
        kv.0.borrow_mut().insert(slot_of(&auth, &attacker), victim_entry.clone());
        assert!(auth.cached(&attacker, NOW + 1).is_none(), "a copied entry opened");
        // forged: the old plain layout, and an entry sealed under another secret
        let forged_claims = VerifiedClaims {
            tenant: TenantId::parse("acme").unwrap(),
            roles: ["admin".to_string()].into_iter().collect(),
            subject: "x".into(),
            exp: NOW + 600,
        };
        let plain =
            serde_json::to_vec(&json!({"fingerprint": "00", "until": NOW + 60, "claims": forged_claims}))
                .unwrap();
        kv.0.borrow_mut().insert(slot_of(&auth, &attacker), plain);
        assert!(auth.cached(&attacker, NOW + 1).is_none(), "a plain forged entry was accepted");
        let rogue = auth_with_url(None).with_token_cache(
            Box::new(MemKv::default()),
            60,
            &SecretKey::from_bytes([9; 32]),
            Csprng::from_seed([3; 32]),
        );
        let aad = rogue.cache_aad(&slot_of(&auth, &attacker), NOW + 60);
        let sealed = rogue.token_cache.as_ref().unwrap().seal.seal(
            &mut Csprng::from_seed([4; 32]),
            &aad,
            &serde_json::to_vec(&forged_claims).unwrap(),
        );
        let mut record = (NOW + 60).to_be_bytes().to_vec();
        record.extend_from_slice(&sealed);
        kv.0.borrow_mut().insert(slot_of(&auth, &attacker), record);
        assert!(auth.cached(&attacker, NOW + 1).is_none(), "an entry sealed under another secret opened");
        // and the attacker's token, verified in full, is still its own tenant's
        let who = auth.authenticate_at(Some(&format!("Bearer {attacker}")), &fetcher, NOW + 1).unwrap();
        assert_eq!((who.tenant.as_str(), who.roles.len()), ("evil", 1));
        // the victim's own entry, where it belongs, still serves
        assert!(auth.cached(&victim, NOW + 1).is_some());
    }
}

mod jwks_cache {
    use std::cell::RefCell;

    use super::*;
    use crate::kv::mem::MemKv;

    /// A JWKS URL whose document the test changes (key rotation) or breaks, counting fetches.
    struct Idp {
        doc: RefCell<Result<String, String>>,
        calls: Cell<usize>,
    }
    impl JwksFetcher for Idp {
        fn fetch_jwks(&self, url: &str) -> Result<String, String> {
            assert_eq!(url, "https://idp.example/jwks");
            self.calls.set(self.calls.get() + 1);
            self.doc.borrow().clone()
        }
    }

    /// A fresh authenticator per request, as the component builds them, sharing `kv`.
    fn authn(kv: &MemKv, secret: [u8; 32]) -> Authenticator {
        auth(AuthConfig { jwks_url: Some("https://idp.example/jwks".into()), ..config() }).with_jwks_cache(
            Box::new(kv.clone()),
            &SecretKey::from_bytes(secret),
            Csprng::from_seed([3; 32]),
        )
    }

    fn verify(kv: &MemKv, idp: &Idp, token: &str, now: u64) -> Result<Principal, AuthError> {
        authn(kv, [9; 32]).authenticate_at(Some(&bearer(token)), idp, now)
    }

    fn signed(kp: &Ed25519KeyPair, now: u64) -> String {
        kp.sign(claims(with(with(payload(), "iat", json!(now)), "exp", json!(now + 600)))).unwrap()
    }

    #[test]
    fn one_fetch_serves_every_instance_until_the_ttl() {
        let kp = Ed25519KeyPair::generate().with_key_id("k1");
        let idp = Idp { doc: RefCell::new(Ok(jwks(&[ed25519_jwk(&kp, "k1")]))), calls: Cell::new(0) };
        let kv = MemKv::default();
        for i in 0..10 {
            verify(&kv, &idp, &signed(&kp, NOW + i), NOW + i).unwrap();
        }
        assert_eq!(idp.calls.get(), 1);
        let later = NOW + DEFAULT_JWKS_CACHE_SECS;
        verify(&kv, &idp, &signed(&kp, later), later).unwrap();
        assert_eq!(idp.calls.get(), 2, "refetched once the document is older than the TTL");
    }

    #[test]
    fn unknown_kids_refetch_at_most_once_per_interval_and_rotation_is_picked_up() {
        let old = Ed25519KeyPair::generate().with_key_id("old");
        let new = Ed25519KeyPair::generate().with_key_id("new");
        let idp = Idp { doc: RefCell::new(Ok(jwks(&[ed25519_jwk(&old, "old")]))), calls: Cell::new(0) };
        let kv = MemKv::default();
        verify(&kv, &idp, &signed(&old, NOW), NOW).unwrap();
        // The IdP rotates; a flood of random kids, and the new kid, within the interval: no fetch.
        *idp.doc.borrow_mut() = Ok(jwks(&[ed25519_jwk(&old, "old"), ed25519_jwk(&new, "new")]));
        for i in 0..100 {
            let stranger = Ed25519KeyPair::generate().with_key_id(&format!("random-{i}"));
            assert_invalid!(verify(&kv, &idp, &signed(&stranger, NOW), NOW + 1), "no key for this token");
        }
        assert_invalid!(verify(&kv, &idp, &signed(&new, NOW), NOW + 59), "no key for this token");
        assert_eq!(idp.calls.get(), 1);
        // Once the interval has passed, the new kid causes one refetch and is accepted from then on.
        let at = NOW + DEFAULT_JWKS_REFETCH_SECS;
        verify(&kv, &idp, &signed(&new, at), at).unwrap();
        verify(&kv, &idp, &signed(&new, at + 1), at + 1).unwrap();
        assert_eq!(idp.calls.get(), 2);
        // A random kid now: one refetch (the interval has passed since none), then none again.
        for i in 0..50 {
            let stranger = Ed25519KeyPair::generate().with_key_id(&format!("later-{i}"));
            assert_invalid!(verify(&kv, &idp, &signed(&stranger, at), at + 61), "no key for this token");
        }
        assert_eq!(idp.calls.get(), 3);
    }

    #[test]
    fn a_failed_fetch_is_not_retried_within_the_interval() {
        let kp = Ed25519KeyPair::generate().with_key_id("k1");
        let idp = Idp { doc: RefCell::new(Err("down".into())), calls: Cell::new(0) };
        let kv = MemKv::default();
        for i in 0..20 {
            assert!(matches!(verify(&kv, &idp, &signed(&kp, NOW), NOW + i), Err(AuthError::JwksUnavailable)));
        }
        assert_eq!(idp.calls.get(), 1);
        *idp.doc.borrow_mut() = Ok(jwks(&[ed25519_jwk(&kp, "k1")]));
        let at = NOW + DEFAULT_JWKS_REFETCH_SECS;
        verify(&kv, &idp, &signed(&kp, at), at).unwrap();
        assert_eq!(idp.calls.get(), 2);
    }

    #[test]
    fn forged_or_foreign_entries_are_ignored() {
        let kp = Ed25519KeyPair::generate().with_key_id("k1");
        let evil = Ed25519KeyPair::generate().with_key_id("k1");
        let idp = Idp { doc: RefCell::new(Ok(jwks(&[ed25519_jwk(&kp, "k1")]))), calls: Cell::new(0) };
        // Another deployment (another jwt_cache_key) caches the attacker's key in the same store.
        let kv = MemKv::default();
        let foreign = Idp { doc: RefCell::new(Ok(jwks(&[ed25519_jwk(&evil, "k1")]))), calls: Cell::new(0) };
        authn(&kv, [1; 32]).authenticate_at(Some(&bearer(&signed(&evil, NOW))), &foreign, NOW).unwrap();
        // Every entry is overwritten with a plain document and a fresh time.
        let entries: Vec<String> = kv.0.borrow().keys().cloned().collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
        for key in &entries {
            let mut forged = (NOW).to_be_bytes().to_vec();
            forged.extend_from_slice(jwks(&[ed25519_jwk(&evil, "k1")]).as_bytes());
            kv.0.borrow_mut().insert(key.clone(), forged);
        }
        // Ours: the foreign entries are other slots and the forged ones do not open; we fetch.
        assert_invalid!(verify(&kv, &idp, &signed(&evil, NOW), NOW + 1), "signature does not verify");
        assert_eq!(idp.calls.get(), 1);
        verify(&kv, &idp, &signed(&kp, NOW), NOW + 2).unwrap();
        assert_eq!(idp.calls.get(), 1);
        // A copy of our document entry into our attempt slot does not open there either.
        let ours: Vec<String> = kv.0.borrow().keys().filter(|k| !entries.contains(k)).cloned().collect();
        assert_eq!(ours.len(), 2, "{ours:?}");
        let doc_slot = ours.iter().find(|k| k.contains("/doc/")).unwrap().clone();
        let attempt_slot = ours.iter().find(|k| k.contains("/attempt/")).unwrap().clone();
        let copy = kv.0.borrow()[&doc_slot].clone();
        kv.0.borrow_mut().insert(attempt_slot, copy);
        kv.0.borrow_mut().remove(&doc_slot);
        verify(&kv, &idp, &signed(&kp, NOW), NOW + 3).unwrap();
        assert_eq!(idp.calls.get(), 2, "the copied entry is no attempt marker: a fetch follows");
    }
}
