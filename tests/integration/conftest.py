"""Fixtures for Veil's integration tests. The binaries must already be built (see veilkit.binaries).

tests/pytest.ini puts tests/fixtures on the path ahead of the installed packages, on purpose:
tests/fixtures/moto.py shadows the `moto` package in this process (moto itself runs as a separate
moto_server process).
"""
from __future__ import annotations

import pytest

import store
from veilkit import VeilServer, binaries


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


def pytest_collection_modifyitems(config, items):
    """Deselects (never skips) the tests marked `@pytest.mark.store("...")` for the other store."""
    other = [i for i in items if any(m.args != (store.STORE,) for m in i.iter_markers("store"))]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [i for i in items if i not in other]


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
