"""The host's own promises: a guest trap becomes a JSON 500 and the host keeps serving; SIGTERM
stops it cleanly; `veil token` is refused outside dev mode."""
import subprocess
import time

import jwt
import pytest
import requests

from veilkit import HS256_SECRET, VeilServer, base_env, binaries, err, ok, write_manifest


@pytest.mark.parametrize("reuse", ["1", "8"])
def test_a_guest_trap_is_a_json_500_and_the_host_keeps_serving(tmp_path, reuse):
    # 24 MiB of linear memory per instance, but a body limit far above it: reading a 40 MB body
    # makes the guest run out of memory and trap. With instance reuse, the trapped instance is
    # dropped, never served again.
    s = VeilServer(tmp_path, name="trap", extra_args=["--max-memory-mib", "24", "--reuse-instances", reuse],
                   max_body_bytes="60000000")
    r = requests.post(f"{s.url}/v1/protect", data=b"x" * 40_000_000,
                      headers={"content-type": "application/json"}, timeout=60)
    err(r, 500, "internal")
    for _ in range(3):
        assert ok(requests.get(f"{s.url}/healthz", timeout=10)) == {"status": "ok"}
    s.stop()  # SIGTERM: exit code 0
    trapped = [line for line in s.stderr(10**6).splitlines() if "the component trapped" in line]
    assert len(trapped) == 1 and trapped[0].startswith("veil: POST /v1/protect: the component trapped: "), trapped


def test_token_is_refused_outside_dev_mode(tmp_path):
    veil, wasm = binaries()
    manifest = write_manifest(tmp_path, wasm)
    cmd = [str(veil), "token", "--manifest", str(manifest), "--tenant", "t", "--roles", "admin"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=base_env(dev_mode="false"), timeout=30)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "veil: error: refusing to issue a dev token: the `dev_mode` variable is not `true`\n"
    before = int(time.time())
    good = subprocess.run(cmd, capture_output=True, text=True, env=base_env(), timeout=30)
    assert (good.returncode, good.stderr) == (0, "")
    token = good.stdout.strip()
    assert good.stdout == token + "\n"
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, HS256_SECRET, algorithms=["HS256"])  # signed with the dev secret
    assert set(claims) == {"sub", "tenant", "roles", "iat", "nbf", "exp"}
    assert (claims["sub"], claims["tenant"], claims["roles"]) == ("dev", "t", ["admin"])
    assert before <= claims["iat"] == claims["nbf"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 3600  # the default --ttl 1h


@pytest.mark.parametrize("when", ["at_once", "after_first_answer"])
def test_sigterm_right_after_start_or_the_first_answer_exits_0(tmp_path, when):
    # The signal handlers are installed before the `listening` line: no window in which SIGTERM
    # still kills the process (exit -15) instead of stopping it.
    s = VeilServer(tmp_path, name=f"sigterm-{when}")
    if when == "after_first_answer":
        assert ok(requests.get(f"{s.url}/healthz", timeout=10)) == {"status": "ok"}
    assert s.stop(check=False) == 0, s.stderr()
