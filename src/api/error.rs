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
        OpError::JobNotFound | OpError::UnknownVariable => 404,
        OpError::JobCancelled | OpError::JobFinished => 409,
        OpError::JobDatabaseUnavailable => 503,
        OpError::Auth(AuthError::JwksUnavailable) => 503,
        OpError::Auth(AuthError::Config(_)) => 500,
        OpError::Auth(_) => 401,
        OpError::Forbidden(_) | OpError::KekNotAllowed => 403,
        OpError::SchemeNotFound(_)
        | OpError::KeyVersionNotFound(_)
        | OpError::ErasureNotFound
        | OpError::ApiKeyNotFound => 404,
        OpError::SchemeExists(_)
        | OpError::SchemeErased(_)
        | OpError::ConfirmationMismatch(_)
        | OpError::VersionsExhausted
        | OpError::Conflict
        | OpError::KeyVersionActive(_)
        | OpError::KeyVersionDestroyed(_) => 409,
        OpError::BatchTooLarge { .. } => 413,
        OpError::AuditUnavailable => 503,
        OpError::InvalidQuery(_) => 400,
        OpError::Store(StoreError::Unavailable(_) | StoreError::SchemaTooNew { .. }) => 503,
        OpError::Kms(KmsError::DevModeRequired) => 422,
        OpError::Kms(KmsError::Misconfigured(_) | KmsError::UnwrapFailed) => 500,
        OpError::Kms(KmsError::Unavailable(_) | KmsError::Throttled(_)) => 503,
        OpError::Kms(_) => 502,
        OpError::Store(_) | OpError::Config(_) | OpError::Internal => 500,
    }
}

/// The status Transit gives the same failure (docs/transit.md § Errors): Transit answers a
/// caller's mistake with 400 whatever it was, a missing or refused credential with 403, and keeps
/// 404, 405 and the server-side statuses.
pub fn transit_status(e: &ApiError) -> u16 {
    match e.status {
        401 | 403 => 403,
        404 => 404,
        405 => 405,
        400..=499 => 400,
        s => s,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyVersion, SchemeName};
    use crate::vars::ConfigError;

    /// Every operation failure keeps the status, code and message it had before `OpError`
    /// existed; the WIT export sends the same code and message (`code()`, `Display`).
    #[test]
    fn op_errors_map_to_exact_statuses_codes_and_messages() {
        let pii = || SchemeName::parse("pii").expect("name");
        let v = |n| KeyVersion::new(n).expect("version");
        let internal = "an internal error occurred; the details are in the server log";
        let detail = || "secret-detail".to_string();
        let cases: Vec<(OpError, u16, &str, &str)> = vec![
            (OpError::invalid_field("scheme: too long"), 422, "invalid_field", "scheme: too long"),
            (
                OpError::Auth(AuthError::Missing),
                401,
                "unauthenticated",
                "send a bearer token or API key in the Authorization header, or an API key in X-API-Key",
            ),
            (OpError::Auth(AuthError::Invalid("token expired")), 401, "invalid_credentials", "token expired"),
            (
                OpError::Auth(AuthError::JwksUnavailable),
                503,
                "auth_unavailable",
                "the token signing keys could not be fetched",
            ),
            (
                OpError::Auth(AuthError::Config(detail())),
                500,
                "auth_misconfigured",
                "token verification is misconfigured",
            ),
            (
                OpError::forbidden("masking with this scheme"),
                403,
                "forbidden",
                "your roles do not allow masking with this scheme",
            ),
            (
                OpError::KekNotAllowed,
                403,
                "kek_not_allowed",
                "this deployment does not allow your tenant to use that key-encryption key (kek_allow)",
            ),
            (
                OpError::SchemeNotFound(pii()),
                404,
                "scheme_not_found",
                "no scheme named \"pii\" in this tenant",
            ),
            (
                OpError::SchemeExists(pii()),
                409,
                "scheme_exists",
                "a scheme named \"pii\" already exists in this tenant",
            ),
            (
                OpError::SchemeErased(pii()),
                409,
                "scheme_erased",
                "the scheme \"pii\" was erased: every key version is destroyed; create a new scheme to reuse the name",
            ),
            (
                OpError::ConfirmationMismatch("the scheme's name"),
                409,
                "confirmation_mismatch",
                "erasure is irreversible: send {\"confirm\": \"<the scheme's name>\"} to confirm it",
            ),
            (
                OpError::ErasureNotFound,
                404,
                "erasure_not_found",
                "no erasure certificate of this id in this tenant",
            ),
            (
                OpError::BatchTooLarge { values: 4, max: 3 },
                413,
                "batch_too_large",
                "4 values is more than max_batch (3)",
            ),
            (OpError::VersionsExhausted, 409, "key_versions_exhausted", "no key version is left"),
            (OpError::KeyVersionNotFound(v(7)), 404, "key_version_not_found", "the scheme has no key version 7"),
            (
                OpError::KeyVersionActive(v(2)),
                409,
                "key_version_active",
                "key version 2 is active: only a version below min_decryption_version can be destroyed",
            ),
            (
                OpError::KeyVersionDestroyed(v(1)),
                409,
                "key_version_destroyed",
                "key version 1 is destroyed; that cannot be undone",
            ),
            (
                OpError::Conflict,
                409,
                "conflict",
                "the scheme kept changing under concurrent rotations; retry",
            ),
            (
                OpError::Store(StoreError::Unavailable(detail())),
                503,
                "store_unavailable",
                "the metadata database is unavailable; retry later",
            ),
            (
                OpError::Store(StoreError::SchemaTooNew { found: 3, known: 2 }),
                503,
                "store_schema_too_new",
                "the metadata database was migrated by a newer Veil (schema version 3; this build knows up to 2); this deployment must be upgraded",
            ),
            (OpError::Store(StoreError::Corrupt(detail())), 500, "internal", internal),
            (OpError::Store(StoreError::Exists), 500, "internal", internal),
            (
                OpError::Kms(KmsError::DevModeRequired),
                422,
                "dev_mode_required",
                "the local KEK is only available in dev mode",
            ),
            (
                OpError::Kms(KmsError::Misconfigured("set aws_region".into())),
                500,
                "misconfigured",
                "KEK misconfigured: set aws_region",
            ),
            (
                OpError::Kms(KmsError::UnwrapFailed),
                500,
                "kms_unwrap_failed",
                "a stored data key does not unwrap under its KEK",
            ),
            (
                OpError::Kms(KmsError::Unavailable(detail())),
                503,
                "kms_unavailable",
                "the key vault did not answer",
            ),
            (
                OpError::Kms(KmsError::Throttled(detail())),
                503,
                "kms_throttled",
                "the key vault is rate-limiting requests; retry later",
            ),
            (
                OpError::Kms(KmsError::Denied(detail())),
                502,
                "kms_denied",
                "the key vault refused the request, or does not have that key",
            ),
            (
                OpError::Kms(KmsError::KeyNotFound(detail())),
                502,
                "kms_denied",
                "the key vault refused the request, or does not have that key",
            ),
            (
                OpError::Kms(KmsError::BadResponse(detail())),
                502,
                "kms_bad_response",
                "the key vault sent an invalid response",
            ),
            (
                OpError::Config(ConfigError(
                    "variable max_batch must be a whole number from 1 to 100000".into(),
                )),
                500,
                "misconfigured",
                "variable max_batch must be a whole number from 1 to 100000",
            ),
            (OpError::JobNotFound, 404, "job_not_found", "no re-encryption job of this id in this tenant"),
            (OpError::JobCancelled, 409, "job_cancelled", "the job was cancelled; it takes no more steps"),
            (OpError::JobFinished, 409, "job_finished", "the job has finished; it cannot be cancelled"),
            (
                OpError::UnknownVariable,
                404,
                "unknown_variable",
                "database names no variable that this deployment lets your tenant use for jobs (job_databases)",
            ),
            (
                OpError::JobDatabaseUnavailable,
                503,
                "job_database_unavailable",
                "the job's database is unavailable; retry later",
            ),
            (OpError::Internal, 500, "internal", internal),
        ];
        for (e, status, code, message) in cases {
            assert_eq!((e.code(), e.to_string().as_str()), (code, message), "{e:?}");
            let a = ApiError::from(e);
            assert_eq!((a.status, a.code, a.message.as_str()), (status, code, message));
        }
    }
}
