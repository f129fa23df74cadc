//! Identifiers parsed at the edge: a value of these types is always valid.

use std::fmt;

/// Why an identifier was refused; the message names the rule, never echoes secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub &'static str);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

fn is_name_char(c: u8, extra: &[u8]) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c)
}

/// A tenant, as carried in the caller's credential: 1–64 characters of
/// `[A-Za-z0-9._-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId("a tenant is 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A scheme name: 1–64 characters of `[a-z0-9_-]`, starting with a letter or digit.
/// It appears inside tokens, so it never contains the token separator `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemeName(String);

impl SchemeName {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|&c| is_name_char(c, b"_-"));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId("a scheme name is 1-64 characters of [a-z0-9_-], starting with a letter or digit"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SchemeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A data-key version of a scheme: 1, 2, 3, … (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyVersion(u32);

impl KeyVersion {
    pub const FIRST: KeyVersion = KeyVersion(1);

    pub fn new(v: u32) -> Result<Self, InvalidId> {
        if v == 0 {
            Err(InvalidId("a key version is a whole number from 1"))
        } else {
            Ok(Self(v))
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_names() {
        assert!(SchemeName::parse("pii").is_ok());
        assert!(SchemeName::parse("card_pan-2").is_ok());
        for bad in ["", "Pii", "a.b", "-x", "_x", &"a".repeat(65), "é"] {
            assert!(SchemeName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenants() {
        assert!(TenantId::parse("Acme.eu-1").is_ok());
        for bad in ["", ".a", "a b", &"a".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_versions() {
        assert!(KeyVersion::new(0).is_err());
        assert_eq!(KeyVersion::new(7).map(KeyVersion::get), Ok(7));
        assert_eq!(KeyVersion::new(u32::MAX).ok().and_then(KeyVersion::next), None);
    }
}
