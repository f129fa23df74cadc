//! `spin:sqlite/sqlite@3.0.0` on rusqlite: one WAL-mode file per database, with a host-wide
//! connection pool and group commit.
//!
//! Durability (docs/storage.md, "Durability"): a statement that commits (a `COMMIT`, or a write
//! outside a transaction) answers only once its commit is on disk, as with SQLite's
//! `synchronous=FULL`. The commit itself runs with `synchronous=NORMAL`, which releases the write
//! lock without syncing, and the host then syncs the write-ahead log once for every commit that
//! finished meanwhile ([`GroupSync`]): concurrent requests share one `fsync` instead of queueing
//! for the write lock one `fsync` each.

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
    sync: GroupSync,
}

/// Group commit: makes the commits of concurrent connections durable with one `fsync` of the
/// write-ahead log between them. A committer takes a ticket after its commit; it is durable once
/// a sync that started after the ticket was taken has finished. One sync runs at a time; whoever
/// finds none running starts the next, covering every ticket taken so far.
struct GroupSync {
    wal: PathBuf,
    db: PathBuf,
    tickets: AtomicU64,
    running: std::sync::atomic::AtomicBool,
    /// The highest ticket made durable (changed, or only notified after a failed sync).
    done: tokio::sync::watch::Sender<u64>,
}

impl GroupSync {
    fn new(db: &Path) -> Self {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        GroupSync {
            wal: PathBuf::from(wal),
            db: db.to_path_buf(),
            tickets: AtomicU64::new(0),
            running: std::sync::atomic::AtomicBool::new(false),
            done: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Returns once every commit made before the call is on disk.
    async fn durable(&self) -> Result<(), Error> {
        let mine = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.done.subscribe();
        loop {
            if *done.borrow_and_update() >= mine {
                return Ok(());
            }
            if !self.running.swap(true, Ordering::SeqCst) {
                let covered = self.tickets.load(Ordering::SeqCst);
                let (wal, db) = (self.wal.clone(), self.db.clone());
                let synced = tokio::task::spawn_blocking(move || sync_files(&wal, &db)).await;
                // `running` first, then the news: a waiter that saw it still running is woken.
                self.running.store(false, Ordering::SeqCst);
                match synced {
                    Ok(Ok(())) => self.done.send_modify(|d| *d = (*d).max(covered)),
                    Ok(Err(e)) => {
                        self.done.send_modify(|_| {});
                        return Err(Error::Io(format!("syncing the database to disk: {e}")));
                    }
                    Err(e) => {
                        self.done.send_modify(|_| {});
                        return Err(Error::Io(e.to_string()));
                    }
                }
                continue;
            }
            if done.changed().await.is_err() {
                return Err(Error::Io("group commit stopped".to_string()));
            }
        }
    }
}

/// Syncs the write-ahead log (where commits are), or the database file when there is no log
/// (everything checkpointed: SQLite syncs the database at each checkpoint with `NORMAL`).
fn sync_files(wal: &Path, db: &Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::File::open(db)?.sync_data(),
        Err(e) => Err(e),
    }
}

impl Database {
    /// Opens (creating if needed) the file, switches it to WAL and keeps the connection idle.
    pub fn open(name: &str, path: PathBuf) -> anyhow::Result<Arc<Self>> {
        let conn = open_connection(&path).map_err(|e| {
            anyhow::anyhow!("cannot open sqlite database `{name}` at {}: {e}", path.display())
        })?;
        let sync = GroupSync::new(&path);
        Ok(Arc::new(Database { name: name.to_string(), path, idle: Mutex::new(vec![conn]), sync }))
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
    // Commits release the write lock without syncing; the host syncs them, grouped, before it
    // answers them (`GroupSync`).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
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
    /// Statements run, for `--debug-host-calls`.
    pub statements: &'a std::sync::atomic::AtomicU32,
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

/// Whether a statement's first word is `word` (ASCII, any case).
fn starts_with_word(statement: &str, word: &str) -> bool {
    let head: String = statement.trim_start().chars().take_while(char::is_ascii_alphabetic).collect();
    head.eq_ignore_ascii_case(word)
}

/// Whether a statement ends a transaction (and so commits): `COMMIT`, `END`, or a `RELEASE`
/// (which commits when its savepoint opened the transaction).
fn ends_transaction(statement: &str) -> bool {
    ["COMMIT", "END", "RELEASE"].iter().any(|w| starts_with_word(statement, w))
}

/// Whether the connection's transaction holds the database's write lock (after `BEGIN IMMEDIATE`
/// or a first write): its next statements neither wait for another connection's lock nor sync,
/// until the one that ends it.
fn holds_write_lock(conn: &rusqlite::Connection) -> bool {
    !conn.is_autocommit()
        && matches!(conn.transaction_state(None::<&str>), Ok(rusqlite::TransactionState::Write))
}

/// Whether a statement runs on the async worker rather than the blocking pool: a read (WAL:
/// no lock wait, no sync), or any statement but the last inside a transaction that already holds
/// the write lock (it can wait for no lock and syncs nothing). The write lock is the one thing all
/// writers queue for, so the statements it covers should not each wait for a thread of the
/// blocking pool while the other writers wait for them: an audit append holds it for five
/// statements (docs/audit.md, "Cost").
fn runs_inline(conn: &rusqlite::Connection, statement: &str) -> bool {
    is_read_only(statement) || (holds_write_lock(conn) && !ends_transaction(statement))
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
        self.statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = self.table.get_mut(&connection).map_err(|_| Error::InvalidConnection)?;
        // A read in WAL mode neither waits for writers nor syncs: microseconds from the page
        // cache, cheaper inline than the two thread hand-offs of the blocking pool.
        let conn = entry.conn.as_ref().ok_or(Error::InvalidConnection)?;
        if runs_inline(conn, &statement) {
            return run(conn, &statement, parameters);
        }
        let db = entry.db.clone();
        let conn = entry.conn.take().ok_or(Error::InvalidConnection)?;
        let rolls_back = starts_with_word(&statement, "ROLLBACK");
        // Writes block (lock waits, checkpoints): keep them off the async workers.
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = run(&conn, &statement, parameters);
            (conn, result)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))?;
        // It committed (a COMMIT, or a write outside a transaction): answered once on disk.
        let committed = result.is_ok() && conn.is_autocommit() && !rolls_back;
        if let Ok(entry) = self.table.get_mut(&connection) {
            entry.conn = Some(conn);
        }
        if committed {
            db.sync.durable().await?;
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
