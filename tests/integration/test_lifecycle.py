"""Key-version lifecycle (issue 13): the versions view, `min_decryption_version` (retire and
re-activate), destroy, `rotation_period` (race-free automatic rotation), and every forbidden
transition with its status and code. Runs on the metadata store of this run (VEIL_STORE)."""
import base64
import re
import sqlite3
import threading
import time

import pytest

import store
from veilkit import DEFAULT_POLICY, TOKEN_RE, err, item_errors, new_name, ok

CACHE_KEY = base64.b64encode(bytes(range(32))).decode()
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
VERSION_FIELDS = {"version", "state", "created_at", "kek", "kek_version"}


def patch(api, name, body):
    return api.request("PATCH", f"/v1/schemes/{name}", body)


def versions(t, name):
    body = ok(t.app.get(f"/v1/schemes/{name}/versions"))
    assert set(body) == {"versions"}, body
    return body["versions"]


def states(t, name):
    return [(v["version"], v["state"]) for v in versions(t, name)]


def destroy(api, name, v):
    return api.post(f"/v1/schemes/{name}/versions/{v}/destroy")


def codes(t, tokens):
    return item_errors(t.unprotect_results(tokens))


def sql(server, statement: str, params=()):
    """Runs one statement straight on the server's metadata store (`?` placeholders)."""
    if store.STORE == "postgres":
        with store.pg_connect(store.database_url()) as c:
            c.execute(statement.replace("?", "%s"), params)
    else:
        db = sqlite3.connect(server.state_dir / "sqlite_default.db", timeout=10)
        try:
            with db:
                db.execute(statement, params)
        finally:
            db.close()


def cells(server):
    """Every bytes value in every table of the metadata store."""
    for table, rows in store.tables(server.state_dir).items():
        for row in rows:
            for cell in row:
                if isinstance(cell, (bytes, bytearray, memoryview)):
                    yield table, bytes(cell)


def wrapped_dek(server, tenant_id, name, version) -> bytes:
    rows = [r for r in store.tables(server.state_dir)["data_keys"]
            if r[0] == tenant_id and r[1] == name and r[2] == version]
    assert len(rows) == 1, rows
    return bytes(rows[0][3])


def test_rotate_retire_reactivate_destroy(server, tenant):
    name = tenant.create_scheme()["name"]
    old = tenant.protect(name, ["one", "two"])
    assert ok(tenant.admin.post(f"/v1/schemes/{name}/rotate"))["current_version"] == 2
    new = tenant.protect(name, ["three"])
    assert re.fullmatch(TOKEN_RE.format(scheme=name, version=2), new[0]), new
    assert tenant.unprotect(old + new) == ["one", "two", "three"]

    raised = ok(patch(tenant.admin, name, {"min_decryption_version": 2}))
    assert (raised["min_decryption_version"], raised["current_version"]) == (2, 2)
    assert ok(tenant.app.get(f"/v1/schemes/{name}"))["min_decryption_version"] == 2
    assert states(tenant, name) == [(1, "retired"), (2, "active")]
    results = tenant.unprotect_results(old + new)
    assert item_errors(results) == ["key_version_retired", "key_version_retired", None]
    assert results[2] == {"value": "three"}

    assert ok(patch(tenant.admin, name, {"min_decryption_version": 1}))["min_decryption_version"] == 1
    assert states(tenant, name) == [(1, "active"), (2, "active")]
    assert tenant.unprotect(old + new) == ["one", "two", "three"]

    ok(patch(tenant.admin, name, {"min_decryption_version": 2}))
    v1_blob = wrapped_dek(server, tenant.id, name, 1)
    assert len(v1_blob) > 0
    gone = ok(destroy(tenant.as_("admin", sub="alice"), name, 1))
    assert set(gone) == VERSION_FIELDS | {"destroyed_at", "destroyed_by"}, gone
    assert (gone["version"], gone["state"], gone["destroyed_by"]) == (1, "destroyed", "alice"), gone
    assert RFC3339.match(gone["destroyed_at"]), gone
    assert states(tenant, name) == [(1, "destroyed"), (2, "active")]
    assert codes(tenant, old + new) == ["key_version_destroyed", "key_version_destroyed", None]
    assert wrapped_dek(server, tenant.id, name, 1) == b""
    assert not [t for t, cell in cells(server) if v1_blob in cell], "the destroyed wrapped key is still stored"
    # the old version can never come back, and the scheme goes on working
    err(patch(tenant.admin, name, {"min_decryption_version": 1}), 409, "key_version_destroyed")
    assert tenant.unprotect(tenant.protect(name, ["four"])) == ["four"]


def test_versions_view_shows_state_kek_and_time_never_key_bytes(tenant):
    name = tenant.create_scheme()["name"]
    before = time.time()
    ok(tenant.admin.post(f"/v1/schemes/{name}/rotate"))
    vs = versions(tenant, name)
    assert [v["version"] for v in vs] == [1, 2]
    for v in vs:
        assert set(v) == VERSION_FIELDS, v
        assert v["state"] == "active" and v["kek"] == {"provider": "local"}, v
        assert isinstance(v["kek_version"], str) and RFC3339.match(v["created_at"]), v
    assert vs[0]["kek_version"] == vs[1]["kek_version"]  # the same local KEK
    from datetime import datetime
    assert datetime.fromisoformat(vs[1]["created_at"]).timestamp() >= int(before)
    # any authenticated caller of the tenant may look, like the scheme view
    assert ok(tenant.as_("someone").get(f"/v1/schemes/{name}/versions"))["versions"] == vs
    err(tenant.admin.get("/v1/schemes/nope/versions"), 404, "scheme_not_found")


def test_forbidden_transitions_change_nothing(tenant):
    name = tenant.create_scheme()["name"]
    for _ in range(2):
        ok(tenant.admin.post(f"/v1/schemes/{name}/rotate"))
    tokens = [tenant.protect(name, [f"v{v}"])[0] for v in [3]]

    def unchanged(expect_min, expect_states):
        s = ok(tenant.app.get(f"/v1/schemes/{name}"))
        assert (s["min_decryption_version"], s["current_version"]) == (expect_min, 3), s
        assert states(tenant, name) == expect_states

    all_active = [(1, "active"), (2, "active"), (3, "active")]
    err(destroy(tenant.admin, name, 3), 409, "key_version_active")  # the current version
    err(destroy(tenant.admin, name, 1), 409, "key_version_active")  # active: at or above the minimum
    err(destroy(tenant.admin, name, 4), 404, "key_version_not_found")
    err(destroy(tenant.admin, "nope", 1), 404, "scheme_not_found")
    for bad in ["0", "x", "-1", "1.0", "4294967296"]:
        err(destroy(tenant.admin, name, bad), 422, "invalid_field")
    err(patch(tenant.admin, name, {"min_decryption_version": 4}), 404, "key_version_not_found")  # above current
    err(patch(tenant.admin, name, {"min_decryption_version": 0}), 422, "invalid_field")
    unchanged(1, all_active)

    ok(patch(tenant.admin, name, {"min_decryption_version": 3}))
    err(destroy(tenant.admin, name, 3), 409, "key_version_active")  # current, even at the minimum
    ok(destroy(tenant.admin, name, 2))
    err(destroy(tenant.admin, name, 2), 409, "key_version_destroyed")  # irreversible, once
    for lower in [2, 1]:  # at or below a destroyed version
        err(patch(tenant.admin, name, {"min_decryption_version": lower}), 409, "key_version_destroyed")
    unchanged(3, [(1, "retired"), (2, "destroyed"), (3, "active")])
    assert tenant.unprotect(tokens) == ["v3"]


def test_lifecycle_permissions(tenant):
    name = tenant.create_scheme(policy={**DEFAULT_POLICY, "admin": ["keyadmin"]})["name"]
    ok(tenant.admin.post(f"/v1/schemes/{name}/rotate"))
    for api in [tenant.app, tenant.support, tenant.as_()]:
        err(patch(api, name, {"min_decryption_version": 2}), 403, "forbidden")
    assert ok(patch(tenant.as_("keyadmin"), name, {"min_decryption_version": 2}))["min_decryption_version"] == 2
    for api in [tenant.app, tenant.support, tenant.analyst]:
        err(destroy(api, name, 1), 403, "forbidden")
    assert states(tenant, name) == [(1, "retired"), (2, "active")]
    assert ok(destroy(tenant.as_("keyadmin"), name, 1))["state"] == "destroyed"
    ok(patch(tenant.admin, name, {"rotation_period": "7d"}))  # the tenant role admin, too


def test_lifecycle_is_per_tenant(server):
    a, b = server.tenant(), server.tenant()
    name = a.create_scheme()["name"]
    ok(a.admin.post(f"/v1/schemes/{name}/rotate"))
    err(b.admin.get(f"/v1/schemes/{name}/versions"), 404, "scheme_not_found")
    err(patch(b.admin, name, {"min_decryption_version": 2}), 404, "scheme_not_found")
    err(destroy(b.admin, name, 1), 404, "scheme_not_found")
    assert states(a, name) == [(1, "active"), (2, "active")]


@pytest.mark.parametrize("body,status,code", [
    ({}, 422, "invalid_field"),
    ({"min_decryption_version": "2"}, 422, "invalid_field"),
    ({"min_decryption_version": 1.5}, 422, "invalid_field"),
    ({"min_decryption_version": -1}, 422, "invalid_field"),
    ({"min_decryption_version": 2 ** 40}, 422, "invalid_field"),
    ({"rotation_period": "1w"}, 422, "invalid_field"),
    ({"rotation_period": "0d"}, 422, "invalid_field"),
    ({"rotation_period": "3651d"}, 422, "invalid_field"),
    ({"rotation_period": 30}, 400, "invalid_request"),
    ({"current_version": 5}, 400, "invalid_request"),
], ids=["empty", "string", "fraction", "negative", "huge", "unit", "zero", "too-long", "number", "unknown"])
def test_bad_patch_bodies(tenant, body, status, code):
    s = tenant.create_scheme(rotation_period="30d")
    err(patch(tenant.admin, s["name"], body), status, code)
    assert ok(tenant.app.get(f"/v1/schemes/{s['name']}")) == s


def test_rotation_period_on_create_and_patch(tenant):
    s = tenant.create_scheme(rotation_period="720h")
    assert (s["rotation_period"], s["min_decryption_version"]) == ("30d", 1)  # shown in its largest unit
    assert tenant.create_scheme()["rotation_period"] is None
    err(tenant.admin.post("/v1/schemes", tenant.scheme_body(rotation_period="soon")), 422, "invalid_field")
    name = s["name"]
    assert ok(patch(tenant.admin, name, {"rotation_period": "90m"}))["rotation_period"] == "90m"
    assert ok(patch(tenant.admin, name, {"rotation_period": None}))["rotation_period"] is None
    assert ok(tenant.app.get(f"/v1/schemes/{name}"))["rotation_period"] is None


def test_protect_past_rotation_period_rotates_first(tenant):
    name = tenant.create_scheme(rotation_period="1s")["name"]
    first = ok(tenant.app.post("/v1/protect", {"scheme": name, "values": ["a"]}))
    time.sleep(1.1)
    second = ok(tenant.app.post("/v1/protect", {"scheme": name, "values": ["b"]}))
    assert (first["key_version"], second["key_version"]) == (1, 2)
    assert [v["version"] for v in versions(tenant, name)] == [1, 2]
    tokens = [first["results"][0]["value"], second["results"][0]["value"]]
    assert tenant.unprotect(tokens) == ["a", "b"]


def test_concurrent_protects_past_rotation_period_make_exactly_one_version(server, tenant):
    name = tenant.create_scheme(rotation_period="30d")["name"]
    # the current version was made 31 days ago (written straight into the store)
    sql(server, "UPDATE data_keys SET created_at = created_at - ? WHERE tenant = ? AND scheme = ?",
        (31 * 86400, tenant.id, name))
    go = threading.Barrier(16)
    answers: list = [None] * 16

    def protect(i):
        api = tenant.app
        go.wait()
        answers[i] = api.post("/v1/protect", {"scheme": name, "values": [f"v{i}"]})

    threads = [threading.Thread(target=protect, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    bodies = [ok(r) for r in answers]
    assert [b["key_version"] for b in bodies] == [2] * 16
    assert [v["version"] for v in versions(tenant, name)] == [1, 2]
    assert ok(tenant.app.get(f"/v1/schemes/{name}"))["current_version"] == 2
    tokens = [b["results"][0]["value"] for b in bodies]
    assert tenant.unprotect(tokens) == [f"v{i}" for i in range(16)]
    # the new version is fresh: the next protect does not rotate again
    assert ok(tenant.app.post("/v1/protect", {"scheme": name, "values": ["x"]}))["key_version"] == 2


def test_destroy_drops_the_cached_copy(start_server):
    s = start_server("lifecycle-cache", dek_cache="true", dek_cache_key=CACHE_KEY)
    t = s.tenant()
    name = t.create_scheme()["name"]
    old = t.protect(name, ["cached"])
    assert t.unprotect(old) == ["cached"]  # version 1's key is now in the DEK cache
    ok(t.admin.post(f"/v1/schemes/{name}/rotate"))
    ok(patch(t.admin, name, {"min_decryption_version": 2}))
    assert codes(t, old) == ["key_version_retired"]
    ok(destroy(t.admin, name, 1))
    r = t.support.post("/v1/unprotect", {"values": old})
    assert item_errors(ok(r)["results"]) == ["key_version_destroyed"]
    assert r.headers["veil-kms-calls"] == "wraps=0, unwraps=0, http=0"
    new = t.protect(name, ["fresh"])
    assert t.unprotect(new) == ["fresh"]


def rewrap(api, tokens, **kw):
    body = ok(api.post("/v1/rewrap", {"values": tokens, **kw}))
    assert set(body) == {"results"} and len(body["results"]) == len(tokens), body
    return body["results"]


def test_rewrap_moves_tokens_to_the_current_version(tenant):
    name = tenant.create_scheme(policy={**DEFAULT_POLICY, "rewrap": ["converter"]})["name"]
    assert ok(tenant.app.get(f"/v1/schemes/{name}"))["policy"]["rewrap"] == ["converter"]
    old = tenant.protect(name, ["alpha", "beta"])
    bound = tenant.protect(name, ["gamma"], subject="customer-42", context="orders.card")
    ok(tenant.admin.post(f"/v1/schemes/{name}/rotate"))
    current = tenant.protect(name, ["delta"])
    results = rewrap(tenant.as_("converter"), old + current)
    assert item_errors(results) == [None] * 3
    new = [r["value"] for r in results]
    for t in new:
        assert re.fullmatch(TOKEN_RE.format(scheme=name, version=2), t), t
    assert new[2] == current[0]  # already current: unchanged
    assert len(set(new[:2]) | set(old)) == 4  # freshly sealed, not the old bytes
    assert tenant.unprotect(new) == ["alpha", "beta", "delta"]
    # subject and context stay bound: given again as at protect, and needed to unprotect after
    r = rewrap(tenant.as_("converter"), bound, subject="customer-42", context="orders.card")
    assert re.fullmatch(TOKEN_RE.format(scheme=name, version=2), r[0]["value"]), r
    assert tenant.unprotect([r[0]["value"]], subject="customer-42", context="orders.card") == ["gamma"]
    assert codes(tenant, [r[0]["value"]]) == ["decryption_failed"]
    assert item_errors(rewrap(tenant.as_("converter"), bound, context="orders.card")) == ["decryption_failed"]
    # then the old version can be retired and destroyed without losing these values
    ok(patch(tenant.admin, name, {"min_decryption_version": 2}))
    ok(destroy(tenant.admin, name, 1))
    assert tenant.unprotect(new) == ["alpha", "beta", "delta"]


def test_rewrap_gives_tokens_never_plaintext_and_needs_its_role(tenant):
    name = tenant.create_scheme(policy={**DEFAULT_POLICY, "rewrap": ["converter"]})["name"]
    old = tenant.protect(name, ["secret value"])
    ok(tenant.admin.post(f"/v1/schemes/{name}/rotate"))
    converter = tenant.as_("converter")
    r = converter.post("/v1/rewrap", {"values": old})
    assert "secret value" not in r.text
    assert [x["value"] for x in ok(r)["results"]][0].startswith(f"veil.1.{name}.2.")
    err(converter.post("/v1/unprotect", {"values": old}), 403, "forbidden")  # rewrap is not unprotect
    for api in [tenant.app, tenant.support, tenant.analyst]:
        err(api.post("/v1/rewrap", {"values": old}), 403, "forbidden")
    assert item_errors(rewrap(tenant.admin, old)) == [None]  # the tenant admin may
    # one scheme the caller may not rewrap refuses the whole batch before anything is decrypted
    other = tenant.create_scheme()["name"]
    err(converter.post("/v1/rewrap", {"values": old + tenant.protect(other, ["x"])}), 403, "forbidden")


def test_rewrap_per_item_errors_are_those_of_unprotect(tenant):
    name = tenant.create_scheme()["name"]
    v1 = tenant.protect(name, ["one"])
    for _ in range(2):
        ok(tenant.admin.post(f"/v1/schemes/{name}/rotate"))
    v3 = tenant.protect(name, ["three"])[0]
    wrong_version = v3.replace(f".{name}.3.", f".{name}.2.")  # version 2's header on version 3's bytes
    head, payload = v3.rsplit(".", 1)
    tampered = f"{head}.{payload[:10]}{'A' if payload[10] != 'A' else 'B'}{payload[11:]}"  # a ciphertext byte
    ok(patch(tenant.admin, name, {"min_decryption_version": 2}))
    results = rewrap(tenant.admin, v1 + [wrong_version, "not a token", tampered, f"veil.1.nope.1.{'A' * 40}", v3])
    assert item_errors(results) == ["key_version_retired", "decryption_failed", "invalid_token",
                                    "decryption_failed", "decryption_failed", None]
    assert results[5] == {"value": v3}
    ok(destroy(tenant.admin, name, 1))
    assert item_errors(rewrap(tenant.admin, v1)) == ["key_version_destroyed"]
    err(tenant.admin.post("/v1/rewrap", {"values": v1, "encoding": "base64"}), 400, "invalid_request")
    err(tenant.admin.post("/v1/rewrap", {"values": v1, "context": "c" * 1025}), 422, "invalid_field")
    err(tenant.admin.post("/v1/rewrap", {"values": ["x"] * 1001}), 413, "batch_too_large")
