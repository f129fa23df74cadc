#!/usr/bin/env python3
"""Profiles `veil serve` under load: where does a request's CPU time go?

Starts `veil serve` (SQLite, HS256 dev token) with VEIL_PROFILE=perfmap, so that wasmtime writes
/tmp/perf-<pid>.map and perf can name the guest's functions, drives it with wrk on loopback and
samples every thread of the server with `perf record -e cpu-clock -g` (a software clock: these
machines have no hardware counters). Writes the reports to --dir and prints the top entries:

  dso.txt      samples per binary / JIT map / kernel
  symbols.txt  samples per function (self time)
  callers.txt  the same with call graphs (callers of the hottest functions)

Usage (after scripts/build.sh; perf from Debian's linux-perf package):
  .venv/bin/python benches/profile.py [--op protect|unprotect|healthz] [--values 1|100]
                                      [--c 32] [--seconds 8] [--reuse-instances N] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the benchmark's helpers: Veil, wrk, tokens)

import requests  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", default="protect", choices=("protect", "unprotect", "healthz"))
    ap.add_argument("--values", type=int, default=1, help="values per request (protect/unprotect)")
    ap.add_argument("--c", type=int, default=32, help="wrk connections")
    ap.add_argument("--seconds", type=int, default=8, help="seconds sampled (wrk runs 1 s longer)")
    ap.add_argument("--reuse-instances", type=int, default=1, help="passed to veil serve")
    ap.add_argument("--dir", default="", help="where the reports go (default: a new /tmp directory)")
    ap.add_argument("--top", type=int, default=40, help="entries printed per report")
    a = ap.parse_args()

    out = Path(a.dir or tempfile.mkdtemp(prefix="veil-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="veil-profile-work-"))
    v = bench.Veil(work, "veil", env_extra={"VEIL_PROFILE": "perfmap"},
                   extra_args=["--reuse-instances", str(a.reuse_instances)])
    try:
        v.wait_healthy()
        env = {"BENCH_METHOD": "GET"}
        url = f"{v.url}/healthz"
        if a.op != "healthz":
            s = requests.Session()
            admin = {"authorization": f"Bearer {bench.hs256(['admin'])}"}
            r = s.post(f"{v.url}/v1/schemes", headers=admin, timeout=30, json={
                "name": bench.SCHEME, "algorithm": "aes-256-gcm", "kek": {"provider": "local"},
                "policy": {"protect": ["app"], "unprotect": ["app"], "admin": ["admin"]}})
            r.raise_for_status()
            auth = f"Bearer {bench.hs256(['app'])}"
            values = [f"{bench.VALUE[:-3]}{i:03d}" for i in range(a.values)]
            body = {"scheme": bench.SCHEME, "values": values}
            if a.op == "unprotect":
                r = s.post(f"{v.url}/v1/protect", headers={"authorization": auth}, json=body, timeout=30)
                r.raise_for_status()
                body = {"values": [x["value"] for x in r.json()["results"]]}
            f = work / "body.json"
            f.write_text(json.dumps(body))
            env = {"BENCH_BODY": str(f), "BENCH_AUTH_HEADER": "Authorization", "BENCH_AUTH_VALUE": auth}
            url = f"{v.url}/v1/{a.op}"

        result = {}

        def load():
            result["wrk"] = bench.wrk(url, a.c, a.seconds + 2, env, work)

        t = threading.Thread(target=load)
        t.start()
        data = out / "perf.data"
        subprocess.run(["sleep", "1"], check=True)  # past wrk's connection set-up
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-p", str(v.proc.pid),
                        "-o", str(data), "--", "sleep", str(a.seconds)], check=True)
        t.join()
        w = result["wrk"]
        rps = w["requests"] / (w["duration_us"] / 1e6)
        summary = (f"{a.op} x{a.values} c={a.c} reuse={a.reuse_instances}: {rps:,.0f} req/s, "
                   f"p50 {w['p50_us'] / 1000:.2f} ms, p99 {w['p99_us'] / 1000:.2f} ms")
        reports = {
            "dso.txt": ["--sort", "dso", "-g", "none"],
            "symbols.txt": ["--sort", "dso,sym", "-g", "none"],
            "callers.txt": ["--sort", "sym", "-G"],
        }
        for name, args in reports.items():
            r = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", *args],
                               capture_output=True, text=True)
            (out / name).write_text(summary + "\n" + r.stdout)
        print(summary)
        for name in ("dso.txt", "symbols.txt"):
            lines = [ln for ln in (out / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            print(f"\n== {name}")
            print("\n".join(lines[1:a.top + 1]))
        print(f"\nreports in {out}")
    finally:
        v.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
