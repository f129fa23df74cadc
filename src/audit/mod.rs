//! The audit log (DESIGN §10, docs/audit.md): what an entry records, how it is sealed and
//! chained, and how a tenant's chain is verified. Pure: no I/O (the rows come from
//! [`crate::store`], the entries from [`crate::ops::audit`]).
//!
//! ```text
//! tenant key = HMAC-SHA256(audit_master_key, LP("veil") ‖ LP("audit-key") ‖ u32be(1) ‖ LP(tenant))
//! AAD        = LP("veil") ‖ LP("audit-entry") ‖ u32be(1) ‖ LP(tenant) ‖ LP(prev)
//! sealed     = nonce(12) ‖ AES-256-GCM(tenant key, nonce, AAD, entry JSON) ‖ tag(16)
//! prev       = SHA-256(sealed of the tenant's previous entry), 32 zero bytes for sequence 1
//! ```

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::aead::{AeadKey, Algorithm};
use crate::crypto::kdf::{self, DOMAIN};
use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;
use crate::crypto::Fields;
use crate::ids::TenantId;
use crate::vars::{ConfigError, Variables};

/// Purpose of the per-tenant audit key.
pub const PURPOSE_AUDIT_KEY: &str = "audit-key";
/// Purpose of the AAD that binds an entry to its tenant and its place in the chain.
pub const PURPOSE_AUDIT_ENTRY: &str = "audit-entry";
/// The version of both layouts.
pub const AUDIT_LABEL_VERSION: u32 = 1;
/// The `prev` of a tenant's first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// The audit settings (docs/configuration.md): `audit_master_key`, base64 of 32 bytes.
pub struct Settings {
    master: Option<SecretKey>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("audit::Settings").field("master", &self.master.as_ref().map(|_| "<secret>")).finish()
    }
}

impl Settings {
    /// Reads `audit_master_key`; a malformed one is refused now, a missing one when an entry
    /// is to be written or read ([`Settings::tenant_key`]).
    pub fn load(vars: &dyn Variables) -> Result<Settings, ConfigError> {
        const RULE: &str = "variable audit_master_key must be base64 of 32 bytes";
        let Some(v) = vars.get("audit_master_key").map(Zeroizing::new) else {
            return Ok(Settings { master: None });
        };
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|_| ConfigError(RULE.into()))?,
        );
        let master = SecretKey::try_from_slice(&raw).ok_or_else(|| ConfigError(RULE.into()))?;
        Ok(Settings { master: Some(master) })
    }

    /// Settings with this master key (tests, benchmarks).
    pub fn with_master(master: SecretKey) -> Settings {
        Settings { master: Some(master) }
    }

    /// The tenant's audit key; `misconfigured` without `audit_master_key`.
    pub fn tenant_key(&self, tenant: &TenantId) -> Result<TenantKey, ConfigError> {
        let master = self.master.as_ref().ok_or_else(|| {
            ConfigError(
                "every operation is audited: set the variable audit_master_key (base64 of 32 bytes)".into(),
            )
        })?;
        Ok(TenantKey::derive(master, tenant))
    }
}

/// A tenant's audit key, ready to seal and open its entries.
pub struct TenantKey {
    tenant: TenantId,
    aead: AeadKey,
}

impl TenantKey {
    pub fn derive(master: &SecretKey, tenant: &TenantId) -> TenantKey {
        let key = SecretKey::from_bytes(kdf::hmac_sha256(master, &key_input(tenant)));
        TenantKey { tenant: tenant.clone(), aead: AeadKey::new(Algorithm::Aes256Gcm, &key) }
    }

    /// Seals an entry that follows the sealed entry whose hash is `prev`.
    pub fn seal(&self, rng: &mut Csprng, prev: &[u8; 32], entry: &Entry) -> Vec<u8> {
        let json = Zeroizing::new(serde_json::to_vec(entry).unwrap_or_default());
        self.aead.seal(rng, &aad(&self.tenant, prev), &json)
    }

    /// Opens a sealed entry stored after `prev`; `None` if it was not sealed by this tenant's key
    /// at that place in the chain (or does not decode).
    pub fn open(&self, prev: &[u8], sealed: &[u8]) -> Option<Entry> {
        let prev: &[u8; 32] = prev.try_into().ok()?;
        let json = self.aead.open(&aad(&self.tenant, prev), sealed).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// What the tenant key is HMAC'd from: `LP("veil") ‖ LP("audit-key") ‖ u32be(1) ‖ LP(tenant)`.
pub fn key_input(tenant: &TenantId) -> Vec<u8> {
    Fields::new().str(DOMAIN).str(PURPOSE_AUDIT_KEY).u32(AUDIT_LABEL_VERSION).str(tenant.as_str()).finish()
}

/// The AAD of an entry: `LP("veil") ‖ LP("audit-entry") ‖ u32be(1) ‖ LP(tenant) ‖ LP(prev)`.
pub fn aad(tenant: &TenantId, prev: &[u8; 32]) -> Vec<u8> {
    Fields::new()
        .str(DOMAIN)
        .str(PURPOSE_AUDIT_ENTRY)
        .u32(AUDIT_LABEL_VERSION)
        .str(tenant.as_str())
        .bytes(prev)
        .finish()
}

/// SHA-256 of a sealed entry: the next entry's `prev`.
pub fn hash(sealed: &[u8]) -> [u8; 32] {
    Sha256::digest(sealed).into()
}

/// Who made the request: `kind` `jwt` (`id` is the token's `sub`) or, later, `api_key`
/// (`id` is the key's id, never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: String,
    pub id: String,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done (a batch may still hold per-item errors, counted in `failed_items`).
    Ok,
    /// Refused by policy: 403.
    Denied,
    /// Any other error answer (4xx or 5xx).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// One audit entry, as sealed and as `GET /v1/audit` shows it. Never a value, token, subject
/// id or key: names, numbers and codes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's place in its tenant's chain (1, 2, …), also sealed, so reordering shows.
    pub sequence: u64,
    /// Unix seconds.
    pub time: i64,
    pub tenant: String,
    pub principal: Actor,
    /// The operation's name (`protect`, `scheme.create`, … docs/audit.md).
    pub operation: String,
    /// The schemes the operation named or used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemes: Vec<String>,
    /// The key versions the operation used or made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_versions: Vec<u32>,
    /// How many items the request carried (values, tokens, subjects), when it is a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// How many of them failed on their own (per-item errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_items: Option<u64>,
    pub outcome: Outcome,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The error code of a refused or failed operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// One stored row of a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub sequence: u64,
    pub prev: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// What broke at the first bad entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Broken {
    /// The row's sealed entry or its `prev` was changed (it no longer opens at its place).
    Edited,
    /// A sequence number is missing.
    Deleted,
    /// The row holds another place's entry (rows swapped or renumbered).
    Reordered,
    /// The chain ends before the sequence of a head seen earlier (or recorded in the head row).
    Truncated,
}

/// The result of verifying a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok { entries: u64, head: [u8; 32] },
    Broken { sequence: u64, what: Broken, verified: u64 },
}

/// Walks a tenant's chain incrementally: rows arrive in sequence order, page by page.
pub struct Verifier<'k> {
    key: &'k TenantKey,
    expected: u64,
    running: [u8; 32],
    /// Hashes to compare against as the walk passes them: `(sequence, hash)`.
    checkpoints: Vec<(u64, [u8; 32])>,
    /// A head whose sequence is not known: some entry must hash to it.
    anywhere: Option<([u8; 32], bool)>,
    /// The chain must have at least this many entries.
    at_least: u64,
    broken: Option<(u64, Broken)>,
}

impl<'k> Verifier<'k> {
    pub fn new(key: &'k TenantKey) -> Self {
        Verifier {
            key,
            expected: 1,
            running: GENESIS,
            checkpoints: Vec::new(),
            anywhere: None,
            at_least: 0,
            broken: None,
        }
    }

    /// Also require that some entry hashes to `hash` (a head returned earlier, its count not given).
    pub fn reaches(&mut self, hash: [u8; 32]) {
        self.anywhere = Some((hash, false));
    }

    /// Also require at least `n` entries (a count returned earlier, its head not given).
    pub fn at_least(&mut self, n: u64) {
        self.at_least = self.at_least.max(n);
    }

    /// Also require that entry `sequence` hashes to `hash` (a head returned earlier).
    pub fn checkpoint(&mut self, sequence: u64, hash: [u8; 32]) {
        self.checkpoints.push((sequence, hash));
    }

    /// Feeds the next row; `false` once the chain is broken (stop feeding).
    pub fn feed(&mut self, row: &Row) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let what = if row.sequence > self.expected {
            Some((self.expected, Broken::Deleted))
        } else if row.sequence < self.expected {
            Some((row.sequence, Broken::Reordered))
        } else {
            match self.key.open(&row.prev, &row.sealed) {
                None => Some((row.sequence, Broken::Edited)),
                Some(e) if e.sequence != row.sequence || e.tenant != self.key.tenant.as_str() => {
                    Some((row.sequence, Broken::Reordered))
                }
                // It opens at its own place, but its `prev` is not the row before it: the row
                // that was there has been removed (and the rest renumbered) or replaced.
                Some(_) if row.prev[..] != self.running[..] => Some((row.sequence, Broken::Deleted)),
                Some(_) => None,
            }
        };
        if let Some(b) = what {
            self.broken = Some(b);
            return false;
        }
        self.running = hash(&row.sealed);
        if let Some((h, found)) = &mut self.anywhere {
            *found |= *h == self.running;
        }
        if let Some((_, h)) = self.checkpoints.iter().find(|(s, _)| *s == row.sequence) {
            if h != &self.running {
                self.broken = Some((row.sequence, Broken::Edited));
                return false;
            }
        }
        self.expected += 1;
        true
    }

    /// The verdict after the last row. `head_sequence` is what the tenant's head row says the
    /// last sequence is: a chain that stops short of it, or of a checkpoint, was truncated.
    pub fn finish(self, head_sequence: u64) -> Verdict {
        let entries = self.expected - 1;
        if let Some((sequence, what)) = self.broken {
            return Verdict::Broken { sequence, what, verified: sequence.saturating_sub(1) };
        }
        let claimed =
            self.checkpoints.iter().map(|(s, _)| *s).chain([head_sequence, self.at_least]).max().unwrap_or(0);
        if claimed > entries || matches!(self.anywhere, Some((_, false))) {
            return Verdict::Broken { sequence: entries + 1, what: Broken::Truncated, verified: entries };
        }
        Verdict::Ok { entries, head: self.running }
    }
}

/// Lower-case hex of a hash, as the API shows heads.
pub fn to_hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A head from a query string: 64 hex digits.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
