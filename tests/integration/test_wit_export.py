"""Issue 18 item 4: the exported `veil:gateway/protection` interface, called in process from the
host (`veil wit-call`, wasmtime component bindings of wit/veil.wit) on the same deployment as a
running server: tokens made by one door open through the other, and every answer — per-item
errors and whole-call errors alike (bad scheme, forbidden, invalid token, bad credential, batch
too large) — is the HTTP API's, code and message, except that the WIT door has no status."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from veilkit import DEFAULT_POLICY, TOKEN_RE, hs256, new_name, ok

POLICY = {**DEFAULT_POLICY, "rewrap": ["rewrapper"]}
VALUES = ["4111111111111111", "jane@example.com", "ünïcødé ✓"]


def wit(server, *calls: dict) -> list[dict]:
    """Runs the calls through the exported interface, each in a fresh instance."""
    r = subprocess.run([str(server.bin), "wit-call", "--manifest", str(server.manifest), "--state-dir",
                        str(server.state_dir)], input=json.dumps({"calls": list(calls)}), env=server.env,
                       capture_output=True, text=True, timeout=120, cwd=server.workdir)
    assert r.returncode == 0, (r.stdout, r.stderr)
    answers = json.loads(r.stdout)["answers"]
    assert len(answers) == len(calls), answers
    return answers


def bearer(tenant, *roles) -> str:
    return f"Bearer {hs256(tenant.id, list(roles))}"


@pytest.fixture
def scheme(tenant):
    name = new_name()
    ok(tenant.admin.post("/v1/schemes", tenant.scheme_body(name, policy=POLICY,
                                                         mask={"rule": "keep_last", "n": 4, "char": "*"})), 201)
    return name


def test_tokens_cross_the_two_doors_both_ways(server, tenant, scheme):
    [by_wit] = wit(server, {"op": "protect", "credential": bearer(tenant, "app"), "scheme": scheme,
                            "values": VALUES, "context": "orders"})
    tokens = [r["value"] for r in by_wit["results"]]
    assert all(re.fullmatch(TOKEN_RE.format(scheme=scheme, version=1), t) for t in tokens), tokens
    assert tenant.unprotect(tokens, context="orders") == VALUES  # over HTTP
    http_tokens = tenant.protect(scheme, VALUES, context="orders")
    [opened, masked] = wit(server,
                           {"op": "unprotect", "credential": bearer(tenant, "support"), "tokens": http_tokens,
                            "context": "orders"},
                           {"op": "mask", "credential": bearer(tenant, "analyst"), "scheme": scheme, "values": VALUES})
    assert opened == {"results": [{"value": v} for v in VALUES]}
    assert masked == ok(tenant.analyst.post("/v1/mask", {"scheme": scheme, "values": VALUES}))
    assert masked["results"][0] == {"value": "************1111"}


def test_rewrap_through_the_interface(server, tenant, scheme):
    old = tenant.protect(scheme, VALUES[:2])
    ok(tenant.admin.post(f"/v1/schemes/{scheme}/rotate"))
    current = tenant.protect(scheme, VALUES[2:])
    [rewrapped, by_admin] = wit(server,
                                {"op": "rewrap", "credential": bearer(tenant, "rewrapper"), "tokens": old + current},
                                {"op": "rewrap", "credential": bearer(tenant, "admin"), "tokens": old})
    new = [r["value"] for r in rewrapped["results"]]
    assert all(re.fullmatch(TOKEN_RE.format(scheme=scheme, version=2), t) for t in new), new
    assert new[2] == current[0]  # already current: unchanged
    assert new[:2] != old
    assert tenant.unprotect(new) == VALUES
    assert tenant.unprotect([r["value"] for r in by_admin["results"]]) == VALUES[:2]
    # the same refusal as over HTTP for a role outside policy.rewrap
    [denied] = wit(server, {"op": "rewrap", "credential": bearer(tenant, "support"), "tokens": old})
    http = tenant.support.post("/v1/rewrap", {"values": old})
    assert http.status_code == 403 and denied == http.json() and denied["error"]["code"] == "forbidden", denied


def test_the_same_errors_as_over_http(server, tenant, scheme):
    token = tenant.protect(scheme, ["x"])[0]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    other = server.tenant()
    cases = [  # (WIT call, the same over HTTP (path, body, client), HTTP status, whole-call code or None)
        ({"op": "protect", "credential": bearer(tenant, "app"), "scheme": "nope", "values": ["a"]},
         ("/v1/protect", {"scheme": "nope", "values": ["a"]}, tenant.app), 404, "scheme_not_found"),
        ({"op": "protect", "credential": bearer(tenant, "support"), "scheme": scheme, "values": ["a"]},
         ("/v1/protect", {"scheme": scheme, "values": ["a"]}, tenant.support), 403, "forbidden"),
        ({"op": "mask", "credential": bearer(tenant, "app"), "scheme": scheme, "values": ["a"]},
         ("/v1/mask", {"scheme": scheme, "values": ["a"]}, tenant.app), 403, "forbidden"),
        ({"op": "unprotect", "credential": bearer(tenant, "app"), "tokens": [token]},
         ("/v1/unprotect", {"values": [token]}, tenant.app), 403, "forbidden"),
        ({"op": "unprotect", "credential": "Bearer not.a.jwt", "tokens": [token]},
         ("/v1/unprotect", {"values": [token]}, server.api("not.a.jwt")), 401, "invalid_credentials"),
        ({"op": "unprotect", "credential": "", "tokens": [token]},
         ("/v1/unprotect", {"values": [token]}, server.api(None)), 401, "unauthenticated"),
        ({"op": "unprotect", "credential": bearer(tenant, "support"), "tokens": ["veil.nope", tampered, token],
          "context": None},
         ("/v1/unprotect", {"values": ["veil.nope", tampered, token]}, tenant.support), 200, None),
        ({"op": "unprotect", "credential": bearer(other, "support"), "tokens": [token]},
         ("/v1/unprotect", {"values": [token]}, other.support), 200, None),
        ({"op": "rewrap", "credential": bearer(tenant, "rewrapper"), "tokens": ["veil.nope", tampered]},
         ("/v1/rewrap", {"values": ["veil.nope", tampered]}, tenant.as_("rewrapper")), 200, None),
        ({"op": "protect", "credential": bearer(tenant, "app"), "scheme": scheme, "values": ["a"] * 1001},
         ("/v1/protect", {"scheme": scheme, "values": ["a"] * 1001}, tenant.app), 413, "batch_too_large"),
    ]
    answers = wit(server, *[c[0] for c in cases])
    for (call, (path, body, api), status, code), got in zip(cases, answers):
        http = api.post(path, body)
        assert http.status_code == status, (path, http.status_code, http.text[:300])
        expected = http.json()
        if code is None:  # per-item errors inside results
            assert got == {"results": expected["results"]}, (call["op"], got, expected)
        else:
            assert got == expected and got["error"]["code"] == code, (call["op"], got, expected)
    codes = [[r.get("error", {}).get("code") for r in a["results"]] for a in answers if "results" in a]
    # per item: not a token, tampered, fine; another tenant's token; rewrap of the first two
    assert codes == [["invalid_token", "decryption_failed", None], ["decryption_failed"],
                     ["invalid_token", "decryption_failed"]], codes
