"""Tokens verified against a JWKS fetched over outbound HTTP (`jwt_jwks_url`), through the host's
allowed_outbound_hosts; an unreachable JWKS is a 503, a host not allowed likewise. The document is
cached in the host key-value store: one fetch serves many requests, and at most one fetch happens
per `jwt_jwks_refetch_secs` however many unknown `kid`s arrive (docs/auth.md § The JWKS URL cache)."""
import base64
import http.server
import json
import secrets
import threading
import time

from veilkit import JWKS, OTHER_RSA_KEY, err, new_tenant, ok, rs256


def jwks_server(doc=None):
    """A JWKS server counting its fetches; `doc[0]` is the document it serves (tests rotate it)."""
    hits = []
    doc = doc if doc is not None else [JWKS]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if doc[0] is None:
                self.send_response(500)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            body = doc[0].encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, hits


def test_rs256_via_a_jwks_url(start_server):
    srv, hits = jwks_server()
    try:
        origin = f"http://127.0.0.1:{srv.server_address[1]}"
        s = start_server("jwks-url", allowed_hosts=[origin], jwt_jwks="", jwt_jwks_url=f"{origin}/keys.json")
        t = s.tenant()
        admin = s.api(rs256(t.id, ["admin"]))
        ok(admin.get("/v1/schemes"))
        assert hits == ["/keys.json"]
        err(s.api(rs256(t.id, ["admin"], kid="nope")).get("/v1/schemes"), 401, "invalid_credentials")
    finally:
        srv.shutdown()
        srv.server_close()


def test_unreachable_or_forbidden_jwks_is_503(start_server):
    srv, hits = jwks_server()
    origin = f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    down = start_server("jwks-down", allowed_hosts=[origin], jwt_jwks="", jwt_jwks_url=f"{origin}/keys.json")
    err(down.api(rs256("t1", ["admin"])).get("/v1/schemes"), 503, "auth_unavailable")
    denied = start_server("jwks-denied", jwt_jwks="", jwt_jwks_url="http://127.0.0.1:9/keys.json")
    err(denied.api(rs256("t1", ["admin"])).get("/v1/schemes"), 503, "auth_unavailable")


def _with_other_rsa_key(kid: str) -> str:
    """The harness JWKS plus OTHER_RSA_KEY's public half under `kid`: the IdP's key rotation."""
    n = OTHER_RSA_KEY.public_key().public_numbers()
    b64 = lambda i: base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
    doc = json.loads(JWKS)
    doc["keys"].append({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(n.n), "e": b64(n.e)})
    return json.dumps(doc)


def _serve(start_server, name, doc=None, **env):
    srv, hits = jwks_server(doc)
    origin = f"http://127.0.0.1:{srv.server_address[1]}"
    s = start_server(name, allowed_hosts=[origin], jwt_jwks="", jwt_jwks_url=f"{origin}/keys.json", **env)
    return srv, hits, s


def test_the_cached_document_serves_many_requests_with_one_fetch(start_server):
    srv, hits, s = _serve(start_server, "jwks-cached")
    try:
        t = new_tenant()
        # Distinct tokens (each its own `sub`), so the verified-token cache never answers.
        codes = [s.api(rs256(t, ["admin"])).get("/v1/schemes").status_code for _ in range(30)]
        assert codes == [200] * 30
        assert hits == ["/keys.json"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_flood_of_random_kids_makes_at_most_one_fetch_per_refetch_interval(start_server):
    srv, hits, s = _serve(start_server, "jwks-flood")
    try:
        t = new_tenant()
        ok(s.api(rs256(t, ["admin"])).get("/v1/schemes"))
        assert hits == ["/keys.json"]
        # Within the default 60 s interval, no kid makes another fetch (documented bound: one per
        # jwt_jwks_refetch_secs; this whole loop takes a few seconds).
        started = time.monotonic()
        answers = [s.api(rs256(t, ["admin"], kid=f"random-{secrets.token_hex(8)}")).get("/v1/schemes")
                   for _ in range(100)]
        assert time.monotonic() - started < 60
        for r in answers:
            err(r, 401, "invalid_credentials")
        assert hits == ["/keys.json"]
        ok(s.api(rs256(t, ["admin"])).get("/v1/schemes"))
        assert hits == ["/keys.json"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_rotated_key_is_accepted_after_at_most_the_refetch_interval(start_server):
    doc = [JWKS]
    srv, hits, s = _serve(start_server, "jwks-rotation", doc, jwt_jwks_refetch_secs="5")
    try:
        t = new_tenant()
        ok(s.api(rs256(t, ["admin"])).get("/v1/schemes"))
        fetched_at = time.monotonic()
        assert hits == ["/keys.json"]
        doc[0] = _with_other_rsa_key("rsa2")
        rotated = lambda: s.api(rs256(t, ["admin"], key=OTHER_RSA_KEY, kid="rsa2")).get("/v1/schemes")
        # Within the interval the new kid is unknown and not refetched...
        err(rotated(), 401, "invalid_credentials")
        assert time.monotonic() - fetched_at < 5, "the interval passed before the check"
        assert hits == ["/keys.json"]
        # ... and once it has passed, one fetch picks the new key up.
        time.sleep(max(0.0, fetched_at + 5.5 - time.monotonic()))
        ok(rotated())
        ok(rotated())
        ok(s.api(rs256(t, ["admin"])).get("/v1/schemes"))
        assert hits == ["/keys.json", "/keys.json"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_failed_fetch_is_not_retried_within_the_interval(start_server):
    doc = [None]
    srv, hits, s = _serve(start_server, "jwks-failing", doc)
    try:
        for _ in range(10):
            err(s.api(rs256(new_tenant(), ["admin"])).get("/v1/schemes"), 503, "auth_unavailable")
        assert hits == ["/keys.json"]
    finally:
        srv.shutdown()
        srv.server_close()
