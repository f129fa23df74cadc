"""The host key-value store under more distinct entries than it holds (docs/configuration.md,
`--kv-max-entries`): it evicts the least recently used entries instead of refusing writes, so the
caches keep working for every tenant. Observed through the DEK cache's `veil-kms-calls` counts
(0 unwraps = served from the cache) and the host's eviction line on stderr."""
import base64
import os
import re

from faults import serving
from veilkit import ok, rs256

CACHE_KEY = base64.b64encode(os.urandom(32)).decode()


def test_a_full_key_value_store_keeps_caching(tmp_path):
    cap = 30
    with serving(tmp_path / "kv", "--kv-max-entries", str(cap), dek_cache="true", dek_cache_key=CACHE_KEY) as s:
        t = s.tenant(signer=rs256)
        first = t.create_scheme()["name"]
        # Twice as many distinct RS256 tokens as the store holds: each verified token is an entry.
        for _ in range(2 * cap):
            ok(t.as_("app").post("/v1/protect", {"scheme": first, "values": ["x"]}))
        assert "key-value store full (30 entries" in s.stderr()
        # A new entry still goes in: a new scheme's data key is unwrapped once, then cached.
        other = s.tenant(signer=rs256)
        second = other.create_scheme()["name"]
        app = other.as_("app")
        counts = [unwraps(ok_resp(app.post("/v1/protect", {"scheme": second, "values": ["y"]}))) for _ in range(3)]
        assert counts == [1, 0, 0]
        # and the first tenant's hot entry survived the churn
        assert unwraps(ok_resp(t.as_("app").post("/v1/protect", {"scheme": first, "values": ["z"]}))) == 0
        assert "DEK cache write failed" not in s.stderr()


def ok_resp(r):
    ok(r)
    return r


def unwraps(resp) -> int:
    m = re.fullmatch(r"wraps=(\d+), unwraps=(\d+), http=(\d+)", resp.headers.get("veil-kms-calls", ""))
    assert m, resp.headers
    return int(m.group(2))
