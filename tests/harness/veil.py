"""Veil itself: the built binaries, a manifest that serves them, the host's environment, and
`VeilServer`, one `veil serve` process on a free loopback port."""
from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from . import procs
from .api import Api, Tenant, new_tenant
from .procs import HarnessError
from .tokens import (AUDIT_MASTER_KEY, ERASURE_SIGNING_KEY, ERASURE_SIGNING_KID, HS256_SECRET, JWKS, JWT_CACHE_KEY, LOCAL_KEK, SUBJECT_DIGEST_KEY,
                     TEST_AUDIENCE, TEST_ISSUER,
                     hs256)

REPO = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"veil: listening on (http://\S+)")


def binaries() -> tuple[Path, Path]:
    """The `veil` host and the component, from target/ or $VEIL_BIN / $VEIL_WASM."""
    veil = Path(os.environ.get("VEIL_BIN") or REPO / "target/release/veil")
    wasm = Path(os.environ.get("VEIL_WASM") or REPO / "target/wasm32-wasip2/release/veil.wasm")
    veil, wasm = (p if p.is_absolute() else REPO / p for p in (veil, wasm))
    missing = [str(p) for p in (veil, wasm) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(missing)}: build them first (scripts/build.sh; scripts/test.sh and "
            f"benches/run.sh do) or set VEIL_BIN / VEIL_WASM; the harness does not build")
    return veil.resolve(), wasm.resolve()


def write_manifest(dest_dir: Path, wasm: Path, outbound: list[str] | None = None) -> Path:
    """A copy of spin.toml serving `wasm`, with `allowed_outbound_hosts = outbound`."""
    text = (REPO / "spin.toml").read_text()
    new, n = re.subn(r'(?m)^(\s*source\s*=\s*)"[^"\n]*"', lambda m: m.group(1) + json.dumps(str(wasm)), text)
    if n != 1:
        raise HarnessError("spin.toml: expected exactly one `source = \"...\"` line")
    hosts = json.dumps(list(outbound or []))
    new, n = re.subn(r'(?m)^(\s*allowed_outbound_hosts\s*=\s*)\[[^\]\n]*\]', lambda m: m.group(1) + hosts, new)
    if n != 1:
        raise HarnessError("spin.toml: expected exactly one `allowed_outbound_hosts = [...]` line")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / "spin.toml"
    path.write_text(new)
    return path


def spin_variables(overrides: dict) -> dict[str, str]:
    """`{"max_batch": 5}` → `{"SPIN_VARIABLE_MAX_BATCH": "5"}`; names already spelled
    SPIN_VARIABLE_* are kept."""
    return {k if k.startswith("SPIN_VARIABLE_") else f"SPIN_VARIABLE_{k.upper()}": str(v)
            for k, v in overrides.items()}


def base_env(*layers: dict, **overrides) -> dict[str, str]:
    """The host's environment: ours minus any SPIN_VARIABLE_* leaking in from outside, dev mode
    with the session's secrets (harness.tokens), then each layer (raw variables), then
    `overrides` as Spin variables (lower-case names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_VARIABLE_")}
    env.update({
        "SPIN_VARIABLE_DEV_MODE": "true",
        "SPIN_VARIABLE_LOCAL_KEK": LOCAL_KEK,
        "SPIN_VARIABLE_JWT_HS256_SECRET": HS256_SECRET,
        "SPIN_VARIABLE_JWT_JWKS": JWKS,
        "SPIN_VARIABLE_SUBJECT_DIGEST_KEY": SUBJECT_DIGEST_KEY,
        "SPIN_VARIABLE_AUDIT_MASTER_KEY": AUDIT_MASTER_KEY,
        "SPIN_VARIABLE_JWT_CACHE_KEY": JWT_CACHE_KEY,
        "SPIN_VARIABLE_ERASURE_SIGNING_KEY": ERASURE_SIGNING_KEY,
        "SPIN_VARIABLE_ERASURE_SIGNING_KID": ERASURE_SIGNING_KID,
    })
    for layer in layers:
        env.update(layer)
    env.update(spin_variables(overrides))
    if env.get("SPIN_VARIABLE_DEV_MODE") != "true":
        env.setdefault("SPIN_VARIABLE_JWT_AUDIENCE", TEST_AUDIENCE)
        env.setdefault("SPIN_VARIABLE_JWT_ISSUER", TEST_ISSUER)
    return env


class VeilServer:
    """One `veil serve` process on a free loopback port (port 0: the URL comes from its stdout),
    started by the constructor. Its stderr goes to a file in `workdir` (`stderr()`).

    `layers` are raw environment layers beneath the `env_overrides` (Spin variables, lower-case
    names); `raw_env` goes on top of everything; `allowed_hosts` become the manifest's
    `allowed_outbound_hosts`."""

    all: list["VeilServer"] = []  # every server started in this process

    def __init__(self, workdir: Path, state_dir: Path | None = None, name="veil", raw_env: dict | None = None,
                 allowed_hosts: list[str] | None = None, extra_args=(), *, layers=(), start_timeout: float = 60,
                 **env_overrides):
        self.name = name
        self.extra_args = [str(a) for a in extra_args]
        self.bin, wasm = binaries()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.allowed_hosts = list(allowed_hosts or [])
        self.manifest = write_manifest(self.workdir, wasm, self.allowed_hosts)
        self.state_dir = Path(state_dir or self.workdir / "state")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.env = base_env(*layers, **env_overrides)
        self.env.update(raw_env or {})
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.t0 = 0.0  # time.monotonic() when the process was spawned
        self.crash_reported = False
        self.stdout_lines: list[str] = []
        self.stderr_path = self.workdir / f"{name}-{secrets.token_hex(3)}.stderr"
        VeilServer.all.append(self)
        self.start()

    def stderr(self, tail: int = 8000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError(f"{self.name}: already running")
        self.stdout_lines = []
        self.url = ""
        found = threading.Event()
        with open(self.stderr_path, "a") as err:
            self.t0 = time.monotonic()
            self.proc = proc = procs.spawn(
                [self.bin, "serve", "--manifest", self.manifest, "--listen", "127.0.0.1:0",
                 "--state-dir", self.state_dir, *self.extra_args],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=self.env,
                cwd=self.workdir, text=True, bufsize=1)

        def pump():  # reads stdout for the whole life of the process, so that it never blocks
            with proc.stdout:
                for line in proc.stdout:
                    self.stdout_lines.append(line)
                    m = LISTEN_RE.search(line)
                    if m and not found.is_set():
                        self.url = m.group(1).rstrip("/")
                        found.set()

        threading.Thread(target=pump, name=f"{self.name}-stdout", daemon=True).start()
        try:
            procs.wait_until(lambda: found.wait(0.05), f"veil serve ({self.name})", timeout=self.start_timeout,
                             proc=proc, interval=0,
                             log=lambda: f"--- stdout ---\n{''.join(self.stdout_lines)}\n--- stderr ---\n{self.stderr()}")
        except HarnessError:
            procs.stop(proc)
            raise

    def wait_healthy(self, timeout: float = 60) -> float:
        """Waits for the first 200 on /healthz (polled about every millisecond); returns the
        seconds since the process was spawned. Any other answer is an error."""
        u = urlparse(self.url)

        def healthy():
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            try:
                c.request("GET", "/healthz")
                r = c.getresponse()
                body = r.read()
            finally:
                c.close()
            if r.status != 200:
                raise HarnessError(f"veil serve ({self.name}): GET /healthz answered {r.status} {body[:200]!r}\n"
                                   f"{self.stderr(600)}")
            return time.monotonic()

        return procs.wait_until(healthy, f"veil serve ({self.name}) /healthz", timeout=timeout, proc=self.proc,
                                interval=0.001, log=lambda: self.stderr(1500)) - self.t0

    def vm(self, field_name: str) -> int | None:
        """A figure from /proc/PID/status (VmHWM, VmRSS, ...), in kB; None once the process is gone."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def stop(self, check: bool = True) -> int | None:
        """SIGTERM and wait (20 s, then SIGKILL and an error); with `check`, an exit code other than
        0 is an error too."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            procs.stop(self.proc, 0)
            raise HarnessError(f"{self.name}: did not exit within 20 s of SIGTERM\n{self.stderr()}")
        finally:
            procs.forget(self.proc)
        if check and code != 0:
            raise HarnessError(f"{self.name}: exit code {code} after SIGTERM\n{self.stderr()}")
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def api(self, token: str | None = None) -> Api:
        return Api(self.url, token)

    def tenant(self, tenant_id: str | None = None, signer=hs256) -> Tenant:
        return Tenant(self, tenant_id or new_tenant(), signer)
