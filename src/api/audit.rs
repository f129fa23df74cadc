//! `GET /v1/audit` and `GET /v1/audit/verify` (docs/audit.md): the query strings are parsed here.

use super::error::ApiError;
use super::ApiResponse;
use crate::audit::{parse_hex32, TenantKey};
use crate::auth::Principal;
use crate::ops::audit::{AuditQuery, MAX_AUDIT_LIMIT};
use crate::ops::{self, Ctx, OpError};

/// Longest query string read.
const MAX_QUERY_BYTES: usize = 2048;
/// Longest `operation` filter.
const MAX_OPERATION_CHARS: usize = 64;

/// `name=value` pairs of a query string; a repeated or unknown name is refused.
fn pairs(query: &str, known: &[&'static str]) -> Result<Vec<(&'static str, String)>, ApiError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(invalid(format!("the query string is longer than {MAX_QUERY_BYTES} bytes")));
    }
    let mut out: Vec<(&str, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let Some(&name) = known.iter().find(|k| **k == name) else {
            return Err(invalid(format!("unknown query parameter; known: {}", known.join(", "))));
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(invalid(format!("the query parameter `{name}` is given twice")));
        }
        let value = percent_decode(value)
            .ok_or_else(|| invalid(format!("`{name}` is not valid percent-encoded UTF-8")))?;
        out.push((name, value));
    }
    Ok(out)
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::from(OpError::InvalidQuery(m.into()))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A whole number of at most 19 digits.
fn number(name: &str, v: &str, min: u64, max: u64) -> Result<u64, ApiError> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n) && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| invalid(format!("`{name}` must be a whole number from {min} to {max}")))
}

/// `since` / `until`: RFC 3339 in UTC (`2026-12-01T16:00:00Z`) or Unix seconds.
fn time(name: &str, v: &str) -> Result<i64, ApiError> {
    let bad =
        || invalid(format!("`{name}` must be an RFC 3339 UTC time (2026-12-01T16:00:00Z) or Unix seconds"));
    if !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<i64>().map_err(|_| bad());
    }
    parse_rfc3339_utc(v).ok_or_else(bad)
}

/// `YYYY-MM-DDTHH:MM:SSZ` → Unix seconds (the inverse of [`crate::clock::rfc3339`]).
fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, m, d, hh, mm, ss) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let unix = days * 86_400 + hh * 3600 + mm * 60 + ss;
    // A day past the month's end (2026-02-30) counts on into the next month, as the document's
    // pattern (day 01-31 in any month) allows it.
    Some(unix)
}

pub(super) fn list(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    key: &TenantKey,
    query: &str,
) -> Result<ApiResponse, ApiError> {
    let mut q = AuditQuery::default();
    for (name, v) in pairs(query, &["since", "until", "operation", "limit", "cursor"])? {
        match name {
            "since" => q.since = Some(time(name, &v)?),
            "until" => q.until = Some(time(name, &v)?),
            "limit" => q.limit = Some(number(name, &v, 1, MAX_AUDIT_LIMIT)?),
            "cursor" => q.cursor = Some(number(name, &v, 0, i64::MAX as u64)?),
            _ => {
                let ok = !v.is_empty()
                    && v.len() <= MAX_OPERATION_CHARS
                    && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_');
                if !ok {
                    return Err(invalid(format!(
                        "`operation` is 1-{MAX_OPERATION_CHARS} characters of a-z, `.` and `_`"
                    )));
                }
                q.operation = Some(v);
            }
        }
    }
    let body = ops::audit::list_audit(ctx, who, key, &q)?;
    Ok(ApiResponse::json(200, &body))
}

pub(super) fn verify(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    key: &TenantKey,
    query: &str,
) -> Result<ApiResponse, ApiError> {
    let mut head = None;
    let mut entries = None;
    for (name, v) in pairs(query, &["head", "entries"])? {
        if name == "head" {
            head = Some(parse_hex32(&v).ok_or_else(|| invalid("`head` must be 64 hex digits"))?);
        } else {
            entries = Some(number(name, &v, 1, i64::MAX as u64)?);
        }
    }
    let body = ops::audit::verify_audit(ctx, who, key, entries, head)?;
    Ok(ApiResponse::json(200, &body))
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_utc;

    #[test]
    fn rfc3339_round_trips() {
        for t in [0, 951_782_400, 1_795_388_400, 1_764_606_000] {
            assert_eq!(parse_rfc3339_utc(&crate::clock::rfc3339(t)), Some(t));
        }
        // a day past the month's end counts on (as the document's pattern allows it)
        assert_eq!(parse_rfc3339_utc("2026-02-29T00:00:00Z"), parse_rfc3339_utc("2026-03-01T00:00:00Z"));
        for bad in
            ["2026-02-32T00:00:00Z", "2026-13-01T00:00:00Z", "2026-12-01T00:00:00", "2026-12-01 00:00:00Z"]
        {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }
}
