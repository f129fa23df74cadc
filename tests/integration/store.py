"""Which metadata store the integration suite runs against, and direct access to it.

`VEIL_STORE=sqlite` (default) serves the embedded SQLite database of each server's state dir;
`VEIL_STORE=postgres` points every server at one PostgreSQL database made for this pytest run
(`VEIL_TEST_PG_URL` names the server, default postgres://postgres@127.0.0.1:5432/test) and drops
it afterwards. The whole API suite runs once per store (scripts/test.sh).
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from harness import postgres as pg

STORE = os.environ.get("VEIL_STORE", "sqlite")
if STORE not in ("sqlite", "postgres"):
    raise RuntimeError(f"VEIL_STORE must be sqlite or postgres, not {STORE!r}")

ADMIN_URL = os.environ.get("VEIL_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
_db_name = pg.new_database_name("veil_it")


def pg_connect(url: str | None = None):
    return pg.connect(url or ADMIN_URL)


def database_url() -> str:
    """The URL the component gets in `database_url` (PostgreSQL run only)."""
    return pg.with_db(ADMIN_URL, _db_name)


def pg_hostport() -> str:
    return pg.hostport(ADMIN_URL)


def setup() -> None:
    if STORE == "postgres":
        pg.create_database(ADMIN_URL, _db_name)


def teardown() -> None:
    if STORE == "postgres":
        pg.drop_database(ADMIN_URL, _db_name)


def server_env() -> dict[str, str]:
    return {"SPIN_VARIABLE_DATABASE_URL": database_url()} if STORE == "postgres" else {}


def allowed_outbound_hosts() -> list[str]:
    return [pg.outbound_host(ADMIN_URL)] if STORE == "postgres" else []


def tables(state_dir: Path) -> dict[str, list[tuple]]:
    """Every row of every Veil table, read straight from the store a server used."""
    out: dict[str, list[tuple]] = {}
    if STORE == "postgres":
        with pg_connect(database_url()) as c:
            names = [r[0] for r in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
            for n in names:
                out[n] = [tuple(r) for r in c.execute(f'SELECT * FROM "{n}"').fetchall()]
    else:
        db = sqlite3.connect(state_dir / "sqlite_default.db")
        try:
            names = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            for n in names:
                out[n] = [tuple(r) for r in db.execute(f'SELECT * FROM "{n}"')]
        finally:
            db.close()
    return out
