"""Tokens verified against a JWKS fetched over outbound HTTP (`jwt_jwks_url`), through the host's
allowed_outbound_hosts; an unreachable JWKS is a 503, a host not allowed likewise."""
import http.server
import threading

from veilkit import JWKS, err, ok, rs256


def jwks_server():
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = JWKS.encode()
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
