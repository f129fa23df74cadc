//! Bearer tokens for Key Vault: from client credentials (`azure_client_secret`), the App Service /
//! Functions managed-identity endpoint (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`) or IMDS; one per
//! resource, reused until 5 minutes before expiry, within a request and (through the host
//! key-value store) across requests.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;
use zeroize::Zeroizing;

use super::{json_code, Settings, WHO_TOKEN};
use crate::kms::transport::{
    retry_after, transport_failure, unix_secs, with_retries, Attempt, Clock, HttpTransport, RetryPolicy,
    MAX_RESPONSE_BYTES,
};
use crate::kms::{checked_endpoint, KmsError, KmsStats};

const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const IMDS_API_VERSION: &str = "2018-02-01";
/// Tokens are renewed this long before they expire (or at half their lifetime, if shorter).
const REFRESH_MARGIN_SECS: i64 = 300;
const MAX_TOKEN_LEN: usize = 16 << 10;

/// Where bearer tokens come from, chosen by which variables are set.
enum TokenSource {
    /// `azure_tenant_id` + `azure_client_id` + `azure_client_secret`.
    ClientSecret { token_url: String, client_id: String, secret: Zeroizing<String> },
    /// `azure_identity_endpoint` + `azure_identity_header` (App Service / Functions).
    AppService { endpoint: String, header: Zeroizing<String>, client_id: Option<String> },
    /// Neither: the instance metadata service.
    Imds { endpoint: String, client_id: Option<String> },
}

pub(super) struct CachedToken {
    resource: String,
    token: Zeroizing<String>,
    pub(super) refresh_at: i64,
}

/// Gets and caches bearer tokens for Key Vault, shared by every Azure key a request touches.
pub struct Credential {
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

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("source", &self.source_name()).finish_non_exhaustive()
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl Credential {
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
        Ok(Credential {
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

pub(super) fn parse_token(body: &[u8], resource: &str, now: i64) -> Result<CachedToken, KmsError> {
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
