//! Versioned migrations, applied idempotently inside one write transaction.
//!
//! Several instances may start at once: the first takes the lock (SQLite's write lock through
//! `BEGIN IMMEDIATE`; a transaction-scoped advisory lock on PostgreSQL), the others wait for it,
//! then find every migration recorded and do nothing.

use super::sql::{Dialect, SqlConn, SqlError, SqlValue};

/// A migration: its number, its name, and its SQL per dialect.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// The PostgreSQL advisory lock key that serialises migrations ("veil" in ASCII).
const PG_MIGRATION_LOCK: i64 = 0x7665_696c;

/// Every migration, in order. Never edit a released one: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schemes",
        sqlite: include_str!("migrations/sqlite/0001_schemes.sql"),
        postgres: include_str!("migrations/postgres/0001_schemes.sql"),
    },
    Migration {
        version: 2,
        name: "key_lifecycle",
        sqlite: include_str!("migrations/sqlite/0002_key_lifecycle.sql"),
        postgres: include_str!("migrations/postgres/0002_key_lifecycle.sql"),
    },
    Migration {
        version: 3,
        name: "subjects",
        sqlite: include_str!("migrations/sqlite/0003_subjects.sql"),
        postgres: include_str!("migrations/postgres/0003_subjects.sql"),
    },
    Migration {
        version: 4,
        name: "lifecycle",
        sqlite: include_str!("migrations/sqlite/0004_lifecycle.sql"),
        postgres: include_str!("migrations/postgres/0004_lifecycle.sql"),
    },
    Migration {
        version: 5,
        name: "key_seals",
        sqlite: include_str!("migrations/sqlite/0005_key_seals.sql"),
        postgres: include_str!("migrations/postgres/0005_key_seals.sql"),
    },
    Migration {
        version: 6,
        name: "jobs",
        sqlite: include_str!("migrations/sqlite/0006_jobs.sql"),
        postgres: include_str!("migrations/postgres/0006_jobs.sql"),
    },
    Migration {
        version: 7,
        name: "scheme_erasure",
        sqlite: include_str!("migrations/sqlite/0007_scheme_erasure.sql"),
        postgres: include_str!("migrations/postgres/0007_scheme_erasure.sql"),
    },
    Migration {
        version: 8,
        name: "api_keys",
        sqlite: include_str!("migrations/sqlite/0008_api_keys.sql"),
        postgres: include_str!("migrations/postgres/0008_api_keys.sql"),
    },
    Migration {
        version: 9,
        name: "audit",
        sqlite: include_str!("migrations/sqlite/0009_audit.sql"),
        postgres: include_str!("migrations/postgres/0009_audit.sql"),
    },
    Migration {
        version: 10,
        name: "context_required",
        sqlite: include_str!("migrations/sqlite/0010_context_required.sql"),
        postgres: include_str!("migrations/postgres/0010_context_required.sql"),
    },
];

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies every migration not yet recorded; returns how many ran.
pub fn migrate(conn: &dyn SqlConn) -> Result<usize, SqlError> {
    conn.execute(conn.dialect().begin(), &[])?;
    let result = lock(conn).and_then(|()| apply(conn));
    match result {
        Ok(n) => {
            conn.execute("COMMIT", &[])?;
            Ok(n)
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK", &[]);
            Err(e)
        }
    }
}

fn lock(conn: &dyn SqlConn) -> Result<(), SqlError> {
    match conn.dialect() {
        Dialect::Sqlite => Ok(()),
        Dialect::Postgres => {
            conn.execute("SELECT pg_advisory_xact_lock($1)", &[SqlValue::Int(PG_MIGRATION_LOCK)]).map(|_| ())
        }
    }
}

fn apply(conn: &dyn SqlConn) -> Result<usize, SqlError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS veil_migrations (\
         version BIGINT NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        &[],
    )?;
    let rows = conn.query("SELECT version FROM veil_migrations", &[])?;
    let applied: Vec<i64> = rows
        .iter()
        .filter_map(|r| match r.first() {
            Some(SqlValue::Int(v)) => Some(*v),
            _ => None,
        })
        .collect();
    if let Some(newer) = applied.iter().copied().filter(|v| *v > latest()).max() {
        return Err(SqlError::SchemaTooNew(newer));
    }
    let now = crate::clock::now_unix();
    let mut ran = 0;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = match conn.dialect() {
            Dialect::Sqlite => m.sqlite,
            Dialect::Postgres => m.postgres,
        };
        for stmt in split_statements(sql) {
            conn.execute(&stmt, &[])?;
        }
        conn.execute(
            "INSERT INTO veil_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[SqlValue::Int(m.version), SqlValue::Text(m.name.into()), SqlValue::Int(now)],
        )?;
        ran += 1;
    }
    Ok(ran)
}

/// Splits a migration file into statements at `;` line ends, dropping `--` comment lines.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let code = match line.find("--") {
            Some(i) => &line[..i],
            None => line,
        };
        if code.trim().is_empty() {
            continue;
        }
        cur.push_str(code);
        cur.push('\n');
        if code.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}
