//! `allowed_outbound_hosts`: Spin's `scheme://host[:port]` rules, enforced on outgoing `wasi:http` requests.

use std::future::Future;
use std::sync::Arc;

use anyhow::Result;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::config_bail;

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`, stored as `.example.com`: any subdomain, not the domain itself.
    Subdomains(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    /// Inclusive range; a single port is `n..=n`.
    Range(u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `None` for `*://`.
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

/// The parsed `allowed_outbound_hosts` of one component.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    rules: Vec<Rule>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

fn parse_port(text: &str, entry: &str) -> Result<PortPattern> {
    let num = |s: &str| -> Result<u16> {
        match s.parse::<u16>() {
            Ok(n) => Ok(n),
            Err(_) => config_bail!("allowed_outbound_hosts entry `{entry}`: invalid port `{s}`"),
        }
    };
    if text == "*" {
        return Ok(PortPattern::Any);
    }
    if let Some((lo, hi)) = text.split_once("..=") {
        return Ok(PortPattern::Range(num(lo)?, num(hi)?));
    }
    if let Some((lo, hi)) = text.split_once("..") {
        let (lo, hi) = (num(lo)?, num(hi)?);
        if hi <= lo {
            config_bail!("allowed_outbound_hosts entry `{entry}`: empty port range");
        }
        return Ok(PortPattern::Range(lo, hi - 1));
    }
    let n = num(text)?;
    Ok(PortPattern::Range(n, n))
}

impl Rule {
    fn parse(entry: &str) -> Result<Rule> {
        let Some((scheme, rest)) = entry.split_once("://") else {
            config_bail!("allowed_outbound_hosts entry `{entry}` must look like `scheme://host[:port]`");
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !(scheme == "*" || scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
        {
            config_bail!("allowed_outbound_hosts entry `{entry}`: invalid scheme");
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') {
            config_bail!("allowed_outbound_hosts entry `{entry}`: expected `host[:port]` after the scheme (no path, no CIDR)");
        }
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let Some((v6, tail)) = after.split_once(']') else {
                config_bail!("allowed_outbound_hosts entry `{entry}`: unterminated `[`");
            };
            match tail {
                "" => (v6.to_string(), None),
                t => match t.strip_prefix(':') {
                    Some(p) => (v6.to_string(), Some(p)),
                    None => config_bail!("allowed_outbound_hosts entry `{entry}`: junk after `]`"),
                },
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                config_bail!("allowed_outbound_hosts entry `{entry}`: invalid wildcard host");
            }
            HostPattern::Subdomains(format!(".{suffix}"))
        } else if host.is_empty() || host.contains('*') {
            config_bail!("allowed_outbound_hosts entry `{entry}`: invalid host");
        } else {
            HostPattern::Exact(host)
        };
        let port = match port {
            Some(p) => parse_port(p, entry)?,
            None => match default_port(&scheme) {
                Some(p) => PortPattern::Range(p, p),
                None => config_bail!(
                    "allowed_outbound_hosts entry `{entry}`: a port is required for scheme `{scheme}`"
                ),
            },
        };
        let scheme = (scheme != "*").then_some(scheme);
        Ok(Rule { scheme, host, port })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            HostPattern::Exact(h) => normalize_host(h) == host,
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Range(lo, hi) => (lo..=hi).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

impl AllowedHosts {
    /// Parses already-expanded entries; any malformed entry is a start-up error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        let rules = entries.iter().map(|e| Rule::parse(e.as_ref().trim())).collect::<Result<_>>()?;
        Ok(AllowedHosts { rules })
    }

    /// Whether a request to `scheme://host:port` is allowed (the port defaults from the scheme).
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let Some(port) = port.or_else(|| default_port(&scheme)) else {
            return false;
        };
        let host = normalize_host(host);
        self.rules.iter().any(|r| r.allows(&scheme, &host, port))
    }

    /// Whether an absolute request URI is allowed.
    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => self.allows(scheme, host, uri.port_u16()),
            _ => false,
        }
    }
}

type HttpResult<T> = Result<T, wasmtime_wasi_http::Error>;
type IoFuture = Box<dyn Future<Output = HttpResult<()>> + Send>;

/// `wasi:http` hooks for one instance: outgoing requests pass only if allowed.
pub struct OutboundHttp {
    allowed: Arc<AllowedHosts>,
}

impl OutboundHttp {
    pub fn new(allowed: Arc<AllowedHosts>) -> Self {
        OutboundHttp { allowed }
    }
}

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> Box<dyn Future<Output = HttpResult<(http::Response<WasiBody>, IoFuture)>> + Send> {
        if !self.allowed.allows_uri(request.uri()) {
            let uri = request.uri();
            eprintln!(
                "veil: denied outbound request to {}://{}{} (not in allowed_outbound_hosts)",
                uri.scheme_str().unwrap_or("?"),
                uri.host().unwrap_or("?"),
                uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default(),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as IoFuture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).unwrap()
    }

    #[test]
    fn exact_host_and_default_ports() {
        let h = hosts(&["https://kms.eu-west-1.amazonaws.com", "http://example.com"]);
        assert!(h.allows("https", "kms.eu-west-1.amazonaws.com", None));
        assert!(h.allows("https", "KMS.eu-west-1.amazonaws.com", Some(443)));
        assert!(!h.allows("https", "kms.eu-west-1.amazonaws.com", Some(8443)));
        assert!(!h.allows("http", "kms.eu-west-1.amazonaws.com", None));
        assert!(h.allows("http", "example.com", Some(80)));
        assert!(!h.allows("https", "example.com", None));
        assert!(!h.allows("http", "www.example.com", None));
    }

    #[test]
    fn wildcards() {
        let h = hosts(&["https://*.vault.azure.net", "http://127.0.0.1:*", "*://localhost:8080"]);
        assert!(h.allows("https", "myvault.vault.azure.net", None));
        assert!(h.allows("https", "a.b.vault.azure.net", None));
        assert!(!h.allows("https", "vault.azure.net", None));
        assert!(!h.allows("https", "evilvault.azure.net", None));
        assert!(h.allows("http", "127.0.0.1", Some(1234)));
        assert!(h.allows("http", "127.0.0.1", None));
        assert!(!h.allows("https", "127.0.0.1", Some(1234)));
        assert!(h.allows("http", "localhost", Some(8080)));
        assert!(h.allows("https", "localhost", Some(8080)));
        assert!(!h.allows("https", "localhost", Some(8081)));
        let any = hosts(&["https://*:*"]);
        assert!(any.allows("https", "anything.example", Some(1)));
        assert!(!any.allows("http", "anything.example", Some(1)));
    }

    #[test]
    fn ports_and_ipv6() {
        let h = hosts(&["http://[::1]:8000..8002", "http://10.0.0.1:9000..=9001/"]);
        assert!(h.allows("http", "[::1]", Some(8000)));
        assert!(h.allows("http", "::1", Some(8001)));
        assert!(!h.allows("http", "[::1]", Some(8002)));
        assert!(h.allows("http", "10.0.0.1", Some(9001)));
        assert!(!h.allows("http", "10.0.0.1", Some(9002)));
    }

    #[test]
    fn uris() {
        let h = hosts(&["http://127.0.0.1:*"]);
        assert!(h.allows_uri(&"http://127.0.0.1:3000/x?y".parse().unwrap()));
        assert!(!h.allows_uri(&"http://localhost:3000/x".parse().unwrap()));
        assert!(!h.allows_uri(&"/relative".parse().unwrap()));
        assert!(!AllowedHosts::default().allows_uri(&"https://example.com/".parse().unwrap()));
    }

    #[test]
    fn malformed_entries() {
        for bad in [
            "example.com",
            "https://",
            "*://example.com",
            "https://ex*ample.com",
            "http://h:99999",
            "http://h/path",
            "http://10.0.0.0/8",
            "http://h:9..9",
        ] {
            assert!(AllowedHosts::parse(&[bad]).is_err(), "{bad} should be rejected");
        }
    }
}
