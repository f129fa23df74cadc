"""KEK providers over outbound HTTP (issue 4, docs/kms.md): AWS KMS against a real moto_server,
Azure Key Vault against the emulator fixture (tests/fixtures/azure_kv_emulator.py), their fault
mapping, and the per-request KMS call counts (`veil-kms-calls`).

moto and the emulator run once per session on loopback; Veil servers are started per distinct
environment. A `veil serve` process shares its Key Vault bearer token across requests (docs/kms.md
§ "Bearer tokens for Key Vault"), so tests on the module's server that count calls take the
`az_token` fixture (a valid token is shared before they start), and tests that need the token
endpoint to be called start their own server. Stored rows are read straight from the store (store.tables) and cross-checked with
moto's own Decrypt (boto3) and the emulator's own unwrap, so the wire format is proven, not just
the round trip. The opt-in DEK cache is not covered here yet.
"""
from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import moto as motofx  # tests/fixtures/moto.py (conftest puts tests/fixtures first on sys.path)
import store
from azure_kv_emulator import AzureKeyVaultEmulator
from veilkit import TOKEN_RE, VeilServer, err, free_port, item_errors, new_name, ok

KMS_CALLS_RE = re.compile(r"wraps=(\d+), unwraps=(\d+), http=(\d+)")
AZ_KEY = "veil-kek"  # the emulator key most tests wrap with
VALUES = ["4111111111111111", "jane@example.com", "ünïcødé ✓", ""]


# --------------------------------------------------------------------------- helpers

DEAD_PORT = free_port()  # nothing listens there
DEAD_URL = f"http://127.0.0.1:{DEAD_PORT}"


def kms_calls(resp) -> tuple[int, int, int]:
    """(wraps, unwraps, http) from the `veil-kms-calls` response header, which must be exact."""
    value = resp.headers.get("veil-kms-calls")
    assert value is not None, f"no veil-kms-calls header: {dict(resp.headers)}"
    m = KMS_CALLS_RE.fullmatch(value)
    assert m, f"veil-kms-calls: {value!r}"
    return tuple(int(g) for g in m.groups())


def data_keys(server, tenant_id: str, scheme: str) -> dict[int, dict]:
    """The scheme's data_keys rows by version: wrapped_dek, kek_id, kek_version, state."""
    out = {}
    for r in store.tables(server.state_dir).get("data_keys", []):
        if r[0] == tenant_id and r[1] == scheme:
            out[r[2]] = {"wrapped_dek": bytes(r[3]), "kek_id": r[4], "kek_version": r[5], "state": r[6]}
    return out


def scheme_rows(server, tenant_id: str, scheme: str) -> list[tuple]:
    return [r for r in store.tables(server.state_dir).get("schemes", []) if r[0] == tenant_id and r[1] == scheme]


def update_data_key(server, tenant_id: str, scheme: str, version: int, **cols) -> None:
    """Overwrites columns of one stored data key, straight in the store (simulates a blob or key
    id moved or tampered with at rest)."""
    names = list(cols)
    if store.STORE == "postgres":
        sets = ", ".join(f"{c} = %s" for c in names)
        with store.pg_connect(store.database_url()) as c:
            n = c.execute(f"UPDATE data_keys SET {sets} WHERE tenant = %s AND scheme = %s AND version = %s",
                          [cols[c] for c in names] + [tenant_id, scheme, version]).rowcount
    else:
        import sqlite3

        sets = ", ".join(f"{c} = ?" for c in names)
        db = sqlite3.connect(server.state_dir / "sqlite_default.db", timeout=10)
        try:
            with db:
                n = db.execute(f"UPDATE data_keys SET {sets} WHERE tenant = ? AND scheme = ? AND version = ?",
                               [cols[c] for c in names] + [tenant_id, scheme, version]).rowcount
        finally:
            db.close()
    assert n == 1, n


def assert_nothing_written(server, tenant, name: str) -> None:
    err(tenant.admin.get(f"/v1/schemes/{name}"), 404, "scheme_not_found")
    assert scheme_rows(server, tenant.id, name) == []
    assert data_keys(server, tenant.id, name) == {}


def lp(b: bytes) -> bytes:
    return len(b).to_bytes(8, "big") + b


def open_token(dek: bytes, tenant_id: str, token: str) -> bytes:
    """Decrypts an aes-256-gcm token (no subject, no context) with its scheme's DEK, following
    docs/token-format.md: scheme key by HKDF-SHA256, then AES-256-GCM with the documented AAD."""
    prefix, fmt, scheme, version, payload = token.split(".")
    assert (prefix, fmt) == ("veil", "1"), token
    v = int(version).to_bytes(4, "big")
    info = lp(b"veil") + lp(b"scheme-data-key") + (1).to_bytes(4, "big") + lp(tenant_id.encode()) \
        + lp(scheme.encode()) + v
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(dek)
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    aad = lp(b"veil") + lp(b"token-aad") + b"\x01" + lp(tenant_id.encode()) + lp(scheme.encode()) + v \
        + b"\x00" + b"\x00"
    return AESGCM(key).decrypt(raw[:12], raw[12:], aad)


def azure_binding(tenant_id: str, scheme: str, version: int) -> bytes:
    """SHA-256 of the binding Veil appends to a DEK before Key Vault wraps it (docs/kms.md)."""
    out = b""
    for f in (b"veil/v1/azure-kv-wrap", tenant_id.encode(), scheme.encode()):
        out += len(f).to_bytes(4, "big") + f
    return hashlib.sha256(out + version.to_bytes(4, "big")).digest()


def aws_kek(arn: str) -> dict:
    return {"provider": "aws-kms", "key_id": arn}


def az_kek(kv: AzureKeyVaultEmulator, name: str = AZ_KEY) -> dict:
    return {"provider": "azure-keyvault", "key_url": kv.key_url(name)}


def create(tenant, kek: dict, name: str | None = None):
    """POST /v1/schemes with this KEK; returns (name, response)."""
    body = tenant.scheme_body(name, kek=kek)
    return body["name"], tenant.admin.post("/v1/schemes", body)


def protect(tenant, scheme: str, values: list):
    resp = tenant.app.post("/v1/protect", {"scheme": scheme, "values": values})
    body = ok(resp)
    assert item_errors(body["results"]) == [None] * len(values), body
    return [r["value"] for r in body["results"]], resp


def unprotect(tenant, tokens: list):
    resp = tenant.support.post("/v1/unprotect", {"values": tokens})
    body = ok(resp)
    assert item_errors(body["results"]) == [None] * len(tokens), body
    return [r["value"] for r in body["results"]], resp


def stats_delta(kv, before: dict) -> dict:
    after = kv.stats()
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def moto_kms(tmp_path_factory):
    m = motofx.start_moto(log_path=tmp_path_factory.mktemp("moto") / "moto_server.log")
    yield m
    m.stop()


@pytest.fixture(scope="session")
def aws_key(moto_kms) -> str:
    return motofx.create_kms_key(moto_kms)


@pytest.fixture(scope="session")
def kv_emulator():
    emu = AzureKeyVaultEmulator().start()
    emu.create_key(AZ_KEY)
    yield emu
    emu.stop()


@pytest.fixture
def kv(kv_emulator):
    """The session's emulator; no fault or odd setting outlives the test that set it."""
    yield kv_emulator
    kv_emulator.clear_faults()
    kv_emulator.state.token_lifetime = 3600


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory, moto_kms, kv_emulator):
    """Both providers configured (AWS → moto, Azure → emulator via the managed-identity endpoint),
    with moto, the emulator and a dead loopback port allowed. Tests isolate themselves by tenant."""
    s = VeilServer(tmp_path_factory.mktemp("kms"), name="kms",
                   allowed_hosts=[moto_kms.url, kv_emulator.url, DEAD_URL],
                   **motofx.veil_variables(moto_kms), **kv_emulator.variables("managed-identity"))
    yield s
    s.stop()


@pytest.fixture
def t(kms_server):
    return kms_server.tenant()


def azure_server(start_server, kv, name: str, source: str = "managed-identity", **env) -> VeilServer:
    """A fresh server with the module server's Azure settings: no bearer token is shared yet."""
    return start_server(name, allowed_hosts=[kv.url, DEAD_URL], **kv.variables(source), **env)


@pytest.fixture
def az_token(kms_server, kv):
    """kms_server holds a valid shared Key Vault token when the test starts, whatever earlier
    tests did to the emulator's tokens: the test's Azure requests then make no token call. A
    first scheme creation gets one (wrapkey with the shared token; or token + wrapkey on the
    server's first Azure request; or wrapkey → 401, token, wrapkey after an earlier test revoked
    the emulator's tokens); a second creation proves it: one wrapkey, nothing else."""
    t = kms_server.tenant()
    before = kv.stats()
    _, resp = create(t, az_kek(kv))
    ok(resp, 201)
    wraps, unwraps, http = kms_calls(resp)
    assert (wraps, unwraps) == (1, 0) and http == stats_delta(kv, before)["requests"], (kms_calls(resp), kv.stats())
    before = kv.stats()
    _, resp = create(t, az_kek(kv))
    ok(resp, 201)
    assert kms_calls(resp) == (1, 0, 1)
    assert stats_delta(kv, before) == {"wrapkey": 1, "requests": 1}


# --------------------------------------------------------------------------- AWS KMS (moto)

def test_aws_round_trip_and_moto_decrypts_the_stored_key(kms_server, t, moto_kms, aws_key):
    name, resp = create(t, aws_kek(aws_key))
    s = ok(resp, 201)
    assert s["kek"] == aws_kek(aws_key) and s["current_version"] == 1
    assert kms_calls(resp) == (1, 0, 1)

    tokens, _ = protect(t, name, VALUES)
    assert unprotect(t, tokens)[0] == VALUES
    # Bytes, too: base64 in, the identical bytes out.
    raw = [bytes(range(256)), b"\x00\xff\xfe", b""]
    b64 = [base64.b64encode(b).decode() for b in raw]
    body = ok(t.app.post("/v1/protect", {"scheme": name, "values": b64, "encoding": "base64"}))
    toks = [r["value"] for r in body["results"]]
    back = ok(t.support.post("/v1/unprotect", {"values": toks, "encoding": "base64"}))["results"]
    assert [base64.b64decode(r["value"]) for r in back] == raw

    rows = data_keys(kms_server, t.id, name)
    assert set(rows) == {1}
    row = rows[1]
    assert row["kek_id"] == aws_key and row["kek_version"] == "" and row["state"] == "active"

    # moto's own Decrypt, with the documented encryption context, gives the 32-byte DEK back...
    ctx = {"veil:tenant": t.id, "veil:scheme": name, "veil:version": "1"}
    assert ctx == motofx.encryption_context(t.id, name, 1)
    dek = motofx.decrypt(moto_kms, row["wrapped_dek"], ctx)
    assert len(dek) == 32
    # ...and that DEK opens the component's tokens, per docs/token-format.md.
    assert [open_token(dek, t.id, tok).decode() for tok in tokens] == VALUES

    # Any other context fails, as KMS does.
    for wrong in ({**ctx, "veil:tenant": "t-other"}, {**ctx, "veil:scheme": "other"},
                  {**ctx, "veil:version": "2"}, {}, {**ctx, "extra": "x"}):
        with pytest.raises(ClientError) as e:
            motofx.decrypt(moto_kms, row["wrapped_dek"], wrong)
        assert e.value.response["Error"]["Code"] == "InvalidCiphertextException", wrong


def test_aws_rotation_binds_the_new_version(kms_server, t, moto_kms, aws_key):
    name, resp = create(t, aws_kek(aws_key))
    ok(resp, 201)
    old, _ = protect(t, name, ["v1 value"])
    resp = t.admin.post(f"/v1/schemes/{name}/rotate")
    assert ok(resp)["current_version"] == 2
    assert kms_calls(resp) == (1, 0, 1)
    new, _ = protect(t, name, ["v2 value"])
    assert re.fullmatch(TOKEN_RE.format(scheme=name, version=2), new[0]), new
    assert unprotect(t, old + new)[0] == ["v1 value", "v2 value"]

    rows = data_keys(kms_server, t.id, name)
    assert set(rows) == {1, 2} and rows[2]["kek_id"] == aws_key
    dek2 = motofx.decrypt(moto_kms, rows[2]["wrapped_dek"], motofx.encryption_context(t.id, name, 2))
    assert open_token(dek2, t.id, new[0]) == b"v2 value"
    with pytest.raises(ClientError) as e:  # version 2's key is not version 1's
        motofx.decrypt(moto_kms, rows[2]["wrapped_dek"], motofx.encryption_context(t.id, name, 1))
    assert e.value.response["Error"]["Code"] == "InvalidCiphertextException"


def test_aws_unknown_key_is_kms_denied_and_nothing_written(kms_server, t):
    missing = f"arn:aws:kms:{motofx.REGION}:123456789012:key/{uuid.uuid4()}"
    name, resp = create(t, aws_kek(missing))
    e = err(resp, 502, "kms_denied")
    assert "NotFoundException" not in resp.text and missing not in e["message"]
    assert_nothing_written(kms_server, t, name)


def test_aws_alias_stores_the_key_arn(kms_server, t, moto_kms):
    alias = f"alias/{new_name('veil')}"
    arn = motofx.create_kms_key(moto_kms, alias=alias)
    name, resp = create(t, aws_kek(alias))
    assert ok(resp, 201)["kek"] == aws_kek(alias)
    row = data_keys(kms_server, t.id, name)[1]
    assert row["kek_id"] == arn and row["kek_version"] == ""
    tokens, _ = protect(t, name, ["x"])
    assert unprotect(t, tokens)[0] == ["x"]


@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_a_wrapped_key_moved_to_another_scheme_does_not_unwrap(kms_server, t, kv, aws_key, provider):
    """The encryption context (AWS) / the wrapped binding (Azure) ties a stored blob to its tenant,
    scheme and version: copied under another scheme at rest, it is refused."""
    kek = aws_kek(aws_key) if provider == "aws" else az_kek(kv)
    a, resp = create(t, kek)
    ok(resp, 201)
    b, resp = create(t, kek)
    ok(resp, 201)
    tokens, _ = protect(t, a, ["x"])
    rows_b = data_keys(kms_server, t.id, b)[1]
    update_data_key(kms_server, t.id, a, 1, wrapped_dek=rows_b["wrapped_dek"], kek_id=rows_b["kek_id"],
                    kek_version=rows_b["kek_version"])
    resp = t.support.post("/v1/unprotect", {"values": tokens})
    err(resp, 500, "kms_unwrap_failed")
    assert kms_calls(resp) == (0, 1, 1)  # Azure: the token the creates shared, one unwrapkey


@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_a_stored_key_id_of_another_key_is_refused_before_any_call(kms_server, t, kv, moto_kms, aws_key, provider):
    if provider == "aws":
        kek, other = aws_kek(aws_key), motofx.create_kms_key(moto_kms)
    else:
        kek, other = az_kek(kv), kv.create_key(new_name("k"))
    name, resp = create(t, kek)
    ok(resp, 201)
    tokens, _ = protect(t, name, ["x"])
    update_data_key(kms_server, t.id, name, 1, kek_id=other)
    resp = t.support.post("/v1/unprotect", {"values": tokens})
    err(resp, 502, "kms_denied")
    assert kms_calls(resp) == (0, 1, 0)


# --------------------------------------------------------------------------- Azure Key Vault (emulator)

def check_azure_scheme(server, t, kv, name: str, version: int, kid: str) -> bytes:
    """The stored row for `version` names exactly `kid`, and the emulator's key unwraps it to the
    DEK followed by SHA-256 of its binding. Returns the DEK."""
    row = data_keys(server, t.id, name)[version]
    assert row["kek_id"] == kid, (row["kek_id"], kid)
    assert row["kek_version"] == kid.rsplit("/", 1)[1]
    plain = kv.unwrap(kid, row["wrapped_dek"])
    assert len(plain) == 64 and plain[32:] == azure_binding(t.id, name, version)
    return plain[:32]


def test_azure_managed_identity_round_trip_and_key_rotation(start_server, kv):
    """On a fresh server: the first request gets the managed-identity token, later requests
    (other tenants' too) reuse it through the host key-value store."""
    kms_server = azure_server(start_server, kv, "az-mi")
    t = kms_server.tenant()
    key = new_name("k")
    kid1 = kv.create_key(key)
    before = kv.stats()
    name, resp = create(t, az_kek(kv, key))
    s = ok(resp, 201)
    assert s["kek"] == {"provider": "azure-keyvault", "key_url": kv.key_url(key)}
    assert kms_calls(resp) == (1, 0, 2)  # one managed-identity token, one wrapkey
    assert stats_delta(kv, before) == {"token": 1, "wrapkey": 1, "requests": 2}

    old, resp = protect(t, name, VALUES)
    assert kms_calls(resp) == (0, 1, 1)  # the shared token, one unwrapkey
    assert unprotect(t, old)[0] == VALUES
    dek1 = check_azure_scheme(kms_server, t, kv, name, 1, kid1)  # the full kid, with its version
    assert [open_token(dek1, t.id, tok).decode() for tok in old] == VALUES

    # A new key version in the vault: the next scheme rotation wraps with it (the key URL is
    # versionless), while the old data key still unwraps under the exact kid stored with it.
    kid2 = kv.create_key(key)
    assert kid2 != kid1
    resp = t.admin.post(f"/v1/schemes/{name}/rotate")
    assert ok(resp)["current_version"] == 2 and kms_calls(resp) == (1, 0, 1)
    check_azure_scheme(kms_server, t, kv, name, 2, kid2)
    assert data_keys(kms_server, t.id, name)[1]["kek_id"] == kid1  # untouched
    new, _ = protect(t, name, ["after rotation"])
    before = kv.stats()
    values, resp = unprotect(t, old + new)
    assert values == VALUES + ["after rotation"]
    assert kms_calls(resp) == (0, 2, 2)
    assert stats_delta(kv, before) == {"unwrapkey": 2, "requests": 2}


def test_azure_unwrap_uses_the_stored_key_version(kms_server, t, kv):
    """Disabling the vault key's old version breaks exactly the data key wrapped by it."""
    key = new_name("k")
    kid1 = kv.create_key(key)
    name, resp = create(t, az_kek(kv, key))
    ok(resp, 201)
    old, _ = protect(t, name, ["old"])
    kv.create_key(key)
    ok(t.admin.post(f"/v1/schemes/{name}/rotate"))
    new, _ = protect(t, name, ["new"])
    kv.state.find(key, kid1.rsplit("/", 1)[1]).enabled = False
    try:
        assert unprotect(t, new)[0] == ["new"]
        resp = t.support.post("/v1/unprotect", {"values": old})
        err(resp, 502, "kms_denied")  # Key Vault: 403 on a disabled key version
        assert "disabled" not in resp.text
    finally:
        kv.state.find(key, kid1.rsplit("/", 1)[1]).enabled = True
    assert unprotect(t, old)[0] == ["old"]


@pytest.mark.parametrize("source", ["client-secret", "imds"])
def test_azure_other_token_sources(start_server, kv, source):
    server = start_server(f"az-{source}", allowed_hosts=[kv.url], **kv.variables(source))
    t = server.tenant()
    before = kv.stats()
    name, resp = create(t, az_kek(kv))
    ok(resp, 201)
    assert kms_calls(resp) == (1, 0, 2)
    assert stats_delta(kv, before) == {"token": 1, "wrapkey": 1, "requests": 2}
    tokens, _ = protect(t, name, VALUES)
    assert unprotect(t, tokens)[0] == VALUES
    kid = f"{kv.key_url(AZ_KEY)}/{kv.state.find(AZ_KEY, '').version}"  # the key's current version
    check_azure_scheme(server, t, kv, name, 1, kid)


def test_azure_401_challenge_gets_one_fresh_token(kms_server, az_token, t, kv):
    """The shared token is revoked while the vault holds the wrap request: the vault answers 401
    with its challenge, the component fetches one fresh token, the retry succeeds, and the fresh
    token replaces the shared one for later requests."""
    before = kv.stats()
    kv.fault(delay_ms=1500, count=1, scope="vault")  # delay only, no error status
    box = {}
    name = new_name()
    worker = threading.Thread(target=lambda: box.update(resp=create(t, az_kek(kv), name)[1]))
    worker.start()
    deadline = time.monotonic() + 10
    while kv.stats()["faults_served"] == before["faults_served"]:
        assert time.monotonic() < deadline, "the wrap request never reached the emulator"
        time.sleep(0.02)
    kv.revoke_tokens()
    worker.join(30)
    resp = box["resp"]
    ok(resp, 201)
    assert kms_calls(resp) == (1, 0, 3)  # wrapkey (shared token) → 401, token, wrapkey
    assert stats_delta(kv, before) == {"token": 1, "unauthorized": 1, "wrapkey": 1, "faults_served": 1,
                                       "requests": 3}
    before = kv.stats()
    tokens, resp = protect(t, name, ["x"])
    assert kms_calls(resp) == (0, 1, 1)  # the fresh token is the shared one now
    assert unprotect(t, tokens)[0] == ["x"]
    assert stats_delta(kv, before) == {"unwrapkey": 2, "requests": 2}


def test_azure_second_401_is_kms_denied_and_nothing_written(start_server, kv):
    kms_server = azure_server(start_server, kv, "az-401")  # no token shared yet
    t = kms_server.tenant()
    kv.state.token_lifetime = 0  # every token is already expired when the vault sees it
    before = kv.stats()
    name, resp = create(t, az_kek(kv))
    e = err(resp, 502, "kms_denied")
    assert "AKV10000" not in resp.text and "Bearer" not in e["message"]
    assert kms_calls(resp) == (1, 0, 4)  # token, wrapkey → 401, exactly one refresh, wrapkey → 401
    assert stats_delta(kv, before) == {"token": 2, "unauthorized": 2, "requests": 4}
    assert_nothing_written(kms_server, t, name)


def test_azure_unknown_key_is_kms_denied_and_nothing_written(kms_server, t, kv):
    name, resp = create(t, az_kek(kv, new_name("missing")))
    e = err(resp, 502, "kms_denied")
    assert "KeyNotFound" not in resp.text and "missing" not in e["message"]
    assert_nothing_written(kms_server, t, name)


def test_azure_token_endpoint_refusal_is_kms_denied(start_server, kv):
    kms_server = azure_server(start_server, kv, "az-refused")  # no token shared yet
    t = kms_server.tenant()
    kv.fault(401, count=1, scope="token")
    before = kv.stats()
    name, resp = create(t, az_kek(kv))
    err(resp, 502, "kms_denied")
    assert kms_calls(resp) == (1, 0, 1)  # the refused token request; no vault call
    assert stats_delta(kv, before) == {"faults_served": 1, "requests": 1}
    assert_nothing_written(kms_server, t, name)


# --------------------------------------------------------------------------- faults

def test_azure_vault_down_is_kms_unavailable_and_nothing_written(kms_server, az_token, t, kv):
    before = kv.stats()
    name, resp = create(t, {"provider": "azure-keyvault", "key_url": f"{DEAD_URL}/keys/{AZ_KEY}"})
    err(resp, 503, "kms_unavailable")
    assert kms_calls(resp) == (1, 0, 4)  # the shared token; 1 try + kms_max_retries (3) retries
    assert stats_delta(kv, before) == {}  # no token call reached the emulator
    assert_nothing_written(kms_server, t, name)


def test_aws_vault_down_is_kms_unavailable_and_nothing_written(start_server, moto_kms, aws_key):
    server = start_server("aws-down", allowed_hosts=[DEAD_URL],
                          **{**motofx.veil_variables(moto_kms), "aws_kms_endpoint": DEAD_URL})
    t = server.tenant()
    name, resp = create(t, aws_kek(aws_key))
    err(resp, 503, "kms_unavailable")
    assert kms_calls(resp) == (1, 0, 4)
    assert_nothing_written(server, t, name)


def test_throttled_twice_then_fine(kms_server, az_token, t, kv):
    kv.fault(429, count=2, retry_after=1, scope="vault")
    before = kv.stats()
    start = time.monotonic()
    name, resp = create(t, az_kek(kv))
    elapsed = time.monotonic() - start
    ok(resp, 201)
    assert kms_calls(resp) == (1, 0, 3)  # 429, 429, wrapkey (with the shared token)
    assert stats_delta(kv, before) == {"faults_served": 2, "wrapkey": 1, "requests": 3}
    assert 1.9 <= elapsed < 10, f"Retry-After: 1 twice should take about 2 s, took {elapsed:.1f} s"
    assert set(data_keys(kms_server, t.id, name)) == {1}
    tokens, _ = protect(t, name, ["x"])
    assert unprotect(t, tokens)[0] == ["x"]


def test_throttled_with_retry_after_beyond_the_budget_fails_at_once(kms_server, az_token, t, kv):
    kv.fault(429, count=1, retry_after=30, scope="vault")
    before = kv.stats()
    start = time.monotonic()
    name, resp = create(t, az_kek(kv))
    elapsed = time.monotonic() - start
    err(resp, 503, "kms_throttled")
    assert kms_calls(resp) == (1, 0, 1)  # one 429 with the shared token, not retried
    assert stats_delta(kv, before) == {"faults_served": 1, "requests": 1}
    assert elapsed < 5, f"a Retry-After beyond 5 s is not waited for; took {elapsed:.1f} s"
    assert_nothing_written(kms_server, t, name)


def test_vault_5xx_on_rotation_leaves_the_scheme_as_it_was(kms_server, t, kv):
    name, resp = create(t, az_kek(kv))
    ok(resp, 201)
    tokens, _ = protect(t, name, ["x"])
    kv.fault(503, count=4, scope="vault")  # the try and all 3 retries
    before = kv.stats()
    resp = t.admin.post(f"/v1/schemes/{name}/rotate")
    err(resp, 503, "kms_unavailable")
    assert "injected by the test fixture" not in resp.text
    assert kms_calls(resp) == (1, 0, 4)  # the token shared by the create; 4 tries, no token call
    assert stats_delta(kv, before) == {"faults_served": 4, "requests": 4}
    assert ok(t.admin.get(f"/v1/schemes/{name}"))["current_version"] == 1
    assert set(data_keys(kms_server, t.id, name)) == {1}
    assert unprotect(t, tokens)[0] == ["x"]


def test_slow_vault_times_out_within_the_bound(start_server, kv):
    server = start_server("slow", allowed_hosts=[kv.url], kms_timeout_ms="500", **kv.variables())
    t = server.tenant()
    before = kv.stats()
    kv.fault(delay_ms=2000, count=1, scope="vault")
    start = time.monotonic()
    name, resp = create(t, az_kek(kv))
    elapsed = time.monotonic() - start
    err(resp, 503, "kms_unavailable")
    assert elapsed < 10, f"kms_timeout_ms=500 should fail in about 0.5 s; took {elapsed:.1f} s"
    assert kms_calls(resp) == (1, 0, 2)  # a timed-out request is not retried
    time.sleep(max(0.0, 2.2 - (time.monotonic() - start)))  # let the delayed emulator thread finish
    # the token, then the delayed wrapkey, which the emulator still answers after Veil gave up
    assert stats_delta(kv, before) == {"token": 1, "faults_served": 1, "wrapkey": 1, "requests": 2}
    assert_nothing_written(server, t, name)


def test_outbound_host_not_allowed_is_misconfigured(start_server, moto_kms, aws_key, kv):
    server = start_server("no-hosts", allowed_hosts=[],
                          **motofx.veil_variables(moto_kms), **kv.variables())
    t = server.tenant()
    before = kv.stats()
    for kek in (aws_kek(aws_key), az_kek(kv)):
        name, resp = create(t, kek)
        err(resp, 500, "misconfigured")
        assert_nothing_written(server, t, name)
    assert stats_delta(kv, before) == {}  # nothing reached the emulator


# --------------------------------------------------------------------------- KMS call counting

@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_kms_calls_at_most_one_unwrap_per_scheme_version(kms_server, az_token, t, kv, aws_key, provider):
    """One vault call per wrap or unwrap; Azure's token is already shared (az_token), so no
    request makes a token call and both providers count alike."""
    kek = aws_kek(aws_key) if provider == "aws" else az_kek(kv)
    name, resp = create(t, kek)
    ok(resp, 201)
    assert kms_calls(resp) == (1, 0, 1)

    values = [f"value-{i}" for i in range(50)]
    v1, resp = protect(t, name, values)
    assert kms_calls(resp) == (0, 1, 1)
    before = kv.stats()
    back, resp = unprotect(t, v1)
    assert back == values
    assert kms_calls(resp) == (0, 1, 1)
    assert stats_delta(kv, before) == ({"unwrapkey": 1, "requests": 1} if provider == "azure" else {})

    ok(t.admin.post(f"/v1/schemes/{name}/rotate"))
    v2, _ = protect(t, name, values)
    mixed = [tok for pair in zip(v1, v2) for tok in pair]  # interleaved versions 1 and 2
    back, resp = unprotect(t, mixed)
    assert back == [v for v in values for _ in (1, 2)]
    assert kms_calls(resp) == (0, 2, 2)

    # N sequential protect requests: one unwrap each (no DEK cache configured).
    before = kv.stats()
    total = [0, 0, 0]
    for i in range(5):
        _, resp = protect(t, name, [f"n{i}", f"m{i}"])
        total = [a + b for a, b in zip(total, kms_calls(resp))]
    assert total == [0, 5, 5]
    assert stats_delta(kv, before) == ({"unwrapkey": 5, "requests": 5} if provider == "azure" else {})


def test_kms_calls_one_unwrap_per_scheme_across_providers(kms_server, t, kv, aws_key):
    a, resp = create(t, aws_kek(aws_key))
    ok(resp, 201)
    b, resp = create(t, az_kek(kv))
    ok(resp, 201)
    ta, _ = protect(t, a, ["a1", "a2", "a3"])
    tb, _ = protect(t, b, ["b1", "b2", "b3"])
    back, resp = unprotect(t, [ta[0], tb[0], ta[1], tb[1], ta[2], tb[2]])
    assert back == ["a1", "b1", "a2", "b2", "a3", "b3"]
    assert kms_calls(resp) == (0, 2, 2)  # moto decrypt; emulator unwrapkey (token shared by the create)


def test_azure_token_is_shared_across_requests_until_a_401(start_server, kv):
    """docs/kms.md § "Bearer tokens for Key Vault": on a fresh server the first Azure request gets
    the one token; N later requests (another tenant's too) reuse it through the host key-value
    store, one vault call each; a 401 challenge fetches exactly one fresh token, which later
    requests share in turn."""
    server = azure_server(start_server, kv, "az-shared")
    t = server.tenant()
    before = kv.stats()
    name, resp = create(t, az_kek(kv))
    ok(resp, 201)
    assert kms_calls(resp) == (1, 0, 2)  # token, wrapkey
    assert stats_delta(kv, before) == {"token": 1, "wrapkey": 1, "requests": 2}

    n = 5
    before = kv.stats()
    for i in range(n):
        _, resp = protect(t, name, [f"v{i}"])
        assert kms_calls(resp) == (0, 1, 1), i  # unwrapkey only
    other = server.tenant()  # the key is the token source, client and resource: not the tenant
    other_name, resp = create(other, az_kek(kv))
    ok(resp, 201)
    assert kms_calls(resp) == (1, 0, 1)  # wrapkey only
    assert stats_delta(kv, before) == {"unwrapkey": n, "wrapkey": 1, "requests": n + 1}

    kv.revoke_tokens()
    before = kv.stats()
    tokens, resp = protect(t, name, ["after revocation"])
    assert kms_calls(resp) == (0, 1, 3)  # unwrapkey → 401, one fresh token, unwrapkey
    assert stats_delta(kv, before) == {"unauthorized": 1, "token": 1, "unwrapkey": 1, "requests": 3}

    before = kv.stats()
    for i in range(n):
        _, resp = protect(other if i % 2 else t, other_name if i % 2 else name, [f"w{i}"])
        assert kms_calls(resp) == (0, 1, 1), i  # the fresh token replaced the shared one
    assert unprotect(t, tokens)[0] == ["after revocation"]
    assert stats_delta(kv, before) == {"unwrapkey": n + 1, "requests": n + 1}


def test_local_and_non_kms_requests_report_zero_http(kms_server, t):
    name = t.create_scheme()["name"]
    resp = t.app.post("/v1/protect", {"scheme": name, "values": ["x"]})
    ok(resp)
    assert kms_calls(resp) == (0, 1, 0)
    resp = t.admin.get(f"/v1/schemes/{name}")
    ok(resp)
    assert kms_calls(resp) == (0, 0, 0)
