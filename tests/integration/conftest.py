"""Fixtures for Veil's integration tests. The binaries must already be built (see veilkit.binaries)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The test fixtures (tests/fixtures: moto.py, azure_kv_emulator.py) import as top-level modules.
# First on the path on purpose: tests/fixtures/moto.py shadows the `moto` package in this process
# (moto itself runs as a separate moto_server process).
FIXTURES = str(Path(__file__).resolve().parents[1] / "fixtures")
if FIXTURES not in sys.path:
    sys.path.insert(0, FIXTURES)

import store  # noqa: E402
from veilkit import VeilServer, binaries  # noqa: E402


def pytest_sessionstart(session):
    try:
        binaries()
    except FileNotFoundError as e:
        raise pytest.UsageError(str(e))
    store.setup()


def pytest_sessionfinish(session, exitstatus):
    for s in VeilServer.all:
        s.stop(check=False)
    store.teardown()


def pytest_report_header(config):
    return f"veil metadata store: {store.STORE}"


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> VeilServer:
    """The shared dev-mode server with default limits; tests isolate themselves by tenant."""
    s = VeilServer(tmp_path_factory.mktemp("shared"), name="shared")
    yield s
    s.stop()


@pytest.fixture
def tenant(server):
    return server.tenant()


@pytest.fixture
def start_server(tmp_path):
    """Starts function-scoped servers: start_server(name, state_dir=None, raw_env=None, allowed_hosts=None,
    **SPIN variable overrides); `allowed_hosts` is added to the manifest's `allowed_outbound_hosts`."""
    started: list[VeilServer] = []

    def start(name="veil", state_dir=None, raw_env=None, allowed_hosts=None, **env) -> VeilServer:
        s = VeilServer(tmp_path / f"{name}-{len(started)}", state_dir=state_dir, name=name, raw_env=raw_env,
                       allowed_hosts=allowed_hosts, **env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for s in VeilServer.all:
            crashed = s.proc is not None and s.proc.poll() not in (None, 0) and not s.crash_reported
            if not (s.proc is not None and s.proc.poll() is None) and not crashed:
                continue
            s.crash_reported |= crashed
            text = s.stderr(6000)
            if text:
                report.sections.append((f"veil stderr ({s.name}, {s.workdir.name})", text))
