//! The Azure Key Vault client's handling of answers (`kms::azure`: the token endpoint's and the
//! vault's classifiers, token parsing, the 401 challenge and its one refresh, the retry budget,
//! wrapkey/unwrapkey answer parsing), driven through the real `Credential` and `AzureKeyVault`
//! with responses made from the fuzzer's bytes (`veil_fuzz::replies`; one list serves the token
//! endpoint and the vault in turn). The first byte picks wrap or unwrap, client secret or IMDS,
//! and a key URL with or without a version. Never panics; requests stay within the budget and go
//! only to the token endpoint and the scheme's own key; a failure is one of the documented codes
//! and never carries a response body or the data key; a success returns what the answer held.
#![no_main]

use std::rc::Rc;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use veil::kms::azure::{AzureKeyVault, Credential, Settings};
use veil::kms::transport::RetryPolicy;
use veil::kms::{Kek, KmsStats, WrappedDek};
use veil_fuzz::{check_kms_error, last_ok_body, replies, FuzzClock, KeyFixture, Reply, ScriptTransport};

const VAULT_KEY: &str = "https://myvault.vault.azure.net/keys/k1";
const LOGIN: &str = "https://login.microsoftonline.com/";
const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token?";
/// Where the client's fixed messages are written (see `assert_no_echo`).
const AZURE_SOURCES: &[&str] = &[
    include_str!("../../src/kms/azure/keyvault.rs"),
    include_str!("../../src/kms/azure/credential.rs"),
    include_str!("../../src/kms/azure/mod.rs"),
    include_str!("../../src/kms/transport.rs"),
    include_str!("../../src/kms/mod.rs"),
];

fn b64url() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// The members of a wrapkey/unwrapkey answer the client reads, read the way it reads them
/// (serde skips other members without looking inside their strings).
#[derive(serde::Deserialize)]
struct Answer {
    kid: Option<String>,
    value: String,
}

/// The last answer the client got, which must have been a 200.
fn last_ok_json(script: &[Reply], sent: usize) -> Answer {
    let body = last_ok_body(script, sent).expect("success after a 200 answer");
    serde_json::from_slice(&body).expect("JSON")
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let script = replies(rest, "www-authenticate");
    let transport = Rc::new(ScriptTransport::new(script.clone()));
    let clock = Rc::new(FuzzClock::default());
    let stats = Rc::new(KmsStats::default());
    let mut settings = Settings::default();
    if op & 2 == 0 {
        settings.tenant_id = Some("contoso.onmicrosoft.com".into());
        settings.client_id = Some("00000000-0000-0000-0000-000000000001".into());
        settings.client_secret = Some("client-secret-value".to_string().into());
    }
    let key_url = if op & 4 == 0 { VAULT_KEY.to_string() } else { format!("{VAULT_KEY}/v1") };
    let policy = RetryPolicy::default();
    let credential = Rc::new(
        Credential::new(&settings, policy, transport.clone(), clock.clone(), stats.clone())
            .expect("credential"),
    );
    let kv = AzureKeyVault::new(&settings, &key_url, policy, credential, transport.clone(), clock, stats)
        .expect("key vault");
    let key = KeyFixture::default();
    let (ctx, dek) = (key.ctx(), &key.dek);
    let result = if op & 1 == 0 {
        kv.wrap(dek, ctx).map(|w| {
            let v = last_ok_json(&script, transport.sent());
            let blob = b64url().decode(&v.value).expect("base64url");
            assert_eq!(w.blob, blob);
            assert_eq!(Some(w.kek_id.as_str()), v.kid.as_deref());
            let prefix = format!("{VAULT_KEY}/");
            assert!(w.kek_id.to_ascii_lowercase().starts_with(&prefix), "{}", w.kek_id);
            assert!(w.kek_id.to_ascii_lowercase().ends_with(&w.kek_version.to_ascii_lowercase()));
        })
    } else {
        let stored =
            WrappedDek { blob: vec![1, 2, 3], kek_id: format!("{VAULT_KEY}/v1"), kek_version: "v1".into() };
        kv.unwrap(&stored, ctx).map(|k| {
            let v = last_ok_json(&script, transport.sent());
            let value = b64url().decode(&v.value).expect("base64url");
            assert_eq!(&value[..32], k.expose_secret());
        })
    };
    let limit = 2 * 2 * (1 + policy.max_retries as usize);
    assert!(transport.sent() <= limit, "{} requests", transport.sent());
    for uri in transport.uris.borrow().iter() {
        let own =
            uri.starts_with(&format!("{VAULT_KEY}/")) || uri.starts_with(LOGIN) || uri.starts_with(IMDS);
        assert!(own, "a request went to {uri}");
    }
    if let Err(e) = result {
        check_kms_error(&e, &script, b64url().encode(dek.expose_secret()), AZURE_SOURCES);
    }
});
