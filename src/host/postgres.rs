//! `spin:postgres@4.0.0` behind the store's SQL seam; the connection opens on first use.
//! Failures are classified by SQLSTATE: missing schema (42P01, 42703) → migrate, constraint
//! violations (23xxx) → conflict, connection, shutdown, resource and lock-timeout errors
//! (08xxx, 57xxx, 53xxx, 55P03) → 503.

use std::cell::OnceCell;

use spin_sdk::pg4::{Connection, DbValue, ParameterValue, PgError, QueryError};
use zeroize::Zeroizing;

use crate::store::sql::{Dialect, SqlConn, SqlError, SqlValue};

pub(crate) struct LazyPostgres {
    url: Zeroizing<String>,
    conn: OnceCell<Connection>,
}

impl LazyPostgres {
    pub(crate) fn new(url: Zeroizing<String>) -> Self {
        LazyPostgres { url, conn: OnceCell::new() }
    }

    fn conn(&self) -> Result<&Connection, SqlError> {
        if let Some(c) = self.conn.get() {
            return Ok(c);
        }
        let c = Connection::open(&self.url).map_err(classify)?;
        Ok(self.conn.get_or_init(|| c))
    }
}

fn classify(e: PgError) -> SqlError {
    match e {
        PgError::ConnectionFailed(m) => SqlError::Unavailable(m),
        PgError::QueryFailed(QueryError::DbError(db)) => {
            let m = format!("{} {}", db.code, db.message);
            match db.code.as_str() {
                "42P01" | "42703" => SqlError::SchemaMissing(m),
                c if c.starts_with("23") => SqlError::Constraint(m),
                // serialization failure / deadlock: the caller may retry like a lost race
                "40001" | "40P01" => SqlError::Constraint(m),
                c if c.starts_with("08") || c.starts_with("57") || c.starts_with("53") || c == "55P03" => {
                    SqlError::Unavailable(m)
                }
                _ => SqlError::Other(m),
            }
        }
        // The host reports a lost connection as text (no SQLSTATE).
        PgError::QueryFailed(QueryError::Text(m)) => SqlError::Unavailable(m),
        PgError::BadParameter(m) | PgError::ValueConversionFailed(m) | PgError::Other(m) => {
            SqlError::Other(m)
        }
    }
}

fn to_param(v: &SqlValue) -> ParameterValue {
    match v {
        SqlValue::Null => ParameterValue::DbNull,
        SqlValue::Int(i) => ParameterValue::Int64(*i),
        SqlValue::Text(s) => ParameterValue::Str(s.clone()),
        SqlValue::Blob(b) => ParameterValue::Binary(b.clone()),
    }
}

fn from_db(v: DbValue) -> SqlValue {
    match v {
        DbValue::DbNull => SqlValue::Null,
        DbValue::Boolean(b) => SqlValue::Int(i64::from(b)),
        DbValue::Int8(i) => SqlValue::Int(i.into()),
        DbValue::Int16(i) => SqlValue::Int(i.into()),
        DbValue::Int32(i) => SqlValue::Int(i.into()),
        DbValue::Int64(i) => SqlValue::Int(i),
        DbValue::Str(s) => SqlValue::Text(s),
        DbValue::Binary(b) => SqlValue::Blob(b),
        _ => SqlValue::Null,
    }
}

impl SqlConn for LazyPostgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        let params: Vec<ParameterValue> = params.iter().map(to_param).collect();
        let set = self.conn()?.query(sql, &params).map_err(classify)?;
        Ok(set.rows.into_iter().map(|r| r.into_iter().map(from_db).collect()).collect())
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
        let params: Vec<ParameterValue> = params.iter().map(to_param).collect();
        self.conn()?.execute(sql, &params).map_err(classify)
    }
}
