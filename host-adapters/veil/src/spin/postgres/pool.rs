//! A bounded pool of tokio-postgres clients per connection string, shared by every instance.
//!
//! At most `max_per_address` clients exist per connection string (checked out plus idle): a
//! client is only created when no idle one is left and a slot is free, and an instance waits at
//! most [`PgSettings::acquire_timeout`] for a slot. Each client is checked out as a [`Lease`] for the whole
//! life of a guest `connection` resource, which tracks the transaction state and, when dropped,
//! rolls back a transaction the guest left open before the client goes back to the pool.
//!
//! Connections use TLS unless the connection string says `sslmode=disable` ([`super::tls`]):
//! `prefer` (libpq's default) and `allow` are treated as `require`, never as plain text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, Statement};

use super::tls::{self, PgTls};
use crate::outbound::AllowedHosts;

/// How long establishing a new connection (TCP, startup, authentication) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the `ROLLBACK` of a transaction left open may take before the client is discarded.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements cached per client; the cache is cleared when it is full.
const STATEMENT_CACHE: usize = 128;
/// PostgreSQL's default port.
const DEFAULT_PORT: u16 = 5432;

/// Pool sizing and the limits every new connection gets.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Clients per connection string (checked out plus idle).
    pub max_per_address: usize,
    /// `statement_timeout` of every connection; `lock_timeout` is half of it.
    pub statement_timeout: Duration,
    /// How long `open` waits for a free slot in a full pool.
    pub acquire_timeout: Duration,
    /// Log pool events to stderr.
    pub verbose: bool,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            max_per_address: 16,
            statement_timeout: Duration::from_millis(10_000),
            acquire_timeout: Duration::from_secs(5),
            verbose: false,
        }
    }
}

/// The pools of one host, by connection string.
pub struct Pools {
    settings: PgSettings,
    by_address: Mutex<HashMap<String, Arc<Pool>>>,
}

impl Pools {
    pub fn new(settings: PgSettings) -> Self {
        Pools { settings, by_address: Mutex::new(HashMap::new()) }
    }

    /// The pool for `address`, created on first use, if `allowed` permits every server it names.
    pub fn pool(&self, address: &str, allowed: &AllowedHosts) -> Result<Arc<Pool>, String> {
        let existing = lock(&self.by_address).get(address).cloned();
        let pool = match existing {
            Some(pool) => pool,
            None => {
                let pool = Arc::new(Pool::new(address, &self.settings)?);
                lock(&self.by_address).entry(address.to_string()).or_insert(pool).clone()
            }
        };
        for (host, port) in &pool.targets {
            if !allowed.allows("postgres", host, Some(*port)) {
                return Err(format!(
                    "postgres://{}:{port} is not allowed by allowed_outbound_hosts",
                    bracket_v6(host)
                ));
            }
        }
        Ok(pool)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// An error and its causes, one line (tokio-postgres's `Display` omits the cause).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// An idle or checked-out client with the statements prepared on it.
pub struct PooledClient {
    pub client: Client,
    statements: HashMap<String, Statement>,
}

impl PooledClient {
    fn new(client: Client) -> Self {
        PooledClient { client, statements: HashMap::new() }
    }

    /// A statement prepared earlier on this client, if cached.
    pub fn cached(&self, sql: &str) -> Option<Statement> {
        self.statements.get(sql).cloned()
    }

    pub fn cache(&mut self, sql: &str, statement: Statement) {
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement);
    }

    pub fn evict(&mut self, sql: &str) {
        self.statements.remove(sql);
    }
}

/// The clients of one connection string.
pub struct Pool {
    config: Config,
    tls: PgTls,
    tls_mode: tls::Mode,
    /// `postgres://user@host:port/db`, never the password.
    label: String,
    /// Every (host, port) a connection may go to, as checked against `allowed_outbound_hosts`.
    targets: Vec<(String, u16)>,
    slots: Arc<Semaphore>,
    max: usize,
    idle: Mutex<Vec<PooledClient>>,
    acquire_timeout: Duration,
    verbose: bool,
}

impl Pool {
    fn new(address: &str, settings: &PgSettings) -> Result<Pool, String> {
        let (address, tls_request) = tls::split(address)?;
        let tls_mode = tls::mode(&tls_request)?;
        let mut config: Config = address
            .parse()
            .map_err(|e: tokio_postgres::Error| format!("invalid connection string: {}", chain(&e)))?;
        // TLS or no connection at all: tokio-postgres's `Prefer` would fall back to plain text.
        config.ssl_mode(match tls_mode {
            tls::Mode::Plain => SslMode::Disable,
            tls::Mode::Tls(_) => SslMode::Require,
        });
        let ports = config.get_ports();
        let port_of = |i: usize| match ports {
            [] => DEFAULT_PORT,
            [p] => *p,
            many => many.get(i).copied().unwrap_or(DEFAULT_PORT),
        };
        let mut targets = Vec::new();
        for (i, host) in config.get_hosts().iter().enumerate() {
            match host {
                Host::Tcp(name) => targets.push((name.clone(), port_of(i))),
                #[cfg(unix)]
                Host::Unix(_) => return Err("unix-domain sockets are not allowed; use host:port".to_string()),
            }
        }
        // `hostaddr` is where the connection really goes: it must be allowed too.
        for (i, addr) in config.get_hostaddrs().iter().enumerate() {
            targets.push((addr.to_string(), port_of(i)));
        }
        if targets.is_empty() {
            return Err("the connection string names no host".to_string());
        }

        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match h {
                Host::Tcp(name) => Some(format!("{}:{}", bracket_v6(name), port_of(i))),
                #[cfg(unix)]
                Host::Unix(_) => None,
            })
            .collect();
        let label = format!(
            "postgres://{}@{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config.get_dbname().unwrap_or("")
        );

        // Session defaults set at startup, so that `RESET ALL` by a guest keeps them.
        let statement_ms = settings.statement_timeout.as_millis().max(1);
        let lock_ms = (statement_ms / 2).max(1);
        let options = format!(
            "{} -c statement_timeout={statement_ms} -c lock_timeout={lock_ms}",
            config.get_options().unwrap_or("")
        );
        config.options(options.trim_start()).connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("veil");
        }
        let max = settings.max_per_address.max(1);
        // Read `sslrootcert` once the address is known to be well-formed (and before any connection).
        let tls = tls::connector(tls_mode, &tls_request)?;
        Ok(Pool {
            config,
            tls,
            tls_mode,
            label,
            targets,
            slots: Arc::new(Semaphore::new(max)),
            max,
            idle: Mutex::new(Vec::new()),
            acquire_timeout: settings.acquire_timeout,
            verbose: settings.verbose,
        })
    }

    /// The connection string without its password.
    #[cfg(test)]
    pub fn label(&self) -> &str {
        &self.label
    }

    fn log(&self, event: std::fmt::Arguments<'_>) {
        if self.verbose {
            eprintln!("veil: postgres {}: {event}", self.label);
        }
    }

    /// Checks out an idle client, or connects a new one when a slot is free.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, String> {
        let wait = self.acquire_timeout;
        let permit = match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(format!("the pool for {} is closed", self.label)),
            Err(_) => {
                self.log(format_args!("no free connection within {} ms", wait.as_millis()));
                return Err(format!(
                    "all {} connections to {} stayed busy for {} ms",
                    self.max,
                    self.label,
                    wait.as_millis()
                ));
            }
        };
        loop {
            let Some(idle) = lock(&self.idle).pop() else { break };
            if idle.client.is_closed() {
                self.log(format_args!("discarded a closed idle connection"));
                continue;
            }
            return Ok(Lease::new(self.clone(), idle, permit, true));
        }
        let client = self.connect().await?;
        Ok(Lease::new(self.clone(), client, permit, false))
    }

    /// Opens a new connection; its I/O runs on a task of its own.
    async fn connect(&self) -> Result<PooledClient, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "no async runtime to connect on".to_string())?;
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(self.tls.clone())).await;
        let (client, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                self.log(format_args!("cannot connect: {}", chain(&e)));
                return Err(format!("cannot connect to {}: {}", self.label, chain(&e)));
            }
            Err(_) => {
                self.log(format_args!("connect timed out"));
                return Err(format!(
                    "cannot connect to {}: no answer within {}s",
                    self.label,
                    CONNECT_TIMEOUT.as_secs()
                ));
            }
        };
        let (verbose, label) = (self.verbose, self.label.clone());
        runtime.spawn(async move {
            match connection.await {
                Err(e) if verbose => eprintln!("veil: postgres {label}: connection closed: {}", chain(&e)),
                _ => {}
            }
        });
        self.log(format_args!(
            "new connection, {} ({} of {} slots in use)",
            self.tls_mode,
            self.in_use(),
            self.max
        ));
        Ok(PooledClient::new(client))
    }

    fn in_use(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Keeps a healthy client for the next lease.
    fn put_back(&self, client: PooledClient) {
        if client.client.is_closed() {
            self.log(format_args!("discarded a closed connection"));
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < self.max {
            idle.push(client);
        }
    }
}

/// What a statement's text does to the session's transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnEffect {
    /// `BEGIN`, `START TRANSACTION`, `COMMIT AND CHAIN`, `ROLLBACK AND CHAIN`.
    Begin,
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT`, `PREPARE TRANSACTION`.
    End,
    None,
}

/// The first few keywords of `sql`, upper-cased, after whitespace and comments.
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = sql;
    while words.len() < n {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
            continue;
        }
        if rest.starts_with("/*") {
            // Block comments nest in PostgreSQL.
            let mut depth = 0usize;
            let mut end = rest.len();
            let bytes = rest.as_bytes();
            let mut i = 0;
            while i + 1 < bytes.len() {
                match (bytes[i], bytes[i + 1]) {
                    (b'/', b'*') => {
                        depth += 1;
                        i += 2;
                    }
                    (b'*', b'/') => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => i += 1,
                }
            }
            rest = rest.get(end..).unwrap_or("");
            continue;
        }
        let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        words.push(rest[..len].to_ascii_uppercase());
        rest = &rest[len..];
    }
    words
}

/// Classifies a statement by its text (one statement: the extended protocol allows no more).
pub fn txn_effect(sql: &str) -> TxnEffect {
    let words = leading_words(sql, 5);
    let word = |i: usize| words.get(i).map(String::as_str);
    let chained = || {
        let pos = words.iter().position(|w| w == "AND");
        pos.is_some_and(|p| word(p + 1) == Some("CHAIN"))
    };
    match word(0) {
        Some("BEGIN") => TxnEffect::Begin,
        Some("START") if word(1) == Some("TRANSACTION") => TxnEffect::Begin,
        Some("ROLLBACK") if word(1) == Some("TO") || word(2) == Some("TO") => TxnEffect::None,
        Some("ROLLBACK") if word(1) == Some("PREPARED") => TxnEffect::None,
        Some("COMMIT") if word(1) == Some("PREPARED") => TxnEffect::None,
        Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") if chained() => TxnEffect::Begin,
        Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") => TxnEffect::End,
        Some("PREPARE") if word(1) == Some("TRANSACTION") => TxnEffect::End,
        _ => TxnEffect::None,
    }
}

/// Whether a statement is worth keeping prepared on its client.
pub fn cacheable(sql: &str) -> bool {
    matches!(
        leading_words(sql, 1).first().map(String::as_str),
        Some(
            "SELECT"
                | "INSERT"
                | "UPDATE"
                | "DELETE"
                | "WITH"
                | "VALUES"
                | "BEGIN"
                | "START"
                | "COMMIT"
                | "END"
                | "ROLLBACK"
                | "ABORT"
        )
    )
}

/// A client checked out for the lifetime of one guest `connection` resource.
pub struct Lease {
    pool: Arc<Pool>,
    client: Option<PooledClient>,
    permit: Option<OwnedSemaphorePermit>,
    /// Whether the client came from the idle list (and may have gone stale there).
    pub reused: bool,
    /// Statements attempted on this lease so far.
    pub statements: u64,
    /// Whether a transaction may be open (kept conservatively: `ROLLBACK` on return if so).
    pub in_txn: bool,
    /// Set while a statement is in flight: a lease dropped then (the guest's future was
    /// cancelled) has a client in an unknown state, which is discarded.
    pub busy: bool,
}

impl Lease {
    fn new(pool: Arc<Pool>, client: PooledClient, permit: OwnedSemaphorePermit, reused: bool) -> Self {
        Lease {
            pool,
            client: Some(client),
            permit: Some(permit),
            reused,
            statements: 0,
            in_txn: false,
            busy: false,
        }
    }

    pub fn client(&mut self) -> Option<&mut PooledClient> {
        self.client.as_mut()
    }

    /// Replaces a stale client by a new connection, keeping the slot.
    pub async fn reconnect(&mut self) -> Result<(), String> {
        self.client = None;
        self.pool.log(format_args!("reconnecting: the idle connection had been closed"));
        self.client = Some(self.pool.connect().await?);
        self.reused = false;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(client), permit) = (self.client.take(), self.permit.take()) else {
            return;
        };
        if self.busy {
            // A statement was still running: cancel it server-side and drop the connection.
            self.pool.log(format_args!("discarded a connection with a statement in flight"));
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let token = client.client.cancel_token();
                let tls = self.pool.tls.clone();
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(ROLLBACK_TIMEOUT, token.cancel_query(tls)).await;
                });
            }
            return;
        }
        if client.client.is_closed() {
            self.pool.log(format_args!("discarded a closed connection"));
            return;
        }
        if !self.in_txn {
            self.pool.put_back(client);
            drop(permit);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The slot stays taken until the rollback has finished (or the client is discarded).
        let pool = self.pool.clone();
        runtime.spawn(async move {
            match tokio::time::timeout(ROLLBACK_TIMEOUT, client.client.batch_execute("ROLLBACK")).await {
                Ok(Ok(())) => {
                    pool.log(format_args!("rolled back a transaction left open"));
                    pool.put_back(client);
                }
                Ok(Err(e)) => {
                    pool.log(format_args!("discarded a connection: ROLLBACK failed: {}", chain(&e)))
                }
                Err(_) => pool.log(format_args!("discarded a connection: ROLLBACK timed out")),
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_effects() {
        use TxnEffect::*;
        for (sql, effect) in [
            ("BEGIN", Begin),
            ("  begin isolation level serializable", Begin),
            ("BEGIN;", Begin),
            ("-- migrate\nBEGIN", Begin),
            ("/* a /* nested */ comment */ start transaction read write", Begin),
            ("START", None),
            ("COMMIT", End),
            ("commit work", End),
            ("END", End),
            ("ROLLBACK", End),
            ("rollback transaction", End),
            ("ABORT", End),
            ("ROLLBACK TO SAVEPOINT s", None),
            ("ROLLBACK TO s", None),
            ("ROLLBACK WORK TO SAVEPOINT s", None),
            ("COMMIT AND CHAIN", Begin),
            ("COMMIT AND NO CHAIN", End),
            ("ROLLBACK PREPARED 'x'", None),
            ("COMMIT PREPARED 'x'", None),
            ("PREPARE TRANSACTION 'x'", End),
            ("PREPARE q AS SELECT 1", None),
            ("SELECT 'BEGIN'", None),
            ("INSERT INTO t VALUES ('COMMIT')", None),
            ("SAVEPOINT s", None),
            ("", None),
            ("/* unterminated", None),
        ] {
            assert_eq!(txn_effect(sql), effect, "{sql}");
        }
    }

    #[test]
    fn cacheable_statements() {
        assert!(cacheable("SELECT 1"));
        assert!(cacheable(" with x as (select 1) select * from x"));
        assert!(cacheable("COMMIT"));
        assert!(!cacheable("CREATE TABLE t (i int)"));
        assert!(!cacheable("SET search_path = x"));
    }

    fn pools() -> Pools {
        Pools::new(PgSettings::default())
    }

    #[test]
    fn addresses_are_checked_against_the_allow_list() {
        let allowed =
            AllowedHosts::parse(&["postgres://127.0.0.1:5432", "postgres://db.internal:6432"]).unwrap();
        let p = pools();
        assert!(p.pool("postgres://u:secret@127.0.0.1/db", &allowed).is_ok());
        assert!(p.pool("postgres://u@127.0.0.1:5432/db", &allowed).is_ok());
        assert!(p.pool("host=db.internal port=6432 user=u dbname=d", &allowed).is_ok());
        let denied = p.pool("postgres://u@127.0.0.1:5433/db", &allowed).err().unwrap();
        assert!(
            denied.contains("postgres://127.0.0.1:5433 is not allowed by allowed_outbound_hosts"),
            "{denied}"
        );
        assert!(p.pool("postgres://u@db.internal/db", &allowed).is_err());
        // hostaddr is where the connection goes: it must be allowed as well.
        assert!(p.pool("host=db.internal port=6432 hostaddr=10.0.0.1 user=u", &allowed).is_err());
        assert!(p.pool("postgres://u@127.0.0.1/db?sslmode=require", &allowed).is_ok());
        assert!(p.pool("postgres://u@127.0.0.1/db?sslmode=disable", &allowed).is_ok());
        let e = p.pool("postgres://u@127.0.0.1/db?sslmode=verify-full", &allowed).err().unwrap();
        assert!(e.contains("sslrootcert"), "{e}");
        // the TLS parameters do not get around the allow-list
        assert!(p.pool("postgres://u@127.0.0.1:5433/db?sslmode=require", &allowed).is_err());
        assert!(p.pool("host=/var/run/postgresql user=u", &allowed).is_err());
        assert!(p.pool("postgres://u@%2Fvar%2Frun/db", &allowed).is_err());
        assert!(p.pool("not a connection string", &allowed).is_err());
    }

    #[test]
    fn labels_never_show_the_password() {
        let allowed = AllowedHosts::parse(&["postgres://*:*"]).unwrap();
        let p = pools();
        let pool = p.pool("postgres://alice:s3cret@10.1.2.3:6000/meta", &allowed).unwrap();
        assert_eq!(pool.label(), "postgres://alice@10.1.2.3:6000/meta");
        let pool = p.pool("host=h user=bob password=s3cret dbname=x", &allowed).unwrap();
        assert_eq!(pool.label(), "postgres://bob@h:5432/x");
    }
}
