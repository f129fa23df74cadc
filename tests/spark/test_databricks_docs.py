"""docs/databricks.md as written: its `sh` blocks (bash, curl, jq, pip) and its `python` blocks (one
PySpark script, in order) run against a real server and a local Spark; the JSON that its SQL
function builds and reads is checked against the real Veil with Spark SQL's own `to_json` and
`from_json` (the SQL itself needs a Databricks workspace)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from veilkit import REPO, hs256

PAGE = REPO / "docs/databricks.md"
# The pieces of section 4's SQL that Spark SQL can evaluate here.
REQUEST_SQL = "to_json(named_struct('scheme', 'cards', 'values', array(token)))"
RESULT_SCHEMA = "'results ARRAY<STRUCT<value: STRING, error: STRUCT<code: STRING, message: STRING>>>'"

# Appended to the page's script (it reuses its session and names: spark, stored, VEIL, reader_key).
SQL_CHECK = f'''
import requests as _requests

_token = stored.where("id = 1").first().card
_bad = _token[:-12] + ("A" if _token[-12] != "A" else "B") + _token[-11:]
for _tok, _want in ((_token, ("4111111111111111", None)), (_bad, (None, "decryption_failed"))):
    _body = spark.createDataFrame([(_tok,)], "token STRING").selectExpr("{REQUEST_SQL} AS j").first().j
    # what the connection sends: POST base_path + path, the key as a bearer token
    _r = _requests.post(VEIL + "/v1/" + "unprotect", data=_body, timeout=30,
                        headers={{"authorization": "Bearer " + reader_key, "content-type": "application/json"}})
    assert _r.status_code == 200, _r.status_code
    _row = spark.createDataFrame([(_r.text,)], "text STRING").selectExpr(
        "from_json(text, {RESULT_SCHEMA}).results[0].value AS v",
        "from_json(text, {RESULT_SCHEMA}).results[0].error.code AS c").first()
    assert (_row.v, _row.c) == _want, (_row.v, _row.c)
print("sql-json-ok")
'''


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", PAGE.read_text(), re.S)


def run(block: str, env: dict, cwd: Path) -> list[str]:
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, (block, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout.strip().splitlines()


def test_the_databricks_page_works_as_written(server, spark_env, tmp_path):
    t = server.tenant()
    env = dict(spark_env, VEIL=server.url, VEIL_URL=server.url,
               ADMIN_TOKEN=hs256(t.id, ["admin", "spark-etl", "pii-readers"]),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    sh = blocks("sh")
    assert len(sh) == 2, sh

    # 1. the scheme and two API keys
    assert run(sh[0], env, tmp_path) == ["cards"]
    keys = [(tmp_path / f).read_text().strip() for f in ("etl-key", "decrypt-key")]
    assert all(re.fullmatch(r"veil_[0-9a-f]{32}\.[A-Za-z0-9_-]{43}", k) for k in keys)

    # 2. the wheel, built from a copy of clients/python as a checkout has it
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "clients/python", checkout / "clients/python",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist"))
    wheel = "veil_client-0.1.0-py3-none-any.whl"
    assert run(sh[1], env, checkout) == [wheel]
    names = zipfile.ZipFile(checkout / "dist" / wheel).namelist()
    for f in ("veil_client/__init__.py", "veil_client/client.py", "veil_client/spark.py", "veil_client/py.typed"):
        assert f in names, names

    # 3. the PySpark blocks, as one notebook would run them, then the SQL function's JSON
    sql = "\n".join(blocks("sql"))
    for piece in (f"json => {REQUEST_SQL}", RESULT_SCHEMA, ".results[0].value", "path => 'unprotect'",
                  "base_path '/v1/'", "bearer_token secret('veil', 'decrypt-key')",
                  "GRANT EXECUTE ON FUNCTION crypto.decrypt TO `pii-readers`",
                  "is_account_group_member('pii-readers')"):
        assert piece in sql, piece
    script = tmp_path / "notebook.py"
    script.write_text("\n\n".join(blocks("python")) + SQL_CHECK)
    r = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.strip().splitlines()[-1] == "sql-json-ok"
    assert not any(k in r.stdout + r.stderr for k in keys)
