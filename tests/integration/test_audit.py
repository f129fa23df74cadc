"""The audit log (docs/audit.md): what is recorded (never a value, token or subject id), the
per-scheme `audit` setting, tampering found by verify at the right entry, and concurrent appends.
Runs on whichever store VEIL_STORE selects; the tampering is done directly in that database.
"""
import base64
import contextlib
import hashlib
import hmac
import sqlite3
import struct
from concurrent.futures import ThreadPoolExecutor

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import store
from harness.tokens import AUDIT_MASTER_KEY
from veilkit import err, new_name, ok


def lp(b: bytes) -> bytes:
    return struct.pack(">Q", len(b)) + b


def tenant_key(tenant: str) -> bytes:
    """The tenant's audit key, computed independently of Veil (docs/audit.md, "Crypto")."""
    msg = lp(b"veil") + lp(b"audit-key") + struct.pack(">I", 1) + lp(tenant.encode())
    return hmac.new(base64.b64decode(AUDIT_MASTER_KEY), msg, hashlib.sha256).digest()


def sql(server, statement: str, params=()):
    """Runs one statement straight against the server's database (`?` placeholders)."""
    if store.STORE == "postgres":
        with store.pg_connect(store.database_url()) as c:
            cur = c.execute(statement.replace("?", "%s"), params)
            rows = cur.fetchall() if cur.description else []
            c.commit()
            return rows
    db = sqlite3.connect(server.state_dir / "sqlite_default.db", timeout=10)
    try:
        rows = db.execute(statement, params).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def rows_of(server, tenant: str):
    return [(int(s), bytes(p), bytes(x)) for s, p, x in
            sql(server, "SELECT sequence, prev, sealed FROM audit_log WHERE tenant = ? ORDER BY sequence", (tenant,))]


def entries(t, **query) -> list[dict]:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return ok(t.as_("auditor").get(f"/v1/audit?{q}"))["entries"]


def verify(t, query: str = "") -> dict:
    return ok(t.as_("auditor").get(f"/v1/audit/verify{query}"))


def test_entries_record_operations_and_never_values(server):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    secret_values = ["4111111111111111", "alice@example.com"]
    subject, context = f"subject-{new_name()}", f"context-{new_name()}"
    tokens = t.protect(scheme, secret_values, subject=subject, context=context)
    assert t.unprotect(tokens, subject=subject, context=context) == secret_values
    t.mask(scheme, ["5555444433332222"])
    err(t.analyst.post("/v1/protect", {"scheme": scheme, "values": ["denied-value-1"]}), 403, "forbidden")
    err(t.app.post("/v1/protect", {"scheme": "nope", "values": ["failed-value-1"]}), 404, "scheme_not_found")
    err(t.app.get("/v1/audit"), 403, "forbidden")

    got = entries(t)
    ops = [(e["operation"], e["outcome"], e["status"], e.get("code")) for e in got]
    assert ops == [
        ("scheme.create", "ok", 201, None),
        ("protect", "ok", 200, None),
        ("unprotect", "ok", 200, None),
        ("mask", "ok", 200, None),
        ("protect", "denied", 403, "forbidden"),
        ("protect", "failed", 404, "scheme_not_found"),
        ("audit.list", "denied", 403, "forbidden"),
    ], ops
    assert [e["sequence"] for e in got] == list(range(1, 8))
    p = got[1]
    assert p["schemes"] == [scheme] and p["key_versions"] == [1] and p["items"] == 2 and p["failed_items"] == 0
    assert p["tenant"] == t.id and p["principal"]["kind"] == "jwt" and p["principal"]["id"].startswith("user-")
    assert got[4]["schemes"] == [scheme] and "items" not in got[4]

    # The sweep: no audit column holds any value, token, subject id or context, in any spelling;
    # nor does the decrypted log.
    needles = secret_values + tokens + [subject, context, "5555444433332222", "denied-value-1", "failed-value-1"]
    raw = [cell for table in ("audit_log", "audit_heads") for row in sql(server, f"SELECT * FROM {table}")
           for cell in row]
    blob = b"\x00".join(bytes(c) if isinstance(c, (bytes, memoryview)) else str(c).encode() for c in raw)
    shown = str(got)
    for n in needles:
        for spelling in (n.encode(), base64.b64encode(n.encode()), n.encode().hex().encode()):
            assert spelling not in blob, n
        assert n not in shown, n

    # Decrypted independently: every row opens under the documented key and AAD, in order.
    key, prev = AESGCM(tenant_key(t.id)), bytes(32)
    for seq, row_prev, sealed in rows_of(server, t.id):
        assert row_prev == prev
        aad = lp(b"veil") + lp(b"audit-entry") + struct.pack(">I", 1) + lp(t.id.encode()) + lp(prev)
        assert f'"sequence":{seq},'.encode() in key.decrypt(sealed[:12], sealed[12:], aad)
        prev = hashlib.sha256(sealed).digest()
    v = verify(t)
    assert v == {"ok": True, "entries": 8, "head": prev.hex()}, v  # the 7 above and the list


def test_filters_and_paging(server):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    for _ in range(3):
        t.protect(scheme, ["v"])
    assert [e["sequence"] for e in entries(t, operation="protect")] == [2, 3, 4]
    page = ok(t.admin.get("/v1/audit?limit=2"))
    assert [e["sequence"] for e in page["entries"]] == [1, 2] and page["next_cursor"] == "2"
    rest = ok(t.admin.get(f"/v1/audit?cursor={page['next_cursor']}&operation=protect"))
    assert [e["sequence"] for e in rest["entries"]] == [3, 4]
    assert entries(t, until="1970-01-02T00:00:00Z") == [] and entries(t, since="4102444800") == []
    assert len(entries(t, since="2000-01-01T00:00:00Z", operation="scheme.create")) == 1
    for bad in ("limit=0", "limit=1001", "since=yesterday", "cursor=-1", "operation=Protect!", "nope=1",
                "limit=1&limit=2"):
        err(t.admin.get(f"/v1/audit?{bad}"), 400, "invalid_query")
    for bad in ("head=abc&entries=1", "entries=0", "entries=x", "head=1&head=2"):
        err(t.admin.get(f"/v1/audit/verify?{bad}"), 400, "invalid_query")
    v = verify(t)
    assert verify(t, f"?head={v['head']}")["ok"] is True
    assert verify(t, f"?entries={v['entries']}")["ok"] is True
    n = v["entries"] + 3  # the three verifies above
    assert verify(t, f"?entries={n + 5}") == {"ok": False, "entries": n, "broken": {"sequence": n + 1, "what": "truncated"}}
    assert verify(t, "?head=" + "0" * 64)["broken"] == {"sequence": n + 2, "what": "truncated"}
    other = server.tenant()
    assert entries(other) == []  # tenant B sees none of A's entries


def test_audit_setting_none_and_denied(server):
    t = server.tenant()
    quiet = t.create_scheme(audit="none")["name"]
    refusals = t.create_scheme(audit="denied")["name"]
    assert ok(t.admin.get(f"/v1/schemes/{quiet}"))["audit"] == "none"
    err(t.admin.post("/v1/schemes", t.scheme_body(audit="some")), 422, "invalid_field")
    tq = t.protect(quiet, ["x"])
    tr = t.protect(refusals, ["y"])
    t.unprotect(tq + tr)
    err(t.analyst.post("/v1/protect", {"scheme": quiet, "values": ["x"]}), 403, "forbidden")
    err(t.analyst.post("/v1/protect", {"scheme": refusals, "values": ["y"]}), 403, "forbidden")
    ok(t.admin.post(f"/v1/schemes/{quiet}/rotate"))  # administration is always audited
    ops = [(e["operation"], e.get("schemes"), e["outcome"]) for e in entries(t)]
    assert ops == [
        ("scheme.create", [quiet], "ok"),
        ("scheme.create", [refusals], "ok"),
        ("scheme.get", [quiet], "ok"),
        ("scheme.create", None, "failed"),
        # the unprotect of both schemes' tokens is recorded: one of them says `denied`, not `none`,
        # but it succeeded, so nothing; the refused protect on `denied` is recorded
        ("protect", [refusals], "denied"),
        ("scheme.rotate", [quiet], "ok"),
    ], ops


def tampered(server, action) -> tuple[dict, dict]:
    """A tenant with 6 entries (5 protects, then verify), `action(tenant_id)` applied to the database,
    and verify's answer before and after."""
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    for i in range(4):
        t.protect(scheme, [f"value {i}"])
    before = verify(t)  # sees 5 entries; its own is the 6th
    assert before["ok"] is True and before["entries"] == 5, before
    action(t.id)
    return before, verify(t, f"?head={before['head']}&entries=5")


def test_verify_finds_an_edited_entry(server):
    def edit(tid):
        (sealed,) = sql(server, "SELECT sealed FROM audit_log WHERE tenant = ? AND sequence = 3", (tid,))[0]
        sealed = bytearray(bytes(sealed))
        sealed[15] ^= 0x01
        sql(server, "UPDATE audit_log SET sealed = ? WHERE tenant = ? AND sequence = 3", (bytes(sealed), tid))
    _, after = tampered(server, edit)
    assert after == {"ok": False, "entries": 2, "broken": {"sequence": 3, "what": "edited"}}, after


def test_verify_finds_a_deleted_entry(server):
    _, after = tampered(server, lambda tid: sql(
        server, "DELETE FROM audit_log WHERE tenant = ? AND sequence = 4", (tid,)))
    assert after == {"ok": False, "entries": 3, "broken": {"sequence": 4, "what": "deleted"}}, after


def test_verify_finds_swapped_entries(server):
    def swap(tid):  # rows 2 and 3 trade places (through a free number: sequence is CHECKed >= 1)
        for a, b in ((2, 1000), (3, 2), (1000, 3)):
            sql(server, "UPDATE audit_log SET sequence = ? WHERE tenant = ? AND sequence = ?", (b, tid, a))
    _, after = tampered(server, swap)
    assert after == {"ok": False, "entries": 1, "broken": {"sequence": 2, "what": "reordered"}}, after


def test_verify_finds_a_truncated_tail(server):
    def cut(tid):  # the tail and the head row both cut back: only the earlier head shows it
        sql(server, "DELETE FROM audit_log WHERE tenant = ? AND sequence > 3", (tid,))
        sql(server, "UPDATE audit_heads SET sequence = 3 WHERE tenant = ?", (tid,))
    _, after = tampered(server, cut)
    assert after == {"ok": False, "entries": 3, "broken": {"sequence": 4, "what": "truncated"}}, after

    # Only the tail cut: the head row still names the lost entry.
    t = server.tenant()
    t.create_scheme()
    t.create_scheme()
    assert verify(t)["entries"] == 2  # its own entry is the 3rd
    sql(server, "DELETE FROM audit_log WHERE tenant = ? AND sequence = 3", (t.id,))
    assert verify(t) == {"ok": False, "entries": 2, "broken": {"sequence": 3, "what": "truncated"}}


def test_concurrent_appends_keep_the_chain(server):
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    app = t.app

    def one(i):
        return app.post("/v1/protect", {"scheme": scheme, "values": [f"v{i}"]}).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(48)))
    assert statuses == [200] * 48
    v = verify(t)
    assert v["ok"] is True and v["entries"] == 49, v
    seqs = [s for s, _, _ in rows_of(server, t.id)]
    assert seqs == list(range(1, 51)), seqs  # the 49 and verify's own
    (head,) = sql(server, "SELECT sequence FROM audit_heads WHERE tenant = ?", (t.id,))
    assert int(head[0]) == 50


def test_missing_master_key_runs_nothing(start_server):
    s = start_server("no-audit-key", audit_master_key="")
    t = s.tenant()
    err(t.admin.post("/v1/schemes", t.scheme_body()), 500, "misconfigured")
    err(t.app.post("/v1/protect", {"scheme": "pii", "values": ["x"]}), 500, "misconfigured")
    assert ok(s.api().get("/healthz")) == {"status": "ok"}
    tables = store.tables(s.state_dir)
    assert not [r for r in tables.get("schemes", []) if t.id in r], "no operation ran unaudited"


@contextlib.contextmanager
def audit_refused(server, tenant: str):
    """A trigger in the database refuses every insert into audit_log for this tenant: the
    fault of an audit write that fails, injected in the real store the server uses."""
    name = f"refuse_{tenant.replace('-', '_')}"
    if store.STORE == "postgres":
        sql(server, f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$")
        sql(server, f"CREATE TRIGGER {name} BEFORE INSERT ON audit_log FOR EACH ROW "
                    f"WHEN (NEW.tenant = '{tenant}') EXECUTE FUNCTION {name}()")
    else:
        sql(server, f"CREATE TRIGGER {name} BEFORE INSERT ON audit_log WHEN NEW.tenant = '{tenant}' "
                    "BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END")
    try:
        yield
    finally:
        sql(server, f"DROP TRIGGER {name}" + (" ON audit_log" if store.STORE == "postgres" else ""))
        if store.STORE == "postgres":
            sql(server, f"DROP FUNCTION {name}()")


def test_a_failed_audit_write_withholds_the_answer(server):
    """Blocking audit: when the entry cannot be written (a trigger refuses this tenant's inserts
    into audit_log), a protect answers 503 audit_unavailable and no token; a failed operation keeps
    its own error."""
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    with audit_refused(server, t.id):
        r = t.app.post("/v1/protect", {"scheme": scheme, "values": ["must not come back"]})
        body = err(r, 503, "audit_unavailable")
        assert "results" not in body and "must not come back" not in r.text
        err(t.app.post("/v1/protect", {"scheme": "nope", "values": ["x"]}), 404, "scheme_not_found")
    assert [e["operation"] for e in entries(t)] == ["scheme.create"]
    assert verify(t)["ok"] is True


def veil_rows(server) -> dict[str, list[tuple]]:
    """Every row of every table but the audit log's own, as comparable text. Seal counts are left
    out: a protect reserves its count before it seals, on its own, and a reservation is never
    given back (docs/audit.md, "One transaction": the count may run ahead, never behind)."""
    return {n: sorted(map(repr, rows)) for n, rows in store.tables(server.state_dir).items()
            if n not in ("audit_log", "audit_heads", "key_seals")}


def test_an_operation_whose_entry_fails_leaves_no_write_behind(server):
    """The entry is written in the operation's own transaction (docs/audit.md, "One transaction"):
    with the audit insert refused, every writing operation answers 503 audit_unavailable and the
    database holds exactly what it held before: no scheme, version, setting, API key, subject
    secret, destroyed key or erasure. Once the fault is gone, the same operations commit with
    their entries."""
    t = server.tenant()
    admin = t.as_("admin", "app")
    scheme = t.create_scheme()["name"]
    doomed = t.create_scheme()["name"]
    ok(t.admin.post(f"/v1/schemes/{scheme}/rotate"))
    ok(t.admin.request("PATCH", f"/v1/schemes/{scheme}", {"min_decryption_version": 2}))  # version 1 retired
    t.protect(scheme, ["x"], subject="known-subject")
    key = ok(admin.post("/v1/api-keys", {"label": "old", "roles": ["app"]}), 201)
    before, seen = veil_rows(server), len(entries(t))
    fresh = new_name()
    writes = [
        lambda: t.admin.post("/v1/schemes", t.scheme_body(fresh)),
        lambda: t.admin.post(f"/v1/schemes/{scheme}/rotate"),
        lambda: t.admin.request("PATCH", f"/v1/schemes/{scheme}", {"rotation_period": "30d"}),
        lambda: t.admin.request("PATCH", f"/v1/schemes/{scheme}", {"audit": "none", "mask_on_deny": True}),
        lambda: t.admin.post(f"/v1/schemes/{scheme}/versions/1/destroy"),
        lambda: admin.post("/v1/api-keys", {"label": "new", "roles": ["app"]}),
        lambda: t.admin.request("DELETE", f"/v1/api-keys/{key['id']}"),
        lambda: t.app.post("/v1/protect", {"scheme": scheme, "values": ["y"], "subject": "new-subject"}),
        lambda: t.privacy.post("/v1/subjects/known-subject/erase"),
        lambda: t.privacy.post("/v1/subjects/erase", {"subjects": ["known-subject", "other"]}),
        lambda: t.admin.post(f"/v1/schemes/{doomed}/erase", {"confirm": doomed}),
    ]
    with audit_refused(server, t.id):
        for i, write in enumerate(writes):
            r = write()
            err(r, 503, "audit_unavailable")
            assert veil_rows(server) == before, f"write {i} left a change behind"
    assert len(entries(t)) == seen + 1  # the list above, and none of the refused writes
    assert verify(t)["ok"] is True
    got = ok(t.admin.get(f"/v1/schemes/{scheme}"))
    assert (got["current_version"], got["min_decryption_version"], got["rotation_period"], got["audit"],
            got["mask_on_deny"]) == \
        (2, 2, None, "all", False)
    err(t.admin.get(f"/v1/schemes/{fresh}"), 404, "scheme_not_found")

    # Without the fault, the same writes commit, each with its entry.
    n = len(entries(t))  # the list itself and the checks above were recorded
    statuses = [write().status_code for write in writes]
    assert statuses == [201, 200, 200, 200, 200, 201, 200, 200, 200, 200, 200], statuses
    ops = [e["operation"] for e in entries(t)][n + 1:]
    # (the protect is not recorded: the PATCH before it set the scheme's audit to none)
    assert ops == ["scheme.create", "scheme.rotate", "scheme.update", "scheme.update", "key_version.destroy",
                   "api_key.create", "api_key.revoke", "subject.erase", "subjects.erase", "scheme.erase"], ops
    assert ok(t.admin.get(f"/v1/schemes/{scheme}"))["audit"] == "none"
    assert verify(t)["ok"] is True


def test_audit_setting_can_be_patched(server):
    """`audit` is changed by PATCH like the scheme's other settings; the change is recorded, and the
    next data operations follow the new setting."""
    t = server.tenant()
    scheme = t.create_scheme()["name"]
    t.protect(scheme, ["a"])
    assert ok(t.admin.request("PATCH", f"/v1/schemes/{scheme}", {"audit": "none"}))["audit"] == "none"
    t.protect(scheme, ["b"])
    err(t.analyst.post("/v1/protect", {"scheme": scheme, "values": ["c"]}), 403, "forbidden")
    assert ok(t.admin.request("PATCH", f"/v1/schemes/{scheme}", {"audit": "denied"}))["audit"] == "denied"
    t.protect(scheme, ["d"])
    err(t.analyst.post("/v1/protect", {"scheme": scheme, "values": ["e"]}), 403, "forbidden")
    assert ok(t.admin.request("PATCH", f"/v1/schemes/{scheme}", {"audit": "all"}))["audit"] == "all"
    t.protect(scheme, ["f"])
    for bad in ({"audit": "some"}, {"audit": None}, {"audit": 1}, {"audit": "ALL"}):
        r = t.admin.request("PATCH", f"/v1/schemes/{scheme}", bad)
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"]["code"] in ("invalid_field", "invalid_request"), r.text
        assert "some" not in r.text
    assert ok(t.admin.get(f"/v1/schemes/{scheme}"))["audit"] == "all"
    ops = [(e["operation"], e["outcome"]) for e in entries(t)]
    assert ops == [
        ("scheme.create", "ok"), ("protect", "ok"), ("scheme.update", "ok"),
        # audit none: neither the protect nor the refusal
        ("scheme.update", "ok"),
        # audit denied: only the refusal
        ("protect", "denied"), ("scheme.update", "ok"),
        ("protect", "ok"),
        ("scheme.update", "failed"), ("scheme.update", "failed"), ("scheme.update", "failed"),
        ("scheme.update", "failed"), ("scheme.get", "ok"),
    ], ops
