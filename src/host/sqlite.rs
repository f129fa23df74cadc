//! `spin:sqlite` behind the store's SQL seam; the connection opens on first use.

use std::cell::OnceCell;

use spin_sdk::sqlite3::{Connection, Error, Value};

use crate::store::sql::{dollar_to_question, Dialect, SqlConn, SqlError, SqlValue};

/// The database `default`, opened when the first statement needs it.
#[derive(Default)]
pub(crate) struct LazySqlite {
    conn: OnceCell<Connection>,
}

impl LazySqlite {
    fn conn(&self) -> Result<&Connection, SqlError> {
        if let Some(c) = self.conn.get() {
            return Ok(c);
        }
        let c = Connection::open("default").map_err(classify)?;
        Ok(self.conn.get_or_init(|| c))
    }
}

fn classify(e: Error) -> SqlError {
    match e {
        Error::Io(m) => {
            if m.contains("no such table") || m.contains("no such column") {
                SqlError::SchemaMissing(m)
            } else if m.contains("constraint failed") {
                SqlError::Constraint(m)
            } else if m.contains("database is locked") || m.contains("busy") {
                SqlError::Unavailable(m)
            } else {
                SqlError::Other(m)
            }
        }
        Error::DatabaseFull => SqlError::Unavailable("database full".into()),
        Error::NoSuchDatabase => SqlError::Other("the host has no database named default".into()),
        Error::AccessDenied => {
            SqlError::Other("the manifest does not grant the database default (sqlite_databases)".into())
        }
        Error::InvalidConnection => SqlError::Unavailable("invalid connection".into()),
    }
}

fn to_value(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Int(i) => Value::Integer(*i),
        SqlValue::Text(s) => Value::Text(s.clone()),
        SqlValue::Blob(b) => Value::Blob(b.clone()),
    }
}

fn from_value(v: Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Int(i),
        Value::Real(r) => SqlValue::Text(r.to_string()),
        Value::Text(s) => SqlValue::Text(s),
        Value::Blob(b) => SqlValue::Blob(b),
    }
}

impl SqlConn for LazySqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        let params: Vec<Value> = params.iter().map(to_value).collect();
        let result = self.conn()?.execute(&dollar_to_question(sql), &params).map_err(classify)?;
        Ok(result.rows.into_iter().map(|r| r.values.into_iter().map(from_value).collect()).collect())
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
        self.query(sql, params)?;
        Ok(self.conn()?.changes())
    }
}
