//! Azure Key Vault against a scripted transport: token sources, sharing and refresh, the 401
//! challenge, retries, error classification, key URLs.

use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::credential::parse_token;
use super::keyvault::{b64url, challenge_resource, resource_for};
use super::*;
use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use crate::kms::transport::testing::{FakeClock, RecordedRequest, ScriptedTransport};
use crate::kms::transport::RetryPolicy;
use crate::kms::transport::TransportError;
use crate::kms::{Kek, KeyContext, KmsError, KmsStats, WrappedDek};

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
    let auth =
        Rc::new(Credential::new(s, policy, t.clone(), clock.clone(), stats.clone()).expect("authenticator"));
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
        format!(r#"{{"token_type":"Bearer","expires_in":{expires_in},"access_token":"{token}"}}"#).as_bytes(),
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
    assert_eq!(f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("e").code(), "kms_bad_response");
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
    assert_eq!(f.kv.credential.source_name(), "managed-identity");
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
    assert_eq!(f.kv.credential.source_name(), "imds");
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
        Credential::new(
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
            Credential::new(&client_secret(), p, t.clone(), clock.clone(), stats.clone())
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
    let auths: Vec<_> = reqs.iter().filter_map(|r| r.header("authorization").map(str::to_string)).collect();
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
    let c =
        |r: &str| format!(r#"Bearer authorization="https://login.microsoftonline.com/t", resource="{r}""#);
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

/// Issue 19 item 2: a challenge may only name the vault's own audience. Before, a local vault
/// (or any listener at a loopback key URL) could ask for any https audience, and a parent
/// domain (`https://azure.net`) passed for every vault.
#[test]
fn challenges_for_other_audiences_are_never_honoured() {
    let c =
        |r: &str| format!(r#"Bearer authorization="https://login.microsoftonline.com/t", resource="{r}""#);
    let s = |r: &str| {
        format!(r#"Bearer authorization="https://login.microsoftonline.com/t", scope="{r}/.default""#)
    };
    for (header, host) in [
        (c("https://management.azure.com"), "127.0.0.1"),
        (c("https://graph.microsoft.com"), "localhost"),
        (s("https://management.core.windows.net"), "127.0.0.1"),
        (c("https://azure.net"), "contoso.vault.azure.net"),
        (c("https://net"), "contoso.vault.azure.net"),
        (c("https://managedhsm.azure.net"), "contoso.vault.azure.net"),
        (c("https://vault.azure.net"), "contoso.vault.azure.net.evil.example"),
        (c("https://vault.azure.net"), "a.b.vault.azure.net"),
        (c("https://evil.vault.azure.net"), "x.evil.vault.azure.net"),
        (c("http://vault.azure.net"), "contoso.vault.azure.net"),
        (c("https://vault.azure.cn"), "contoso.vault.azure.net"),
    ] {
        assert_eq!(challenge_resource(&header, host), None, "{header} for {host}");
    }
    // the vault's own audience, and for a local emulator the public Key Vault / Managed HSM one
    for (header, host, want) in [
        (c("https://vault.azure.net/"), "contoso.vault.azure.net", "https://vault.azure.net"),
        (s("https://vault.azure.cn"), "contoso.vault.azure.cn", "https://vault.azure.cn"),
        (c("https://vault.azure.net"), "127.0.0.1", "https://vault.azure.net"),
        (c("https://managedhsm.azure.net"), "[::1]", "https://managedhsm.azure.net"),
    ] {
        assert_eq!(challenge_resource(&header, host).as_deref(), Some(want), "{header} for {host}");
    }
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
    let w = WrappedDek { blob: vec![1; 256], kek_id: KID.into(), kek_version: KID[KID.len() - 32..].into() };
    for (status, wrap_code, unwrap_code) in [
        (403, "kms_denied", "kms_denied"),
        (404, "kms_denied", "kms_denied"),
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
    f.t.respond(401, &[], br#"{"error":"invalid_client","error_description":"AADSTS7000215 secret-ish"}"#);
    let e = f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("w");
    assert_eq!(e.code(), "kms_denied");
    assert!(format!("{e:?}").contains("invalid_client") && !format!("{e:?}").contains("secret-ish"));
    let f = fx(&client_secret(), &format!("{VAULT}/keys/veil-kek"));
    f.t.respond(200, &[], br#"{"token_type":"Bearer"}"#);
    assert_eq!(f.kv.wrap(&SecretKey::from_bytes([1; 32]), ctx).expect_err("w").code(), "kms_bad_response");
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
        let auth = Rc::new(Credential::new(s, RetryPolicy::default(), t.clone(), c.clone(), st.clone())?);
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
