"""Key-use limits (issue 19 item 6, docs/kms.md "Key-use limits"): every data-key version counts
the values it has sealed in the metadata database, and a scheme rotates by itself before the
version passes its bound, exactly once however many requests cross it together. The bound is
turned down with `max_seals_per_key` so that the tests cross it in a few requests."""
from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor

from veilkit import err, ok

LIMIT = 5


def protect(t, name, values):
    return ok(t.app.post("/v1/protect", {"scheme": name, "values": values}))


def test_a_scheme_rotates_before_its_current_version_passes_the_limit(start_server):
    s = start_server("seals", max_seals_per_key=str(LIMIT))
    t = s.tenant()
    name = t.create_scheme()["name"]
    first = protect(t, name, ["a", "b", "c"])
    second = protect(t, name, ["d", "e"])
    assert (first["key_version"], second["key_version"]) == (1, 1)
    assert ok(t.admin.get(f"/v1/schemes/{name}"))["current_version"] == 1
    third = protect(t, name, ["f"])  # version 1 has sealed 5: this one goes to a new version
    assert third["key_version"] == 2
    assert all(r["value"].startswith(f"veil.1.{name}.2.") for r in third["results"])
    assert ok(t.admin.get(f"/v1/schemes/{name}"))["current_version"] == 2
    tokens = [r["value"] for b in (first, second, third) for r in b["results"]]
    assert t.unprotect(tokens) == ["a", "b", "c", "d", "e", "f"]
    # values that are refused per item seal nothing and count nothing
    big = "x" * (64 * 1024 + 1)
    body = protect(t, name, [big, big, big, big, "g", "h", "i", "j"])
    assert body["key_version"] == 2 and [r.get("error", {}).get("code") for r in body["results"]] == \
        ["value_too_large"] * 4 + [None] * 4
    assert protect(t, name, ["k", "l"])["key_version"] == 3
    assert "rotated to key version 2: version 1 reached its seal limit" in s.stderr()


def test_a_batch_larger_than_the_limit_is_refused_whole(start_server):
    t = start_server("seals-batch", max_seals_per_key=str(LIMIT)).tenant()
    name = t.create_scheme()["name"]
    err(t.app.post("/v1/protect", {"scheme": name, "values": ["x"] * (LIMIT + 1)}), 413, "batch_too_large")
    assert ok(t.admin.get(f"/v1/schemes/{name}"))["current_version"] == 1
    assert protect(t, name, ["x"] * LIMIT)["key_version"] == 1


def test_many_concurrent_protects_crossing_the_limit_make_exactly_one_new_version(start_server):
    s = start_server("seals-race", max_seals_per_key=str(LIMIT))
    t = s.tenant()
    name = t.create_scheme()["name"]
    assert protect(t, name, ["x"] * LIMIT)["key_version"] == 1  # version 1 is full
    with ThreadPoolExecutor(max_workers=LIMIT) as pool:
        bodies = list(pool.map(lambda i: protect(t, name, [f"v{i}"]), range(LIMIT)))
    # each of them found version 1 full, one of them rotated, and all fit in version 2
    assert sorted(b["key_version"] for b in bodies) == [2] * LIMIT
    assert ok(t.admin.get(f"/v1/schemes/{name}"))["current_version"] == 2
    tokens = [b["results"][0]["value"] for b in bodies]
    assert t.unprotect(tokens) == [f"v{i}" for i in range(LIMIT)]


def test_with_the_dek_cache_the_limit_holds_and_rotation_is_a_new_entry(start_server):
    key = base64.b64encode(os.urandom(32)).decode()
    s = start_server("seals-cache", max_seals_per_key=str(LIMIT), dek_cache="true", dek_cache_key=key)
    t = s.tenant()
    name = t.create_scheme()["name"]
    versions = [protect(t, name, ["x", "y"])["key_version"] for _ in range(6)]
    assert versions == [1, 1, 2, 2, 3, 3]
    assert ok(t.admin.get(f"/v1/schemes/{name}"))["current_version"] == 3
