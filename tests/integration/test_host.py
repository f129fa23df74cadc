"""The host's own promises: a guest trap becomes a JSON 500 and the host keeps serving; SIGTERM
stops it cleanly; `veil token` is refused outside dev mode."""
import os
import re
import subprocess
import threading

import pytest
import requests

from veilkit import REPO, base_env, binaries, write_manifest

LISTEN = re.compile(r"veil: listening on (http://\S+)")


def serve(tmp_path, *args, **env):
    veil, wasm = binaries()
    manifest = write_manifest(tmp_path, wasm)
    proc = subprocess.Popen(
        [str(veil), "serve", "--manifest", str(manifest), "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path / "state"), *args],
        stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr", "w"), stdin=subprocess.DEVNULL,
        env=base_env(**env), text=True)
    line = proc.stdout.readline()
    m = LISTEN.search(line)
    assert m, f"no listening line: {line!r}\n{(tmp_path / 'stderr').read_text()}"
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, m.group(1)


@pytest.mark.parametrize("reuse", ["1", "8"])
def test_a_guest_trap_is_a_json_500_and_the_host_keeps_serving(tmp_path, reuse):
    # 24 MiB of linear memory per instance, but a body limit far above it: reading a 40 MB body
    # makes the guest run out of memory and trap. With instance reuse, the trapped instance is
    # dropped, never served again.
    proc, url = serve(tmp_path, "--max-memory-mib", "24", "--reuse-instances", reuse, max_body_bytes="60000000")
    try:
        r = requests.post(f"{url}/v1/protect", data=b"x" * 40_000_000,
                          headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["code"] == "internal"
        for _ in range(3):
            assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        assert "the component trapped" in (tmp_path / "stderr").read_text()
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_token_is_refused_outside_dev_mode(tmp_path):
    veil, wasm = binaries()
    manifest = write_manifest(tmp_path, wasm)
    env = base_env(dev_mode="false")
    r = subprocess.run([str(veil), "token", "--manifest", str(manifest), "--tenant", "t", "--roles", "admin"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2 and r.stdout == "" and "dev" in r.stderr.lower()
    ok = subprocess.run([str(veil), "token", "--manifest", str(manifest), "--tenant", "t", "--roles", "admin"],
                        capture_output=True, text=True, env=base_env(), timeout=30)
    assert ok.returncode == 0 and ok.stdout.count(".") == 2
