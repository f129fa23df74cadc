"""Issue 20, lever 3: the warm path (docs/architecture.md, "The warm path"; docs/kms.md, "The
scheme cache"). With the DEK cache on, the scheme cache keeps what a protect reads from the
metadata database in the host key-value store for `scheme_cache_max_age_secs`, and seal counts are
reserved by sampling, so a warm single-value protect runs no SQL statement at all (counted by the
host: `--debug-host-calls` adds `veil-debug-sql-statements`). Every write to a scheme drops its
entry before answering (same key-value store: at once); another process with its own store
honours a change within the max age; forged, copied and expired entries are never accepted."""
import base64
import os
import time

import faults
from faults import kv_put, serving
from veilkit import err, item_errors, ok

CACHE_KEY = base64.b64encode(os.urandom(32)).decode()
PREFIX = "veil/scheme-cache/v1/"


def sql(resp) -> int:
    return int(resp.headers["veil-debug-sql-statements"])


def cached(workdir, *flags, **env):
    return serving(workdir, "--debug-host-calls", *flags, dek_cache="true", dek_cache_key=CACHE_KEY, **env)


def protect(t, name, value="x"):
    r = t.app.post("/v1/protect", {"scheme": name, "values": [value]})
    return r, ok(r)


def protect_entries(t) -> int:
    return len(ok(t.as_("auditor").get("/v1/audit?operation=protect"))["entries"])


def test_a_warm_protect_runs_no_sql_and_writes_drop_the_entry_at_once(tmp_path):
    with cached(tmp_path / "warm", scheme_cache_max_age_secs="60") as s:
        t = s.tenant()
        name = t.create_scheme(audit="none")["name"]
        first, _ = protect(t, name, "first")
        assert sql(first) >= 1  # the scheme and its current key read from the database
        counts, tokens = [], []
        for i in range(6):
            r, body = protect(t, name, f"v{i}")
            counts.append(sql(r))
            tokens.append(body["results"][0]["value"])
        # none, but for a sampled seal reservation (one statement, probability 1/4096 each)
        assert set(counts) <= {0, 1} and counts.count(0) >= 5, counts
        assert t.unprotect(tokens) == [f"v{i}" for i in range(6)]

        # rotate: the next protect uses the new version at once
        ok(t.admin.post(f"/v1/schemes/{name}/rotate"))
        r, body = protect(t, name)
        assert body["key_version"] == 2 and sql(r) >= 1
        assert protect(t, name)[1]["key_version"] == 2
        # PATCH audit none → all: the next protect is audited at once
        before = protect_entries(t)
        ok(t.admin.request("PATCH", f"/v1/schemes/{name}", {"audit": "all"}))
        protect(t, name)
        assert protect_entries(t) == before + 1
        ok(t.admin.request("PATCH", f"/v1/schemes/{name}", {"min_decryption_version": 2, "audit": "none"}))
        assert protect(t, name)[1]["key_version"] == 2
        # erasing the scheme: refused at once, however warm it was
        protect(t, name)
        ok(t.admin.post(f"/v1/schemes/{name}/erase", {"confirm": name}))
        err(t.app.post("/v1/protect", {"scheme": name, "values": ["x"]}), 409, "scheme_erased")

        # erasing the tenant: every warm scheme refused at once
        other = t.create_scheme(audit="none")["name"]
        protect(t, other)
        assert sql(protect(t, other)[0]) in (0, 1)
        ok(t.admin.post("/v1/tenant/erase", {"confirm": t.id}))
        err(t.app.post("/v1/protect", {"scheme": other, "values": ["x"]}), 409, "scheme_erased")

    # With the scheme cache off, every protect reads the database again.
    with cached(tmp_path / "cold", scheme_cache="false") as s:
        t = s.tenant()
        name = t.create_scheme(audit="none")["name"]
        assert all(sql(protect(t, name)[0]) >= 1 for _ in range(3))


def test_another_process_honours_a_change_within_the_max_age(tmp_path):
    """Two servers on one database, each with its own key-value store: B keeps its entry until
    it expires (1 s here), then reads A's change."""
    with cached(tmp_path / "a", scheme_cache_max_age_secs="1") as a, \
            cached(tmp_path / "b", scheme_cache_max_age_secs="1", state_dir=a.state_dir) as b:
        ta, tb = a.tenant(), None
        name = ta.create_scheme(audit="none")["name"]
        tb = b.tenant(ta.id)
        protect(tb, name)
        assert sql(protect(tb, name)[0]) in (0, 1)  # B is warm
        before = protect_entries(ta)
        ok(ta.admin.request("PATCH", f"/v1/schemes/{name}", {"audit": "all"}))
        time.sleep(1.2)
        protect(tb, name)
        assert protect_entries(ta) == before + 1, "B did not honour the PATCH after the max age"

        # An erasure on A: B may seal for at most the max age, under the destroyed version only
        ok(ta.admin.request("PATCH", f"/v1/schemes/{name}", {"audit": "none"}))
        time.sleep(1.2)
        protect(tb, name)
        ok(ta.admin.post(f"/v1/schemes/{name}/erase", {"confirm": name}))
        r = tb.app.post("/v1/protect", {"scheme": name, "values": ["late"]})
        if r.status_code == 200:  # B's entry had not expired yet: sealed under the erased version
            late = ok(r)["results"][0]["value"]
            assert item_errors(tb.unprotect_results([late])) == ["key_version_destroyed"]
        else:
            err(r, 409, "scheme_erased")
        time.sleep(1.2)
        err(tb.app.post("/v1/protect", {"scheme": name, "values": ["x"]}), 409, "scheme_erased")


def kv_rows(path) -> dict[str, bytes]:
    return faults.kv_rows(path, PREFIX)


def test_forged_copied_and_expired_entries_are_never_accepted(tmp_path):
    kv = tmp_path / "kv.db"
    with cached(tmp_path / "srv", "--kv-file", str(kv), scheme_cache_max_age_secs="1") as s:
        t = s.tenant()
        a = t.create_scheme(audit="none", policy={"protect": ["app"], "unprotect": ["support"],
                                                  "mask": ["analyst"], "admin": ["admin"]})["name"]
        b = t.create_scheme(audit="none", policy={"protect": ["app", "other"], "unprotect": ["support"],
                                                  "mask": ["analyst"], "admin": ["admin"]})["name"]
        protect(t, a)
        slot_a = set(kv_rows(kv))
        assert len(slot_a) == 1
        (slot_a,) = slot_a
        protect(t, b)
        (slot_b,) = set(kv_rows(kv)) - {slot_a}
        assert t.id not in slot_a and a not in slot_a  # names are keyed hashes
        entry_b = kv_rows(kv)[slot_b]
        other = t.as_("other")
        err(other.post("/v1/protect", {"scheme": a, "values": ["x"]}), 403, "forbidden")

        for what, entry in {"copied from another scheme's slot": entry_b,
                            "forged bytes": entry_b[:8] + os.urandom(len(entry_b) - 8)}.items():
            kv_put(kv, slot_a, entry)
            # never b's policy: the role that may protect with b only is still refused on a
            err(other.post("/v1/protect", {"scheme": a, "values": ["x"]}), 403, "forbidden")
            assert kv_rows(kv).get(slot_a) != entry, f"{what}: the entry was kept"
            kv_put(kv, slot_a, entry)
            r, body = protect(t, a, what)
            assert sql(r) >= 1, f"{what}: served from the entry"
            assert t.unprotect([body["results"][0]["value"]]) == [what]

        # an entry of a's own, replayed after it expired (and after a rotation): a miss
        protect(t, a)
        old = kv_rows(kv)[slot_a]
        ok(t.admin.post(f"/v1/schemes/{a}/rotate"))
        time.sleep(1.2)
        kv_put(kv, slot_a, old)
        r, body = protect(t, a)
        assert body["key_version"] == 2 and sql(r) >= 1
