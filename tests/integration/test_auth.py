"""JWT authentication (dev mode: HS256 + the JWKS) and per-scheme authorisation."""
import re
import time

import pytest
import requests

from veilkit import (DEFAULT_POLICY, HS256_SECRET, LOCAL_KEK, OTHER_RSA_KEY, TIMEOUT, alg_none, eddsa, err,
                     es256, hs256, hs256_with_rsa_public_pem, item_errors, new_tenant, ok, rs256)


def get_schemes(server, token=None, headers=None):
    h = dict(headers or {})
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    return requests.get(server.url + "/v1/schemes", headers=h, timeout=TIMEOUT)


def test_no_authorization_header_is_401_unauthenticated(server):
    err(get_schemes(server), 401, "unauthenticated")
    err(requests.post(server.url + "/v1/protect", json={"scheme": "x", "values": ["v"]}, timeout=TIMEOUT),
        401, "unauthenticated")


@pytest.mark.parametrize("signer", [hs256, rs256, es256, eddsa], ids=["HS256", "RS256", "ES256", "EdDSA"])
def test_accepted_signatures(server, signer):
    t = server.tenant(signer=signer)
    s = t.create_scheme()
    assert ok(get_schemes(server, signer(t.id, ["admin"])))["schemes"] == [s]
    assert t.unprotect(t.protect(s["name"], ["via " + signer.__name__])) == ["via " + signer.__name__]


BAD_TOKENS = {
    "garbage": lambda t: "not-a-jwt",
    "garbage-3-parts": lambda t: "aaa.bbb.ccc",
    "hs256-other-secret": lambda t: hs256(t, ["admin"], secret="another-secret-another-secret-another-secret!!"),
    "rs256-other-key-same-kid": lambda t: rs256(t, ["admin"], key=OTHER_RSA_KEY),
    "rs256-unknown-kid": lambda t: rs256(t, ["admin"], kid="nope"),
    "alg-none": lambda t: alg_none(t, ["admin"]),
    "hs256-keyed-with-rsa-public-pem": lambda t: hs256_with_rsa_public_pem(t, ["admin"]),
    "expired": lambda t: hs256(t, ["admin"], exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "expired-rs256": lambda t: rs256(t, ["admin"], exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "nbf-in-future": lambda t: hs256(t, ["admin"], nbf=int(time.time()) + 3600),
    "missing-tenant": lambda t: hs256(None, ["admin"]),
}


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_rejected_tokens_are_401(server, make):
    tenant = new_tenant()
    token = make(tenant)
    r = get_schemes(server, token)
    e = err(r, 401, "invalid_credentials")
    assert token not in e["message"]
    # a scheme creation with that token must not happen either
    err(requests.post(server.url + "/v1/schemes", headers={"authorization": f"Bearer {token}"},
                      json={"name": "x", "kek": {"provider": "local"}, "policy": DEFAULT_POLICY},
                      timeout=TIMEOUT), 401, "invalid_credentials")
    assert ok(get_schemes(server, hs256(tenant, ["admin"])))["schemes"] == []


def test_non_bearer_scheme_is_rejected(server):
    r = get_schemes(server, headers={"authorization": "Basic dXNlcjpwYXNz"})
    e = err(r, 401, "invalid_credentials")  # a credential was sent, in a scheme Veil does not take
    assert "dXNlcjpwYXNz" not in e["message"]


def test_role_without_unprotect_gets_403_and_nothing_decrypted(tenant):
    a = tenant.create_scheme()["name"]
    b = tenant.create_scheme(policy={**DEFAULT_POLICY, "unprotect": ["auditor"]})["name"]
    va, vb = "plain-A-7f3c", "plain-B-9d1e"
    ta, tb = tenant.protect(a, [va])[0], tenant.protect(b, [vb])[0]
    for api in [tenant.app, tenant.analyst, tenant.admin]:
        r = api.post("/v1/unprotect", {"values": [ta]})
        err(r, 403, "forbidden")
        assert va not in r.text
    # support may unprotect a but not b: the whole batch is refused, nothing decrypted
    r = tenant.support.post("/v1/unprotect", {"values": [ta, tb]})
    err(r, 403, "forbidden")
    assert va not in r.text and vb not in r.text
    assert tenant.unprotect([ta]) == [va]
    assert tenant.unprotect_results([tb], api=tenant.as_("auditor"))[0] == {"value": vb}


def test_protect_only_role_cannot_mask_and_support_cannot_protect(tenant):
    s = tenant.create_scheme()["name"]
    err(tenant.app.post("/v1/mask", {"scheme": s, "values": ["x"]}), 403, "forbidden")
    err(tenant.support.post("/v1/protect", {"scheme": s, "values": ["x"]}), 403, "forbidden")
    err(tenant.analyst.post("/v1/protect", {"scheme": s, "values": ["x"]}), 403, "forbidden")
    token = tenant.protect(s, ["x"])[0]
    assert tenant.unprotect([token]) == ["x"]


def test_omitted_policy_list_allows_nobody(tenant):
    s = tenant.create_scheme(policy={"protect": ["app"], "admin": ["admin"]})["name"]
    token = tenant.protect(s, ["x"])[0]
    for roles in [("support",), ("admin",), ("app",)]:
        err(tenant.as_(*roles).post("/v1/unprotect", {"values": [token]}), 403, "forbidden")
        err(tenant.as_(*roles).post("/v1/mask", {"scheme": s, "values": ["x"]}), 403, "forbidden")


def test_several_roles_combine(tenant):
    s = tenant.create_scheme()["name"]
    both = tenant.as_("app", "support")
    token = ok(both.post("/v1/protect", {"scheme": s, "values": ["x"]}))["results"][0]["value"]
    assert item_errors(ok(both.post("/v1/unprotect", {"values": [token]}))["results"]) == [None]


def test_secrets_tokens_and_plaintext_never_logged(start_server):
    s = start_server("logged", raw_env={"VEIL_LOG": "debug"})
    t = s.tenant()
    name = t.create_scheme()["name"]
    plain = "plaintext-canary-5e1f0c"
    tokens = t.protect(name, [plain], subject="subject-canary-77")
    assert t.unprotect(tokens, subject="subject-canary-77") == [plain]
    bad_items = t.unprotect_results([tokens[0] + "x", "garbage-canary-3a"])
    assert item_errors(bad_items) == ["invalid_token", "invalid_token"], bad_items
    bad = hs256(t.id, ["admin"], secret="wrong-secret-wrong-secret-wrong-secret-wrong!")
    err(s.api(bad).get("/v1/schemes"), 401, "invalid_credentials")
    s.stop()
    log = s.stderr(10**7)
    # VEIL_LOG=debug logs one line per request: method, path, status and time, nothing else
    requests_logged = [m.groups() for m in re.finditer(r"(?m)^veil: (GET|POST) (\S+) (\d{3}) \d+ms$", log)]
    assert requests_logged == [("POST", "/v1/schemes", "201"), ("POST", "/v1/protect", "200"),
                               ("POST", "/v1/unprotect", "200"), ("POST", "/v1/unprotect", "200"),
                               ("GET", "/v1/schemes", "401")], log
    for label, secret in [("plaintext", plain), ("token", tokens[0].split(".")[4]), ("HS256 secret", HS256_SECRET),
                          ("local KEK", LOCAL_KEK), ("bearer token", bad.split(".")[2]),
                          ("rejected value", "garbage-canary-3a")]:
        assert secret not in log, f"the host log contains the {label}"


# ---- production deployments must name their audience and issuer (issue 14 item 4) ----

def refused_everywhere(s, why: str):
    token = rs256(new_tenant(), ["admin"])
    answers = [requests.get(s.url + "/healthz", timeout=TIMEOUT),
               requests.get(s.url + "/v1/openapi.json", timeout=TIMEOUT),
               requests.get(s.url + "/v1/schemes", headers={"authorization": f"Bearer {token}"}, timeout=TIMEOUT),
               requests.post(s.url + "/v1/protect", json={"scheme": "x", "values": ["v"]},
                             headers={"authorization": f"Bearer {token}"}, timeout=TIMEOUT),
               requests.get(s.url + "/v1/api-keys", headers={"x-api-key": "veil_" + "0" * 32 + "." + "A" * 43},
                            timeout=TIMEOUT)]
    for r in answers:
        e = err(r, 500, "misconfigured")
        assert why in e["message"], e


def test_outside_dev_mode_without_audience_every_route_is_misconfigured(start_server):
    s = start_server("no-audience", dev_mode="false", jwt_audience="")
    refused_everywhere(s, "jwt_audience must be set outside dev mode")
    assert "veil: error: jwt_audience is not set and dev_mode is not true" in s.stderr()


def test_outside_dev_mode_jwks_keys_need_an_issuer(start_server):
    s = start_server("no-issuer", dev_mode="false", jwt_issuer="")
    refused_everywhere(s, "jwt_issuer must be set outside dev mode when JWKS keys are used")
    assert "veil: error: jwt_issuer is not set while JWKS keys are configured" in s.stderr()


def test_outside_dev_mode_audience_and_issuer_are_enforced(start_server):
    s = start_server("prod-auth", dev_mode="false")
    assert "veil: error:" not in s.stderr()
    t = new_tenant()
    ok(get_schemes(s, rs256(t, ["admin"])))
    err(get_schemes(s, rs256(t, ["admin"], aud="another-app")), 401, "invalid_credentials")
    err(get_schemes(s, rs256(t, ["admin"], iss="https://elsewhere.invalid/")), 401, "invalid_credentials")
    err(get_schemes(s, rs256(t, ["admin"], aud=None)), 401, "invalid_credentials")


def test_max_lifetime_refuses_long_lived_tokens_and_tokens_without_iat(start_server):
    s = start_server("max-lifetime", dev_mode="false", jwt_max_lifetime_secs="600")
    t = new_tenant()
    now = int(time.time())
    ok(get_schemes(s, rs256(t, ["admin"], iat=now, exp=now + 600)))
    err(get_schemes(s, rs256(t, ["admin"], iat=now, exp=now + 601)), 401, "invalid_credentials")
    err(get_schemes(s, rs256(t, ["admin"], iat=None)), 401, "invalid_credentials")
    # The same long-lived token is accepted by a deployment without the setting.
    other = start_server("no-max-lifetime", dev_mode="false")
    ok(get_schemes(other, rs256(t, ["admin"], iat=now, exp=now + 601)))


def test_outside_dev_mode_the_jwks_url_must_be_https(start_server):
    s = start_server("jwks-http", dev_mode="false", jwt_jwks_url="http://127.0.0.1:9/keys.json")
    refused_everywhere(s, "jwt_jwks_url must be an https:// URL outside dev mode")
    assert "veil: error: jwt_jwks_url is not an https:// URL" in s.stderr()
