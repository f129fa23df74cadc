//! Bulk re-encryption jobs and their failed rows (migration 6). The job's definition and a copy
//! of its counters live here; the counters of record are in the customer database, written in the
//! same transaction as the rows (ops/jobs.rs). Every counter update here only raises a counter, so
//! copies made out of order, or again after a crash, never move a job backwards.

use super::sql::{Row, SqlError, SqlValue};
use super::{corrupt, Store, StoreError, SCHEMA_VERSION};
use crate::ids::TenantId;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Finished,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => JobState::Pending,
            "running" => JobState::Running,
            "finished" => JobState::Finished,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub tenant: TenantId,
    pub id: String,
    pub scheme: String,
    pub target_version: i64,
    /// The name of the Spin variable that holds the customer database's URL.
    pub database: String,
    pub table: String,
    pub key_column: String,
    pub token_column: String,
    pub subject_column: Option<String>,
    pub context: Option<String>,
    pub batch_size: i64,
    pub state: JobState,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    /// Set when the job finished: how many rows still held a token below the target then.
    pub rows_below_target: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

const JOB_COLUMNS: &str = "tenant, id, scheme, target_version, database_var, table_name, key_column, \
     token_column, subject_column, context, batch_size, state, total, done, failed, rows_below_target, \
     created_at, started_at, finished_at";

fn opt_text(v: &SqlValue) -> Option<String> {
    match v {
        SqlValue::Text(s) => Some(s.clone()),
        _ => None,
    }
}

fn opt_int(v: &SqlValue) -> Option<i64> {
    match v {
        SqlValue::Int(i) => Some(*i),
        _ => None,
    }
}

fn job_from_row(r: &[SqlValue]) -> Result<Job, StoreError> {
    let row = Row(r);
    let at = |i: usize| r.get(i).unwrap_or(&SqlValue::Null);
    Ok(Job {
        tenant: TenantId::parse(row.text(0)?).map_err(|_| corrupt("job tenant"))?,
        id: row.text(1)?.to_owned(),
        scheme: row.text(2)?.to_owned(),
        target_version: row.int(3)?,
        database: row.text(4)?.to_owned(),
        table: row.text(5)?.to_owned(),
        key_column: row.text(6)?.to_owned(),
        token_column: row.text(7)?.to_owned(),
        subject_column: opt_text(at(8)),
        context: opt_text(at(9)),
        batch_size: row.int(10)?,
        state: JobState::parse(row.text(11)?).ok_or_else(|| corrupt("job state"))?,
        total: row.int(12)?,
        done: row.int(13)?,
        failed: row.int(14)?,
        rows_below_target: opt_int(at(15)),
        created_at: row.int(16)?,
        started_at: opt_int(at(17)),
        finished_at: opt_int(at(18)),
    })
}

fn text_or_null(v: &Option<String>) -> SqlValue {
    v.as_ref().map_or(SqlValue::Null, |s| SqlValue::Text(s.clone()))
}

impl Store<'_> {
    /// Records a new job (state `pending`).
    pub fn create_job(&self, job: &Job) -> Result<(), StoreError> {
        let params = [
            SqlValue::Text(job.tenant.as_str().into()),
            SqlValue::Text(job.id.clone()),
            SqlValue::Text(job.scheme.clone()),
            SqlValue::Int(job.target_version),
            SqlValue::Text(job.database.clone()),
            SqlValue::Text(job.table.clone()),
            SqlValue::Text(job.key_column.clone()),
            SqlValue::Text(job.token_column.clone()),
            text_or_null(&job.subject_column),
            text_or_null(&job.context),
            SqlValue::Int(job.batch_size),
            SqlValue::Text(job.state.as_str().into()),
            SqlValue::Int(job.total),
            SqlValue::Int(job.created_at),
        ];
        self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "INSERT INTO jobs (tenant, id, scheme, target_version, database_var, table_name, \
                     key_column, token_column, subject_column, context, batch_size, state, total, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    &params,
                )?;
                Ok(())
            })
        })
        .map_err(|e| match e {
            StoreError::Conflict => StoreError::Exists,
            e => e,
        })
    }

    /// The tenant's job of this id.
    pub fn get_job(&self, tenant: &TenantId, id: &str) -> Result<Option<Job>, StoreError> {
        let rows = self.read(
            &format!("SELECT {JOB_COLUMNS}, {SCHEMA_VERSION} FROM jobs WHERE tenant = $1 AND id = $2"),
            &[SqlValue::Text(tenant.as_str().into()), SqlValue::Text(id.into())],
        )?;
        rows.first().map(|r| job_from_row(r)).transpose()
    }

    /// Copies the customer database's counters (and this step's failed rows) into the job: the
    /// counters only ever rise; a `pending` job becomes `running` (started now); a cancelled or
    /// finished job keeps its state.
    pub fn record_job_progress(
        &self,
        tenant: &TenantId,
        id: &str,
        done: i64,
        failed: i64,
        failures: &[(String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        let t = SqlValue::Text(tenant.as_str().into());
        let j = SqlValue::Text(id.into());
        self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "UPDATE jobs SET \
                     done = CASE WHEN done < $3 THEN $3 ELSE done END, \
                     failed = CASE WHEN failed < $4 THEN $4 ELSE failed END, \
                     started_at = COALESCE(started_at, $5), \
                     state = CASE WHEN state = 'pending' THEN 'running' ELSE state END \
                     WHERE tenant = $1 AND id = $2",
                    &[t.clone(), j.clone(), SqlValue::Int(done), SqlValue::Int(failed), SqlValue::Int(now)],
                )?;
                for (key, code) in failures {
                    self.conn.execute(
                        "INSERT INTO job_failures (tenant, job, row_key, code) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (tenant, job, row_key) DO NOTHING",
                        &[t.clone(), j.clone(), SqlValue::Text(key.clone()), SqlValue::Text(code.clone())],
                    )?;
                }
                Ok(())
            })
        })
    }

    /// Marks the job finished (unless cancelled), with the count of rows still below the target.
    pub fn finish_job(
        &self,
        tenant: &TenantId,
        id: &str,
        rows_below_target: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "UPDATE jobs SET state = 'finished', rows_below_target = $3, finished_at = $4, \
                     started_at = COALESCE(started_at, $4) \
                     WHERE tenant = $1 AND id = $2 AND state IN ('pending', 'running')",
                    &[
                        SqlValue::Text(tenant.as_str().into()),
                        SqlValue::Text(id.into()),
                        SqlValue::Int(rows_below_target),
                        SqlValue::Int(now),
                    ],
                )?;
                Ok(())
            })
        })
    }

    /// Marks the job cancelled unless it finished; returns its state afterwards.
    pub fn cancel_job(&self, tenant: &TenantId, id: &str, now: i64) -> Result<(), StoreError> {
        self.with_schema(|| {
            self.transaction(|| {
                self.conn.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = $3 \
                     WHERE tenant = $1 AND id = $2 AND state IN ('pending', 'running')",
                    &[SqlValue::Text(tenant.as_str().into()), SqlValue::Text(id.into()), SqlValue::Int(now)],
                )?;
                Ok(())
            })
        })
    }

    /// The job's failed rows in key order, after `after` (a row key), at most `limit`.
    pub fn job_failures(
        &self,
        tenant: &TenantId,
        id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.read(
            &format!(
                "SELECT row_key, code, {SCHEMA_VERSION} FROM job_failures \
                 WHERE tenant = $1 AND job = $2 AND row_key > $3 ORDER BY row_key LIMIT $4"
            ),
            &[
                SqlValue::Text(tenant.as_str().into()),
                SqlValue::Text(id.into()),
                SqlValue::Text(after.unwrap_or("").into()),
                SqlValue::Int(limit),
            ],
        )?;
        rows.iter()
            .map(|r| {
                let r = Row(r);
                Ok((r.text(0)?.to_owned(), r.text(1)?.to_owned()))
            })
            .collect::<Result<_, SqlError>>()
            .map_err(StoreError::from)
    }
}
