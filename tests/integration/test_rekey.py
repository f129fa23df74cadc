"""KEK rotation (rekey, issue 13): `POST /v1/schemes/{name}/rekey` with the local KEK, AWS KMS
(moto_server: a second key) and Azure Key Vault (the emulator fixture: a new key version); no token
changes, the versions view shows which KEK wraps each version, the stored wraps are checked with
the vaults' own decrypt, and a host killed half-way through a rekey leaves every version readable
and a second run finishes it."""
from __future__ import annotations

import threading
import time

import pytest
import requests

import moto as motofx  # tests/fixtures/moto.py (conftest puts tests/fixtures first on sys.path)
import store
from azure_kv_emulator import AzureKeyVaultEmulator
from veilkit import VeilServer, err, item_errors, new_name, ok

VALUES = ["4111111111111111", "jane@example.com", "ünïcødé ✓"]


@pytest.fixture(scope="module")
def moto_kms(tmp_path_factory):
    m = motofx.start_moto(log_path=tmp_path_factory.mktemp("moto-rekey") / "moto_server.log")
    yield m
    m.stop()


@pytest.fixture(scope="module")
def kv():
    emu = AzureKeyVaultEmulator().start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory, moto_kms, kv):
    s = VeilServer(tmp_path_factory.mktemp("rekey"), name="rekey", allowed_hosts=[moto_kms.url, kv.url],
                   **motofx.veil_variables(moto_kms), **kv.variables("managed-identity"))
    yield s
    s.stop()


def rekey(api, name, body=None):
    return api.post(f"/v1/schemes/{name}/rekey", body)


def data_keys(server, tenant_id, name) -> dict[int, tuple]:
    """(wrapped_dek, kek_id, kek_version, state) by version (in order), straight from the store."""
    rows = sorted(r for r in store.tables(server.state_dir)["data_keys"] if r[0] == tenant_id and r[1] == name)
    return {r[2]: (bytes(r[3]), r[4], r[5], r[6]) for r in rows}


def with_versions(t, kek, n: int):
    """A scheme with versions 1..n and one token of each; returns (name, tokens)."""
    body = t.scheme_body(kek=kek)
    ok(t.admin.post("/v1/schemes", body), 201)
    name = body["name"]
    tokens = []
    for v in range(1, n + 1):
        if v > 1:
            ok(t.admin.post(f"/v1/schemes/{name}/rotate"))
        tokens += t.protect(name, [f"{VALUES[v % 3]}-{v}"])
    return name, tokens


def test_rekey_local_rewraps_every_version_and_changes_no_token(server, tenant):
    name, tokens = with_versions(tenant, {"provider": "local"}, 3)
    plain = tenant.unprotect(tokens)
    before = data_keys(server, tenant.id, name)
    r = ok(rekey(tenant.admin, name))
    assert set(r) == {"scheme", "versions", "rewrapped"}, r
    assert r["rewrapped"] == [1, 2, 3]
    assert r["scheme"]["kek"] == {"provider": "local"} and r["scheme"]["current_version"] == 3
    assert [v["kek"] for v in r["versions"]] == [{"provider": "local"}] * 3
    after = data_keys(server, tenant.id, name)
    for v in (1, 2, 3):
        assert after[v][0] != before[v][0] and len(after[v][0]) == len(before[v][0]), v  # a fresh wrap
        assert after[v][1:] == before[v][1:], v
    assert tenant.unprotect(tokens) == plain
    # a destroyed version is left destroyed (nothing to rewrap)
    ok(tenant.admin.request("PATCH", f"/v1/schemes/{name}", {"min_decryption_version": 2}))
    ok(tenant.admin.post(f"/v1/schemes/{name}/versions/1/destroy"))
    assert ok(rekey(tenant.admin, name, {}))["rewrapped"] == [2, 3]
    assert data_keys(server, tenant.id, name)[1][0] == b""
    assert tenant.unprotect(tokens[1:]) == plain[1:]


def test_rekey_permissions_and_bad_bodies(server, tenant):
    name, _ = with_versions(tenant, {"provider": "local"}, 1)
    before = data_keys(server, tenant.id, name)
    for api in [tenant.app, tenant.support, tenant.as_("rewrapper")]:
        err(rekey(api, name), 403, "forbidden")
    err(rekey(tenant.admin, "nope"), 404, "scheme_not_found")
    err(rekey(tenant.admin, name, {"kek": {"provider": "vault9000"}}), 422, "invalid_field")
    err(rekey(tenant.admin, name, {"kek": {"provider": "local"}, "extra": 1}), 400, "invalid_request")
    err(tenant.admin.post(f"/v1/schemes/{name}/rekey", data=b"{nope"), 400, "invalid_json")
    assert data_keys(server, tenant.id, name) == before


def test_rekey_to_a_second_aws_key(kms_server, moto_kms):
    t = kms_server.tenant()
    first, second = motofx.create_kms_key(moto_kms), motofx.create_kms_key(moto_kms)
    name, tokens = with_versions(t, {"provider": "aws-kms", "key_id": first}, 2)
    plain = t.unprotect(tokens)
    r = ok(rekey(t.admin, name, {"kek": {"provider": "aws-kms", "key_id": second}}))
    assert r["rewrapped"] == [1, 2]
    assert r["scheme"]["kek"] == {"provider": "aws-kms", "key_id": second}
    assert [v["kek"] for v in r["versions"]] == [{"provider": "aws-kms", "key_id": second}] * 2
    rows = data_keys(kms_server, t.id, name)
    for v in (1, 2):
        assert rows[v][1] == second, rows[v]
        # moto itself decrypts the new wrap with the second key, under the version's context
        dek = motofx.decrypt(moto_kms, rows[v][0], motofx.encryption_context(t.id, name, v), key_id=second)
        assert len(dek) == 32
    motofx.disable_key(moto_kms, first.rsplit("/", 1)[1])  # the old key is no longer needed (moto takes the id)
    assert t.unprotect(tokens) == plain
    ok(t.admin.post(f"/v1/schemes/{name}/rotate"))  # new versions are wrapped by the second key
    assert data_keys(kms_server, t.id, name)[3][1] == second
    # the scheme's own KEK again: every version rewrapped (this picks up a KMS key rotation)
    assert ok(rekey(t.admin, name, {"kek": {"provider": "aws-kms", "key_id": second}}))["rewrapped"] == [1, 2, 3]
    assert t.unprotect(tokens) == plain


def test_rekey_to_a_new_key_vault_key_version(kms_server, kv):
    t = kms_server.tenant()
    key = new_name("k")
    kid1 = kv.create_key(key)
    kek = {"provider": "azure-keyvault", "key_url": kv.key_url(key)}
    name, tokens = with_versions(t, kek, 2)
    plain = t.unprotect(tokens)
    kid2 = kv.create_key(key)
    assert [row[1] for row in data_keys(kms_server, t.id, name).values()] == [kid1, kid1]
    r = ok(rekey(t.admin, name))  # no kek: the same key, its newest version
    assert r["rewrapped"] == [1, 2]
    assert [(v["kek"], v["kek_version"]) for v in r["versions"]] == [(kek, kid2.rsplit("/", 1)[1])] * 2
    assert [row[1] for row in data_keys(kms_server, t.id, name).values()] == [kid2, kid2]
    kv.state.find(key, kid1.rsplit("/", 1)[1]).enabled = False  # the old key version is retired
    assert t.unprotect(tokens) == plain


def test_a_host_killed_mid_rekey_leaves_everything_readable_and_a_rerun_finishes(tmp_path, kv):
    key = new_name("k")
    kid1 = kv.create_key(key)
    kek = {"provider": "azure-keyvault", "key_url": kv.key_url(key)}
    state = tmp_path / "state"

    def start(n):
        return VeilServer(tmp_path / f"srv-{n}", state_dir=state, name=f"rekey-kill-{n}", allowed_hosts=[kv.url],
                          **kv.variables("managed-identity"))

    server = start(1)
    try:
        t = server.tenant()
        name, tokens = with_versions(t, kek, 6)
        plain = t.unprotect(tokens)
        kid2 = kv.create_key(key)
        kv.fault(delay_ms=250, count=1000, scope="vault")  # each vault call now takes 250 ms
        def run():
            try:
                rekey(t.admin, name)
            except requests.RequestException:
                pass  # the host is killed under it

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            kids = [row[1] for row in data_keys(server, t.id, name).values()]
            if kid2 in kids:
                break
            time.sleep(0.05)
        server.proc.kill()  # mid-rekey: some versions rewrapped, the others not yet
        server.proc.wait(timeout=10)
        worker.join(timeout=30)
    finally:
        kv.clear_faults()
        server.stop(check=False)
    kids = [row[1] for row in data_keys(server, t.id, name).values()]
    assert kids[0] == kid2 and kids[-1] == kid1, kids  # really half-way

    again = start(2)
    try:
        t2 = again.tenant(t.id)
        assert t2.unprotect(tokens) == plain  # every version readable, whichever KEK version wraps it
        r = ok(rekey(t2.admin, name))
        assert r["rewrapped"] == [1, 2, 3, 4, 5, 6]
        assert [row[1] for row in data_keys(again, t.id, name).values()] == [kid2] * 6
        kv.state.find(key, kid1.rsplit("/", 1)[1]).enabled = False
        assert t2.unprotect(tokens) == plain
        assert item_errors(t2.unprotect_results(tokens)) == [None] * 6
    finally:
        again.stop()
