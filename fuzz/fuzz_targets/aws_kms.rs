//! The AWS KMS client's handling of answers (`kms::aws`: the status/error-type classifier, the
//! retry budget, the Encrypt and Decrypt answer parsing), driven through the real `AwsKms`
//! `wrap`/`unwrap` with responses made from the fuzzer's bytes (`veil_fuzz::replies`). The first
//! byte picks wrap or unwrap. Never panics; sends at most 1 + `max_retries` requests; a failure
//! is one of the documented codes and its texts never carry a response body or the data key; a
//! success returns exactly what the answer held.
#![no_main]

use std::rc::Rc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use veil::kms::aws::{AwsKms, Settings};
use veil::kms::transport::RetryPolicy;
use veil::kms::{Kek, KmsStats, WrappedDek};
use veil_fuzz::{check_kms_error, last_ok_body, replies, FuzzClock, KeyFixture, ScriptTransport};

const KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
/// Where the client's fixed messages are written (see `assert_no_echo`).
const AWS_SOURCES: &[&str] = &[
    include_str!("../../src/kms/aws.rs"),
    include_str!("../../src/kms/transport.rs"),
    include_str!("../../src/kms/mod.rs"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let script = replies(rest, "x-amzn-errortype");
    let transport = Rc::new(ScriptTransport::new(script.clone()));
    let settings = Settings {
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string().into()),
        ..Settings::default()
    };
    let policy = RetryPolicy::default();
    let kms = AwsKms::new(
        &settings,
        KEY_ARN,
        policy,
        transport.clone(),
        Rc::new(FuzzClock::default()),
        Rc::new(KmsStats::default()),
    )
    .expect("valid settings");
    let key = KeyFixture::default();
    let (ctx, dek) = (key.ctx(), &key.dek);
    let wrap = op % 2 == 0;
    let result = if wrap {
        kms.wrap(dek, ctx).map(Some)
    } else {
        let stored = WrappedDek { blob: vec![1, 2, 3], kek_id: KEY_ARN.into(), kek_version: String::new() };
        kms.unwrap(&stored, ctx).map(|k| {
            // the answer's Plaintext, decoded, is the key
            let last = last_ok_body(&script, transport.sent()).expect("a 200 answer");
            let v: DecryptAnswer = serde_json::from_slice(&last).expect("JSON");
            let plain = STANDARD.decode(v.plaintext).expect("base64");
            assert_eq!(plain.as_slice(), k.expose_secret());
            None
        })
    };
    assert!(transport.sent() <= 1 + policy.max_retries as usize, "{} requests", transport.sent());
    match result {
        Ok(Some(w)) => {
            let last = last_ok_body(&script, transport.sent()).expect("a 200 answer");
            let v: EncryptAnswer = serde_json::from_slice(&last).expect("JSON");
            let blob = STANDARD.decode(v.ciphertext_blob).expect("base64");
            assert_eq!(w.blob, blob);
            assert_eq!(w.kek_id, v.key_id);
            assert!(!w.blob.is_empty() && !w.kek_id.is_empty());
        }
        Ok(None) => {}
        Err(e) => check_kms_error(&e, &script, STANDARD.encode(dek.expose_secret()), AWS_SOURCES),
    }
});

/// The members of an Encrypt or Decrypt answer the client reads, read the way it reads them
/// (serde skips other members without looking inside their strings).
#[derive(serde::Deserialize)]
struct EncryptAnswer {
    #[serde(rename = "CiphertextBlob")]
    ciphertext_blob: String,
    #[serde(rename = "KeyId")]
    key_id: String,
}

#[derive(serde::Deserialize)]
struct DecryptAnswer {
    #[serde(rename = "Plaintext")]
    plaintext: String,
}
