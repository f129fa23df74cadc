#!/usr/bin/env bash
# Every gate, in CI's order (issue 16), each timed:
#   1. format       cargo fmt --check (rustfmt is installed when missing; failing to, fails)
#   2. clippy       (the place is marked below)
#   3. unit tests   cargo test on the workspace, PostgreSQL included, then the live KMS tests
#                   (the Rust providers against moto and the Key Vault emulator)
#   4. wasm build   the component for wasm32-wasip2 and the `veil` host (scripts/build.sh)
#   5. integration  the fixtures' own tests and the Python client's (clients/python/tests), then
#                   the suite on SQLite (lean entry) and on PostgreSQL (wasi-http entry): the real
#                   component through the real host over HTTP (pytest: tests/pytest.ini); then
#                   tests/spark once, on SQLite: a local PySpark job through Veil
#                   (scripts/ensure-spark.sh installs Java and pyspark)
#   6. dependencies cargo deny: licenses, bans, sources (deny.toml); advisories where a local
#                   copy of the advisory database exists (VEIL_ADVISORY_DB_PATH; README, Tests)
#   7. fuzz smoke   fuzz/run.sh --smoke: one build of the fuzz workspace, every target for a few
#                   seconds (libFuzzer on stable Rust; a crash fails the run)
#   8. benchmarks   benches/run.sh --smoke: every benchmark produces its rows or the run fails
# Installs what it needs (wasm target, rustfmt, cargo-deny, PostgreSQL, the Python venv, wrk, a
# Java runtime and pyspark).
# Arguments go to the integration runs' pytest (e.g. -k PATTERN). VEIL_TEST_NO_BENCH=1 skips
# step 8 (local runs only; CI never sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2  # builds with rustc 1.88+; `cargo install` takes about 4-6 min on 2 cores

timings=()
current=""
started=$SECONDS
gate() { # name: starts a timed step
  finish_gate
  current="$1"
  gate_started=$SECONDS
  printf '\n==> %s\n' "$current" >&2
}
finish_gate() {
  if [ -n "$current" ]; then
    timings+=("$(printf '%5ds  %s' $((SECONDS - gate_started)) "$current")")
    current=""
  fi
}
summary() {
  local rc=$?
  local failed="$current"
  finish_gate
  printf '\n==> time per step\n' >&2
  printf '%s\n' "${timings[@]}" >&2
  printf '%5ds  total\n' $((SECONDS - started)) >&2
  if [ "$rc" -ne 0 ]; then
    printf '\nFAILED in: %s (exit %s)\n' "${failed:-set-up}" "$rc" >&2
  fi
}
trap summary EXIT

gate "1. format (cargo fmt --check)"
if ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then
  echo "rustfmt is missing: rustup component add rustfmt" >&2
  rustup component add rustfmt
fi
cargo fmt --all -- --check

gate "2. clippy"
if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
  echo "clippy is missing: rustup component add clippy" >&2
  rustup component add clippy
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
# Natively (every crate, tests and benches included), then the component for wasm32-wasip2: the
# only way src/host/ (compiled for wasm32 only) is linted.
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked -p veil --target wasm32-wasip2 -- -D warnings

gate "set-up: PostgreSQL and the Python venv (.venv)"
VEIL_TEST_PG_URL="${VEIL_TEST_PG_URL:-$(scripts/ensure-postgres.sh)}"
export VEIL_TEST_PG_URL  # the PostgreSQL unit tests fail without it, never skip
echo "PostgreSQL: $VEIL_TEST_PG_URL" >&2
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
py=.venv/bin/python
pytest=("$py" -m pytest -c tests/pytest.ini)

gate "3. unit tests (cargo test --workspace; live KMS tests)"
cargo test --release --locked --workspace
"$py" tests/fixtures/run_live_kms_tests.py

gate "4. wasm build (component and host: scripts/build.sh)"
scripts/build.sh

gate "5. integration: the fixtures' own tests (tests/fixtures), the Python client's (clients/python/tests)"
"${pytest[@]}" -q tests/fixtures
"$py" -m pytest -q clients/python/tests  # its own settings: clients/python/pyproject.toml
# Each store through one of the component's HTTP doors (docs/testing.md, "The two HTTP doors"):
# SQLite through the lean veil:gateway/http export, PostgreSQL through wasi:http/incoming-handler.
for store in sqlite postgres; do
  entry=lean
  [ "$store" = postgres ] && entry=wasi-http
  gate "5. integration on $store through the $entry entry (component + veil host over HTTP)"
  VEIL_ENTRY=$entry VEIL_STORE=$store "${pytest[@]}" -q tests/integration "$@"
done
# Once, not per store: what Spark sends does not depend on the metadata store, and pyspark (a
# ~450 MB download, cached by pip) and Java are installed for this gate and the benchmark only.
gate "5. PySpark (tests/spark: a 100,000-row column through Veil; docs/databricks.md as written)"
scripts/ensure-spark.sh .venv
VEIL_STORE=sqlite "${pytest[@]}" -q tests/spark

gate "6. dependencies (cargo deny)"
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION from crates.io" >&2
  cargo install --locked "cargo-deny@$CARGO_DENY_VERSION"
fi
cargo deny --workspace --locked check --hide-inclusion-graph licenses bans sources
advisory_dbs="${VEIL_ADVISORY_DB_PATH:-${CARGO_HOME:-$HOME/.cargo}/advisory-dbs}"
if compgen -G "$advisory_dbs/advisory-db-*" >/dev/null; then
  for db in "$advisory_dbs"/advisory-db-*; do
    echo "advisories: the local copy $db, last changed $(git -C "$db" log -1 --format=%cs 2>/dev/null || echo '?')" >&2
  done
  cargo deny --workspace --locked --offline check --hide-inclusion-graph advisories
else
  echo "advisories: NOT CHECKED: no local copy of the RustSec advisory database in $advisory_dbs" >&2
  echo "  (it lives only on GitHub, which this machine cannot reach; README.md, Tests, says how to add one)" >&2
fi

gate "7. fuzz smoke (fuzz/run.sh --smoke)"
fuzz/run.sh --smoke

if [ "${VEIL_TEST_NO_BENCH:-}" != 1 ]; then
  gate "8. benchmark smoke (benches/run.sh --smoke)"
  smoke=target/BENCHMARKS.smoke.md  # kept for a look; target/ is not tracked
  benches/run.sh --smoke --out "$smoke"  # builds only the core benchmarks here
  # every section of BENCHMARKS.md is there, and no row says it failed
  for section in "## Targets" "## 1. Core, native" "## 2. Core, inside wasm" "## 3. HTTP" \
                 "## 4. Veil ÷ OpenBao" "## 5. Cold start" "## 6. KMS calls" "## 7. Memory" \
                 "## 8. Where the time goes" "## 10. PySpark" "## Why the missed targets are missed" "## Notes"; do
    grep -q "^$section" "$smoke" || { echo "smoke report $smoke: no '$section'" >&2; exit 1; }
  done
  if grep -n "FAILED\|no figure" "$smoke" >&2; then
    echo "smoke report $smoke: the rows above failed" >&2
    exit 1
  fi
else
  echo "8. benchmark smoke: not run (VEIL_TEST_NO_BENCH=1; CI never sets it)" >&2
fi
finish_gate
