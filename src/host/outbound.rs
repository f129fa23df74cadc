//! Outbound HTTP through `wasi:http/outgoing-handler`, synchronously (the host enforces
//! `allowed_outbound_hosts`): the KMS providers' transport, and JWKS fetches on top of it.

use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};

use crate::auth::JwksFetcher;

/// Largest response body read (JWKS documents and vault answers are a few KiB).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

pub(crate) struct Outbound;

/// How long a JWKS fetch may take (connect, first byte, between bytes).
const JWKS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl JwksFetcher for Outbound {
    fn fetch_jwks(&self, url: &str) -> Result<String, String> {
        use crate::kms::transport::HttpTransport as _;
        let req = http::Request::get(url)
            .header("accept", "application/json")
            .body(Vec::new())
            .map_err(|_| "the JWKS URL is not a valid URL".to_string())?;
        let resp = self.send(req, JWKS_TIMEOUT).map_err(|e| format!("{e:?}"))?;
        if resp.status() != 200 {
            return Err(format!("status {}", resp.status()));
        }
        String::from_utf8(resp.into_body()).map_err(|_| "the JWKS is not UTF-8".into())
    }
}

/// KMS transport: any method, headers and body; every status is returned (the providers map them).
impl crate::kms::transport::HttpTransport for Outbound {
    fn send(
        &self,
        req: http::Request<Vec<u8>>,
        timeout: std::time::Duration,
    ) -> Result<http::Response<Vec<u8>>, crate::kms::transport::TransportError> {
        use crate::kms::transport::TransportError as E;
        let (parts, body) = req.into_parts();
        let scheme = match parts.uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err(E::Other("the URL must be http(s)".into())),
        };
        let authority = parts.uri.authority().ok_or_else(|| E::Other("the URL has no host".into()))?;
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let headers = Fields::new();
        for (name, value) in &parts.headers {
            if name == http::header::HOST {
                continue; // wasi:http derives it from the authority and forbids setting it
            }
            headers
                .append(name.as_str(), value.as_bytes())
                .map_err(|e| E::Other(format!("header {name}: {e:?}")))?;
        }
        if !body.is_empty() {
            // A fixed length instead of chunked transfer encoding (some servers and emulators want it).
            headers
                .append("content-length", body.len().to_string().as_bytes())
                .map_err(|e| E::Other(format!("content-length: {e:?}")))?;
        }
        let out = OutgoingRequest::new(headers);
        let method = match parts.method {
            http::Method::GET => Method::Get,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::DELETE => Method::Delete,
            ref m => Method::Other(m.to_string()),
        };
        let set = out
            .set_method(&method)
            .and(out.set_scheme(Some(&scheme)))
            .and(out.set_authority(Some(authority.as_str())))
            .and(out.set_path_with_query(Some(path)));
        set.map_err(|()| E::Other("the request could not be built".into()))?;
        let out_body = out.body().map_err(|_| E::Other("request body unavailable".into()))?;
        {
            let stream = out_body.write().map_err(|_| E::Other("request body unavailable".into()))?;
            for chunk in body.chunks(4096) {
                stream.blocking_write_and_flush(chunk).map_err(|e| E::Other(format!("{e:?}")))?;
            }
        }
        OutgoingBody::finish(out_body, None).map_err(map_error)?;
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let opts = RequestOptions::new();
        let _ = opts.set_connect_timeout(Some(ns));
        let _ = opts.set_first_byte_timeout(Some(ns));
        let _ = opts.set_between_bytes_timeout(Some(ns));
        let pending = outgoing_handler::handle(out, Some(opts)).map_err(map_error)?;
        pending.subscribe().block();
        let resp = pending
            .get()
            .ok_or_else(|| E::Other("no response".into()))?
            .map_err(|_| E::Other("response taken twice".into()))?
            .map_err(map_error)?;
        let mut builder = http::Response::builder().status(resp.status());
        for (name, value) in resp.headers().entries() {
            builder = builder.header(name, value);
        }
        let in_body = resp.consume().map_err(|_| E::Other("response body unavailable".into()))?;
        let stream = in_body.stream().map_err(|_| E::Other("response body unavailable".into()))?;
        let mut data = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    data.extend_from_slice(&chunk);
                    if data.len() > MAX_RESPONSE_BYTES {
                        return Err(E::Other("response too large".into()));
                    }
                }
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(E::Other(format!("{e:?}"))),
            }
        }
        drop(stream);
        builder.body(data).map_err(|_| E::Other("invalid response".into()))
    }
}

fn map_error(e: ErrorCode) -> crate::kms::transport::TransportError {
    use crate::kms::transport::TransportError as E;
    match e {
        ErrorCode::HttpRequestDenied => E::Denied,
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::DnsTimeout => E::Timeout,
        ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::DnsError(_)
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => E::Connect(format!("{e:?}")),
        other => E::Other(format!("{other:?}")),
    }
}
