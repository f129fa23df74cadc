"""The host key-value store in a file (`veil serve --kv-file`, docs/configuration.md): the caches
Veil keeps there are untrusted (DESIGN §11b), so entries written straight into the file by
someone else, a forged one or one copied from another token's or key's slot, are never accepted:
the request is verified (or the data key unwrapped) again, on its own merits."""
import base64
import json
import os
import re

from faults import kv_put as put, kv_rows as rows, serving
from veilkit import err, ok, rs256

JWT_PREFIX = "veil/jwt/v2/"
DEK_PREFIX = "veil/dek-cache/v2/"


def new_slot(path, prefix: str, before: dict) -> str:
    (slot,) = set(rows(path, prefix)) - set(before)
    return slot


def unwraps(resp) -> int:
    m = re.fullmatch(r"wraps=(\d+), unwraps=(\d+), http=(\d+)", resp.headers.get("veil-kms-calls", ""))
    assert m, resp.headers
    return int(m.group(2))


def test_forged_and_copied_token_cache_entries_are_never_accepted(tmp_path):
    kv = tmp_path / "kv.db"
    with serving(tmp_path / "srv", "--kv-file", str(kv)) as s:
        assert "key-value store `default` (in the file" in s.stderr()
        t = s.tenant()
        name = t.create_scheme()["name"]
        body = {"scheme": name, "values": ["x"]}
        low, high = rs256(t.id, ["app"]), rs256(t.id, ["admin"])  # may protect / may administer

        ok(s.api(low).post("/v1/protect", body))
        low_slot = new_slot(kv, JWT_PREFIX, {})
        before = rows(kv, JWT_PREFIX)
        ok(s.api(high).get("/v1/schemes"))
        high_slot = new_slot(kv, JWT_PREFIX, before)
        high_entry = rows(kv, JWT_PREFIX)[high_slot]
        ok(s.api(high).get("/v1/schemes"))  # served from the cache: the entry stays as it was
        assert rows(kv, JWT_PREFIX)[high_slot] == high_entry

        until = (2**40).to_bytes(8, "big")  # the entry's own expiry field, far ahead
        claims = json.dumps({"tenant": t.id, "roles": ["admin"], "sub": "forger", "exp": 2**40}).encode()
        attempts = {
            "copied from another token's slot": high_entry,
            "forged claims in the clear": until + claims,
            "forged random bytes": until + os.urandom(len(high_entry) - 8),
        }
        for what, entry in attempts.items():
            put(kv, low_slot, entry)
            # the low token keeps its own roles: verified again, never the entry's
            err(s.api(low).post("/v1/schemes", t.scheme_body()), 403, "forbidden")
            assert rows(kv, JWT_PREFIX)[low_slot] != entry, f"{what}: the entry was not replaced"
            ok(s.api(low).post("/v1/protect", body))
        # every slot holding the admin's entry does not make a forged token pass
        head, claims_b64, sig = low.split(".")
        forged = f"{head}.{claims_b64}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
        for slot in rows(kv, JWT_PREFIX):
            put(kv, slot, high_entry)
        err(s.api(forged).post("/v1/protect", body), 401, "invalid_credentials")
        err(s.api(low).post("/v1/schemes", t.scheme_body()), 403, "forbidden")
        ok(s.api(high).post("/v1/schemes", t.scheme_body()), 201)  # its own entry still serves it

    # The file outlives the server: a new one reads the same entries and is no more trusting.
    put(kv, low_slot, high_entry)
    with serving(tmp_path / "srv2", "--kv-file", str(kv), state_dir=s.state_dir) as s2:
        err(s2.api(low).post("/v1/schemes", t.scheme_body()), 403, "forbidden")
        ok(s2.api(low).post("/v1/protect", body))


def test_forged_and_copied_dek_cache_entries_are_never_used(tmp_path):
    kv = tmp_path / "kv.db"
    cache_key = base64.b64encode(os.urandom(32)).decode()
    with serving(tmp_path / "srv", "--kv-file", str(kv), dek_cache="true", dek_cache_key=cache_key) as s:
        t = s.tenant()
        a, b = t.create_scheme()["name"], t.create_scheme()["name"]

        def protect(name, value):
            r = t.app.post("/v1/protect", {"scheme": name, "values": [value]})
            return r, ok(r)["results"][0]["value"]

        assert unwraps(protect(a, "first")[0]) == 1
        slot_a = new_slot(kv, DEK_PREFIX, {})
        before = rows(kv, DEK_PREFIX)
        assert unwraps(protect(b, "other")[0]) == 1
        slot_b = new_slot(kv, DEK_PREFIX, before)
        entry_b = rows(kv, DEK_PREFIX)[slot_b]
        r, token = protect(a, "cached")
        assert unwraps(r) == 0  # a hit

        for what, entry in {"copied from another scheme's slot": entry_b,
                            "forged bytes": os.urandom(len(entry_b))}.items():
            put(kv, slot_a, entry)
            r, token = protect(a, f"after {what}")
            assert unwraps(r) == 1, f"{what}: the entry was used"  # unwrapped from the store again
            assert t.unprotect([token]) == [f"after {what}"]
            assert rows(kv, DEK_PREFIX)[slot_a] != entry
