#!/usr/bin/env python3
"""Profiles `veil serve` under load: where does a request's CPU time go?

Starts `veil serve` (SQLite, HS256 dev token) with VEIL_PROFILE=perfmap, so that wasmtime writes
/tmp/perf-<pid>.map and perf can name the guest's functions, drives it with wrk on loopback and
samples every thread of the server with `perf record -e cpu-clock -g` (a software clock: these
machines have no hardware counters). Writes the reports to --dir and prints the top entries:

  dso.txt      samples per binary / JIT map / kernel
  symbols.txt  samples per function (self time)
  callers.txt  the same with call graphs (callers of the hottest functions)

benches/cases.py calls profile() for the "Where the time goes" section of BENCHMARKS.md. A row
whose functions are not in the profile at all says so (None), never 0%: after a rename, BUCKETS
must follow the code.

Usage (after scripts/build.sh; perf from Debian's linux-perf package):
  .venv/bin/python benches/profile.py [--op protect|unprotect|healthz] [--values 1|100]
                                      [--c 32] [--seconds 8] [--reuse-instances N] [--dir DIR]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cases  # noqa: E402  (the benchmark cases' Veil set-up and wrk; the shared harness)
from harness.procs import cleanup  # noqa: E402

# What a request's CPU is spent on: (label, symbol substrings; inclusive time of the first match).
# Guest frames (Cranelift keeps frame pointers) give reliable inclusive times; the host binary is
# built without frame pointers, so host rows are the leaf functions' own time plus what the
# kernel stacks below them show.
BUCKETS = [
    ("guest: the whole request, host calls included (`spin_executor::run`)", ["spin_executor::run"]),
    ("guest: authentication (`Authenticator::authenticate`)", ["veil::auth::Authenticator::authenticate"]),
    ("guest: protect/unprotect work (`ops::protect` / `ops::unprotect`)", ["veil::ops::data::protect", "veil::ops::data::unprotect"]),
    ("guest:   of which sealing/opening values (`AeadKey::seal_into` / `AeadKey::open`)",
     ["veil::crypto::aead::AeadKey::seal_into", "veil::crypto::aead::AeadKey::open"]),
    ("guest:   of which the DEK unwrap (`Ctx::unwrap_data_key`)", ["veil::ops::Ctx::unwrap_data_key"]),
    ("guest:   of which the scheme and key lookup (`Store::scheme_with_key`)", ["veil::store::Store::scheme_with_key"]),
    ("guest: configuration from variables (`Config::load`)", ["veil::config::Config::load"]),
    ("guest: JSON in and out (`serde_json`, self time)", None),
    ("host: instance memory set-up (`MemoryImageSlot::instantiate` + `set_heap_limit`)",
     ["wasmtime::runtime::vm::cow::MemoryImageSlot::instantiate", "wasmtime::runtime::vm::cow::MemoryImageSlot::set_heap_limit"]),
    ("kernel: `mprotect` (pool slots' memory)", ["do_mprotect_pkey"]),
    ("kernel: TCP send (`tcp_sendmsg`)", ["tcp_sendmsg"]),
    ("kernel: thread wake-ups and waits (`futex`)", ["__x64_sys_futex"]),
]


def perf_available() -> str:
    """'' when `perf record -e cpu-clock` works here, else why not."""
    if not shutil.which("perf"):
        return "perf is not installed (Debian package linux-perf)"
    r = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"],
                       capture_output=True, text=True)
    return "" if r.returncode == 0 else f"perf record fails here: {r.stderr.strip()[-200:]}"


def _report(data: Path, *args: str) -> str:
    r = subprocess.run(["perf", "report", "-i", str(data), "--stdio", *args], capture_output=True, text=True)
    return r.stdout


def _rows(text: str) -> list[tuple[float, float | None, str]]:
    """(first %, second % or None, rest) of each data line of a perf report."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?(.*)$", line)
        if m:
            out.append((float(m.group(1)), float(m.group(2)) if m.group(2) else None, m.group(3).strip()))
    return out


def profile(workdir: Path, op: str = "protect", values: int = 1, c: int = 32, seconds: int = 8,
            reuse: int = 1, out: Path | None = None) -> dict:
    """Runs one profiled load and returns its figures:
    {summary, rps, p50_us, p99_us, cpu_us_per_request, dso: [(pct, name)], buckets: [(label, pct)],
     top: [(pct, dso, symbol)]}."""
    out = out or Path(tempfile.mkdtemp(prefix="veil-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    name = f"profile-{op}-{values}-r{reuse}"
    v = cases.start_veil(workdir, name, raw_env={"VEIL_PROFILE": "perfmap"}, extra_args=["--reuse-instances", reuse])
    try:
        v.wait_healthy()
        env = {"BENCH_METHOD": "GET"}
        url = f"{v.url}/healthz"
        if op != "healthz":
            t = cases.set_up_schemes(v)
            body = {"scheme": cases.SCHEME, "values": cases.batch_values(values)}
            if op == "unprotect":
                body = {"values": t.protect(cases.SCHEME, body["values"])}
            env = cases.wrk_env(workdir / f"{name}-body.json", body, "Authorization",
                                cases.bearer(["app", "support"]))
            url = f"{v.url}/v1/{op}"

        result: dict = {}

        def load():
            try:
                result["wrk"] = cases.wrk(url, c, seconds + 2, env, workdir)
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=load)
        t.start()
        data = out / f"{name}.perf.data"
        subprocess.run(["sleep", "1"], check=True)  # past wrk's connection set-up
        rec = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-p", str(v.proc.pid),
                              "-o", str(data), "--", "sleep", str(seconds)], capture_output=True, text=True)
        t.join()
        if "error" in result:
            raise result["error"]
        if rec.returncode != 0:
            raise cases.BenchError(f"perf record failed: {rec.stderr.strip()[-300:]}")
    finally:
        v.stop(check=False)

    w = result["wrk"]
    rps = w["requests"] / (w["duration_us"] / 1e6)
    header = _report(data, "--header-only")
    m = re.search(r"Event count \(approx\.\): (\d+)", _report(data, "--sort", "dso", "-g", "none"))
    cpu_ns = int(m.group(1)) if m else 0  # cpu-clock counts nanoseconds
    dur = re.search(r"sample duration :\s+([\d.]+) ms", header)
    sampled_s = float(dur.group(1)) / 1000 if dur else float(seconds)
    cpu_us = cpu_ns / 1000 / (rps * sampled_s) if rps else 0.0
    # "[JIT] tid 1234" names the perf map of one process: one name for every run.
    dso = [(pct, re.sub(r"^\[JIT\] tid \d+", "[JIT]", rest))
           for pct, _, rest in _rows(_report(data, "--no-children", "--sort", "dso", "-g", "none"))]
    flat = [(pct, rest) for pct, _, rest in
            _rows(_report(data, "--no-children", "--sort", "dso,sym", "-g", "none"))]
    children = _rows(_report(data, "--children", "--sort", "sym", "-g", "none"))
    buckets = []  # (label, % of the server's CPU, or None: none of its functions is in the profile)
    for label, needles in BUCKETS:
        if needles is None:  # self time of serde_json inside the guest
            hits = [p for p, rest in flat if "[JIT]" in rest and "serde_json" in rest]
        else:
            hits = [h for h in (next((total for total, _, rest in children if needle in rest), None)
                                for needle in needles) if h is not None]
        buckets.append((label, sum(hits) if hits else None))
    top = []
    for pct, rest in flat[:25]:
        parts = rest.split(None, 2)
        # "[JIT] tid 123  [.] sym" or "veil  [.] sym" or "[kernel.kallsyms]  [k] sym"
        if rest.startswith("[JIT]"):
            dso_name, sym = "guest (JIT)", rest.split("] ", 2)[-1]
        else:
            dso_name, sym = parts[0], rest.split("] ", 1)[-1] if "] " in rest else rest
        sym = re.sub(r"::h[0-9a-f]{16}$", "", sym.replace("[.] ", "").replace("[k] ", "").strip())
        top.append((pct, dso_name, sym))
    summary = (f"{op} ×{values} c={c} --reuse-instances {reuse}: {rps:,.0f} req/s, "
               f"p50 {w['p50_us'] / 1000:.2f} ms, p99 {w['p99_us'] / 1000:.2f} ms, "
               f"server CPU {cpu_us:,.0f} µs per request")
    (out / f"{name}.txt").write_text(summary + "\n" + _report(data, "--no-children", "--sort", "dso,sym", "-g", "none"))
    (out / f"{name}.callers.txt").write_text(_report(data, "--no-children", "--sort", "sym", "-G"))
    return {"summary": summary, "rps": rps, "p50_us": w["p50_us"], "p99_us": w["p99_us"],
            "cpu_us_per_request": cpu_us, "dso": dso, "buckets": buckets, "top": top, "dir": str(out)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", default="protect", choices=("protect", "unprotect", "healthz"))
    ap.add_argument("--values", type=int, default=1, help="values per request (protect/unprotect)")
    ap.add_argument("--c", type=int, default=32, help="wrk connections")
    ap.add_argument("--seconds", type=int, default=8, help="seconds sampled (wrk runs 2 s longer)")
    ap.add_argument("--reuse-instances", type=int, default=1, help="passed to veil serve")
    ap.add_argument("--dir", default="", help="where the reports go (default: a new /tmp directory)")
    ap.add_argument("--top", type=int, default=25, help="functions printed")
    a = ap.parse_args()
    why = perf_available()
    if why:
        print(why, file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="veil-profile-work-"))
    try:
        p = profile(work, a.op, a.values, a.c, a.seconds, a.reuse_instances, Path(a.dir) if a.dir else None)
    finally:
        cleanup()
        shutil.rmtree(work, ignore_errors=True)
    print(p["summary"])
    print("\n== by binary (self time)")
    for pct, name in p["dso"]:
        print(f"{pct:6.2f}%  {name}")
    print("\n== by activity (inclusive time)")
    for label, pct in p["buckets"]:
        print(f"{pct:6.2f}%  {label}" if pct is not None else f"   n/a   {label} (not in the profile)")
    print("\n== hottest functions (self time)")
    for pct, dso, sym in p["top"][:a.top]:
        print(f"{pct:6.2f}%  {dso:12s} {sym}")
    print(f"\nreports in {p['dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
