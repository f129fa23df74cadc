//! Authentication: who is calling. Turns the `Authorization` header into a [`Principal`]
//! (tenant + roles) or an [`AuthError`]. No I/O: a JWKS URL is fetched through [`JwksFetcher`],
//! which the component implements over outbound HTTP.
//!
//! Accepted: `Bearer <JWT>` signed RS256, ES256 or EdDSA (Ed25519) by a configured static key
//! (inline JWKS, PEM) or a key from the JWKS URL; HS256 only in dev mode with a ≥ 32-byte secret.
//! The header's `alg` must match the key's type (and its JWK `alg`), so `alg: none` and algorithm
//! confusion fail by construction.

mod jwks;
mod jwt;
mod keys;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::aead::{AeadKey, Algorithm};
use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;
use crate::ids::TenantId;
use jwks::{KeySet, Selection, Strictness};
use jwt::{Attempt, ClaimRules, UnverifiedToken};
use keys::Alg;

/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_HS256_SECRET_BYTES: usize = 32;
/// Largest clock leeway accepted in configuration.
const MAX_LEEWAY_SECS: u64 = 3600;
/// Largest `jwt_max_lifetime_secs` accepted (one day: the longest access-token lifetime the
/// identity providers of docs/auth.md allow).
pub const MAX_TOKEN_LIFETIME_CEILING_SECS: u64 = 86_400;
/// Default `jwt_jwks_cache_secs`: how long a fetched JWKS document is used.
pub const DEFAULT_JWKS_CACHE_SECS: u64 = 300;
/// Default `jwt_jwks_refetch_secs`: at most one JWKS fetch per this many seconds.
pub const DEFAULT_JWKS_REFETCH_SECS: u64 = 60;

/// Authentication settings, from the Spin variables of DESIGN §12.
pub struct AuthConfig {
    /// `dev_mode`: allows HS256 tokens.
    pub dev_mode: bool,
    /// `jwt_hs256_secret`: honoured only when `dev_mode`; ignored (HS256 refused) otherwise.
    pub hs256_secret: Option<Zeroizing<Vec<u8>>>,
    /// `jwt_jwks`: a JWK Set of static public keys.
    pub jwks_inline: Option<String>,
    /// `jwt_public_key_pem`: one static public key (RSA → RS256, P-256 → ES256, Ed25519 → EdDSA).
    pub public_key_pem: Option<String>,
    /// `jwt_jwks_url`: fetched when a token needs a key the static keys do not have; shared
    /// through the host key-value store when [`Authenticator::with_jwks_cache`] is used (at most
    /// one fetch per `jwks_refetch_secs`), else fetched at most once per [`Authenticator`].
    pub jwks_url: Option<String>,
    /// `jwt_issuer`: the required `iss`, when set.
    pub issuer: Option<String>,
    /// `jwt_audience`: required among `aud`, when set.
    pub audience: Option<String>,
    /// `jwt_tenant_claim`: the claim holding the tenant.
    pub tenant_claim: String,
    /// `jwt_roles_claim`: the claim holding the roles.
    pub roles_claim: String,
    /// Clock leeway for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// `jwt_max_lifetime_secs`: when set, a token must carry `iat` and `exp - iat` must be at
    /// most this (1..=[`MAX_TOKEN_LIFETIME_CEILING_SECS`]).
    pub max_lifetime_secs: Option<u64>,
    /// `jwt_jwks_cache_secs`: how long a JWKS document fetched from `jwks_url` is reused from the
    /// host key-value store.
    pub jwks_cache_secs: u64,
    /// `jwt_jwks_refetch_secs`: at most one fetch of `jwks_url` per this many seconds (an unknown
    /// `kid` does not refetch sooner).
    pub jwks_refetch_secs: u64,
    /// `jwt_cache_max_age_secs`: how long a verified token is reused from the host key-value
    /// store (never past its `exp`); 0 turns the cache off.
    pub token_cache_max_age_secs: u64,
    /// `jwt_cache_key` (or, in dev mode only, derived from `local_kek`): the secret that keys the
    /// verified-token cache's slots (HMAC) and seals its entries. None: the cache is off.
    pub token_cache_key: Option<SecretKey>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            dev_mode: false,
            hs256_secret: None,
            jwks_inline: None,
            public_key_pem: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            tenant_claim: "tenant".to_owned(),
            roles_claim: "roles".to_owned(),
            leeway_secs: 60,
            max_lifetime_secs: None,
            jwks_cache_secs: DEFAULT_JWKS_CACHE_SECS,
            jwks_refetch_secs: DEFAULT_JWKS_REFETCH_SECS,
            token_cache_max_age_secs: 60,
            token_cache_key: None,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |present: bool| if present { "<set>" } else { "<unset>" };
        f.debug_struct("AuthConfig")
            .field("dev_mode", &self.dev_mode)
            .field("hs256_secret", &format_args!("{}", set(self.hs256_secret.is_some())))
            .field("jwks_inline", &format_args!("{}", set(self.jwks_inline.is_some())))
            .field("public_key_pem", &format_args!("{}", set(self.public_key_pem.is_some())))
            .field("jwks_url", &format_args!("{}", set(self.jwks_url.is_some())))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("tenant_claim", &self.tenant_claim)
            .field("roles_claim", &self.roles_claim)
            .field("leeway_secs", &self.leeway_secs)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .finish()
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub roles: BTreeSet<String>,
    /// Who: the token's `sub` (empty when absent) for a JWT, the key's id for an API key;
    /// [`Principal::kind`] says which.
    pub subject: String,
    pub kind: PrincipalKind,
}

/// What kind of credential a [`Principal`] presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A verified JWT: `subject` is its `sub`.
    Jwt,
    /// An API key: `subject` is the key's id (never its secret).
    ApiKey,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Jwt => "jwt",
            PrincipalKind::ApiKey => "api_key",
        }
    }
}

/// Why a request is not authenticated. Reasons are fixed strings, safe to return to the caller:
/// never token contents or key material.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// Bad scheme, format, signature, algorithm or claims; the text says which, briefly.
    Invalid(&'static str),
    /// The JWKS URL could not be fetched or parsed.
    JwksUnavailable,
    /// Server misconfiguration (bad PEM or inline JWKS, no verification key at all).
    Config(String),
}

impl AuthError {
    /// The stable error code for API responses (DESIGN §7).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "unauthenticated",
            Self::Invalid(_) => "invalid_credentials",
            Self::JwksUnavailable => "auth_unavailable",
            Self::Config(_) => "auth_misconfigured",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no credentials"),
            Self::Invalid(reason) => f.write_str(reason),
            Self::JwksUnavailable => f.write_str("the JWKS could not be fetched"),
            Self::Config(msg) => write!(f, "authentication misconfigured: {msg}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Fetches a JWKS document; the component implements it over outbound HTTP (and may cache it
/// in the host key-value store, DESIGN §13). The error text is for the implementer's logs only.
pub trait JwksFetcher {
    fn fetch_jwks(&self, url: &str) -> Result<String, String>;
}

/// The result of verifying a token: what a verified-token cache stores (DESIGN §13).
///
/// Cached (sealed) under a slot keyed by HMAC of the token (`TokenCache`), kept until the earlier of
/// `exp` and a short max age. A hit must still check `exp` against the clock (see
/// [`VerifiedClaims::is_expired`]); everything else was checked when it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedClaims {
    #[serde(with = "tenant_as_str")]
    pub tenant: TenantId,
    pub roles: BTreeSet<String>,
    pub subject: String,
    /// `exp`, seconds since the Unix epoch.
    pub exp: u64,
}

impl VerifiedClaims {
    /// Whether `exp` has passed at `now_secs`, allowing `leeway_secs`.
    pub fn is_expired(&self, now_secs: u64, leeway_secs: u64) -> bool {
        self.exp.saturating_add(leeway_secs) < now_secs
    }

    pub fn into_principal(self) -> Principal {
        Principal { tenant: self.tenant, roles: self.roles, subject: self.subject, kind: PrincipalKind::Jwt }
    }
}

/// Serialises a tenant as its string and parses it back, so a cached value is re-validated.
mod tenant_as_str {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::ids::TenantId;

    pub(super) fn serialize<S: Serializer>(t: &TenantId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TenantId, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse(&s).map_err(D::Error::custom)
    }
}

/// The prefix of every API key: `veil_<id>.<secret>`.
pub const API_KEY_PREFIX: &str = "veil_";
/// An API key id: 32 lowercase hex digits (128 random bits).
pub const API_KEY_ID_LEN: usize = 32;
/// An API key secret: 43 base64url characters without padding (32 random bytes, 256 bits).
pub const API_KEY_SECRET_LEN: usize = 43;

/// An API key as presented: its id (finds the row) and its secret (checked against the stored
/// SHA-256 in constant time). The secret is wiped when dropped and never shown.
pub struct ApiKeyCredential {
    pub id: String,
    secret: Zeroizing<String>,
}

impl ApiKeyCredential {
    /// Parses `veil_<id>.<secret>`; anything else is `invalid_credentials`.
    pub fn parse(key: &str) -> Result<Self, AuthError> {
        let bad = AuthError::Invalid("malformed api key");
        let rest = key.strip_prefix(API_KEY_PREFIX).ok_or(bad.clone())?;
        let (id, secret) = rest.split_once('.').ok_or(bad.clone())?;
        let id_ok = id.len() == API_KEY_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let secret_ok = secret.len() == API_KEY_SECRET_LEN
            && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok || !secret_ok {
            return Err(bad);
        }
        Ok(Self { id: id.to_owned(), secret: Zeroizing::new(secret.to_owned()) })
    }

    /// SHA-256 of the secret: the only form of it that is ever stored.
    pub fn secret_sha256(&self) -> [u8; 32] {
        api_key_secret_sha256(&self.secret)
    }
}

/// SHA-256 of an API key's secret (its base64url text as presented).
pub fn api_key_secret_sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A credential as presented, before any check.
pub enum Credential<'a> {
    /// `Authorization: Bearer <JWT>`.
    Jwt(&'a str),
    /// `Authorization: Bearer veil_…` or `X-API-Key: veil_…` (DESIGN §8).
    ApiKey(ApiKeyCredential),
}

/// The request's credential, from `Authorization` and `X-API-Key`. Exactly one may be given:
/// both at once is refused (`invalid_credentials`) rather than one silently preferred.
pub fn presented<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Result<Credential<'a>, AuthError> {
    let authorization = authorization.filter(|h| !h.trim().is_empty());
    match (authorization, x_api_key.map(str::trim).filter(|k| !k.is_empty())) {
        (Some(_), Some(_)) => Err(AuthError::Invalid("send one credential: Authorization or X-API-Key")),
        (None, Some(key)) => Ok(Credential::ApiKey(ApiKeyCredential::parse(key)?)),
        (auth, None) => parse_authorization(auth),
    }
}

/// Splits `Authorization: <scheme> <credential>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn parse_authorization(header: Option<&str>) -> Result<Credential<'_>, AuthError> {
    let header = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(AuthError::Missing)?;
    let (scheme, rest) = header.split_once([' ', '\t']).unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid("unsupported authorization scheme"));
    }
    let credential = rest.trim_start_matches([' ', '\t']);
    if credential.len() > jwt::MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid("token too large"));
    }
    if credential.is_empty() || credential.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(AuthError::Invalid("malformed authorization header"));
    }
    if credential.starts_with(API_KEY_PREFIX) {
        return Ok(Credential::ApiKey(ApiKeyCredential::parse(credential)?));
    }
    Ok(Credential::Jwt(credential))
}

/// Verifies credentials. Build one per instance: it parses the static keys once and fetches the
/// JWKS URL at most once.
pub struct Authenticator {
    /// `Some` only in dev mode with a long-enough secret.
    hs256_secret: Option<Zeroizing<Vec<u8>>>,
    /// `jwt_jwks` and `jwt_public_key_pem`, parsed on the first verification that needs them:
    /// most requests present a token the verified-token cache already holds (or an HS256 dev
    /// token), and building RSA/EC keys is the costliest part of a fresh instance's start.
    static_docs: (Option<String>, Option<String>),
    static_keys: OnceLock<Result<KeySet, AuthError>>,
    jwks_url: Option<String>,
    /// Without a [`jwks::UrlCache`]: the JWKS URL's keys, once fetched; `Err` if that failed
    /// (not retried by this instance).
    fetched: OnceLock<Result<KeySet, ()>>,
    /// The JWKS document shared through the host key-value store (`with_jwks_cache`).
    jwks_cache: Option<jwks::UrlCache>,
    jwks_cache_secs: u64,
    jwks_refetch_secs: u64,
    issuer: Option<String>,
    audience: Option<String>,
    tenant_claim: String,
    roles_claim: String,
    leeway_secs: u64,
    max_lifetime_secs: Option<u64>,
    /// SHA-256 of every setting that decides whether a token verifies: a cached verification
    /// is only reused by an authenticator with the same fingerprint. Computed on first use
    /// (hashing an inline JWKS is not free inside wasm, and HS256 requests never need it).
    fingerprint: OnceLock<[u8; 32]>,
    token_cache: Option<TokenCache>,
}

/// The verified-token cache in the host key-value store (docs/auth.md § Verified-token cache).
/// The store is untrusted (DESIGN §11b): a slot is named by HMAC-SHA256 of the token under a key
/// derived from the cache secret, so nobody without it can compute which slot a token uses, and
/// an entry is sealed (XChaCha20-Poly1305) with its slot, the settings fingerprint and its expiry
/// as AAD, so a forged entry does not open and a copied one opens nowhere else.
struct TokenCache {
    kv: Box<dyn crate::kv::KeyValue>,
    max_age_secs: u64,
    slot_key: zeroize::Zeroizing<[u8; 32]>,
    seal: AeadKey,
    rng: std::cell::RefCell<Csprng>,
}

/// Labels that derive the cache's two keys from its secret (HMAC-SHA256(secret, label)).
const TOKEN_CACHE_SLOT_LABEL: &[u8] = b"veil/v2/jwt-cache/slot";
const TOKEN_CACHE_SEAL_LABEL: &[u8] = b"veil/v2/jwt-cache/seal";
const TOKEN_CACHE_AAD_LABEL: &[u8] = b"veil/v2/jwt-cache/entry";
const TOKEN_CACHE_PREFIX: &str = "veil/jwt/v2/";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    #[expect(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The dev-mode token-cache secret when `jwt_cache_key` is unset: derived from the local KEK
/// (itself dev-only), so a dev deployment caches without one more variable.
pub fn dev_token_cache_key(local_kek: &SecretKey) -> SecretKey {
    SecretKey::from_bytes(hmac_sha256(local_kek.expose_secret(), &[b"veil/v1/dev-jwt-cache-key"]))
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256_secret.is_some())
            .field("jwks_url", &self.jwks_url.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks the configuration and parses the inline JWKS and PEM key.
    pub fn new(cfg: AuthConfig) -> Result<Self, AuthError> {
        let hs256_secret = match cfg.hs256_secret {
            Some(secret) if cfg.dev_mode => {
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(AuthError::Config("jwt_hs256_secret must be at least 32 bytes".to_owned()));
                }
                Some(secret)
            }
            // Outside dev mode the secret is ignored: HS256 is never accepted.
            _ => None,
        };
        let present = |v: &Option<String>| v.as_ref().is_some_and(|d| !d.trim().is_empty());
        let static_docs = (
            cfg.jwks_inline.clone().filter(|_| present(&cfg.jwks_inline)),
            cfg.public_key_pem.clone().filter(|_| present(&cfg.public_key_pem)),
        );
        let jwks_url = cfg.jwks_url.filter(|u| !u.trim().is_empty());
        if hs256_secret.is_none() && static_docs.0.is_none() && static_docs.1.is_none() && jwks_url.is_none()
        {
            return Err(AuthError::Config(
                "no JWT verification key: set jwt_jwks_url, jwt_jwks or jwt_public_key_pem \
                 (or jwt_hs256_secret in dev mode)"
                    .to_owned(),
            ));
        }
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthError::Config(format!("JWT leeway must be at most {MAX_LEEWAY_SECS} seconds")));
        }
        if cfg.max_lifetime_secs.is_some_and(|m| !(1..=MAX_TOKEN_LIFETIME_CEILING_SECS).contains(&m)) {
            return Err(AuthError::Config(format!(
                "jwt_max_lifetime_secs must be from 1 to {MAX_TOKEN_LIFETIME_CEILING_SECS}"
            )));
        }
        for (name, value) in [("jwt_tenant_claim", &cfg.tenant_claim), ("jwt_roles_claim", &cfg.roles_claim)]
        {
            if value.is_empty() {
                return Err(AuthError::Config(format!("{name} must not be empty")));
            }
        }
        Ok(Self {
            hs256_secret,
            static_docs,
            static_keys: OnceLock::new(),
            jwks_url,
            fetched: OnceLock::new(),
            jwks_cache: None,
            jwks_cache_secs: cfg.jwks_cache_secs,
            jwks_refetch_secs: cfg.jwks_refetch_secs,
            issuer: cfg.issuer,
            audience: cfg.audience,
            tenant_claim: cfg.tenant_claim,
            roles_claim: cfg.roles_claim,
            leeway_secs: cfg.leeway_secs,
            max_lifetime_secs: cfg.max_lifetime_secs,
            fingerprint: OnceLock::new(),
            token_cache: None,
        })
    }

    fn fingerprint(&self) -> &[u8; 32] {
        self.fingerprint.get_or_init(|| settings_fingerprint(self))
    }

    /// The keys of `jwt_jwks` and `jwt_public_key_pem`; a malformed one is a configuration
    /// error (500 `config_error`) for every token that needs them.
    fn static_keys(&self) -> Result<&KeySet, AuthError> {
        self.static_keys
            .get_or_init(|| {
                let mut keys = KeySet::default();
                if let Some(doc) = &self.static_docs.0 {
                    keys = jwks::parse_jwks(doc, Strictness::Strict)
                        .map_err(|e| AuthError::Config(format!("jwt_jwks: {e}")))?;
                    if keys.is_empty() {
                        return Err(AuthError::Config("jwt_jwks: no usable signing key".to_owned()));
                    }
                }
                if let Some(pem) = &self.static_docs.1 {
                    keys.push(
                        jwks::parse_pem(pem)
                            .map_err(|e| AuthError::Config(format!("jwt_public_key_pem: {e}")))?,
                    );
                }
                Ok(keys)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Parses the static keys now, so that a malformed `jwt_jwks` or `jwt_public_key_pem` shows
    /// up at once (tests, and a host that wants to check its configuration at start-up).
    pub fn check_static_keys(&self) -> Result<(), AuthError> {
        self.static_keys().map(drop)
    }

    /// Reuses verified tokens across requests through the host key-value store, for at most
    /// the configured `token_cache_max_age_secs` and never past a token's `exp`; entries are
    /// keyed and sealed under `secret` (`jwt_cache_key`); `rng` draws their nonces.
    pub fn with_token_cache(
        mut self,
        kv: Box<dyn crate::kv::KeyValue>,
        max_age_secs: u64,
        secret: &SecretKey,
        rng: Csprng,
    ) -> Self {
        if max_age_secs > 0 {
            let seal = SecretKey::from_bytes(hmac_sha256(secret.expose_secret(), &[TOKEN_CACHE_SEAL_LABEL]));
            self.token_cache = Some(TokenCache {
                kv,
                max_age_secs,
                slot_key: zeroize::Zeroizing::new(hmac_sha256(
                    secret.expose_secret(),
                    &[TOKEN_CACHE_SLOT_LABEL],
                )),
                seal: AeadKey::new(Algorithm::XChaCha20Poly1305, &seal),
                rng: std::cell::RefCell::new(rng),
            });
        }
        self
    }

    /// Shares the JWKS URL's document across requests and instances through the host key-value
    /// store, sealed under a key derived from `secret` (`jwt_cache_key`), for `jwks_cache_secs`,
    /// with at most one fetch per `jwks_refetch_secs`; `rng` draws the seals' nonces.
    pub fn with_jwks_cache(
        mut self,
        kv: Box<dyn crate::kv::KeyValue>,
        secret: &SecretKey,
        rng: Csprng,
    ) -> Self {
        if self.jwks_url.is_some() {
            self.jwks_cache =
                Some(jwks::UrlCache::new(kv, secret, rng, self.jwks_cache_secs, self.jwks_refetch_secs));
        }
        self
    }

    /// The keys of the JWKS URL for token `t`. With the key-value cache: the cached document while
    /// it is fresh and has a key for `t`; otherwise one fetch, unless one was attempted within
    /// `jwks_refetch_secs` (then the fresh document, if any, answers: an unknown `kid` is refused).
    fn url_keys(
        &self,
        url: &str,
        t: &UnverifiedToken<'_>,
        fetcher: &dyn JwksFetcher,
        now: u64,
    ) -> Result<std::borrow::Cow<'_, KeySet>, AuthError> {
        use std::borrow::Cow;
        let Some(cache) = &self.jwks_cache else {
            let fetched = self
                .fetched
                .get_or_init(|| {
                    let doc = fetcher.fetch_jwks(url).map_err(drop)?;
                    jwks::parse_jwks(&doc, Strictness::Lenient).map_err(drop)
                })
                .as_ref()
                .map_err(|()| AuthError::JwksUnavailable)?;
            return Ok(Cow::Borrowed(fetched));
        };
        let cached =
            cache.document(url, now).and_then(|doc| jwks::parse_jwks(&doc, Strictness::Lenient).ok());
        if let Some(set) = &cached {
            if !matches!(set.select(t.alg, t.kid.as_deref()), Selection::NotFound) {
                return Ok(Cow::Owned(cached.unwrap_or_default()));
            }
        }
        if cache.attempted_recently(url, now) {
            return cached.map(Cow::Owned).ok_or(AuthError::JwksUnavailable);
        }
        cache.record_attempt(url, now);
        let fresh = fetcher
            .fetch_jwks(url)
            .ok()
            .and_then(|doc| jwks::parse_jwks(&doc, Strictness::Lenient).ok().map(|set| (doc, set)));
        match fresh {
            Some((doc, set)) => {
                cache.store_document(url, now, &doc);
                Ok(Cow::Owned(set))
            }
            None => cached.map(Cow::Owned).ok_or(AuthError::JwksUnavailable),
        }
    }

    /// Authenticates the raw `Authorization` header value, if any.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        fetcher: &dyn JwksFetcher,
    ) -> Result<Principal, AuthError> {
        self.authenticate_at(authorization, fetcher, now_secs())
    }

    fn authenticate_at(
        &self,
        authorization: Option<&str>,
        fetcher: &dyn JwksFetcher,
        now: u64,
    ) -> Result<Principal, AuthError> {
        match parse_authorization(authorization)? {
            Credential::Jwt(token) => self.authenticate_jwt_at(token, fetcher, now),
            // API keys are looked up in the store: `ops::authenticate` does that, not this room.
            Credential::ApiKey(_) => Err(AuthError::Invalid("api keys are checked against the store")),
        }
    }

    /// Authenticates a JWT (`Bearer <token>` already split off), through the verified-token cache.
    pub fn authenticate_jwt(&self, token: &str, fetcher: &dyn JwksFetcher) -> Result<Principal, AuthError> {
        self.authenticate_jwt_at(token, fetcher, now_secs())
    }

    fn authenticate_jwt_at(
        &self,
        token: &str,
        fetcher: &dyn JwksFetcher,
        now: u64,
    ) -> Result<Principal, AuthError> {
        {
            {
                // An HS256 (dev) token costs one HMAC: less than a cache lookup and store.
                let cacheable = jwt::parse(token).is_ok_and(|t| t.alg != Alg::Hs256);
                if cacheable {
                    if let Some(claims) = self.cached(token, now) {
                        return Ok(claims.into_principal());
                    }
                }
                let claims = self.verify_jwt_at(token, fetcher, now)?;
                if cacheable {
                    self.remember(token, &claims, now);
                }
                Ok(claims.into_principal())
            }
        }
    }

    /// The slot of a token: HMAC-SHA256 of it under the cache's slot key, in hex.
    fn cache_slot(cache: &TokenCache, token: &str) -> String {
        let mac = hmac_sha256(&cache.slot_key[..], &[token.as_bytes()]);
        format!("{TOKEN_CACHE_PREFIX}{}", hex32(&mac))
    }

    /// What an entry's seal binds: its slot, this authenticator's settings and its expiry.
    fn cache_aad(&self, slot: &str, until: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(TOKEN_CACHE_AAD_LABEL.len() + slot.len() + 48);
        aad.extend_from_slice(TOKEN_CACHE_AAD_LABEL);
        aad.extend_from_slice(&(slot.len() as u64).to_be_bytes());
        aad.extend_from_slice(slot.as_bytes());
        aad.extend_from_slice(self.fingerprint());
        aad.extend_from_slice(&until.to_be_bytes());
        aad
    }

    /// A verification of exactly this token, by an authenticator with the same settings and
    /// cache secret, still within its cache period (never past the token's `exp`). An entry past
    /// its period, or too short to be one, is deleted; one that does not open (forged, copied from
    /// another slot, or another deployment's) is a miss and is left alone.
    fn cached(&self, token: &str, now: u64) -> Option<VerifiedClaims> {
        let cache = self.token_cache.as_ref()?;
        let slot = Self::cache_slot(cache, token);
        let bytes = cache.kv.get(&slot).ok()??;
        let Some((until, sealed)) = bytes.split_first_chunk::<8>() else {
            let _ = cache.kv.delete(&slot);
            return None;
        };
        let until = u64::from_be_bytes(*until);
        if now >= until {
            let _ = cache.kv.delete(&slot);
            return None;
        }
        let plain = cache.seal.open(&self.cache_aad(&slot, until), sealed).ok()?;
        let claims: VerifiedClaims = serde_json::from_slice(&plain).ok()?;
        (now < claims.exp).then_some(claims)
    }

    fn remember(&self, token: &str, claims: &VerifiedClaims, now: u64) {
        let Some(cache) = &self.token_cache else { return };
        let until = claims.exp.min(now.saturating_add(cache.max_age_secs));
        if until <= now {
            return;
        }
        let Ok(plain) = serde_json::to_vec(claims) else { return };
        let slot = Self::cache_slot(cache, token);
        let sealed = cache.seal.seal(&mut cache.rng.borrow_mut(), &self.cache_aad(&slot, until), &plain);
        let mut record = Vec::with_capacity(8 + sealed.len());
        record.extend_from_slice(&until.to_be_bytes());
        record.extend_from_slice(&sealed);
        let _ = cache.kv.set(&slot, &record);
    }

    /// Verifies a JWT (signature, algorithm, `exp`/`nbf`/`iat`, `iss`/`aud`) and extracts its
    /// tenant and roles: the expensive step a verified-token cache skips.
    pub fn verify_jwt(&self, token: &str, fetcher: &dyn JwksFetcher) -> Result<VerifiedClaims, AuthError> {
        self.verify_jwt_at(token, fetcher, now_secs())
    }

    fn verify_jwt_at(
        &self,
        token: &str,
        fetcher: &dyn JwksFetcher,
        now: u64,
    ) -> Result<VerifiedClaims, AuthError> {
        let t = jwt::parse(token)?;
        let rules = ClaimRules {
            issuer: self.issuer.as_deref(),
            audience: self.audience.as_deref(),
            tenant_claim: &self.tenant_claim,
            roles_claim: &self.roles_claim,
            leeway_secs: self.leeway_secs,
            max_lifetime_secs: self.max_lifetime_secs,
            now_secs: now,
        };
        if t.alg == Alg::Hs256 {
            let secret = self.hs256_secret.as_ref().ok_or(AuthError::Invalid("algorithm not allowed"))?;
            return conclude(jwt::verify_hs256(&t, secret, &rules));
        }
        match self.static_keys()?.select(t.alg, t.kid.as_deref()) {
            Selection::Found(keys) => return try_keys(&t, &keys, &rules),
            Selection::WrongAlgorithm => return Err(AuthError::Invalid("algorithm does not match key")),
            Selection::NotFound => {}
        }
        let Some(url) = &self.jwks_url else {
            return Err(AuthError::Invalid("no key for this token"));
        };
        let fetched = self.url_keys(url, &t, fetcher, now)?;
        match fetched.select(t.alg, t.kid.as_deref()) {
            Selection::Found(keys) => try_keys(&t, &keys, &rules),
            Selection::WrongAlgorithm => Err(AuthError::Invalid("algorithm does not match key")),
            Selection::NotFound => Err(AuthError::Invalid("no key for this token")),
        }
    }
}

/// Tries candidate keys in order until one verifies the signature; the first such key decides.
fn try_keys(
    t: &UnverifiedToken<'_>,
    keys: &[&jwks::VerificationKey],
    rules: &ClaimRules<'_>,
) -> Result<VerifiedClaims, AuthError> {
    for key in keys {
        match jwt::verify_public(t, &key.key, rules) {
            Attempt::BadSignature => continue,
            other => return conclude(other),
        }
    }
    Err(AuthError::Invalid("signature does not verify"))
}

fn conclude(attempt: Attempt) -> Result<VerifiedClaims, AuthError> {
    match attempt {
        Attempt::Verified(claims) => Ok(claims),
        Attempt::BadSignature => Err(AuthError::Invalid("signature does not verify")),
        Attempt::Rejected(e) => Err(e),
    }
}

fn hex32(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The settings that decide whether a token verifies, hashed (length-prefixed, so unambiguous).
/// SHA-256 over every setting that decides whether a token verifies.
fn settings_fingerprint(a: &Authenticator) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(b"veil/v1/jwt-cache");
    field(&[u8::from(a.hs256_secret.is_some())]);
    field(a.hs256_secret.as_deref().map_or(&[][..], |s| &s[..]));
    for text in [&a.static_docs.0, &a.static_docs.1, &a.jwks_url, &a.issuer, &a.audience] {
        field(text.as_deref().unwrap_or("\u{0}unset").as_bytes());
    }
    field(a.tenant_claim.as_bytes());
    field(a.roles_claim.as_bytes());
    field(&a.leeway_secs.to_be_bytes());
    field(&a.max_lifetime_secs.map_or([0xff; 8], u64::to_be_bytes));
    h.finalize().into()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests;
