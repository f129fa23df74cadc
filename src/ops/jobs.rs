//! Bulk re-encryption jobs (issue 13 item 4; docs/rotation.md "Converting a table"): convert a
//! customer's PostgreSQL table, whose token column holds Veil tokens, to a scheme's target
//! version in short steps that may run in parallel.
//!
//! Two databases take part: the metadata DB (the job, a copy of its counters, its failed rows) and
//! the customer DB (the rows). The customer DB is the record of progress: a step claims rows with
//! `FOR UPDATE SKIP LOCKED`, rewraps them in Veil, and in that same transaction writes them back,
//! records the rows it could not rewrap (`veil_job_failures`) and adds to the job's counters
//! (`veil_job_progress`). Only then are the counters and failures copied into the metadata DB; a
//! copy only ever raises a counter. So a step killed before its commit leaves its rows as they
//! were (claimed again by the next step), one killed after it has done its rows exactly once (they
//! no longer match the claim), and the copy it missed is made by the next step or status read.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::{check_binding, parse_scheme_name, Ctx, ItemError, OpError};
use crate::auth::Principal;
use crate::crypto::token;
use crate::policy;
use crate::store::sql::{Row, SqlConn, SqlError, SqlValue};
use crate::store::{Job, JobState};
use crate::vars::Variables;

/// How the door reaches customer databases: the variables that name them, and a connection.
pub trait JobDatabases {
    fn variables(&self) -> &dyn Variables;
    /// A connection to the PostgreSQL database at `url` (opened on first use).
    fn open(&self, url: Zeroizing<String>) -> Box<dyn SqlConn>;
}

/// The largest `batch_size` a job may have (rows claimed by one step).
pub const MAX_JOB_BATCH: i64 = 10_000;
/// The default `batch_size`.
pub const DEFAULT_JOB_BATCH: i64 = 500;
/// Failed rows shown per page of `GET /v1/jobs/{id}/failures`.
pub const FAILURES_PAGE: i64 = 1000;
/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;

/// A token that names another scheme than the job's.
pub const SCHEME_MISMATCH: ItemError =
    ItemError { code: "scheme_mismatch", message: "the token names another scheme than the job's" };

/// The jobs settings: `job_databases`, the variables a job may name (docs/configuration.md).
/// Each entry is `name` (any tenant) or `tenant:name` (that tenant only); empty: jobs are off.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    databases: Vec<(Option<String>, String)>,
}

impl crate::vars::Load for Settings {
    fn load(vars: &dyn Variables) -> Result<Self, crate::vars::ConfigError> {
        let mut databases = Vec::new();
        for entry in vars.get("job_databases").unwrap_or_default().split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (tenant, name) = match entry.split_once(':') {
                Some((t, n)) => (Some(t.trim().to_owned()), n.trim()),
                None => (None, entry),
            };
            if !valid_variable_name(name) {
                return Err(crate::vars::ConfigError(
                    "variable job_databases must list variable names (a-z, 0-9, _), each optionally \
                     as tenant:name, separated by commas"
                        .into(),
                ));
            }
            databases.push((tenant, name.to_owned()));
        }
        Ok(Settings { databases })
    }
}

impl Settings {
    fn allows(&self, tenant: &str, name: &str) -> bool {
        self.databases.iter().any(|(t, n)| n == name && t.as_deref().is_none_or(|t| t == tenant))
    }
}

/// A Spin variable name: lowercase letters, digits and `_`, starting with a letter.
fn valid_variable_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// An SQL identifier Veil accepts: letters, digits and `_`, not starting with a digit, at most 63.
fn valid_ident(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_IDENT
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// `"name"`, or `"schema"."table"` for a qualified table (validated first: no quote can occur).
fn quote(s: &str) -> String {
    s.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")
}

fn check_ident(field: &str, s: &str, qualified: bool) -> Result<(), OpError> {
    let parts: Vec<&str> = s.split('.').collect();
    let ok = if qualified { (1..=2).contains(&parts.len()) } else { parts.len() == 1 };
    if ok && parts.iter().all(|p| valid_ident(p)) {
        return Ok(());
    }
    let what = if qualified { "a table name or schema.table" } else { "a column name" };
    Err(OpError::invalid_field(format!(
        "{field} must be {what}: letters, digits and _, not starting with a digit, at most {MAX_IDENT} characters"
    )))
}

/// A job id: `job_` and 32 hex digits of randomness.
fn valid_job_id(id: &str) -> bool {
    id.len() == 36 && id.starts_with("job_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// What `POST /v1/jobs` asks for.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub scheme: String,
    pub database: String,
    pub table: String,
    pub key_column: String,
    pub token_column: String,
    pub subject_column: Option<String>,
    pub context: Option<String>,
    pub batch_size: Option<i64>,
    pub target_version: Option<i64>,
}

/// A job as shown: the stored job, what is left, and how fast it goes.
#[derive(Debug, Clone)]
pub struct JobView {
    pub job: Job,
    pub remaining: i64,
    pub rows_per_second: f64,
    pub eta_seconds: Option<i64>,
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub done: i64,
    pub failed: i64,
    pub remaining: i64,
    pub state: JobState,
}

/// The SQL of one job, from its validated identifiers.
struct JobSql {
    table: String,
    key: String,
    token: String,
    subject: Option<String>,
}

impl JobSql {
    fn new(job: &Job) -> Self {
        JobSql {
            table: quote(&job.table),
            key: quote(&job.key_column),
            token: quote(&job.token_column),
            subject: job.subject_column.as_deref().map(quote),
        }
    }

    /// True for a row whose token is not a well-formed token of scheme `$s` at version `$v` or
    /// above (a NULL token needs nothing). `s`, `v`: the placeholders of the scheme and target.
    fn needs(&self, s: &str, v: &str) -> String {
        let c = format!("t.{}", self.token);
        format!(
            "{c} IS NOT NULL AND (CASE WHEN split_part({c}, '.', 1) = 'veil' AND split_part({c}, '.', 2) = '1' \
             AND split_part({c}, '.', 3) = {s} AND split_part({c}, '.', 4) ~ '^[1-9][0-9]{{0,9}}$' \
             THEN split_part({c}, '.', 4)::bigint ELSE 0 END) < {v}"
        )
    }

    fn not_failed(&self, j: &str) -> String {
        format!(
            "NOT EXISTS (SELECT 1 FROM veil_job_failures f WHERE f.job = {j} AND f.row_key = t.{}::text)",
            self.key
        )
    }

    fn claim(&self) -> String {
        let subject = self.subject.as_ref().map_or(String::new(), |s| format!(", t.{s}::text"));
        format!(
            "SELECT t.{key}::text, t.ctid::text, t.{tok}{subject} FROM {table} AS t WHERE {needs} AND {nf} \
             LIMIT $4 FOR UPDATE OF t SKIP LOCKED",
            key = self.key,
            tok = self.token,
            table = self.table,
            needs = self.needs("$1", "$2"),
            nf = self.not_failed("$3"),
        )
    }

    fn write_back(&self) -> String {
        format!(
            "UPDATE {table} AS t SET {tok} = ($1::jsonb ->> t.ctid::text) WHERE t.ctid = ANY($2::text::tid[])",
            table = self.table,
            tok = self.token
        )
    }

    fn count_needing(&self, with_failed: bool) -> String {
        let nf = if with_failed { String::new() } else { format!(" AND {}", self.not_failed("$3")) };
        format!("SELECT count(*) FROM {} AS t WHERE {}{nf}", self.table, self.needs("$1", "$2"))
    }

    fn probe(&self) -> String {
        let subject = self.subject.as_ref().map_or(String::new(), |s| format!(", t.{s}::text"));
        format!("SELECT t.{}::text, t.{}{subject} FROM {} AS t LIMIT 0", self.key, self.token, self.table)
    }
}

/// The customer database's tables of Veil's bookkeeping.
const PROGRESS_DDL: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS veil_job_progress (job TEXT PRIMARY KEY, done BIGINT NOT NULL DEFAULT 0, \
     failed BIGINT NOT NULL DEFAULT 0, cancelled BOOLEAN NOT NULL DEFAULT false)",
    "CREATE TABLE IF NOT EXISTS veil_job_failures (job TEXT NOT NULL, row_key TEXT NOT NULL, \
     code TEXT NOT NULL, PRIMARY KEY (job, row_key))",
];

/// A customer-database failure as the caller sees it; the detail goes to the log only.
fn db_err(e: SqlError) -> OpError {
    match e {
        SqlError::Unavailable(m) => {
            eprintln!("veil: job database unavailable: {m}");
            OpError::JobDatabaseUnavailable
        }
        other => {
            eprintln!("veil: job database error: {other}");
            OpError::Internal
        }
    }
}

fn tenant_admin(who: &Principal) -> Result<(), OpError> {
    if policy::may_create_schemes(who) {
        Ok(())
    } else {
        Err(OpError::forbidden("managing re-encryption jobs (tenant role admin)"))
    }
}

/// Opens the customer database named by the variable `name`, if the deployment lets this tenant.
fn open_database(ctx: &Ctx<'_>, who: &Principal, name: &str) -> Result<Box<dyn SqlConn>, OpError> {
    let dbs = ctx.job_databases.ok_or(OpError::UnknownVariable)?;
    let settings = <Settings as crate::vars::Load>::load(dbs.variables())?;
    if !settings.allows(who.tenant.as_str(), name) {
        return Err(OpError::UnknownVariable);
    }
    let url = Zeroizing::new(dbs.variables().get(name).ok_or(OpError::UnknownVariable)?);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(OpError::invalid_field("database: the variable does not hold a postgres:// URL"));
    }
    Ok(dbs.open(url))
}

fn int_of(rows: &[Vec<SqlValue>]) -> Result<i64, OpError> {
    let r = rows.first().ok_or(OpError::Internal)?;
    Row(r).int(0).map_err(db_err)
}

fn job_id(ctx: &mut Ctx<'_>) -> String {
    let mut b = [0u8; 16];
    ctx.rng.fill(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("job_{hex}")
}

/// `POST /v1/jobs`: checks the request, the scheme and the table, counts the rows to convert,
/// and records the job (`pending`).
pub fn create_job(ctx: &mut Ctx<'_>, who: &Principal, new: NewJob) -> Result<JobView, OpError> {
    tenant_admin(who)?;
    let name = parse_scheme_name(&new.scheme)?;
    if new.database.contains("://") {
        return Err(OpError::invalid_field(
            "database names a Spin variable that holds the URL; a URL itself is refused",
        ));
    }
    if !valid_variable_name(&new.database) {
        return Err(OpError::invalid_field(
            "database must be the name of a Spin variable (a-z, 0-9, _, starting with a letter)",
        ));
    }
    check_ident("table", &new.table, true)?;
    check_ident("key_column", &new.key_column, false)?;
    check_ident("token_column", &new.token_column, false)?;
    if let Some(s) = &new.subject_column {
        check_ident("subject_column", s, false)?;
    }
    check_binding(None, new.context.as_deref())?;
    let batch_size = new.batch_size.unwrap_or(DEFAULT_JOB_BATCH);
    if !(1..=MAX_JOB_BATCH).contains(&batch_size) {
        return Err(OpError::invalid_field(format!("batch_size must be from 1 to {MAX_JOB_BATCH}")));
    }
    if new.target_version.is_some_and(|v| !(1..=i64::from(u32::MAX)).contains(&v)) {
        return Err(OpError::invalid_field("target_version must be from 1 to the scheme's current version"));
    }
    let scheme = ctx.store.get_scheme(&who.tenant, &name)?.ok_or(OpError::SchemeNotFound(name.clone()))?;
    let conn = open_database(ctx, who, &new.database)?;
    let current = i64::from(scheme.current_version.get());
    let target = new.target_version.unwrap_or(current);
    if target > current {
        return Err(OpError::invalid_field(format!(
            "target_version must be from 1 to the scheme's current version ({current})"
        )));
    }
    let id = job_id(ctx);
    let job = Job {
        tenant: who.tenant.clone(),
        id,
        scheme: name.as_str().to_owned(),
        target_version: target,
        database: new.database,
        table: new.table,
        key_column: new.key_column,
        token_column: new.token_column,
        subject_column: new.subject_column,
        context: new.context,
        batch_size,
        state: JobState::Pending,
        total: 0,
        done: 0,
        failed: 0,
        rows_below_target: None,
        created_at: ctx.now,
        started_at: None,
        finished_at: None,
    };
    let sql = JobSql::new(&job);
    match conn.query(&sql.probe(), &[]) {
        Ok(_) => {}
        Err(SqlError::SchemaMissing(_)) => {
            return Err(OpError::invalid_field(
                "the table, or one of the named columns, does not exist in that database",
            ))
        }
        Err(e) => return Err(db_err(e)),
    }
    for ddl in PROGRESS_DDL {
        // Two first jobs at once may race on the catalog: the loser finds the table made.
        if let Err(e) = conn.execute(ddl, &[]) {
            match e {
                SqlError::Constraint(_) => conn.execute(ddl, &[]).map_err(db_err)?,
                e => return Err(db_err(e)),
            };
        }
    }
    let s = SqlValue::Text(job.scheme.clone());
    let v = SqlValue::Int(job.target_version);
    let total = int_of(&conn.query(&sql.count_needing(true), &[s, v]).map_err(db_err)?)?;
    conn.execute("INSERT INTO veil_job_progress (job) VALUES ($1)", &[SqlValue::Text(job.id.clone())])
        .map_err(db_err)?;
    let job = Job { total, ..job };
    ctx.store.create_job(&job)?;
    Ok(view(ctx, job))
}

fn view(ctx: &Ctx<'_>, job: Job) -> JobView {
    let remaining =
        if job.state == JobState::Finished { 0 } else { (job.total - job.done - job.failed).max(0) };
    let elapsed = match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => (f - s).max(1),
        (Some(s), None) => (ctx.now - s).max(1),
        _ => 0,
    };
    let rows_per_second = if elapsed > 0 { (job.done + job.failed) as f64 / elapsed as f64 } else { 0.0 };
    let eta_seconds = match job.state {
        JobState::Finished | JobState::Cancelled => Some(0),
        _ if rows_per_second > 0.0 => Some((remaining as f64 / rows_per_second).ceil() as i64),
        _ => None,
    };
    JobView { job, remaining, rows_per_second, eta_seconds }
}

fn find_job(ctx: &Ctx<'_>, who: &Principal, id: &str) -> Result<Job, OpError> {
    if !valid_job_id(id) {
        return Err(OpError::JobNotFound);
    }
    ctx.store.get_job(&who.tenant, id)?.ok_or(OpError::JobNotFound)
}

/// The customer database's counters of a job: `(done, failed, cancelled)`.
fn progress(conn: &dyn SqlConn, id: &str) -> Result<(i64, i64, bool), OpError> {
    let rows = conn
        .query(
            "SELECT done, failed, CASE WHEN cancelled THEN 1 ELSE 0 END FROM veil_job_progress WHERE job = $1",
            &[SqlValue::Text(id.into())],
        )
        .map_err(db_err)?;
    let r = rows.first().ok_or_else(|| {
        eprintln!("veil: job {id} has no progress row in its database");
        OpError::Internal
    })?;
    let r = Row(r);
    Ok((r.int(0).map_err(db_err)?, r.int(1).map_err(db_err)?, r.int(2).map_err(db_err)? != 0))
}

/// Brings the metadata copy level with the customer database: counters, and the failed rows when
/// the copy has fewer than the record (a step that died between its commit and its copy).
fn sync(
    ctx: &Ctx<'_>,
    job: &Job,
    conn: &dyn SqlConn,
    step_failures: &[(String, String)],
) -> Result<(i64, i64), OpError> {
    let (done, failed, _) = progress(conn, &job.id)?;
    let mut failures = step_failures.to_vec();
    if failed > job.failed + failures.len() as i64 {
        let rows = conn
            .query(
                "SELECT row_key, code FROM veil_job_failures WHERE job = $1 ORDER BY row_key LIMIT 100000",
                &[SqlValue::Text(job.id.clone())],
            )
            .map_err(db_err)?;
        for r in &rows {
            let r = Row(r);
            failures.push((r.text(0).map_err(db_err)?.to_owned(), r.text(1).map_err(db_err)?.to_owned()));
        }
    }
    ctx.store.record_job_progress(&job.tenant, &job.id, done, failed, &failures, ctx.now)?;
    Ok((done, failed))
}

/// `GET /v1/jobs/{id}`: the job, its counters brought level with its database when it is not over.
pub fn get_job(ctx: &mut Ctx<'_>, who: &Principal, id: &str) -> Result<JobView, OpError> {
    tenant_admin(who)?;
    let job = find_job(ctx, who, id)?;
    if matches!(job.state, JobState::Pending | JobState::Running) {
        let conn = open_database(ctx, who, &job.database)?;
        sync(ctx, &job, conn.as_ref(), &[])?;
    }
    let job = find_job(ctx, who, id)?;
    Ok(view(ctx, job))
}

/// `GET /v1/jobs/{id}/failures`: the rows a job could not rewrap (key and code), in key order.
pub fn job_failures(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    id: &str,
    after: Option<&str>,
) -> Result<Vec<(String, String)>, OpError> {
    tenant_admin(who)?;
    let job = find_job(ctx, who, id)?;
    Ok(ctx.store.job_failures(&job.tenant, &job.id, after, FAILURES_PAGE)?)
}

/// `POST /v1/jobs/{id}/cancel`: stops the job; a step in flight rolls back. A finished job
/// cannot be cancelled (`409 job_finished`); cancelling twice is harmless.
pub fn cancel_job(ctx: &mut Ctx<'_>, who: &Principal, id: &str) -> Result<JobView, OpError> {
    tenant_admin(who)?;
    let job = find_job(ctx, who, id)?;
    match job.state {
        JobState::Finished => return Err(OpError::JobFinished),
        JobState::Cancelled => return Ok(view(ctx, job)),
        JobState::Pending | JobState::Running => {}
    }
    let conn = open_database(ctx, who, &job.database)?;
    conn.execute(
        "UPDATE veil_job_progress SET cancelled = true WHERE job = $1",
        &[SqlValue::Text(job.id.clone())],
    )
    .map_err(db_err)?;
    let _ = sync(ctx, &job, conn.as_ref(), &[])?;
    ctx.store.cancel_job(&job.tenant, &job.id, ctx.now)?;
    let job = find_job(ctx, who, id)?;
    if job.state == JobState::Finished {
        return Err(OpError::JobFinished);
    }
    Ok(view(ctx, job))
}

/// One claimed row: its key, where it is, its token and its subject.
struct Claimed {
    key: String,
    ctid: String,
    token: String,
    subject: Option<String>,
}

/// `POST /v1/jobs/{id}/step`: one short invocation, bounded by `batch_size`.
pub fn step_job(ctx: &mut Ctx<'_>, who: &Principal, id: &str) -> Result<StepOutcome, OpError> {
    tenant_admin(who)?;
    let job = find_job(ctx, who, id)?;
    match job.state {
        JobState::Cancelled => return Err(OpError::JobCancelled),
        JobState::Finished => {
            return Ok(StepOutcome { done: 0, failed: 0, remaining: 0, state: JobState::Finished })
        }
        JobState::Pending | JobState::Running => {}
    }
    let conn = open_database(ctx, who, &job.database)?;
    let conn = conn.as_ref();
    conn.execute("BEGIN", &[]).map_err(db_err)?;
    let outcome = step_in_transaction(ctx, who, &job, conn);
    let (done, failed, failures) = match outcome {
        Ok(Some(x)) => x,
        Ok(None) => {
            let _ = conn.execute("ROLLBACK", &[]);
            return finish_or_wait(ctx, &job, conn);
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK", &[]);
            return Err(e);
        }
    };
    conn.execute("COMMIT", &[]).map_err(db_err)?;
    let (all_done, all_failed) = sync(ctx, &job, conn, &failures)?;
    let remaining = (job.total - all_done - all_failed).max(0);
    Ok(StepOutcome { done, failed, remaining, state: JobState::Running })
}

/// Claims, rewraps and writes back one batch inside the open transaction; `None` when nothing
/// was left to claim.
type StepRows = (i64, i64, Vec<(String, String)>);

fn step_in_transaction(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    job: &Job,
    conn: &dyn SqlConn,
) -> Result<Option<StepRows>, OpError> {
    let (_, _, cancelled) = progress(conn, &job.id)?;
    if cancelled {
        return Err(OpError::JobCancelled);
    }
    let sql = JobSql::new(job);
    let rows = conn
        .query(
            &sql.claim(),
            &[
                SqlValue::Text(job.scheme.clone()),
                SqlValue::Int(job.target_version),
                SqlValue::Text(job.id.clone()),
                SqlValue::Int(job.batch_size),
            ],
        )
        .map_err(db_err)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for r in &rows {
        let text = |i: usize| match r.get(i) {
            Some(SqlValue::Text(s)) => Some(s.clone()),
            _ => None,
        };
        claimed.push(Claimed {
            key: text(0).unwrap_or_default(),
            ctid: text(1).ok_or(OpError::Internal)?,
            token: text(2).ok_or(OpError::Internal)?,
            subject: if job.subject_column.is_some() { text(3) } else { None },
        });
    }
    let results = rewrap_rows(ctx, who, job, &claimed)?;
    let mut written = serde_json::Map::new();
    let mut tids = Vec::new();
    let mut failures = Vec::new();
    for (row, result) in claimed.iter().zip(results) {
        match result {
            Ok(tok) => {
                written.insert(row.ctid.clone(), serde_json::Value::String(tok));
                tids.push(format!("\"{}\"", row.ctid));
            }
            Err(e) => failures.push((row.key.clone(), e.code.to_owned())),
        }
    }
    let done = tids.len() as i64;
    if !tids.is_empty() {
        let body = serde_json::Value::Object(written).to_string();
        let n = conn
            .execute(
                &sql.write_back(),
                &[SqlValue::Text(body), SqlValue::Text(format!("{{{}}}", tids.join(",")))],
            )
            .map_err(db_err)?;
        if n != done as u64 {
            eprintln!("veil: job {} wrote {n} rows of {done}", job.id);
            return Err(OpError::Internal);
        }
    }
    if !failures.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> =
            failures.iter().map(|(k, c)| (k.clone(), serde_json::Value::String(c.clone()))).collect();
        conn.execute(
            "INSERT INTO veil_job_failures (job, row_key, code) SELECT $1, f.key, f.value \
             FROM jsonb_each_text($2::jsonb) AS f ON CONFLICT DO NOTHING",
            &[SqlValue::Text(job.id.clone()), SqlValue::Text(serde_json::Value::Object(map).to_string())],
        )
        .map_err(db_err)?;
    }
    let failed = failures.len() as i64;
    let updated = conn
        .query(
            "UPDATE veil_job_progress SET done = done + $2, failed = failed + $3 \
             WHERE job = $1 AND NOT cancelled RETURNING done",
            &[SqlValue::Text(job.id.clone()), SqlValue::Int(done), SqlValue::Int(failed)],
        )
        .map_err(db_err)?;
    if updated.is_empty() {
        return Err(OpError::JobCancelled);
    }
    Ok(Some((done, failed, failures)))
}

/// Rewraps the claimed tokens: grouped by subject, in batches of `max_batch`.
fn rewrap_rows(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    job: &Job,
    rows: &[Claimed],
) -> Result<Vec<Result<String, ItemError>>, OpError> {
    let mut out: Vec<Option<Result<String, ItemError>>> = vec![None; rows.len()];
    let mut groups: HashMap<Option<&str>, Vec<usize>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        match token::parse(&row.token) {
            Err(_) => out[i] = Some(Err(ItemError::INVALID_TOKEN)),
            Ok(p) if p.scheme.as_str() != job.scheme => out[i] = Some(Err(SCHEME_MISMATCH)),
            Ok(_) => groups.entry(row.subject.as_deref()).or_default().push(i),
        }
    }
    let max = ctx.config.limits.max_batch.max(1);
    for (subject, idx) in groups {
        for chunk in idx.chunks(max) {
            let tokens: Vec<&str> = chunk.iter().map(|&i| rows[i].token.as_str()).collect();
            match super::rewrap(ctx, who, &tokens, subject, job.context.as_deref()) {
                Ok(results) => {
                    for (&i, r) in chunk.iter().zip(results) {
                        out[i] = Some(r);
                    }
                }
                Err(OpError::InvalidField(_)) => {
                    for &i in chunk {
                        out[i] = Some(Err(ItemError::INVALID_SUBJECT));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out.into_iter().map(|r| r.unwrap_or(Err(ItemError::DECRYPTION_FAILED))).collect())
}

/// Nothing was left to claim: finished if no row still waits (other than failed ones), else
/// other steps hold the rest (`running`, nothing done by this step).
fn finish_or_wait(ctx: &mut Ctx<'_>, job: &Job, conn: &dyn SqlConn) -> Result<StepOutcome, OpError> {
    let sql = JobSql::new(job);
    let s = SqlValue::Text(job.scheme.clone());
    let v = SqlValue::Int(job.target_version);
    let j = SqlValue::Text(job.id.clone());
    let waiting =
        int_of(&conn.query(&sql.count_needing(false), &[s.clone(), v.clone(), j]).map_err(db_err)?)?;
    let (done, failed) = sync(ctx, job, conn, &[])?;
    if waiting > 0 {
        return Ok(StepOutcome { done: 0, failed: 0, remaining: waiting, state: JobState::Running });
    }
    let (_, _, cancelled) = progress(conn, &job.id)?;
    if cancelled {
        return Err(OpError::JobCancelled);
    }
    let below = int_of(&conn.query(&sql.count_needing(true), &[s, v]).map_err(db_err)?)?;
    let _ = (done, failed);
    ctx.store.finish_job(&job.tenant, &job.id, below, ctx.now)?;
    Ok(StepOutcome { done: 0, failed: 0, remaining: 0, state: JobState::Finished })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated_and_quoted() {
        assert!(check_ident("table", "orders", true).is_ok());
        assert!(check_ident("table", "sales.orders", true).is_ok());
        for bad in ["", "a.b.c", "x\"y", "a b", "1abc", "t;drop", "é", &"a".repeat(64)] {
            assert!(check_ident("table", bad, true).is_err(), "{bad}");
        }
        assert!(check_ident("key_column", "a.b", false).is_err());
        assert_eq!(quote("sales.orders"), "\"sales\".\"orders\"");
    }

    #[test]
    fn variable_names_and_the_allow_list() {
        use crate::vars::tests::MapVars;
        use crate::vars::Load;
        assert!(valid_variable_name("orders_db"));
        assert!(!valid_variable_name("postgres://x"));
        assert!(!valid_variable_name("Orders"));
        let s = Settings::load(&MapVars::default().with("job_databases", "orders_db, t1:hr_db")).expect("ok");
        assert!(s.allows("t9", "orders_db"));
        assert!(s.allows("t1", "hr_db"));
        assert!(!s.allows("t2", "hr_db"));
        assert!(!s.allows("t1", "database_url"));
        assert!(Settings::load(&MapVars::default().with("job_databases", "a-b")).is_err());
        assert!(!Settings::load(&MapVars::default()).expect("empty").allows("t", "x"));
    }

    #[test]
    fn job_ids() {
        assert!(valid_job_id("job_0123456789abcdef0123456789abcdef"));
        assert!(!valid_job_id("job_0123"));
        assert!(!valid_job_id("../v1/schemes"));
    }
}
