"""Metadata store faults (docs/storage.md, "Races and faults" and "Migrations"): another process
holding the write lock, and a database migrated by a newer Veil. Both stores (VEIL_STORE).

Bounds on how long an answer may take are derived from the configured lock timeout, with seconds
of slack: they tell "gave up at the timeout" from "hung", nothing finer."""
import contextlib
import re
import secrets
import sqlite3
import time

import requests

import store
from faults import lock_flags, serving, write_lock
from veilkit import VeilServer, err, ok

SLACK = 5.0


def test_a_locked_store_fails_writes_in_time_and_keeps_reading(tmp_path):
    lock_ms = 1500
    # max_seals_per_key below 2^20: every protect reserves its seals exactly (a write), rather
    # than by sampling (docs/kms.md, "Key-use limits"), so that the refusal below is certain.
    with serving(tmp_path / "busy", *lock_flags(lock_ms), max_seals_per_key="1000000") as s:
        t = s.tenant()
        # `audit: none`: this scheme's unprotects write nothing (no audit entry), so they are reads
        name = t.create_scheme(audit="none")["name"]
        audited = t.create_scheme()["name"]  # audit `all` (the default)
        before = t.protect(name, ["before"])
        before_audited = t.protect(audited, ["before"])
        with write_lock(s):
            protect = lambda: t.app.post("/v1/protect", {"scheme": name, "values": ["during"]})  # noqa: E731
            attempts = [lambda: t.admin.post("/v1/schemes", t.scheme_body()),
                        lambda: t.admin.post(f"/v1/schemes/{name}/rotate")]
            # protect is a write too: it counts the values its key version seals (key_seals,
            # issue 19 item 6) before sealing any; so is every audited request (its audit entry,
            # docs/audit.md: an entry that cannot be written withholds the answer), which on
            # SQLite, whose lock holds the whole database, means every administrative request and
            # every data request on a scheme with `audit: all`. The PostgreSQL lock here holds
            # `tenants` and `schemes` only, so protect and the audit entries go on there.
            if store.STORE == "sqlite":
                attempts += [protect, lambda: t.support.post("/v1/unprotect", {"values": before_audited}),
                             lambda: t.admin.get("/v1/schemes")]
            for attempt in attempts:
                begun = time.monotonic()
                err(attempt(), 503, "store_unavailable")
                assert time.monotonic() - begun < lock_ms / 1000 + SLACK
            during = [] if store.STORE == "sqlite" else [r["value"] for r in ok(protect())["results"]]
            # reads go on beside the lock (SQLite's WAL; PostgreSQL's EXCLUSIVE lets readers in)
            assert t.unprotect(before) == ["before"]
            if store.STORE == "postgres":
                assert t.unprotect(before_audited) == ["before"]
                assert sorted(x["name"] for x in ok(t.admin.get("/v1/schemes"))["schemes"]) == sorted([name, audited])
        # released: everything works again, and the refused writes left nothing behind
        created = t.create_scheme()["name"]
        assert ok(t.admin.post(f"/v1/schemes/{name}/rotate"))["current_version"] == 2
        assert t.unprotect(before + during + t.protect(name, ["after"])) == ["before"] + ["during"] * len(during) + ["after"]
        assert t.unprotect(before_audited) == ["before"]
        listed = ok(t.admin.get("/v1/schemes"))["schemes"]
        assert sorted(x["name"] for x in listed) == sorted([name, audited, created])
        keys = [r for r in store.tables(s.state_dir)["data_keys"] if r[0] == t.id]
        assert sorted((r[1], int(r[2])) for r in keys) == sorted([(name, 1), (name, 2), (audited, 1), (created, 1)])


@contextlib.contextmanager
def own_database(tmp_path):
    """A metadata database for one server alone, and a way to run SQL on it directly."""
    if store.STORE == "postgres":
        db = f"veil_it_newer_{secrets.token_hex(4)}"
        with store.pg_connect() as c:
            c.execute(f'CREATE DATABASE "{db}"')
        url = store.database_url().rsplit("/", 1)[0] + "/" + db

        def run(sql, *params):
            with store.pg_connect(url) as c:
                cur = c.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []

        try:
            yield {"SPIN_VARIABLE_DATABASE_URL": url}, run
        finally:
            with store.pg_connect() as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    else:
        state = tmp_path / "own-state"

        def run(sql, *params):
            db = sqlite3.connect(state / "sqlite_default.db", isolation_level=None)
            try:
                return db.execute(sql, params).fetchall()
            finally:
                db.close()

        yield {"state_dir": state}, run


def test_a_database_from_a_newer_veil_is_refused(tmp_path):
    with own_database(tmp_path) as (where, sql):
        state_dir = where.get("state_dir")
        raw_env = {k: v for k, v in where.items() if k != "state_dir"}
        s = VeilServer(tmp_path / "newer", state_dir=state_dir, name="newer", raw_env=raw_env)
        try:
            t = s.tenant()
            name = t.create_scheme()["name"]
            tokens = t.protect(name, ["v"])
            known = max(r[0] for r in sql("SELECT version FROM veil_migrations"))
            newer = known + 1
            sql("INSERT INTO veil_migrations (version, name, applied_at) VALUES (?, 'from the future', 0)", newer)
            rows_before = sql("SELECT tenant, name, current_version FROM schemes")

            calls = [
                lambda: t.admin.post("/v1/schemes", t.scheme_body()),
                lambda: t.admin.get("/v1/schemes"),
                lambda: t.admin.get(f"/v1/schemes/{name}"),
                lambda: t.admin.get("/v1/schemes/no-such-scheme"),
                lambda: t.admin.post(f"/v1/schemes/{name}/rotate"),
                lambda: t.app.post("/v1/protect", {"scheme": name, "values": ["x"]}),
                lambda: t.support.post("/v1/unprotect", {"values": tokens}),
                lambda: t.analyst.post("/v1/mask", {"scheme": name, "values": ["x"]}),
            ]
            for call in calls:
                e = err(call(), 503, "store_schema_too_new")
                assert f"schema version {newer}" in e["message"] and f"knows up to {known}" in e["message"], e
            # routes that do not touch the store still answer
            assert ok(requests.get(s.url + "/healthz", timeout=10)) == {"status": "ok"}
            assert sql("SELECT tenant, name, current_version FROM schemes") == rows_before
            assert re.search(rf"schema version {newer} is newer than this build knows \({known}\)", s.stderr())

            # the migration path: every table gone but the newer version's record
            list_tables = ("SELECT tablename FROM pg_tables WHERE schemaname = 'public'" if store.STORE == "postgres"
                           else "SELECT name FROM sqlite_master WHERE type = 'table'")
            for (table,) in sql(list_tables):
                if table != "veil_migrations":
                    sql(f'DROP TABLE IF EXISTS "{table}"' + (" CASCADE" if store.STORE == "postgres" else ""))
            err(t.admin.post("/v1/schemes", t.scheme_body()), 503, "store_schema_too_new")
            err(t.admin.get("/v1/schemes"), 503, "store_schema_too_new")
            tables = {r[0] for r in sql(list_tables)}
            assert tables == {"veil_migrations"}, tables
        finally:
            s.stop()
