"""Bulk re-encryption jobs (issue 13 item 4): a customer table in PostgreSQL converted to a scheme's
current version by `veil job run` loops driving `POST /v1/jobs/{id}/step`, with the metadata on
this run's store (VEIL_STORE). Every row is checked afterwards (current version, decrypts to its
original value) and a trigger-maintained counter proves that each row was written exactly once;
a host killed during a step loses nothing; planted bad tokens are reported as failures; cancel;
validation errors with exact codes."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import store
from harness import postgres as pg
from harness import procs
from veilkit import REPO, VeilServer, err, hs256, new_name, ok

N_BIG = 100_000


@pytest.fixture(scope="module")
def customer_db():
    name = pg.new_database_name("veil_jobs")
    url = pg.create_database(store.ADMIN_URL, name)
    yield url
    pg.drop_database(store.ADMIN_URL, name)


@pytest.fixture(scope="module")
def server(tmp_path_factory, customer_db):
    s = VeilServer(tmp_path_factory.mktemp("jobs"), name="jobs", allowed_hosts=[pg.outbound_host(customer_db)],
                   job_databases="job_db", job_db=customer_db, max_batch="10000")
    yield s
    s.stop()


def make_table(url: str, table: str, values: list[str], tokens: list[str], subjects=None) -> None:
    """`table` (id, val, original, subject, writes): `writes` counts the writes of `val` (a trigger)."""
    with pg.connect(url) as c:
        c.execute(f'CREATE TABLE "{table}" (id BIGINT PRIMARY KEY, val TEXT, original TEXT, subject TEXT, '
                  f'writes INT NOT NULL DEFAULT 0)')
        c.execute(f'CREATE FUNCTION "{table}_count"() RETURNS trigger AS $$ BEGIN '
                  f'NEW.writes := OLD.writes + 1; RETURN NEW; END $$ LANGUAGE plpgsql')
        c.execute(f'CREATE TRIGGER "{table}_t" BEFORE UPDATE OF val ON "{table}" FOR EACH ROW '
                  f'EXECUTE FUNCTION "{table}_count"()')
        rows = [(i, tok, v, subjects[i] if subjects else None) for i, (v, tok) in enumerate(zip(values, tokens))]
        with c.cursor() as cur:
            with cur.copy(f'COPY "{table}" (id, val, original, subject) FROM STDIN') as cp:
                for r in rows:
                    cp.write_row(r)


def rows_of(url: str, table: str) -> list[tuple]:
    with pg.connect(url) as c:
        return c.execute(f'SELECT id, val, original, writes FROM "{table}" ORDER BY id').fetchall()


def protect_many(t, scheme: str, values: list[str], chunk=10_000, **kw) -> list[str]:
    out = []
    for i in range(0, len(values), chunk):
        out += t.protect(scheme, values[i:i + chunk], **kw)
    return out


def unprotect_many(t, tokens: list[str], chunk=10_000) -> list[str]:
    out = []
    for i in range(0, len(tokens), chunk):
        out += t.unprotect(tokens[i:i + chunk])
    return out


def job_body(scheme: str, table: str, **kw) -> dict:
    body = {"scheme": scheme, "database": "job_db", "table": table, "key_column": "id", "token_column": "val"}
    body.update(kw)
    return body


def job_run(server, tenant_id: str, job_id: str, parallel: int) -> subprocess.Popen:
    """`veil job run` against the server's manifest, state directory and variables."""
    env = dict(server.env, VEIL_TOKEN=hs256(tenant_id, ["admin"]))
    return procs.spawn([server.bin, "job", "run", job_id, "--parallel", str(parallel), "--manifest", server.manifest,
                        "--state-dir", server.state_dir],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)


def finish(p: subprocess.Popen, timeout=300) -> tuple[int, str, str]:
    try:
        out, errs = p.communicate(timeout=timeout)
    finally:
        procs.forget(p)
    return p.returncode, out, errs


def version_of(tok: str) -> int:
    return int(tok.split(".")[3])


def test_a_100k_row_table_converted_by_4_concurrent_loops_each_row_written_once(server, customer_db):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    values = [f"value-{i}-{'x' * (i % 7)}" for i in range(N_BIG)]
    tokens = protect_many(t, scheme, values)
    table = new_name("big").replace("-", "_")
    make_table(customer_db, table, values, tokens)
    ok(t.admin.post(f"/v1/schemes/{scheme}/rotate"))
    job = ok(t.admin.post("/v1/jobs", job_body(scheme, table, batch_size=5000)), 201)
    assert (job["state"], job["total"], job["done"], job["failed"], job["target_version"]) == \
        ("pending", N_BIG, 0, 0, 2), job
    # 4 concurrent `veil job run` loops (4 processes), and a fifth with --parallel 2 beside them
    runs = [job_run(server, t.id, job["id"], 1) for _ in range(4)] + [job_run(server, t.id, job["id"], 2)]
    outcomes = [finish(p) for p in runs]
    assert [o[0] for o in outcomes] == [0] * 5, [o[2][-2000:] for o in outcomes]
    got = ok(t.admin.get(f"/v1/jobs/{job['id']}"))
    assert (got["state"], got["done"], got["failed"], got["remaining"]) == ("finished", N_BIG, 0, 0), got
    assert got["report"] == {"rows_below_target": 0, "safe_to_retire": True}, got
    assert got["rows_per_second"] > 0 and got["eta_seconds"] == 0, got
    rows = rows_of(customer_db, table)
    assert len(rows) == N_BIG
    assert [r[3] for r in rows if r[3] != 1] == [], "every row written exactly once"
    assert {version_of(r[1]) for r in rows} == {2}
    assert unprotect_many(t, [r[1] for r in rows]) == [r[2] for r in rows]
    # A finished job: a step is a no-op, the failures list is empty, cancel is refused.
    assert ok(t.admin.post(f"/v1/jobs/{job['id']}/step", {})) == \
        {"done": 0, "failed": 0, "remaining": 0, "state": "finished"}
    assert ok(t.admin.get(f"/v1/jobs/{job['id']}/failures")) == {"failures": [], "truncated": False}
    err(t.admin.post(f"/v1/jobs/{job['id']}/cancel", {}), 409, "job_finished")


def test_planted_bad_tokens_are_reported_not_retried_and_subjects_context_work(server, customer_db):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    other = t.create_scheme()["name"]
    n = 300
    values = [f"v{i}" for i in range(n)]
    subjects = [f"user-{i % 5}" for i in range(n)]
    tokens = []
    for i, v in enumerate(values):
        tokens.append(None)
    for s in sorted(set(subjects)):
        idx = [i for i in range(n) if subjects[i] == s]
        for i, tok in zip(idx, t.protect(scheme, [values[i] for i in idx], subject=s, context="orders")):
            tokens[i] = tok
    ok(t.admin.post(f"/v1/schemes/{scheme}/rotate"))
    # Planted: not a token, a tampered token, a token of another scheme.
    tampered = tokens[11][:-2] + ("AA" if tokens[11][-2:] != "AA" else "BB")
    bad = {7: "not a token at all", 11: tampered, 13: t.protect(other, ["x"])[0]}
    for i, b in bad.items():
        tokens[i] = b
    table = new_name("subj").replace("-", "_")
    make_table(customer_db, table, values, tokens, subjects)
    job = ok(t.admin.post("/v1/jobs", job_body(scheme, table, subject_column="subject", context="orders",
                                               batch_size=64)), 201)
    assert job["total"] == n and job["subject_column"] == "subject" and job["context"] == "orders", job
    steps = []
    for _ in range(20):
        s = ok(t.admin.post(f"/v1/jobs/{job['id']}/step"))
        steps.append(s)
        if s["state"] == "finished":
            break
    assert steps[-1] == {"done": 0, "failed": 0, "remaining": 0, "state": "finished"}, steps
    assert sum(s["done"] for s in steps) == n - 3 and sum(s["failed"] for s in steps) == 3, steps
    fails = ok(t.admin.get(f"/v1/jobs/{job['id']}/failures"))
    assert fails == {"failures": [{"key": "11", "code": "decryption_failed"},
                                  {"key": "13", "code": "scheme_mismatch"},
                                  {"key": "7", "code": "invalid_token"}], "truncated": False}, fails
    got = ok(t.admin.get(f"/v1/jobs/{job['id']}"))
    assert (got["state"], got["done"], got["failed"]) == ("finished", n - 3, 3), got
    assert got["report"] == {"rows_below_target": 3, "safe_to_retire": False}, got
    rows = rows_of(customer_db, table)
    for r in rows:
        if r[0] in bad:
            assert (r[1], r[3]) == (bad[r[0]], 0), r
        else:
            assert version_of(r[1]) == 2 and r[3] == 1, r
    for s in sorted(set(subjects)):
        idx = [i for i in range(n) if subjects[i] == s and i not in bad]
        assert t.unprotect([rows[i][1] for i in idx], subject=s, context="orders") == [values[i] for i in idx]


def test_a_host_killed_during_a_step_loses_nothing(server, customer_db):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    n = 20_000
    values = [f"k{i}" for i in range(n)]
    table = new_name("kill").replace("-", "_")
    make_table(customer_db, table, values, protect_many(t, scheme, values))
    ok(t.admin.post(f"/v1/schemes/{scheme}/rotate"))
    job = ok(t.admin.post("/v1/jobs", job_body(scheme, table, batch_size=2000)), 201)
    # The job's progress row locked from here: both steps claim their rows, rewrap them, write them
    # back and then wait for that lock, i.e. between claim and commit; the host is killed there.
    lock = pg.connect(customer_db)
    lock.autocommit = False
    lock.execute("SELECT done FROM veil_job_progress WHERE job = %s FOR UPDATE", (job["id"],))
    p = job_run(server, t.id, job["id"], 2)
    waiting = 0
    deadline = time.monotonic() + 120
    with pg.connect(customer_db) as c:
        while time.monotonic() < deadline and waiting < 2 and p.poll() is None:
            waiting = c.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND query LIKE 'UPDATE veil_job_progress%%'").fetchone()[0]
            time.sleep(0.01)
    assert waiting == 2, (waiting, p.poll())
    os.kill(p.pid, signal.SIGKILL)
    finish(p)
    lock.rollback()
    lock.close()
    with pg.connect(customer_db) as c:
        for _ in range(500):  # the killed host's sessions end (and roll back) once PostgreSQL sees them gone
            if c.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'UPDATE veil_job_progress%%' "
                         "AND state <> 'idle'").fetchone()[0] == 0:
                break
            time.sleep(0.02)
        written = c.execute(f'SELECT count(*) FROM "{table}" WHERE writes > 0').fetchone()[0]
        progress = c.execute("SELECT done, failed FROM veil_job_progress WHERE job = %s", (job["id"],)).fetchone()
    assert (written, progress) == (0, (0, 0)), "the killed steps' claims were rolled back"
    code, out, errs = finish(job_run(server, t.id, job["id"], 2))
    assert code == 0, errs[-2000:]
    got = ok(t.admin.get(f"/v1/jobs/{job['id']}"))
    assert (got["state"], got["done"], got["failed"], got["report"]["rows_below_target"]) == \
        ("finished", n, 0, 0), got
    rows = rows_of(customer_db, table)
    assert [r for r in rows if r[3] != 1] == []
    assert unprotect_many(t, [r[1] for r in rows]) == values


def test_ctrl_c_stops_between_steps_and_a_second_run_finishes(server, customer_db):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    n = 10_000
    values = [f"i{i}" for i in range(n)]
    table = new_name("sigint").replace("-", "_")
    make_table(customer_db, table, values, protect_many(t, scheme, values))
    ok(t.admin.post(f"/v1/schemes/{scheme}/rotate"))
    job = ok(t.admin.post("/v1/jobs", job_body(scheme, table, batch_size=1000)), 201)
    # Both loops' first steps wait at their last statement (the progress row is locked here); SIGINT
    # then; once the lock is released, those steps commit and no loop starts another.
    lock = pg.connect(customer_db)
    lock.autocommit = False
    lock.execute("SELECT done FROM veil_job_progress WHERE job = %s FOR UPDATE", (job["id"],))
    p = job_run(server, t.id, job["id"], 2)
    waiting = 0
    deadline = time.monotonic() + 120
    with pg.connect(customer_db) as c:
        while time.monotonic() < deadline and waiting < 2 and p.poll() is None:
            waiting = c.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND query LIKE 'UPDATE veil_job_progress%%'").fetchone()[0]
            time.sleep(0.01)
    assert waiting == 2, (waiting, p.poll())
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    lock.rollback()
    lock.close()
    code, out, errs = finish(p, timeout=60)
    assert code == 1 and "interrupted" in errs, errs[-2000:]
    assert '"state":"running"' in out.replace(" ", ""), out
    got = ok(t.admin.get(f"/v1/jobs/{job['id']}"))
    assert (got["state"], got["done"], got["remaining"]) == ("running", 2000, n - 2000), got
    code, out, errs = finish(job_run(server, t.id, job["id"], 2))
    assert code == 0, errs[-2000:]
    rows = rows_of(customer_db, table)
    assert [r for r in rows if r[3] != 1] == [] and {version_of(r[1]) for r in rows} == {2}


def test_cancel_stops_the_job(server, customer_db):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    values = [f"c{i}" for i in range(50)]
    table = new_name("cancel").replace("-", "_")
    make_table(customer_db, table, values, t.protect(scheme, values))
    ok(t.admin.post(f"/v1/schemes/{scheme}/rotate"))
    job = ok(t.admin.post("/v1/jobs", job_body(scheme, table, batch_size=10)), 201)
    assert ok(t.admin.post(f"/v1/jobs/{job['id']}/step", {})) == \
        {"done": 10, "failed": 0, "remaining": 40, "state": "running"}
    got = ok(t.admin.post(f"/v1/jobs/{job['id']}/cancel"))
    assert (got["state"], got["done"], got["remaining"]) == ("cancelled", 10, 40), got
    assert ok(t.admin.post(f"/v1/jobs/{job['id']}/cancel"))["state"] == "cancelled"
    err(t.admin.post(f"/v1/jobs/{job['id']}/step"), 409, "job_cancelled")
    code, out, errs = finish(job_run(server, t.id, job["id"], 2))
    assert code == 1 and "was cancelled" in errs, errs[-2000:]
    assert sum(1 for r in rows_of(customer_db, table) if version_of(r[1]) == 2) == 10


def test_validation_errors_have_exact_codes(server, customer_db):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    table = new_name("val").replace("-", "_")
    make_table(customer_db, table, ["a"], t.protect(scheme, ["a"]))
    a = t.admin
    cases = [
        (job_body(scheme, 'x"; DROP TABLE y; --'), 422, "invalid_field"),
        (job_body(scheme, "a.b.c"), 422, "invalid_field"),
        (job_body(scheme, table, key_column="id; --"), 422, "invalid_field"),
        (job_body(scheme, table, token_column="1val"), 422, "invalid_field"),
        (job_body(scheme, table, subject_column="a.b"), 422, "invalid_field"),
        (job_body(scheme, table, database=customer_db), 422, "invalid_field"),
        (job_body(scheme, table, database="postgres://u@127.0.0.1:5432/x"), 422, "invalid_field"),
        (job_body(scheme, table, database="no_such_variable"), 404, "unknown_variable"),
        (job_body(scheme, table, database="database_url"), 404, "unknown_variable"),
        (job_body(scheme, table, batch_size=0), 422, "invalid_field"),
        (job_body(scheme, table, batch_size=10_001), 422, "invalid_field"),
        (job_body(scheme, table, target_version=2), 422, "invalid_field"),
        (job_body(scheme, table, target_version=0), 422, "invalid_field"),
        (job_body(scheme, table, batch_size=1.5), 400, "invalid_request"),
        (job_body(scheme, "no_such_table"), 422, "invalid_field"),
        (job_body(scheme, table, token_column="no_such_column"), 422, "invalid_field"),
        (job_body("no-such-scheme", table), 404, "scheme_not_found"),
        (job_body(scheme, table, extra=1), 400, "invalid_request"),
        ({"scheme": scheme}, 400, "invalid_request"),
    ]
    for body, status, code in cases:
        e = err(a.post("/v1/jobs", body), status, code)
        assert customer_db not in str(e), e
    err(t.app.post("/v1/jobs", job_body(scheme, table)), 403, "forbidden")
    err(a.get("/v1/jobs/job_0123456789abcdef0123456789abcdef"), 404, "job_not_found")
    err(a.post("/v1/jobs/nope/step"), 404, "job_not_found")
    job = ok(a.post("/v1/jobs", job_body(scheme, table)), 201)
    # Another tenant sees no such job.
    other = server.tenant()
    err(other.admin.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
    err(other.admin.post(f"/v1/jobs/{job['id']}/step"), 404, "job_not_found")
    err(t.support.get(f"/v1/jobs/{job['id']}"), 403, "forbidden")
    err(a.post(f"/v1/jobs/{job['id']}/step", {"x": 1}), 400, "invalid_request")


def runbook_blocks() -> list[str]:
    text = (REPO / "docs/rotation.md").read_text()
    section = text.split("## 7. Converting a table", 1)[1]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def test_the_runbook_converts_a_table(server, customer_db):
    """docs/rotation.md section 7, every `bash` block as written (bash, curl, jq, veil on PATH)."""
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    table = new_name("cards").replace("-", "_")
    values = [f"4111-{i:04d}" for i in range(3000)]
    tokens = protect_many(t, scheme, values)
    with pg.connect(customer_db) as c:
        c.execute(f'CREATE TABLE "{table}" (id INT PRIMARY KEY, card TEXT)')
        with c.cursor() as cur, cur.copy(f'COPY "{table}" (id, card) FROM STDIN') as cp:
            for i, tok in enumerate(tokens):
                cp.write_row((i, tok))
    ok(t.admin.post(f"/v1/schemes/{scheme}/rotate"))
    env = {**server.env, "VEIL_URL": server.url, "ADMIN_TOKEN": hs256(t.id, ["admin"]), "SCHEME": scheme,
           "TABLE": table, "VEIL_MANIFEST": str(server.manifest), "VEIL_STATE_DIR": str(server.state_dir),
           "PATH": f"{Path(server.bin).parent}:{os.environ['PATH']}"}

    def run(block: str) -> str:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (block, r.stdout, r.stderr[-2000:])
        return r.stdout.strip()

    steps = runbook_blocks()
    assert len(steps) == 4, steps
    env["JOB_ID"] = run(steps[0])
    assert re.fullmatch(r"job_[0-9a-f]{32}", env["JOB_ID"]), env["JOB_ID"]
    assert run(steps[1]) == "finished"
    assert run(steps[2]) == '["finished",3000,0,true]'
    assert run(steps[3]) == "[]"
    with pg.connect(customer_db) as c:
        stored = [r[0] for r in c.execute(f'SELECT card FROM "{table}" ORDER BY id')]
    assert {version_of(s) for s in stored} == {2}
    assert unprotect_many(t, stored) == values
