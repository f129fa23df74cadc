"""Operators decide which KEKs tenants may name, and where vault tokens may go (issue 19, items 2
and 3; docs/kms.md § Which keys tenants may use, § Private endpoints, § 401 challenges).

Servers here run outside dev mode (RS256 tokens). AWS KMS is moto and Azure Key Vault the
emulator, each behind tests/fixtures/fault_proxy.py, which counts every request: a refusal
"before any KMS call" is proven by the vault side seeing none (no KMS call, no token request).
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

import moto as motofx  # tests/fixtures/moto.py
import store
from azure_kv_emulator import AzureKeyVaultEmulator, admin
from fault_proxy import FaultProxy
from veilkit import VeilServer, err, new_name, new_tenant, ok, rs256

ACME, GLOBEX = new_tenant(), new_tenant()


@pytest.fixture(scope="module")
def moto_kms(tmp_path_factory):
    m = motofx.start_moto(log_path=tmp_path_factory.mktemp("moto-allow") / "moto_server.log")
    yield m
    m.stop()


@pytest.fixture(scope="module")
def emulator():
    emu = AzureKeyVaultEmulator().start()
    for name in (f"{ACME}-kek", f"{GLOBEX}-kek", "disabled-kek"):
        emu.create_key(name)
    admin(emu.url, "POST", "/admin/keys/disabled-kek/disable", {})
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def aws_proxy(moto_kms):
    p = FaultProxy(moto_kms.url).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def vault_proxy(emulator):
    """The emulator's vault and token endpoint, both through one counting proxy."""
    p = FaultProxy(emulator.url).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def acme_key(moto_kms):
    return motofx.create_kms_key(moto_kms)


def vault_env(moto_kms, emulator, aws_proxy, vault_proxy) -> dict:
    return {**motofx.veil_variables(moto_kms), "aws_kms_endpoint": aws_proxy.url,
            "azure_identity_endpoint": f"{vault_proxy.url}/msi/token",
            "azure_identity_header": emulator.state.identity_header,
            "dev_mode": "false", "kms_max_retries": "0"}


def prod_server(tmp_path_factory, name, env, **extra) -> VeilServer:
    return VeilServer(tmp_path_factory.mktemp(name), name=name,
                      allowed_hosts=[env["aws_kms_endpoint"], env["azure_identity_endpoint"].rsplit("/msi", 1)[0]],
                      **{**env, **extra})


@pytest.fixture(scope="module")
def env(moto_kms, emulator, aws_proxy, vault_proxy):
    return vault_env(moto_kms, emulator, aws_proxy, vault_proxy)


@pytest.fixture(scope="module")
def allowing(tmp_path_factory, env, vault_proxy):
    """kek_allow: ACME may use any key of moto's account; every tenant its own emulator key."""
    allow = (f"{ACME}=arn:aws:kms:{motofx.REGION}:123456789012:key/*,\n"
             f"*={vault_proxy.url}/keys/{{tenant}}-*")
    s = prod_server(tmp_path_factory, "allowing", env, kek_allow=allow, kms_allow_private_endpoints="true")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def default_deny(tmp_path_factory, env):
    """No kek_allow at all, outside dev mode (private endpoints allowed, so only the list refuses)."""
    s = prod_server(tmp_path_factory, "default-deny", env, kms_allow_private_endpoints="true")
    yield s
    s.stop()


def aws(key_id):
    return {"provider": "aws-kms", "key_id": key_id}


def azure(proxy, name):
    return {"provider": "azure-keyvault", "key_url": f"{proxy.url}/keys/{name}"}


def refused_before_any_call(server, tenant, kek, proxies, status=403, code="kek_not_allowed"):
    before = [p.counts()[0] for p in proxies]
    name = new_name()
    e = err(tenant.admin.post("/v1/schemes", tenant.scheme_body(name, kek=kek)), status, code)
    assert [p.counts()[0] for p in proxies] == before, "the vault side saw a request"
    err(tenant.admin.get(f"/v1/schemes/{name}"), 404, "scheme_not_found")
    assert not [r for r in store.tables(server.state_dir).get("schemes", []) if r[1] == name]
    return e


def test_without_kek_allow_no_vault_key_is_allowed_outside_dev_mode(default_deny, acme_key, aws_proxy, vault_proxy):
    t = default_deny.tenant(ACME, signer=rs256)
    for kek in (aws(acme_key), azure(vault_proxy, f"{ACME}-kek")):
        e = refused_before_any_call(default_deny, t, kek, [aws_proxy, vault_proxy])
        assert e["message"] == ("this deployment does not allow your tenant to use that key-encryption key "
                                "(kek_allow)")
    log = default_deny.stderr()
    assert f"kek_allow refused tenant {ACME}: aws-kms key" in log


def test_kek_allow_per_tenant_and_for_all(allowing, acme_key, aws_proxy, vault_proxy, moto_kms):
    acme, globex = allowing.tenant(ACME, signer=rs256), allowing.tenant(GLOBEX, signer=rs256)
    # ACME: its AWS account's keys and its own emulator key
    for kek in (aws(acme_key), azure(vault_proxy, f"{ACME}-kek")):
        name = new_name()
        ok(acme.admin.post("/v1/schemes", acme.scheme_body(name, kek=kek)), 201)
        tokens = acme.protect(name, ["allowed"])
        assert acme.unprotect(tokens) == ["allowed"]
        ok(acme.admin.post(f"/v1/schemes/{name}/rotate"))
    # GLOBEX: not the AWS key, not ACME's vault key, only its own
    refused_before_any_call(allowing, globex, aws(acme_key), [aws_proxy, vault_proxy])
    refused_before_any_call(allowing, globex, azure(vault_proxy, f"{ACME}-kek"), [aws_proxy, vault_proxy])
    refused_before_any_call(allowing, globex, aws(acme_key.replace("123456789012", "999999999999")),
                            [aws_proxy, vault_proxy])
    ok(globex.admin.post("/v1/schemes", globex.scheme_body(kek=azure(vault_proxy, f"{GLOBEX}-kek"))), 201)


def test_unknown_and_denied_keys_look_the_same_to_the_tenant(allowing, vault_proxy):
    acme = allowing.tenant(ACME, signer=rs256)
    missing_aws = f"arn:aws:kms:{motofx.REGION}:123456789012:key/00000000-0000-0000-0000-000000000000"
    answers = [err(acme.admin.post("/v1/schemes", acme.scheme_body(kek=kek)), 502, "kms_denied")
               for kek in (aws(missing_aws), azure(vault_proxy, f"{ACME}-missing"),
                           azure(vault_proxy, f"{ACME}-kek/0000"))]
    assert answers == [{"code": "kms_denied",
                        "message": "the key vault refused the request, or does not have that key"}] * 3
    log = allowing.stderr()
    assert "NotFoundException" in log and "KeyNotFound" in log, "the operator log keeps the detail"


def test_disabled_key_is_kms_denied_like_a_missing_one(tmp_path_factory, env, vault_proxy):
    s = prod_server(tmp_path_factory, "disabled", env, kms_allow_private_endpoints="true",
                    kek_allow=f"*={vault_proxy.url}/keys/*")
    try:
        t = s.tenant(ACME, signer=rs256)
        denied = err(t.admin.post("/v1/schemes", t.scheme_body(kek=azure(vault_proxy, "disabled-kek"))),
                     502, "kms_denied")
        missing = err(t.admin.post("/v1/schemes", t.scheme_body(kek=azure(vault_proxy, "no-such-kek"))),
                      502, "kms_denied")
        assert denied == missing
        assert "HTTP 403 Forbidden" in s.stderr() and "HTTP 404 KeyNotFound" in s.stderr()
    finally:
        s.stop()


# --------------------------------------------------------------------------- item 2

@pytest.fixture(scope="module")
def no_private(tmp_path_factory, env):
    """Outside dev mode, every key allowed, private endpoints not."""
    s = prod_server(tmp_path_factory, "no-private", env, kek_allow="*=*")
    yield s
    s.stop()


# A private address that the document's `key_url` grammar already refuses (neither a vault host
# nor a plain loopback emulator) is the caller's 422 `invalid_field`; the others pass the grammar
# and are refused as private (403 `kek_not_allowed`). Both before any call.
SHAPE = (422, "invalid_field")
PRIVATE = (403, "kek_not_allowed")


@pytest.mark.parametrize("url, refusal", [
    ("http://127.0.0.1:{port}/keys/k", PRIVATE),
    ("https://127.0.0.1:{port}/keys/k", PRIVATE),
    ("https://[::ffff:127.0.0.1]:{port}/keys/k", SHAPE),
    ("https://[::1]:{port}/keys/k", PRIVATE),
    ("https://localhost:{port}/keys/k", PRIVATE),
    ("https://169.254.169.254/keys/k", PRIVATE),
    ("https://10.0.0.7/keys/k", SHAPE),
    ("https://2130706433/keys/k", SHAPE),
])
def test_private_key_urls_are_refused_outside_dev_mode(no_private, aws_proxy, vault_proxy, url, refusal):
    t = no_private.tenant(ACME, signer=rs256)
    kek = {"provider": "azure-keyvault", "key_url": url.format(port=vault_proxy.port)}
    e = refused_before_any_call(no_private, t, kek, [aws_proxy, vault_proxy], *refusal)
    if refusal == SHAPE:
        assert e["message"].startswith("kek.key_url: ") and url.split("/keys")[0] not in e["message"], e
        return
    assert e["message"] == ("this deployment does not allow your tenant to use that key-encryption key "
                            "(kek_allow)")
    assert "kms_allow_private_endpoints" in no_private.stderr(), "the operator is told which switch"


def test_a_private_aws_endpoint_is_misconfigured_outside_dev_mode(tmp_path_factory, env, acme_key, aws_proxy,
                                                                  vault_proxy):
    s = prod_server(tmp_path_factory, "aws-private", env, kek_allow="*=*")
    try:
        t = s.tenant(ACME, signer=rs256)
        e = refused_before_any_call(s, t, aws(acme_key), [aws_proxy, vault_proxy], 500, "misconfigured")
        assert "aws_kms_endpoint" in e["message"] and aws_proxy.url not in e["message"]
    finally:
        s.stop()


def test_an_existing_scheme_with_a_private_url_stops_at_once_when_the_switch_is_off(tmp_path_factory, env,
                                                                                    vault_proxy):
    state = tmp_path_factory.mktemp("switch-state")
    kek = azure(vault_proxy, f"{ACME}-kek")
    on = VeilServer(tmp_path_factory.mktemp("switch-on"), state_dir=state, name="switch-on",
                    allowed_hosts=[vault_proxy.url], **{**env, "kek_allow": "*=*", "kms_allow_private_endpoints": "true"})
    t = on.tenant(ACME, signer=rs256)
    name = new_name()
    ok(t.admin.post("/v1/schemes", t.scheme_body(name, kek=kek)), 201)
    tokens = t.protect(name, ["made while allowed"])
    on.stop()
    off = VeilServer(tmp_path_factory.mktemp("switch-off"), state_dir=state, name="switch-off",
                     allowed_hosts=[vault_proxy.url], **{**env, "kek_allow": "*=*"})
    try:
        t = off.tenant(ACME, signer=rs256)
        before = vault_proxy.counts()[0]
        err(t.app.post("/v1/protect", {"scheme": name, "values": ["x"]}), 500, "misconfigured")
        err(t.support.post("/v1/unprotect", {"values": tokens}), 500, "misconfigured")
        assert vault_proxy.counts()[0] == before, "no token request and no vault call"
    finally:
        off.stop()


def test_a_challenge_for_another_audience_is_never_honoured(tmp_path_factory, env, vault_proxy):
    """A listener at the key URL answers 401 with a challenge for Resource Manager; Veil asks the
    token endpoint only ever for the vault's own audience, and gives up with kms_denied."""
    s = prod_server(tmp_path_factory, "challenge", env, kek_allow="*=*", kms_allow_private_endpoints="true")
    try:
        t = s.tenant(ACME, signer=rs256)
        name = new_name()
        ok(t.admin.post("/v1/schemes", t.scheme_body(name, kek=azure(vault_proxy, f"{ACME}-kek"))), 201)
        start = len(vault_proxy.paths)
        for resource in ("https://management.azure.com", "https://graph.microsoft.com", "https://azure.net"):
            vault_proxy.fail(401, only="/keys/", headers={
                "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/x", resource="{resource}"'})
            try:
                err(t.app.post("/v1/protect", {"scheme": name, "values": ["x"]}), 502, "kms_denied")
            finally:
                vault_proxy.heal()
        asked = [parse_qs(urlsplit(p).query).get("resource") for p in vault_proxy.paths[start:]
                 if p.startswith("/msi/token")]
        assert len(asked) == 3, "one fresh token per refused challenge"
        assert asked == [["https://vault.azure.net"]] * 3, asked
        assert "ignored a 401 challenge" in s.stderr()
        # healed: the same scheme works
        assert t.unprotect(t.protect(name, ["after"])) == ["after"]
    finally:
        s.stop()
