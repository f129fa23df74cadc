//! AWS's SigV4 test suite (tests/vectors/aws-sigv4, see its README) run through the signing path
//! the AWS KMS client uses ([`super::aws::sigv4_headers`]): every header-signing case must give
//! the published signature and the published added headers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SessionTokenMode, SigningSettings, UriPathNormalizationMode,
};
use aws_smithy_runtime_api::client::identity::Identity;
use serde_json::Value;

use super::aws::sigv4_headers;

/// Cases upstream (aws-sigv4 1.6.4) also skips, with its reasons.
const SKIPPED: &[&str] = &["get-space-normalized", "get-space-unnormalized", "get-utf8"];

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/aws-sigv4")
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
}

/// A request in the suite's `request.txt` form (HTTP/1.1 text; folded header lines continue the
/// previous value).
struct SuiteRequest {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn parse_request(text: &str) -> SuiteRequest {
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h, b.as_bytes().to_vec()),
        None => (text.trim_end_matches('\n'), Vec::new()),
    };
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let (method, rest) = request_line.split_once(' ').unwrap_or_default();
    let path = rest.strip_suffix(" HTTP/1.1").unwrap_or(rest);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line);
            }
            continue;
        }
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        headers.push((k.to_string(), v.to_string()));
    }
    let host = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("host")).map(|(_, v)| v.clone());
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("host"));
    SuiteRequest {
        method: method.to_string(),
        uri: format!("https://{}{path}", host.unwrap_or_default()),
        headers,
        body,
    }
}

/// `2015-08-30T12:36:00Z` as a `SystemTime`.
fn parse_timestamp(s: &str) -> SystemTime {
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// The headers of `header-signed-request.txt`, by lower-case name.
fn expected_headers(text: &str) -> BTreeMap<String, String> {
    let head = text.split_once("\n\n").map(|(h, _)| h).unwrap_or(text);
    head.lines()
        .skip(1)
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect()
}

fn run_case(dir: &Path) -> Result<(), String> {
    let ctx: Value = serde_json::from_str(&read(dir, "context.json")).map_err(|e| e.to_string())?;
    let creds = &ctx["credentials"];
    let token = creds["token"].as_str().map(str::to_string);
    let identity: Identity = Credentials::new(
        creds["access_key_id"].as_str().unwrap_or_default(),
        creds["secret_access_key"].as_str().unwrap_or_default(),
        token,
        None,
        "suite",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.uri_path_normalization_mode = if ctx["normalize"].as_bool().unwrap_or(true) {
        UriPathNormalizationMode::Enabled
    } else {
        UriPathNormalizationMode::Disabled
    };
    settings.payload_checksum_kind = if ctx["sign_body"].as_bool().unwrap_or(false) {
        PayloadChecksumKind::XAmzSha256
    } else {
        PayloadChecksumKind::NoHeader
    };
    settings.session_token_mode = if ctx["omit_session_token"].as_bool().unwrap_or(false) {
        SessionTokenMode::Exclude
    } else {
        SessionTokenMode::Include
    };
    let req = parse_request(&read(dir, "request.txt"));
    let headers: Vec<(&str, &str)> = req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let added = sigv4_headers(
        &identity,
        ctx["region"].as_str().unwrap_or_default(),
        ctx["service"].as_str().unwrap_or_default(),
        parse_timestamp(ctx["timestamp"].as_str().unwrap_or_default()),
        settings,
        (&req.method, &req.uri, &headers, &req.body),
    )
    .map_err(|e| format!("signing failed: {e:?}"))?;
    let signature = read(dir, "header-signature.txt").trim().to_string();
    let expected = expected_headers(&read(dir, "header-signed-request.txt"));
    let auth = added
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.clone())
        .ok_or("no authorization header")?;
    if !auth.ends_with(&format!("Signature={signature}")) {
        return Err(format!("signature: got {auth}, expected {signature}"));
    }
    for (k, v) in &added {
        match expected.get(&k.to_ascii_lowercase()) {
            Some(e) if e == v => {}
            other => return Err(format!("header {k}: got {v:?}, expected {other:?}")),
        }
    }
    // The signer added every header the suite expects beyond the request's own.
    for k in ["x-amz-date", "authorization", "x-amz-security-token", "x-amz-content-sha256"] {
        let in_request = req.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k));
        if expected.contains_key(k) && !in_request && !added.iter().any(|(h, _)| h.eq_ignore_ascii_case(k)) {
            return Err(format!("missing header {k}"));
        }
    }
    Ok(())
}

#[test]
fn aws_sigv4_suite_header_signing() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    cases.sort();
    let mut ran = Vec::new();
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if SKIPPED.contains(&name.as_str()) {
            continue;
        }
        match run_case(dir) {
            Ok(()) => ran.push(name),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "SigV4 suite failures:\n{}", failures.join("\n"));
    assert_eq!(ran.len() + SKIPPED.len(), 38, "all 38 header-signing cases are present");
    for must in [
        "get-vanilla",
        "get-vanilla-with-session-token",
        "get-header-key-duplicate",
        "get-header-value-multiline",
        "post-x-www-form-urlencoded",
        "post-sts-header-after",
        "post-sts-header-before",
    ] {
        assert!(ran.iter().any(|r| r == must), "{must} ran");
    }
}

#[test]
fn the_suite_timestamp_parser() {
    assert_eq!(
        parse_timestamp("2015-08-30T12:36:00Z")
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .ok(),
        Some(1_440_938_160)
    );
}
