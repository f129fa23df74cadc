"""Opt-in instance reuse (`veil serve --reuse-instances N`, docs/architecture.md "Instance reuse"):
one instance serves up to N requests one after another, and nothing of one request reaches the
next — the same script of requests gets the same answers as on a fresh instance per request."""
import concurrent.futures
import re
import secrets

import requests

from veilkit import VeilServer, err, item_errors, new_tenant, ok

REUSE = 4
INSTANCE_LINE = re.compile(r"instance request (\d+) of at most (\d+)")


def script(server: VeilServer) -> list[tuple]:
    """Requests by two tenants, good and bad, in one order; returns what each answered, minus
    what is random (tokens, timestamps). Every answer is also checked for leaks of A's secret."""
    a, b = server.tenant(new_tenant()), server.tenant(new_tenant())
    secret = f"secret-{secrets.token_hex(8)}"
    seen = []

    def note(step: str, r: requests.Response, shape):
        leak = secret in r.text and step != "A unprotects"
        assert not leak, f"{step}: the response carries A's secret: {r.text[:300]}"
        seen.append((step, r.status_code, r.headers.get("veil-kms-calls"), r.headers.get("veil-dev-mode"),
                     shape))

    r = a.admin.post("/v1/schemes", a.scheme_body("pii"))
    note("A creates a scheme", r, sorted(ok(r, 201)))
    r = a.app.post("/v1/protect", {"scheme": "pii", "values": [secret, "other"]})
    tokens = [x["value"] for x in ok(r)["results"]]
    note("A protects", r, [t.split(".")[:4] for t in tokens])
    r = b.support.post("/v1/unprotect", {"values": tokens})
    note("B unprotects A's tokens", r, item_errors(ok(r)["results"]))
    r = server.api().post("/v1/unprotect", {"values": tokens})
    note("no credential", r, err(r, 401, "unauthenticated")["code"])
    r = a.app.post("/v1/unprotect", {"values": tokens})
    note("A's app role unprotects", r, err(r, 403, "forbidden")["code"])
    r = a.support.post("/v1/unprotect", {"values": tokens})
    note("A unprotects", r, [x["value"] for x in ok(r)["results"]] == [secret, "other"])
    r = b.app.post("/v1/protect", data=b'{"scheme": "pii", "values": [', headers={"content-type": "application/json"})
    note("B sends broken JSON", r, err(r, 400, "invalid_json")["code"])
    r = b.app.post("/v1/protect", {"scheme": "pii", "values": ["x"]})
    note("B protects with A's scheme name", r, err(r, 404, "scheme_not_found")["code"])
    r = a.app.post("/v1/protect", {"scheme": "pii", "values": ["x"] * 2000})
    note("A sends too many values", r, err(r, 413, "batch_too_large")["code"])
    r = server.api().get("/healthz")
    note("health", r, ok(r))
    return seen


def instance_requests(server: VeilServer) -> list[int]:
    return [int(m.group(1)) for m in INSTANCE_LINE.finditer(server.stderr(tail=10**7))]


def test_reuse_answers_exactly_like_fresh_instances(tmp_path):
    fresh = VeilServer(tmp_path / "fresh", name="fresh", extra_args=["-v"])
    reused = VeilServer(tmp_path / "reused", name="reused", extra_args=["--reuse-instances", REUSE, "-v"])
    try:
        expected = script(fresh)
        assert instance_requests(fresh) == [], "a fresh instance per request logs no instance counts"
        for _ in range(3):  # 30 requests: instances get reused and retired along the way
            assert script(reused) == expected
        counts = instance_requests(reused)
        assert len(counts) == 30, reused.stderr()
        assert max(counts) == REUSE, f"instances were not reused up to the limit: {counts}"
        assert all(1 <= n <= REUSE for n in counts), counts
        assert counts.count(1) >= 30 // REUSE, f"instances were not retired at the limit: {counts}"
    finally:
        fresh.stop()
        reused.stop()


def test_reuse_under_concurrency_keeps_tenants_apart(tmp_path):
    server = VeilServer(tmp_path, extra_args=["--reuse-instances", 50, "--max-instances", 8])
    try:
        tenants = [server.tenant(new_tenant()) for _ in range(8)]
        for t in tenants:
            t.create_scheme("pii")

        def round_trips(t):
            for i in range(15):
                values = [f"{t.id}-{i}-{secrets.token_hex(4)}" for _ in range(3)]
                tokens = t.protect("pii", values)
                assert t.unprotect(tokens) == values
                others = [o for o in tenants if o is not t]
                assert set(item_errors(others[i % len(others)].unprotect_results(tokens))) == {"decryption_failed"}
            return True

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(round_trips, tenants))
    finally:
        server.stop()
