//! Key-encryption keys: wrap and unwrap data keys. The KEK never leaves its provider.
//!
//! `local` is the dev-only provider; `aws` (AWS KMS) and `azure` (Azure Key Vault) call their
//! vault over outbound HTTP through [`transport::HttpTransport`]; [`Keks`] picks one per scheme.

pub mod allow;
pub mod aws;
pub mod azure;
pub mod cache;
pub(crate) mod endpoint;
pub mod local;
mod settings;
pub mod transport;

#[cfg(test)]
mod binding_vectors;
#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod sigv4_suite;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use crate::scheme::KekRef;
pub use settings::{LazySettings, Settings};

/// What a wrapped data key is bound to; providers that support it (local AAD, AWS encryption
/// context) refuse to unwrap under any other binding.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    pub tenant: &'a TenantId,
    pub scheme: &'a SchemeName,
    pub version: KeyVersion,
}

/// A data key as stored: only ever wrapped, with the KEK that wrapped it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDek {
    pub blob: Vec<u8>,
    pub kek_id: String,
    pub kek_version: String,
}

impl fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDek")
            .field("blob_len", &self.blob.len())
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .finish()
    }
}

/// Provider failures, as stable codes for callers; details stay in `detail` for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KmsError {
    /// The provider cannot be used in this deployment (e.g. `local` outside dev mode).
    DevModeRequired,
    /// The provider's settings are missing or wrong.
    Misconfigured(String),
    /// The provider did not answer.
    Unavailable(String),
    /// The provider refused (permissions).
    Denied(String),
    /// The key (or key version) is unknown to the provider. Callers see it as `kms_denied`, like
    /// [`KmsError::Denied`], so that the two cannot be told apart; the operator log keeps which.
    KeyNotFound(String),
    /// The wrapped key does not unwrap (wrong KEK, wrong context, corrupted blob).
    UnwrapFailed,
    /// The provider kept rate-limiting us after the bounded retries.
    Throttled(String),
    /// The provider answered something that is not a valid response (malformed JSON, base64, size).
    BadResponse(String),
}

impl KmsError {
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::DevModeRequired => "dev_mode_required",
            KmsError::Misconfigured(_) => "misconfigured",
            KmsError::Unavailable(_) => "kms_unavailable",
            KmsError::Denied(_) => "kms_denied",
            // One code for both: a tenant must not learn which of the operator's keys exist.
            KmsError::KeyNotFound(_) => "kms_denied",
            KmsError::UnwrapFailed => "kms_unwrap_failed",
            KmsError::Throttled(_) => "kms_throttled",
            KmsError::BadResponse(_) => "kms_bad_response",
        }
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsError::DevModeRequired => f.write_str("the local KEK is only available in dev mode"),
            KmsError::Misconfigured(m) => write!(f, "KEK misconfigured: {m}"),
            KmsError::Unavailable(_) => f.write_str("the key vault did not answer"),
            KmsError::Denied(_) | KmsError::KeyNotFound(_) => {
                f.write_str("the key vault refused the request, or does not have that key")
            }
            KmsError::UnwrapFailed => f.write_str("a stored data key does not unwrap under its KEK"),
            KmsError::Throttled(_) => f.write_str("the key vault is rate-limiting requests; retry later"),
            KmsError::BadResponse(_) => f.write_str("the key vault sent an invalid response"),
        }
    }
}

/// A key-encryption key.
pub trait Kek {
    fn wrap(&self, dek: &SecretKey, ctx: KeyContext<'_>) -> Result<WrappedDek, KmsError>;
    fn unwrap(&self, wrapped: &WrappedDek, ctx: KeyContext<'_>) -> Result<SecretKey, KmsError>;
}

/// Length-prefixed binding of a data key to its tenant, scheme and version (used as AAD).
pub(crate) fn context_bytes(label: &str, ctx: KeyContext<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    for field in [label.as_bytes(), ctx.tenant.as_str().as_bytes(), ctx.scheme.as_str().as_bytes()] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&ctx.version.get().to_be_bytes());
    out
}

/// How much KMS work one request did, for a response header (`veil-kms-calls`) that tests and
/// benchmarks read. Counted per provider call: `wraps`/`unwraps` are `Kek` calls (by [`Counted`]),
/// `http_calls` every HTTP request the providers sent (retries and token requests included).
#[derive(Debug, Default)]
pub struct KmsStats {
    wraps: Cell<u32>,
    unwraps: Cell<u32>,
    http_calls: Cell<u32>,
}

impl KmsStats {
    pub fn wraps(&self) -> u32 {
        self.wraps.get()
    }
    pub fn unwraps(&self) -> u32 {
        self.unwraps.get()
    }
    pub fn http_calls(&self) -> u32 {
        self.http_calls.get()
    }
    /// `wraps=1, unwraps=2, http=3` (a header value).
    pub fn header_value(&self) -> String {
        format!("wraps={}, unwraps={}, http={}", self.wraps(), self.unwraps(), self.http_calls())
    }
    pub(crate) fn add_wrap(&self) {
        self.wraps.set(self.wraps.get().saturating_add(1));
    }
    pub(crate) fn add_unwrap(&self) {
        self.unwraps.set(self.unwraps.get().saturating_add(1));
    }
    pub(crate) fn add_http_call(&self) {
        self.http_calls.set(self.http_calls.get().saturating_add(1));
    }
}

/// Any KEK, with its wraps and unwraps counted in a shared [`KmsStats`].
pub struct Counted<K> {
    inner: K,
    stats: Rc<KmsStats>,
}

impl<K: Kek> Counted<K> {
    pub fn new(inner: K, stats: Rc<KmsStats>) -> Self {
        Counted { inner, stats }
    }
}

impl<K: Kek> Kek for Counted<K> {
    fn wrap(&self, dek: &SecretKey, ctx: KeyContext<'_>) -> Result<WrappedDek, KmsError> {
        self.stats.add_wrap();
        self.inner.wrap(dek, ctx)
    }
    fn unwrap(&self, wrapped: &WrappedDek, ctx: KeyContext<'_>) -> Result<SecretKey, KmsError> {
        self.stats.add_unwrap();
        self.inner.unwrap(wrapped, ctx)
    }
}

/// Checks a vault or token endpoint URL: `https://`, or `http://` only to a loopback or
/// link-local address (local emulators, the managed-identity endpoint, IMDS), because the bodies
/// carry data keys and bearer tokens. No user info, query or fragment.
pub(crate) fn checked_endpoint(url: &str, what: &str) -> Result<http::Uri, KmsError> {
    let bad =
        || KmsError::Misconfigured(format!("{what} must be an https:// URL (http:// only to loopback)"));
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    let host = uri.host().ok_or_else(bad)?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    if authority.contains('@') || uri.query().is_some() || url.contains('#') || host.is_empty() {
        return Err(bad());
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_local_host(host) => Ok(uri),
        _ => Err(bad()),
    }
}

/// Loopback (`localhost`, 127.0.0.0/8, `::1`) or IPv4 link-local (169.254.0.0/16, IMDS).
pub(crate) fn is_local_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match h.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.is_loopback() || v4.is_link_local(),
        Ok(std::net::IpAddr::V6(v6)) => v6.is_loopback(),
        Err(_) => false,
    }
}

/// What the KEK providers are built from: dev mode and the local KEK for `local`, the vault
/// settings (read on first use) for AWS KMS and Azure Key Vault.
#[derive(Debug, Clone, Copy)]
pub struct KekSettings<'a> {
    pub dev_mode: bool,
    /// `local_kek`, still base64; decoded only when a scheme uses the local KEK.
    pub local_kek_b64: Option<&'a str>,
    pub vaults: &'a LazySettings,
}

/// The KEK providers of one request: built on first use, one per KEK the request touches, sharing
/// one transport, clock, counter and (for Azure) one token credential.
pub struct Keks<'a> {
    settings: KekSettings<'a>,
    transport: Rc<dyn transport::HttpTransport>,
    clock: Rc<dyn transport::Clock>,
    stats: Rc<KmsStats>,
    azure_credential: Option<Rc<azure::Credential>>,
    providers: HashMap<(&'static str, String), Box<dyn Kek>>,
    /// The host key-value store, for state that outlives a request (Azure bearer tokens).
    shared: Option<Rc<dyn crate::kv::KeyValue>>,
}

impl<'a> Keks<'a> {
    pub fn new(
        settings: KekSettings<'a>,
        transport: Rc<dyn transport::HttpTransport>,
        clock: Rc<dyn transport::Clock>,
    ) -> Self {
        Keks {
            settings,
            transport,
            clock,
            stats: Rc::new(KmsStats::default()),
            azure_credential: None,
            providers: HashMap::new(),
            shared: None,
        }
    }

    /// No outbound HTTP (native builds and tests): AWS and Azure calls fail as misconfigured.
    pub fn offline(settings: KekSettings<'a>) -> Self {
        Keks::new(settings, Rc::new(transport::NoTransport), Rc::new(transport::SystemClock))
    }

    /// Lets providers keep state across requests in the host key-value store.
    pub fn with_shared_store(mut self, kv: Rc<dyn crate::kv::KeyValue>) -> Self {
        self.shared = Some(kv);
        self
    }

    /// Counts of this request's KMS work.
    pub fn stats(&self) -> &KmsStats {
        &self.stats
    }

    /// The provider for a scheme's KEK, built (and its settings checked) on first use.
    pub fn get(&mut self, kek: &KekRef, rng: &mut Csprng) -> Result<&dyn Kek, KmsError> {
        let id = match kek {
            KekRef::Local => String::new(),
            KekRef::AwsKms { key_id } => key_id.clone(),
            KekRef::AzureKeyvault { key_url } => key_url.clone(),
        };
        let slot = (kek.provider(), id);
        if !self.providers.contains_key(&slot) {
            let built = self.build(kek, rng)?;
            self.providers.insert(slot.clone(), built);
        }
        match self.providers.get(&slot) {
            Some(k) => Ok(k.as_ref()),
            None => Err(KmsError::Misconfigured("KEK provider missing".into())),
        }
    }

    /// Whether vault URLs may be `http://` or private (dev mode, or `kms_allow_private_endpoints`).
    fn allow_private(&self, s: &Settings) -> bool {
        self.settings.dev_mode || s.allow_private_endpoints
    }

    fn build(&mut self, kek: &KekRef, rng: &mut Csprng) -> Result<Box<dyn Kek>, KmsError> {
        // Read only for a vault: the local KEK needs no KMS variable.
        let vaults = self.settings.vaults;
        let kms_settings = || vaults.get().map_err(|e| KmsError::Misconfigured(e.0));
        let policy = || kms_settings().map(transport::RetryPolicy::from_settings);
        Ok(match kek {
            KekRef::Local => {
                let local = local::LocalKek::from_config(
                    self.settings.dev_mode,
                    self.settings.local_kek_b64,
                    rng.fork(),
                )?;
                Box::new(Counted::new(local, self.stats.clone()))
            }
            KekRef::AwsKms { key_id } => {
                let s = kms_settings()?;
                if let Some(endpoint) = &s.aws.endpoint {
                    endpoint::check_vault_url(endpoint, "aws_kms_endpoint", self.allow_private(s))
                        .map_err(KmsError::Misconfigured)?;
                }
                let kms = aws::AwsKms::new(
                    &kms_settings()?.aws,
                    key_id,
                    policy()?,
                    self.transport.clone(),
                    self.clock.clone(),
                    self.stats.clone(),
                )?;
                Box::new(Counted::new(kms, self.stats.clone()))
            }
            KekRef::AzureKeyvault { key_url } => {
                // Every use, not only at creation: a scheme made in dev mode keeps its URL.
                let s = kms_settings()?;
                endpoint::check_vault_url(key_url, "the scheme's key_url", self.allow_private(s))
                    .map_err(KmsError::Misconfigured)?;
                let credential = match &self.azure_credential {
                    Some(c) => c.clone(),
                    None => {
                        let c = Rc::new(
                            azure::Credential::new(
                                &kms_settings()?.azure,
                                policy()?,
                                self.transport.clone(),
                                self.clock.clone(),
                                self.stats.clone(),
                            )?
                            .with_shared_store(self.shared.clone()),
                        );
                        self.azure_credential = Some(c.clone());
                        c
                    }
                };
                let kv = azure::AzureKeyVault::new(
                    &kms_settings()?.azure,
                    key_url,
                    policy()?,
                    credential,
                    self.transport.clone(),
                    self.clock.clone(),
                    self.stats.clone(),
                )?;
                Box::new(Counted::new(kv, self.stats.clone()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::transport::testing::{FakeClock, RecordedRequest, ScriptedTransport};
    use super::*;
    use crate::config::Config;
    use crate::vars::tests::MapVars;

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn keks<'a>(t: &Rc<ScriptedTransport>, config: &'a Config) -> Keks<'a> {
        Keks::new(config.kek_settings(), t.clone(), Rc::new(FakeClock::at_unix(1_700_000_000)))
    }

    #[test]
    fn keks_build_each_provider_once_and_count_calls() {
        let config = Config::load(
            &MapVars::default()
                .with("dev_mode", "true")
                .with("local_kek", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
                .with("aws_access_key_id", "AKID")
                .with("aws_secret_access_key", "secret")
                .with("azure_tenant_id", "tenant")
                .with("azure_client_id", "client")
                .with("azure_client_secret", "secret"),
        )
        .expect("config");
        let t = Rc::new(ScriptedTransport::default());
        let mut k = keks(&t, &config);
        let mut rng = Csprng::from_seed([3; 32]);
        let (tenant, scheme) = (TenantId::parse("t").expect("t"), SchemeName::parse("s").expect("s"));
        let ctx = KeyContext { tenant: &tenant, scheme: &scheme, version: KeyVersion::FIRST };
        let dek = SecretKey::from_bytes([4; 32]);

        let local = k.get(&KekRef::Local, &mut rng).expect("local");
        let w = local.wrap(&dek, ctx).expect("wrap");
        let local = k.get(&KekRef::Local, &mut rng).expect("local again");
        assert!(local.unwrap(&w, ctx).is_ok(), "the same local KEK is reused");

        let aws = KekRef::AwsKms { key_id: ARN.into() };
        t.respond(200, &[], format!(r#"{{"CiphertextBlob":"AAAA","KeyId":"{ARN}"}}"#).as_bytes());
        k.get(&aws, &mut rng).expect("aws").wrap(&dek, ctx).expect("aws wrap");

        // Two Azure keys share one token.
        let echo = |kid: &'static str| {
            move |r: &RecordedRequest| {
                let v = r.body_json()["value"].as_str().unwrap_or("").to_string();
                transport::testing::response(
                    200,
                    &[],
                    format!(r#"{{"kid":"{kid}","value":"{v}"}}"#).as_bytes(),
                )
            }
        };
        t.respond(200, &[], br#"{"access_token":"tok","expires_in":3600}"#);
        t.then(echo("https://a.vault.azure.net/keys/k1/v1"));
        t.then(echo("https://a.vault.azure.net/keys/k2/v9"));
        for url in ["https://a.vault.azure.net/keys/k1", "https://a.vault.azure.net/keys/k2"] {
            let r = KekRef::AzureKeyvault { key_url: url.into() };
            k.get(&r, &mut rng).expect("azure").wrap(&dek, ctx).expect("azure wrap");
        }
        assert_eq!(t.requests().len(), 4);
        let s = k.stats();
        assert_eq!((s.wraps(), s.unwraps(), s.http_calls()), (4, 1, 4));
        assert_eq!(s.header_value(), "wraps=4, unwraps=1, http=4");
    }

    #[test]
    fn keks_report_misconfiguration() {
        let config = Config::load(&MapVars::default()).expect("config");
        let t = Rc::new(ScriptedTransport::default());
        let mut k = keks(&t, &config);
        let mut rng = Csprng::from_seed([3; 32]);
        let aws = KekRef::AwsKms { key_id: ARN.into() };
        assert!(matches!(k.get(&aws, &mut rng).err(), Some(KmsError::Misconfigured(_))));
        assert!(matches!(k.get(&KekRef::Local, &mut rng).err(), Some(KmsError::DevModeRequired)));
        let azure = KekRef::AzureKeyvault { key_url: "https://evil.example/keys/k".into() };
        assert!(matches!(k.get(&azure, &mut rng).err(), Some(KmsError::Misconfigured(_))));
        assert!(t.requests().is_empty());
    }

    #[test]
    fn no_transport_is_a_configuration_error() {
        let config = Config::load(
            &MapVars::default().with("aws_access_key_id", "AKID").with("aws_secret_access_key", "secret"),
        )
        .expect("config");
        let mut k =
            Keks::new(config.kek_settings(), Rc::new(transport::NoTransport), Rc::new(FakeClock::at_unix(0)));
        let mut rng = Csprng::from_seed([3; 32]);
        let (tenant, scheme) = (TenantId::parse("t").expect("t"), SchemeName::parse("s").expect("s"));
        let ctx = KeyContext { tenant: &tenant, scheme: &scheme, version: KeyVersion::FIRST };
        let aws = KekRef::AwsKms { key_id: ARN.into() };
        let e = k.get(&aws, &mut rng).expect("aws").wrap(&SecretKey::from_bytes([1; 32]), ctx);
        assert!(matches!(e, Err(KmsError::Misconfigured(_))));
    }

    #[test]
    fn endpoints_must_be_https_off_loopback() {
        for ok in [
            "https://kms.us-east-1.amazonaws.com",
            "http://127.0.0.1:5000",
            "http://localhost:8080/msi/token",
            "http://[::1]:9",
            "http://169.254.169.254/metadata/identity/oauth2/token",
        ] {
            assert!(checked_endpoint(ok, "x").is_ok(), "{ok}");
        }
        for bad in [
            "http://kms.us-east-1.amazonaws.com",
            "https://user:pw@host",
            "https://host/?q=1",
            "https://host/#f",
            "ftp://127.0.0.1",
            "127.0.0.1:80",
            "",
        ] {
            assert!(checked_endpoint(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn new_error_codes_are_stable() {
        assert_eq!(KmsError::Throttled(String::new()).code(), "kms_throttled");
        assert_eq!(KmsError::BadResponse(String::new()).code(), "kms_bad_response");
        assert!(!KmsError::Throttled("HTTP 429 detail".into()).to_string().contains("detail"));
    }
}
