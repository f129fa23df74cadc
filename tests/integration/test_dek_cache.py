"""KMS calls per request, with and without the opt-in DEK cache (docs/kms.md): the counts in the
`veil-kms-calls` response header are what the docs promise."""
import base64
import os
import re
import time

from veilkit import err, ok

CACHE_KEY = base64.b64encode(os.urandom(32)).decode()


def unwraps(resp) -> int:
    m = re.fullmatch(r"wraps=(\d+), unwraps=(\d+), http=(\d+)", resp.headers.get("veil-kms-calls", ""))
    assert m, resp.headers
    return int(m.group(2))


def protect(t, name, values=("a",)):
    r = t.app.post("/v1/protect", {"scheme": name, "values": list(values)})
    ok(r)
    return r


def test_without_cache_one_unwrap_per_scheme_version_per_request(start_server):
    t = start_server("nocache").tenant()
    name = t.create_scheme()["name"]
    counts = [unwraps(protect(t, name, ["x"] * 50)) for _ in range(5)]
    assert counts == [1] * 5
    v1 = t.protect(name, ["one"])
    ok(t.admin.post(f"/v1/schemes/{name}/rotate"))
    v2 = t.protect(name, ["two"])
    r = t.support.post("/v1/unprotect", {"values": v1 * 20 + v2 * 20})
    assert [x["value"] for x in ok(r)["results"]] == ["one"] * 20 + ["two"] * 20
    assert unwraps(r) == 2


def test_with_cache_the_vault_is_asked_once_per_period(start_server):
    # A seal limit below 2^20 counts every seal exactly (block size 1, docs/kms.md "Key-use
    # limits"), so that the use limit is checked on every protect; with sampled reservations it
    # is checked on the protects that reserve.
    s = start_server("cache", dek_cache="true", dek_cache_key=CACHE_KEY, dek_cache_max_uses="4",
                     max_seals_per_key="1000000")
    t = s.tenant()
    name = t.create_scheme()["name"]
    counts = [unwraps(protect(t, name)) for _ in range(6)]
    # first request unwraps and caches (use 1); uses 2-4 are hits; the 5th finds it used up
    assert counts == [1, 0, 0, 0, 1, 0]
    tokens = t.protect(name, ["kept"])
    r = t.support.post("/v1/unprotect", {"values": tokens})
    assert [x["value"] for x in ok(r)["results"]] == ["kept"] and unwraps(r) == 0
    ok(t.admin.post(f"/v1/schemes/{name}/rotate"))
    assert [unwraps(protect(t, name)) for _ in range(2)] == [1, 0]  # a new version is a new entry


def test_cache_entries_expire(start_server):
    s = start_server("cache-age", dek_cache="true", dek_cache_key=CACHE_KEY, dek_cache_max_age_secs="1")
    t = s.tenant()
    name = t.create_scheme()["name"]
    assert [unwraps(protect(t, name)) for _ in range(2)] == [1, 0]
    time.sleep(2.1)
    assert unwraps(protect(t, name)) == 1


def test_cache_needs_its_key(start_server):
    s = start_server("cache-nokey", dek_cache="true")
    t = s.tenant()
    err(t.admin.post("/v1/schemes", t.scheme_body()), 500, "misconfigured")
