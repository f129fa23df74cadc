//! Data subjects and erasure certificates (migration 3): a subject's random secret under its
//! keyed digest, created race-free on first use and deleted by an erasure in the same
//! transaction that records the erasure's certificate.

use super::sql::{Row, SqlError, SqlValue};
use super::{corrupt, Store, StoreError, SCHEMA_VERSION};
use crate::crypto::secret::SecretKey;
use crate::ids::TenantId;
use crate::subjects::SubjectDigest;

/// A subject's secret and when it was created (Unix seconds).
pub struct SubjectSecret {
    pub secret: SecretKey,
    pub created_at: i64,
}

/// What an erasure transaction hands to the certificate maker: whether a secret existed, and
/// when it was created.
pub type MakeCertificate<'f> = &'f dyn Fn(Option<i64>) -> (String, String);

impl Store<'_> {
    /// The subject's secret, if it has one.
    pub fn subject_secret(
        &self,
        tenant: &TenantId,
        digest: &SubjectDigest,
    ) -> Result<Option<SubjectSecret>, StoreError> {
        let rows = self.read(
            &format!(
                "SELECT secret, created_at, {SCHEMA_VERSION} FROM subjects WHERE tenant = $1 AND digest = $2"
            ),
            &[SqlValue::Text(tenant.as_str().into()), SqlValue::Blob(digest.0.to_vec())],
        )?;
        rows.first().map(|r| secret_from_row(&Row(r))).transpose()
    }

    /// The subject's secret, created from `fresh` if it has none: concurrent first uses all end
    /// with the one secret that was inserted first (`ON CONFLICT DO NOTHING`, then read back).
    pub fn subject_secret_or_create(
        &self,
        tenant: &TenantId,
        digest: &SubjectDigest,
        fresh: SecretKey,
        now: i64,
    ) -> Result<SubjectSecret, StoreError> {
        if let Some(s) = self.subject_secret(tenant, digest)? {
            return Ok(s);
        }
        let t = SqlValue::Text(tenant.as_str().into());
        let d = SqlValue::Blob(digest.0.to_vec());
        let secret = SqlValue::Blob(fresh.expose_secret().to_vec());
        drop(fresh);
        self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "INSERT INTO subjects (tenant, digest, secret, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant, digest) DO NOTHING",
                    &[t.clone(), d.clone(), secret.clone(), SqlValue::Int(now)],
                )?;
                Ok(())
            })
        })?;
        // A concurrent erase may have deleted it already; then the caller's values are as good
        // as erased, which is what the erasure asked for: report it rather than re-create.
        self.subject_secret(tenant, digest)?.ok_or(StoreError::Conflict)
    }

    /// Whether the tenant holds any erasure certificate for this digest.
    pub fn subject_was_erased(&self, tenant: &TenantId, digest: &SubjectDigest) -> Result<bool, StoreError> {
        let rows = self.read(
            &format!(
                "SELECT certificate_id, {SCHEMA_VERSION} FROM erasures \
                 WHERE tenant = $1 AND subject_digest = $2 LIMIT 1"
            ),
            &[SqlValue::Text(tenant.as_str().into()), SqlValue::Blob(digest.0.to_vec())],
        )?;
        Ok(!rows.is_empty())
    }

    /// Erases a subject in one transaction: deletes its secret and records the certificate that
    /// `make` writes (`Some(created_at)` if a secret existed). With no secret to delete, the
    /// latest certificate already held for the digest is returned instead (idempotent), or one
    /// saying no secret existed is made. Returns the certificate's JSON.
    pub fn erase_subject(
        &self,
        tenant: &TenantId,
        digest: &SubjectDigest,
        now: i64,
        make: MakeCertificate<'_>,
    ) -> Result<String, StoreError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let d = SqlValue::Blob(digest.0.to_vec());
        self.with_schema(|| {
            self.transaction(|| {
                let deleted = self.conn.query(
                    "DELETE FROM subjects WHERE tenant = $1 AND digest = $2 RETURNING created_at",
                    &[t.clone(), d.clone()],
                )?;
                let created = match deleted.first() {
                    Some(r) => Some(Row(r).int(0)?),
                    None => {
                        let held = self.conn.query(
                            "SELECT certificate FROM erasures WHERE tenant = $1 AND subject_digest = $2 \
                             ORDER BY erased_at DESC, certificate_id DESC LIMIT 1",
                            &[t.clone(), d.clone()],
                        )?;
                        if let Some(r) = held.first() {
                            return Ok(Row(r).text(0)?.to_owned());
                        }
                        None
                    }
                };
                let (id, cert) = make(created);
                self.insert_erasure(&id, &t, "subject", Some(&d), None, &cert, now)?;
                Ok(cert)
            })
        })
    }

    #[expect(clippy::too_many_arguments, reason = "one argument per column of the row")]
    pub(super) fn insert_erasure(
        &self,
        id: &str,
        tenant: &SqlValue,
        scope: &str,
        digest: Option<&SqlValue>,
        scheme: Option<&str>,
        cert: &str,
        now: i64,
    ) -> Result<(), SqlError> {
        self.conn.execute(
            "INSERT INTO erasures (certificate_id, tenant, scope, subject_digest, scheme, certificate, erased_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                SqlValue::Text(id.into()),
                tenant.clone(),
                SqlValue::Text(scope.into()),
                digest.cloned().unwrap_or(SqlValue::Null),
                scheme.map_or(SqlValue::Null, |s| SqlValue::Text(s.into())),
                SqlValue::Text(cert.into()),
                SqlValue::Int(now),
            ],
        )?;
        Ok(())
    }

    /// A stored certificate of the tenant, by id.
    pub fn erasure(&self, tenant: &TenantId, certificate_id: &str) -> Result<Option<String>, StoreError> {
        let rows = self.read(
            &format!(
                "SELECT certificate, {SCHEMA_VERSION} FROM erasures WHERE tenant = $1 AND certificate_id = $2"
            ),
            &[SqlValue::Text(tenant.as_str().into()), SqlValue::Text(certificate_id.into())],
        )?;
        rows.first().map(|r| Ok(Row(r).text(0)?.to_owned())).transpose()
    }
}

fn secret_from_row(r: &Row<'_>) -> Result<SubjectSecret, StoreError> {
    let secret = SecretKey::try_from_slice(r.blob(0)?).ok_or_else(|| corrupt("subjects.secret"))?;
    Ok(SubjectSecret { secret, created_at: r.int(1)? })
}
