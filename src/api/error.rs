//! The one place where failures become HTTP statuses and stable codes.

use std::fmt;

use serde::Serialize;

use crate::auth::AuthError;
use crate::config::ConfigError;
use crate::kms::KmsError;
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
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(422, "invalid_field", message)
    }
    pub fn forbidden(what: &str) -> Self {
        Self::new(403, "forbidden", format!("your roles do not allow {what}"))
    }
    pub fn internal() -> Self {
        Self::new(500, "internal", "an internal error occurred; the details are in the server log")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => {
                ApiError::new(401, "unauthenticated", "send a bearer token in the Authorization header")
            }
            AuthError::Invalid(why) => ApiError::new(401, "invalid_credentials", why),
            AuthError::JwksUnavailable => {
                ApiError::new(503, "auth_unavailable", "the token signing keys could not be fetched")
            }
            AuthError::Config(detail) => {
                eprintln!("veil: authentication misconfigured: {detail}");
                ApiError::new(500, "auth_misconfigured", "token verification is misconfigured")
            }
            #[allow(unreachable_patterns)]
            _ => ApiError::new(401, "invalid_credentials", "the credentials are not valid"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                eprintln!("veil: metadata store unavailable: {detail}");
                ApiError::new(503, "store_unavailable", "the metadata database is unavailable; retry later")
            }
            StoreError::SchemaTooNew { found, known } => {
                eprintln!(
                    "veil: metadata store refused: its schema version {found} is newer than this build \
                     knows ({known}); upgrade Veil (the database is left untouched)"
                );
                ApiError::new(
                    503,
                    "store_schema_too_new",
                    format!(
                        "the metadata database was migrated by a newer Veil (schema version {found}; this \
                         build knows up to {known}); this deployment must be upgraded"
                    ),
                )
            }
            other => {
                eprintln!("veil: metadata store error: {other}");
                ApiError::internal()
            }
        }
    }
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        let status = match &e {
            KmsError::DevModeRequired => 422,
            KmsError::Misconfigured(_) | KmsError::UnwrapFailed => 500,
            KmsError::Unavailable(_) | KmsError::Throttled(_) => 503,
            _ => 502,
        };
        if status >= 500 {
            eprintln!("veil: KMS error: {e:?}");
        }
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        eprintln!("veil: configuration error: {e}");
        ApiError::new(500, "misconfigured", e.0)
    }
}

/// A per-item failure inside batch results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    pub code: &'static str,
    pub message: &'static str,
}

impl ItemError {
    pub const VALUE_TOO_LARGE: ItemError =
        ItemError { code: "value_too_large", message: "the value is larger than max_value_bytes" };
    pub const INVALID_TOKEN: ItemError = ItemError { code: "invalid_token", message: "not a Veil token" };
    pub const DECRYPTION_FAILED: ItemError = ItemError {
        code: "decryption_failed",
        message: "the token does not decrypt for this tenant, subject and context",
    };
    pub const INVALID_ENCODING: ItemError =
        ItemError { code: "invalid_encoding", message: "the value is not valid base64" };
    pub const NOT_UTF8: ItemError = ItemError {
        code: "not_utf8",
        message: "the plaintext is not UTF-8 text; ask for encoding \"base64\"",
    };
}
