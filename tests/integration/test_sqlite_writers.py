"""Concurrent writers (docs/storage.md, "SQLite concurrency"): on SQLite, the host's writers' queue
serves many audited writers of one process in turn, even with a short busy timeout, without
SQLite's busy handler; two `veil serve` on one state directory still work beside each other (the
busy handler is their fallback). Both stores (VEIL_STORE): on PostgreSQL the same requests must
succeed; the queue's counts are SQLite's alone."""
import json
import re
from concurrent.futures import ThreadPoolExecutor

import store
from veilkit import VeilServer, ok

COUNTS = re.compile(r"veil: sqlite: (\d+) queued writes, (\d+) busy-handler sleeps, (\d+) syncs")


def counts(server) -> tuple[int, int, int]:
    found = COUNTS.findall(server.stderr(10**6))
    assert len(found) == 1, server.stderr()
    return tuple(int(x) for x in found[0])


def test_many_concurrent_audited_writers_are_served_in_turn(tmp_path):
    s = VeilServer(tmp_path, name="writers", extra_args=["--sqlite-busy-timeout-ms", "1000"],
                   raw_env={"VEIL_DEBUG_SQLITE_COUNTS": "1"})
    t = s.tenant()
    scheme = t.create_scheme()["name"]  # audit `all`: every protect appends an entry
    app = t.app

    def one(i):
        r = app.post("/v1/protect", {"scheme": scheme, "values": [f"v{i}"]})
        return r.status_code, r.text

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, range(96)))
    assert [status for status, _ in answers] == [200] * 96, [a for a in answers if a[0] != 200][:3]
    v = ok(t.as_("auditor").get("/v1/audit/verify"))
    assert v["ok"] is True and v["entries"] == 97, v
    s.stop()
    queued, busy, syncs = counts(s)
    if store.STORE == "sqlite":
        # Writers of this process waited in the queue, none slept in SQLite's busy handler; and
        # group commit shared syncs between them (at most one per committed write).
        assert queued > 0 and busy == 0, (queued, busy)
        assert 0 < syncs, syncs
    else:
        assert (queued, busy, syncs) == (0, 0, 0)


def test_two_processes_on_one_state_dir_both_write(tmp_path):
    state = tmp_path / "shared-state"
    a = VeilServer(tmp_path / "a", state_dir=state, name="first")
    b = VeilServer(tmp_path / "b", state_dir=state, name="second")
    try:
        ta = a.tenant()
        scheme = ta.create_scheme()["name"]
        tb = b.tenant(ta.id)

        def one(i):
            server_tenant = ta if i % 2 else tb
            r = server_tenant.app.post("/v1/protect", {"scheme": scheme, "values": [f"w{i}"]})
            return r.status_code, r.text

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(32)))
        assert [status for status, _ in answers] == [200] * 32, [x for x in answers if x[0] != 200][:3]
        tokens = [json.loads(text)["results"][0]["value"] for _, text in answers]
        # one process reads what both wrote, and the one chain holds every entry in order
        assert ta.unprotect(tokens) == [f"w{i}" for i in range(32)]
        v = ok(tb.as_("auditor").get("/v1/audit/verify"))
        assert v["ok"] is True and v["entries"] == 1 + 32 + 1, v
    finally:
        a.stop()
        b.stop()
