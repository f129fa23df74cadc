"""State survives a restart; two hosts share one state dir safely."""
from concurrent.futures import ThreadPoolExecutor

from veilkit import Tenant, err, item_errors, new_name, ok

VALUES = ["", "durable ✓", "4111111111111111", "x" * 1000]


def test_restart_keeps_schemes_and_tokens(start_server):
    s = start_server("restart")
    t = s.tenant()
    aes = t.create_scheme()
    chacha = t.create_scheme(algorithm="xchacha20-poly1305", mask={"rule": "hmac"})
    v1 = t.protect(aes["name"], VALUES, subject="customer-1", context="ctx")
    ok(t.admin.post(f"/v1/schemes/{aes['name']}/rotate"))
    v2 = t.protect(aes["name"], VALUES)
    c = t.protect(chacha["name"], VALUES)
    hashed = t.mask(chacha["name"], ["4111111111111111"])

    s.restart()

    assert t.unprotect(v1, subject="customer-1", context="ctx") == VALUES
    assert t.unprotect(v2 + c) == VALUES * 2
    assert t.mask(chacha["name"], ["4111111111111111"]) == hashed
    got = ok(t.admin.get("/v1/schemes"))["schemes"]
    assert [x["name"] for x in got] == sorted([aes["name"], chacha["name"]])
    assert {x["name"]: x["current_version"] for x in got} == {aes["name"]: 2, chacha["name"]: 1}
    assert ok(t.admin.get(f"/v1/schemes/{chacha['name']}")) == chacha
    err(t.admin.post("/v1/schemes", t.scheme_body(aes["name"])), 409, "scheme_exists")


def test_two_hosts_on_one_state_dir(start_server, tmp_path):
    state = tmp_path / "shared-state"
    a = start_server("host-a", state_dir=state)
    b = start_server("host-b", state_dir=state)
    ta = a.tenant()
    tb = Tenant(b, ta.id)  # the same tenant, seen through the other host
    shared = ta.create_scheme()["name"]
    assert ok(tb.admin.get(f"/v1/schemes/{shared}"))["name"] == shared

    def job(i):
        t = ta if i % 2 == 0 else tb
        if i % 5 == 0:
            name = f"c-{i}"
            return ("create", t, name, t.admin.post("/v1/schemes", t.scheme_body(name)))
        value = f"value-{i}-✓"
        return ("protect", t, value, t.app.post("/v1/protect", {"scheme": shared, "values": [value]}))

    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(pool.map(job, range(100)))

    created = sorted(name for kind, _, name, r in done if kind == "create" and ok(r, 201))
    assert len(created) == 20
    protected = {ta: [], tb: []}
    for kind, t, value, r in done:
        if kind == "protect":
            body = ok(r)
            assert item_errors(body["results"]) == [None]
            protected[t].append((value, body["results"][0]["value"]))
    assert len(protected[ta]) == len(protected[tb]) == 40
    # each host opens the other's tokens
    for mine, other in [(ta, tb), (tb, ta)]:
        values, tokens = zip(*protected[mine])
        assert other.unprotect(list(tokens)) == list(values)
    for t in (ta, tb):
        assert [x["name"] for x in ok(t.admin.get("/v1/schemes"))["schemes"]] == sorted(created + [shared])


def test_concurrent_creation_of_one_name_on_two_hosts(start_server, tmp_path):
    state = tmp_path / "shared-state"
    a = start_server("host-a", state_dir=state)
    b = start_server("host-b", state_dir=state)
    ta = a.tenant()
    tb = Tenant(b, ta.id)
    name = new_name("race")
    body = ta.scheme_body(name)

    def create(i):
        t = ta if i % 2 == 0 else tb
        return t.admin.post("/v1/schemes", body)

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(create, range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9, [(r.status_code, r.text[:200]) for r in responses]
    for r in responses:
        if r.status_code == 409:
            err(r, 409, "scheme_exists")
    winner = next(r.json() for r in responses if r.status_code == 201)
    assert ok(ta.admin.get(f"/v1/schemes/{name}")) == winner == ok(tb.admin.get(f"/v1/schemes/{name}"))
    assert tb.unprotect(ta.protect(name, ["raced"])) == ["raced"]
