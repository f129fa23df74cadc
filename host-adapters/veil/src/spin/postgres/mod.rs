//! `spin:postgres/postgres@4.0.0` on tokio-postgres, with a connection pool shared by all instances.
//!
//! A guest `connection` keeps one pooled client for its lifetime, so `BEGIN … COMMIT` over several
//! calls works. Every failure is an `error` value, never a trap: server errors carry their
//! SQLSTATE (`query-failed(db-error)`), a lost connection is `query-failed(text("connection
//! closed: …"))`. A client that went stale in the pool (the server restarted, or the backend was
//! terminated) is replaced transparently, once, if it fails before anything ran on the resource.

pub mod pool;
pub mod tls;
pub mod types;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use wasmtime::component::{HasData, Resource, ResourceTable};

use super::bindings::spin::postgres::postgres::{
    Column, DbError, Error, Host, HostConnection, ParameterValue, QueryError, RowSet,
};
use crate::outbound::AllowedHosts;
use pool::{chain, Lease, TxnEffect};
pub use pool::{PgSettings, Pools};
use types::{decode_value, encode_param, RawValue};

/// A guest `connection` resource.
pub type Connection = Lease;

/// The `HasData` marker for the postgres interface.
pub struct Postgres;

impl HasData for Postgres {
    type Data<'a> = PgView<'a>;
}

/// What the postgres interface needs from the store.
pub struct PgView<'a> {
    pub pools: &'a Pools,
    pub allowed: &'a AllowedHosts,
    pub table: &'a mut ResourceTable,
    /// Statements run, for `--debug-host-calls`.
    pub statements: &'a std::sync::atomic::AtomicU32,
}

fn is_io(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether `e` means the connection was already gone when the statement was sent.
fn is_stale(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || is_io(e)
        || e.code().is_some_and(|c| *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN)
}

/// Converts a tokio-postgres error into the interface's error value.
fn pg_error(e: &tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let mut extras = Vec::new();
        let mut extra = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                extras.push((k.to_string(), v));
            }
        };
        extra("hint", db.hint().map(str::to_string));
        match db.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => extra("position", Some(p.to_string())),
            Some(tokio_postgres::error::ErrorPosition::Internal { position, query }) => {
                extra("internal_position", Some(position.to_string()));
                extra("internal_query", Some(query.clone()));
            }
            None => {}
        }
        extra("where", db.where_().map(str::to_string));
        extra("schema", db.schema().map(str::to_string));
        extra("table", db.table().map(str::to_string));
        extra("column", db.column().map(str::to_string));
        extra("datatype", db.datatype().map(str::to_string));
        extra("constraint", db.constraint().map(str::to_string));
        extra("file", db.file().map(str::to_string));
        extra("line", db.line().map(|l| l.to_string()));
        extra("routine", db.routine().map(str::to_string));
        return Error::QueryFailed(QueryError::DbError(DbError {
            as_text: format!("db error: {db}"),
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            extras,
        }));
    }
    if e.is_closed() {
        return Error::QueryFailed(QueryError::Text(
            "connection closed: the server connection was lost".into(),
        ));
    }
    if is_io(e) {
        return Error::QueryFailed(QueryError::Text(format!("connection closed: {}", chain(e))));
    }
    Error::QueryFailed(QueryError::Text(chain(e)))
}

/// What one statement produced.
enum Output {
    Rows(RowSet),
    Count(u64),
}

/// Why one attempt failed.
enum Failure {
    /// The server or the connection (the statement may have been prepared, nothing ran).
    Pg(tokio_postgres::Error),
    /// A parameter does not fit its placeholder: nothing was sent for execution.
    Param(String),
    /// The statement ran but a result value could not be converted.
    Decode(String),
    /// The lease lost its client (a reconnection failed earlier).
    Gone,
}

/// Prepares (or reuses) `sql`, binds the parameters for the inferred types, and runs it.
async fn attempt(
    lease: &mut Lease,
    sql: &str,
    params: &[ParameterValue],
    want_rows: bool,
) -> Result<Output, Failure> {
    let Some(pooled) = lease.client() else {
        return Err(Failure::Gone);
    };
    let statement = match pooled.cached(sql) {
        Some(s) => s,
        None => {
            let s = pooled.client.prepare(sql).await.map_err(Failure::Pg)?;
            if pool::cacheable(sql) {
                pooled.cache(sql, s.clone());
            }
            s
        }
    };
    let types = statement.params();
    if types.len() != params.len() {
        return Err(Failure::Param(format!(
            "the statement has {} parameters but {} values were given",
            types.len(),
            params.len()
        )));
    }
    let encoded = params
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (v, ty))| encode_param(i + 1, v, ty))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Param)?;
    let refs: Vec<&(dyn ToSql + Sync)> = encoded.iter().map(|e| e as &(dyn ToSql + Sync)).collect();
    if !want_rows {
        return pooled.client.execute(&statement, &refs).await.map(Output::Count).map_err(Failure::Pg);
    }
    let rows = pooled.client.query(&statement, &refs).await.map_err(Failure::Pg)?;
    let columns: Vec<Column> = statement
        .columns()
        .iter()
        .map(|c| Column { name: c.name().to_string(), data_type: types::data_type(c.type_()) })
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, column) in row.columns().iter().enumerate() {
            let raw: RawValue<'_> = row.try_get(i).map_err(|e| Failure::Decode(chain(&e)))?;
            let value = decode_value(column.type_(), raw.0)
                .map_err(|e| Failure::Decode(format!("column `{}`: {e}", column.name())))?;
            values.push(value);
        }
        out.push(values);
    }
    Ok(Output::Rows(RowSet { columns, rows: out }))
}

/// Runs one statement on a lease: tracks the transaction state, and replaces a client that went
/// stale in the pool if the resource's first statement finds it closed.
async fn run(
    lease: &mut Lease,
    sql: &str,
    params: &[ParameterValue],
    want_rows: bool,
) -> Result<Output, Error> {
    let effect = pool::txn_effect(sql);
    let first = lease.statements == 0;
    lease.statements += 1;
    let mut retried = false;
    loop {
        lease.busy = true;
        let result = attempt(lease, sql, params, want_rows).await;
        lease.busy = false;
        let error = match result {
            Ok(output) => {
                match effect {
                    TxnEffect::Begin => lease.in_txn = true,
                    TxnEffect::End => lease.in_txn = false,
                    TxnEffect::None => {}
                }
                return Ok(output);
            }
            Err(Failure::Param(message)) => return Err(Error::BadParameter(message)),
            Err(Failure::Decode(message)) => {
                if effect == TxnEffect::Begin {
                    lease.in_txn = true;
                }
                return Err(Error::ValueConversionFailed(message));
            }
            Err(Failure::Gone) => {
                return Err(Error::QueryFailed(QueryError::Text(
                    "connection closed: the connection could not be re-established".to_string(),
                )))
            }
            Err(Failure::Pg(e)) => e,
        };
        if first && !retried && lease.reused && is_stale(&error) {
            // Nothing ran on this resource yet: a fresh connection is as good as the stale one.
            retried = true;
            lease.reconnect().await.map_err(Error::ConnectionFailed)?;
            continue;
        }
        // A prepared statement the server no longer recognises (its table changed under it, or
        // the guest ran DEALLOCATE): forget it and, outside a transaction, prepare it again.
        let invalid_plan = error.as_db_error().is_some_and(|db| {
            *db.code() == SqlState::INVALID_SQL_STATEMENT_NAME
                || (*db.code() == SqlState::FEATURE_NOT_SUPPORTED && db.message().starts_with("cached plan"))
        });
        if invalid_plan {
            if let Some(pooled) = lease.client() {
                if pooled.cached(sql).is_some() {
                    pooled.evict(sql);
                    if !retried && !lease.in_txn {
                        retried = true;
                        continue;
                    }
                }
            }
        }
        if effect == TxnEffect::Begin {
            // Conservative: a spurious ROLLBACK on return is harmless, a missing one is not.
            lease.in_txn = true;
        }
        return Err(pg_error(&error));
    }
}

impl Host for PgView<'_> {}

impl HostConnection for PgView<'_> {
    async fn open(&mut self, address: String) -> Result<Resource<Connection>, Error> {
        let pool = self.pools.pool(&address, self.allowed).map_err(Error::ConnectionFailed)?;
        let lease = pool.acquire().await.map_err(Error::ConnectionFailed)?;
        self.table.push(lease).map_err(|e| Error::Other(e.to_string()))
    }

    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<RowSet, Error> {
        self.statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lease = self.table.get_mut(&connection).map_err(|e| Error::Other(e.to_string()))?;
        match run(lease, &statement, &params, true).await? {
            Output::Rows(rows) => Ok(rows),
            Output::Count(_) => Ok(RowSet { columns: Vec::new(), rows: Vec::new() }),
        }
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<u64, Error> {
        self.statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lease = self.table.get_mut(&connection).map_err(|e| Error::Other(e.to_string()))?;
        match run(lease, &statement, &params, false).await? {
            Output::Count(n) => Ok(n),
            Output::Rows(rows) => Ok(u64::try_from(rows.rows.len()).unwrap_or(u64::MAX)),
        }
    }

    fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        // Dropping the lease returns its client to the pool (after a ROLLBACK if needed).
        self.table.delete(connection)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
