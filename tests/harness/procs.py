"""Child processes that never outlive their run, free loopback ports, and the one "wait until it
answers" loop that every service start uses (Veil, moto_server, OpenBao)."""
from __future__ import annotations

import socket
import subprocess
import time
from typing import Callable


class HarnessError(RuntimeError):
    """A service did not start, answer or stop as it should; the message says what it printed."""


PROCS: list[subprocess.Popen] = []
CLEANUPS: list[Callable[[], object]] = []  # run after every process is gone (drop databases, remove dirs)


def spawn(args, **kw) -> subprocess.Popen:
    """Popen, registered so that `cleanup` stops it if its owner does not."""
    p = subprocess.Popen([str(a) for a in args], **kw)
    PROCS.append(p)
    return p


def forget(p: subprocess.Popen) -> None:
    if p in PROCS:
        PROCS.remove(p)


def stop(p: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    forget(p)
    return p.returncode


def run(args, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """A child run to completion (text output captured), stopped if it takes longer than `timeout`."""
    p = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise HarnessError(f"{' '.join(map(str, args))}: timed out after {timeout} s")
    finally:
        forget(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def cleanup(log: Callable[[str], None] = print) -> None:
    """Stops every registered process still running, then runs the registered clean-ups."""
    for p in reversed(list(PROCS)):
        try:
            stop(p)
        except OSError as e:
            log(f"cleanup: stopping pid {p.pid}: {e}")
    PROCS.clear()
    for fn in reversed(CLEANUPS):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every clean-up gets its turn
            log(f"cleanup: {e}")
    CLEANUPS.clear()


def free_port(also_next: bool = False) -> int:
    """A free loopback port (bound once, then closed); with `also_next`, the one after it is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not also_next:
            return port
        if port < 65535:
            try:
                with socket.socket() as s1, socket.socket() as s2:
                    s1.bind(("127.0.0.1", port))
                    s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise HarnessError("no free loopback port")


def wait_until(probe: Callable[[], object], what: str, *, timeout: float, proc: subprocess.Popen | None = None,
               interval: float = 0.05, log: Callable[[], str] = lambda: ""):
    """Calls `probe` until it returns something true, and returns that. An OSError from it
    (connection refused, reset; requests' errors are OSErrors too) means "not yet"; any other
    exception ends the wait. Raises HarnessError, with `log()` appended, when `proc` exits first
    or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = probe()
            if got:
                return got
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what}: exited with {proc.returncode} before answering\n{log()}")
        if time.monotonic() > deadline:
            raise HarnessError(f"{what}: no answer within {timeout} s\n{log()}")
        time.sleep(interval)
