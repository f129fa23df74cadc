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

mod api_keys;
mod audit;
mod jobs;
pub mod migrate;
pub mod sql;
mod subjects;

pub use api_keys::{ApiKeyRecord, StoredApiKey, LAST_USED_GRANULARITY_SECS};
pub use audit::MAX_AUDIT_PAGE;
pub use jobs::{Job, JobState};
pub use subjects::{MakeCertificate, MakeScopeCertificate, ScopeErased, ScopeErasure, SubjectSecret};

use std::cell::{Cell, RefCell};
use std::fmt;

use crate::crypto::aead::Algorithm;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use crate::kms::WrappedDek;
use crate::scheme::{mask::MaskRule, AuditMode, KekRef, Policy, RotationPeriod, Scheme};
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

/// The state of a data-key version (DESIGN §6): `active` from `min_decryption_version` up,
/// `retired` below it, `destroyed` (irreversibly: the wrapped key is gone) only from `retired`.
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
    pub created_at: i64,
    /// The KEK that wrapped it; `None` for versions stored before migration 4 (the scheme's KEK).
    pub kek: Option<KekRef>,
}

/// A data-key version as the versions view shows it: the key, and who destroyed it and when.
#[derive(Debug, Clone)]
pub struct KeyVersionRecord {
    pub key: DataKey,
    pub destroyed_at: Option<i64>,
    pub destroyed_by: Option<String>,
}

/// What a scheme update changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemeChange {
    pub min_decryption_version: Option<KeyVersion>,
    /// `Some(None)` removes the rotation period.
    pub rotation_period: Option<Option<RotationPeriod>>,
    pub mask_on_deny: Option<bool>,
    /// Which of the scheme's data operations are audited.
    pub audit: Option<AuditMode>,
}

/// How a scheme update ended. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    Changed(Box<Scheme>),
    SchemeNotFound,
    /// The minimum asked for is above the current version (shown).
    AboveCurrent(KeyVersion),
    /// The minimum asked for would re-activate this destroyed version (the highest destroyed).
    Destroyed(KeyVersion),
}

/// How destroying one data-key version ended. Refusals change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyOutcome {
    Destroyed,
    SchemeNotFound,
    VersionNotFound,
    /// The version is current or not below `min_decryption_version`.
    Active,
    AlreadyDestroyed,
}

/// The metadata store over one connection.
pub struct Store<'a> {
    conn: &'a dyn SqlConn,
    /// Whether write transactions commit on their own or join the request's one.
    request: Cell<RequestTx>,
    /// The schemes this request wrote (scheme row or data keys), so that their cached copies
    /// are dropped before the request answers (`ops::scheme_cache`).
    changed: RefCell<Vec<(TenantId, SchemeName)>>,
}

/// A scheme joined with its current data key, as one database row: what the scheme cache keeps
/// (the columns of [`Store::get_scheme_with_current_key`]'s read, schema version last).
pub type SchemeRow = Vec<SqlValue>;

/// The request's write transaction (docs/audit.md, "One transaction"): once a door arms it
/// ([`Store::join_writes`]), every write transaction of the request joins one database
/// transaction, opened by the first write and committed only with the request's audit entry
/// ([`Store::append_audit`]) or by [`Store::finish_writes`], so that an operation whose entry cannot be
/// written leaves no write behind and a committed operation always has its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestTx {
    /// Each write transaction commits on its own.
    Off,
    /// Armed: the next write transaction opens the request's transaction.
    Armed,
    /// The request's transaction is open and holds writes.
    Open,
}

const SCHEME_COLUMNS: &str = "tenant, name, algorithm, kek, policy, mask_rule, current_version, created_at, \
     min_decryption_version, rotation_period, erased_at, audit, mask_on_deny, context_required";
/// The number of [`SCHEME_COLUMNS`]; a data key's columns follow them in joined reads.
const SCHEME_COLUMN_COUNT: usize = 14;
/// The columns of [`SCHEME_AND_KEY_COLUMNS`].
const SCHEME_AND_KEY_COLUMN_COUNT: usize = SCHEME_COLUMN_COUNT + 7;
/// The columns [`data_key_from_row`] decodes.
const KEY_COLUMNS: &str = "version, wrapped_dek, kek_id, kek_version, state, created_at, kek";
/// The database's schema version, appended as the last column of every read.
const SCHEMA_VERSION: &str = "(SELECT MAX(version) FROM veil_migrations)";
/// [`SCHEME_COLUMNS`] of `schemes s`, then the columns of its current `data_keys d` row.
const SCHEME_AND_KEY_COLUMNS: &str = "s.tenant, s.name, s.algorithm, s.kek, s.policy, s.mask_rule, \
     s.current_version, s.created_at, s.min_decryption_version, s.rotation_period, s.erased_at, s.audit, \
     s.mask_on_deny, s.context_required, d.version, d.wrapped_dek, d.kek_id, d.kek_version, d.state, d.created_at, d.kek";

impl<'a> Store<'a> {
    pub fn new(conn: &'a dyn SqlConn) -> Self {
        Store { conn, request: Cell::new(RequestTx::Off), changed: RefCell::new(Vec::new()) }
    }

    /// Notes that this request writes scheme `name` (its row or its data keys).
    fn note_change(&self, tenant: &TenantId, name: &SchemeName) {
        let mut changed = self.changed.borrow_mut();
        if !changed.iter().any(|(t, n)| t == tenant && n == name) {
            changed.push((tenant.clone(), name.clone()));
        }
    }

    /// Whether this request has written any scheme (then it caches no scheme: what it read may
    /// not be committed yet).
    pub fn wrote_schemes(&self) -> bool {
        !self.changed.borrow().is_empty()
    }

    /// The schemes this request wrote, forgotten here.
    pub fn take_changed_schemes(&self) -> Vec<(TenantId, SchemeName)> {
        std::mem::take(&mut *self.changed.borrow_mut())
    }

    /// Arms the request's write transaction: from here on the writes of every write transaction
    /// are committed together with the request's audit entry ([`Store::append_audit`]) or by
    /// [`Store::finish_writes`], never on their own. Called by the doors once the caller is
    /// authenticated, before the operation runs.
    pub fn join_writes(&self) {
        if self.request.get() == RequestTx::Off {
            self.request.set(RequestTx::Armed);
        }
    }

    /// Commits the writes the request's transaction holds (if any) and turns joining off: for a
    /// request that writes no audit entry. On failure everything is rolled back.
    pub fn finish_writes(&self) -> Result<(), StoreError> {
        let open = self.request.replace(RequestTx::Off) == RequestTx::Open;
        if open {
            if let Err(e) = self.conn.execute("COMMIT", &[]) {
                let _ = self.conn.execute("ROLLBACK", &[]);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Commits what the request's transaction holds so far and keeps joining armed: for an
    /// operation that is resumable by design (a rekey commits each version it rewraps, so that
    /// an interrupted one leaves every version readable and a rerun finishes it).
    pub fn commit_writes(&self) -> Result<(), StoreError> {
        let armed = self.request.get() != RequestTx::Off;
        self.finish_writes()?;
        if armed {
            self.request.set(RequestTx::Armed);
        }
        Ok(())
    }

    /// Rolls back whatever the request's transaction holds and turns joining off.
    pub fn abandon_writes(&self) {
        if self.request.replace(RequestTx::Off) == RequestTx::Open {
            let _ = self.conn.execute("ROLLBACK", &[]);
        }
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
    /// With the request's transaction armed ([`Store::join_writes`]), `f`'s writes join it
    /// instead (a savepoint inside it once it holds writes, so that a failed `f` undoes only
    /// its own) and are committed with the request's audit entry.
    fn transaction<T>(&self, f: impl Fn() -> Result<T, SqlError>) -> Result<T, SqlError> {
        match self.request.get() {
            RequestTx::Off => {}
            RequestTx::Armed => {
                self.begin()?;
                return match self.check_schema_version().and_then(|()| f()) {
                    Ok(v) => {
                        self.request.set(RequestTx::Open);
                        Ok(v)
                    }
                    Err(e) => {
                        // Nothing else is held: the request is armed as before.
                        let _ = self.conn.execute("ROLLBACK", &[]);
                        Err(e)
                    }
                };
            }
            RequestTx::Open => {
                self.conn.execute("SAVEPOINT veil_write", &[])?;
                let r = f().and_then(|v| self.conn.execute("RELEASE SAVEPOINT veil_write", &[]).map(|_| v));
                if r.is_err() {
                    let _ = self.conn.execute("ROLLBACK TO SAVEPOINT veil_write", &[]);
                    let _ = self.conn.execute("RELEASE SAVEPOINT veil_write", &[]);
                }
                return r;
            }
        }
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
        self.note_change(&scheme.tenant, &scheme.name);
        let result = self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    &[tenant.clone(), SqlValue::Int(now)],
                )?;
                self.lock_tenant(&tenant)?;
                self.conn.execute(
                    "INSERT INTO schemes (tenant, name, algorithm, kek, policy, mask_rule, \
                     current_version, min_decryption_version, rotation_period, created_at, updated_at, audit, \
                     mask_on_deny, context_required) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13)",
                    &[
                        tenant.clone(),
                        name.clone(),
                        SqlValue::Text(scheme.algorithm.as_str().into()),
                        SqlValue::Text(kek.clone()),
                        SqlValue::Text(policy.clone()),
                        SqlValue::Text(mask.clone()),
                        SqlValue::Int(scheme.current_version.get().into()),
                        SqlValue::Int(scheme.min_decryption_version.get().into()),
                        period_value(scheme.rotation_period),
                        SqlValue::Int(now),
                        SqlValue::Text(scheme.audit.as_str().into()),
                        SqlValue::Int(i64::from(scheme.mask_on_deny)),
                        SqlValue::Int(i64::from(scheme.context_required)),
                    ],
                )?;
                self.insert_key(&tenant, &name, scheme.current_version, first_key, &kek, now)
            })
        });
        match result {
            Err(StoreError::Conflict) => Err(StoreError::Exists),
            other => other,
        }
    }

    /// Makes a new scheme out of an erased one of the same name (docs/erasure.md, "Reusing a
    /// name"): its row takes the new definition, with `scheme.current_version` (one above every
    /// erased version, whose rows stay destroyed) as both current and minimum version, and
    /// `first_key` as that version's key. `Exists` when the scheme is no longer the erased one
    /// whose current version was `erased_current` (a concurrent create won).
    pub fn recreate_erased_scheme(
        &self,
        scheme: &Scheme,
        erased_current: KeyVersion,
        first_key: &WrappedDek,
        now: i64,
    ) -> Result<(), StoreError> {
        let kek = json(&scheme.kek)?;
        let policy = json(&scheme.policy)?;
        let mask = json(&scheme.mask)?;
        let tenant = SqlValue::Text(scheme.tenant.as_str().into());
        let name = SqlValue::Text(scheme.name.as_str().into());
        self.note_change(&scheme.tenant, &scheme.name);
        let result = self.with_schema(|| {
            self.transaction(|| {
                self.lock_tenant(&tenant)?;
                let taken = self.conn.execute(
                    "UPDATE schemes SET algorithm = $1, kek = $2, policy = $3, mask_rule = $4, \
                     current_version = $5, min_decryption_version = $5, rotation_period = $6, \
                     created_at = $7, updated_at = $7, erased_at = NULL, erasure_id = NULL, audit = $11, \
                     mask_on_deny = $12, context_required = $13 \
                     WHERE tenant = $8 AND name = $9 AND erased_at IS NOT NULL AND current_version = $10",
                    &[
                        SqlValue::Text(scheme.algorithm.as_str().into()),
                        SqlValue::Text(kek.clone()),
                        SqlValue::Text(policy.clone()),
                        SqlValue::Text(mask.clone()),
                        SqlValue::Int(scheme.current_version.get().into()),
                        period_value(scheme.rotation_period),
                        SqlValue::Int(now),
                        tenant.clone(),
                        name.clone(),
                        SqlValue::Int(erased_current.get().into()),
                        SqlValue::Text(scheme.audit.as_str().into()),
                        SqlValue::Int(i64::from(scheme.mask_on_deny)),
                        SqlValue::Int(i64::from(scheme.context_required)),
                    ],
                )?;
                if taken != 1 {
                    return Err(SqlError::Constraint("the erased scheme was taken over first".into()));
                }
                self.insert_key(&tenant, &name, scheme.current_version, first_key, &kek, now)
            })
        });
        match result {
            Err(StoreError::Conflict) => Err(StoreError::Exists),
            other => other,
        }
    }

    /// Waits for a tenant erasure under way (PostgreSQL; SQLite's write lock already
    /// serialises writers): a scheme is created either before the erasure, and erased with the
    /// rest, or after it, and left alone; never half-way through.
    fn lock_tenant(&self, tenant: &SqlValue) -> Result<(), SqlError> {
        let lock = self.conn.dialect().for_update();
        if !lock.is_empty() {
            self.conn.query(
                &format!("SELECT id FROM tenants WHERE id = $1{lock}"),
                std::slice::from_ref(tenant),
            )?;
        }
        Ok(())
    }

    fn insert_key(
        &self,
        tenant: &SqlValue,
        name: &SqlValue,
        version: KeyVersion,
        key: &WrappedDek,
        kek: &str,
        now: i64,
    ) -> Result<(), SqlError> {
        self.conn.execute(
            "INSERT INTO data_keys (tenant, scheme, version, wrapped_dek, kek_id, kek_version, \
             state, created_at, updated_at, kek) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
            &[
                tenant.clone(),
                name.clone(),
                SqlValue::Int(version.get().into()),
                SqlValue::Blob(key.blob.clone()),
                SqlValue::Text(key.kek_id.clone()),
                SqlValue::Text(key.kek_version.clone()),
                SqlValue::Text(KeyState::Active.as_str().into()),
                SqlValue::Int(now),
                SqlValue::Text(kek.into()),
            ],
        )?;
        Ok(())
    }

    /// Adds data-key version `expected_current + 1`, wrapped by `kek`, and makes it current,
    /// atomically. `Conflict` when another writer moved the scheme on first (re-read and retry).
    pub fn add_key_version(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        expected_current: KeyVersion,
        key: &WrappedDek,
        kek: &KekRef,
        now: i64,
    ) -> Result<KeyVersion, StoreError> {
        let next = expected_current
            .next()
            .ok_or_else(|| StoreError::Corrupt("key version space exhausted".into()))?;
        let kek = json(kek)?;
        let t = SqlValue::Text(tenant.as_str().into());
        let n = SqlValue::Text(name.as_str().into());
        self.note_change(tenant, name);
        self.with_schema(|| {
            self.transaction(|| {
                let moved = self.conn.execute(
                    "UPDATE schemes SET current_version = $1, updated_at = $2 \
                     WHERE tenant = $3 AND name = $4 AND current_version = $5 AND erased_at IS NULL",
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
                self.insert_key(&t, &n, next, key, &kek, now)
            })
        })?;
        Ok(next)
    }

    /// Changes a scheme's minimum decryption version, rotation period, `mask_on_deny` and `audit`
    /// setting in one transaction.
    /// Versions below the new minimum become `retired`, those from it up `active` again (never a
    /// destroyed one: a minimum at or below a destroyed version is refused).
    pub fn update_scheme(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        change: &SchemeChange,
        now: i64,
    ) -> Result<ChangeOutcome, StoreError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let n = SqlValue::Text(name.as_str().into());
        let lock = self.conn.dialect().for_update();
        self.note_change(tenant, name);
        let refused = self.with_schema(|| {
            self.transaction(|| {
                let rows = self.conn.query(
                    &format!("SELECT current_version FROM schemes WHERE tenant = $1 AND name = $2{lock}"),
                    &[t.clone(), n.clone()],
                )?;
                let Some(row) = rows.first() else { return Ok(Some(ChangeOutcome::SchemeNotFound)) };
                let current = Row(row).int(0)?;
                if let Some(min) = change.min_decryption_version {
                    let min = i64::from(min.get());
                    if min > current {
                        return Ok(Some(ChangeOutcome::AboveCurrent(sql_version(current)?)));
                    }
                    let destroyed = self.conn.query(
                        "SELECT MAX(version) FROM data_keys WHERE tenant = $1 AND scheme = $2 \
                         AND state = 'destroyed' AND version >= $3",
                        &[t.clone(), n.clone(), SqlValue::Int(min)],
                    )?;
                    if let Some(SqlValue::Int(v)) = destroyed.first().and_then(|r| r.first()) {
                        return Ok(Some(ChangeOutcome::Destroyed(sql_version(*v)?)));
                    }
                    self.conn.execute(
                        "UPDATE schemes SET min_decryption_version = $1, updated_at = $2 \
                         WHERE tenant = $3 AND name = $4",
                        &[SqlValue::Int(min), SqlValue::Int(now), t.clone(), n.clone()],
                    )?;
                    self.conn.execute(
                        "UPDATE data_keys SET state = CASE WHEN version < $1 THEN 'retired' ELSE 'active' END, \
                         updated_at = $2 WHERE tenant = $3 AND scheme = $4 AND state <> 'destroyed' \
                         AND state <> CASE WHEN version < $1 THEN 'retired' ELSE 'active' END",
                        &[SqlValue::Int(min), SqlValue::Int(now), t.clone(), n.clone()],
                    )?;
                }
                if let Some(on) = change.mask_on_deny {
                    self.conn.execute(
                        "UPDATE schemes SET mask_on_deny = $1, updated_at = $2 WHERE tenant = $3 AND name = $4",
                        &[SqlValue::Int(i64::from(on)), SqlValue::Int(now), t.clone(), n.clone()],
                    )?;
                }
                if let Some(audit) = change.audit {
                    self.conn.execute(
                        "UPDATE schemes SET audit = $1, updated_at = $2 WHERE tenant = $3 AND name = $4",
                        &[SqlValue::Text(audit.as_str().into()), SqlValue::Int(now), t.clone(), n.clone()],
                    )?;
                }
                if let Some(period) = change.rotation_period {
                    self.conn.execute(
                        "UPDATE schemes SET rotation_period = $1, updated_at = $2 WHERE tenant = $3 AND name = $4",
                        &[period_value(period), SqlValue::Int(now), t.clone(), n.clone()],
                    )?;
                }
                Ok(None)
            })
        })?;
        match refused {
            Some(refused) => Ok(refused),
            None => match self.get_scheme(tenant, name)? {
                Some(s) => Ok(ChangeOutcome::Changed(Box::new(s))),
                None => Ok(ChangeOutcome::SchemeNotFound),
            },
        }
    }

    /// Destroys one retired data-key version: its wrapped key is emptied to zero bytes and its row
    /// kept with state `destroyed`, `destroyed_at` and `destroyed_by`. Irreversible.
    pub fn destroy_key_version(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        version: KeyVersion,
        by: &str,
        now: i64,
    ) -> Result<DestroyOutcome, StoreError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let n = SqlValue::Text(name.as_str().into());
        let v = SqlValue::Int(version.get().into());
        let lock = self.conn.dialect().for_update();
        self.note_change(tenant, name);
        self.with_schema(|| {
            self.transaction(|| {
                // The scheme row is locked first, as rotation and updates do, so that a concurrent
                // lowering of the minimum cannot re-activate the version being destroyed.
                let rows = self.conn.query(
                    &format!(
                        "SELECT current_version, min_decryption_version FROM schemes \
                         WHERE tenant = $1 AND name = $2{lock}"
                    ),
                    &[t.clone(), n.clone()],
                )?;
                let Some(row) = rows.first() else { return Ok(DestroyOutcome::SchemeNotFound) };
                let (current, min) = (Row(row).int(0)?, Row(row).int(1)?);
                let rows = self.conn.query(
                    "SELECT state FROM data_keys WHERE tenant = $1 AND scheme = $2 AND version = $3",
                    &[t.clone(), n.clone(), v.clone()],
                )?;
                let Some(row) = rows.first() else { return Ok(DestroyOutcome::VersionNotFound) };
                let version = i64::from(version.get());
                match KeyState::parse(Row(row).text(0)?) {
                    Some(KeyState::Destroyed) => return Ok(DestroyOutcome::AlreadyDestroyed),
                    _ if version >= min || version >= current => return Ok(DestroyOutcome::Active),
                    _ => {}
                }
                self.destroy_rows(&t, &n, Some(version), by, now)?;
                Ok(DestroyOutcome::Destroyed)
            })
        })
    }

    /// Destroys every data-key version that is not destroyed yet of one scheme, or of every
    /// scheme of the tenant (`scheme: None`), whatever its state: for erasing a scheme or a
    /// tenant. Returns the versions it destroyed, so that cached copies can be dropped too.
    pub fn destroy_all_key_versions(
        &self,
        tenant: &TenantId,
        scheme: Option<&SchemeName>,
        by: &str,
        now: i64,
    ) -> Result<Vec<(SchemeName, KeyVersion)>, StoreError> {
        self.with_schema(|| self.transaction(|| self.destroy_all_key_versions_in_tx(tenant, scheme, by, now)))
    }

    /// [`Store::destroy_all_key_versions`] inside a transaction the caller has opened.
    pub(crate) fn destroy_all_key_versions_in_tx(
        &self,
        tenant: &TenantId,
        scheme: Option<&SchemeName>,
        by: &str,
        now: i64,
    ) -> Result<Vec<(SchemeName, KeyVersion)>, SqlError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let mut params = vec![t.clone()];
        let mut sql =
            "SELECT scheme, version FROM data_keys WHERE tenant = $1 AND state <> 'destroyed'".to_string();
        if let Some(s) = scheme {
            sql.push_str(" AND scheme = $2");
            params.push(SqlValue::Text(s.as_str().into()));
        }
        sql.push_str(" ORDER BY scheme, version");
        let mut out = Vec::new();
        for row in self.conn.query(&sql, &params)? {
            let r = Row(&row);
            let name = SchemeName::parse(r.text(0)?)
                .map_err(|_| SqlError::Other("stored data_keys.scheme".into()))?;
            out.push((name, sql_version(r.int(1)?)?));
        }
        if let Some(s) = scheme {
            self.note_change(tenant, s);
        }
        for (name, _) in &out {
            self.note_change(tenant, name);
        }
        let mut done = std::collections::HashSet::new();
        for (name, _) in &out {
            if done.insert(name.clone()) {
                self.destroy_rows(&t, &SqlValue::Text(name.as_str().into()), None, by, now)?;
            }
        }
        Ok(out)
    }

    /// Empties the wrapped key of one version (or every version) of a scheme that is not
    /// destroyed yet, and records who did it and when.
    fn destroy_rows(
        &self,
        tenant: &SqlValue,
        name: &SqlValue,
        version: Option<i64>,
        by: &str,
        now: i64,
    ) -> Result<u64, SqlError> {
        let mut params = vec![
            SqlValue::Blob(Vec::new()),
            SqlValue::Int(now),
            SqlValue::Text(by.into()),
            tenant.clone(),
            name.clone(),
        ];
        let mut sql = "UPDATE data_keys SET state = 'destroyed', wrapped_dek = $1, destroyed_at = $2, \
                       destroyed_by = $3, updated_at = $2 WHERE tenant = $4 AND scheme = $5 \
                       AND state <> 'destroyed'"
            .to_string();
        if let Some(v) = version {
            sql.push_str(" AND version = $6");
            params.push(SqlValue::Int(v));
        }
        self.conn.execute(&sql, &params)
    }

    /// Replaces one version's wrapped key (a KEK rotation) if it still holds `old`'s and is not
    /// destroyed: `false` when a concurrent writer changed or destroyed it first (nothing written).
    pub fn replace_wrapped_key(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        old: &DataKey,
        new: &WrappedDek,
        kek: &KekRef,
        now: i64,
    ) -> Result<bool, StoreError> {
        let kek = json(kek)?;
        self.note_change(tenant, name);
        let changed = self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "UPDATE data_keys SET wrapped_dek = $1, kek_id = $2, kek_version = $3, kek = $4, \
                     updated_at = $5 WHERE tenant = $6 AND scheme = $7 AND version = $8 \
                     AND state <> 'destroyed' AND wrapped_dek = $9",
                    &[
                        SqlValue::Blob(new.blob.clone()),
                        SqlValue::Text(new.kek_id.clone()),
                        SqlValue::Text(new.kek_version.clone()),
                        SqlValue::Text(kek.clone()),
                        SqlValue::Int(now),
                        SqlValue::Text(tenant.as_str().into()),
                        SqlValue::Text(name.as_str().into()),
                        SqlValue::Int(old.version.get().into()),
                        SqlValue::Blob(old.wrapped.blob.clone()),
                    ],
                )
            })
        })?;
        Ok(changed == 1)
    }

    /// Makes `kek` the scheme's KEK: the one new versions are wrapped by.
    pub fn set_scheme_kek(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        kek: &KekRef,
        now: i64,
    ) -> Result<(), StoreError> {
        let kek = json(kek)?;
        self.note_change(tenant, name);
        self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "UPDATE schemes SET kek = $1, updated_at = $2 WHERE tenant = $3 AND name = $4",
                    &[
                        SqlValue::Text(kek.clone()),
                        SqlValue::Int(now),
                        SqlValue::Text(tenant.as_str().into()),
                        SqlValue::Text(name.as_str().into()),
                    ],
                )
            })
        })?;
        Ok(())
    }

    /// A scheme and every one of its data-key versions, oldest first.
    pub fn list_key_versions(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
    ) -> Result<Option<(Scheme, Vec<KeyVersionRecord>)>, StoreError> {
        let Some(scheme) = self.get_scheme(tenant, name)? else { return Ok(None) };
        let rows = self.read(
            &format!(
                "SELECT {KEY_COLUMNS}, destroyed_at, destroyed_by, {SCHEMA_VERSION} FROM data_keys \
                 WHERE tenant = $1 AND scheme = $2 ORDER BY version"
            ),
            &[SqlValue::Text(tenant.as_str().into()), SqlValue::Text(name.as_str().into())],
        )?;
        let versions = rows
            .iter()
            .map(|r| {
                let row = Row(r);
                Ok(KeyVersionRecord {
                    key: data_key_from_row(&row)?,
                    destroyed_at: optional_int(&row, 7)?,
                    destroyed_by: match r.get(8) {
                        Some(SqlValue::Text(t)) => Some(t.clone()),
                        None | Some(SqlValue::Null) => None,
                        Some(_) => return Err(corrupt("data_keys.destroyed_by")),
                    },
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((scheme, versions)))
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
        Ok(self.scheme_with_key(tenant, name, None)?.map(|(s, k, _)| (s, k)))
    }

    /// [`Store::get_scheme_with_current_key`], with the row it decoded (for the scheme cache).
    pub fn get_scheme_row_with_current_key(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
    ) -> Result<Option<(Scheme, Option<DataKey>, SchemeRow)>, StoreError> {
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
        Ok(self.scheme_with_key(tenant, name, Some(version))?.map(|(s, k, _)| (s, k)))
    }

    fn scheme_with_key(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        version: Option<KeyVersion>,
    ) -> Result<Option<(Scheme, Option<DataKey>, SchemeRow)>, StoreError> {
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
        let mut rows = self.read(&sql, &params)?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.swap_remove(0);
        let (scheme, key) = decode_scheme_row(&row)?;
        Ok(Some((scheme, key, row)))
    }

    /// The tenant's schemes, sorted by name.
    pub fn list_schemes(&self, tenant: &TenantId) -> Result<Vec<Scheme>, StoreError> {
        let sql =
            format!("SELECT {SCHEME_COLUMNS}, {SCHEMA_VERSION} FROM schemes WHERE tenant = $1 ORDER BY name");
        let rows = self.read(&sql, &[SqlValue::Text(tenant.as_str().into())])?;
        rows.iter().map(|r| scheme_from_row(&Row(r))).collect()
    }

    /// Adds `n` to the seal count of a data-key version (creating it at 0) and returns the new
    /// total, in one statement: concurrent requests each get a distinct total, and the count
    /// never goes down (issue 19 item 6). Refused, like every write, on a newer schema.
    pub fn reserve_seals(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        version: KeyVersion,
        n: u64,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "INSERT INTO key_seals (tenant, scheme, version, seals) \
             SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT), CAST($4 AS BIGINT) \
             WHERE {SCHEMA_VERSION} <= CAST($5 AS BIGINT) \
             ON CONFLICT (tenant, scheme, version) DO UPDATE SET seals = key_seals.seals + excluded.seals \
             RETURNING seals"
        );
        let n = i64::try_from(n).map_err(|_| StoreError::Corrupt("seal count out of range".into()))?;
        let params = [
            SqlValue::Text(tenant.as_str().into()),
            SqlValue::Text(name.as_str().into()),
            SqlValue::Int(version.get().into()),
            SqlValue::Int(n),
            SqlValue::Int(migrate::latest()),
        ];
        let rows = self.with_schema(|| self.conn.query(&sql, &params))?;
        match rows.first().and_then(|r| r.first()) {
            Some(SqlValue::Int(total)) => u64::try_from(*total).map_err(|_| corrupt("key_seals.seals")),
            _ => {
                // Nothing written: the schema is newer than this build (or the row is unreadable).
                self.check_schema_version()?;
                Err(corrupt("key_seals.seals"))
            }
        }
    }

    /// How many values a data-key version has sealed (0 when none).
    pub fn seals(
        &self,
        tenant: &TenantId,
        name: &SchemeName,
        version: KeyVersion,
    ) -> Result<u64, StoreError> {
        let rows = self.read(
            &format!(
                "SELECT seals, {SCHEMA_VERSION} FROM key_seals WHERE tenant = $1 AND scheme = $2 AND version = $3"
            ),
            &[
                SqlValue::Text(tenant.as_str().into()),
                SqlValue::Text(name.as_str().into()),
                SqlValue::Int(version.get().into()),
            ],
        )?;
        match rows.first().and_then(|r| r.first()) {
            None => Ok(0),
            Some(SqlValue::Int(n)) => u64::try_from(*n).map_err(|_| corrupt("key_seals.seals")),
            Some(_) => Err(corrupt("key_seals.seals")),
        }
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
                "SELECT {KEY_COLUMNS}, {SCHEMA_VERSION} FROM data_keys \
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

/// A scheme and its data key from a [`SchemeRow`] (read now, or kept by the scheme cache):
/// decoded and checked exactly as a read from the database is, schema version included.
pub fn decode_scheme_row(row: &[SqlValue]) -> Result<(Scheme, Option<DataKey>), StoreError> {
    if row.len() != SCHEME_AND_KEY_COLUMN_COUNT + 1 {
        return Err(corrupt("scheme row"));
    }
    check_version(row.last())?;
    let scheme = scheme_from_row(&Row(row))?;
    let key = match row.get(SCHEME_COLUMN_COUNT) {
        None | Some(SqlValue::Null) => None,
        Some(_) => Some(data_key_from_row(&Row(&row[SCHEME_COLUMN_COUNT..]))?),
    };
    Ok((scheme, key))
}

/// A database schema version above this build's is an error; none recorded (NULL) is not.
fn check_version(version: Option<&SqlValue>) -> Result<(), SqlError> {
    match version {
        Some(SqlValue::Int(found)) if *found > migrate::latest() => Err(SqlError::SchemaTooNew(*found)),
        _ => Ok(()),
    }
}

/// [`KEY_COLUMNS`] of `data_keys`.
fn data_key_from_row(r: &Row<'_>) -> Result<DataKey, StoreError> {
    let state = KeyState::parse(r.text(4)?).ok_or_else(|| corrupt("data_keys.state"))?;
    let kek = match r.0.get(6) {
        None | Some(SqlValue::Null) => None,
        Some(_) => Some(serde_json::from_str::<KekRef>(r.text(6)?).map_err(|_| corrupt("data_keys.kek"))?),
    };
    Ok(DataKey {
        version: key_version(r.int(0)?)?,
        wrapped: WrappedDek {
            blob: r.blob(1)?.to_vec(),
            kek_id: r.text(2)?.into(),
            kek_version: r.text(3)?.into(),
        },
        state,
        created_at: r.int(5)?,
        kek,
    })
}

/// A key version read inside a transaction (whose errors are [`SqlError`]s).
pub(crate) fn sql_version(v: i64) -> Result<KeyVersion, SqlError> {
    u32::try_from(v)
        .ok()
        .and_then(|v| KeyVersion::new(v).ok())
        .ok_or_else(|| SqlError::Other("stored key version does not decode".into()))
}

fn optional_int(r: &Row<'_>, i: usize) -> Result<Option<i64>, StoreError> {
    match r.0.get(i) {
        None | Some(SqlValue::Null) => Ok(None),
        Some(_) => Ok(Some(r.int(i)?)),
    }
}

fn period_value(p: Option<RotationPeriod>) -> SqlValue {
    match p {
        Some(p) => SqlValue::Int(i64::try_from(p.secs()).unwrap_or(i64::MAX)),
        None => SqlValue::Null,
    }
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
        min_decryption_version: key_version(r.int(8)?)?,
        rotation_period: match optional_int(r, 9)? {
            None => None,
            Some(secs) => Some(
                u64::try_from(secs)
                    .ok()
                    .and_then(RotationPeriod::from_secs)
                    .ok_or_else(|| corrupt("schemes.rotation_period"))?,
            ),
        },
        erased_at: optional_int(r, 10)?,
        audit: AuditMode::parse(r.text(11)?).ok_or_else(|| corrupt("schemes.audit"))?,
        mask_on_deny: match r.int(12)? {
            0 => false,
            1 => true,
            _ => return Err(corrupt("schemes.mask_on_deny")),
        },
        context_required: match r.int(13)? {
            0 => false,
            1 => true,
            _ => return Err(corrupt("schemes.context_required")),
        },
    })
}

#[cfg(test)]
pub(crate) mod tests;
