//! The metadata store: schemes and their wrapped data keys, over the [`sql::SqlConn`] seam.
//!
//! One logical schema for every database (DESIGN §6), versioned migrations in `migrations/`,
//! applied on first use: a statement that finds its table missing runs the migrations (inside a
//! write transaction, so concurrent first requests are safe) and is tried once more. The hot path
//! therefore never pays for a separate schema check.
//!
//! A database migrated by a newer build is refused ([`StoreError::SchemaTooNew`]) rather than read
//! or written with assumptions that may no longer hold: every read also returns
//! `MAX(veil_migrations.version)` as one more column of the query it runs anyway (a scalar
//! subquery on a one-row table: no extra round trip), a read that finds no row asks for it
//! separately, and every write transaction checks it first (docs/storage.md, "Migrations").

pub mod migrate;
pub mod sql;
mod subjects;

pub use subjects::{MakeCertificate, SubjectSecret};

use std::fmt;

use crate::crypto::aead::Algorithm;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use crate::kms::WrappedDek;
use crate::scheme::{mask::MaskRule, KekRef, Policy, Scheme};
use sql::{Row, SqlConn, SqlError, SqlValue};

/// Store failures the API maps to answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The row to create exists already.
    Exists,
    /// A concurrent write won the race (e.g. another rotation); the caller may retry.
    Conflict,
    /// The database did not answer.
    Unavailable(String),
    /// Stored data that does not decode, or a bug in our SQL; details for operators only.
    Corrupt(String),
    /// The database was migrated by a newer build (schema version `found`; this one knows up to
    /// `known`): it is left untouched.
    SchemaTooNew { found: i64, known: i64 },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Exists => f.write_str("already exists"),
            StoreError::Conflict => f.write_str("a concurrent change won"),
            StoreError::Unavailable(m) => write!(f, "metadata database unavailable: {m}"),
            StoreError::Corrupt(m) => write!(f, "metadata database error: {m}"),
            StoreError::SchemaTooNew { found, known } => write!(
                f,
                "the metadata database has schema version {found}, newer than this build knows ({known})"
            ),
        }
    }
}

impl From<SqlError> for StoreError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Unavailable(m) => StoreError::Unavailable(m),
            SqlError::Constraint(_) => StoreError::Conflict,
            SqlError::SchemaTooNew(found) => StoreError::SchemaTooNew { found, known: migrate::latest() },
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

/// The state of a data-key version (DESIGN §6); transitions come with key lifecycle work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Retired,
    Destroyed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Destroyed => "destroyed",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(KeyState::Active),
            "retired" => Some(KeyState::Retired),
            "destroyed" => Some(KeyState::Destroyed),
            _ => None,
        }
    }
}

/// One stored data-key version.
#[derive(Debug, Clone)]
pub struct DataKey {
    pub version: KeyVersion,
    pub wrapped: WrappedDek,
    pub state: KeyState,
}

/// The metadata store over one connection.
pub struct Store<'a> {
    conn: &'a dyn SqlConn,
}

const SCHEME_COLUMNS: &str = "tenant, name, algorithm, kek, policy, mask_rule, current_version, created_at";
/// The database's schema version, appended as the last column of every read.
const SCHEMA_VERSION: &str = "(SELECT MAX(version) FROM veil_migrations)";
/// [`SCHEME_COLUMNS`] of `schemes s`, then the columns of its current `data_keys d` row.
const SCHEME_AND_KEY_COLUMNS: &str = "s.tenant, s.name, s.algorithm, s.kek, s.policy, s.mask_rule, \
     s.current_version, s.created_at, d.version, d.wrapped_dek, d.kek_id, d.kek_version, d.state";

impl<'a> Store<'a> {
    pub fn new(conn: &'a dyn SqlConn) -> Self {
        Store { conn }
    }

    /// Runs `f`; when it finds the schema missing, migrates and runs it once more.
    fn with_schema<T>(&self, f: impl Fn() -> Result<T, SqlError>) -> Result<T, StoreError> {
        match f() {
            Err(SqlError::SchemaMissing(_)) => {
                migrate::migrate(self.conn)?;
                Ok(f()?)
            }
            other => Ok(other?),
        }
    }

    /// Runs a read whose last column is [`SCHEMA_VERSION`], and refuses its rows if the
    /// database is newer than this build. No rows: the version is read on its own.
    fn read(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let rows = self.with_schema(|| self.conn.query(sql, params))?;
        match rows.first() {
            Some(row) => check_version(row.last())?,
            None => self.check_schema_version()?,
        }
        Ok(rows)
    }

    fn check_schema_version(&self) -> Result<(), SqlError> {
        let rows = self.conn.query(&format!("SELECT {SCHEMA_VERSION}"), &[])?;
        check_version(rows.first().and_then(|r| r.first()))
    }

    fn begin(&self) -> Result<(), SqlError> {
        self.conn.execute(self.conn.dialect().begin(), &[]).map(|_| ())
    }

    /// Runs `f` inside a transaction: committed when it succeeds, rolled back otherwise.
    /// A database newer than this build is never written (checked first, inside the transaction).
    fn transaction<T>(&self, f: impl Fn() -> Result<T, SqlError>) -> Result<T, SqlError> {
        self.begin()?;
        match self.check_schema_version().and_then(|()| f()) {
            Ok(v) => match self.conn.execute("COMMIT", &[]) {
                Ok(_) => Ok(v),
                Err(e) => {
                    let _ = self.conn.execute("ROLLBACK", &[]);
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.conn.execute("ROLLBACK", &[]);
                Err(e)
            }
        }
    }

    /// Creates a scheme with its first data-key version, atomically.
    /// `Exists` when the tenant already has a scheme of that name.
    pub fn create_scheme(&self, scheme: &Scheme, first_key: &WrappedDek, now: i64) -> Result<(), StoreError> {
        let kek = json(&scheme.kek)?;
        let policy = json(&scheme.policy)?;
        let mask = json(&scheme.mask)?;
        let tenant = SqlValue::Text(scheme.tenant.as_str().into());
        let name = SqlValue::Text(scheme.name.as_str().into());
        let result = self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    &[tenant.clone(), SqlValue::Int(now)],
                )?;
                self.conn.execute(
                    "INSERT INTO schemes (tenant, name, algorithm, kek, policy, mask_rule, \
                     current_version, min_decryption_version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)",
                    &[
                        tenant.clone(),
                        name.clone(),
                        SqlValue::Text(scheme.algorithm.as_str().into()),
                        SqlValue::Text(kek.clone()),
                        SqlValue::Text(policy.clone()),
                        SqlValue::Text(mask.clone()),
                        SqlValue::Int(scheme.current_version.get().into()),
                        SqlValue::Int(now),
                    ],
                )?;
                self.insert_key(&tenant, &name, scheme.current_version, first_key, now)
            })
        });
        match result {
            Err(StoreError::Conflict) => Err(StoreError::Exists),
            other => other,
        }
    }

    fn insert_key(
        &self,
        tenant: &SqlValue,
        name: &SqlValue,
        version: KeyVersion,
        key: &WrappedDek,
        now: i64,
    ) -> Result<(), SqlError> {
        self.conn.execute(
            "INSERT INTO data_keys (tenant, scheme, version, wrapped_dek, kek_id, kek_version, \
             state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            &[
                tenant.clone(),
                name.clone(),
                SqlValue::Int(version.get().into()),
                SqlValue::Blob(key.blob.clone()),
                SqlValue::Text(key.kek_id.clone()),
                SqlValue::Text(key.kek_version.clone()),
                SqlValue::Text(KeyState::Active.as_str().into()),
                SqlValue::Int(now),
            ],
        )?;
        Ok(())
    }

    /// Adds data-key version `expected_current + 1` and makes it current, atomically.
    /// `Conflict` when another writer moved the scheme on first (re-read and retry).
    pub fn add_key_version(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        expected_current: KeyVersion,
        key: &WrappedDek,
        now: i64,
    ) -> Result<KeyVersion, StoreError> {
        let next = expected_current
            .next()
            .ok_or_else(|| StoreError::Corrupt("key version space exhausted".into()))?;
        let t = SqlValue::Text(tenant.as_str().into());
        let n = SqlValue::Text(name.as_str().into());
        self.with_schema(|| {
            self.transaction(|| {
                let moved = self.conn.execute(
                    "UPDATE schemes SET current_version = $1, updated_at = $2 \
                     WHERE tenant = $3 AND name = $4 AND current_version = $5",
                    &[
                        SqlValue::Int(next.get().into()),
                        SqlValue::Int(now),
                        t.clone(),
                        n.clone(),
                        SqlValue::Int(expected_current.get().into()),
                    ],
                )?;
                if moved != 1 {
                    return Err(SqlError::Constraint("scheme moved on".into()));
                }
                self.insert_key(&t, &n, next, key, now)
            })
        })?;
        Ok(next)
    }

    pub fn get_scheme(&self, tenant: &TenantId, name: &SchemeName) -> Result<Option<Scheme>, StoreError> {
        let sql =
            format!("SELECT {SCHEME_COLUMNS}, {SCHEMA_VERSION} FROM schemes WHERE tenant = $1 AND name = $2");
        let rows =
            self.read(&sql, &[SqlValue::Text(tenant.as_str().into()), SqlValue::Text(name.as_str().into())])?;
        rows.first().map(|r| scheme_from_row(&Row(r))).transpose()
    }

    /// A scheme and its current data key in one round trip (the protect path). The key is `None`
    /// if its row is missing, which a consistent store never shows.
    pub fn get_scheme_with_current_key(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
    ) -> Result<Option<(Scheme, Option<DataKey>)>, StoreError> {
        self.scheme_with_key(tenant, name, None)
    }

    /// A scheme and one of its data-key versions (`None` if no such version) in one round trip
    /// (the unprotect path).
    pub fn get_scheme_with_key(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        version: KeyVersion,
    ) -> Result<Option<(Scheme, Option<DataKey>)>, StoreError> {
        self.scheme_with_key(tenant, name, Some(version))
    }

    fn scheme_with_key(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        version: Option<KeyVersion>,
    ) -> Result<Option<(Scheme, Option<DataKey>)>, StoreError> {
        let which = if version.is_some() { "$3" } else { "s.current_version" };
        let sql = format!(
            "SELECT {SCHEME_AND_KEY_COLUMNS}, {SCHEMA_VERSION} FROM schemes s LEFT JOIN data_keys d \
             ON d.tenant = s.tenant AND d.scheme = s.name AND d.version = {which} \
             WHERE s.tenant = $1 AND s.name = $2"
        );
        let mut params = vec![SqlValue::Text(tenant.as_str().into()), SqlValue::Text(name.as_str().into())];
        if let Some(v) = version {
            params.push(SqlValue::Int(v.get().into()));
        }
        let rows = self.read(&sql, &params)?;
        let Some(r) = rows.first() else { return Ok(None) };
        let scheme = scheme_from_row(&Row(r))?;
        let key = match r.get(8) {
            None | Some(SqlValue::Null) => None,
            Some(_) => Some(data_key_from_row(&Row(&r[8..]))?),
        };
        Ok(Some((scheme, key)))
    }

    /// The tenant's schemes, sorted by name.
    pub fn list_schemes(&self, tenant: &TenantId) -> Result<Vec<Scheme>, StoreError> {
        let sql =
            format!("SELECT {SCHEME_COLUMNS}, {SCHEMA_VERSION} FROM schemes WHERE tenant = $1 ORDER BY name");
        let rows = self.read(&sql, &[SqlValue::Text(tenant.as_str().into())])?;
        rows.iter().map(|r| scheme_from_row(&Row(r))).collect()
    }

    /// One data-key version of a scheme, if it exists.
    pub fn data_key(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        version: KeyVersion,
    ) -> Result<Option<DataKey>, StoreError> {
        let rows = self.read(
            &format!(
                "SELECT version, wrapped_dek, kek_id, kek_version, state, {SCHEMA_VERSION} FROM data_keys \
                 WHERE tenant = $1 AND scheme = $2 AND version = $3"
            ),
            &[
                SqlValue::Text(tenant.as_str().into()),
                SqlValue::Text(name.as_str().into()),
                SqlValue::Int(version.get().into()),
            ],
        )?;
        rows.first().map(|r| data_key_from_row(&Row(r))).transpose()
    }
}

/// A database schema version above this build's is an error; none recorded (NULL) is not.
fn check_version(version: Option<&SqlValue>) -> Result<(), SqlError> {
    match version {
        Some(SqlValue::Int(found)) if *found > migrate::latest() => Err(SqlError::SchemaTooNew(*found)),
        _ => Ok(()),
    }
}

/// `version, wrapped_dek, kek_id, kek_version, state` of `data_keys`.
fn data_key_from_row(r: &Row<'_>) -> Result<DataKey, StoreError> {
    let state = KeyState::parse(r.text(4)?).ok_or_else(|| corrupt("data_keys.state"))?;
    Ok(DataKey {
        version: key_version(r.int(0)?)?,
        wrapped: WrappedDek {
            blob: r.blob(1)?.to_vec(),
            kek_id: r.text(2)?.into(),
            kek_version: r.text(3)?.into(),
        },
        state,
    })
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("stored {what} does not decode"))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn key_version(v: i64) -> Result<KeyVersion, StoreError> {
    u32::try_from(v).ok().and_then(|v| KeyVersion::new(v).ok()).ok_or_else(|| corrupt("key version"))
}

fn scheme_from_row(r: &Row<'_>) -> Result<Scheme, StoreError> {
    Ok(Scheme {
        tenant: TenantId::parse(r.text(0)?).map_err(|_| corrupt("schemes.tenant"))?,
        name: SchemeName::parse(r.text(1)?).map_err(|_| corrupt("schemes.name"))?,
        algorithm: Algorithm::parse(r.text(2)?).ok_or_else(|| corrupt("schemes.algorithm"))?,
        kek: serde_json::from_str::<KekRef>(r.text(3)?).map_err(|_| corrupt("schemes.kek"))?,
        policy: serde_json::from_str::<Policy>(r.text(4)?).map_err(|_| corrupt("schemes.policy"))?,
        mask: serde_json::from_str::<MaskRule>(r.text(5)?).map_err(|_| corrupt("schemes.mask_rule"))?,
        current_version: key_version(r.int(6)?)?,
        created_at: r.int(7)?,
    })
}

#[cfg(test)]
pub(crate) mod tests;
