"""Vault outages on the read path (issue 19, item 9, KMS part): protect and unprotect while AWS
KMS (moto) or Azure Key Vault (the emulator) sits behind tests/fixtures/fault_proxy.py, which
answers 5xx, 429 with `Retry-After`, never answers (timeout) or refuses connections.

Each case, with and without the DEK cache: the request fails with a 503 and the documented code
within the documented time budget (docs/kms.md § Time budget), nothing is written (no data key
version, no cache entry that would break the next request), and the first request after the
vault recovers succeeds and decrypts what was protected before the outage. With a warm DEK cache,
protect and unprotect ride out the outage without a vault call.
"""
from __future__ import annotations

import base64
import os
import time

import pytest

import moto as motofx  # tests/fixtures/moto.py
import store
from azure_kv_emulator import AzureKeyVaultEmulator
from fault_proxy import FaultProxy
from veilkit import err, item_errors, new_name, ok

TIMEOUT_MS = 300
MAX_RETRIES = 1
RETRY_AFTER = 1
# docs/kms.md § Time budget: (1 + kms_max_retries) × kms_timeout_ms for the attempts, plus the
# waits between them (Retry-After, or back-off from 200 ms), plus one instance's own work.
BUDGET_S = (1 + MAX_RETRIES) * TIMEOUT_MS / 1000 + RETRY_AFTER + 1.5
CACHE_KEY = base64.b64encode(os.urandom(32)).decode()
AZ_KEY = "veil-fault-kek"

FAULTS = {
    "5xx": ("kms_unavailable", lambda p: p.fail(503)),
    "429": ("kms_throttled", lambda p: p.fail(429, retry_after=RETRY_AFTER)),
    "timeout": ("kms_unavailable", lambda p: p.hang()),
    "refused": ("kms_unavailable", lambda p: p.refuse()),
}


@pytest.fixture(scope="module")
def moto_kms(tmp_path_factory):
    m = motofx.start_moto(log_path=tmp_path_factory.mktemp("moto-faults") / "moto_server.log")
    yield m
    m.stop()


@pytest.fixture(scope="module")
def emulator():
    emu = AzureKeyVaultEmulator().start()
    emu.create_key(AZ_KEY)
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def proxies(moto_kms, emulator):
    aws, az = FaultProxy(moto_kms.url).start(), FaultProxy(emulator.url).start()
    yield {"aws": aws, "azure": az}
    aws.stop()
    az.stop()


@pytest.fixture(scope="module")
def aws_key(moto_kms):
    return motofx.create_kms_key(moto_kms)


@pytest.fixture(scope="module", params=["no-cache", "cache"])
def server(request, tmp_path_factory, moto_kms, emulator, proxies):
    from veilkit import VeilServer

    cache = {"dek_cache": "true", "dek_cache_key": CACHE_KEY} if request.param == "cache" else {}
    aws_vars = {**motofx.veil_variables(moto_kms), "aws_kms_endpoint": proxies["aws"].url}
    s = VeilServer(tmp_path_factory.mktemp(f"faults-{request.param}"), name=f"faults-{request.param}",
                   allowed_hosts=[proxies["aws"].url, proxies["azure"].url, emulator.url],
                   kms_timeout_ms=TIMEOUT_MS, kms_max_retries=MAX_RETRIES,
                   **aws_vars, **emulator.variables("managed-identity"), **cache)
    s.cache = bool(cache)
    yield s
    s.stop()


def kek(provider: str, proxies, aws_key: str) -> dict:
    if provider == "aws":
        return {"provider": "aws-kms", "key_id": aws_key}
    return {"provider": "azure-keyvault", "key_url": f"{proxies['azure'].url}/keys/{AZ_KEY}"}


def data_key_versions(server, tenant_id: str, scheme: str) -> list[int]:
    return sorted(r[2] for r in store.tables(server.state_dir).get("data_keys", [])
                  if r[0] == tenant_id and r[1] == scheme)


def timed(f):
    t0 = time.monotonic()
    r = f()
    return r, time.monotonic() - t0


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_protect_and_unprotect_during_an_outage(server, proxies, aws_key, provider, fault):
    code, inject = FAULTS[fault]
    proxy = proxies[provider]
    t = server.tenant()
    name = new_name()
    ok(t.admin.post("/v1/schemes", t.scheme_body(name, kek=kek(provider, proxies, aws_key))), 201)
    if not server.cache:
        before = t.protect(name, ["before the outage"])  # nothing cached: each request unwraps

    inject(proxy)
    try:
        if fault == "refused":
            assert proxy.connection_refused()
        # A cold cache (or none): the unwrap needs the vault.
        r, took = timed(lambda: t.app.post("/v1/protect", {"scheme": name, "values": ["during"]}))
        e = err(r, 503, code)
        assert "injected" not in e["message"] and "503" not in e["message"], e
        assert took < BUDGET_S, f"protect took {took:.2f} s, budget {BUDGET_S} s"
        if not server.cache:
            r, took = timed(lambda: t.support.post("/v1/unprotect", {"values": before}))
            err(r, 503, code)
            assert took < BUDGET_S, f"unprotect took {took:.2f} s, budget {BUDGET_S} s"
        # A rotation during the outage writes no data key version.
        err(t.admin.post(f"/v1/schemes/{name}/rotate"), 503, code)
        assert data_key_versions(server, t.id, name) == [1]
        assert ok(t.admin.get(f"/v1/schemes/{name}"))["current_version"] == 1
        seen, faulted = proxy.counts()
        assert faulted >= 1 or fault == "refused", (seen, faulted)
    finally:
        proxy.heal()

    # The first request after recovery succeeds, and the old tokens still decrypt.
    tokens = t.protect(name, ["after the outage"])
    if not server.cache:
        assert t.unprotect(before + tokens) == ["before the outage", "after the outage"]
        return
    assert t.unprotect(tokens) == ["after the outage"]

    # A warm cache rides out the same outage: no vault call at all.
    inject(proxy)
    try:
        seen_before = proxy.counts()[0]
        r = t.app.post("/v1/protect", {"scheme": name, "values": ["cached"]})
        body = ok(r)
        assert item_errors(body["results"]) == [None] and r.headers["veil-kms-calls"] == "wraps=0, unwraps=0, http=0"
        assert t.unprotect([body["results"][0]["value"]] + tokens) == ["cached", "after the outage"]
        assert proxy.counts()[0] == seen_before
    finally:
        proxy.heal()
