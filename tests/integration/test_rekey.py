"""KEK rotation (rekey, issue 13): `POST /v1/schemes/{name}/rekey` with the local KEK, AWS KMS
(moto_server: a second key) and Azure Key Vault (the emulator fixture: a new key version); no token
changes, the versions view shows which KEK wraps each version, the stored wraps are checked with
the vaults' own decrypt, and a host killed half-way through a rekey leaves every version readable
and a second run finishes it. Then `veil rekey` (the CLI): every scheme of a tenant with the local
KEK, to a second AWS key with a failing scheme reported and a re-run finishing, its refusals, and
a `veil rekey` killed mid-run that a second run finishes."""
from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
import requests

import moto as motofx  # tests/fixtures/moto.py (conftest puts tests/fixtures first on sys.path)
import store
from azure_kv_emulator import AzureKeyVaultEmulator
from veilkit import VeilServer, err, hs256, item_errors, new_name, ok

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


# ---- `veil rekey` (the CLI: the component in process, with the server's manifest, settings and
# state directory, as an operator runs it beside a deployment) --------------------------------------

def veil_rekey(server, tenant_id, *args, token: str | None = "admin", env=None):
    """Runs `veil rekey` against `server`'s deployment; `token`: the roles' JWT, a raw credential
    (anything with a dot) or None (no $VEIL_TOKEN)."""
    e = {k: v for k, v in server.env.items() if k != "VEIL_TOKEN"}
    if token is not None:
        e["VEIL_TOKEN"] = token if "." in token else hs256(tenant_id, [token])
    e.update(env or {})
    return subprocess.run([str(server.bin), "rekey", "--manifest", str(server.manifest), "--state-dir",
                           str(server.state_dir), "--tenant", tenant_id, *args],
                          env=e, capture_output=True, text=True, timeout=120, cwd=server.workdir)


def lines(r) -> list[str]:
    return r.stdout.strip().splitlines()


def kek_json(kek: dict) -> str:
    return json.dumps(kek, separators=(",", ":"), sort_keys=True)  # as veil prints it


def test_veil_rekey_every_local_scheme_of_a_tenant_and_only_that_tenant(server, tenant):
    a, a_tokens = with_versions(tenant, {"provider": "local"}, 3)
    b, b_tokens = with_versions(tenant, {"provider": "local"}, 1)
    other = server.tenant()
    c, _ = with_versions(other, {"provider": "local"}, 2)
    plain = tenant.unprotect(a_tokens + b_tokens)
    before = {n: data_keys(server, tenant.id, n) for n in (a, b)}
    before_other = data_keys(server, other.id, c)
    listed = [s["name"] for s in ok(tenant.admin.get("/v1/schemes"))["schemes"]]
    assert sorted(listed) == sorted([a, b]), listed

    r = veil_rekey(server, tenant.id)
    assert r.returncode == 0, (r.stdout, r.stderr)
    local = kek_json({"provider": "local"})
    expected = {a: f"rekey: {a}: ok, versions rewrapped: 1, 2, 3; kek {local}",
                b: f"rekey: {b}: ok, versions rewrapped: 1; kek {local}"}
    assert lines(r) == [f"rekey: tenant {tenant.id}, every scheme", *[expected[n] for n in listed],
                        "rekey: 2 of 2 schemes rekeyed, 0 failed"], r.stdout
    for n in (a, b):
        after = data_keys(server, tenant.id, n)
        assert set(after) == set(before[n])
        for v in after:
            assert after[v][0] != before[n][v][0] and after[v][1:] == before[n][v][1:], (n, v)
    assert data_keys(server, other.id, c) == before_other  # another tenant's scheme is not touched
    assert tenant.unprotect(a_tokens + b_tokens) == plain

    # one scheme only; and a second run is as good as the first
    one = veil_rekey(server, tenant.id, "--scheme", b)
    assert (one.returncode, lines(one)) == (0, [f"rekey: tenant {tenant.id}, scheme {b}", expected[b],
                                                "rekey: 1 of 1 schemes rekeyed, 0 failed"]), one.stderr
    assert data_keys(server, tenant.id, a) != before[a]
    assert tenant.unprotect(a_tokens + b_tokens) == plain


def test_veil_rekey_refusals(server, tenant):
    name, _ = with_versions(tenant, {"provider": "local"}, 1)
    before = data_keys(server, tenant.id, name)
    # no credential, a credential of another tenant, a --kek that is no JSON object: exit 2, no call
    for r, why in [(veil_rekey(server, tenant.id, token=None), "$VEIL_TOKEN is not set"),
                   (veil_rekey(server, tenant.id, token=hs256(new_name("t"), ["admin"])),
                    "$VEIL_TOKEN is a token of another tenant than --tenant"),
                   (veil_rekey(server, tenant.id, "--kek", "{secret-kek"), "--kek is not a JSON object")]:
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.startswith(f"veil: error: {why}"), r.stderr
        assert "secret-kek" not in r.stderr
    # not an administrator: the scheme is listed, its rekey refused by the component; exit 1
    r = veil_rekey(server, tenant.id, token="app")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert lines(r)[1:] == [f"rekey: {name}: FAILED 403 forbidden: {lines(r)[1].split(': ', 3)[3]}",
                            "rekey: 0 of 1 schemes rekeyed, 1 failed"], r.stdout
    assert f"veil: error: rekey failed for {name} (forbidden)" in r.stderr, r.stderr
    # a scheme that does not exist
    r = veil_rekey(server, tenant.id, "--scheme", "nope")
    assert (r.returncode, lines(r)[1].split(":")[:3]) == (1, ["rekey", " nope", " FAILED 404 scheme_not_found"]), r.stdout
    # a bad credential: the listing itself fails
    r = veil_rekey(server, tenant.id, token="not.a.jwt")
    assert r.returncode == 1 and "cannot list the tenant's schemes: 401 invalid_credentials: " in r.stderr, r.stderr
    assert data_keys(server, tenant.id, name) == before


def test_veil_rekey_to_a_second_aws_key_reports_a_failing_scheme_and_a_rerun_finishes(kms_server, moto_kms, kv):
    t = kms_server.tenant()
    first, target = motofx.create_kms_key(moto_kms), motofx.create_kms_key(moto_kms)
    good, good_tokens = with_versions(t, {"provider": "aws-kms", "key_id": first}, 2)
    # a scheme whose data key cannot be unwrapped for now: its Key Vault key version is disabled
    key = new_name("k")
    kid = kv.create_key(key)
    bad, bad_tokens = with_versions(t, {"provider": "azure-keyvault", "key_url": kv.key_url(key)}, 1)
    plain = t.unprotect(good_tokens + bad_tokens)
    kv.state.find(key, kid.rsplit("/", 1)[1]).enabled = False
    new = {"provider": "aws-kms", "key_id": target}
    order = [s["name"] for s in ok(t.admin.get("/v1/schemes"))["schemes"]]

    r = veil_rekey(kms_server, t.id, "--kek", json.dumps(new))
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = dict((line.split(": ", 2)[1], line) for line in lines(r)[1:-1])
    assert list(out) == order, r.stdout
    assert out[good] == f"rekey: {good}: ok, versions rewrapped: 1, 2; kek {kek_json(new)}", r.stdout
    assert out[bad] == f"rekey: {bad}: FAILED 502 kms_denied: the key vault refused the request, or does not have that key"
    code = "kms_denied"
    assert lines(r)[-1] == "rekey: 1 of 2 schemes rekeyed, 1 failed"
    assert f"veil: error: rekey failed for {bad} ({code})" in r.stderr, r.stderr
    assert [row[1] for row in data_keys(kms_server, t.id, good).values()] == [target, target]
    assert [row[1] for row in data_keys(kms_server, t.id, bad).values()] == [kid]  # left as it was
    for v in (1, 2):
        dek = motofx.decrypt(moto_kms, data_keys(kms_server, t.id, good)[v][0],
                             motofx.encryption_context(t.id, good, v), key_id=target)
        assert len(dek) == 32

    # the key version is usable again: the same command finishes the job (`good`, whose own KEK is the
    # target now, gets fresh wraps under it: a rekey to a scheme's own KEK rewraps every version)
    kv.state.find(key, kid.rsplit("/", 1)[1]).enabled = True
    again = veil_rekey(kms_server, t.id, "--kek", json.dumps(new))
    assert again.returncode == 0, (again.stdout, again.stderr)
    out = dict((line.split(": ", 2)[1], line) for line in lines(again)[1:-1])
    assert out == {good: f"rekey: {good}: ok, versions rewrapped: 1, 2; kek {kek_json(new)}",
                   bad: f"rekey: {bad}: ok, versions rewrapped: 1; kek {kek_json(new)}"}, again.stdout
    assert lines(again)[-1] == "rekey: 2 of 2 schemes rekeyed, 0 failed"
    assert [row[1] for row in data_keys(kms_server, t.id, bad).values()] == [target]
    assert [row[1] for row in data_keys(kms_server, t.id, good).values()] == [target, target]
    kv.state.find(key, kid.rsplit("/", 1)[1]).enabled = False  # only the target key is needed now
    motofx.disable_key(moto_kms, first.rsplit("/", 1)[1])
    assert t.unprotect(good_tokens + bad_tokens) == plain


def test_veil_rekey_killed_mid_run_and_run_again_finishes(kms_server, kv):
    t = kms_server.tenant()
    key = new_name("k")
    kid1 = kv.create_key(key)
    kek = {"provider": "azure-keyvault", "key_url": kv.key_url(key)}
    name, tokens = with_versions(t, kek, 6)
    plain = t.unprotect(tokens)
    kid2 = kv.create_key(key)
    e = {**kms_server.env, "VEIL_TOKEN": hs256(t.id, ["admin"])}
    cmd = [str(kms_server.bin), "rekey", "--manifest", str(kms_server.manifest), "--state-dir",
           str(kms_server.state_dir), "--tenant", t.id]
    kv.fault(delay_ms=250, count=1000, scope="vault")  # each vault call now takes 250 ms
    proc = subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=kms_server.workdir)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if kid2 in [row[1] for row in data_keys(kms_server, t.id, name).values()]:
                break
            time.sleep(0.05)
    finally:
        proc.kill()  # mid-rekey: some versions rewrapped, the others not yet
        proc.wait(timeout=10)
        kv.clear_faults()
    kids = [row[1] for row in data_keys(kms_server, t.id, name).values()]
    assert kids[0] == kid2 and kids[-1] == kid1, kids  # really half-way
    assert t.unprotect(tokens) == plain  # every version readable, whichever key version wraps it
    r = veil_rekey(kms_server, t.id)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert lines(r)[1:] == [f"rekey: {name}: ok, versions rewrapped: 1, 2, 3, 4, 5, 6; kek {kek_json(kek)}",
                            "rekey: 1 of 1 schemes rekeyed, 0 failed"], r.stdout
    assert [row[1] for row in data_keys(kms_server, t.id, name).values()] == [kid2] * 6
    kv.state.find(key, kid1.rsplit("/", 1)[1]).enabled = False  # the old key version is not needed
    assert t.unprotect(tokens) == plain
