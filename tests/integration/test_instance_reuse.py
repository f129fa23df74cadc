"""Opt-in instance reuse (`veil serve --reuse-instances N`, docs/architecture.md "Instance reuse"):
one instance serves up to N requests one after another, and nothing of one request reaches the
next — the same script of requests gets the same answers as on a fresh instance per request."""
import concurrent.futures
import re
import secrets

import requests

from veilkit import VeilServer, err, item_errors, new_tenant, ok

REUSE = 4
# `-v` lines: one per request an instance completed, and one per instance put aside because it
# left host resources open (docs/architecture.md "Instance reuse")
INSTANCE_LINE = re.compile(r"(?m)^veil: \S+ \S+: instance request (\d+) of at most (\d+)$"
                           r"|^veil: an instance left host resources open; discarding it$")


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


def instance_requests(server: VeilServer) -> list[int | None]:
    """Each completed request's count on its instance, in order; None where an instance was
    discarded."""
    out = []
    for m in INSTANCE_LINE.finditer(server.stderr(tail=10**7)):
        if m.group(1) is None:
            out.append(None)
        else:
            assert int(m.group(2)) == REUSE, m.group(0)
            out.append(int(m.group(1)))
    return out


def reuse_rule(events: list[int | None]) -> list[int]:
    """What the counts must be, one request after another on one client: the idle instance serves
    the next request, until it has served REUSE or was discarded; then a fresh one starts at 1."""
    expected, n = [], 0
    for e in events:
        if e is None:
            n = 0
        else:
            n = n + 1 if n < REUSE else 1
            expected.append(n)
    return expected


def test_reuse_answers_exactly_like_fresh_instances(tmp_path):
    fresh = VeilServer(tmp_path / "fresh", name="fresh", extra_args=["-v"])
    reused = VeilServer(tmp_path / "reused", name="reused", extra_args=["--reuse-instances", REUSE, "-v"])
    try:
        expected = script(fresh)
        assert instance_requests(fresh) == [], "a fresh instance per request logs no instance counts"
        for _ in range(3):  # 30 requests: instances get reused and retired along the way
            assert script(reused) == expected
        events = instance_requests(reused)
        counts = [n for n in events if n is not None]
        assert len(counts) == 30, reused.stderr()
        assert counts == reuse_rule(events), events
        assert max(counts) == REUSE, f"instances were not reused up to the limit: {events}"
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
                assert item_errors(others[i % len(others)].unprotect_results(tokens)) == ["decryption_failed"] * 3
            return True

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(round_trips, tenants))
    finally:
        server.stop()
