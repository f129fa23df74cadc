//! `veil rekey`: KEK rotation for many schemes at once (issue 13, item 3). It runs the component
//! in process, as `veil lambda` does (same manifest, variables, stores and vault access as the
//! deployment), lists the tenant's schemes with `GET /v1/schemes` and sends
//! `POST /v1/schemes/{name}/rekey` for each, one after another, as the credential in
//! `$VEIL_TOKEN`. The component does the work and enforces the policy; this only drives it.
//!
//! Re-running is safe: a rekey checks every new wrap before it replaces the old one, and one to a
//! new KEK leaves alone the versions that KEK already wraps, so a second run finishes an
//! interrupted one (docs/rotation.md, "KEK rotation"). The Lambda `{"action": "rekey"}` event uses
//! the same driver ([`drive`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::cli::{RekeyArgs, ServeArgs};
use crate::manifest::Manifest;
use crate::serve::{self, Mode, Server};
use crate::variables::{effective, AppVariables, ComponentVariables};
use crate::{config_bail, ConfigError};

/// The environment variable that holds the credential (a JWT or API key; `Bearer ` optional).
pub const TOKEN_ENV: &str = "VEIL_TOKEN";
/// The most an answer of the component is read into memory.
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Characters of a scheme name sent as they are in a path segment; the rest is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// How one scheme's rekey went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every version that is not destroyed is wrapped by the target KEK; these were rewrapped now.
    Rekeyed { rewrapped: Vec<u64>, kek: Value },
    /// The component refused or failed: its status and stable code (never its input).
    Failed { status: u16, code: String, message: String },
}

/// One scheme's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeReport {
    pub name: String,
    pub outcome: Outcome,
}

/// What a run did: every scheme it tried, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub schemes: Vec<SchemeReport>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &SchemeReport> {
        self.schemes.iter().filter(|s| matches!(s.outcome, Outcome::Failed { .. }))
    }

    /// The report as JSON (the Lambda `rekey` action's body).
    pub fn to_json(&self) -> Value {
        let schemes: Vec<Value> = self
            .schemes
            .iter()
            .map(|s| match &s.outcome {
                Outcome::Rekeyed { rewrapped, kek } => {
                    json!({"name": s.name, "rewrapped": rewrapped, "kek": kek})
                }
                Outcome::Failed { status, code, message } => {
                    json!({"name": s.name, "status": status, "error": {"code": code, "message": message}})
                }
            })
            .collect();
        let failed = self.failed().count();
        json!({"schemes": schemes, "rekeyed": self.schemes.len() - failed, "failed": failed})
    }
}

/// Why a run stopped before it could try any scheme (listing the schemes failed).
#[derive(Debug)]
pub struct ListFailed {
    pub status: u16,
    pub body: Value,
}

/// One answer of the component: status and JSON body (`null` when it is not JSON).
async fn call(
    server: &Arc<Server>,
    authorization: Option<&HeaderValue>,
    method: Method,
    path: &str,
    body: Option<&Value>,
    deadline: Option<Instant>,
) -> Result<(StatusCode, Value)> {
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes))?;
    if let Some(auth) = authorization {
        request.headers_mut().insert(http::header::AUTHORIZATION, auth.clone());
    }
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let response = server.respond(request, peer, deadline).await;
    let (parts, body) = response.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the component's answer: {e:?}"))?
        .to_bytes();
    Ok((parts.status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// The `error.code` and `error.message` of an error answer (or the status's reason).
fn error_of(status: StatusCode, body: &Value) -> (String, String) {
    let e = body.get("error");
    let code = e.and_then(|e| e.get("code")).and_then(Value::as_str);
    let message = e.and_then(|e| e.get("message")).and_then(Value::as_str);
    (
        code.unwrap_or("unexpected_answer").to_string(),
        message.unwrap_or(status.canonical_reason().unwrap_or("unexpected answer")).to_string(),
    )
}

/// Rekeys `scheme` (or every scheme the credential's tenant has, in the order the component lists
/// them) to `kek` (`None`: each scheme's own KEK, its newest version), calling `progress` after
/// each scheme. A scheme that fails does not stop the others. `deadline` bounds every request
/// (a scheme started after it fails with the component's 500 `timeout`).
pub async fn drive(
    server: &Arc<Server>,
    authorization: Option<&HeaderValue>,
    scheme: Option<&str>,
    kek: Option<&Value>,
    deadline: Option<Instant>,
    mut progress: impl FnMut(&SchemeReport),
) -> Result<Result<Report, ListFailed>> {
    let names = match scheme {
        Some(s) => vec![s.to_string()],
        None => {
            let (status, body) =
                call(server, authorization, Method::GET, "/v1/schemes", None, deadline).await?;
            if status != StatusCode::OK {
                return Ok(Err(ListFailed { status: status.as_u16(), body }));
            }
            body.get("schemes")
                .and_then(Value::as_array)
                .context("GET /v1/schemes: no `schemes` list in the answer")?
                .iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        }
    };
    let request_body = kek.map(|k| json!({ "kek": k }));
    let mut report = Report::default();
    for name in names {
        let path = format!("/v1/schemes/{}/rekey", utf8_percent_encode(&name, SEGMENT));
        let (status, body) =
            call(server, authorization, Method::POST, &path, request_body.as_ref(), deadline).await?;
        let outcome = if status == StatusCode::OK {
            let rewrapped = body
                .get("rewrapped")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let kek = body.get("scheme").and_then(|s| s.get("kek")).cloned().unwrap_or(Value::Null);
            Outcome::Rekeyed { rewrapped, kek }
        } else {
            let (code, message) = error_of(status, &body);
            Outcome::Failed { status: status.as_u16(), code, message }
        };
        let line = SchemeReport { name, outcome };
        progress(&line);
        report.schemes.push(line);
    }
    Ok(Ok(report))
}

/// The `Authorization` header for a credential (`Bearer ` added unless it is there).
pub fn authorization(credential: &str) -> Result<HeaderValue> {
    let credential = credential.trim();
    let value = if credential.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")) {
        credential.to_string()
    } else {
        format!("Bearer {credential}")
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| ConfigError(format!("${TOKEN_ENV} is not a valid credential (not header text)")))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The tenant a JWT names in `claim`, read without verifying it (the component verifies it);
/// `None` for anything that is not a JWT with that claim as a string.
fn jwt_tenant(credential: &str, claim: &str) -> Option<String> {
    let token = credential.trim();
    let token = token.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map_or(token, |_| &token[7..]);
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?).ok()?;
    claims.get(claim)?.as_str().map(str::to_string)
}

/// One progress line per scheme, on stdout.
fn print_line(line: &SchemeReport) {
    match &line.outcome {
        Outcome::Rekeyed { rewrapped, kek } => {
            let versions: Vec<String> = rewrapped.iter().map(u64::to_string).collect();
            let versions = if versions.is_empty() { "none".to_string() } else { versions.join(", ") };
            println!("rekey: {}: ok, versions rewrapped: {versions}; kek {kek}", line.name);
        }
        Outcome::Failed { status, code, message } => {
            println!("rekey: {}: FAILED {status} {code}: {message}", line.name);
        }
    }
}

/// The host's settings for this run: `veil serve`'s defaults with the manifest and state
/// directory of the command line.
fn host_args(args: &RekeyArgs) -> ServeArgs {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut serve = Defaults::parse_from(["veil-rekey"]).serve;
    serve.manifest = args.manifest.clone();
    serve.state_dir = args.state_dir.clone();
    serve.request_timeout_secs = args.request_timeout_secs;
    serve.max_instances = 1;
    serve.pg_pool_size = 2;
    serve.verbose = args.verbose;
    serve
}

pub fn run(args: RekeyArgs) -> Result<()> {
    let Ok(credential) = std::env::var(TOKEN_ENV) else {
        config_bail!(
            "${TOKEN_ENV} is not set: it holds the credential to rekey with (a tenant `admin` token)"
        );
    };
    let auth = authorization(&credential)?;
    let kek = match &args.kek {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) if v.is_object() => Some(v),
            _ => config_bail!(
                "--kek is not a JSON object (e.g. '{{\"provider\":\"aws-kms\",\"key_id\":\"...\"}}')"
            ),
        },
        None => None,
    };
    // A JWT names its tenant: refuse one for another tenant than --tenant before any call.
    let manifest = Manifest::load(&args.manifest)?;
    let app = AppVariables::from_env(&manifest.variables, false)?;
    let component = match manifest.http_component() {
        Ok((_, c)) => Some(ComponentVariables::resolve(&app, &c.variables)?),
        Err(_) => None,
    };
    let claim = effective(&app, component.as_ref(), "jwt_tenant_claim")
        .map(|v| v.expose().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "tenant".into());
    if let Some(t) = jwt_tenant(&credential, &claim) {
        if t != args.tenant {
            config_bail!("${TOKEN_ENV} is a token of another tenant than --tenant");
        }
    }
    drop(credential);

    let host = host_args(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let prepared = serve::prepare(&host, Mode::Serve)?;
    let server = prepared.server(&host, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let what = args.scheme.as_deref().map_or_else(|| "every scheme".to_string(), |s| format!("scheme {s}"));
    println!("rekey: tenant {}, {what}", args.tenant);
    let result =
        runtime.block_on(drive(&server, Some(&auth), args.scheme.as_deref(), kek.as_ref(), None, print_line));
    drop(server);
    runtime.shutdown_timeout(Duration::from_secs(1));
    let report = match result? {
        Ok(r) => r,
        Err(ListFailed { status, body }) => {
            let (code, message) = error_of(StatusCode::from_u16(status).unwrap_or_default(), &body);
            anyhow::bail!("cannot list the tenant's schemes: {status} {code}: {message}");
        }
    };
    let failed: Vec<String> = report
        .failed()
        .map(|s| match &s.outcome {
            Outcome::Failed { code, .. } => format!("{} ({code})", s.name),
            Outcome::Rekeyed { .. } => s.name.clone(),
        })
        .collect();
    let total = report.schemes.len();
    println!("rekey: {} of {total} schemes rekeyed, {} failed", total - failed.len(), failed.len());
    if !failed.is_empty() {
        anyhow::bail!(
            "rekey failed for {}; run it again once fixed (rekeyed schemes are skipped or redone safely)",
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_becomes_a_bearer_header() {
        assert_eq!(authorization("abc").unwrap(), "Bearer abc");
        assert_eq!(authorization(" Bearer abc\n").unwrap(), "Bearer abc");
        assert!(authorization("bad\nvalue").is_err());
        // no slicing inside a character (the component refuses such a credential itself)
        assert_eq!(authorization("ünïcødé").unwrap().as_bytes(), "Bearer ünïcødé".as_bytes());
    }

    #[test]
    fn a_jwt_names_its_tenant() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"tenant":"acme","org":7}"#);
        let jwt = format!("e30.{payload}.sig");
        assert_eq!(jwt_tenant(&jwt, "tenant").as_deref(), Some("acme"));
        assert_eq!(jwt_tenant(&format!("Bearer {jwt}"), "tenant").as_deref(), Some("acme"));
        assert_eq!(jwt_tenant(&jwt, "org"), None);
        assert_eq!(jwt_tenant("veil_abc.secret", "tenant"), None);
        assert_eq!(jwt_tenant("a.b.c.d", "tenant"), None);
    }

    #[test]
    fn the_report_counts_failures() {
        let report = Report {
            schemes: vec![
                SchemeReport {
                    name: "a".into(),
                    outcome: Outcome::Rekeyed { rewrapped: vec![1, 2], kek: json!({"provider": "local"}) },
                },
                SchemeReport {
                    name: "b".into(),
                    outcome: Outcome::Failed { status: 403, code: "forbidden".into(), message: "m".into() },
                },
            ],
        };
        assert_eq!(
            report.to_json(),
            json!({"schemes": [{"name": "a", "rewrapped": [1, 2], "kek": {"provider": "local"}},
                               {"name": "b", "status": 403, "error": {"code": "forbidden", "message": "m"}}],
                   "rekeyed": 1, "failed": 1})
        );
    }
}
