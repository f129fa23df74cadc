//! One Key Vault (or Managed HSM) key: `wrapkey` / `unwrapkey` with a [`Credential`]'s token,
//! the vault's answers classified into [`KmsError`]s, and its 401 challenges (which token
//! audience the vault wants) answered with one refreshed token.

use std::cell::RefCell;
use std::rc::Rc;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{
    json_code, Credential, Settings, ALG_A256KW, ALG_RSA_OAEP_256, VAULT_RESOURCE, WHO_TOKEN, WHO_VAULT,
};
use crate::crypto::secret::SecretKey;
use crate::kms::transport::{
    retry_after, transport_failure, with_retries, Attempt, Clock, HttpTransport, RetryPolicy,
    MAX_RESPONSE_BYTES,
};
use crate::kms::{
    checked_endpoint, context_bytes, is_local_host, Kek, KeyContext, KmsError, KmsStats, WrappedDek,
};

/// The label of the key context bound into every wrapped value (a frozen encoding: the
/// wrapped keys in the metadata DB depend on it).
const WRAP_LABEL: &str = "veil/v1/azure-kv-wrap";
// Key Vault and Managed HSM DNS suffixes (public, China, US Government clouds): one list, shared
// with the shape check of a scheme's `key_url` at creation.
use crate::scheme::VAULT_HOST_SUFFIXES;

pub(super) fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// The token audience for a vault host: `https://` + the host less its first label
/// (`myvault.vault.azure.net` → `https://vault.azure.net`); local emulators use the public one.
pub(super) fn resource_for(host: &str) -> String {
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
pub(super) fn challenge_resource(header: &str, vault_host: &str) -> Option<String> {
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
    pub(super) version: Option<String>,
    pub(super) alg: &'static str,
    api_version: String,
    pub(super) resource: RefCell<String>,
    pub(super) credential: Rc<Credential>,
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
        credential: Rc<Credential>,
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
            credential,
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
            let token = self.credential.token(&resource, fresh)?;
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

    /// What is sent to `wrapkey`: the data key ‖ SHA-256(`context_bytes(WRAP_LABEL, ctx)`), 64
    /// bytes (a frozen encoding: every Azure-wrapped key in the metadata DB is this).
    pub(crate) fn bound_value(dek: &SecretKey, ctx: KeyContext<'_>) -> Zeroizing<Vec<u8>> {
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
