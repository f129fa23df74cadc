//! Key-encryption keys: wrap and unwrap data keys. The KEK never leaves its provider.
//!
//! `local` is the dev-only provider; `aws` and `azure` (over outbound HTTP) plug in beside it.

pub mod local;

use std::fmt;

use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName, TenantId};

/// What a wrapped data key is bound to; providers that support it (local AAD, AWS encryption
/// context) refuse to unwrap under any other binding.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    pub tenant: &'a TenantId,
    pub scheme: &'a SchemeName,
    pub version: KeyVersion,
}

/// A data key as stored: only ever wrapped, with the KEK that wrapped it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDek {
    pub blob: Vec<u8>,
    pub kek_id: String,
    pub kek_version: String,
}

impl fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDek")
            .field("blob_len", &self.blob.len())
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .finish()
    }
}

/// Provider failures, as stable codes for callers; details stay in `detail` for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KmsError {
    /// The provider cannot be used in this deployment (e.g. `local` outside dev mode).
    DevModeRequired,
    /// The provider's settings are missing or wrong.
    Misconfigured(String),
    /// The provider did not answer.
    Unavailable(String),
    /// The provider refused (permissions).
    Denied(String),
    /// The key (or key version) is unknown to the provider.
    KeyNotFound(String),
    /// The wrapped key does not unwrap (wrong KEK, wrong context, corrupted blob).
    UnwrapFailed,
}

impl KmsError {
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::DevModeRequired => "dev_mode_required",
            KmsError::Misconfigured(_) => "misconfigured",
            KmsError::Unavailable(_) => "kms_unavailable",
            KmsError::Denied(_) => "kms_denied",
            KmsError::KeyNotFound(_) => "kms_key_not_found",
            KmsError::UnwrapFailed => "kms_unwrap_failed",
        }
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsError::DevModeRequired => f.write_str("the local KEK is only available in dev mode"),
            KmsError::Misconfigured(m) => write!(f, "KEK misconfigured: {m}"),
            KmsError::Unavailable(_) => f.write_str("the key vault did not answer"),
            KmsError::Denied(_) => f.write_str("the key vault refused the request"),
            KmsError::KeyNotFound(_) => f.write_str("the key-encryption key was not found"),
            KmsError::UnwrapFailed => f.write_str("a stored data key does not unwrap under its KEK"),
        }
    }
}

/// A key-encryption key.
pub trait Kek {
    fn wrap(&self, dek: &SecretKey, ctx: KeyContext<'_>) -> Result<WrappedDek, KmsError>;
    fn unwrap(&self, wrapped: &WrappedDek, ctx: KeyContext<'_>) -> Result<SecretKey, KmsError>;
}

/// Length-prefixed binding of a data key to its tenant, scheme and version (used as AAD).
pub(crate) fn context_bytes(label: &str, ctx: KeyContext<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    for field in [label.as_bytes(), ctx.tenant.as_str().as_bytes(), ctx.scheme.as_str().as_bytes()] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&ctx.version.get().to_be_bytes());
    out
}
