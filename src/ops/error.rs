//! What an operation's failure is, in words both doors share: the HTTP API maps it to a status
//! (`api/error.rs`), the WIT export to its `error` record; both take [`OpError::code`] and the
//! caller-safe [`Display`](fmt::Display) text. Details for operators are logged once, where a
//! lower layer's error becomes an [`OpError`], and never reach the caller.

use std::fmt;

use serde::Serialize;

use crate::auth::AuthError;
use crate::ids::{KeyVersion, SchemeName};
use crate::kms::KmsError;
use crate::store::StoreError;
use crate::vars::ConfigError;

/// A whole-request failure of an operation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OpError {
    /// A field of the request is not acceptable; the text says which and why (never its value).
    InvalidField(String),
    /// The caller is not authenticated, or authentication could not be done.
    Auth(AuthError),
    /// The caller's roles do not allow the named action.
    Forbidden(String),
    /// The operator's `kek_allow` list does not let this tenant name this KEK.
    KekNotAllowed,
    /// No scheme of this name in the caller's tenant.
    SchemeNotFound(SchemeName),
    /// A scheme of this name exists already in the caller's tenant.
    SchemeExists(SchemeName),
    /// The scheme was erased (docs/erasure.md): it protects, masks and changes no more.
    SchemeErased(SchemeName),
    /// No erasure certificate of this id in the caller's tenant.
    ErasureNotFound,
    /// A scheme or tenant erasure whose `confirm` is missing or does not name what is erased
    /// (the text says what it must name).
    ConfirmationMismatch(&'static str),
    /// No API key of this id in the caller's tenant.
    ApiKeyNotFound,
    /// More values in one request than `max_batch`.
    BatchTooLarge { values: usize, max: usize },
    /// The scheme has used every key version.
    VersionsExhausted,
    /// The scheme has no data-key version of this number.
    KeyVersionNotFound(KeyVersion),
    /// The version is current or not below `min_decryption_version`, so it cannot be destroyed.
    KeyVersionActive(KeyVersion),
    /// The version is destroyed: it can be neither destroyed again nor re-activated.
    KeyVersionDestroyed(KeyVersion),
    /// Concurrent changes kept winning the race; the caller may retry.
    Conflict,
    /// No re-encryption job of this id in the caller's tenant.
    JobNotFound,
    /// The job was cancelled: it takes no more steps.
    JobCancelled,
    /// The job has finished: it cannot be cancelled.
    JobFinished,
    /// A job's `database` names no variable this deployment lets the tenant use (`job_databases`).
    UnknownVariable,
    /// A job's customer database did not answer.
    JobDatabaseUnavailable,
    /// The metadata store failed.
    Store(StoreError),
    /// A KEK provider failed.
    Kms(KmsError),
    /// The deployment's configuration is unusable.
    Config(ConfigError),
    /// The operation's audit entry could not be written (docs/audit.md, "Blocking"): the
    /// operation's answer is withheld.
    AuditUnavailable,
    /// The audit query is not acceptable (`since`, `until`, `limit`, `cursor`, `head`).
    InvalidQuery(String),
    /// A bug or broken stored data; the details are in the server log.
    Internal,
}

impl OpError {
    pub fn invalid_field(message: impl Into<String>) -> Self {
        OpError::InvalidField(message.into())
    }

    pub fn forbidden(what: impl Into<String>) -> Self {
        OpError::Forbidden(what.into())
    }

    /// The stable snake_case code (docs/api.md § Errors), the same over HTTP and WIT.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::InvalidField(_) => "invalid_field",
            OpError::Auth(e) => e.code(),
            OpError::Forbidden(_) => "forbidden",
            OpError::KekNotAllowed => "kek_not_allowed",
            OpError::SchemeNotFound(_) => "scheme_not_found",
            OpError::SchemeExists(_) => "scheme_exists",
            OpError::SchemeErased(_) => "scheme_erased",
            OpError::ErasureNotFound => "erasure_not_found",
            OpError::ConfirmationMismatch(_) => "confirmation_mismatch",
            OpError::ApiKeyNotFound => "api_key_not_found",
            OpError::BatchTooLarge { .. } => "batch_too_large",
            OpError::VersionsExhausted => "key_versions_exhausted",
            OpError::KeyVersionNotFound(_) => "key_version_not_found",
            OpError::KeyVersionActive(_) => "key_version_active",
            OpError::KeyVersionDestroyed(_) => "key_version_destroyed",
            OpError::Conflict => "conflict",
            OpError::JobNotFound => "job_not_found",
            OpError::JobCancelled => "job_cancelled",
            OpError::JobFinished => "job_finished",
            OpError::UnknownVariable => "unknown_variable",
            OpError::JobDatabaseUnavailable => "job_database_unavailable",
            OpError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            OpError::Store(StoreError::SchemaTooNew { .. }) => "store_schema_too_new",
            OpError::Store(_) | OpError::Internal => "internal",
            OpError::Kms(e) => e.code(),
            OpError::Config(_) => "misconfigured",
            OpError::AuditUnavailable => "audit_unavailable",
            OpError::InvalidQuery(_) => "invalid_query",
        }
    }
}

const INTERNAL_MESSAGE: &str = "an internal error occurred; the details are in the server log";

/// The message a caller sees: no input values, no provider or database detail.
impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::InvalidField(m) => f.write_str(m),
            OpError::Auth(AuthError::Missing) => f.write_str(
                "send a bearer token or API key in the Authorization header, or an API key in X-API-Key",
            ),
            OpError::Auth(AuthError::Invalid(why)) => f.write_str(why),
            OpError::Auth(AuthError::JwksUnavailable) => {
                f.write_str("the token signing keys could not be fetched")
            }
            OpError::Auth(AuthError::Config(_)) => f.write_str("token verification is misconfigured"),
            OpError::Forbidden(what) => write!(f, "your roles do not allow {what}"),
            OpError::KekNotAllowed => f.write_str(
                "this deployment does not allow your tenant to use that key-encryption key (kek_allow)",
            ),
            OpError::SchemeNotFound(name) => write!(f, "no scheme named \"{name}\" in this tenant"),
            OpError::SchemeExists(name) => {
                write!(f, "a scheme named \"{name}\" already exists in this tenant")
            }
            OpError::SchemeErased(name) => write!(
                f,
                "the scheme \"{name}\" was erased: every key version is destroyed; create a new scheme to reuse the name"
            ),
            OpError::ErasureNotFound => f.write_str("no erasure certificate of this id in this tenant"),
            OpError::ConfirmationMismatch(what) => {
                write!(f, "erasure is irreversible: send {{\"confirm\": \"<{what}>\"}} to confirm it")
            }
            OpError::ApiKeyNotFound => f.write_str("no API key of this id in this tenant"),
            OpError::BatchTooLarge { values, max } => {
                write!(f, "{values} values is more than max_batch ({max})")
            }
            OpError::VersionsExhausted => f.write_str("no key version is left"),
            OpError::KeyVersionNotFound(v) => write!(f, "the scheme has no key version {v}"),
            OpError::KeyVersionActive(v) => write!(
                f,
                "key version {v} is active: only a version below min_decryption_version can be destroyed"
            ),
            OpError::KeyVersionDestroyed(v) => {
                write!(f, "key version {v} is destroyed; that cannot be undone")
            }
            OpError::Conflict => f.write_str("the scheme kept changing under concurrent rotations; retry"),
            OpError::JobNotFound => f.write_str("no re-encryption job of this id in this tenant"),
            OpError::JobCancelled => f.write_str("the job was cancelled; it takes no more steps"),
            OpError::JobFinished => f.write_str("the job has finished; it cannot be cancelled"),
            OpError::UnknownVariable => f.write_str(
                "database names no variable that this deployment lets your tenant use for jobs (job_databases)",
            ),
            OpError::JobDatabaseUnavailable => {
                f.write_str("the job's database is unavailable; retry later")
            }
            OpError::Store(StoreError::Unavailable(_)) => {
                f.write_str("the metadata database is unavailable; retry later")
            }
            OpError::Store(StoreError::SchemaTooNew { found, known }) => write!(
                f,
                "the metadata database was migrated by a newer Veil (schema version {found}; this \
                 build knows up to {known}); this deployment must be upgraded"
            ),
            OpError::Store(_) | OpError::Internal => f.write_str(INTERNAL_MESSAGE),
            OpError::Kms(e) => e.fmt(f),
            OpError::Config(e) => e.fmt(f),
            OpError::AuditUnavailable => f.write_str(
                "the audit entry of this operation could not be written, so its answer is withheld; retry later",
            ),
            OpError::InvalidQuery(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for OpError {}

impl From<AuthError> for OpError {
    fn from(e: AuthError) -> Self {
        if let AuthError::Config(detail) = &e {
            eprintln!("veil: authentication misconfigured: {detail}");
        }
        OpError::Auth(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Unavailable(detail) => eprintln!("veil: metadata store unavailable: {detail}"),
            StoreError::SchemaTooNew { found, known } => eprintln!(
                "veil: metadata store refused: its schema version {found} is newer than this build \
                 knows ({known}); upgrade Veil (the database is left untouched)"
            ),
            other => eprintln!("veil: metadata store error: {other}"),
        }
        OpError::Store(e)
    }
}

impl From<KmsError> for OpError {
    fn from(e: KmsError) -> Self {
        // Everything but a refusal the caller can fix (dev mode) is an operator's concern.
        if e != KmsError::DevModeRequired {
            eprintln!("veil: KMS error: {e:?}");
        }
        OpError::Kms(e)
    }
}

impl From<ConfigError> for OpError {
    fn from(e: ConfigError) -> Self {
        eprintln!("veil: configuration error: {e}");
        OpError::Config(e)
    }
}

/// A per-item failure inside batch results: the other items of the batch go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    pub code: &'static str,
    pub message: &'static str,
}

impl ItemError {
    pub const VALUE_TOO_LARGE: ItemError =
        ItemError { code: "value_too_large", message: "the value is larger than max_value_bytes" };
    pub const INVALID_TOKEN: ItemError = ItemError { code: "invalid_token", message: "not a Veil token" };
    /// A Transit ciphertext that is not `vault:v<N>:<base64>` (docs/transit.md).
    pub const INVALID_CIPHERTEXT: ItemError = ItemError {
        code: "invalid_ciphertext",
        message: "invalid ciphertext: not vault:v<N>:<base64 of at least 28 bytes>",
    };
    /// A Transit HMAC that is not `vault:v<N>:<base64>`.
    pub const INVALID_HMAC: ItemError =
        ItemError { code: "invalid_hmac", message: "invalid HMAC to verify: not vault:v<N>:<base64>" };
    /// A Transit batch item without the field its operation needs.
    pub const MISSING_FIELD: ItemError =
        ItemError { code: "missing_field", message: "the batch item lacks the field this operation needs" };
    /// A Transit batch item asking for a key version other than the one Veil can use.
    pub const KEY_VERSION_UNSUPPORTED: ItemError = ItemError {
        code: "key_version_unsupported",
        message: "Veil encrypts and rewraps with the key's latest version only: key_version must be 0 or the latest",
    };
    /// A Transit call without a context on a key that requires one (`derived`), in Transit's words.
    pub const CONTEXT_REQUIRED: ItemError = ItemError {
        code: "context_required",
        message:
            "missing 'context' for key derivation; the key was created using a derived key, which means \
                  additional, per-request information must be included in order to perform operations with \
                  the key",
    };
    pub const DECRYPTION_FAILED: ItemError = ItemError {
        code: "decryption_failed",
        message: "the token does not decrypt for this tenant, subject and context",
    };
    pub const INVALID_ENCODING: ItemError =
        ItemError { code: "invalid_encoding", message: "the value is not valid base64" };
    pub const SUBJECT_ERASED: ItemError = ItemError {
        code: "subject_erased",
        message: "the token's data subject was erased: its key no longer exists",
    };
    pub const INVALID_SUBJECT: ItemError =
        ItemError { code: "invalid_subject", message: "a subject id is 1 to 256 characters" };
    pub const KEY_VERSION_RETIRED: ItemError = ItemError {
        code: "key_version_retired",
        message: "the token's key version is below the scheme's min_decryption_version",
    };
    pub const KEY_VERSION_DESTROYED: ItemError = ItemError {
        code: "key_version_destroyed",
        message: "the token's key version is destroyed; its data cannot be recovered",
    };
    pub const SCHEME_MISMATCH: ItemError = ItemError {
        code: "scheme_mismatch",
        message: "the token belongs to another scheme than the request's \"scheme\"",
    };
    pub const NOT_UTF8: ItemError = ItemError {
        code: "not_utf8",
        message: "the plaintext is not UTF-8 text; ask for encoding \"base64\"",
    };
}
