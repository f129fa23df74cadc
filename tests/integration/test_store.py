"""The metadata store under pressure: only wrapped keys at rest, races, and database faults.

Runs against whichever store VEIL_STORE selects; the fault tests are PostgreSQL's (deselected in
the SQLite run).
"""
import base64
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import store
from veilkit import LOCAL_KEK, TOKEN_RE, Tenant, err, ok


def unwrap_local(blob: bytes, tenant: str, scheme: str, version: int) -> bytes:
    """The dev local KEK's wrapping (src/kms/local.rs), done independently: AES-256-GCM, AAD binds
    the label, tenant, scheme (each u32be-length-prefixed) and the u32be version."""
    aad = b""
    for field in (b"veil/v1/local-kek-wrap", tenant.encode(), scheme.encode()):
        aad += struct.pack(">I", len(field)) + field
    aad += struct.pack(">I", version)
    return AESGCM(base64.b64decode(LOCAL_KEK)).decrypt(blob[:12], blob[12:], aad)


def spellings(key: bytes) -> list[bytes]:
    b64 = base64.b64encode(key)
    url = base64.urlsafe_b64encode(key)
    return [key, key.hex().encode(), key.hex().upper().encode(), b64, b64.rstrip(b"="), url, url.rstrip(b"=")]


def as_bytes(cell) -> bytes:
    if cell is None:
        return b""
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell)
    return str(cell).encode()


def test_no_unwrapped_data_key_anywhere(start_server):
    s = start_server("scan")
    t = s.tenant()
    names = [t.create_scheme(algorithm=a)["name"] for a in ("aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305")]
    ok(t.admin.post(f"/v1/schemes/{names[0]}/rotate"))
    for n in names:
        t.protect(n, ["some value"])
    rows = store.tables(s.state_dir)
    assert "data_keys" in rows and rows["data_keys"], rows.keys()
    cols = ["tenant", "scheme", "version", "wrapped_dek"]
    deks = []
    for row in rows["data_keys"]:
        r = dict(zip(cols, row[:4]))
        if r["tenant"] != t.id:
            continue
        deks.append(unwrap_local(as_bytes(r["wrapped_dek"]), r["tenant"], r["scheme"], int(r["version"])))
    assert len(deks) == 4 and all(len(k) == 32 for k in deks) and len(set(deks)) == 4
    for table, table_rows in rows.items():
        for row in table_rows:
            for cell in row:
                data = as_bytes(cell)
                for k in deks:
                    assert not any(sp in data for sp in spellings(k)), f"an unwrapped data key is in table {table}"


def test_concurrent_rotations_each_add_one_version(start_server, tmp_path):
    state = tmp_path / "rot-state"
    hosts = [start_server("rot-a", state_dir=state), start_server("rot-b", state_dir=state)]
    t = hosts[0].tenant()
    name = t.create_scheme()["name"]
    n = 12
    with ThreadPoolExecutor(n) as pool:
        resps = list(pool.map(lambda i: Tenant(hosts[i % 2], t.id).admin.post(f"/v1/schemes/{name}/rotate"), range(n)))
    versions = sorted(ok(r)["current_version"] for r in resps)
    assert versions == list(range(2, n + 2))
    assert ok(t.admin.get(f"/v1/schemes/{name}"))["current_version"] == n + 1
    keys = [row for row in store.tables(hosts[0].state_dir)["data_keys"] if row[0] == t.id and row[1] == name]
    assert sorted(int(r[2]) for r in keys) == list(range(1, n + 2))
    [token] = Tenant(hosts[1], t.id).protect(name, ["after"])
    assert re.fullmatch(TOKEN_RE.format(scheme=name, version=n + 1), token), token


def test_concurrent_creations_across_hosts(start_server, tmp_path):
    state = tmp_path / "create-state"
    hosts = [start_server("cr-a", state_dir=state), start_server("cr-b", state_dir=state)]
    t = hosts[0].tenant()
    names = [f"c{i}" for i in range(6)]
    jobs = [(h, n) for n in names for h in range(2) for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:
        resps = list(pool.map(lambda j: Tenant(hosts[j[0]], t.id).admin.post("/v1/schemes", t.scheme_body(j[1])), jobs))
    by_name = {}
    for (h, n), r in zip(jobs, resps):
        if r.status_code == 201:
            assert ok(r, 201)["name"] == n
        else:
            err(r, 409, "scheme_exists")
        by_name.setdefault(n, []).append(r.status_code)
    assert {n: sorted(c) for n, c in by_name.items()} == {n: [201, 409, 409, 409] for n in names}, by_name
    listed = [s["name"] for s in ok(t.admin.get("/v1/schemes"))["schemes"]]
    assert listed == names


@pytest.mark.store("postgres")  # the embedded SQLite database cannot be unreachable
def test_unreachable_database_is_503_and_writes_nothing(start_server):
    s = start_server("down", raw_env={"SPIN_VARIABLE_DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere"})
    t = s.tenant()
    err(t.admin.post("/v1/schemes", t.scheme_body("x")), 503, "store_unavailable")
    err(t.app.post("/v1/protect", {"scheme": "x", "values": ["a"]}), 503, "store_unavailable")


def terminate_backends() -> int:
    with store.pg_connect() as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (store.database_url().rsplit("/", 1)[1],)).fetchall()
    return len(rows)


@pytest.mark.store("postgres")
def test_killed_connections_mid_batch_lose_nothing(start_server):
    """PostgreSQL kills every connection of the database every 50 ms while four clients protect,
    unprotect and create schemes: each request either succeeds whole or answers 503
    `store_unavailable`, and afterwards nothing is half-written. The clients run in threads whose
    exceptions `result()` raises here: a request that fails in any other way fails the test."""
    s = start_server("kill")
    t = s.tenant()
    name = t.create_scheme()["name"]
    values = [f"value-{i}" for i in range(200)]
    stop = threading.Event()

    def killer() -> int:
        kills = 0
        while not stop.is_set():
            kills += terminate_backends()
            time.sleep(0.05)
        return kills

    def worker(i) -> dict:
        seen = {"protected": 0, "unprotected": 0, "503": 0, "created": [], "refused": []}
        while not stop.is_set():
            r = t.app.post("/v1/protect", {"scheme": name, "values": values})
            if r.status_code == 200:
                toks = [x["value"] for x in ok(r)["results"]]
                seen["protected"] += 1
                back = t.support.post("/v1/unprotect", {"values": toks})
                if back.status_code == 200:
                    assert [x["value"] for x in ok(back)["results"]] == values
                    seen["unprotected"] += 1
                else:
                    err(back, 503, "store_unavailable")
                    seen["503"] += 1
            else:
                err(r, 503, "store_unavailable")
                seen["503"] += 1
            scheme = f"k{i}-{len(seen['created']) + len(seen['refused'])}"
            c = t.admin.post("/v1/schemes", t.scheme_body(scheme))
            if c.status_code == 201:
                assert ok(c, 201)["name"] == scheme
                seen["created"].append(scheme)
            else:
                err(c, 503, "store_unavailable")
                seen["refused"].append(scheme)
        return seen

    with ThreadPoolExecutor(5) as pool:
        kills = pool.submit(killer)
        workers = [pool.submit(worker, i) for i in range(4)]
        time.sleep(4)
        stop.set()
        # result() re-raises whatever failed in a thread, here, and waits for it to end
        seen = [w.result(timeout=60) for w in workers]
        assert kills.result(timeout=60) > 0, "the killer never found a backend to terminate"
    assert sum(x["protected"] for x in seen) > 0, f"no protect request got through the kills: {seen}"
    # the database is fine again: the very next requests succeed without restarting the host
    toks = t.protect(name, ["after the storm"])
    assert t.unprotect(toks) == ["after the storm"]
    # no partial writes: every scheme row has exactly its first key, and every key its scheme
    rows = store.tables(s.state_dir)
    schemes = {(r[0], r[1]) for r in rows["schemes"] if r[0] == t.id}
    keys = {(r[0], r[1]) for r in rows["data_keys"] if r[0] == t.id}
    assert schemes == keys
    # every 201 is there; a 503 may have come after its commit, so its scheme may be there too
    created = {n for x in seen for n in x["created"]}
    refused = {n for x in seen for n in x["refused"]}
    stored = {n for _, n in schemes}
    assert created | {name} <= stored <= created | refused | {name}, (stored, created, refused)
