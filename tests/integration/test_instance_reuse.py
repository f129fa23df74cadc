"""Instance reuse scoped to one credential (`veil serve --reuse-instances N`, the default;
docs/architecture.md "Instance reuse"): an instance serves up to N requests one after another,
only ever of one credential, and nothing of one request reaches the next — the same script of
requests gets the same answers as on a fresh instance per request (`--fresh-instances`), and the
component wipes what a request leaves in its memory (the host's hidden `--debug-scan-memory`
counts a marker's bytes in the instance's linear memory after each request)."""
import concurrent.futures
import secrets
from collections import defaultdict

import requests

from faults import lock_flags, write_lock
from veilkit import VeilServer, err, hs256, item_errors, new_tenant, ok

REUSE = 2


def script(server: VeilServer) -> tuple[list[tuple], list[tuple]]:
    """Requests by two tenants (and several credentials of each), good and bad, in one order;
    returns what each answered, minus what is random (tokens, timestamps), and which instance
    served each credential (`veil-debug-instance`). Every answer is also checked for leaks of
    A's secret."""
    a, b = server.tenant(new_tenant()), server.tenant(new_tenant())
    # One client per credential, each keeping its token for the whole script.
    a_admin, a_app, a_support, b_support, b_app, anon = a.admin, a.app, a.support, b.support, b.app, server.api()
    secret = f"secret-{secrets.token_hex(8)}"
    seen, served = [], []

    def note(step: str, who: str, r: requests.Response, shape):
        leak = secret in r.text and step != "A unprotects"
        assert not leak, f"{step}: the response carries A's secret: {r.text[:300]}"
        seen.append((step, r.status_code, r.headers.get("veil-kms-calls"), r.headers.get("veil-dev-mode"),
                     shape))
        served.append((who, r.headers.get("veil-debug-instance")))

    r = a_admin.post("/v1/schemes", a.scheme_body("pii"))
    note("A creates a scheme", "a_admin", r, sorted(ok(r, 201)))
    r = a_app.post("/v1/protect", {"scheme": "pii", "values": [secret, "other"]})
    tokens = [x["value"] for x in ok(r)["results"]]
    note("A protects", "a_app", r, [t.split(".")[:4] for t in tokens])
    r = b_support.post("/v1/unprotect", {"values": tokens})
    note("B unprotects A's tokens", "b_support", r, item_errors(ok(r)["results"]))
    r = anon.post("/v1/unprotect", {"values": tokens})
    note("no credential", "anon", r, err(r, 401, "unauthenticated")["code"])
    r = a_app.post("/v1/unprotect", {"values": tokens})
    note("A's app role unprotects", "a_app", r, err(r, 403, "forbidden")["code"])
    r = a_support.post("/v1/unprotect", {"values": tokens})
    note("A unprotects", "a_support", r, [x["value"] for x in ok(r)["results"]] == [secret, "other"])
    r = b_app.post("/v1/protect", data=b'{"scheme": "pii", "values": [', headers={"content-type": "application/json"})
    note("B sends broken JSON", "b_app", r, err(r, 400, "invalid_json")["code"])
    r = b_app.post("/v1/protect", {"scheme": "pii", "values": ["x"]})
    note("B protects with A's scheme name", "b_app", r, err(r, 404, "scheme_not_found")["code"])
    r = a_app.post("/v1/protect", {"scheme": "pii", "values": ["x"] * 2000})
    note("A sends too many values", "a_app", r, err(r, 413, "batch_too_large")["code"])
    r = anon.get("/healthz")
    note("health", "anon", r, ok(r))
    return seen, served


def check_scoping(served: list[tuple], limit: int) -> int:
    """No instance served two credentials, nor more than `limit` requests; returns the most
    requests one instance served in a row."""
    owner, count = {}, defaultdict(int)
    for who, instance in served:
        assert instance is not None, served
        assert owner.setdefault(instance, who) == who, f"instance {instance} served {owner[instance]} and {who}"
        count[instance] += 1
        assert count[instance] <= limit, (instance, served)
    return max(count.values())


def test_reuse_answers_exactly_like_fresh_instances_and_never_crosses_credentials(tmp_path):
    env = {"VEIL_DEBUG_HOST_CALLS": "1"}
    fresh = VeilServer(tmp_path / "fresh", name="fresh", raw_env=env, extra_args=["--fresh-instances"])
    reused = VeilServer(tmp_path / "reused", name="reused", raw_env=env, extra_args=["--reuse-instances", REUSE])
    try:
        expected, served = script(fresh)
        assert len({i for _, i in served}) == len(served), f"a fresh instance per request: {served}"
        longest = 0
        for _ in range(3):  # 30 requests: instances get reused and retired along the way
            seen, served = script(reused)
            assert seen == expected
            longest = max(longest, check_scoping(served, REUSE))
        assert longest == REUSE, "instances were not reused up to the limit"
    finally:
        fresh.stop()
        reused.stop()


def test_two_tenants_and_two_credentials_of_one_tenant_interleaved(tmp_path):
    server = VeilServer(tmp_path, raw_env={"VEIL_DEBUG_HOST_CALLS": "1"}, extra_args=["--reuse-instances", 100])
    try:
        a, b = server.tenant(new_tenant()), server.tenant(new_tenant())
        a.create_scheme("pii")
        b.create_scheme("pii")
        callers = {"a1": a.as_("app", "support"), "a2": a.as_("app", "support", sub="other"),
                   "b": b.as_("app", "support")}
        assert callers["a1"].token != callers["a2"].token
        served = []
        for i in range(4):
            for who, api in callers.items():
                r = api.post("/v1/protect", {"scheme": "pii", "values": [f"{who}-{i}"]})
                tokens = [x["value"] for x in ok(r)["results"]]
                served.append((who, r.headers["veil-debug-instance"]))
                r = api.post("/v1/unprotect", {"values": tokens})
                assert [x["value"] for x in ok(r)["results"]] == [f"{who}-{i}"]
                served.append((who, r.headers["veil-debug-instance"]))
        check_scoping(served, 100)
        # One instance per credential, kept for all its requests.
        assert len({i for _, i in served}) == 3, served
    finally:
        server.stop()


def test_the_heap_and_stack_are_wiped_between_requests(tmp_path):
    """A marker plaintext goes through protect and unprotect on a reused instance; after each
    request, and on the next request on that instance, the marker's bytes are in the instance's
    linear memory only where the instance keeps them on purpose. The marker is also the name of
    the tenant claim (`jwt_tenant_claim`, a variable every authenticated request reads), which the
    instance keeps for its life once read (the one static, docs/architecture.md "Instance reuse"):
    so the scan is seen to find what is there."""
    marker = f"veil-marker-{secrets.token_hex(12)}"
    server = VeilServer(tmp_path, raw_env={"VEIL_DEBUG_HOST_CALLS": "1"}, jwt_tenant_claim=marker,
                        extra_args=["--reuse-instances", 100, "--debug-scan-memory", marker.encode().hex()])
    try:
        t = server.tenant(new_tenant())
        api = server.api(hs256(t.id, ("admin", "app", "support"), **{marker: t.id}))
        r = api.post("/v1/schemes", t.scheme_body("pii"))
        ok(r, 201)
        instance = r.headers["veil-debug-instance"]
        baseline = int(r.headers["veil-debug-memory-matches"])
        assert baseline >= 1, "the scan does not see the variables the instance keeps"
        r = api.post("/v1/protect", {"scheme": "pii", "values": [marker, marker + "-2"]})
        tokens = [x["value"] for x in ok(r)["results"]]
        assert r.headers["veil-debug-instance"] == instance
        assert int(r.headers["veil-debug-memory-matches"]) == baseline, "protect left the marker in memory"
        r = api.post("/v1/unprotect", {"values": tokens})
        assert [x["value"] for x in ok(r)["results"]] == [marker, marker + "-2"]
        assert r.headers["veil-debug-instance"] == instance
        assert int(r.headers["veil-debug-memory-matches"]) == baseline, "unprotect left the marker in memory"
        r = api.get("/v1/schemes/pii")
        ok(r)
        assert r.headers["veil-debug-instance"] == instance
        assert int(r.headers["veil-debug-memory-matches"]) == baseline
    finally:
        server.stop()


def test_instances_are_retired_after_n_requests_a_trap_and_a_deadline(tmp_path):
    server = VeilServer(tmp_path, raw_env={"VEIL_DEBUG_HOST_CALLS": "1"}, max_body_bytes="60000000",
                        extra_args=["--reuse-instances", 3, "--max-memory-mib", "24", "--request-timeout-secs", 1,
                                    *lock_flags(3000)])
    try:
        t = server.tenant(new_tenant())
        api = t.as_("admin", "app")
        serials = [api.get("/healthz").headers["veil-debug-instance"] for _ in range(7)]
        assert serials[0] == serials[1] == serials[2] != serials[3] == serials[4] == serials[5] != serials[6], serials
        # A trap (out of memory reading a 40 MB body) drops the instance.
        r = api.post("/v1/protect", data=b"x" * 40_000_000, headers={"content-type": "application/json"})
        err(r, 500, "internal")
        after_trap = api.get("/healthz").headers["veil-debug-instance"]
        assert after_trap != serials[6]
        # A deadline: a write waits for a lock longer than the request may run.
        with write_lock(server):
            err(api.post("/v1/schemes", t.scheme_body()), 500, "timeout")
        after_deadline = api.get("/healthz").headers["veil-debug-instance"]
        assert after_deadline not in (after_trap, *serials)
    finally:
        server.stop()


def test_the_idle_bound_retires_the_least_recently_used(tmp_path):
    server = VeilServer(tmp_path, raw_env={"VEIL_DEBUG_HOST_CALLS": "1"},
                        extra_args=["--reuse-instances", 100, "--reuse-max-idle", 2])
    try:
        t = server.tenant(new_tenant())
        callers = [t.as_("app", sub=f"caller-{i}") for i in range(3)]
        first = [c.get("/healthz").headers["veil-debug-instance"] for c in callers]
        assert len(set(first)) == 3
        # Two kept (callers 1 and 2); caller 0's, the least recently used, was retired.
        again = [c.get("/healthz").headers["veil-debug-instance"] for c in callers[::-1]]
        assert again[0] == first[2] and again[1] == first[1], (first, again)
        assert again[2] not in first, (first, again)
    finally:
        server.stop()


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
