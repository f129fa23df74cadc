"""Issue 15 item 4: a local PySpark job (clients/python/examples/spark_protect_column.py, run as a
user runs it) protects a 100,000-row column through Veil with mapInPandas batches, stores it,
reads it back and unprotects it; every row is then checked from the Parquet files it wrote, with
pyarrow, outside Spark: the plaintext equal, every token a token of the scheme, nulls kept."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pyarrow.parquet as pq

from veilkit import REPO, TOKEN_RE, hs256, ok

EXAMPLE = REPO / "clients/python/examples/spark_protect_column.py"
ROWS = 100_000
POLICY = {"protect": ["etl"], "unprotect": ["etl"], "admin": ["admin"]}

sys.path.insert(0, str(EXAMPLE.parent))
from spark_protect_column import expected_card  # noqa: E402


def test_a_100000_row_column_round_trips_through_veil(server, spark_env, tmp_path):
    t = server.tenant()
    admin = server.api(hs256(t.id, ["admin", "etl"]))
    ok(admin.post("/v1/schemes", {"name": "cards", "kek": {"provider": "local"}, "policy": POLICY}), 201)
    key = ok(admin.post("/v1/api-keys", {"label": "spark", "roles": ["etl"]}), 201)["key"]
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(EXAMPLE), "--url", server.url, "--scheme", "cards",
                        "--rows", str(ROWS), "--partitions", "4", "--out", str(out)],
                       env=dict(spark_env, VEIL_API_KEY=key), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["rows"], summary["partitions"]) == (ROWS, 4)
    assert key not in r.stdout and key not in r.stderr

    protected = pq.read_table(out / "protected")
    assert protected.column_names == ["id", "card_token"]  # the plaintext was never written
    back = pq.read_table(out / "round_trip").sort_by("id")
    assert back.column_names == ["id", "card_token", "card"] and back.num_rows == ROWS
    ids = back.column("id").to_pylist()
    tokens = back.column("card_token").to_pylist()
    cards = back.column("card").to_pylist()
    assert ids == list(range(ROWS))
    expected = [expected_card(i) for i in ids]
    assert cards == expected  # every row equal after the round trip, nulls included
    token_re = re.compile(TOKEN_RE.format(scheme="cards", version=1))
    assert all((c is None) == (tok is None) for c, tok in zip(expected, tokens))  # nulls kept, never sent
    assert all(token_re.fullmatch(tok) for tok in tokens if tok is not None)
    non_null = [tok for tok in tokens if tok is not None]
    assert len(non_null) == ROWS - ROWS // 10 and len(set(non_null)) == len(non_null)
    assert not any(c in tok for c, tok in zip(expected, tokens) if c is not None)
    assert sorted(protected.column("card_token").to_pylist(), key=str) == sorted(tokens, key=str)
