//! The one place where failures become HTTP statuses: an operation's [`OpError`] keeps its code
//! and caller-safe message and gets its status here; the API's own refusals (JSON, content type,
//! routes, body size) are made here directly.

use std::fmt;

use crate::auth::AuthError;
use crate::kms::KmsError;
use crate::ops::OpError;
use crate::store::StoreError;

/// A whole-request failure: status, stable snake_case code, and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    /// 422 `invalid_field`: a field the API parses itself (a scheme's definition) is not acceptable.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        ApiError::from(OpError::invalid_field(message))
    }
    pub fn internal() -> Self {
        ApiError::from(OpError::Internal)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

/// The HTTP status of an operation's failure.
fn status(e: &OpError) -> u16 {
    match e {
        OpError::InvalidField(_) => 422,
        OpError::Auth(AuthError::JwksUnavailable) => 503,
        OpError::Auth(AuthError::Config(_)) => 500,
        OpError::Auth(_) => 401,
        OpError::Forbidden(_) => 403,
        OpError::SchemeNotFound(_) => 404,
        OpError::SchemeExists(_) | OpError::VersionsExhausted | OpError::Conflict => 409,
        OpError::BatchTooLarge { .. } => 413,
        OpError::Store(StoreError::Unavailable(_)) => 503,
        OpError::Kms(KmsError::DevModeRequired) => 422,
        OpError::Kms(KmsError::Misconfigured(_) | KmsError::UnwrapFailed) => 500,
        OpError::Kms(KmsError::Unavailable(_) | KmsError::Throttled(_)) => 503,
        OpError::Kms(_) => 502,
        OpError::Store(_) | OpError::Config(_) | OpError::Internal => 500,
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        ApiError::new(status(&e), e.code(), e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::from(OpError::from(e))
    }
}
