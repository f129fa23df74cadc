"""Azure Functions: the packaged custom handler (scripts/package.sh azure-functions) started as the
Functions host starts one, from the package's host.json (executable, arguments, working
directory) with FUNCTIONS_CUSTOMHANDLER_PORT and the app settings in the environment, then
driven with requests as the host forwards them (`enableForwardingHttpRequest`: method, path,
query, headers and body unchanged). The Functions host itself cannot run here; what it does is
taken from the public custom-handler documentation."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import requests

from platforms import app_settings, entries, is_linux_x86_64, package, unpack
from veilkit import Api, Tenant, err, free_port, ok
from harness import procs


class Handler:
    """`veil` as the Functions host runs it; `prefix` is the route prefix requests arrive under."""

    def __init__(self, root, env=None, prefix: str = ""):
        root.mkdir(parents=True, exist_ok=True)
        self.wwwroot = unpack(package("azure-functions", root / "veil-functions.zip"), root / "wwwroot")
        self.host_json = json.loads((self.wwwroot / "host.json").read_text())
        desc = self.host_json["customHandler"]["description"]
        self.port = free_port()
        self.env = env or app_settings(root)
        self.env.update({"FUNCTIONS_CUSTOMHANDLER_PORT": str(self.port), "FUNCTIONS_WORKER_RUNTIME": "custom",
                         "WEBSITE_SITE_NAME": "veil-test", "AzureWebJobsScriptRoot": str(self.wwwroot)})
        cwd = self.wwwroot / desc.get("workingDirectory", "")
        self.stderr_path = root / "handler.stderr"
        self.t0 = time.monotonic()
        with open(self.stderr_path, "w") as errf:
            self.proc = procs.spawn([self.wwwroot / desc["defaultExecutablePath"], *desc.get("arguments", [])],
                                    cwd=cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=errf,
                                    stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}{prefix}"
        # The Functions host forwards requests once the handler accepts connections on the port.
        self.ready_after = procs.wait_until(
            lambda: requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200
            and time.monotonic(), "veil azure-functions", timeout=60, proc=self.proc, interval=0.005,
            log=self.stderr) - self.t0

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def api(self, token: str | None = None) -> Api:
        api = Api(self.url, token)
        # What the Functions host adds to a forwarded request.
        api.session.headers.update({"X-Forwarded-For": "203.0.113.5:50000", "X-Forwarded-Proto": "https",
                                    "X-Forwarded-Host": "veil-test.azurewebsites.net"})
        return api

    def tenant(self) -> Tenant:
        from veilkit import new_tenant
        return Tenant(self, new_tenant())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        procs.forget(self.proc)
        return self.proc.returncode


@pytest.fixture(scope="module")
def handler(tmp_path_factory):
    h = Handler(tmp_path_factory.mktemp("functions"))
    yield h
    assert h.stop() == 0, h.stderr()


def test_the_functions_zip_layout_host_json_and_function(tmp_path):
    z = package("azure-functions", tmp_path / "veil-functions.zip")
    assert entries(z) == {"host.json": 0o644, "gateway/function.json": 0o644, "veil": 0o755,
                          "veil.wasm": 0o644, "spin.toml": 0o644}
    root = unpack(z, tmp_path / "wwwroot")
    assert is_linux_x86_64(root / "veil")
    assert json.loads((root / "host.json").read_text()) == {
        "version": "2.0",
        "customHandler": {
            "description": {"defaultExecutablePath": "veil", "workingDirectory": "",
                            "arguments": ["azure-functions", "--manifest", "spin.toml"]},
            "enableForwardingHttpRequest": True,
        },
        "extensions": {"http": {"routePrefix": ""}},
    }
    assert json.loads((root / "gateway/function.json").read_text()) == {"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous",
         "methods": ["get", "post", "put", "patch", "delete", "head", "options"], "route": "{*path}"},
        {"type": "http", "direction": "out", "name": "res"},
    ]}
    assert '\nsource = "veil.wasm"\n' in (root / "spin.toml").read_text()


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_protect_unprotect_and_mask_through_forwarded_requests(handler, prefix):
    handler.url = f"http://127.0.0.1:{handler.port}{prefix}"
    t = handler.tenant()
    name = t.create_scheme(mask={"rule": "keep_last", "n": 4, "char": "*"})["name"]
    values = ["4111111111111111", "5500005555555559"]
    tokens = t.protect(name, values)
    assert t.unprotect(tokens) == values
    assert t.mask(name, values) == ["************1111", "************5559"]
    # The component's errors pass through unchanged.
    err(t.app.post("/v1/protect", {"scheme": name, "values": ["a"] * 1001}), 413, "batch_too_large")
    err(t.as_("app").post("/v1/nope", {}), 404, "not_found")
    # `/api` alone is the root, not a route of its own; `/apiv1/...` is no prefix.
    assert ok(requests.get(f"http://127.0.0.1:{handler.port}{prefix}/healthz", timeout=10)) == {"status": "ok"}
    r = requests.get(f"http://127.0.0.1:{handler.port}/apiv1/schemes", timeout=10)
    err(r, 404, "not_found")


def test_app_settings_by_plain_name_and_the_managed_identity(tmp_path):
    env = app_settings(tmp_path)
    env.update({"MAX_BATCH": "2", "IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token", "IDENTITY_HEADER": "h"})
    h = Handler(tmp_path / "h", env=env)
    try:
        t = h.tenant()
        name = t.create_scheme()["name"]
        e = err(t.app.post("/v1/protect", {"scheme": name, "values": ["a"] * 3}), 413, "batch_too_large")
        assert e["message"] == "3 values is more than max_batch (2)"
        log = h.stderr()
        # IDENTITY_ENDPOINT's origin is allowed (the manifest's allow_identity_url), the rest stays .invalid.
        assert "veil: allowed outbound hosts: https://kms.invalid, https://auth.invalid, http://127.0.0.1:9, " \
               "https://jwks.invalid, " in log, log
    finally:
        assert h.stop() == 0, h.stderr()


def test_the_handler_needs_its_port(tmp_path):
    h_env = app_settings(tmp_path)
    root = unpack(package("azure-functions", tmp_path / "f.zip"), tmp_path / "wwwroot")
    r = subprocess.run([root / "veil", "azure-functions", "--manifest", "spin.toml"], cwd=root, env=h_env,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == ("veil: error: FUNCTIONS_CUSTOMHANDLER_PORT is not set: `veil azure-functions` is "
                        "started by the Functions host\n")
