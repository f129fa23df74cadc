"""The README's first command, run as a user would: scripts/dev.sh prints a URL, a dev token and
curl commands; running those commands creates a scheme, protects and unprotects a value; after a
restart the value still comes back byte-identical."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from veilkit import REPO, free_port

pytestmark = pytest.mark.store("sqlite")  # the quick start runs on the embedded default


def start_dev(state, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_VARIABLE_")}
    env.update(VEIL_LISTEN=f"127.0.0.1:{port}", VEIL_DEV_STATE=str(state))
    proc = subprocess.Popen([str(REPO / "scripts/dev.sh")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    lines = []
    deadline = time.monotonic() + 600  # the first run may build
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "veil: listening on" in line:
            return proc, "".join(lines)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise AssertionError("scripts/dev.sh never started serving:\n" + "".join(lines))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    with proc.stdout:
        assert proc.wait(30) == 0


def sh(script: str) -> str:
    return subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True, timeout=60).stdout


def test_readme_quick_start_survives_a_restart(tmp_path):
    state = tmp_path / "dev-state"
    port = free_port()
    proc, banner = start_dev(state, port)
    try:
        lines = [line.strip() for line in banner.splitlines()]
        assert "Veil (DEV MODE: local KEK and HS256 tokens; never use this for real data)" in lines, banner
        assert f"URL:    http://127.0.0.1:{port}" in lines, banner
        export = next(l.strip() for l in banner.splitlines() if l.strip().startswith("export VEIL="))
        curls = re.findall(r"(curl -s .*?\\\n\s+-d '[^']*')", banner)
        assert len(curls) == 3, banner
        created = json.loads(sh(f"{export}\n{curls[0]}"))
        assert created["name"] == "pii" and created["current_version"] == 1
        protected = json.loads(sh(f"{export}\n{curls[1]}"))
        token = protected["results"][0]["value"]
        unprotect = curls[2].replace("<paste the token from protect>", token)
        assert json.loads(sh(f"{export}\n{unprotect}")) == {"results": [{"value": "4111111111111111"}]}
    finally:
        stop(proc)

    proc, banner = start_dev(state, port)
    try:
        export = next(l.strip() for l in banner.splitlines() if l.strip().startswith("export VEIL="))
        again = json.loads(sh(f"{export}\n{unprotect}"))
        assert again == {"results": [{"value": "4111111111111111"}]}
    finally:
        stop(proc)
