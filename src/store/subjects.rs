//! Data subjects and erasure certificates (migration 3): a subject's random secret under its
//! keyed digest, created race-free on first use and deleted by an erasure in the same
//! transaction that records the erasure's certificate.

use super::sql::{Row, SqlError, SqlValue};
use super::{corrupt, sql_version, Store, StoreError, SCHEMA_VERSION};
use crate::crypto::secret::SecretKey;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use crate::subjects::SubjectDigest;

/// A subject's secret and when it was created (Unix seconds).
pub struct SubjectSecret {
    pub secret: SecretKey,
    pub created_at: i64,
}

/// What an erasure transaction hands to the certificate maker: whether a secret existed, and
/// when it was created.
pub type MakeCertificate<'f> = &'f dyn Fn(Option<i64>) -> (String, String);

/// What a scheme or tenant erasure destroyed, for its certificate: every key version of each
/// scheme in scope (all of them destroyed now, including any destroyed before), and for a tenant
/// how many subject secrets were deleted.
pub struct ScopeErased {
    pub versions: Vec<(SchemeName, Vec<KeyVersion>)>,
    pub subject_secrets_deleted: Option<u64>,
}

/// What a scheme or tenant erasure hands to the certificate maker; it returns (id, JSON).
pub type MakeScopeCertificate<'f> = &'f dyn Fn(&ScopeErased) -> (String, String);

/// How a scheme or tenant erasure ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeErasure {
    /// No scheme of that name (scheme erasure only).
    SchemeNotFound,
    /// The certificate (a new one, or the one already issued when nothing was left to erase),
    /// and the versions this call destroyed (so that their cached copies can be dropped).
    Erased { certificate: String, destroyed: Vec<(SchemeName, KeyVersion)> },
}

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

    /// Erases a scheme in one transaction: destroys every key version that is not destroyed yet
    /// (rows kept, state `destroyed`), marks the scheme erased and records the certificate that
    /// `make` writes. An erased scheme gets the certificate already issued back (idempotent).
    pub fn erase_scheme(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        by: &str,
        now: i64,
        make: MakeScopeCertificate<'_>,
    ) -> Result<ScopeErasure, StoreError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let n = SqlValue::Text(name.as_str().into());
        let lock = self.conn.dialect().for_update();
        self.with_schema(|| {
            self.transaction(|| {
                let rows = self.conn.query(
                    &format!("SELECT erasure_id FROM schemes WHERE tenant = $1 AND name = $2{lock}"),
                    &[t.clone(), n.clone()],
                )?;
                let Some(row) = rows.first() else { return Ok(ScopeErasure::SchemeNotFound) };
                if let Some(SqlValue::Text(id)) = row.first() {
                    let certificate = self.certificate_in_tx(&t, id)?;
                    return Ok(ScopeErasure::Erased { certificate, destroyed: Vec::new() });
                }
                let destroyed = self.destroy_all_key_versions_in_tx(tenant, Some(name), by, now)?;
                let versions = self.all_versions_in_tx(&t, Some(&n))?;
                let (id, cert) = make(&ScopeErased { versions, subject_secrets_deleted: None });
                self.conn.execute(
                    "UPDATE schemes SET erased_at = $1, erasure_id = $2, updated_at = $1 \
                     WHERE tenant = $3 AND name = $4",
                    &[SqlValue::Int(now), SqlValue::Text(id.clone()), t.clone(), n.clone()],
                )?;
                self.insert_erasure(&id, &t, "scheme", None, Some(name.as_str()), &cert, now)?;
                Ok(ScopeErasure::Erased { certificate: cert, destroyed })
            })
        })
    }

    /// Erases a tenant in one transaction: destroys every key version of every scheme, deletes
    /// every subject secret, marks every scheme erased and records the certificate. With nothing
    /// left to erase since the tenant's last tenant erasure, that certificate is returned again.
    pub fn erase_tenant(
        &self,
        tenant: &TenantId,
        by: &str,
        now: i64,
        make: MakeScopeCertificate<'_>,
    ) -> Result<ScopeErasure, StoreError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let lock = self.conn.dialect().for_update();
        self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    &[t.clone(), SqlValue::Int(now)],
                )?;
                // The tenant row first (scheme creation waits on it), then the live schemes (a
                // rotation waits on those); no writer takes them in the other order.
                let rows =
                    self.conn.query(&format!("SELECT erasure_id FROM tenants WHERE id = $1{lock}"), std::slice::from_ref(&t))?;
                let previous = match rows.first().and_then(|r| r.first()) {
                    Some(SqlValue::Text(id)) => Some(id.clone()),
                    _ => None,
                };
                let live = self.conn.query(
                    &format!("SELECT name FROM schemes WHERE tenant = $1 AND erased_at IS NULL ORDER BY name{lock}"),
                    std::slice::from_ref(&t),
                )?;
                let destroyed = self.destroy_all_key_versions_in_tx(tenant, None, by, now)?;
                let deleted = self.conn.execute("DELETE FROM subjects WHERE tenant = $1", std::slice::from_ref(&t))?;
                if let (Some(id), true) = (&previous, live.is_empty() && destroyed.is_empty() && deleted == 0) {
                    let certificate = self.certificate_in_tx(&t, id)?;
                    return Ok(ScopeErasure::Erased { certificate, destroyed });
                }
                let versions = self.all_versions_in_tx(&t, None)?;
                let (id, cert) = make(&ScopeErased { versions, subject_secrets_deleted: Some(deleted) });
                self.conn.execute(
                    "UPDATE schemes SET erased_at = $1, erasure_id = $2, updated_at = $1 \
                     WHERE tenant = $3 AND erased_at IS NULL",
                    &[SqlValue::Int(now), SqlValue::Text(id.clone()), t.clone()],
                )?;
                self.conn.execute(
                    "UPDATE tenants SET erasure_id = $1 WHERE id = $2",
                    &[SqlValue::Text(id.clone()), t.clone()],
                )?;
                self.insert_erasure(&id, &t, "tenant", None, None, &cert, now)?;
                Ok(ScopeErasure::Erased { certificate: cert, destroyed })
            })
        })
    }

    /// Every key version of one scheme (or of every scheme of the tenant), grouped by scheme.
    fn all_versions_in_tx(
        &self,
        t: &SqlValue,
        scheme: Option<&SqlValue>,
    ) -> Result<Vec<(SchemeName, Vec<KeyVersion>)>, SqlError> {
        let mut params = vec![t.clone()];
        let mut sql = "SELECT s.name, d.version FROM schemes s LEFT JOIN data_keys d \
                       ON d.tenant = s.tenant AND d.scheme = s.name WHERE s.tenant = $1"
            .to_string();
        if let Some(n) = scheme {
            sql.push_str(" AND s.name = $2");
            params.push(n.clone());
        }
        sql.push_str(" ORDER BY s.name, d.version");
        let mut out: Vec<(SchemeName, Vec<KeyVersion>)> = Vec::new();
        for row in self.conn.query(&sql, &params)? {
            let r = Row(&row);
            let name =
                SchemeName::parse(r.text(0)?).map_err(|_| SqlError::Other("stored schemes.name".into()))?;
            if out.last().is_none_or(|(last, _)| *last != name) {
                out.push((name, Vec::new()));
            }
            if let (Some(SqlValue::Int(v)), Some((_, list))) = (row.get(1), out.last_mut()) {
                list.push(sql_version(*v)?);
            }
        }
        Ok(out)
    }

    fn certificate_in_tx(&self, t: &SqlValue, id: &str) -> Result<String, SqlError> {
        let rows = self.conn.query(
            "SELECT certificate FROM erasures WHERE tenant = $1 AND certificate_id = $2",
            &[t.clone(), SqlValue::Text(id.into())],
        )?;
        match rows.first() {
            Some(r) => Ok(Row(r).text(0)?.to_owned()),
            None => Err(SqlError::Other("an erased scheme's certificate is missing".into())),
        }
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
