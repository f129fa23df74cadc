"""The PySpark tests (issue 15 item 4): a local Spark job through the real component and host.
They run once, in their own gate of scripts/test.sh (on SQLite: the metadata store does not
change what Spark sends), because pyspark is large and needs Java; that gate installs both.

`server` is a dev-mode `veil serve` as in tests/integration; `spark_env` is the environment a
Spark job gets: the venv's Python for the workers and `veil_client` from this tree (what
`pip install veil-client` gives a cluster)."""
from __future__ import annotations

import os
import sys

import pytest

import store
from veilkit import REPO, VeilServer, binaries

CLIENT_SRC = REPO / "clients/python/src"


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


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> VeilServer:
    s = VeilServer(tmp_path_factory.mktemp("spark"), name="spark")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def spark_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_API_KEY", "VEIL_TOKEN"))}
    env["PYTHONPATH"] = os.pathsep.join([str(CLIENT_SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env["SPARK_LOCAL_IP"] = "127.0.0.1"  # Spark binds to loopback only, never the machine's other addresses
    return env
