//! `spin:sqlite/sqlite@3.0.0` on rusqlite: one WAL-mode file per database, with a host-wide connection pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::OpenFlags;
use wasmtime::component::{HasData, Resource, ResourceTable};

use super::bindings::spin::sqlite::sqlite::{Error, Host, HostConnection, QueryResult, RowResult, Value};

/// How long a statement waits for another connection's lock before failing ("database is
/// locked"), in ms: `veil serve --sqlite-busy-timeout-ms`, one value for the process (see
/// [`busy_wait`]).
static BUSY_TIMEOUT_MS: AtomicU64 = AtomicU64::new(5_000);
/// The wait between lock attempts in [`busy_wait`].
const BUSY_POLL: Duration = Duration::from_millis(2);
/// Idle connections kept per database.
const MAX_IDLE: usize = 64;
/// Prepared statements cached per connection.
const STATEMENT_CACHE: usize = 64;

/// One database file and its idle connections.
pub struct Database {
    name: String,
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Database {
    /// Opens (creating if needed) the file, switches it to WAL and keeps the connection idle.
    pub fn open(name: &str, path: PathBuf) -> anyhow::Result<Arc<Self>> {
        let conn = open_connection(&path).map_err(|e| {
            anyhow::anyhow!("cannot open sqlite database `{name}` at {}: {e}", path.display())
        })?;
        Ok(Arc::new(Database { name: name.to_string(), path, idle: Mutex::new(vec![conn]) }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<rusqlite::Connection>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes an idle connection, or opens a new one on the blocking pool.
    async fn acquire(self: &Arc<Self>) -> Result<rusqlite::Connection, Error> {
        if let Some(conn) = self.idle().pop() {
            return Ok(conn);
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || open_connection(&path))
            .await
            .map_err(|e| Error::Io(e.to_string()))?
            .map_err(Error::Io)
    }

    /// Returns a connection to the pool, rolling back any transaction the guest left open.
    fn release(&self, conn: rusqlite::Connection) {
        if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// SQLite's own busy timeout backs off to 100 ms sleeps, so under contention a waiter keeps
/// losing the lock to newcomers (seen: 2-3 s tails with 32 writers). Polling every 2 ms up to
/// [`BUSY_TIMEOUT_MS`] keeps waits short and roughly fair.
fn busy_wait(attempts: i32) -> bool {
    let max_attempts = u128::from(BUSY_TIMEOUT_MS.load(Ordering::Relaxed)) / BUSY_POLL.as_millis();
    if u128::try_from(attempts).unwrap_or(u128::MAX) >= max_attempts {
        return false;
    }
    std::thread::sleep(BUSY_POLL);
    true
}

fn open_connection(path: &Path) -> Result<rusqlite::Connection, String> {
    open_wal(path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "could not switch to WAL journal mode".to_string())
}

fn open_wal(path: &Path) -> rusqlite::Result<Option<rusqlite::Connection>> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.busy_handler(Some(busy_wait))?;
    // WAL lets readers run beside one writer, across processes; the mode is stored in the file.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(None);
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(Some(conn))
}

/// The databases one component may open, by name (`sqlite_databases` in the manifest).
#[derive(Default)]
pub struct Databases {
    by_name: BTreeMap<String, Arc<Database>>,
}

impl Databases {
    /// Opens `<dir>/sqlite_<name>.db` for each name; a statement waits at most `busy_timeout`
    /// for another connection's (or process's) lock.
    pub fn open(dir: &Path, names: &[String], busy_timeout: Duration) -> anyhow::Result<Self> {
        BUSY_TIMEOUT_MS.store(u64::try_from(busy_timeout.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let mut by_name = BTreeMap::new();
        for name in names {
            let path = dir.join(format!("sqlite_{name}.db"));
            by_name.insert(name.clone(), Database::open(name, path)?);
        }
        Ok(Databases { by_name })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Database>> {
        self.by_name.values()
    }
}

/// A guest `connection` resource: one pooled rusqlite connection for the resource's lifetime.
pub struct Connection {
    db: Arc<Database>,
    /// `None` only while a statement runs on the blocking pool.
    conn: Option<rusqlite::Connection>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.db.release(conn);
        }
    }
}

/// The `HasData` marker for the sqlite interface.
pub struct Sqlite;

impl HasData for Sqlite {
    type Data<'a> = SqliteView<'a>;
}

/// What the sqlite interface needs from the store.
pub struct SqliteView<'a> {
    pub databases: &'a Databases,
    pub table: &'a mut ResourceTable,
}

fn sql_error(e: &rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, _) = e {
        if f.code == rusqlite::ErrorCode::DiskFull {
            return Error::DatabaseFull;
        }
    }
    Error::Io(e.to_string())
}

fn to_sql(v: Value) -> SqlValue {
    match v {
        Value::Integer(i) => SqlValue::Integer(i),
        Value::Real(f) => SqlValue::Real(f),
        Value::Text(s) => SqlValue::Text(s),
        Value::Blob(b) => SqlValue::Blob(b),
        Value::Null => SqlValue::Null,
    }
}

fn from_sql(v: ValueRef<'_>) -> Result<Value, Error> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec())
                .map_err(|_| Error::Io("a text value is not valid UTF-8".to_string()))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// Runs one statement and collects every row.
fn run(conn: &rusqlite::Connection, sql: &str, params: Vec<Value>) -> Result<QueryResult, Error> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| sql_error(&e))?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut rows =
        stmt.query(rusqlite::params_from_iter(params.into_iter().map(to_sql))).map_err(|e| sql_error(&e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
        let values = (0..columns.len())
            .map(|i| from_sql(row.get_ref(i).map_err(|e| sql_error(&e))?))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RowResult { values });
    }
    Ok(QueryResult { columns, rows: out })
}

/// One `SELECT` statement (no `;` that could start a second one): SQLite reads it from the
/// WAL snapshot without taking the write lock. Anything else counts as a write.
fn is_read_only(statement: &str) -> bool {
    let s = statement.trim_start();
    s.get(..6).is_some_and(|head| head.eq_ignore_ascii_case("select"))
        && !s.trim_end().trim_end_matches(';').contains(';')
}

impl Host for SqliteView<'_> {}

impl HostConnection for SqliteView<'_> {
    async fn open(&mut self, database: String) -> Result<Resource<Connection>, Error> {
        // Spin's order: permission first, then existence.
        let Some(db) = self.databases.by_name.get(&database) else {
            return Err(Error::AccessDenied);
        };
        let conn = db.acquire().await?;
        let resource = Connection { db: db.clone(), conn: Some(conn) };
        self.table.push(resource).map_err(|e| Error::Io(e.to_string()))
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> Result<QueryResult, Error> {
        let entry = self.table.get_mut(&connection).map_err(|_| Error::InvalidConnection)?;
        // A read in WAL mode neither waits for writers nor syncs: microseconds from the page
        // cache, cheaper inline than the two thread hand-offs of the blocking pool.
        if is_read_only(&statement) {
            let conn = entry.conn.as_ref().ok_or(Error::InvalidConnection)?;
            return run(conn, &statement, parameters);
        }
        let conn = entry.conn.take().ok_or(Error::InvalidConnection)?;
        // Writes block (lock waits, fsync): keep them off the async workers.
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = run(&conn, &statement, parameters);
            (conn, result)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))?;
        if let Ok(entry) = self.table.get_mut(&connection) {
            entry.conn = Some(conn);
        }
        result
    }

    fn last_insert_rowid(&mut self, connection: Resource<Connection>) -> i64 {
        self.table.get(&connection).ok().and_then(|c| c.conn.as_ref()).map_or(0, |c| c.last_insert_rowid())
    }

    fn changes(&mut self, connection: Resource<Connection>) -> u64 {
        self.table.get(&connection).ok().and_then(|c| c.conn.as_ref()).map_or(0, |c| c.changes())
    }

    fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        // Dropping the entry returns its rusqlite connection to the pool.
        self.table.delete(connection)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_selects_run_inline() {
        for read in ["SELECT 1", "  select * from t where a = ?1;", "SeLeCt x FROM y ;  "] {
            assert!(is_read_only(read), "{read}");
        }
        for write in [
            "INSERT INTO t VALUES (1)",
            "BEGIN IMMEDIATE",
            "SELECT 1; DELETE FROM t",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "sel",
            "",
        ] {
            assert!(!is_read_only(write), "{write}");
        }
    }

    #[test]
    fn values_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("veil-sqlite-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dbs = Databases::open(&dir, &["default".to_string()], Duration::from_secs(5)).unwrap();
        let db = dbs.iter().next().unwrap().clone();
        let conn = db.idle().pop().unwrap();
        run(&conn, "CREATE TABLE IF NOT EXISTS t (i INTEGER, r REAL, s TEXT, b BLOB, n)", vec![]).unwrap();
        run(&conn, "BEGIN IMMEDIATE", vec![]).unwrap();
        run(
            &conn,
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            vec![
                Value::Integer(-7),
                Value::Real(2.5),
                Value::Text("é".into()),
                Value::Blob(vec![0, 255]),
                Value::Null,
            ],
        )
        .unwrap();
        assert!(!conn.is_autocommit());
        db.release(conn);
        // The open transaction was rolled back when the connection went back to the pool.
        let conn = db.idle().pop().unwrap();
        assert!(conn.is_autocommit());
        let r = run(&conn, "SELECT COUNT(*) FROM t", vec![]).unwrap();
        assert!(matches!(r.rows[0].values[0], Value::Integer(0)));
        run(
            &conn,
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            vec![
                Value::Integer(-7),
                Value::Real(2.5),
                Value::Text("é".into()),
                Value::Blob(vec![0, 255]),
                Value::Null,
            ],
        )
        .unwrap();
        let r = run(&conn, "SELECT i, r, s, b, n FROM t", vec![]).unwrap();
        assert_eq!(r.columns, vec!["i", "r", "s", "b", "n"]);
        match r.rows[0].values.as_slice() {
            [Value::Integer(-7), Value::Real(f), Value::Text(s), Value::Blob(b), Value::Null] => {
                assert_eq!(*f, 2.5);
                assert_eq!(s, "é");
                assert_eq!(b, &vec![0, 255]);
            }
            other => panic!("unexpected row {other:?}"),
        }
        assert!(matches!(run(&conn, "SELEC 1", vec![]), Err(Error::Io(_))));
        assert!(matches!(run(&conn, "SELECT ?", vec![]), Err(Error::Io(_))));
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
