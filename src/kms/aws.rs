//! AWS KMS as the KEK: `TrentService.Encrypt` wraps a data key, `TrentService.Decrypt` unwraps it,
//! over the JSON 1.1 protocol, SigV4-signed (the `aws-sigv4` crate), through [`HttpTransport`].
//!
//! Every call carries the encryption context
//! `{"veil:tenant": <tenant>, "veil:scheme": <scheme>, "veil:version": "<decimal key version>"}`,
//! so KMS itself refuses to decrypt a wrapped key under any other tenant, scheme or version, and
//! IAM policies can condition on `kms:EncryptionContext:veil:tenant`.
//!
//! Stored with the wrapped key: `kek_id` = the key ARN that KMS reports for the Encrypt (so an
//! alias may later point elsewhere without orphaning old data keys) and `kek_version` = `""`: KMS
//! has no caller-visible key versions; the ciphertext blob names its backing key internally, and
//! automatic key rotation keeps old backing keys able to decrypt.
//!
//! `GenerateDataKey` is not used: Veil generates the data key itself, and wrapping it costs the
//! same one call as GenerateDataKey would.

use std::rc::Rc;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::transport::{
    retry_after, transport_failure, with_retries, Attempt, Clock, HttpTransport, RetryPolicy,
    MAX_RESPONSE_BYTES,
};
use super::{checked_endpoint, Kek, KeyContext, KmsError, KmsStats, WrappedDek};
use crate::crypto::secret::SecretKey;
use crate::vars::{trimmed, ConfigError, Variables};

/// The encryption-context keys Veil binds every data key to (see the module docs).
pub const CONTEXT_TENANT: &str = "veil:tenant";
pub const CONTEXT_SCHEME: &str = "veil:scheme";
pub const CONTEXT_VERSION: &str = "veil:version";

const TARGET_ENCRYPT: &str = "TrentService.Encrypt";
const TARGET_DECRYPT: &str = "TrentService.Decrypt";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const SIGNING_NAME: &str = "kms";
const WHO: &str = "AWS KMS";

/// AWS KMS credentials and endpoint (`aws_*`, docs/kms.md).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// `aws_region`; when unset, the region in the key ARN is used.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Zeroizing<String>>,
    pub session_token: Option<Zeroizing<String>>,
    /// `aws_kms_endpoint`; default `https://kms.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
}

impl Settings {
    /// Reads `aws_region`, `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token` and
    /// `aws_kms_endpoint`; they are checked when a key is first used ([`AwsKms::new`]).
    pub fn load(vars: &dyn Variables) -> Result<Self, ConfigError> {
        Ok(Settings {
            region: trimmed(vars, "aws_region"),
            access_key_id: trimmed(vars, "aws_access_key_id"),
            secret_access_key: vars.get("aws_secret_access_key").map(Zeroizing::new),
            session_token: vars.get("aws_session_token").map(Zeroizing::new),
            endpoint: trimmed(vars, "aws_kms_endpoint"),
        })
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("aws::Settings")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<secret>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<secret>"))
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// One AWS KMS key, as named by a scheme (key ARN, key id, alias name or alias ARN).
pub struct AwsKms {
    key_id: String,
    region: String,
    endpoint: String,
    identity: Identity,
    transport: Rc<dyn HttpTransport>,
    clock: Rc<dyn Clock>,
    policy: RetryPolicy,
    stats: Rc<KmsStats>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms")
            .field("key_id", &self.key_id)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// Checks the settings and the key id; nothing is sent yet.
    pub fn new(
        settings: &Settings,
        key_id: &str,
        policy: RetryPolicy,
        transport: Rc<dyn HttpTransport>,
        clock: Rc<dyn Clock>,
        stats: Rc<KmsStats>,
    ) -> Result<Self, KmsError> {
        let key_id = key_id.trim();
        if key_id.is_empty() || key_id.len() > 2048 || key_id.chars().any(char::is_control) {
            return Err(KmsError::Misconfigured("the scheme's AWS KMS key_id is empty or invalid".into()));
        }
        let region = match (&settings.region, arn_region(key_id)) {
            (Some(r), _) => r.clone(),
            (None, Some(r)) => r.to_string(),
            (None, None) => {
                return Err(KmsError::Misconfigured(
                    "set aws_region (or name the key by its ARN, which carries the region)".into(),
                ))
            }
        };
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(KmsError::Misconfigured("aws_region is not a region name".into()));
        }
        let endpoint = match &settings.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None if region.starts_with("cn-") => format!("https://kms.{region}.amazonaws.com.cn"),
            None => format!("https://kms.{region}.amazonaws.com"),
        };
        checked_endpoint(&endpoint, "aws_kms_endpoint")?;
        let (Some(akid), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) else {
            return Err(KmsError::Misconfigured(
                "set aws_access_key_id and aws_secret_access_key for AWS KMS".into(),
            ));
        };
        let token = settings.session_token.as_ref().map(|t| t.as_str().to_string());
        let identity: Identity = Credentials::new(akid.as_str(), secret.as_str(), token, None, "veil").into();
        Ok(AwsKms { key_id: key_id.to_string(), region, endpoint, identity, transport, clock, policy, stats })
    }

    /// Signs and sends one JSON 1.1 call, retrying within the budget; the 200 body on success.
    fn call(&self, target: &str, body: &[u8], decrypt: bool) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        with_retries(&self.policy, self.clock.as_ref(), || {
            let req = match self.signed_request(target, body) {
                Ok(r) => r,
                Err(e) => return Attempt::Fail(e),
            };
            self.stats.add_http_call();
            match self.transport.send(req, self.policy.timeout) {
                Err(e) => transport_failure(WHO, e, &self.policy),
                Ok(resp) => classify(resp, decrypt),
            }
        })
    }

    fn signed_request(&self, target: &str, body: &[u8]) -> Result<http::Request<Vec<u8>>, KmsError> {
        let uri = format!("{}/", self.endpoint);
        let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", target)];
        let signature_headers = sigv4_headers(
            &self.identity,
            &self.region,
            SIGNING_NAME,
            self.clock.now(),
            SigningSettings::default(),
            ("POST", &uri, &headers, body),
        )?;
        let mut req = http::Request::builder().method(http::Method::POST).uri(uri.as_str());
        for (k, v) in headers.iter().copied().chain(signature_headers.iter().map(|(k, v)| (*k, v.as_str()))) {
            let value = http::HeaderValue::from_str(v).map_err(|_| {
                KmsError::Misconfigured(
                    "an AWS credential contains characters not allowed in a header".into(),
                )
            })?;
            req = req.header(k, value);
        }
        req.body(body.to_vec())
            .map_err(|_| KmsError::Misconfigured("aws_kms_endpoint is not a valid URL".into()))
    }
}

/// The request parts SigV4 signs: method, URI, headers (without `host`, taken from the URI), body.
pub(crate) type SignInput<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);

/// The headers SigV4 adds to a request (`x-amz-date`, `authorization`, `x-amz-security-token`,
/// `x-amz-content-sha256` when the settings ask for it). Never panics on the inputs Veil passes:
/// the URI was checked to have a host.
pub(crate) fn sigv4_headers(
    identity: &Identity,
    region: &str,
    service: &str,
    time: std::time::SystemTime,
    settings: SigningSettings,
    (method, uri, headers, body): SignInput<'_>,
) -> Result<Vec<(&'static str, String)>, KmsError> {
    let signable = SignableRequest::new(method, uri, headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|_| KmsError::Misconfigured("aws_kms_endpoint is not a valid URL".into()))?;
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|_| KmsError::Misconfigured("AWS signing parameters are incomplete".into()))?
        .into();
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|_| KmsError::Misconfigured("the request could not be SigV4-signed".into()))?
        .into_parts();
    let (added, _params) = instructions.into_parts();
    Ok(added.into_iter().map(|h| (h.name(), h.value().to_string())).collect())
}

/// The region in a KMS key or alias ARN (`arn:<partition>:kms:<region>:<account>:...`).
fn arn_region(key_id: &str) -> Option<&str> {
    let mut parts = key_id.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

/// Whether a stored key ARN belongs to the key the scheme names (aliases cannot be checked here;
/// KMS checks that the ciphertext was made under the stored key).
fn stored_key_matches(scheme_key: &str, stored: &str) -> bool {
    if scheme_key.starts_with("arn:") && scheme_key.contains(":key/") {
        return scheme_key == stored;
    }
    if !scheme_key.contains(':') && !scheme_key.starts_with("alias/") {
        return stored == scheme_key || stored.ends_with(&format!(":key/{scheme_key}"));
    }
    true
}

/// The error code of a KMS error response: `x-amzn-ErrorType` or the body's `__type`.
fn error_code(resp: &http::Response<Vec<u8>>) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
    }
    let raw = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| serde_json::from_slice::<ErrorBody>(resp.body()).ok().and_then(|b| b.kind))
        .unwrap_or_default();
    // "com.amazonaws.kms#NotFoundException" or "NotFoundException:http://internal..."
    let code = raw.rsplit('#').next().unwrap_or("").split(':').next().unwrap_or("");
    let code: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).take(64).collect();
    if code.is_empty() {
        "unknown".into()
    } else {
        code
    }
}

/// Maps one response to done / retry / fail (stable codes; details carry status and code only).
fn classify(resp: http::Response<Vec<u8>>, decrypt: bool) -> Attempt<Zeroizing<Vec<u8>>> {
    let status = resp.status().as_u16();
    if status == 200 {
        let body = Zeroizing::new(resp.into_body());
        if body.len() > MAX_RESPONSE_BYTES {
            return Attempt::Fail(KmsError::BadResponse(format!("{WHO}: response too large")));
        }
        return Attempt::Done(body);
    }
    let code = error_code(&resp);
    let detail = format!("{WHO}: HTTP {status} {code}");
    match code.as_str() {
        "ThrottlingException" => {
            return Attempt::Retry { after: retry_after(&resp), err: KmsError::Throttled(detail) }
        }
        "KMSInternalException" | "DependencyTimeoutException" | "KeyUnavailableException" => {
            return Attempt::Retry { after: retry_after(&resp), err: KmsError::Unavailable(detail) }
        }
        "NotFoundException"
        | "DisabledException"
        | "KMSInvalidStateException"
        | "InvalidKeyUsageException"
        | "InvalidArnException" => return Attempt::Fail(KmsError::KeyNotFound(detail)),
        "InvalidCiphertextException" | "IncorrectKeyException" if decrypt => {
            return Attempt::Fail(KmsError::UnwrapFailed)
        }
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "InvalidGrantTokenException" => return Attempt::Fail(KmsError::Denied(detail)),
        _ => {}
    }
    match status {
        429 => Attempt::Retry { after: retry_after(&resp), err: KmsError::Throttled(detail) },
        500..=599 => Attempt::Retry { after: retry_after(&resp), err: KmsError::Unavailable(detail) },
        401 | 403 => Attempt::Fail(KmsError::Denied(detail)),
        400..=499 => Attempt::Fail(KmsError::Denied(detail)),
        _ => Attempt::Fail(KmsError::BadResponse(detail)),
    }
}

fn context_json(ctx: KeyContext<'_>) -> serde_json::Value {
    serde_json::json!({
        CONTEXT_TENANT: ctx.tenant.as_str(),
        CONTEXT_SCHEME: ctx.scheme.as_str(),
        CONTEXT_VERSION: ctx.version.get().to_string(),
    })
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Kek for AwsKms {
    fn wrap(&self, dek: &SecretKey, ctx: KeyContext<'_>) -> Result<WrappedDek, KmsError> {
        #[derive(Deserialize)]
        struct EncryptResponse {
            #[serde(rename = "CiphertextBlob")]
            ciphertext_blob: String,
            #[serde(rename = "KeyId")]
            key_id: String,
        }
        let plaintext = Zeroizing::new(b64().encode(dek.expose_secret()));
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({
                "KeyId": self.key_id,
                "Plaintext": plaintext.as_str(),
                "EncryptionContext": context_json(ctx),
            }))
            .map_err(|_| KmsError::Misconfigured("the Encrypt request could not be built".into()))?,
        );
        let resp = self.call(TARGET_ENCRYPT, &body, false)?;
        let parsed: EncryptResponse = serde_json::from_slice(&resp)
            .map_err(|_| KmsError::BadResponse(format!("{WHO}: Encrypt answer is not the expected JSON")))?;
        let blob = b64()
            .decode(parsed.ciphertext_blob.as_bytes())
            .map_err(|_| KmsError::BadResponse(format!("{WHO}: CiphertextBlob is not base64")))?;
        if blob.is_empty() || parsed.key_id.is_empty() {
            return Err(KmsError::BadResponse(format!("{WHO}: Encrypt answer is incomplete")));
        }
        Ok(WrappedDek { blob, kek_id: parsed.key_id, kek_version: String::new() })
    }

    fn unwrap(&self, wrapped: &WrappedDek, ctx: KeyContext<'_>) -> Result<SecretKey, KmsError> {
        #[derive(Deserialize)]
        struct DecryptResponse {
            #[serde(rename = "Plaintext")]
            plaintext: String,
        }
        let key_id = if wrapped.kek_id.is_empty() { self.key_id.as_str() } else { wrapped.kek_id.as_str() };
        if !stored_key_matches(&self.key_id, key_id) {
            return Err(KmsError::KeyNotFound(format!("{WHO}: the stored data key names another KMS key")));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "KeyId": key_id,
            "CiphertextBlob": b64().encode(&wrapped.blob),
            "EncryptionContext": context_json(ctx),
        }))
        .map_err(|_| KmsError::Misconfigured("the Decrypt request could not be built".into()))?;
        let resp = self.call(TARGET_DECRYPT, &body, true)?;
        let parsed: DecryptResponse = serde_json::from_slice(&resp)
            .map_err(|_| KmsError::BadResponse(format!("{WHO}: Decrypt answer is not the expected JSON")))?;
        let b64_plain = Zeroizing::new(parsed.plaintext);
        let plain = Zeroizing::new(
            b64()
                .decode(b64_plain.as_bytes())
                .map_err(|_| KmsError::BadResponse(format!("{WHO}: Plaintext is not base64")))?,
        );
        SecretKey::try_from_slice(&plain)
            .ok_or_else(|| KmsError::BadResponse(format!("{WHO}: Plaintext is not a 32-byte key")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::ids::{KeyVersion, SchemeName, TenantId};
    use crate::kms::transport::testing::{response, FakeClock, ScriptedTransport};
    use crate::kms::transport::TransportError;

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn settings() -> Settings {
        Settings {
            region: None,
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some(Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into())),
            session_token: None,
            endpoint: None,
        }
    }

    struct Fixture {
        t: Rc<ScriptedTransport>,
        clock: Rc<FakeClock>,
        stats: Rc<KmsStats>,
        kms: AwsKms,
    }

    fn fixture(s: &Settings, key: &str) -> Fixture {
        let t = Rc::new(ScriptedTransport::default());
        let clock = Rc::new(FakeClock::at_unix(1_440_938_160)); // 2015-08-30T12:36:00Z
        let stats = Rc::new(KmsStats::default());
        let kms = AwsKms::new(s, key, RetryPolicy::default(), t.clone(), clock.clone(), stats.clone())
            .expect("kms");
        Fixture { t, clock, stats, kms }
    }

    fn ids() -> (TenantId, SchemeName) {
        (TenantId::parse("acme").expect("t"), SchemeName::parse("pii").expect("s"))
    }

    fn encrypt_ok(t: &ScriptedTransport) {
        let blob = b64().encode(b"opaque-kms-ciphertext-blob");
        t.respond(
            200,
            &[("content-type", CONTENT_TYPE)],
            format!(
                r#"{{"CiphertextBlob":"{blob}","KeyId":"{ARN}","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}"#
            )
            .as_bytes(),
        );
    }

    #[test]
    fn wrap_sends_a_signed_encrypt_with_the_context() {
        let f = fixture(&settings(), ARN);
        encrypt_ok(&f.t);
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::new(3).expect("v") };
        let w = f.kms.wrap(&SecretKey::from_bytes([5; 32]), ctx).expect("wrap");
        assert_eq!(w.blob, b"opaque-kms-ciphertext-blob");
        assert_eq!(w.kek_id, ARN);
        assert_eq!(w.kek_version, "");
        let reqs = f.t.requests();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.uri, "https://kms.eu-west-1.amazonaws.com/");
        assert_eq!(r.header("x-amz-target"), Some("TrentService.Encrypt"));
        assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
        assert_eq!(r.header("x-amz-date"), Some("20150830T123600Z"));
        assert!(r.header("host").is_none(), "the transport sets Host from the URI");
        let auth = r.header("authorization").expect("authorization");
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/kms/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
        ));
        let body = r.body_json();
        assert_eq!(body["KeyId"], ARN);
        assert_eq!(body["Plaintext"], b64().encode([5u8; 32]));
        assert_eq!(
            body["EncryptionContext"],
            serde_json::json!({"veil:tenant": "acme", "veil:scheme": "pii", "veil:version": "3"})
        );
        assert_eq!(f.stats.http_calls(), 1);
        assert!(!format!("{:?}", f.kms).contains("wJalr"));
    }

    #[test]
    fn unwrap_sends_decrypt_with_the_stored_arn_and_context() {
        let mut s = settings();
        s.session_token = Some(Zeroizing::new("session-token-value".into()));
        s.endpoint = Some("http://127.0.0.1:4566".into());
        s.region = Some("us-east-1".into());
        let f = fixture(&s, "alias/veil");
        let plain = b64().encode([9u8; 32]);
        f.t.respond(200, &[], format!(r#"{{"Plaintext":"{plain}","KeyId":"{ARN}"}}"#).as_bytes());
        let (t, sc) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &sc, version: KeyVersion::FIRST };
        let w = WrappedDek { blob: b"blob".to_vec(), kek_id: ARN.into(), kek_version: String::new() };
        let dek = f.kms.unwrap(&w, ctx).expect("unwrap");
        assert_eq!(dek.expose_secret(), &[9u8; 32]);
        let r = &f.t.requests()[0];
        assert_eq!(r.uri, "http://127.0.0.1:4566/");
        assert_eq!(r.header("x-amz-target"), Some("TrentService.Decrypt"));
        assert_eq!(r.header("x-amz-security-token"), Some("session-token-value"));
        assert!(
            r.header("authorization").is_some_and(
                |a| a.contains("/us-east-1/kms/aws4_request") && a.contains("x-amz-security-token")
            )
        );
        let body = r.body_json();
        assert_eq!(body["KeyId"], ARN);
        assert_eq!(body["CiphertextBlob"], b64().encode(b"blob"));
        assert_eq!(body["EncryptionContext"]["veil:version"], "1");
    }

    #[test]
    fn stored_arn_must_belong_to_the_schemes_key() {
        let f = fixture(&settings(), ARN);
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let other = WrappedDek {
            blob: b"b".to_vec(),
            kek_id: "arn:aws:kms:eu-west-1:999999999999:key/evil".into(),
            kek_version: String::new(),
        };
        assert!(matches!(f.kms.unwrap(&other, ctx), Err(KmsError::KeyNotFound(_))));
        assert!(f.t.requests().is_empty());
        assert!(stored_key_matches("1234abcd-12ab-34cd-56ef-1234567890ab", ARN));
        assert!(!stored_key_matches("ffff", ARN));
        assert!(stored_key_matches("alias/x", ARN));
    }

    fn err_response(t: &ScriptedTransport, status: u16, kind: &str) {
        t.respond(
            status,
            &[("content-type", CONTENT_TYPE)],
            format!(r#"{{"__type":"com.amazonaws.kms#{kind}","message":"secret-ish detail arn:xyz"}}"#)
                .as_bytes(),
        );
    }

    #[test]
    fn errors_map_to_stable_codes_without_bodies() {
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let w = WrappedDek { blob: b"b".to_vec(), kek_id: ARN.into(), kek_version: String::new() };
        let cases: &[(u16, &str, &str, &str)] = &[
            (400, "AccessDeniedException", "kms_denied", "kms_denied"),
            (400, "NotFoundException", "kms_denied", "kms_denied"),
            (400, "DisabledException", "kms_denied", "kms_denied"),
            (400, "KMSInvalidStateException", "kms_denied", "kms_denied"),
            (400, "InvalidCiphertextException", "kms_denied", "kms_unwrap_failed"),
            (400, "IncorrectKeyException", "kms_denied", "kms_unwrap_failed"),
            (400, "UnrecognizedClientException", "kms_denied", "kms_denied"),
            (400, "ValidationException", "kms_denied", "kms_denied"),
        ];
        for (status, kind, wrap_code, unwrap_code) in cases {
            let f = fixture(&settings(), ARN);
            err_response(&f.t, *status, kind);
            let e = f.kms.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("wrap fails");
            assert_eq!(e.code(), *wrap_code, "{kind} wrap");
            assert!(!format!("{e:?}{e}").contains("secret-ish"), "{e:?}");
            err_response(&f.t, *status, kind);
            let e = f.kms.unwrap(&w, ctx).expect_err("unwrap fails");
            assert_eq!(e.code(), *unwrap_code, "{kind} unwrap");
            assert_eq!(f.t.requests().len(), 2, "{kind} is not retried");
        }
        // The header form of the error type wins, and carries a suffix.
        let f = fixture(&settings(), ARN);
        f.t.respond(400, &[("x-amzn-ErrorType", "NotFoundException:http://internal.amazon.com/")], b"");
        assert_eq!(f.kms.unwrap(&w, ctx).expect_err("e").code(), "kms_denied");
    }

    #[test]
    fn throttling_and_5xx_are_retried_within_the_budget() {
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let f = fixture(&settings(), ARN);
        f.t.respond(400, &[("retry-after", "1")], br#"{"__type":"ThrottlingException"}"#);
        f.t.respond(503, &[], b"");
        encrypt_ok(&f.t);
        f.kms.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect("wrap after retries");
        assert_eq!(f.clock.slept(), vec![Duration::from_secs(1), Duration::from_millis(400)]);
        assert_eq!(f.stats.http_calls(), 3);
        let reqs = f.t.requests();
        assert_ne!(reqs[0].header("x-amz-date"), reqs[2].header("x-amz-date"), "each retry is re-signed");

        let f = fixture(&settings(), ARN);
        for _ in 0..4 {
            f.t.respond(429, &[("retry-after", "1")], b"");
        }
        let e = f.kms.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("throttled");
        assert_eq!(e.code(), "kms_throttled");
        assert_eq!(f.clock.slept(), vec![Duration::from_secs(1); 3]);

        let f = fixture(&settings(), ARN);
        for _ in 0..4 {
            f.t.fail(TransportError::Connect("refused".into()));
        }
        assert_eq!(
            f.kms.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("down").code(),
            "kms_unavailable"
        );
        assert_eq!(f.t.requests().len(), 4);

        let f = fixture(&settings(), ARN);
        f.t.fail(TransportError::Timeout);
        assert_eq!(
            f.kms.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("slow").code(),
            "kms_unavailable"
        );
        assert_eq!(f.t.requests().len(), 1, "a timeout is not retried");
        assert_eq!(f.t.requests()[0].timeout, Duration::from_millis(5000));
    }

    #[test]
    fn malformed_answers_are_bad_responses() {
        let (t, s) = ids();
        let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
        let w = WrappedDek { blob: b"b".to_vec(), kek_id: ARN.into(), kek_version: String::new() };
        for body in
            [&b"not json"[..], br#"{"Plaintext":"***"}"#, br#"{"Plaintext":"AAAA"}"#, br#"{"KeyId":"x"}"#]
        {
            let f = fixture(&settings(), ARN);
            f.t.respond(200, &[], body);
            assert_eq!(f.kms.unwrap(&w, ctx).expect_err("bad").code(), "kms_bad_response");
            f.t.respond(200, &[], body);
            assert_eq!(
                f.kms.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("bad").code(),
                "kms_bad_response"
            );
        }
        let f = fixture(&settings(), ARN);
        f.t.then(|_| response(200, &[], &vec![b' '; MAX_RESPONSE_BYTES + 1]));
        assert_eq!(f.kms.unwrap(&w, ctx).expect_err("big").code(), "kms_bad_response");
    }

    #[test]
    fn configuration_is_checked() {
        let t: Rc<dyn HttpTransport> = Rc::new(ScriptedTransport::default());
        let c: Rc<dyn Clock> = Rc::new(FakeClock::at_unix(0));
        let st = Rc::new(KmsStats::default());
        let new = |s: &Settings, k: &str| {
            AwsKms::new(s, k, RetryPolicy::default(), t.clone(), c.clone(), st.clone()).map(|_| ())
        };
        assert!(new(&settings(), ARN).is_ok());
        assert!(matches!(new(&settings(), "alias/x"), Err(KmsError::Misconfigured(_))), "no region");
        let mut s = settings();
        s.secret_access_key = None;
        assert!(matches!(new(&s, ARN), Err(KmsError::Misconfigured(_))));
        let mut s = settings();
        s.endpoint = Some("http://kms.example.com".into());
        assert!(matches!(new(&s, ARN), Err(KmsError::Misconfigured(_))), "plain http off loopback");
        s.endpoint = Some("ftp://127.0.0.1".into());
        assert!(matches!(new(&s, ARN), Err(KmsError::Misconfigured(_))));
        s.endpoint = Some("https://vpce-1.kms.eu-west-1.vpce.amazonaws.com".into());
        assert!(new(&s, ARN).is_ok());
        assert!(matches!(new(&settings(), ""), Err(KmsError::Misconfigured(_))));
        let e = new(&settings(), "").err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(!e.contains("wJalr"));
    }
}
