"""Throw-away PostgreSQL databases on a server the caller names (scripts/ensure-postgres.sh
makes sure one answers at 127.0.0.1:5432 and prints its URL)."""
from __future__ import annotations

import secrets
from urllib.parse import urlparse, urlunparse


def with_db(url: str, db: str) -> str:
    """`url` with its database replaced by `db`."""
    return urlunparse(urlparse(url)._replace(path="/" + db))


def db_name(url: str) -> str:
    return urlparse(url).path.lstrip("/")


def hostport(url: str) -> str:
    u = urlparse(url)
    return f"{u.hostname or '127.0.0.1'}:{u.port or 5432}"


def outbound_host(url: str) -> str:
    """The manifest's `allowed_outbound_hosts` entry for a server."""
    return f"postgres://{hostport(url)}"


def connect(url: str):
    import psycopg  # only the PostgreSQL runs need it

    return psycopg.connect(url, autocommit=True)


def new_database_name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def create_database(admin_url: str, name: str) -> str:
    """Creates database `name` on `admin_url`'s server; returns its URL."""
    with connect(admin_url) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return with_db(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drops database `name`, closing whatever connections it still has."""
    with connect(admin_url) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
