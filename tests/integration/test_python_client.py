"""Issue 15 item 4: the Python client (clients/python, `veil_client`) against the real component
through the real host: batching under the deployment's limits (read from its /v1/openapi.json),
per-item errors with the API's codes, whole-request errors, API keys and JWTs, and a retry of a
real 503 `overloaded` after the host's `Retry-After`."""
import re
import threading
import time

import pytest

from faults import lock_flags, serving, write_lock
from veil_client import ItemErrors, RetryPolicy, VeilClient, VeilError
from veilkit import TOKEN_RE, hs256, ok

POLICY = {"protect": ["app"], "unprotect": ["support"], "mask": ["analyst"], "rewrap": ["app"], "admin": ["admin"]}


def admin_client(server, tenant_id) -> VeilClient:
    return VeilClient(server.url, token=lambda: hs256(tenant_id, ["admin", "app", "support", "analyst"]))


def api_key(server, tenant_id, roles) -> str:
    admin = server.api(hs256(tenant_id, ["admin", "app", "support", "analyst"]))
    return ok(admin.post("/v1/api-keys", {"label": "python client", "roles": list(roles)}), 201)["key"]


@pytest.fixture
def scheme(server, tenant):
    return admin_client(server, tenant.id).create_scheme(
        f"py-{tenant.id}", kek={"provider": "local"}, policy=POLICY, mask={"rule": "keep_last", "n": 4})["name"]


def test_a_long_column_round_trips_with_nulls_in_requests_of_max_batch(server, tenant, scheme):
    veil = VeilClient(server.url, api_key=api_key(server, tenant.id, ["app", "support"]))
    values = [None if i % 7 == 3 else f"4111-{i:06d}-ünï" for i in range(2500)]
    res = veil.protect(scheme, values)
    assert res.requests_sent == 1 + 3  # the openapi document once, then 2500 - 357 nulls in 1000s
    assert veil.max_batch == 1000 and res.key_versions == (1,)
    tokens = res.values()
    token_re = re.compile(TOKEN_RE.format(scheme=re.escape(scheme), version=1))
    assert all((v is None) == (t is None) for v, t in zip(values, tokens))
    assert all(token_re.fullmatch(t) for t in tokens if t is not None)
    assert len(set(t for t in tokens if t)) == len([v for v in values if v])
    assert veil.unprotect(tokens, scheme=scheme).values() == values


def test_the_deployments_max_batch_is_read_and_a_wrong_one_corrected(start_server):
    s = start_server("client-limits", max_batch="7", max_value_bytes="16")
    t = s.tenant()
    name = admin_client(s, t.id).create_scheme("limits", kek={"provider": "local"}, policy=POLICY)["name"]
    read = VeilClient(s.url, token=hs256(t.id, ["app"]))
    res = read.protect(name, [f"v{i}" for i in range(20)])
    assert read.max_batch == 7 and res.requests_sent == 1 + 3
    told = VeilClient(s.url, token=hs256(t.id, ["app"]), max_batch=50)  # more than the deployment allows
    res = told.protect(name, [f"v{i}" for i in range(20)])
    assert told.max_batch <= 7 and len(res.values()) == 20
    # a value over max_value_bytes is that item's error, not the request's
    res = read.protect(name, ["short", "x" * 17, None])
    assert [r.error.code if r.error else None for r in res] == [None, "value_too_large", None]
    assert res[2].value is None


def test_per_item_errors_carry_the_apis_codes(server, tenant, scheme):
    admin = admin_client(server, tenant.id)
    other = admin.create_scheme(f"other-{tenant.id}", kek={"provider": "local"}, policy=POLICY)["name"]
    mine = admin.protect(scheme, ["mine"]).values()[0]
    theirs = admin.protect(other, ["theirs"]).values()[0]
    k = len(mine) - 12  # inside the sealed part: still base64url, no longer opens
    tampered = mine[:k] + ("A" if mine[k] != "A" else "B") + mine[k + 1:]
    res = admin.unprotect([mine, theirs, "not a token", tampered, None], scheme=scheme)
    assert [r.error.code if r.error else None for r in res] == [
        None, "scheme_mismatch", "invalid_token", "decryption_failed", None]
    assert res[0].value == "mine"
    with pytest.raises(ItemErrors) as e:
        res.values()
    assert set(e.value.errors) == {1, 2, 3}
    assert "mine" not in str(e.value) and theirs not in str(e.value)


def test_mask_rewrap_and_rotate(server, tenant, scheme):
    admin = admin_client(server, tenant.id)
    assert admin.mask(scheme, ["4111111111111111", None]).values() == ["************1111", None]
    old = admin.protect(scheme, ["a", "b"], context="orders.card").values()
    assert admin.rotate_scheme(scheme)["current_version"] == 2
    new = admin.rewrap(old, scheme=scheme, context="orders.card")
    assert all(t.startswith(f"veil.1.{scheme}.2.") for t in new.values())
    assert admin.unprotect(new.values(), context="orders.card").values() == ["a", "b"]
    assert admin.get_scheme(scheme)["current_version"] == 2
    assert scheme in [s["name"] for s in admin.list_schemes()]


def test_whole_request_errors_are_veil_errors(server, tenant, scheme):
    app_only = VeilClient(server.url, api_key=api_key(server, tenant.id, ["app"]))
    token = app_only.protect(scheme, ["4111111111111111"]).values()[0]
    with pytest.raises(VeilError) as e:
        app_only.unprotect([token])
    assert (e.value.status, e.value.code, e.value.attempts) == (403, "forbidden", 1)
    with pytest.raises(VeilError) as e:
        app_only.protect("no-such-scheme", ["x"])
    assert (e.value.status, e.value.code) == (404, "scheme_not_found")
    with pytest.raises(VeilError) as e:
        VeilClient(server.url, api_key="veil_" + "0" * 32 + "." + "A" * 43).protect(scheme, ["x"])
    assert (e.value.status, e.value.code) == (401, "invalid_credentials")
    assert "4111111111111111" not in str(e.value) and token not in str(e.value)


def test_a_real_overloaded_answer_is_retried_after_retry_after(tmp_path):
    lock_ms = 4000
    with serving(tmp_path / "busy", "--max-instances", "1", "--queue-timeout-ms", "300", *lock_flags(lock_ms)) as s:
        t = s.tenant()
        name = admin_client(s, t.id).create_scheme("busy", kek={"provider": "local"}, policy=POLICY)["name"]
        waits: list[float] = []

        def sleep(seconds):
            waits.append(seconds)
            time.sleep(seconds)

        veil = VeilClient(s.url, token=hs256(t.id, ["app"]), max_batch=10,
                          retry=RetryPolicy(attempts=10, sleep=sleep))
        out: dict = {}
        with write_lock(s):
            # a scheme creation stuck behind the lock holds the only instance
            blocker = threading.Thread(target=lambda: out.update(
                blocked=t.admin.post("/v1/schemes", t.scheme_body())))
            blocker.start()
            time.sleep(1.0)
            client = threading.Thread(target=lambda: out.update(res=veil.protect(name, ["4111111111111111"])))
            client.start()
            time.sleep(2.0)
        blocker.join(30)
        client.join(30)
        assert out["blocked"].status_code == 201  # it went through once the lock was gone
        tokens = out["res"].values()
        assert tokens[0].startswith(f"veil.1.{name}.1.")
        assert waits and all(w >= 1.0 for w in waits), waits  # each wait at least the host's Retry-After: 1
        assert out["res"].requests_sent == len(waits) + 1


def test_a_smaller_body_limit_than_the_client_was_told_is_met_by_halving(start_server):
    s = start_server("client-body", max_body_bytes="4096")
    t = s.tenant()
    name = admin_client(s, t.id).create_scheme("body", kek={"provider": "local"}, policy=POLICY)["name"]
    veil = VeilClient(s.url, token=hs256(t.id, ["app", "support"]), max_batch=1000)  # told the 1 MiB default
    values = [f"{i:05d}" + "x" * 95 for i in range(200)]  # ~21 KB in one body
    tokens = veil.protect(name, values).values()
    assert veil.max_body_bytes <= 4096
    assert veil.unprotect(tokens, scheme=name).values() == values
