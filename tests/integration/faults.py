"""Helpers for the host and store fault tests: servers with extra `veil serve` flags, raw sockets,
an outside process holding the metadata store's write lock, and the host's key-value file
(`veil serve --kv-file`) read and written from outside, as anyone with access to it could."""
from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

import store
from veilkit import VeilServer


@contextlib.contextmanager
def serving(workdir: Path, *flags, name="veil", **env):
    """A `veil serve` with extra flags, stopped (and checked for a clean exit) afterwards."""
    s = VeilServer(workdir, name=name, extra_args=flags, **env)
    try:
        yield s
    finally:
        s.stop()


def hostport(server: VeilServer) -> tuple[str, int]:
    u = urlparse(server.url)
    return u.hostname, u.port


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Reads one HTTP/1.1 response until the server closes the connection (or `timeout` passes)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {data[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def json_error(status: int, headers: dict, body: bytes, want_status: int, want_code: str) -> dict:
    assert status == want_status, (status, headers, body[:300])
    assert headers.get("content-type") == "application/json", headers
    doc = json.loads(body)
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, doc
    assert doc["error"]["code"] == want_code, doc
    return doc["error"]


@contextlib.contextmanager
def write_lock(server: VeilServer):
    """Holds the metadata store's write lock from another process's connection, as an operator's
    script or a backup could: SQLite `BEGIN EXCLUSIVE` on the server's database file (WAL readers
    still read), or on PostgreSQL an EXCLUSIVE lock on `tenants` and `schemes` (reads go on, every
    write waits for `lock_timeout`)."""
    if store.STORE == "postgres":
        conn = store.pg_connect(store.database_url())
        try:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE tenants, schemes IN EXCLUSIVE MODE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        db = sqlite3.connect(server.state_dir / "sqlite_default.db", isolation_level=None, timeout=0)
        try:
            db.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()


def lock_flags(timeout_ms: int) -> list[str]:
    """`veil serve` flags that make a write give up after about `timeout_ms` waiting for a lock
    (SQLite's busy timeout; PostgreSQL's `lock_timeout`, half the statement timeout)."""
    if store.STORE == "postgres":
        return ["--pg-statement-timeout-ms", str(2 * timeout_ms)]
    return ["--sqlite-busy-timeout-ms", str(timeout_ms)]


def kv_rows(path, prefix: str) -> dict[str, bytes]:
    """The entries of the key-value store `default` in a `--kv-file` whose keys start with `prefix`."""
    db = sqlite3.connect(path, timeout=10)
    try:
        return {k: bytes(v) for k, v in db.execute(
            "SELECT key, value FROM spin_key_value WHERE store = 'default' AND key LIKE ?", (prefix + "%",))}
    finally:
        db.close()


def kv_put(path, key: str, value: bytes) -> None:
    """Writes an entry straight into a `--kv-file`'s store `default`."""
    db = sqlite3.connect(path, timeout=10)
    try:
        db.execute("INSERT OR REPLACE INTO spin_key_value (store, key, value) VALUES ('default', ?, ?)", (key, value))
        db.commit()
    finally:
        db.close()
