//! Azure Key Vault (and Managed HSM) as the KEK: `wrapkey` / `unwrapkey` over the Key Vault REST
//! API, with a bearer token from client credentials, the App Service / Functions managed-identity
//! endpoint, or IMDS, through [`HttpTransport`].
//!
//! - Wrap: `POST {vault}/keys/{name}/{version}/wrapkey?api-version=…` with
//!   `{"alg": "RSA-OAEP-256" | "A256KW", "value": base64url(...)}`; with no version in the scheme's
//!   key URL the version segment is empty (`/keys/{name}//wrapkey`, as the Azure SDKs send it) and
//!   the vault uses the key's current version. The `kid` in the answer (with its version) is stored
//!   as `kek_id`, its last segment as `kek_version`; unwrap calls exactly `{kid}/unwrapkey`.
//! - The wrapped value is the data key followed by SHA-256 of the key context
//!   (`context_bytes("veil/v1/azure-kv-wrap", ctx)`), 64 bytes: RSA-OAEP and AES key wrap are
//!   non-malleable, so a wrapped key moved to another tenant, scheme or version does not unwrap.
//! - Algorithm: `RSA-OAEP-256` (RSA keys), or `A256KW` for Managed HSM (`*.managedhsm.azure.net`,
//!   `oct-HSM` keys); `azure_keyvault_wrap_alg` overrides.
//! - Tokens: one per resource (`https://vault.azure.net`, or the Managed HSM / sovereign-cloud
//!   equivalent), reused until 5 minutes before expiry; a 401 answer (with its `WWW-Authenticate`
//!   challenge) gets one refreshed token and one more try.

use std::cell::RefCell;
use std::rc::Rc;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::transport::{
    retry_after, transport_failure, unix_secs, with_retries, Attempt, Clock, HttpTransport, RetryPolicy,
    MAX_RESPONSE_BYTES,
};
use super::{
    checked_endpoint, context_bytes, is_local_host, Kek, KeyContext, KmsError, KmsStats, WrappedDek,
};
use crate::crypto::secret::SecretKey;
use crate::vars::{trimmed, ConfigError, Variables};

/// The Key Vault token audience (public cloud).
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// The Managed HSM token audience (public cloud).
pub const MANAGED_HSM_RESOURCE: &str = "https://managedhsm.azure.net";
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
pub const ALG_A256KW: &str = "A256KW";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const IMDS_API_VERSION: &str = "2018-02-01";
const WRAP_LABEL: &str = "veil/v1/azure-kv-wrap";
/// Tokens are renewed this long before they expire (or at half their lifetime, if shorter).
const REFRESH_MARGIN_SECS: i64 = 300;
const MAX_TOKEN_LEN: usize = 16 << 10;
/// Key Vault and Managed HSM DNS suffixes (public, China, US Government clouds).
const VAULT_HOST_SUFFIXES: &[&str] = &[
    ".vault.azure.net",
    ".managedhsm.azure.net",
    ".vault.azure.cn",
    ".managedhsm.azure.cn",
    ".vault.usgovcloudapi.net",
    ".managedhsm.usgovcloudapi.net",
    ".vault.microsoftazure.de",
];
const WHO_VAULT: &str = "Azure Key Vault";
const WHO_TOKEN: &str = "Azure token endpoint";

pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const DEFAULT_KEYVAULT_API_VERSION: &str = "7.5";
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Azure Key Vault: where tokens come from, and how wrapkey/unwrapkey are called (`azure_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub tenant_id: Option<String>,
    /// The app registration (with a secret) or the user-assigned managed identity (without).
    pub client_id: Option<String>,
    pub client_secret: Option<Zeroizing<String>>,
    pub authority_host: String,
    /// Managed identity on App Service / Functions (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`).
    pub identity_endpoint: Option<String>,
    pub identity_header: Option<Zeroizing<String>>,
    /// The IMDS token URL (`azure_imds_endpoint`, overridable for tests).
    pub imds_endpoint: String,
    /// Key Vault REST `api-version` (`azure_keyvault_api_version`).
    pub api_version: String,
    /// `azure_keyvault_wrap_alg`: `RSA-OAEP-256` or `A256KW`; default by the key URL's host.
    pub wrap_alg: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tenant_id: None,
            client_id: None,
            client_secret: None,
            authority_host: DEFAULT_AUTHORITY_HOST.into(),
            identity_endpoint: None,
            identity_header: None,
            imds_endpoint: DEFAULT_IMDS_ENDPOINT.into(),
            api_version: DEFAULT_KEYVAULT_API_VERSION.into(),
            wrap_alg: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("azure::Settings")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<secret>"))
            .field("authority_host", &self.authority_host)
            .field("identity_endpoint", &self.identity_endpoint)
            .field("identity_header", &self.identity_header.as_ref().map(|_| "<secret>"))
            .field("imds_endpoint", &self.imds_endpoint)
            .field("api_version", &self.api_version)
            .field("wrap_alg", &self.wrap_alg)
            .finish()
    }
}

impl Settings {
    /// Reads the `azure_*` variables; the API version and wrap algorithm are checked now, the
    /// token source when a key is first used.
    pub fn load(vars: &dyn Variables) -> Result<Self, ConfigError> {
        let api_version =
            vars.get("azure_keyvault_api_version").unwrap_or_else(|| DEFAULT_KEYVAULT_API_VERSION.into());
        if api_version.is_empty()
            || api_version.len() > 32
            || !api_version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ConfigError("variable azure_keyvault_api_version must look like 7.5".into()));
        }
        let wrap_alg = vars.get("azure_keyvault_wrap_alg").map(|a| a.trim().to_string());
        if let Some(a) = &wrap_alg {
            if a != ALG_RSA_OAEP_256 && a != ALG_A256KW {
                return Err(ConfigError(
                    "variable azure_keyvault_wrap_alg must be RSA-OAEP-256 or A256KW".into(),
                ));
            }
        }
        Ok(Settings {
            tenant_id: trimmed(vars, "azure_tenant_id"),
            client_id: trimmed(vars, "azure_client_id"),
            client_secret: vars.get("azure_client_secret").map(Zeroizing::new),
            authority_host: trimmed(vars, "azure_authority_host")
                .unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.into()),
            identity_endpoint: trimmed(vars, "azure_identity_endpoint"),
            identity_header: vars.get("azure_identity_header").map(Zeroizing::new),
            imds_endpoint: trimmed(vars, "azure_imds_endpoint")
                .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.into()),
            api_version,
            wrap_alg,
        })
    }
}

fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// Where bearer tokens come from, chosen by which variables are set.
enum TokenSource {
    /// `azure_tenant_id` + `azure_client_id` + `azure_client_secret`.
    ClientSecret { token_url: String, client_id: String, secret: Zeroizing<String> },
    /// `azure_identity_endpoint` + `azure_identity_header` (App Service / Functions).
    AppService { endpoint: String, header: Zeroizing<String>, client_id: Option<String> },
    /// Neither: the instance metadata service.
    Imds { endpoint: String, client_id: Option<String> },
}

struct CachedToken {
    resource: String,
    token: Zeroizing<String>,
    refresh_at: i64,
}

/// Gets and caches bearer tokens for Key Vault, shared by every Azure key a request touches.
pub struct Authenticator {
    source: TokenSource,
    policy: RetryPolicy,
    transport: Rc<dyn HttpTransport>,
    clock: Rc<dyn Clock>,
    stats: Rc<KmsStats>,
    cache: RefCell<Vec<CachedToken>>,
    /// The host key-value store, when there is one: tokens outlive the request that got them.
    shared: Option<Rc<dyn crate::kv::KeyValue>>,
}

/// A token as shared across requests in the host key-value store.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedToken {
    token: String,
    refresh_at: i64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("source", &self.source_name()).finish_non_exhaustive()
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl Authenticator {
    /// Client secret wins over the managed-identity endpoint, which wins over IMDS.
    pub fn new(
        s: &Settings,
        policy: RetryPolicy,
        transport: Rc<dyn HttpTransport>,
        clock: Rc<dyn Clock>,
        stats: Rc<KmsStats>,
    ) -> Result<Self, KmsError> {
        if let Some(id) = &s.client_id {
            if !valid_id(id) {
                return Err(KmsError::Misconfigured("azure_client_id is not a client id".into()));
            }
        }
        let source = if let Some(secret) = &s.client_secret {
            let (Some(tenant), Some(client_id)) = (&s.tenant_id, &s.client_id) else {
                return Err(KmsError::Misconfigured(
                    "azure_client_secret needs azure_tenant_id and azure_client_id".into(),
                ));
            };
            if !valid_id(tenant) {
                return Err(KmsError::Misconfigured("azure_tenant_id is not a tenant id or domain".into()));
            }
            let authority = s.authority_host.trim_end_matches('/');
            checked_endpoint(authority, "azure_authority_host")?;
            TokenSource::ClientSecret {
                token_url: format!("{authority}/{tenant}/oauth2/v2.0/token"),
                client_id: client_id.clone(),
                secret: secret.clone(),
            }
        } else if let Some(endpoint) = &s.identity_endpoint {
            let Some(header) = &s.identity_header else {
                return Err(KmsError::Misconfigured(
                    "azure_identity_endpoint needs azure_identity_header (IDENTITY_HEADER)".into(),
                ));
            };
            checked_endpoint(endpoint, "azure_identity_endpoint")?;
            TokenSource::AppService {
                endpoint: endpoint.clone(),
                header: header.clone(),
                client_id: s.client_id.clone(),
            }
        } else {
            checked_endpoint(&s.imds_endpoint, "azure_imds_endpoint")?;
            TokenSource::Imds { endpoint: s.imds_endpoint.clone(), client_id: s.client_id.clone() }
        };
        Ok(Authenticator {
            source,
            policy,
            transport,
            clock,
            stats,
            cache: RefCell::new(Vec::new()),
            shared: None,
        })
    }

    /// Shares tokens with later requests through the host key-value store (until 5 minutes
    /// before they expire, as within a request).
    pub fn with_shared_store(mut self, kv: Option<Rc<dyn crate::kv::KeyValue>>) -> Self {
        self.shared = kv;
        self
    }

    /// Where this source's token for `resource` lives in the shared store: a hash of who asks
    /// (source, client, endpoint) and for what.
    fn shared_key(&self, resource: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let (kind, who, at) = match &self.source {
            TokenSource::ClientSecret { token_url, client_id, .. } => {
                ("cs", client_id.as_str(), token_url.as_str())
            }
            TokenSource::AppService { endpoint, client_id, .. } => {
                ("mi", client_id.as_deref().unwrap_or(""), endpoint.as_str())
            }
            TokenSource::Imds { endpoint, client_id } => {
                ("imds", client_id.as_deref().unwrap_or(""), endpoint.as_str())
            }
        };
        for part in [kind, who, at, resource] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let hex: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("veil/azure-token/v1/{hex}")
    }

    /// `client-secret`, `managed-identity` (App Service / Functions) or `imds`.
    pub fn source_name(&self) -> &'static str {
        match self.source {
            TokenSource::ClientSecret { .. } => "client-secret",
            TokenSource::AppService { .. } => "managed-identity",
            TokenSource::Imds { .. } => "imds",
        }
    }

    /// A token for `resource`: the cached one unless it is near expiry or `fresh` is asked for.
    pub(crate) fn token(&self, resource: &str, fresh: bool) -> Result<Zeroizing<String>, KmsError> {
        let now = unix_secs(self.clock.as_ref());
        if !fresh {
            if let Some(t) = self.cache.borrow().iter().find(|t| t.resource == resource && now < t.refresh_at)
            {
                return Ok(t.token.clone());
            }
        }
        if let (false, Some(kv)) = (fresh, &self.shared) {
            let hit = kv
                .get(&self.shared_key(resource))
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<SharedToken>(&b).ok())
                .filter(|t| now < t.refresh_at);
            if let Some(t) = hit {
                let token = Zeroizing::new(t.token);
                self.cache.borrow_mut().push(CachedToken {
                    resource: resource.to_owned(),
                    token: token.clone(),
                    refresh_at: t.refresh_at,
                });
                return Ok(token);
            }
        }
        let got = self.fetch(resource)?;
        let token = got.token.clone();
        if let Some(kv) = &self.shared {
            let shared = SharedToken { token: got.token.to_string(), refresh_at: got.refresh_at };
            if let Ok(bytes) = serde_json::to_vec(&shared).map(Zeroizing::new) {
                let _ = kv.set(&self.shared_key(resource), &bytes);
            }
        }
        let mut cache = self.cache.borrow_mut();
        cache.retain(|t| t.resource != resource);
        cache.push(got);
        Ok(token)
    }

    fn request(&self, resource: &str) -> Result<http::Request<Vec<u8>>, KmsError> {
        let bad = || KmsError::Misconfigured("the token request could not be built".into());
        match &self.source {
            TokenSource::ClientSecret { token_url, client_id, secret } => {
                let body = Zeroizing::new(
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("grant_type", "client_credentials")
                        .append_pair("client_id", client_id)
                        .append_pair("client_secret", secret)
                        .append_pair("scope", &format!("{resource}/.default"))
                        .finish(),
                );
                http::Request::builder()
                    .method(http::Method::POST)
                    .uri(token_url.as_str())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("accept", "application/json")
                    .body(body.as_bytes().to_vec())
                    .map_err(|_| bad())
            }
            TokenSource::AppService { endpoint, header, client_id } => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("api-version", APP_SERVICE_API_VERSION).append_pair("resource", resource);
                if let Some(id) = client_id {
                    q.append_pair("client_id", id);
                }
                let value = http::HeaderValue::from_str(header).map_err(|_| {
                    KmsError::Misconfigured(
                        "azure_identity_header has characters not allowed in a header".into(),
                    )
                })?;
                http::Request::builder()
                    .method(http::Method::GET)
                    .uri(format!("{endpoint}?{}", q.finish()))
                    .header("x-identity-header", value)
                    .header("accept", "application/json")
                    .body(Vec::new())
                    .map_err(|_| bad())
            }
            TokenSource::Imds { endpoint, client_id } => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("api-version", IMDS_API_VERSION).append_pair("resource", resource);
                if let Some(id) = client_id {
                    q.append_pair("client_id", id);
                }
                http::Request::builder()
                    .method(http::Method::GET)
                    .uri(format!("{endpoint}?{}", q.finish()))
                    .header("metadata", "true")
                    .header("accept", "application/json")
                    .body(Vec::new())
                    .map_err(|_| bad())
            }
        }
    }

    fn fetch(&self, resource: &str) -> Result<CachedToken, KmsError> {
        let body = with_retries(&self.policy, self.clock.as_ref(), || {
            let req = match self.request(resource) {
                Ok(r) => r,
                Err(e) => return Attempt::Fail(e),
            };
            self.stats.add_http_call();
            match self.transport.send(req, self.policy.timeout) {
                Err(e) => transport_failure(WHO_TOKEN, e, &self.policy),
                Ok(resp) => classify_token(resp),
            }
        })?;
        let now = unix_secs(self.clock.as_ref());
        parse_token(&body, resource, now)
    }
}

fn json_code(body: &[u8], pointer: &str) -> String {
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer(pointer).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let code: String = code.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    if code.is_empty() {
        "unknown".into()
    } else {
        code
    }
}

fn classify_token(resp: http::Response<Vec<u8>>) -> Attempt<Zeroizing<Vec<u8>>> {
    let status = resp.status().as_u16();
    if status == 200 {
        let body = Zeroizing::new(resp.into_body());
        if body.len() > MAX_RESPONSE_BYTES {
            return Attempt::Fail(KmsError::BadResponse(format!("{WHO_TOKEN}: response too large")));
        }
        return Attempt::Done(body);
    }
    let detail = format!("{WHO_TOKEN}: HTTP {status} {}", json_code(resp.body(), "/error"));
    match status {
        429 => Attempt::Retry { after: retry_after(&resp), err: KmsError::Throttled(detail) },
        410 | 500..=599 => Attempt::Retry { after: retry_after(&resp), err: KmsError::Unavailable(detail) },
        400..=499 => Attempt::Fail(KmsError::Denied(detail)),
        _ => Attempt::Fail(KmsError::BadResponse(detail)),
    }
}

/// A number that token endpoints send either as JSON number or as a decimal string.
fn lenient_int(v: Option<&Value>) -> Option<i64> {
    let v = v?;
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn parse_token(body: &[u8], resource: &str, now: i64) -> Result<CachedToken, KmsError> {
    let bad = |what: &str| KmsError::BadResponse(format!("{WHO_TOKEN}: {what}"));
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("answer is not JSON"))?;
    let token = Zeroizing::new(
        v.get("access_token").and_then(Value::as_str).ok_or_else(|| bad("no access_token"))?.to_string(),
    );
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("access_token is not a bearer token"));
    }
    let expires_at = match (lenient_int(v.get("expires_on")), lenient_int(v.get("expires_in"))) {
        (Some(on), _) => on,
        (None, Some(secs)) => now.saturating_add(secs),
        // No lifetime given: use it for this call only.
        (None, None) => now,
    };
    let lifetime = expires_at.saturating_sub(now).max(0);
    let refresh_at = expires_at.saturating_sub(REFRESH_MARGIN_SECS.min(lifetime / 2));
    Ok(CachedToken { resource: resource.to_string(), token, refresh_at })
}

/// The token audience for a vault host: `https://` + the host less its first label
/// (`myvault.vault.azure.net` → `https://vault.azure.net`); local emulators use the public one.
fn resource_for(host: &str) -> String {
    if is_local_host(host) {
        return VAULT_RESOURCE.into();
    }
    match host.split_once('.') {
        Some((_, rest)) => format!("https://{}", rest.to_ascii_lowercase()),
        None => VAULT_RESOURCE.into(),
    }
}

/// The `resource` (or `scope` less `/.default`) of a `WWW-Authenticate: Bearer …` challenge, if
/// it is an https audience the vault host belongs to (the check the Azure SDKs make).
fn challenge_resource(header: &str, vault_host: &str) -> Option<String> {
    let params = header.trim().strip_prefix("Bearer")?.trim();
    let mut found = None;
    for part in params.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "resource" => found = Some(v.to_string()),
            "scope" if found.is_none() => found = Some(v.trim_end_matches("/.default").to_string()),
            _ => {}
        }
    }
    let res = found?.trim_end_matches('/').to_string();
    let res_host = res.strip_prefix("https://")?.to_ascii_lowercase();
    if res_host.is_empty() || res_host.contains(['/', '?', '#', '@']) {
        return None;
    }
    let vault_host = vault_host.to_ascii_lowercase();
    if is_local_host(&vault_host) || vault_host.ends_with(&format!(".{res_host}")) {
        Some(format!("https://{res_host}"))
    } else {
        None
    }
}

/// What a vault call came to, before the 401 handling.
enum Reply {
    Body(Zeroizing<Vec<u8>>),
    Challenge(Option<String>),
}

fn classify_vault(resp: http::Response<Vec<u8>>, unwrap: bool) -> Attempt<Reply> {
    let status = resp.status().as_u16();
    match status {
        200 => {
            let body = Zeroizing::new(resp.into_body());
            if body.len() > MAX_RESPONSE_BYTES {
                return Attempt::Fail(KmsError::BadResponse(format!("{WHO_VAULT}: response too large")));
            }
            return Attempt::Done(Reply::Body(body));
        }
        401 => {
            let challenge = resp
                .headers()
                .get(http::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Attempt::Done(Reply::Challenge(challenge));
        }
        _ => {}
    }
    let detail = format!("{WHO_VAULT}: HTTP {status} {}", json_code(resp.body(), "/error/code"));
    match status {
        429 => Attempt::Retry { after: retry_after(&resp), err: KmsError::Throttled(detail) },
        500..=599 => Attempt::Retry { after: retry_after(&resp), err: KmsError::Unavailable(detail) },
        403 => Attempt::Fail(KmsError::Denied(detail)),
        404 | 409 => Attempt::Fail(KmsError::KeyNotFound(detail)),
        400 if unwrap => Attempt::Fail(KmsError::UnwrapFailed),
        400 => Attempt::Fail(KmsError::Misconfigured(format!(
            "{detail}: check the key type, azure_keyvault_wrap_alg and azure_keyvault_api_version"
        ))),
        _ => Attempt::Fail(KmsError::BadResponse(detail)),
    }
}

/// One Key Vault key, as named by a scheme's key URL.
pub struct AzureKeyVault {
    /// `https://host[:port]`, as in the key URL.
    vault: String,
    vault_host: String,
    name: String,
    version: Option<String>,
    alg: &'static str,
    api_version: String,
    resource: RefCell<String>,
    tokens: Rc<Authenticator>,
    transport: Rc<dyn HttpTransport>,
    clock: Rc<dyn Clock>,
    policy: RetryPolicy,
    stats: Rc<KmsStats>,
}

impl std::fmt::Debug for AzureKeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureKeyVault")
            .field("vault", &self.vault)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn valid_segment(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl AzureKeyVault {
    /// Parses `https://<vault>.vault.azure.net/keys/<name>[/<version>]`; nothing is sent yet.
    pub fn new(
        s: &Settings,
        key_url: &str,
        policy: RetryPolicy,
        tokens: Rc<Authenticator>,
        transport: Rc<dyn HttpTransport>,
        clock: Rc<dyn Clock>,
        stats: Rc<KmsStats>,
    ) -> Result<Self, KmsError> {
        let bad = || {
            KmsError::Misconfigured(
                "the scheme's key_url must be https://<vault>.vault.azure.net/keys/<name>[/<version>]".into(),
            )
        };
        let uri = checked_endpoint(key_url.trim(), "the scheme's key_url")?;
        let host = uri.host().ok_or_else(bad)?.to_ascii_lowercase();
        let known = VAULT_HOST_SUFFIXES.iter().any(|sfx| host.ends_with(sfx) && host.len() > sfx.len());
        if !known && !is_local_host(&host) {
            return Err(KmsError::Misconfigured(
                "the scheme's key_url must name a Key Vault or Managed HSM host (*.vault.azure.net, \
                 *.managedhsm.azure.net or a sovereign-cloud equivalent)"
                    .into(),
            ));
        }
        let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let (name, version) = match segments.as_slice() {
            ["keys", name] => (*name, None),
            ["keys", name, version] => (*name, Some(*version)),
            _ => return Err(bad()),
        };
        if !valid_segment(name, 127) || version.is_some_and(|v| !valid_segment(v, 64)) {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?.as_str().to_ascii_lowercase();
        let vault = format!("{}://{authority}", uri.scheme_str().unwrap_or("https"));
        let alg = match s.wrap_alg.as_deref() {
            Some(ALG_A256KW) => ALG_A256KW,
            Some(ALG_RSA_OAEP_256) => ALG_RSA_OAEP_256,
            Some(_) => {
                return Err(KmsError::Misconfigured("azure_keyvault_wrap_alg is not supported".into()))
            }
            None if host.contains(".managedhsm.") => ALG_A256KW,
            None => ALG_RSA_OAEP_256,
        };
        Ok(AzureKeyVault {
            vault,
            resource: RefCell::new(resource_for(&host)),
            vault_host: host,
            name: name.to_string(),
            version: version.map(str::to_string),
            alg,
            api_version: s.api_version.clone(),
            tokens,
            transport,
            clock,
            policy,
            stats,
        })
    }

    /// Sends one vault operation: the cached token, one refresh on a 401, retries within budget.
    fn call(&self, url: &str, body: &[u8], unwrap: bool) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let mut fresh = false;
        loop {
            let resource = self.resource.borrow().clone();
            let token = self.tokens.token(&resource, fresh)?;
            let bearer = Zeroizing::new(format!("Bearer {}", token.as_str()));
            let reply = with_retries(&self.policy, self.clock.as_ref(), || {
                let Ok(auth) = http::HeaderValue::from_str(&bearer) else {
                    return Attempt::Fail(KmsError::BadResponse(format!("{WHO_TOKEN}: unusable token")));
                };
                let req = http::Request::builder()
                    .method(http::Method::POST)
                    .uri(url)
                    .header("authorization", auth)
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .body(body.to_vec());
                let Ok(req) = req else {
                    return Attempt::Fail(KmsError::Misconfigured("the key URL is not a valid URL".into()));
                };
                self.stats.add_http_call();
                match self.transport.send(req, self.policy.timeout) {
                    Err(e) => transport_failure(WHO_VAULT, e, &self.policy),
                    Ok(resp) => classify_vault(resp, unwrap),
                }
            })?;
            match reply {
                Reply::Body(b) => return Ok(b),
                Reply::Challenge(_) if fresh => {
                    return Err(KmsError::Denied(format!("{WHO_VAULT}: HTTP 401 with a fresh token")))
                }
                Reply::Challenge(challenge) => {
                    if let Some(r) =
                        challenge.as_deref().and_then(|c| challenge_resource(c, &self.vault_host))
                    {
                        *self.resource.borrow_mut() = r;
                    }
                    fresh = true;
                }
            }
        }
    }

    fn key_prefix(&self) -> String {
        format!("{}/keys/{}/", self.vault, self.name.to_ascii_lowercase())
    }

    fn bound_value(dek: &SecretKey, ctx: KeyContext<'_>) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(64));
        v.extend_from_slice(dek.expose_secret());
        v.extend_from_slice(&Sha256::digest(context_bytes(WRAP_LABEL, ctx)));
        v
    }
}

#[derive(Deserialize)]
struct KeyOperationResult {
    kid: Option<String>,
    value: String,
}

impl Kek for AzureKeyVault {
    fn wrap(&self, dek: &SecretKey, ctx: KeyContext<'_>) -> Result<WrappedDek, KmsError> {
        let value = Self::bound_value(dek, ctx);
        let body =
            serde_json::to_vec(&serde_json::json!({"alg": self.alg, "value": b64url().encode(&*value)}))
                .map_err(|_| KmsError::Misconfigured("the wrapkey request could not be built".into()))?;
        let url = format!(
            "{}/keys/{}/{}/wrapkey?api-version={}",
            self.vault,
            self.name,
            self.version.as_deref().unwrap_or(""),
            self.api_version
        );
        let resp = self.call(&url, &body, false)?;
        let parsed: KeyOperationResult = serde_json::from_slice(&resp).map_err(|_| {
            KmsError::BadResponse(format!("{WHO_VAULT}: wrapkey answer is not the expected JSON"))
        })?;
        let blob = b64url()
            .decode(parsed.value.as_bytes())
            .map_err(|_| KmsError::BadResponse(format!("{WHO_VAULT}: wrapkey value is not base64url")))?;
        let kid = parsed.kid.unwrap_or_default();
        let kid_lower = kid.to_ascii_lowercase();
        let version = kid_lower
            .strip_prefix(&self.key_prefix())
            .and_then(|v| kid.get(kid.len() - v.len()..))
            .map(str::to_string);
        let Some(version) = version.filter(|v| valid_segment(v, 64)) else {
            return Err(KmsError::BadResponse(format!(
                "{WHO_VAULT}: wrapkey kid does not name a version of the key"
            )));
        };
        if self.version.as_deref().is_some_and(|v| !v.eq_ignore_ascii_case(&version)) || blob.is_empty() {
            return Err(KmsError::BadResponse(format!(
                "{WHO_VAULT}: wrapkey answered for another key version"
            )));
        }
        Ok(WrappedDek { blob, kek_id: kid, kek_version: version })
    }

    fn unwrap(&self, wrapped: &WrappedDek, ctx: KeyContext<'_>) -> Result<SecretKey, KmsError> {
        // Only ever send the token to the scheme's own vault and key.
        let kid = wrapped.kek_id.trim_end_matches('/');
        let rest = kid.to_ascii_lowercase();
        let version_ok = rest
            .strip_prefix(&self.key_prefix())
            .is_some_and(|v| valid_segment(v, 64) && v.eq_ignore_ascii_case(&wrapped.kek_version));
        if !version_ok {
            return Err(KmsError::KeyNotFound(format!(
                "{WHO_VAULT}: the stored kid is not a version of the scheme's key"
            )));
        }
        let body = serde_json::to_vec(
            &serde_json::json!({"alg": self.alg, "value": b64url().encode(&wrapped.blob)}),
        )
        .map_err(|_| KmsError::Misconfigured("the unwrapkey request could not be built".into()))?;
        let url = format!("{kid}/unwrapkey?api-version={}", self.api_version);
        let resp = self.call(&url, &body, true)?;
        let parsed: KeyOperationResult = serde_json::from_slice(&resp).map_err(|_| {
            KmsError::BadResponse(format!("{WHO_VAULT}: unwrapkey answer is not the expected JSON"))
        })?;
        let b64_value = Zeroizing::new(parsed.value);
        let value =
            Zeroizing::new(b64url().decode(b64_value.as_bytes()).map_err(|_| {
                KmsError::BadResponse(format!("{WHO_VAULT}: unwrapkey value is not base64url"))
            })?);
        if value.len() != 64 {
            return Err(KmsError::UnwrapFailed);
        }
        let expect = Sha256::digest(context_bytes(WRAP_LABEL, ctx));
        if !bool::from(value[32..].ct_eq(expect.as_slice())) {
            return Err(KmsError::UnwrapFailed);
        }
        SecretKey::try_from_slice(&value[..32]).ok_or(KmsError::UnwrapFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::ids::{KeyVersion, SchemeName, TenantId};
    use crate::kms::transport::testing::{FakeClock, RecordedRequest, ScriptedTransport};
    use crate::kms::transport::TransportError;

    const VAULT: &str = "https://contoso.vault.azure.net";
    const KID: &str = "https://contoso.vault.azure.net/keys/veil-kek/0123456789abcdef0123456789abcdef";
    const T0: u64 = 1_700_000_000;

    struct Fx {
        t: Rc<ScriptedTransport>,
        clock: Rc<FakeClock>,
        stats: Rc<KmsStats>,
        kv: AzureKeyVault,
    }

    fn client_secret() -> Settings {
        Settings {
            tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
            client_id: Some("00000000-1111-2222-3333-444444444444".into()),
            client_secret: Some(Zeroizing::new("s3cr3t&value".into())),
            ..Settings::default()
        }
    }

    fn fx(s: &Settings, key_url: &str) -> Fx {
        fx_policy(s, key_url, RetryPolicy::default())
    }

    fn fx_policy(s: &Settings, key_url: &str, policy: RetryPolicy) -> Fx {
        let t = Rc::new(ScriptedTransport::default());
        let clock = Rc::new(FakeClock::at_unix(T0));
        let stats = Rc::new(KmsStats::default());
        let auth = Rc::new(
            Authenticator::new(s, policy, t.clone(), clock.clone(), stats.clone()).expect("authenticator"),
        );
        let kv = AzureKeyVault::new(s, key_url, policy, auth, t.clone(), clock.clone(), stats.clone())
            .expect("key vault");
        Fx { t, clock, stats, kv }
    }

    fn ids() -> (TenantId, SchemeName) {
        (TenantId::parse("acme").expect("t"), SchemeName::parse("pii").expect("s"))
    }

    fn token_ok(t: &ScriptedTransport, token: &str, expires_in: u64) {
        t.respond(
            200,
            &[],
            format!(r#"{{"token_type":"Bearer","expires_in":{expires_in},"access_token":"{token}"}}"#)
                .as_bytes(),
        );
    }

    /// An honest vault: wraps by echoing the value (the fake "encryption" is the identity), so
    /// unwrap of that blob returns what was wrapped.
    fn wrap_ok(t: &ScriptedTransport, kid: &'static str) {
        t.then(move |r: &RecordedRequest| {
            let v = r.body_json()["value"].as_str().unwrap_or("").to_string();
            crate::kms::transport::testing::response(
                200,
                &[],
                format!(r#"{{"kid":"{kid}","value":"{v}"}}"#).as_bytes(),
            )
        });
    }

    fn unwrap_ok(t: &ScriptedTransport) {
        t.then(|r: &RecordedRequest| {
            let v = r.body_json()["value"].as_str().unwrap_or("").to_string();
            crate::kms::transport::testing::response(
                200,
                &[],
                format!(r#"{{"kid":"x","value":"{v}"}}"#).as_bytes(),
            )
        });
    }

    #[test]
    fn client_credentials_token_then_wrap_and_unwrap_with_the_full_kid() {
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        token_ok(&f.t, "tok-1", 3600);
        wrap_ok(&f.t, KID);
        unwrap_ok(&f.t);
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let w = f.kv.wrap(&SecretKey::from_bytes([7; 32]), ctx).expect("wrap");
        assert_eq!(w.kek_id, KID);
        assert_eq!(w.kek_version, "0123456789abcdef0123456789abcdef");
        let back = f.kv.unwrap(&w, ctx).expect("unwrap");
        assert_eq!(back.expose_secret(), &[7u8; 32]);

        let reqs = f.t.requests();
        assert_eq!(reqs.len(), 3, "one token for both calls");
        let tok = &reqs[0];
        assert_eq!(tok.method, "POST");
        assert_eq!(
            tok.uri,
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert_eq!(tok.header("content-type"), Some("application/x-www-form-urlencoded"));
        let form: Vec<(String, String)> = form_urlencoded::parse(&tok.body).into_owned().collect();
        assert!(form.contains(&("grant_type".into(), "client_credentials".into())));
        assert!(form.contains(&("scope".into(), "https://vault.azure.net/.default".into())));
        assert!(form.contains(&("client_secret".into(), "s3cr3t&value".into())));
        let wrap = &reqs[1];
        assert_eq!(wrap.uri, "https://contoso.vault.azure.net/keys/veil-kek//wrapkey?api-version=7.5");
        assert_eq!(wrap.header("authorization"), Some("Bearer tok-1"));
        assert_eq!(wrap.body_json()["alg"], "RSA-OAEP-256");
        let sent = b64url().decode(wrap.body_json()["value"].as_str().unwrap_or("")).unwrap_or_default();
        assert_eq!(sent.len(), 64, "data key + context digest");
        assert_eq!(&sent[..32], &[7u8; 32]);
        let unwrap = &reqs[2];
        assert_eq!(unwrap.uri, format!("{KID}/unwrapkey?api-version=7.5"));
        assert_eq!(unwrap.body_json()["alg"], "RSA-OAEP-256");
        assert_eq!(f.stats.http_calls(), 3);
        assert!(!format!("{:?}", f.kv).contains("s3cr3t"));
    }

    #[test]
    fn a_versioned_key_url_wraps_with_that_version() {
        let f = fx(&client_secret(), KID);
        token_ok(&f.t, "tok", 3600);
        wrap_ok(&f.t, KID);
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect("wrap");
        assert_eq!(f.t.requests()[1].uri, format!("{KID}/wrapkey?api-version=7.5"));
        // An answer for another version of the key is refused.
        let f = fx(&client_secret(), KID);
        token_ok(&f.t, "tok", 3600);
        wrap_ok(&f.t, "https://contoso.vault.azure.net/keys/veil-kek/ffffffffffffffffffffffffffffffff");
        assert_eq!(
            f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("e").code(),
            "kms_bad_response"
        );
    }

    #[test]
    fn the_context_is_bound_and_the_kid_must_be_the_schemes_key() {
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        token_ok(&f.t, "tok", 3600);
        wrap_ok(&f.t, KID);
        unwrap_ok(&f.t);
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let w = f.kv.wrap(&SecretKey::from_bytes([7; 32]), ctx).expect("wrap");
        let other = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::new(2).expect("v") };
        assert_eq!(f.kv.unwrap(&w, other).err(), Some(KmsError::UnwrapFailed));
        let n = f.t.requests().len();
        for kid in [
            "https://evil.example.com/keys/veil-kek/0123456789abcdef0123456789abcdef",
            "https://contoso.vault.azure.net/keys/other/0123456789abcdef0123456789abcdef",
            "https://contoso.vault.azure.net/keys/veil-kek/",
        ] {
            let bad = WrappedDek { kek_id: kid.into(), ..w.clone() };
            assert!(matches!(f.kv.unwrap(&bad, ctx), Err(KmsError::KeyNotFound(_))), "{kid}");
        }
        let bad = WrappedDek { kek_version: "ffff".into(), ..w.clone() };
        assert!(matches!(f.kv.unwrap(&bad, ctx), Err(KmsError::KeyNotFound(_))));
        assert_eq!(f.t.requests().len(), n, "nothing sent for a foreign kid");
    }

    #[test]
    fn managed_identity_endpoint_token() {
        let s = Settings {
            identity_endpoint: Some("http://127.0.0.1:41741/msi/token".into()),
            identity_header: Some(Zeroizing::new("hdr-secret".into())),
            client_id: Some("user-assigned-id".into()),
            ..Settings::default()
        };
        let f = fx(&s, &format!("{VAULT}/keys/veil-kek"));
        assert_eq!(f.kv.tokens.source_name(), "managed-identity");
        f.t.respond(
            200,
            &[],
            format!(r#"{{"access_token":"mi-tok","expires_on":"{}","resource":"https://vault.azure.net","token_type":"Bearer"}}"#, T0 + 3600)
                .as_bytes(),
        );
        wrap_ok(&f.t, KID);
        let (t, sc) = ids();
        f.kv.wrap(
            &SecretKey::from_bytes([1; 32]),
            KeyContext { tenant: &t, scheme: &sc, version: KeyVersion::FIRST },
        )
        .expect("wrap");
        let r = &f.t.requests()[0];
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.uri,
            "http://127.0.0.1:41741/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net&client_id=user-assigned-id"
        );
        assert_eq!(r.header("x-identity-header"), Some("hdr-secret"));
        assert_eq!(f.t.requests()[1].header("authorization"), Some("Bearer mi-tok"));
    }

    #[test]
    fn imds_token_and_source_precedence() {
        let s = Settings {
            imds_endpoint: "http://169.254.169.254/metadata/identity/oauth2/token".into(),
            ..Settings::default()
        };
        let f = fx(&s, &format!("{VAULT}/keys/veil-kek"));
        assert_eq!(f.kv.tokens.source_name(), "imds");
        f.t.respond(200, &[], br#"{"access_token":"imds-tok","expires_in":"3599","token_type":"Bearer"}"#);
        wrap_ok(&f.t, KID);
        let (t, sc) = ids();
        f.kv.wrap(
            &SecretKey::from_bytes([1; 32]),
            KeyContext { tenant: &t, scheme: &sc, version: KeyVersion::FIRST },
        )
        .expect("wrap");
        let r = &f.t.requests()[0];
        assert_eq!(
            r.uri,
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
        );
        assert_eq!(r.header("metadata"), Some("true"));

        let with_mi = Settings {
            identity_endpoint: Some("http://localhost:8081/msi/token".into()),
            identity_header: Some(Zeroizing::new("h".into())),
            ..client_secret()
        };
        let mk = |s: &Settings| {
            Authenticator::new(
                s,
                RetryPolicy::default(),
                Rc::new(ScriptedTransport::default()),
                Rc::new(FakeClock::at_unix(0)),
                Rc::new(KmsStats::default()),
            )
        };
        assert_eq!(mk(&with_mi).map(|a| a.source_name()), Ok("client-secret"));
        let no_secret = Settings { client_secret: None, ..with_mi.clone() };
        assert_eq!(mk(&no_secret).map(|a| a.source_name()), Ok("managed-identity"));
        let no_header = Settings { identity_header: None, ..no_secret };
        assert!(matches!(mk(&no_header), Err(KmsError::Misconfigured(_))));
        let no_tenant = Settings { tenant_id: None, ..client_secret() };
        assert!(matches!(mk(&no_tenant), Err(KmsError::Misconfigured(_))));
        let dbg = format!("{:?}", mk(&client_secret()));
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
    }

    #[test]
    fn tokens_are_shared_with_later_requests_through_the_host_store() {
        let shared: Rc<dyn crate::kv::KeyValue> = Rc::new(crate::kv::mem::MemKv::default());
        let t = Rc::new(ScriptedTransport::default());
        let clock = Rc::new(FakeClock::at_unix(T0));
        let (tenant, scheme) = ids();
        let ctx = KeyContext { tenant: &tenant, scheme: &scheme, version: KeyVersion::FIRST };
        // two requests, each with its own providers, as two instances would have
        for (i, expect_token_call) in [(0, true), (1, false)] {
            let stats = Rc::new(KmsStats::default());
            let p = RetryPolicy::default();
            let auth = Rc::new(
                Authenticator::new(&client_secret(), p, t.clone(), clock.clone(), stats.clone())
                    .expect("authenticator")
                    .with_shared_store(Some(shared.clone())),
            );
            let kv = AzureKeyVault::new(
                &client_secret(),
                &format!("{VAULT}/keys/veil-kek"),
                p,
                auth,
                t.clone(),
                clock.clone(),
                stats,
            )
            .expect("key vault");
            if expect_token_call {
                token_ok(&t, "tok-shared", 3600);
            }
            wrap_ok(&t, KID);
            kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).unwrap_or_else(|e| panic!("request {i}: {e}"));
        }
        let auths: Vec<_> =
            t.requests().iter().filter_map(|r| r.header("authorization").map(str::to_string)).collect();
        assert_eq!(auths, ["Bearer tok-shared", "Bearer tok-shared"]);
        assert_eq!(t.requests().len(), 3, "one token request, two wraps");
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn tokens_are_reused_until_five_minutes_before_expiry() {
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        token_ok(&f.t, "tok-1", 3600);
        wrap_ok(&f.t, KID);
        f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect("wrap");
        f.clock.advance(Duration::from_secs(3600 - 301));
        wrap_ok(&f.t, KID);
        f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect("wrap, cached token");
        f.clock.advance(Duration::from_secs(2));
        token_ok(&f.t, "tok-2", 3600);
        wrap_ok(&f.t, KID);
        f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect("wrap, new token");
        let reqs = f.t.requests();
        let auths: Vec<_> =
            reqs.iter().filter_map(|r| r.header("authorization").map(str::to_string)).collect();
        assert_eq!(auths, ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]);
        assert_eq!(reqs.len(), 5);
        assert_eq!(f.t.pending(), 0);
    }

    #[test]
    fn a_401_challenge_refreshes_the_token_once() {
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let challenge = r#"Bearer authorization="https://login.microsoftonline.com/72f988bf", resource="https://vault.azure.net""#;
        token_ok(&f.t, "stale", 3600);
        f.t.respond(
            401,
            &[("www-authenticate", challenge)],
            br#"{"error":{"code":"Unauthorized","message":"secret body"}}"#,
        );
        token_ok(&f.t, "fresh", 3600);
        wrap_ok(&f.t, KID);
        f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect("wrap after refresh");
        let auths: Vec<_> =
            f.t.requests().iter().filter_map(|r| r.header("authorization").map(str::to_string)).collect();
        assert_eq!(auths, ["Bearer stale", "Bearer fresh"]);
        assert!(f.clock.slept().is_empty());

        // A second 401 is a refusal, after exactly one refresh.
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        token_ok(&f.t, "a", 3600);
        f.t.respond(401, &[("www-authenticate", challenge)], b"");
        token_ok(&f.t, "b", 3600);
        f.t.respond(401, &[("www-authenticate", challenge)], b"secret body");
        let e = f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("denied");
        assert_eq!(e.code(), "kms_denied");
        assert!(!format!("{e:?}").contains("secret body"));
        assert_eq!(f.t.requests().len(), 4);
    }

    #[test]
    fn challenge_resources_are_checked_against_the_vault_host() {
        let c = |r: &str| {
            format!(r#"Bearer authorization="https://login.microsoftonline.com/t", resource="{r}""#)
        };
        assert_eq!(
            challenge_resource(&c("https://vault.azure.net"), "contoso.vault.azure.net").as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(challenge_resource(&c("https://evil.example"), "contoso.vault.azure.net"), None);
        assert_eq!(
            challenge_resource(
                r#"Bearer authorization="https://login.microsoftonline.com/t", scope="https://managedhsm.azure.net/.default""#,
                "hsm1.managedhsm.azure.net"
            )
            .as_deref(),
            Some("https://managedhsm.azure.net")
        );
        assert_eq!(challenge_resource("Basic realm=x", "contoso.vault.azure.net"), None);
        assert_eq!(resource_for("contoso.vault.azure.cn"), "https://vault.azure.cn");
        assert_eq!(resource_for("127.0.0.1"), VAULT_RESOURCE);
    }

    #[test]
    fn throttling_honours_retry_after_within_the_budget() {
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        token_ok(&f.t, "tok", 3600);
        f.t.respond(429, &[("retry-after", "1")], b"");
        f.t.respond(429, &[("retry-after", "1")], b"");
        wrap_ok(&f.t, KID);
        f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect("wrap after throttling");
        assert_eq!(f.clock.slept(), vec![Duration::from_secs(1); 2]);

        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        token_ok(&f.t, "tok", 3600);
        for _ in 0..4 {
            f.t.respond(429, &[("retry-after", "1")], b"");
        }
        let e = f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("throttled");
        assert_eq!(e.code(), "kms_throttled");
        assert_eq!(f.t.requests().len(), 5);
        assert_eq!(f.clock.slept().iter().sum::<Duration>(), Duration::from_secs(3));

        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        token_ok(&f.t, "tok", 3600);
        f.t.respond(429, &[("retry-after", "30")], b"");
        assert_eq!(f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("e").code(), "kms_throttled");
        assert!(f.clock.slept().is_empty(), "a Retry-After beyond the budget is not waited for");

        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        token_ok(&f.t, "tok", 3600);
        for _ in 0..4 {
            f.t.respond(503, &[("retry-after", "2")], b"");
        }
        assert_eq!(f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("e").code(), "kms_unavailable");
        assert_eq!(f.clock.slept(), vec![Duration::from_secs(2); 3]);

        let p = RetryPolicy { max_retries: 0, ..RetryPolicy::default() };
        let f = fx_policy(&client_secret(), &format!("{VAULT}/keys/veil-kek"), p);
        token_ok(&f.t, "tok", 3600);
        f.t.respond(429, &[("retry-after", "1")], b"");
        assert_eq!(f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("e").code(), "kms_throttled");
    }

    #[test]
    fn vault_and_token_errors_map_to_stable_codes() {
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let w =
            WrappedDek { blob: vec![1; 256], kek_id: KID.into(), kek_version: KID[KID.len() - 32..].into() };
        for (status, wrap_code, unwrap_code) in [
            (403, "kms_denied", "kms_denied"),
            (404, "kms_key_not_found", "kms_key_not_found"),
            (400, "misconfigured", "kms_unwrap_failed"),
            (302, "kms_bad_response", "kms_bad_response"),
        ] {
            let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
            token_ok(&f.t, "tok", 3600);
            let body = br#"{"error":{"code":"KeyNotFound","message":"A key with (name/id) veil-kek was not found secret-ish"}}"#;
            f.t.respond(status, &[], body);
            let e = f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("wrap");
            assert_eq!(e.code(), wrap_code, "{status}");
            assert!(!format!("{e:?} {e}").contains("secret-ish"));
            f.t.respond(status, &[], body);
            assert_eq!(f.kv.unwrap(&w, ctx).expect_err("unwrap").code(), unwrap_code, "{status}");
        }
        // Malformed answers.
        for body in [&b"<html>"[..], br#"{"kid":"x"}"#, br#"{"kid":"x","value":"!!"}"#] {
            let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
            token_ok(&f.t, "tok", 3600);
            f.t.respond(200, &[], body);
            assert_eq!(
                f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("w").code(),
                "kms_bad_response"
            );
        }
        // Token endpoint refusals and outages.
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        f.t.respond(
            401,
            &[],
            br#"{"error":"invalid_client","error_description":"AADSTS7000215 secret-ish"}"#,
        );
        let e = f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("w");
        assert_eq!(e.code(), "kms_denied");
        assert!(format!("{e:?}").contains("invalid_client") && !format!("{e:?}").contains("secret-ish"));
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        f.t.respond(200, &[], br#"{"token_type":"Bearer"}"#);
        assert_eq!(
            f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("w").code(),
            "kms_bad_response"
        );
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        f.t.fail(TransportError::Timeout);
        assert_eq!(f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("w").code(), "kms_unavailable");
        assert_eq!(f.t.requests().len(), 1);
        let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
        token_ok(&f.t, "tok", 3600);
        f.t.fail(TransportError::Timeout);
        assert_eq!(f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("w").code(), "kms_unavailable");
        assert_eq!(f.t.requests().len(), 2, "a slow vault is not retried");
        assert_eq!(f.stats.http_calls(), 2);
    }

    #[test]
    fn key_urls_hosts_and_algorithms() {
        let mk = |s: &Settings, url: &str| {
            let t: Rc<ScriptedTransport> = Rc::new(ScriptedTransport::default());
            let c = Rc::new(FakeClock::at_unix(0));
            let st = Rc::new(KmsStats::default());
            let auth =
                Rc::new(Authenticator::new(s, RetryPolicy::default(), t.clone(), c.clone(), st.clone())?);
            AzureKeyVault::new(s, url, RetryPolicy::default(), auth, t, c, st)
        };
        let s = client_secret();
        let hsm = mk(&s, "https://hsm1.managedhsm.azure.net/keys/kek").expect("hsm");
        assert_eq!(hsm.alg, ALG_A256KW);
        assert_eq!(*hsm.resource.borrow(), MANAGED_HSM_RESOURCE);
        let kv = mk(&s, "https://contoso.vault.azure.net/keys/kek/").expect("kv");
        assert_eq!((kv.alg, kv.version.as_deref()), (ALG_RSA_OAEP_256, None));
        let forced = Settings { wrap_alg: Some("A256KW".into()), ..client_secret() };
        assert_eq!(mk(&forced, "http://127.0.0.1:8200/keys/kek").map(|k| k.alg).ok(), Some(ALG_A256KW));
        for bad in [
            "https://evil.example.com/keys/kek",
            "http://contoso.vault.azure.net/keys/kek",
            "https://contoso.vault.azure.net/secrets/kek",
            "https://contoso.vault.azure.net/keys/kek/v1/extra",
            "https://contoso.vault.azure.net/keys/k%2Fek",
            "https://contoso.vault.azure.net/keys/kek?x=1",
            "https://user@contoso.vault.azure.net/keys/kek",
            "https://.vault.azure.net/keys/kek",
            "not a url",
        ] {
            assert!(matches!(mk(&s, bad), Err(KmsError::Misconfigured(_))), "{bad}");
        }
    }

    #[test]
    fn the_token_lifetime_parser() {
        let t = parse_token(br#"{"access_token":"a","expires_in":3600}"#, "r", 1000).expect("t");
        assert_eq!(t.refresh_at, 1000 + 3600 - 300);
        let t = parse_token(br#"{"access_token":"a","expires_on":"2000"}"#, "r", 1000).expect("t");
        assert_eq!(t.refresh_at, 2000 - 300);
        let t = parse_token(br#"{"access_token":"a","expires_in":"120"}"#, "r", 1000).expect("t");
        assert_eq!(t.refresh_at, 1000 + 60, "short tokens are renewed at half their life");
        let t = parse_token(br#"{"access_token":"a"}"#, "r", 1000).expect("t");
        assert_eq!(t.refresh_at, 1000);
        assert!(parse_token(br#"{"access_token":"a b"}"#, "r", 0).is_err());
        assert!(parse_token(br#"{"access_token":""}"#, "r", 0).is_err());
    }
}
