"""Helpers for Veil's integration tests: the host process, JWT minting, a small API client.

Keys (JWT signing keys, the local KEK, the HS256 secret) are generated once per test session,
when this module is first imported.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import store

REPO = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"veil: listening on (http://\S+)")
TIMEOUT = 30  # seconds, every HTTP call
TOKEN_RE = r"veil\.1\.{scheme}\.{version}\.[A-Za-z0-9_-]+"

DEFAULT_POLICY = {"protect": ["app"], "unprotect": ["support"], "mask": ["analyst"], "admin": ["admin"]}


# --------------------------------------------------------------------------- session secrets

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n: int, length: int | None = None) -> str:
    length = length or (n.bit_length() + 7) // 8
    return b64url(n.to_bytes(length, "big"))


LOCAL_KEK = base64.b64encode(os.urandom(32)).decode()
HS256_SECRET = secrets.token_urlsafe(36)  # 48 characters

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()

RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _jwks() -> str:
    rn = RSA_KEY.public_key().public_numbers()
    en = EC_KEY.public_key().public_numbers()
    ed_raw = ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keys = [
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": _int_b64(rn.n), "e": _int_b64(rn.e)},
        {"kty": "EC", "kid": "ec1", "use": "sig", "alg": "ES256", "crv": "P-256",
         "x": _int_b64(en.x, 32), "y": _int_b64(en.y, 32)},
        {"kty": "OKP", "kid": "ed1", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "x": b64url(ed_raw)},
    ]
    return json.dumps({"keys": keys})


JWKS = _jwks()


def base_env(**overrides: str) -> dict[str, str]:
    """The host's environment: ours, minus any SPIN_VARIABLE_* leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_VARIABLE_")}
    env.update({
        "SPIN_VARIABLE_DEV_MODE": "true",
        "SPIN_VARIABLE_LOCAL_KEK": LOCAL_KEK,
        "SPIN_VARIABLE_JWT_HS256_SECRET": HS256_SECRET,
        "SPIN_VARIABLE_JWT_JWKS": JWKS,
    })
    env.update(store.server_env())
    env.update({k if k.startswith("SPIN_VARIABLE_") else f"SPIN_VARIABLE_{k.upper()}": str(v)
                for k, v in overrides.items()})
    return env


# --------------------------------------------------------------------------- JWTs

def claims(tenant: str | None, roles, **extra) -> dict:
    now = int(time.time())
    body = {"sub": f"user-{secrets.token_hex(3)}", "iat": now, "exp": now + 600, "roles": list(roles)}
    if tenant is not None:
        body["tenant"] = tenant
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def hs256(tenant, roles=(), secret: str | bytes | None = None, **extra) -> str:
    return jwt.encode(claims(tenant, roles, **extra), secret or HS256_SECRET, algorithm="HS256")


def rs256(tenant, roles=(), key=None, kid="rsa1", **extra) -> str:
    return jwt.encode(claims(tenant, roles, **extra), key or RSA_KEY, algorithm="RS256", headers={"kid": kid})


def es256(tenant, roles=(), **extra) -> str:
    return jwt.encode(claims(tenant, roles, **extra), EC_KEY, algorithm="ES256", headers={"kid": "ec1"})


def eddsa(tenant, roles=(), **extra) -> str:
    return jwt.encode(claims(tenant, roles, **extra), ED_KEY, algorithm="EdDSA", headers={"kid": "ed1"})


def raw_jwt(header: dict, payload: dict, sign=None) -> str:
    """A JWT built by hand (PyJWT refuses to build the hostile ones)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    sig = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(sig)}"


def alg_none(tenant, roles=()) -> str:
    return raw_jwt({"alg": "none", "typ": "JWT"}, claims(tenant, roles))


def hs256_with_rsa_public_pem(tenant, roles=()) -> str:
    """Algorithm confusion: HS256 'signed' with the RS256 verification key as the HMAC secret."""
    return raw_jwt({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}, claims(tenant, roles),
                   lambda m: hmac.new(RSA_PUBLIC_PEM, m, hashlib.sha256).digest())


def new_tenant() -> str:
    return f"t-{secrets.token_hex(6)}"


def new_name(prefix="s") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- the host

def binaries() -> tuple[Path, Path]:
    veil = Path(os.environ.get("VEIL_BIN") or REPO / "target/release/veil")
    wasm = Path(os.environ.get("VEIL_WASM") or REPO / "target/wasm32-wasip2/release/veil.wasm")
    veil, wasm = (p if p.is_absolute() else REPO / p for p in (veil, wasm))
    missing = [str(p) for p in (veil, wasm) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(missing)}: build them first by running the test script "
            f"(or set VEIL_BIN / VEIL_WASM); pytest does not build them")
    return veil.resolve(), wasm.resolve()


def write_manifest(dest_dir: Path, wasm: Path, allowed_hosts: list[str] | None = None) -> Path:
    """A copy of spin.toml serving `wasm`; `allowed_outbound_hosts` = the store's entries plus
    `allowed_hosts` (e.g. a KMS emulator's `http://127.0.0.1:PORT`)."""
    text = (REPO / "spin.toml").read_text()
    new, n = re.subn(r'(?m)^(\s*source\s*=\s*)"[^"\n]*"', lambda m: m.group(1) + json.dumps(str(wasm)), text)
    assert n == 1, "spin.toml: expected exactly one `source = \"...\"` line"
    hosts = json.dumps(store.allowed_outbound_hosts() + list(allowed_hosts or []))
    new, n = re.subn(r'(?m)^(\s*allowed_outbound_hosts\s*=\s*)\[[^\]\n]*\]', lambda m: m.group(1) + hosts, new)
    assert n == 1, "spin.toml: expected exactly one `allowed_outbound_hosts = [...]` line"
    path = dest_dir / "spin.toml"
    path.write_text(new)
    return path


class VeilServer:
    """One `veil serve` process on a free loopback port."""

    all: list["VeilServer"] = []  # every server started in this session (stderr goes into failure reports)

    def __init__(self, workdir: Path, state_dir: Path | None = None, name="veil", raw_env: dict | None = None,
                 allowed_hosts: list[str] | None = None, extra_args=(), **env_overrides):
        self.name = name
        self.extra_args = [str(a) for a in extra_args]
        self.bin, wasm = binaries()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.allowed_hosts = list(allowed_hosts or [])
        self.manifest = write_manifest(self.workdir, wasm, self.allowed_hosts)
        self.state_dir = Path(state_dir or self.workdir / "state")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.env = base_env(**env_overrides)
        self.env.update(raw_env or {})
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.crash_reported = False
        self.stdout_lines: list[str] = []
        self.stderr_path = self.workdir / f"{name}-{secrets.token_hex(3)}.stderr"
        VeilServer.all.append(self)
        self.start()

    def stderr(self, tail: int = 8000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.stdout_lines = []
        err = open(self.stderr_path, "a")
        self.proc = subprocess.Popen(
            [str(self.bin), "serve", "--manifest", str(self.manifest), "--listen", "127.0.0.1:0",
             "--state-dir", str(self.state_dir), *self.extra_args],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=self.env,
            cwd=self.workdir, text=True, bufsize=1)
        err.close()
        found = threading.Event()
        proc = self.proc

        def pump():  # keep reading stdout for the whole life of the process, so it never blocks
            for line in proc.stdout:
                self.stdout_lines.append(line)
                m = LISTEN_RE.search(line)
                if m and not found.is_set():
                    self.url = m.group(1).rstrip("/")
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 60
        while not found.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else "timed out (60 s)"
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                raise RuntimeError(
                    f"veil serve {state} before printing 'veil: listening on http://HOST:PORT'\n"
                    f"--- stdout ---\n{''.join(self.stdout_lines)}\n--- stderr ---\n{self.stderr()}")

    def stop(self, check: bool = True) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name}: did not exit within 20 s of SIGTERM\n{self.stderr()}")
        if check:
            assert code == 0, f"{self.name}: exit code {code} after SIGTERM\n{self.stderr()}"
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def api(self, token: str | None = None) -> "Api":
        return Api(self.url, token)

    def tenant(self, tenant_id: str | None = None, signer=hs256) -> "Tenant":
        return Tenant(self, tenant_id or new_tenant(), signer)


# --------------------------------------------------------------------------- API client

class Api:
    def __init__(self, url: str, token: str | None = None):
        self.url = url
        self.token = token
        self.session = requests.Session()

    def headers(self, extra=None) -> dict:
        h = {"authorization": f"Bearer {self.token}"} if self.token else {}
        h.update(extra or {})
        return h

    def request(self, method: str, path: str, body=None, *, data=None, headers=None) -> requests.Response:
        kw = {"json": body} if data is None and body is not None else {"data": data}
        return self.session.request(method, self.url + path, headers=self.headers(headers), timeout=TIMEOUT, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)


def ok(resp: requests.Response, status: int = 200) -> dict:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.path_url}: expected {status}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    return resp.json()


def err(resp: requests.Response, status: int, code: str) -> dict:
    """Asserts a whole-request error: status, content-type, exact body shape and code."""
    where = f"{resp.request.method} {resp.request.path_url}"
    assert resp.status_code == status, f"{where}: expected {status} {code}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("content-type", "").split(";")[0].strip() == "application/json", \
        f"{where}: content-type {resp.headers.get('content-type')!r}"
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    e = body["error"]
    assert isinstance(e, dict) and isinstance(e.get("code"), str) and isinstance(e.get("message"), str), body
    assert e["code"] == code, f"{where}: expected code {code!r}, got {body}"
    return e


def item_errors(results: list) -> list:
    """Per-item error codes (None for a successful item)."""
    out = []
    for r in results:
        assert isinstance(r, dict), r
        if "error" in r:
            assert "value" not in r, r
            assert isinstance(r["error"].get("code"), str) and isinstance(r["error"].get("message"), str), r
            out.append(r["error"]["code"])
        else:
            assert set(r) == {"value"}, r
            out.append(None)
    return out


class Tenant:
    """One tenant on one server, with clients for the default policy's roles."""

    def __init__(self, server: VeilServer, tid: str, signer=hs256):
        self.server, self.id, self.signer = server, tid, signer

    def as_(self, *roles, **extra) -> Api:
        return self.server.api(self.signer(self.id, roles, **extra))

    @property
    def admin(self):
        return self.as_("admin")

    @property
    def app(self):
        return self.as_("app")

    @property
    def support(self):
        return self.as_("support")

    @property
    def analyst(self):
        return self.as_("analyst")

    def scheme_body(self, name=None, **fields) -> dict:
        body = {"name": name or new_name(), "algorithm": "aes-256-gcm", "kek": {"provider": "local"},
                "policy": DEFAULT_POLICY}
        body.update(fields)
        return {k: v for k, v in body.items() if v is not None}

    def create_scheme(self, name=None, **fields) -> dict:
        body = self.scheme_body(name, **fields)
        return ok(self.admin.post("/v1/schemes", body), 201)

    def protect(self, scheme: str, values: list, **kw) -> list[str]:
        body = ok(self.app.post("/v1/protect", {"scheme": scheme, "values": values, **kw}))
        assert item_errors(body["results"]) == [None] * len(values), body
        return [r["value"] for r in body["results"]]

    def unprotect_results(self, tokens: list, api: Api | None = None, **kw) -> list:
        body = ok((api or self.support).post("/v1/unprotect", {"values": tokens, **kw}))
        assert isinstance(body.get("results"), list) and len(body["results"]) == len(tokens), body
        return body["results"]

    def unprotect(self, tokens: list, **kw) -> list:
        results = self.unprotect_results(tokens, **kw)
        assert item_errors(results) == [None] * len(tokens), results
        return [r["value"] for r in results]

    def mask(self, scheme: str, values: list) -> list:
        body = ok(self.analyst.post("/v1/mask", {"scheme": scheme, "values": values}))
        assert item_errors(body["results"]) == [None] * len(values), body
        return [r["value"] for r in body["results"]]
