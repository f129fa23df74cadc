"""Schemes: create, list, get, rotate, tenant isolation."""
import re
import time
from datetime import datetime

import pytest

from veilkit import DEFAULT_POLICY, TOKEN_RE, err, new_name, ok

ALGORITHMS = ["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305"]
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def test_create_returns_the_documented_scheme(tenant):
    name = new_name()
    mask = {"rule": "keep_last", "n": 4, "char": "*"}
    before = int(time.time())
    s = tenant.create_scheme(name, mask=mask)
    after = time.time()
    assert s["name"] == name
    assert s["algorithm"] == "aes-256-gcm"
    assert s["kek"] == {"provider": "local"}
    assert s["policy"] == DEFAULT_POLICY
    assert s["mask"] == mask
    assert s["current_version"] == 1
    assert isinstance(s["created_at"], str) and RFC3339.match(s["created_at"]), s["created_at"]
    assert before <= datetime.fromisoformat(s["created_at"]).timestamp() <= after, s["created_at"]  # the creation time
    assert ok(tenant.app.get(f"/v1/schemes/{name}")) == s


def test_create_defaults_algorithm_and_mask(tenant):
    s = tenant.create_scheme(algorithm=None)  # no algorithm, no mask
    assert s["algorithm"] == "aes-256-gcm"
    assert s["mask"] == {"rule": "redact"}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_round_trips(tenant, algorithm):
    s = tenant.create_scheme(algorithm=algorithm)
    assert s["algorithm"] == algorithm
    values = ["4111111111111111", "jane@example.com", "ünïcødé ✓"]
    tokens = tenant.protect(s["name"], values)
    for t in tokens:
        assert re.fullmatch(TOKEN_RE.format(scheme=s["name"], version=1), t), t
    assert tenant.unprotect(tokens) == values


def test_list_is_sorted_by_name(tenant):
    for name in ["b-mid", "c-last", "a-first"]:
        tenant.create_scheme(name)
    body = ok(tenant.as_("someone").get("/v1/schemes"))  # any authenticated caller of the tenant
    assert [s["name"] for s in body["schemes"]] == ["a-first", "b-mid", "c-last"]
    assert all(s["current_version"] == 1 for s in body["schemes"])


def test_get_unknown_scheme_is_404(tenant):
    err(tenant.admin.get("/v1/schemes/nope"), 404, "scheme_not_found")


def test_duplicate_is_409(tenant):
    s = tenant.create_scheme()
    err(tenant.admin.post("/v1/schemes", tenant.scheme_body(s["name"], algorithm="chacha20-poly1305")),
        409, "scheme_exists")
    assert ok(tenant.admin.get(f"/v1/schemes/{s['name']}")) == s  # the first one is untouched


@pytest.mark.parametrize("fields", [
    {"name": "Bad.Name"},
    {"name": "has space"},
    {"name": "-leading-dash"},
    {"name": "a" * 65},
    {"name": ""},
    {"algorithm": "rot13"},
    {"mask": {"rule": "scramble"}},
    {"kek": {"provider": "vault9000"}},
], ids=["dot-upper", "space", "leading-dash", "too-long", "empty", "algorithm", "mask-rule", "kek-provider"])
def test_invalid_fields_are_422_and_leave_nothing_behind(tenant, fields):
    body = {**tenant.scheme_body(), **fields}
    err(tenant.admin.post("/v1/schemes", body), 422, "invalid_field")
    if "name" in fields:
        assert ok(tenant.admin.get("/v1/schemes"))["schemes"] == []
    else:  # a valid name: no partial write under it, and the name is still free
        err(tenant.admin.get(f"/v1/schemes/{body['name']}"), 404, "scheme_not_found")
        tenant.create_scheme(body["name"])


def test_non_admin_cannot_create(tenant):
    body = tenant.scheme_body()
    for roles in [("app",), ("support", "analyst"), ()]:
        err(tenant.as_(*roles).post("/v1/schemes", body), 403, "forbidden")
    err(tenant.admin.get(f"/v1/schemes/{body['name']}"), 404, "scheme_not_found")


def test_rotate_keeps_old_tokens_and_issues_version_2(tenant):
    s = tenant.create_scheme()
    name = s["name"]
    old = tenant.protect(name, ["before rotation"])
    rotated = ok(tenant.admin.post(f"/v1/schemes/{name}/rotate"))
    assert rotated["current_version"] == 2
    for field in ["name", "algorithm", "kek", "policy", "mask", "created_at"]:
        assert rotated[field] == s[field], field
    assert ok(tenant.app.get(f"/v1/schemes/{name}"))["current_version"] == 2

    body = ok(tenant.app.post("/v1/protect", {"scheme": name, "values": ["after rotation"]}))
    assert body["key_version"] == 2 and body["scheme"] == name
    new = body["results"][0]["value"]
    assert re.fullmatch(TOKEN_RE.format(scheme=name, version=2), new), new
    assert re.fullmatch(TOKEN_RE.format(scheme=name, version=1), old[0]), old
    assert tenant.unprotect(old + [new]) == ["before rotation", "after rotation"]


def test_rotate_permissions(tenant):
    s = tenant.create_scheme(policy={**DEFAULT_POLICY, "admin": ["keyadmin"]})
    assert ok(tenant.as_("keyadmin").post(f"/v1/schemes/{s['name']}/rotate"))["current_version"] == 2
    assert ok(tenant.admin.post(f"/v1/schemes/{s['name']}/rotate"))["current_version"] == 3  # tenant admin
    err(tenant.app.post(f"/v1/schemes/{s['name']}/rotate"), 403, "forbidden")
    assert ok(tenant.app.get(f"/v1/schemes/{s['name']}"))["current_version"] == 3
    err(tenant.admin.post("/v1/schemes/nope/rotate"), 404, "scheme_not_found")


def test_schemes_are_invisible_to_other_tenants(server):
    a, b = server.tenant(), server.tenant()
    s = a.create_scheme()
    name = s["name"]
    err(b.admin.get(f"/v1/schemes/{name}"), 404, "scheme_not_found")
    assert ok(b.admin.get("/v1/schemes"))["schemes"] == []
    err(b.app.post("/v1/protect", {"scheme": name, "values": ["x"]}), 404, "scheme_not_found")
    err(b.analyst.post("/v1/mask", {"scheme": name, "values": ["x"]}), 404, "scheme_not_found")
    err(b.admin.post(f"/v1/schemes/{name}/rotate"), 404, "scheme_not_found")
    assert ok(a.admin.get(f"/v1/schemes/{name}"))["current_version"] == 1
