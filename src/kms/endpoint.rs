//! Where a bearer token or a signed KMS request may be sent (issue 19 item 2). A vault URL that
//! names a loopback, link-local or private-range address would steer the gateway's vault token
//! (valid for every tenant's KEK) to a listener next to it, so outside dev mode such URLs, and
//! any URL that is not `https://`, are refused unless `kms_allow_private_endpoints` is `true`.
//!
//! The check looks at the host the URL names, in every spelling a resolver accepts for an
//! address: IPv4 dotted quads and their short, octal and hexadecimal forms (`127.1`,
//! `0177.0.0.1`, `0x7f000001`, `2130706433`), IPv6 literals including the forms that embed an
//! IPv4 address (`::ffff:127.0.0.1`, `::127.0.0.1`, `64:ff9b::7f00:1`, `2002:7f00:1::`), and the
//! names `localhost` / `*.localhost`. A DNS name is resolved by the host when the request is
//! sent; the manifest's `allowed_outbound_hosts` decides which names exist at all.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Whether `host` (as in a URL: IPv6 in brackets or not) names an address that is not on the
/// public internet, or is spelled like a number without being a valid address.
pub(crate) fn is_private_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    if h.is_empty() || h == "localhost" || h.ends_with(".localhost") || h == "localhost.localdomain" {
        return true;
    }
    if h.contains(':') {
        // An IPv6 literal, or something that only pretends to be one.
        return h.parse::<Ipv6Addr>().map(private_v6).unwrap_or(true);
    }
    match parse_ipv4_like(&h) {
        Some(v4) => private_v4(v4),
        // A name whose last label is a number is not a DNS name: a resolver may read it as an
        // address in a form we do not parse, so it is treated as private.
        None => h.rsplit('.').next().is_some_and(numeric_label),
    }
}

fn numeric_label(l: &str) -> bool {
    !l.is_empty()
        && (l.bytes().all(|b| b.is_ascii_digit())
            || l.strip_prefix("0x").is_some_and(|x| x.bytes().all(|b| b.is_ascii_hexdigit())))
}

/// `inet_aton`'s forms: 1 to 4 parts, each decimal, octal (leading `0`) or hex (`0x`); the last
/// part fills the remaining bytes.
fn parse_ipv4_like(h: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = h.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let n = if let Some(x) = p.strip_prefix("0x") {
            if x.is_empty() {
                0
            } else {
                u64::from_str_radix(x, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse::<u64>().ok()?
        } else {
            return None;
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return None;
    }
    let mut v: u64 = 0;
    for &n in head {
        v = (v << 8) | n;
    }
    v = (v << rest_bits) | *last;
    Some(Ipv4Addr::from(u32::try_from(v).ok()?))
}

fn private_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, ..] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || o0 == 0
        || (o0 == 100 && (64..128).contains(&o1)) // shared address space (RFC 6598)
        || (o0 == 198 && (18..20).contains(&o1)) // benchmarking (RFC 2544)
        || o0 >= 240 // reserved
}

fn private_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    if let Some(v4) = a.to_ipv4_mapped() {
        return private_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated), NAT64 (64:ff9b::/96): the last 32 bits.
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && !a.is_loopback() && !a.is_unspecified() {
        return private_v4(embedded);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return private_v4(embedded);
    }
    // 6to4 (2002::/16) carries an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return private_v4(v4);
    }
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
}

/// Refuses a vault URL that is not `https://` or names a private host (when private endpoints
/// are not allowed); `what` names the setting or field in the message, never the URL itself.
pub(crate) fn check_vault_url(url: &str, what: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let refused = || {
        format!(
            "{what} must be an https:// URL of a public host outside dev mode (loopback, link-local \
             and private addresses need kms_allow_private_endpoints = true)"
        )
    };
    let uri: http::Uri = url.trim().parse().map_err(|_| refused())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(host)) if !is_private_host(host) => Ok(()),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_hosts_in_every_spelling() {
        for h in [
            "localhost",
            "LOCALHOST.",
            "vault.localhost",
            "127.0.0.1",
            "127.1",
            "0177.0.0.1",
            "0x7f.0.0.1",
            "0x7f000001",
            "2130706433",
            "017700000001",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0",
            "255.255.255.255",
            "224.0.0.1",
            "[::1]",
            "::",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::ffff:10.0.0.1]",
            "[::127.0.0.1]",
            "[64:ff9b::7f00:1]",
            "[2002:7f00:1::]",
            "[2002:c0a8:101::1]",
            "[fc00::1]",
            "[fd12:3456::1]",
            "[fe80::1]",
            "[fe80::1%25eth0]",
            "[fec0::1]",
            "1.2.3.4.5",
            "999.1.1.1",
            "host.0x10",
            "[not-an-ip:]",
        ] {
            assert!(is_private_host(h), "{h} must count as private");
        }
    }

    #[test]
    fn public_hosts() {
        for h in [
            "myvault.vault.azure.net",
            "kms.eu-west-1.amazonaws.com",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "[2606:4700::1111]",
            "[::ffff:8.8.8.8]",
            "[2002:0808:0808::]",
            "cafe.be",
            "123.example.com",
        ] {
            assert!(!is_private_host(h), "{h} is public");
        }
    }

    #[test]
    fn vault_urls_outside_dev_mode() {
        let ok = |u: &str| check_vault_url(u, "key_url", false);
        assert_eq!(ok("https://myvault.vault.azure.net/keys/k"), Ok(()));
        for bad in [
            "http://myvault.vault.azure.net/keys/k",
            "https://127.0.0.1:8443/keys/k",
            "https://[::ffff:127.0.0.1]/keys/k",
            "https://localhost/keys/k",
            "https://169.254.169.254/",
            "ftp://x/",
            "not a url",
        ] {
            let e = ok(bad).expect_err(bad);
            assert!(e.starts_with("key_url must be an https:// URL") && !e.contains(bad), "{e}");
        }
        assert_eq!(check_vault_url("http://127.0.0.1:1/keys/k", "key_url", true), Ok(()));
    }
}
