//! Outbound HTTP through `wasi:http/outgoing-handler`, synchronously (the host enforces
//! `allowed_outbound_hosts`). Used to fetch JWKS documents; KMS providers will share it.

use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};

use crate::auth::JwksFetcher;

/// Largest response body read (JWKS documents are a few KiB).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
const TIMEOUT_NS: u64 = 5_000_000_000;

pub(crate) struct Outbound;

impl Outbound {
    /// GET `url`; the body when the status is 200.
    pub(crate) fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err("the URL must start with https:// or http://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let headers = Fields::new();
        let _ = headers.append("accept", b"application/json");
        let req = OutgoingRequest::new(headers);
        let _ = req.set_method(&Method::Get);
        let _ = req.set_scheme(Some(&scheme));
        let _ = req.set_authority(Some(authority));
        let _ = req.set_path_with_query(Some(path));
        let body = req.body().map_err(|_| "request body unavailable".to_string())?;
        OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
        let opts = RequestOptions::new();
        let _ = opts.set_connect_timeout(Some(TIMEOUT_NS));
        let _ = opts.set_first_byte_timeout(Some(TIMEOUT_NS));
        let _ = opts.set_between_bytes_timeout(Some(TIMEOUT_NS));
        let pending = outgoing_handler::handle(req, Some(opts)).map_err(|e| format!("{e:?}"))?;
        pending.subscribe().block();
        let resp = pending
            .get()
            .ok_or("no response")?
            .map_err(|_| "response taken twice".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        if resp.status() != 200 {
            return Err(format!("status {}", resp.status()));
        }
        let body = resp.consume().map_err(|_| "response body unavailable".to_string())?;
        let stream = body.stream().map_err(|_| "response body unavailable".to_string())?;
        let mut out = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    out.extend_from_slice(&chunk);
                    if out.len() > MAX_RESPONSE_BYTES {
                        return Err("response too large".into());
                    }
                }
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(format!("{e:?}")),
            }
        }
        drop(stream);
        Ok(out)
    }
}

impl JwksFetcher for Outbound {
    fn fetch_jwks(&self, url: &str) -> Result<String, String> {
        let body = self.get(url)?;
        String::from_utf8(body).map_err(|_| "the JWKS is not UTF-8".into())
    }
}
