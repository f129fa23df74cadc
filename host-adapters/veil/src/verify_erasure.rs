//! `veil verify-erasure <certificate.json> [--keys <jwks.json or URL>]`: checks an erasure
//! certificate offline (docs/erasure.md, "Verifying a certificate"). The signature is Ed25519
//! (RFC 8032, strict verification) over the canonical JSON (RFC 8785) of every field but
//! `signature`; the key is the JWKS entry whose `kid` is the certificate's `key_id`. This is
//! written from the documented format, without the component's code (the host never links it).

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::cli::VerifyErasureArgs;
use crate::config_bail;

/// Longest certificate or JWKS document read, in bytes.
const MAX_DOC_BYTES: usize = 1 << 20;
/// How long fetching the keys from a URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: VerifyErasureArgs) -> anyhow::Result<()> {
    let text = read_limited(&args.certificate)?;
    let cert: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => config_bail!("{}: not JSON ({e})", args.certificate.display()),
    };
    let keys_src = match (&args.keys, cert.get("issuer").and_then(Value::as_str)) {
        (Some(k), _) => k.clone(),
        (None, Some(issuer)) if issuer.starts_with("https://") || issuer.starts_with("http://") => {
            format!("{}/.well-known/veil/erasure-keys", issuer.trim_end_matches('/'))
        }
        (None, _) => config_bail!(
            "the certificate's issuer is not a URL: give the verification keys with --keys <jwks.json or URL>"
        ),
    };
    let jwks_text = if keys_src.starts_with("http://") || keys_src.starts_with("https://") {
        // Keys that cannot be fetched are like an unreadable file (exit 2): nothing was checked.
        match fetch(&keys_src) {
            Ok(text) => text,
            Err(e) => config_bail!("could not fetch the verification keys from {keys_src}: {e:#}"),
        }
    } else {
        read_limited(std::path::Path::new(&keys_src))?
    };
    let jwks: Value = match serde_json::from_str(&jwks_text) {
        Ok(v) => v,
        Err(e) => config_bail!("the verification keys are not JSON ({e})"),
    };
    let (id, kid) =
        verify(&cert, &jwks).map_err(|why| anyhow!("the erasure certificate does NOT verify: {why}"))?;
    println!("veil: erasure certificate {id} verifies: Ed25519 signature by key {kid}");
    Ok(())
}

fn read_limited(path: &std::path::Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::Error::new(crate::ConfigError(format!("{}: {e}", path.display()))))?;
    if meta.len() > MAX_DOC_BYTES as u64 {
        config_bail!("{}: larger than {MAX_DOC_BYTES} bytes", path.display());
    }
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::Error::new(crate::ConfigError(format!("{}: {e}", path.display()))))
}

/// The bytes the signature covers: the certificate without `signature`, as canonical JSON.
/// serde_json's maps are sorted by key and its compact output escapes strings minimally, which
/// is RFC 8785 for the values a certificate holds (strings, integers, booleans, null, arrays, and
/// the objects of `key_versions`, whose members are sorted the same way).
pub fn signed_bytes(cert: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut fields = cert.clone();
    fields.remove("signature");
    serde_json::to_vec(&Value::Object(fields)).unwrap_or_default()
}

/// Checks `cert` against the JWKS; returns its certificate id and key id, or why it fails.
pub fn verify(cert: &Value, jwks: &Value) -> Result<(String, String), String> {
    let obj = cert.as_object().ok_or("the certificate is not a JSON object")?;
    for field in ["certificate_id", "tenant", "erased_at", "issuer", "key_id", "alg", "signature"] {
        if !obj.contains_key(field) {
            return Err(format!("the certificate has no \"{field}\" field"));
        }
    }
    if obj.get("alg").and_then(Value::as_str) != Some("Ed25519") {
        return Err("its alg is not \"Ed25519\"".into());
    }
    let kid = obj.get("key_id").and_then(Value::as_str).ok_or("its key_id is not a string")?;
    let keys =
        jwks.get("keys").and_then(Value::as_array).ok_or("the keys are not a JWKS (no \"keys\" array)")?;
    let mut found = keys.iter().filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid));
    let key = found.next().ok_or_else(|| format!("no verification key has the kid \"{kid}\""))?;
    if found.next().is_some() {
        return Err(format!("two verification keys have the kid \"{kid}\""));
    }
    if key.get("kty").and_then(Value::as_str) != Some("OKP")
        || key.get("crv").and_then(Value::as_str) != Some("Ed25519")
    {
        return Err(format!("the key \"{kid}\" is not an Ed25519 (OKP) key"));
    }
    let x = key
        .get("x")
        .and_then(Value::as_str)
        .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
        .and_then(|x| <[u8; 32]>::try_from(x).ok())
        .ok_or_else(|| format!("the key \"{kid}\" has no 32-byte base64url x"))?;
    let public = ed25519_dalek::VerifyingKey::from_bytes(&x)
        .ok()
        .filter(|k| !k.is_weak())
        .ok_or_else(|| format!("the key \"{kid}\" is not a valid Ed25519 public key"))?;
    let sig = obj
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
        .ok_or("its signature is not base64url of 64 bytes")?;
    public.verify_strict(&signed_bytes(obj), &sig).map_err(|_| {
        "the signature does not match: a field was changed, or another key signed it".to_string()
    })?;
    let id = obj.get("certificate_id").and_then(Value::as_str).unwrap_or("?").to_owned();
    Ok((id, kid.to_owned()))
}

/// GETs a small document over HTTP/1.1 (TLS with the web PKI roots for https).
fn fetch(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse().context("not a URL")?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or_else(|| anyhow!("the URL has no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        tokio::time::timeout(FETCH_TIMEOUT, async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let authority = if (https && port == 443) || (!https && port == 80) {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            let req = http::Request::get(path)
                .header("host", authority)
                .header("accept", "application/json")
                .body(http_body_util::Empty::<bytes::Bytes>::new())?;
            if https {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = rustls::pki_types::ServerName::try_from(host.clone())?;
                let tls =
                    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await?;
                send(hyper_util::rt::TokioIo::new(tls), req).await
            } else {
                send(hyper_util::rt::TokioIo::new(tcp), req).await
            }
        })
        .await
        .map_err(|_| anyhow!("no answer within {} s", FETCH_TIMEOUT.as_secs()))?
    })
}

async fn send<T>(io: T, req: http::Request<http_body_util::Empty<bytes::Bytes>>) -> anyhow::Result<String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    if resp.status() != http::StatusCode::OK {
        bail!("HTTP status {}", resp.status());
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_DOC_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).context("the keys are not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden certificates of tests/vectors/veil-erasure-certificate-v1.txt verify, and a
    /// changed byte in any field does not.
    #[test]
    fn golden_certificates_verify_and_changes_fail() {
        let text = include_str!("../../../tests/vectors/veil-erasure-certificate-v1.txt");
        let mut n = 0;
        let mut public = None;
        let mut kid = None;
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("public_key: ") {
                public = Some(p.to_owned());
            }
            if let Some(k) = line.strip_prefix("kid: ") {
                kid = Some(k.to_owned());
            }
            let Some(c) = line.strip_prefix("certificate: ") else { continue };
            let pk: Vec<u8> = (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(&public.as_deref().unwrap()[i..i + 2], 16).unwrap())
                .collect();
            let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid.clone().unwrap(),
                                                      "x": URL_SAFE_NO_PAD.encode(&pk)}]});
            let cert: Value = serde_json::from_str(c).unwrap();
            assert!(verify(&cert, &jwks).is_ok());
            for (field, v) in cert.as_object().unwrap() {
                let mut bad = cert.clone();
                bad[field] = match v {
                    Value::String(s) if field == "signature" => {
                        let mut b = URL_SAFE_NO_PAD.decode(s).unwrap();
                        b[0] ^= 1;
                        Value::String(URL_SAFE_NO_PAD.encode(b))
                    }
                    Value::String(s) => Value::String(format!("{s}x")),
                    Value::Number(n) => Value::from(n.as_i64().unwrap() + 1),
                    Value::Bool(b) => Value::Bool(!b),
                    Value::Null => Value::from(0),
                    Value::Array(_) => Value::Array(vec!["x".into()]),
                    Value::Object(_) => Value::Null,
                };
                assert!(verify(&bad, &jwks).is_err(), "{field}");
            }
            n += 1;
        }
        assert_eq!(n, 4, "two subject certificates, one of a scheme, one of a tenant");
    }
}
