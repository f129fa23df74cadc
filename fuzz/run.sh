#!/usr/bin/env bash
# Builds and runs the fuzz targets (docs/testing.md, Fuzzing) with libFuzzer on stable Rust.
#
#   fuzz/run.sh --smoke                 every target for a few seconds (the CI gate)
#   fuzz/run.sh --runs 10000000 [T...]  the campaign: N executions of each target (all, or T...),
#                                       one after another; a line per target in
#                                       fuzz/target/campaign.tsv
#   fuzz/run.sh --build                 only build (binaries in fuzz/target/<host>/release/)
#
# No cargo-fuzz and no nightly: libfuzzer-sys builds libFuzzer from its bundled sources (a C++
# compiler is needed) and the coverage instrumentation is LLVM's SanitizerCoverage, asked for with
# stable rustc flags (-C passes=sancov-module, -C llvm-args=...). No sanitizer runs: the code is
# safe Rust (forbid/deny unsafe_code), so what is looked for is panics, overflows (overflow checks
# and debug assertions are on in fuzz/Cargo.toml) and the targets' own assertions.
# Environment: FUZZ_SMOKE_SECS (default 4), FUZZ_MAX_LEN (default 4096), FUZZ_NICE (default 19).
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(token api_body jwt jwks aws_kms azure_keyvault manifest)
mode="${1:-}"
shift || true
runs=""
case "$mode" in
  --smoke | --build) ;;
  --runs)
    runs="${1:?--runs needs a number}"
    shift
    ;;
  *)
    sed -n '2,8p' "$0" >&2
    exit 2
    ;;
esac
if [ $# -gt 0 ]; then
  TARGETS=("$@")
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# what cargo-fuzz passes (without -Zsanitizer); only for the target: `--target` keeps build
# scripts and proc macros uninstrumented
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
export CARGO_TARGET_DIR="$PWD/target"
nice="nice -n ${FUZZ_NICE:-19}"
$nice cargo build --release --locked --target "$host" --bins
[ "$mode" = --build ] && exit 0

bin="target/$host/release"
seeds=target/seeds
py=python3
[ -x ../.venv/bin/python ] && py=../.venv/bin/python
"$py" seeds.py "$seeds"
mkdir -p target/corpus target/logs artifacts

max_len="${FUZZ_MAX_LEN:-4096}"
status=0
for t in "${TARGETS[@]}"; do
  [ -x "$bin/$t" ] || { echo "no fuzz target $t" >&2; exit 2; }
  corpus="target/corpus/$t"
  mkdir -p "$corpus"
  log="target/logs/$t.log"
  args=(-max_len="$max_len" -artifact_prefix="artifacts/$t-" -print_final_stats=1)
  if [ "$mode" = --smoke ]; then
    # a fresh corpus each time: the smoke is the same run on every machine
    rm -rf "$corpus" && mkdir -p "$corpus"
    args+=(-max_total_time="${FUZZ_SMOKE_SECS:-4}")
  else
    args+=(-runs="$runs")
  fi
  started=$SECONDS
  if $nice "$bin/$t" "${args[@]}" "$corpus" "$seeds/$t" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$((SECONDS - started))
    size=$(find "$corpus" -type f | wc -l)
    printf 'fuzz %-15s ok: %s executions in %ss, corpus %s\n' "$t" "$execs" "$secs" "$size" >&2
    if [ -n "$runs" ]; then
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$execs" "$secs" "$(date -u +%F)" \
        "$(git rev-parse --short HEAD)" "$size" >>target/campaign.tsv
    fi
  else
    echo "fuzz $t FAILED (log $PWD/$log, input in $PWD/artifacts/):" >&2
    tail -40 "$log" >&2
    status=1
  fi
done
exit $status
