"""API keys (issue 14 item 1, docs/auth.md § API keys): created by a tenant admin and shown once,
accepted as `Authorization: Bearer veil_…` and as `X-API-Key: veil_…`, listed without any secret,
revoked or expired → 401 `invalid_credentials` on the very next request; only the SHA-256 of the
secret is stored (every column of every table scanned); roles capped by the creator's."""
from __future__ import annotations

import base64
import hashlib
import re
import time
from datetime import datetime, timedelta, timezone

import requests

import store
from veilkit import TIMEOUT, err, ok

KEY_RE = re.compile(r"^veil_([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$")
LISTED = {"id", "label", "roles", "created_at", "expires_at", "last_used_at", "revoked_at"}


def with_key(server, key: str, header: str = "bearer") -> dict:
    return {"authorization": f"Bearer {key}"} if header == "bearer" else {"x-api-key": key}


def call(server, key, method, path, body=None, header="bearer"):
    return requests.request(method, server.url + path, json=body, headers=with_key(server, key, header),
                            timeout=TIMEOUT)


def create_key(t, roles=("app",), creator=None, **fields) -> dict:
    api = creator or t.as_("admin", *roles)
    body = ok(api.post("/v1/api-keys", {"label": "cron job", "roles": list(roles), **fields}), 201)
    assert set(body) == LISTED | {"key"}, body
    m = KEY_RE.match(body["key"])
    assert m and m.group(1) == body["id"], body
    return body


def test_lifecycle_both_headers_list_and_revoke(server):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    r = t.as_("admin", "app", "support").post("/v1/api-keys", {"label": "warehouse", "roles": ["app", "support"]})
    created = ok(r, 201)
    assert r.headers.get("cache-control") == "no-store"
    assert (created["label"], sorted(created["roles"]), created["expires_at"], created["revoked_at"],
            created["last_used_at"]) == ("warehouse", ["app", "support"], None, None, None)
    key = created["key"]
    # both header forms work for protect and unprotect
    tokens = []
    for header in ("bearer", "x-api-key"):
        body = ok(call(server, key, "POST", "/v1/protect", {"scheme": scheme, "values": ["4111"]}, header))
        tokens.append(body["results"][0]["value"])
        back = ok(call(server, key, "POST", "/v1/unprotect", {"values": tokens[-1:]}, header))
        assert back["results"] == [{"value": "4111"}]
    # the key's roles only: no admin route
    err(call(server, key, "GET", "/v1/api-keys"), 403, "forbidden")
    # both credentials at once are refused, not one preferred
    r = requests.post(server.url + "/v1/protect", json={"scheme": scheme, "values": ["x"]}, timeout=TIMEOUT,
                      headers={"authorization": f"Bearer {t.app.token}", "x-api-key": key})
    err(r, 401, "invalid_credentials")
    # listed without the secret or its hash; last_used_at was set by the use above
    listed = ok(t.admin.get("/v1/api-keys"))["api_keys"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert set(listed[0]) == LISTED and listed[0]["last_used_at"] is not None, listed
    secret = KEY_RE.match(key).group(2)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(listed) and digest not in str(listed).lower()
    # revoke → the very next request is refused, with either header
    revoked = ok(requests.delete(server.url + f"/v1/api-keys/{created['id']}", timeout=TIMEOUT,
                                 headers={"authorization": f"Bearer {t.admin.token}"}))
    assert revoked["id"] == created["id"] and revoked["revoked_at"] is not None and "key" not in revoked
    for header in ("bearer", "x-api-key"):
        err(call(server, key, "POST", "/v1/protect", {"scheme": scheme, "values": ["x"]}, header), 401,
            "invalid_credentials")
    again = ok(requests.delete(server.url + f"/v1/api-keys/{created['id']}", timeout=TIMEOUT,
                               headers={"authorization": f"Bearer {t.admin.token}"}))
    assert again["revoked_at"] == revoked["revoked_at"], "the first revocation stands"


def test_expired_key_is_refused(server):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    soon = (datetime.now(timezone.utc) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    created = create_key(t, expires_at=soon)
    assert created["expires_at"] == soon
    ok(call(server, created["key"], "POST", "/v1/protect", {"scheme": scheme, "values": ["x"]}))
    time.sleep(3.1)
    err(call(server, created["key"], "POST", "/v1/protect", {"scheme": scheme, "values": ["x"]}), 401,
        "invalid_credentials")
    past = (datetime.now(timezone.utc) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    err(t.admin.post("/v1/api-keys", {"label": "x", "roles": ["admin"], "expires_at": past}), 422, "invalid_field")


def test_wrong_unknown_and_malformed_keys(server):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    created = create_key(t)
    kid, secret = KEY_RE.match(created["key"]).groups()
    flipped = ("B" if secret[0] == "A" else "A") + secret[1:]
    for bad in (f"veil_{kid}.{flipped}", f"veil_{'0' * 32}.{secret}", f"veil_{kid}", "veil_", f"veil_{kid}.{secret}x"):
        for header in ("bearer", "x-api-key"):
            e = err(call(server, bad, "POST", "/v1/protect", {"scheme": scheme, "values": ["x"]}, header), 401,
                    "invalid_credentials")
            assert secret not in e["message"] and kid not in e["message"]


def test_roles_are_capped_by_the_creator(server):
    t = server.tenant()
    err(t.as_("admin").post("/v1/api-keys", {"label": "x", "roles": ["support"]}), 403, "forbidden")
    err(t.as_("app", "support").post("/v1/api-keys", {"label": "x", "roles": ["app"]}), 403, "forbidden")
    for body in ({"label": "", "roles": ["admin"]}, {"label": "x", "roles": []},
                 {"label": "x" * 129, "roles": ["admin"]}, {"label": "x", "roles": ["a b"]}, {"label": "x", "roles": ["admin", "admin"]},
                 {"label": "x", "roles": ["admin"], "expires_at": "tomorrow"}):
        err(t.admin.post("/v1/api-keys", body), 422, "invalid_field")
    err(t.admin.post("/v1/api-keys", {"label": "x"}), 400, "invalid_request")
    err(t.admin.post("/v1/api-keys", {"label": "x", "roles": ["admin"], "secret": "mine"}), 400, "invalid_request")
    # an admin key may create keys, within its own roles
    admin_key = create_key(t, roles=("admin",))["key"]
    r = call(server, admin_key, "POST", "/v1/api-keys", {"label": "child", "roles": ["admin"]})
    assert KEY_RE.match(ok(r, 201)["key"])
    err(call(server, admin_key, "POST", "/v1/api-keys", {"label": "child", "roles": ["app"]}), 403, "forbidden")


def test_tenants_are_isolated(server):
    a, b = server.tenant(), server.tenant()
    created = create_key(a)
    assert ok(b.admin.get("/v1/api-keys"))["api_keys"] == []
    r = requests.delete(server.url + f"/v1/api-keys/{created['id']}", timeout=TIMEOUT,
                        headers={"authorization": f"Bearer {b.admin.token}"})
    err(r, 404, "api_key_not_found")
    # the key acts in its own tenant only: B's scheme is not found for it
    b_scheme = b.create_scheme()["name"]
    err(call(server, created["key"], "POST", "/v1/protect", {"scheme": b_scheme, "values": ["x"]}), 404,
        "scheme_not_found")
    r = requests.delete(server.url + "/v1/api-keys/not-an-id", timeout=TIMEOUT,
                        headers={"authorization": f"Bearer {a.admin.token}"})
    err(r, 404, "api_key_not_found")


def test_only_the_sha256_of_the_secret_is_stored(server):
    t = server.tenant()
    created = create_key(t, roles=("app", "support"))
    kid, secret = KEY_RE.match(created["key"]).groups()
    raw = base64.urlsafe_b64decode(secret + "=")
    assert len(raw) == 32
    digest = hashlib.sha256(secret.encode()).digest()
    found_digest = []
    for table, rows in store.tables(server.state_dir).items():
        for row in rows:
            for col in row:
                blob = bytes(col) if isinstance(col, (bytes, bytearray, memoryview)) else str(col).encode()
                assert secret.encode() not in blob and raw not in blob, f"{table} holds the secret"
                assert created["key"].encode() not in blob, f"{table} holds the key"
                if digest in blob:
                    found_digest.append((table, row[0]))
    assert found_digest == [("api_keys", kid)], found_digest
