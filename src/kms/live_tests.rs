//! The providers against real services on loopback: AWS KMS as moto serves it, and the Azure Key
//! Vault emulator fixture. Ignored by default; `tests/fixtures/run_live_kms_tests.py` starts both
//! services, runs these with `--ignored`, and cross-checks with boto3 what they wrapped.

use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use super::azure::{AzureKeyVault, Credential};
use super::transport::loopback::LoopbackTransport;
use super::transport::{Clock, HttpTransport, RetryPolicy, SystemClock};
use super::{aws, azure};
use super::{aws::AwsKms, Kek, KeyContext, KmsError, KmsStats};
use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName, TenantId};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set (run tests/fixtures/run_live_kms_tests.py)"))
}

fn ids() -> (TenantId, SchemeName) {
    (TenantId::parse("acme").expect("t"), SchemeName::parse("pii").expect("s"))
}

fn transport() -> Rc<dyn HttpTransport> {
    Rc::new(LoopbackTransport)
}

fn clock() -> Rc<dyn Clock> {
    Rc::new(SystemClock)
}

fn policy() -> RetryPolicy {
    RetryPolicy { timeout: Duration::from_millis(1500), ..RetryPolicy::default() }
}

#[test]
#[ignore = "needs moto_server (tests/fixtures/run_live_kms_tests.py)"]
fn aws_kms_against_moto() {
    let settings = aws::Settings {
        region: Some("us-east-1".into()),
        access_key_id: Some(env("VEIL_TEST_AWS_ACCESS_KEY_ID")),
        secret_access_key: Some(Zeroizing::new(env("VEIL_TEST_AWS_SECRET_ACCESS_KEY"))),
        session_token: Some(Zeroizing::new("moto-ignores-this-session-token".into())),
        endpoint: Some(env("VEIL_TEST_MOTO_URL")),
    };
    let arn = env("VEIL_TEST_MOTO_KEY_ARN");
    let stats = Rc::new(KmsStats::default());
    let kms = AwsKms::new(&settings, &arn, policy(), transport(), clock(), stats.clone()).expect("kms");
    let (t, s) = ids();
    let v2 = KeyVersion::new(2).expect("v");
    let ctx = KeyContext { tenant: &t, scheme: &s, version: v2 };
    let dek = SecretKey::from_bytes([0x42; 32]);
    let w = kms.wrap(&dek, ctx).expect("wrap");
    assert_eq!(w.kek_id, arn);
    assert_eq!(w.kek_version, "");
    assert_eq!(kms.unwrap(&w, ctx).expect("unwrap").expose_secret(), &[0x42; 32]);
    let wrong = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
    assert_eq!(kms.unwrap(&w, wrong).err(), Some(KmsError::UnwrapFailed));
    assert_eq!(stats.http_calls(), 3);
    if let Ok(out) = std::env::var("VEIL_TEST_OUT") {
        let line = format!(
            "{{\"blob\":\"{}\",\"kek_id\":\"{}\",\"tenant\":\"acme\",\"scheme\":\"pii\",\"version\":2}}\n",
            base64::engine::general_purpose::STANDARD.encode(&w.blob),
            w.kek_id
        );
        std::fs::write(out, line).expect("write VEIL_TEST_OUT");
    }
    let missing = arn.rsplit_once('/').map(|(p, _)| format!("{p}/00000000-0000-0000-0000-000000000000"));
    let nokey =
        AwsKms::new(&settings, &missing.expect("arn"), policy(), transport(), clock(), stats).expect("kms");
    assert_eq!(nokey.wrap(&dek, ctx).expect_err("missing key").code(), "kms_denied");
}

struct Emu {
    url: String,
    config: serde_json::Value,
}

impl Emu {
    fn new() -> Emu {
        let url = env("VEIL_TEST_AZURE_URL");
        let config = Emu::admin_at(&url, "GET", "/admin/config", None);
        Emu { url, config }
    }
    fn admin_at(url: &str, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .expect("request");
        let resp = LoopbackTransport.send(req, Duration::from_secs(10)).expect("admin call");
        assert_eq!(resp.status(), 200, "{path}");
        serde_json::from_slice(resp.body()).expect("admin json")
    }
    fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        Emu::admin_at(&self.url, method, path, body)
    }
    fn c(&self, k: &str) -> String {
        self.config[k].as_str().unwrap_or_default().to_string()
    }
    fn settings(&self, source: &str) -> azure::Settings {
        let mut s = azure::Settings::default();
        match source {
            "managed-identity" => {
                s.identity_endpoint = Some(format!("{}/msi/token", self.url));
                s.identity_header = Some(Zeroizing::new(self.c("identity_header")));
            }
            "imds" => s.imds_endpoint = format!("{}/metadata/identity/oauth2/token", self.url),
            _ => {
                s.authority_host = self.url.clone();
                s.tenant_id = Some(self.c("tenant_id"));
                s.client_id = Some(self.c("client_id"));
                s.client_secret = Some(Zeroizing::new(self.c("client_secret")));
            }
        }
        s
    }
    fn vault(&self, s: &azure::Settings, key_url: &str, p: RetryPolicy) -> (AzureKeyVault, Rc<KmsStats>) {
        let stats = Rc::new(KmsStats::default());
        let auth = Rc::new(Credential::new(s, p, transport(), clock(), stats.clone()).expect("auth"));
        let kv = AzureKeyVault::new(s, key_url, p, auth, transport(), clock(), stats.clone()).expect("vault");
        (kv, stats)
    }
}

#[test]
#[ignore = "needs the Key Vault emulator (tests/fixtures/run_live_kms_tests.py)"]
fn azure_key_vault_against_the_emulator() {
    let emu = Emu::new();
    let first = emu.admin("POST", "/admin/keys/live-kek", Some(serde_json::json!({"kty": "RSA"})));
    let key_url = format!("{}/keys/live-kek", emu.url);
    let (t, s) = ids();
    let ctx = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::FIRST };
    let dek = SecretKey::from_bytes([0x17; 32]);

    for source in ["managed-identity", "imds", "client-secret"] {
        let (kv, stats) = emu.vault(&emu.settings(source), &key_url, policy());
        let w = kv.wrap(&dek, ctx).expect(source);
        assert_eq!(w.kek_id, first["kid"].as_str().unwrap_or_default(), "{source}");
        assert_eq!(w.kek_version, first["version"].as_str().unwrap_or_default());
        assert_eq!(w.blob.len(), 256, "RSA-2048 ciphertext");
        assert_eq!(kv.unwrap(&w, ctx).expect("unwrap").expose_secret(), &[0x17; 32]);
        assert_eq!(stats.http_calls(), 3, "{source}: one token, one wrap, one unwrap");
        let other = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::new(2).expect("v") };
        assert_eq!(kv.unwrap(&w, other).err(), Some(KmsError::UnwrapFailed));
    }

    // A new key version: new wraps use it, old wrapped keys still unwrap with their own kid.
    let settings = emu.settings("managed-identity");
    let (kv, _) = emu.vault(&settings, &key_url, policy());
    let old = kv.wrap(&dek, ctx).expect("wrap v1");
    let second = emu.admin("POST", "/admin/keys/live-kek", Some(serde_json::json!({})));
    let new = kv.wrap(&dek, ctx).expect("wrap v2");
    assert_eq!(new.kek_id, second["kid"].as_str().unwrap_or_default());
    assert_ne!(old.kek_id, new.kek_id);
    assert!(kv.unwrap(&old, ctx).is_ok() && kv.unwrap(&new, ctx).is_ok());
    // A key URL pinned to the first version keeps wrapping with it.
    let pinned = emu.vault(&settings, first["kid"].as_str().unwrap_or_default(), policy()).0;
    assert_eq!(pinned.wrap(&dek, ctx).expect("pinned").kek_id, old.kek_id);

    // Revoked tokens: the 401 challenge, one refresh, success.
    emu.admin("POST", "/admin/stats/reset", None);
    emu.admin("POST", "/admin/revoke-tokens", None);
    assert!(kv.unwrap(&old, ctx).is_ok());
    let st = emu.admin("GET", "/admin/stats", None);
    assert_eq!((st["unauthorized"].as_i64(), st["token"].as_i64()), (Some(1), Some(1)));

    // Throttled twice (Retry-After: 1), then fine.
    emu.admin(
        "POST",
        "/admin/faults",
        Some(serde_json::json!({"status": 429, "count": 2, "retry_after": 1})),
    );
    let started = Instant::now();
    assert!(kv.unwrap(&old, ctx).is_ok());
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Unavailable beyond the retries.
    emu.admin(
        "POST",
        "/admin/faults",
        Some(serde_json::json!({"status": 503, "count": 4, "retry_after": 0})),
    );
    assert_eq!(kv.unwrap(&old, ctx).expect_err("503").code(), "kms_unavailable");
    // Slower than the timeout: a clear error within the bound, no retry.
    emu.admin("POST", "/admin/faults", Some(serde_json::json!({"delay_ms": 3000, "count": 1})));
    let started = Instant::now();
    assert_eq!(kv.unwrap(&old, ctx).expect_err("slow").code(), "kms_unavailable");
    assert!(started.elapsed() < Duration::from_millis(2900), "{:?}", started.elapsed());
    emu.admin("DELETE", "/admin/faults", None);
    // Let the delayed request finish.
    std::thread::sleep(Duration::from_millis(1600));
    // Unknown key; disabled key.
    let (missing, _) = emu.vault(&settings, &format!("{}/keys/no-such-key", emu.url), policy());
    assert_eq!(missing.wrap(&dek, ctx).expect_err("missing").code(), "kms_denied");
    emu.admin("POST", "/admin/keys/live-kek/disable", Some(serde_json::json!({})));
    assert_eq!(kv.wrap(&dek, ctx).expect_err("disabled").code(), "kms_denied");
    emu.admin("POST", "/admin/keys/live-kek/enable", Some(serde_json::json!({})));

    // Managed HSM style: an oct-HSM key with A256KW.
    emu.admin("POST", "/admin/keys/hsm-kek", Some(serde_json::json!({"kty": "oct-HSM"})));
    let mut hsm_settings = emu.settings("imds");
    hsm_settings.wrap_alg = Some("A256KW".into());
    let (hsm, _) = emu.vault(&hsm_settings, &format!("{}/keys/hsm-kek", emu.url), policy());
    let w = hsm.wrap(&dek, ctx).expect("A256KW wrap");
    assert_eq!(w.blob.len(), 72, "RFC 3394 wrap of 64 bytes");
    assert_eq!(hsm.unwrap(&w, ctx).expect("A256KW unwrap").expose_secret(), &[0x17; 32]);
}
