"""A small client for Veil's HTTP API, and the checks that hold its answers to the exact shape
docs/api.md gives: `ok` (status and JSON), `err` (status, body shape and code), `item_errors`."""
from __future__ import annotations

import secrets

import requests

from .tokens import hs256

TIMEOUT = 30  # seconds, every HTTP call
TOKEN_RE = r"veil\.1\.{scheme}\.{version}\.[A-Za-z0-9_-]+"

DEFAULT_POLICY = {"protect": ["app"], "unprotect": ["support"], "mask": ["analyst"], "admin": ["admin"]}


def new_tenant() -> str:
    return f"t-{secrets.token_hex(6)}"


def new_name(prefix="s") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


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
    assert resp.status_code == status, \
        f"{resp.request.method} {resp.request.path_url}: expected {status}, got {resp.status_code}: {resp.text[:500]}"
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

    def __init__(self, server, tid: str, signer=hs256):
        self.server, self.id, self.signer = server, tid, signer

    def as_(self, *roles, **extra) -> Api:
        return self.server.api(self.signer(self.id, roles, **extra))

    # a client for each role of DEFAULT_POLICY, with a fresh token each time
    admin = property(lambda self: self.as_("admin"))
    app = property(lambda self: self.as_("app"))
    support = property(lambda self: self.as_("support"))
    analyst = property(lambda self: self.as_("analyst"))
    privacy = property(lambda self: self.as_("privacy"))

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
