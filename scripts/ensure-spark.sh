#!/usr/bin/env bash
# Makes sure PySpark can run here, for tests/spark and the benchmark's PySpark section: a Java
# runtime of 17 or later (Debian's default-jre-headless, with apt-get, when none is on PATH or it
# is older) and the pinned pyspark, pandas and pyarrow (clients/python/requirements-spark.txt) in
# the venv given as $1 (default .venv). pyspark is a ~450 MB download: pip's cache keeps it for
# the next run, and only the gates that use Spark call this script.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  echo "==> installing a Java runtime (apt-get default-jre-headless) for PySpark" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq default-jre-headless >&2
fi
echo "java: $(java -version 2>&1 | head -n 1)" >&2

if ! "$venv/bin/python" - <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
pins = dict(l.split("==") for l in open("clients/python/requirements-spark.txt") if "==" in l and not l.startswith("#"))
sys.exit(0 if all(version(n) == v.strip() for n, v in pins.items()) else 1)
PY
then
  echo "==> installing pyspark, pandas, pyarrow into $venv (clients/python/requirements-spark.txt)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r clients/python/requirements-spark.txt
fi
