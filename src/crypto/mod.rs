//! The pure crypto core: secrets, the per-instance CSPRNG, the AEADs, key derivation and
//! Veil's token format. No I/O, no async, no host calls: everything here is a function of
//! its inputs (and of the [`rng::Csprng`] handed in).
//!
//! Doors: [`secret::SecretKey`] holds key bytes; [`kdf`] turns a data key into per-tenant
//! scheme keys; [`aead::AeadKey`] seals and opens; [`token`] writes and reads
//! `veil.1.<scheme>.<version>.<payload>` and binds the context into the AAD.

use std::fmt;

pub mod aead;
pub mod kdf;
pub mod rng;
pub mod secret;
pub mod sign;
pub mod token;
pub mod transit;

#[cfg(test)]
mod rfc4231_tests;
#[cfg(test)]
mod wycheproof_tests;

/// One opaque error for every decrypt failure (no tag/format oracle): a wrong key, a
/// changed byte, a payload too short for its nonce and tag, or a mismatched AAD all look
/// the same to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptError;

impl fmt::Display for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the value could not be decrypted")
    }
}

impl std::error::Error for DecryptError {}

/// The unambiguous field encoding shared by the KDF info strings and the token AAD
/// (docs/token-format.md): every variable-length field is prefixed with its length as
/// 8 bytes big-endian; an optional field is a presence byte (0 = absent, 1 = present)
/// followed, when present, by the length-prefixed field.
pub(crate) struct Fields(Vec<u8>);

impl Fields {
    pub(crate) fn new() -> Self {
        Self(Vec::with_capacity(128))
    }
    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        // usize is at most 64 bits on every target Rust supports, so this is lossless.
        self.0.extend_from_slice(&(b.len() as u64).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    pub(crate) fn opt_str(mut self, s: Option<&str>) -> Self {
        match s {
            None => {
                self.0.push(0);
                self
            }
            Some(s) => {
                self.0.push(1);
                self.str(s)
            }
        }
    }
    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads the self-describing vector files under `tests/vectors/`.
///
/// Format: `#` lines are comments; a case is a run of `field: value` lines; cases are
/// separated by blank lines. Values are trimmed; an empty value is allowed.
#[cfg(test)]
pub(crate) mod testvec {
    use std::collections::BTreeMap;

    pub(crate) struct Case {
        fields: BTreeMap<String, String>,
    }

    impl Case {
        pub(crate) fn get(&self, k: &str) -> &str {
            match self.fields.get(k) {
                Some(v) => v,
                None => panic!("vector {:?} lacks field {k:?}", self.fields.get("name")),
            }
        }
        pub(crate) fn opt(&self, k: &str) -> Option<&str> {
            self.fields.get(k).map(String::as_str)
        }
        pub(crate) fn hex(&self, k: &str) -> Vec<u8> {
            unhex(self.get(k))
        }
        pub(crate) fn name(&self) -> &str {
            self.get("name")
        }
    }

    pub(crate) fn parse(text: &str) -> Vec<Case> {
        let mut out = Vec::new();
        let mut cur = BTreeMap::new();
        for line in text.lines().chain(std::iter::once("")) {
            let line = line.trim_end();
            if line.starts_with('#') {
                continue;
            }
            if line.is_empty() {
                if !cur.is_empty() {
                    out.push(Case { fields: std::mem::take(&mut cur) });
                }
                continue;
            }
            let (k, v) = line.split_once(':').unwrap_or_else(|| panic!("bad vector line {line:?}"));
            let prev = cur.insert(k.trim().to_owned(), v.trim().to_owned());
            assert!(prev.is_none(), "duplicate field {k:?}");
        }
        out
    }

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex {s:?}")))
            .collect()
    }

    pub(crate) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
