//! `spin:sqlite/sqlite@3.0.0` on rusqlite: one WAL-mode file per database, with a host-wide
//! connection pool and group commit.
//!
//! Durability (docs/storage.md, "Durability"): a statement that commits (a `COMMIT`, or a write
//! outside a transaction) answers only once its commit is on disk, as with SQLite's
//! `synchronous=FULL`. The commit itself runs with `synchronous=NORMAL`, which releases the write
//! lock without syncing, and the host then syncs the write-ahead log once for every commit that
//! finished meanwhile ([`GroupSync`]): concurrent requests share one `fsync` instead of queueing
//! for the write lock one `fsync` each.
//!
//! Writers' queue ([`WriterQueue`], docs/storage.md, "SQLite concurrency"): a connection about to
//! take SQLite's write lock (its first statement that is not a plain `SELECT`, outside a
//! transaction) first waits its turn in an in-process FIFO per database file, and is woken the
//! moment the previous writer's transaction ends, instead of polling in SQLite's busy handler.
//! The busy handler stays, for other processes on the same file (a second `veil serve`, `veil
//! job`): correctness never depends on the queue.

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
/// Statements that had to wait in a [`WriterQueue`] (another connection of this process held
/// the write lock), and calls of SQLite's busy handler that slept ([`busy_wait`]): process-wide,
/// printed at exit with `VEIL_DEBUG_SQLITE_COUNTS=1` (tests and the audit-cost measurement).
static QUEUE_WAITS: AtomicU64 = AtomicU64::new(0);
static BUSY_SLEEPS: AtomicU64 = AtomicU64::new(0);
static SYNCS: AtomicU64 = AtomicU64::new(0);
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
    writers: WriterQueue,
}

/// The writers' queue of one database file: one permit, the right to take SQLite's write lock,
/// handed over first come, first served (tokio's semaphore is fair). A connection holds its
/// permit from the statement that starts its write transaction (or its lone write) until the
/// transaction has ended, and gives it back when it is returned to the pool or dropped, after
/// the rollback of a transaction left open ([`Connection`]'s fields drop after that rollback).
/// `None` when turned off (`VEIL_DEBUG_NO_WRITER_QUEUE=1`, the A/B switch): writers then wait in
/// SQLite's busy handler only, as before.
struct WriterQueue(Option<Arc<tokio::sync::Semaphore>>);

impl WriterQueue {
    fn new() -> Self {
        let off = std::env::var("VEIL_DEBUG_NO_WRITER_QUEUE").is_ok_and(|v| v.trim() == "1");
        WriterQueue((!off).then(|| Arc::new(tokio::sync::Semaphore::new(1))))
    }

    /// Waits for this file's write turn, at most the busy timeout; past it, the error SQLite's
    /// busy handler gives ("database is locked").
    async fn turn(&self) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Error> {
        let Some(queue) = &self.0 else { return Ok(None) };
        if let Ok(permit) = queue.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        QUEUE_WAITS.fetch_add(1, Ordering::Relaxed);
        let timeout = Duration::from_millis(BUSY_TIMEOUT_MS.load(Ordering::Relaxed));
        match tokio::time::timeout(timeout, queue.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Ok(Err(_)) => Err(Error::Io("the writers' queue is closed".to_string())),
            Err(_) => Err(Error::Io("database is locked".to_string())),
        }
    }
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
                SYNCS.fetch_add(1, Ordering::Relaxed);
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
        Ok(Arc::new(Database {
            name: name.to_string(),
            path,
            idle: Mutex::new(vec![conn]),
            sync,
            writers: WriterQueue::new(),
        }))
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
/// With the writers' queue, a connection of this process only gets here when another process
/// holds the lock (or during a checkpoint or WAL recovery).
fn busy_wait(attempts: i32) -> bool {
    let max_attempts = u128::from(BUSY_TIMEOUT_MS.load(Ordering::Relaxed)) / BUSY_POLL.as_millis();
    if u128::try_from(attempts).unwrap_or(u128::MAX) >= max_attempts {
        return false;
    }
    BUSY_SLEEPS.fetch_add(1, Ordering::Relaxed);
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

impl Drop for Databases {
    fn drop(&mut self) {
        if std::env::var("VEIL_DEBUG_SQLITE_COUNTS").is_ok_and(|v| v.trim() == "1") {
            eprintln!(
                "veil: sqlite: {} queued writes, {} busy-handler sleeps, {} syncs",
                QUEUE_WAITS.load(Ordering::Relaxed),
                BUSY_SLEEPS.load(Ordering::Relaxed),
                SYNCS.load(Ordering::Relaxed)
            );
        }
    }
}

/// A guest `connection` resource: one pooled rusqlite connection for the resource's lifetime.
pub struct Connection {
    db: Arc<Database>,
    /// `None` only while a statement runs on the blocking pool.
    conn: Option<rusqlite::Connection>,
    /// This connection's turn in its database's [`WriterQueue`], held while its write
    /// transaction is open. Declared (so dropped) after `conn`'s rollback in [`Drop`].
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.db.release(conn);
        }
        // `turn` is dropped now, after the rollback: the next writer finds the lock free.
    }
}

/// A connection's turn in the writers' queue, while a statement runs on the blocking pool: if
/// the statement's future is dropped (the guest trapped or ran out of time), the blocking task
/// still owns the connection and the turn, and ends the transaction before the turn goes back.
struct InFlight {
    conn: rusqlite::Connection,
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl InFlight {
    /// Ends a transaction left open by a statement whose caller is gone, then frees the turn.
    fn abandon(self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        drop(self.turn);
    }
}

/// Whether a statement on this connection needs the write turn first: anything but a plain
/// `SELECT`, when the connection has no turn yet (outside a transaction: a `BEGIN`, or a write
/// that is its own transaction). Not a statement that could only end a transaction: with none
/// open (the turn is held while one is) it takes no lock, and a `ROLLBACK` after a failed `BEGIN`
/// must not wait.
fn needs_turn(entry: &Connection, statement: &str) -> bool {
    entry.turn.is_none()
        && entry.db.writers.0.is_some()
        && !is_read_only(statement)
        && !ends_transaction(statement)
        && !starts_with_word(statement, "ROLLBACK")
}

/// After a statement: a connection whose transaction has ended gives its turn back.
fn settle_turn(entry: &mut Connection) {
    if entry.conn.as_ref().is_some_and(rusqlite::Connection::is_autocommit) {
        entry.turn = None;
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
/// blocking pool while the other writers wait for them: an audit append holds it for several
/// statements (docs/audit.md, "Cost").
fn runs_inline(conn: &rusqlite::Connection, statement: &str) -> bool {
    is_read_only(statement) || (holds_write_lock(conn) && !ends_transaction(statement))
}

/// A connection and its turn on their way back from the blocking pool; abandoned
/// ([`InFlight::abandon`]) if dropped before the caller took them.
struct Returned(Option<InFlight>);

impl Drop for Returned {
    fn drop(&mut self) {
        if let Some(flight) = self.0.take() {
            flight.abandon();
        }
    }
}

impl Host for SqliteView<'_> {}

impl HostConnection for SqliteView<'_> {
    async fn open(&mut self, database: String) -> Result<Resource<Connection>, Error> {
        // Spin's order: permission first, then existence.
        let Some(db) = self.databases.by_name.get(&database) else {
            return Err(Error::AccessDenied);
        };
        let conn = db.acquire().await?;
        let resource = Connection { db: db.clone(), conn: Some(conn), turn: None };
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
        if entry.conn.is_none() {
            return Err(Error::InvalidConnection);
        }
        if needs_turn(entry, &statement) {
            let turn = entry.db.writers.turn().await?;
            let entry = self.table.get_mut(&connection).map_err(|_| Error::InvalidConnection)?;
            entry.turn = turn;
        }
        let entry = self.table.get_mut(&connection).map_err(|_| Error::InvalidConnection)?;
        // A read in WAL mode neither waits for writers nor syncs: microseconds from the page
        // cache, cheaper inline than the two thread hand-offs of the blocking pool.
        let conn = entry.conn.as_ref().ok_or(Error::InvalidConnection)?;
        if runs_inline(conn, &statement) {
            let result = run(conn, &statement, parameters);
            settle_turn(entry);
            return result;
        }
        let db = entry.db.clone();
        let conn = entry.conn.take().ok_or(Error::InvalidConnection)?;
        let flight = InFlight { conn, turn: entry.turn.take() };
        let rolls_back = starts_with_word(&statement, "ROLLBACK");
        // Writes block (lock waits, checkpoints): keep them off the async workers. The task owns
        // the connection and its turn until it hands them back (`Returned`); if nobody takes
        // them (this future was dropped), they are abandoned: rolled back, then freed.
        let handle = tokio::task::spawn_blocking(move || {
            let result = run(&flight.conn, &statement, parameters);
            (Returned(Some(flight)), result)
        });
        let (mut returned, result) = handle.await.map_err(|e| Error::Io(e.to_string()))?;
        let flight = returned.0.take().ok_or(Error::InvalidConnection)?;
        // It committed (a COMMIT, or a write outside a transaction): answered once on disk.
        let committed = result.is_ok() && flight.conn.is_autocommit() && !rolls_back;
        match self.table.get_mut(&connection) {
            Ok(entry) => {
                entry.conn = Some(flight.conn);
                entry.turn = flight.turn;
                settle_turn(entry);
            }
            Err(_) => flight.abandon(),
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

    /// The statement count the views of these tests add to (`--debug-host-calls`; unread here).
    static STATEMENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    fn own(r: &Resource<Connection>) -> Resource<Connection> {
        Resource::new_own(r.rep())
    }

    fn queue_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("veil-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Opens a connection in a table of its own (as an instance would) and runs statements.
    async fn run_all(dbs: &Databases, table: &mut ResourceTable, sql: &[&str]) -> Result<QueryResult, Error> {
        let mut view = SqliteView { databases: dbs, table, statements: &STATEMENTS };
        let c = view.open("default".to_string()).await?;
        let mut last = None;
        for s in sql {
            last = Some(view.execute(own(&c), s.to_string(), vec![]).await?);
        }
        Ok(last.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_waits_for_its_turn_and_a_dropped_holder_gives_it_back() {
        let dir = queue_dir("queue");
        let dbs = Arc::new(Databases::open(&dir, &["default".to_string()], Duration::from_secs(5)).unwrap());
        let db = dbs.iter().next().unwrap().clone();
        let queue = db.writers.0.clone().expect("the queue is on by default");
        let mut holder = ResourceTable::new();
        run_all(
            &dbs,
            &mut holder,
            &["CREATE TABLE q (i INTEGER)", "BEGIN IMMEDIATE", "INSERT INTO q VALUES (1)"],
        )
        .await
        .unwrap();
        assert_eq!(queue.available_permits(), 0);
        let before = QUEUE_WAITS.load(Ordering::Relaxed);
        let other = dbs.clone();
        let next = tokio::spawn(async move {
            let mut table = ResourceTable::new();
            run_all(&other, &mut table, &["INSERT INTO q VALUES (2)", "SELECT COUNT(*), SUM(i) FROM q"]).await
        });
        while QUEUE_WAITS.load(Ordering::Relaxed) == before {
            tokio::task::yield_now().await;
        }
        // Readers are not queued.
        let mut reader = ResourceTable::new();
        let r = run_all(&dbs, &mut reader, &["SELECT COUNT(*) FROM q"]).await.unwrap();
        assert!(matches!(r.rows[0].values[0], Value::Integer(0)));
        assert!(!next.is_finished());
        // The holder's instance goes away mid-transaction (a trap, a deadline): its transaction is
        // rolled back and the waiting writer proceeds.
        drop(holder);
        let r = next.await.unwrap().unwrap();
        assert!(matches!(r.rows[0].values.as_slice(), [Value::Integer(1), Value::Integer(2)]));
        assert_eq!(queue.available_permits(), 1);
        drop(reader);
        drop(dbs);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_dropped_on_the_blocking_pool_gives_its_turn_back() {
        let dir = queue_dir("abandon");
        let dbs = Databases::open(&dir, &["default".to_string()], Duration::from_secs(5)).unwrap();
        let queue = dbs.iter().next().unwrap().writers.0.clone().unwrap();
        let mut table = ResourceTable::new();
        run_all(&dbs, &mut table, &["CREATE TABLE q (i INTEGER)"]).await.unwrap();
        let mut view = SqliteView { databases: &dbs, table: &mut table, statements: &STATEMENTS };
        let c = view.open("default".to_string()).await.unwrap();
        // A long write, abandoned while it runs (its future dropped, as when the guest's
        // deadline passes).
        let slow = view.execute(
            own(&c),
            "INSERT INTO q WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 200000) \
             SELECT x FROM n"
                .to_string(),
            vec![],
        );
        let _ = tokio::time::timeout(Duration::from_millis(1), slow).await;
        let mut next = ResourceTable::new();
        run_all(&dbs, &mut next, &["BEGIN IMMEDIATE", "INSERT INTO q VALUES (-1)", "COMMIT"]).await.unwrap();
        assert_eq!(queue.available_permits(), 1);
        drop((next, table));
        drop(dbs);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
