//! TLS to PostgreSQL (rustls), following libpq's `sslmode` and `sslrootcert`, except that no mode
//! but `disable` ever connects in plain text (docs/storage.md, "TLS"):
//!
//! | `sslmode` | Veil |
//! |---|---|
//! | `disable` | plain text |
//! | `allow`, `prefer` (libpq's default, also when absent), `require` | TLS or no connection; the certificate is checked only if `sslrootcert` is given (as libpq does with a root file) |
//! | `verify-ca` | TLS; the certificate must chain to `sslrootcert` |
//! | `verify-full` | TLS; chain to `sslrootcert`, and issued for the host name (or IP address) |
//!
//! `sslrootcert` is a PEM file (relative paths from veil's working directory, as in libpq) or
//! `system` (the Mozilla roots compiled into veil). tokio-postgres knows neither those modes nor
//! `sslrootcert`, so [`split`] takes them out of the connection string before it is parsed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

/// Parameters that veil handles itself (the TLS ones tokio-postgres does not know, or that veil
/// does not support).
const TLS_KEYS: &[&str] =
    &["sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

/// How a connection string asked for TLS, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsRequest {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    /// A client-certificate or CRL parameter: not supported.
    pub unsupported: Option<String>,
}

/// What veil checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Nothing (libpq's `require` without a root file): encryption, no authentication.
    Nothing,
    /// The chain, up to `sslrootcert` (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// The TLS policy of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tls(Verify),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Plain => "plain text (sslmode=disable)",
            Mode::Tls(Verify::Nothing) => "TLS, certificate not verified",
            Mode::Tls(Verify::Chain) => "TLS, certificate verified (verify-ca)",
            Mode::Tls(Verify::Full) => "TLS, certificate and host name verified (verify-full)",
        })
    }
}

/// Takes the TLS parameters out of a connection string (URL or `key=value` form); the rest is
/// returned for tokio-postgres, byte for byte.
pub fn split(address: &str) -> Result<(String, TlsRequest), String> {
    let mut found = Vec::new();
    let rest = if address.starts_with("postgres://") || address.starts_with("postgresql://") {
        split_url(address, &mut found)?
    } else {
        split_key_values(address, &mut found)?
    };
    let mut request = TlsRequest::default();
    for (key, value) in found {
        match key.as_str() {
            "sslmode" => request.sslmode = Some(value),
            "sslrootcert" => request.sslrootcert = Some(value),
            _ => request.unsupported = Some(key),
        }
    }
    Ok((rest, request))
}

fn split_url(url: &str, found: &mut Vec<(String, String)>) -> Result<String, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_string());
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "invalid connection string: a parameter is not UTF-8".to_string())
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key_text = decode(key)?;
        if TLS_KEYS.contains(&key_text.as_str()) {
            found.push((key_text, decode(value)?));
        } else {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) })
}

/// libpq's `keyword = value` syntax: values may be single-quoted; `\` escapes the next character.
fn split_key_values(s: &str, found: &mut Vec<(String, String)>) -> Result<String, String> {
    let bad = || "invalid connection string: expected keyword = value pairs".to_string();
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if key.is_empty() || bytes.get(i) != Some(&b'=') {
            return Err(bad());
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(bad()),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        if TLS_KEYS.contains(&key) {
            let value = String::from_utf8(value).map_err(|_| bad())?;
            found.push((key.to_string(), value));
            out.push_str(&s[copied..start]);
            copied = i;
        }
    }
    out.push_str(&s[copied..]);
    Ok(out)
}

/// The policy a [`TlsRequest`] asks for.
pub fn mode(request: &TlsRequest) -> Result<Mode, String> {
    if let Some(key) = &request.unsupported {
        return Err(format!(
            "the connection string sets {key}, which veil does not support (client certificates and CRLs)"
        ));
    }
    let has_root = request.sslrootcert.is_some();
    let mode = match request.sslmode.as_deref() {
        Some("disable") => Mode::Plain,
        None | Some("allow" | "prefer" | "require") if has_root => Mode::Tls(Verify::Chain),
        None | Some("allow" | "prefer" | "require") => Mode::Tls(Verify::Nothing),
        Some("verify-ca") => Mode::Tls(Verify::Chain),
        Some("verify-full") => Mode::Tls(Verify::Full),
        Some(other) => {
            return Err(format!(
                "invalid sslmode `{other}`: use disable, allow, prefer, require, verify-ca or verify-full"
            ))
        }
    };
    if matches!(mode, Mode::Tls(Verify::Chain | Verify::Full)) && !has_root {
        return Err(
            "sslmode=verify-ca and verify-full need sslrootcert=<PEM file> (or sslrootcert=system)".into()
        );
    }
    Ok(mode)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchors `sslrootcert` names: a PEM file's certificates, or `system`.
fn roots(sslrootcert: &str) -> Result<RootCertStore, String> {
    if sslrootcert == "system" {
        return Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
    }
    let certs = CertificateDer::pem_file_iter(sslrootcert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read sslrootcert {sslrootcert}: {e}"))?;
    let mut store = RootCertStore::empty();
    let (_, rejected) = store.add_parsable_certificates(certs);
    if store.is_empty() {
        return Err(format!("sslrootcert {sslrootcert} holds no usable certificate ({rejected} rejected)"));
    }
    Ok(store)
}

/// Builds the connector for `mode`, reading `sslrootcert` now.
pub fn connector(mode: Mode, request: &TlsRequest) -> Result<PgTls, String> {
    let Mode::Tls(verify) = mode else {
        return Ok(PgTls { config: None, verify: Verify::Nothing });
    };
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, request.sslrootcert.as_deref()) {
        (Verify::Nothing, _) | (_, None) => Arc::new(AnyCertificate(provider)),
        (verify, Some(path)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(path)?), provider)
                .build()
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            if verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    Ok(PgTls { config: Some(Arc::new(config)), verify })
}

/// `verify-ca`: the chain must verify; the name it was issued for does not matter.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // rustls checks the name last, after the chain (and revocation) verified.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without a root file: any certificate (libpq's behaviour), but the handshake's
/// signatures must still verify with its key, and SCRAM channel binding (when the server offers
/// it) still ties the login to this certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `MakeTlsConnect` of a pool: no TLS (only used with `sslmode=disable`, where
/// tokio-postgres never starts a handshake), or rustls with the pool's configuration.
#[derive(Clone)]
pub struct PgTls {
    config: Option<Arc<ClientConfig>>,
    verify: Verify,
}

/// Why a TLS connection could not be set up.
#[derive(Debug)]
pub struct TlsSetupError(String);

impl std::fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsSetupError {}

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = TlsSetupError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, TlsSetupError> {
        let Some(config) = self.config.clone() else {
            return Ok(PgTlsConnect(None));
        };
        let name = match ServerName::try_from(domain.to_string()) {
            Ok(name) => name,
            // `hostaddr` without `host`: nothing to check a name against, nor to send as SNI.
            Err(_) if self.verify != Verify::Full => ServerName::try_from("postgres")
                .map_err(|e| TlsSetupError(format!("TLS setup failed: {e}")))?,
            Err(_) => {
                return Err(TlsSetupError(format!(
                    "sslmode=verify-full needs a host name to verify, not `{domain}`"
                )))
            }
        };
        Ok(PgTlsConnect(Some((config, name))))
    }
}

/// One handshake to come.
pub struct PgTlsConnect(Option<(Arc<ClientConfig>, ServerName<'static>)>);

impl TlsConnect<Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let Some((config, name)) = self.0 else {
                return Err(io::Error::other("TLS is off for this connection (sslmode=disable)"));
            };
            let stream = tokio_rustls::TlsConnector::from(config).connect(name, stream).await?;
            Ok(PgTlsStream(Box::new(stream)))
        })
    }
}

/// A TLS connection to the server.
pub struct PgTlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl AsyncRead for PgTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl TlsStream for PgTlsStream {
    /// `tls-server-end-point` (RFC 5929): a hash of the server's certificate, so that a SCRAM
    /// login (SCRAM-SHA-256-PLUS) fails through a man in the middle.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| end_point_hash(cert.as_ref()))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// One DER element: (tag, contents, what follows).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The certificate's hash for `tls-server-end-point`: the hash of its signature algorithm, with
/// MD5 and SHA-1 replaced by SHA-256 (RFC 5929 §4.1). `None` for algorithms without a single
/// hash (RSA-PSS, Ed25519): the login then goes on without channel binding.
fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (tag, certificate, _) = der(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _tbs, rest) = der(certificate)?;
    let (tag, algorithm, _) = der(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = der(algorithm)?;
    if tag != OID {
        return None;
    }
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    enum Hash {
        Sha256,
        Sha384,
        Sha512,
    }
    let hash = match oid.split_last() {
        Some((4 | 5 | 11, head)) if head == RSA => Hash::Sha256, // md5, sha1, sha256 WithRSA
        Some((12, head)) if head == RSA => Hash::Sha384,
        Some((13, head)) if head == RSA => Hash::Sha512,
        _ if oid == ECDSA_SHA1 => Hash::Sha256,
        Some((2, head)) if head == ECDSA_SHA2 => Hash::Sha256,
        Some((3, head)) if head == ECDSA_SHA2 => Hash::Sha384,
        Some((4, head)) if head == ECDSA_SHA2 => Hash::Sha512,
        _ => return None,
    };
    Some(match hash {
        Hash::Sha256 => sha2::Sha256::digest(cert).to_vec(),
        Hash::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(cert).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(mode: Option<&str>, root: Option<&str>) -> TlsRequest {
        TlsRequest {
            sslmode: mode.map(str::to_string),
            sslrootcert: root.map(str::to_string),
            unsupported: None,
        }
    }

    #[test]
    fn urls_lose_only_their_tls_parameters() {
        let (rest, r) = split("postgres://u:p@h:5432/db").unwrap();
        assert_eq!((rest.as_str(), r), ("postgres://u:p@h:5432/db", TlsRequest::default()));
        let (rest, r) = split(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fmy%20ca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(r, req(Some("verify-full"), Some("/tmp/my ca.pem")));
        let (rest, r) = split("postgresql://u@h/db?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), r), ("postgresql://u@h/db", req(Some("require"), None)));
        let (_, r) = split("postgres://u@h/db?sslcert=c.pem").unwrap();
        assert_eq!(r.unsupported.as_deref(), Some("sslcert"));
    }

    #[test]
    fn key_value_strings_lose_only_their_tls_parameters() {
        let (rest, r) =
            split("host=h sslmode = verify-ca  user=u sslrootcert='/tmp/a b\\'c.pem' dbname=d").unwrap();
        assert_eq!(rest, "host=h   user=u  dbname=d");
        assert_eq!(r, req(Some("verify-ca"), Some("/tmp/a b'c.pem")));
        let (rest, r) = split("host=h password='x y' port=5").unwrap();
        assert_eq!((rest.as_str(), r), ("host=h password='x y' port=5", TlsRequest::default()));
        let (rest, r) = split("sslrootcert=a\\ b.pem").unwrap();
        assert_eq!((rest.as_str(), r), ("", req(None, Some("a b.pem"))));
        assert!(split("host=h sslmode='unterminated").is_err());
        assert!(split("host").is_err());
    }

    #[test]
    fn modes() {
        use Verify::*;
        assert_eq!(mode(&req(Some("disable"), None)), Ok(Mode::Plain));
        assert_eq!(mode(&req(Some("disable"), Some("ca.pem"))), Ok(Mode::Plain));
        for m in [None, Some("allow"), Some("prefer"), Some("require")] {
            assert_eq!(mode(&req(m, None)), Ok(Mode::Tls(Nothing)), "{m:?}");
            assert_eq!(mode(&req(m, Some("ca.pem"))), Ok(Mode::Tls(Chain)), "{m:?}");
        }
        assert_eq!(mode(&req(Some("verify-ca"), Some("ca.pem"))), Ok(Mode::Tls(Chain)));
        assert_eq!(mode(&req(Some("verify-full"), Some("system"))), Ok(Mode::Tls(Full)));
        for m in ["verify-ca", "verify-full"] {
            assert!(mode(&req(Some(m), None)).unwrap_err().contains("sslrootcert"), "{m}");
        }
        assert!(mode(&req(Some("always"), None)).unwrap_err().contains("invalid sslmode"));
        let r = TlsRequest { unsupported: Some("sslkey".into()), ..TlsRequest::default() };
        assert!(mode(&r).unwrap_err().contains("sslkey"));
    }

    #[test]
    fn root_files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("veil-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = connector(Mode::Tls(Verify::Full), &req(None, missing.to_str())).err().unwrap();
        assert!(e.contains("cannot read sslrootcert"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = connector(Mode::Tls(Verify::Chain), &req(None, empty.to_str())).err().unwrap();
        assert!(e.contains("no usable certificate"), "{e}");
        assert!(connector(Mode::Tls(Verify::Full), &req(None, Some("system"))).is_ok());
        assert!(connector(Mode::Tls(Verify::Nothing), &req(None, None)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn end_point_hashes_follow_the_signature_algorithm() {
        // A minimal Certificate: SEQUENCE { tbs SEQUENCE {}, AlgorithmIdentifier { oid }, BIT STRING }.
        fn cert(oid: &[u8]) -> Vec<u8> {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
            body.extend_from_slice(&alg);
            body.extend_from_slice(&[0x03, 0x01, 0x00]);
            let mut c = vec![0x30, body.len() as u8];
            c.extend_from_slice(&body);
            c
        }
        let sha256_rsa = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]);
        assert_eq!(end_point_hash(&sha256_rsa), Some(sha2::Sha256::digest(&sha256_rsa).to_vec()));
        let sha1_rsa = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(end_point_hash(&sha1_rsa), Some(sha2::Sha256::digest(&sha1_rsa).to_vec()));
        let ecdsa384 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(end_point_hash(&ecdsa384), Some(sha2::Sha384::digest(&ecdsa384).to_vec()));
        let sha512_rsa = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
        assert_eq!(end_point_hash(&sha512_rsa), Some(sha2::Sha512::digest(&sha512_rsa).to_vec()));
        assert_eq!(end_point_hash(&cert(&[0x2b, 0x65, 0x70])), None, "Ed25519");
        assert_eq!(
            end_point_hash(&cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a])),
            None,
            "PSS"
        );
        assert_eq!(end_point_hash(b"\x30\x05garbage"), None);
        assert_eq!(end_point_hash(b""), None);
    }
}
