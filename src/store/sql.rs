//! The narrow SQL seam the store is written against: a connection that runs one statement with
//! positional parameters (`$1`, `$2`, … in our SQL), implemented over `spin:sqlite` in the
//! component (and `spin:postgres` later); an in-process implementation can back unit tests.

use std::fmt;

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Failures of the database, classified so the store can react (retry, migrate, 409, 503).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqlError {
    /// The database could not be reached or is busy beyond its timeout.
    Unavailable(String),
    /// A uniqueness or key constraint rejected the write.
    Constraint(String),
    /// A table or column is missing: migrations have not run yet.
    SchemaMissing(String),
    /// `veil_migrations` records this schema version, newer than the build knows.
    SchemaTooNew(i64),
    /// Anything else (a bug in our SQL, a corrupt file, …).
    Other(String),
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlError::Unavailable(m) => write!(f, "database unavailable: {m}"),
            SqlError::Constraint(m) => write!(f, "constraint violated: {m}"),
            SqlError::SchemaMissing(m) => write!(f, "schema missing: {m}"),
            SqlError::SchemaTooNew(v) => {
                write!(f, "the database has schema version {v}, newer than this build")
            }
            SqlError::Other(m) => write!(f, "database error: {m}"),
        }
    }
}

/// SQL dialects differ in a few statements only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The statement that opens a write transaction. SQLite takes the write lock up front
    /// (`IMMEDIATE`) so two writers queue instead of failing on lock upgrade.
    pub fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// The clause that locks the rows a read inside a transaction returns (PostgreSQL); SQLite's
    /// `BEGIN IMMEDIATE` already holds the database's write lock.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// One database connection, used by one request.
pub trait SqlConn {
    fn dialect(&self) -> Dialect;
    /// Runs a statement and returns its rows (empty for writes).
    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError>;
    /// Runs a write and returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError>;
}

/// Rows decoded column by column with clear errors instead of panics.
pub struct Row<'a>(pub &'a [SqlValue]);

impl Row<'_> {
    fn at(&self, i: usize) -> Result<&SqlValue, SqlError> {
        self.0.get(i).ok_or_else(|| SqlError::Other(format!("column {i} missing")))
    }
    pub fn int(&self, i: usize) -> Result<i64, SqlError> {
        match self.at(i)? {
            SqlValue::Int(v) => Ok(*v),
            other => Err(SqlError::Other(format!("column {i}: expected integer, got {}", kind(other)))),
        }
    }
    pub fn text(&self, i: usize) -> Result<&str, SqlError> {
        match self.at(i)? {
            SqlValue::Text(v) => Ok(v),
            other => Err(SqlError::Other(format!("column {i}: expected text, got {}", kind(other)))),
        }
    }
    pub fn blob(&self, i: usize) -> Result<&[u8], SqlError> {
        match self.at(i)? {
            SqlValue::Blob(v) => Ok(v),
            other => Err(SqlError::Other(format!("column {i}: expected blob, got {}", kind(other)))),
        }
    }
}

fn kind(v: &SqlValue) -> &'static str {
    match v {
        SqlValue::Null => "null",
        SqlValue::Int(_) => "integer",
        SqlValue::Text(_) => "text",
        SqlValue::Blob(_) => "blob",
    }
}

/// Rewrites `$1`, `$2`, … (PostgreSQL style, what our SQL uses) into SQLite's `?1`, `?2`, …,
/// leaving quoted strings alone.
pub fn dollar_to_question(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_quote = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_quote = !in_quote;
        }
        if c == '$' && !in_quote && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(
            dollar_to_question("SELECT a FROM t WHERE x = $1 AND y = '$2' AND z = $10"),
            "SELECT a FROM t WHERE x = ?1 AND y = '$2' AND z = ?10"
        );
    }
}
