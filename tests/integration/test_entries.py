"""Issue 20 lever 1: the component's two HTTP doors, `wasi:http/incoming-handler` (what Spin
calls) and the lean `veil:gateway/http` export (what `veil serve`, Azure Functions and Lambda call
by default; `--entry` / `VEIL_ENTRY`), give the same answers. One script of raw requests, good
and bad, goes to a host on each entry over one database; status, every header in order and the
body must be byte for byte the same, apart from what is random or the time (tokens, timestamps,
the `date` header) and the framing (`content-length` / `transfer-encoding`: hyper frames a
streamed wasi-http body as chunks, a lean body with its length).

Also lever 2 (a): the component reads each variable it needs with one host call, once per
instance, counted by the host (`--debug-host-calls`): the same number for every request of one
kind on fresh instances, none for a request on a reused instance that has served one like it,
through either door; and (c): a request of up to `max_batch` short values does not grow the
instance's linear memory.

The whole suite runs through each door too: scripts/test.sh runs it on SQLite through the lean
door and on PostgreSQL through wasi-http (docs/testing.md, "The two HTTP doors")."""
from __future__ import annotations

import http.client
import json
import re
from urllib.parse import urlsplit

import pytest

from veilkit import DEFAULT_POLICY, VeilServer, hs256, new_name, new_tenant, ok

ENTRIES = ("lean", "wasi-http")
FRAMING = {"content-length", "transfer-encoding", "date", "connection", "keep-alive"}
TOKEN = re.compile(rb"veil\.1\.[A-Za-z0-9_.-]+?\.\d+\.[A-Za-z0-9_-]+")
TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def send(url: str, method: str, path: str, body: bytes | None = None, headers=()) -> tuple:
    """One request on its own connection; the answer as (status, [(name, value)], body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        shown = [(k.lower(), v) for k, v in r.getheaders() if k.lower() not in FRAMING]
        return r.status, shown, data
    finally:
        conn.close()


def normal(answer: tuple) -> tuple:
    status, headers, body = answer
    return status, headers, TIME.sub(b"<time>", TOKEN.sub(b"<token>", body))


def script(tenant: str, scheme: str, tokens: list[str]) -> list[tuple]:
    """(label, method, path, body, headers): every kind of answer the API gives."""
    def bearer(*roles):
        return ("authorization", f"Bearer {hs256(tenant, list(roles))}")
    js = ("content-type", "application/json")
    protect = json.dumps({"scheme": scheme, "values": ["4111111111111111", "ünï ✓"]}).encode()
    return [
        ("health", "GET", "/healthz", None, []),
        ("openapi", "GET", "/v1/openapi.json", None, []),
        ("no such route", "GET", "/v1/nope", None, []),
        ("method not allowed", "DELETE", "/v1/protect", None, []),
        ("form body", "POST", "/v1/protect", b"a=b", [bearer("app"), ("content-type", "application/x-www-form-urlencoded")]),
        ("other media type", "POST", "/v1/protect", b"{}", [bearer("app"), ("content-type", "text/plain")]),
        ("no credential", "POST", "/v1/protect", protect, [js]),
        ("bad credential", "POST", "/v1/protect", protect, [js, ("authorization", "Bearer nope")]),
        ("bad api key", "POST", "/v1/protect", protect, [js, ("x-api-key", "veil_nope")]),
        ("broken JSON", "POST", "/v1/protect", b'{"scheme": ', [js, bearer("app")]),
        ("not an object", "POST", "/v1/protect", b"[1]", [js, bearer("app")]),
        ("wrong shape", "POST", "/v1/protect", b'{"scheme": 1}', [js, bearer("app")]),
        ("forbidden", "POST", "/v1/protect", protect, [js, bearer("analyst")]),
        ("unknown scheme", "POST", "/v1/protect",
         json.dumps({"scheme": "nope", "values": ["x"]}).encode(), [js, bearer("app")]),
        ("batch too large", "POST", "/v1/protect",
         json.dumps({"scheme": scheme, "values": ["x"] * 1001}).encode(), [js, bearer("app")]),
        ("protect", "POST", "/v1/protect", protect, [js, bearer("app")]),
        ("protect, no content type", "POST", "/v1/protect", protect, [bearer("app")]),
        ("protect, json with charset and a non-UTF-8 header", "POST", "/v1/protect", protect,
         [("content-type", "application/json; charset=utf-8"), bearer("app"), ("x-other", b"\xff\xfe")]),
        ("unprotect", "POST", "/v1/unprotect", json.dumps({"values": tokens + ["veil.1.x.1.AAAA"]}).encode(),
         [js, bearer("support")]),
        ("mask", "POST", "/v1/mask", json.dumps({"scheme": scheme, "values": ["4111111111111111"]}).encode(),
         [js, bearer("analyst")]),
        ("scheme", "GET", f"/v1/schemes/{scheme}", None, [bearer("admin")]),
        ("schemes", "GET", "/v1/schemes", None, [bearer("admin")]),
        ("scheme exists", "POST", "/v1/schemes",
         json.dumps({"name": scheme, "kek": {"provider": "local"}, "policy": DEFAULT_POLICY}).encode(),
         [js, bearer("admin")]),
        ("bad query", "GET", "/v1/audit?limit=zero&x=%ff", None, [bearer("admin")]),
        ("snowflake without rows", "POST", f"/v1/snowflake/protect/{scheme}", b"{}", [js, bearer("app")]),
        ("bigquery error", "POST", "/v1/bigquery", b"{}", [js, bearer("app")]),
    ]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A host on each entry over one database (the same state directory or PostgreSQL)."""
    root = tmp_path_factory.mktemp("entries")
    state = root / "state"
    servers = {e: VeilServer(root / e, state_dir=state, name=e, extra_args=["--entry", e]) for e in ENTRIES}
    yield servers
    for s in servers.values():
        s.stop()


def test_both_entries_give_the_same_answers(pair):
    lean, wasi = pair["lean"], pair["wasi-http"]
    for name, s in pair.items():
        assert "veil: HTTP entry: " + name in s.stderr(), s.stderr()
    tenant = new_tenant()
    scheme = new_name()
    t = lean.tenant(tenant)
    ok(t.admin.post("/v1/schemes", t.scheme_body(scheme, mask={"rule": "keep_last", "n": 4, "char": "*"})), 201)
    tokens = t.protect(scheme, ["one", "two"])
    compared = 0
    for label, method, path, body, headers in script(tenant, scheme, tokens):
        a = normal(send(lean.url, method, path, body, headers))
        b = normal(send(wasi.url, method, path, body, headers))
        assert a == b, f"{label}: lean {a!r}\nwasi-http {b!r}"
        assert a[0] < 500, f"{label}: {a!r}"
        compared += 1
    assert compared >= 24
    # The script does reach the component through each door: its own headers are there.
    status, headers, _ = send(lean.url, "GET", "/healthz")
    assert status == 200 and ("cache-control", "no-store") in headers and ("veil-dev-mode", "true") in headers


def test_tokens_cross_the_entries(pair):
    lean, wasi = pair["lean"], pair["wasi-http"]
    tenant = new_tenant()
    scheme = new_name()
    a, b = lean.tenant(tenant), wasi.tenant(tenant)
    ok(a.admin.post("/v1/schemes", a.scheme_body(scheme)), 201)
    values = ["4111111111111111", "jane@example.com", "ünïcødé ✓"]
    assert b.unprotect(a.protect(scheme, values)) == values
    assert a.unprotect(b.protect(scheme, values)) == values


@pytest.mark.parametrize("entry", ENTRIES)
def test_variables_are_read_once_per_instance(tmp_path, entry):
    """A fresh instance reads each variable its request needs once; a reused one reads none again."""
    env = {"VEIL_ENTRY": entry, "VEIL_DEBUG_HOST_CALLS": "1"}
    fresh = VeilServer(tmp_path / "fresh", name=f"fresh-{entry}", raw_env=env, extra_args=["--fresh-instances"])
    reused = VeilServer(tmp_path / "reused", state_dir=fresh.state_dir, name=f"reused-{entry}", raw_env=env,
                        extra_args=["--reuse-instances", "10"])
    try:
        t = fresh.tenant()
        scheme = new_name()
        ok(t.admin.post("/v1/schemes", t.scheme_body(scheme)), 201)
        reads = []
        for _ in range(3):
            r = t.app.post("/v1/protect", {"scheme": scheme, "values": ["x"]})
            ok(r)
            reads.append(int(r.headers["veil-debug-variable-reads"]))
        # the configuration, the JWT settings and the limits: some, and the same every time
        assert reads[0] > 1 and reads == [reads[0]] * 3, reads
        r = fresh.api().get("/healthz")
        assert 0 < int(r.headers["veil-debug-variable-reads"]) <= reads[0], r.headers

        t = reused.tenant(t.id)
        app = t.app  # one credential: instances are kept per credential
        again = []
        for _ in range(4):
            r = app.post("/v1/protect", {"scheme": scheme, "values": ["x"]})
            ok(r)
            again.append(int(r.headers["veil-debug-variable-reads"]))
        # One client, one request at a time: the first request's instance serves the next ones,
        # which find every variable they need already read.
        assert again == [reads[0], 0, 0, 0], again
    finally:
        fresh.stop()
        reused.stop()


def test_requests_fit_in_the_initial_memory(tmp_path):
    """Lever 2 (c): a request's allocations stay within the instance's initial linear memory (4 MiB,
    build.rs), so that no request grows it (a growth costs an mprotect in the pool slot, and another
    when the slot is reset): a single value, a batch of 100 and one of `max_batch` (1000) card
    numbers, on fresh instances and, one after another, on a reused one."""
    env = {"VEIL_DEBUG_HOST_CALLS": "1"}
    fresh = VeilServer(tmp_path / "fresh", name="fresh", raw_env=env, extra_args=["--fresh-instances"])
    reused = VeilServer(tmp_path / "reused", state_dir=fresh.state_dir, name="reused", raw_env=env,
                        extra_args=["--reuse-instances", "50"])
    try:
        t = fresh.tenant()
        scheme = new_name()
        ok(t.admin.post("/v1/schemes", t.scheme_body(scheme)), 201)
        for server in (fresh, reused):
            t = server.tenant(t.id)
            for n in (1, 100, 1000, 1000, 100, 1):
                values = [f"4111-1111-1111-{i:04d}" for i in range(n)]
                r = t.app.post("/v1/protect", {"scheme": scheme, "values": values})
                tokens = [x["value"] for x in ok(r)["results"]]
                assert r.headers["veil-debug-memory-grows"] == "0", (server.name, n, r.headers)
                r = t.support.post("/v1/unprotect", {"values": tokens})
                assert [x["value"] for x in ok(r)["results"]] == values
                assert r.headers["veil-debug-memory-grows"] == "0", (server.name, n, r.headers)
    finally:
        fresh.stop()
        reused.stop()


def test_without_the_debug_flag_no_count_is_shown(server):
    r = server.api().get("/healthz")
    assert "veil-debug-variable-reads" not in r.headers
