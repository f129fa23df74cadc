"""docs/rotation.md: every `sh` block of the runbook, run as written (bash, curl, jq) in order
against a real server, with its output checked."""
import os
import re
import subprocess

from veilkit import REPO, TOKEN_RE, binaries, hs256


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (REPO / "docs/rotation.md").read_text(), re.S)


def test_the_runbook_commands_work_as_written(server, tenant):
    name = tenant.create_scheme()["name"]
    old = tenant.protect(name, ["kept through rotation"])[0]
    env = {**os.environ, "VEIL_URL": server.url, "ADMIN_TOKEN": hs256(tenant.id, ["admin"]), "SCHEME": name,
           "OLD_TOKEN": old}
    # `veil rekey` runs beside the deployment: its settings, manifest and state directory, `veil` on PATH
    env.update({**server.env, "TENANT": tenant.id, "VEIL_MANIFEST": str(server.manifest),
                "VEIL_STATE_DIR": str(server.state_dir), "PATH": f"{binaries()[0].parent}:{os.environ['PATH']}"})
    env.pop("VEIL_TOKEN", None)

    def run(block: str) -> str:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, (block, r.stdout, r.stderr)
        return r.stdout.strip()

    steps = blocks()
    assert len(steps) == 8, steps
    assert run(steps[0]) == "2"  # rotated
    assert run(steps[1]) == "30d"
    new = run(steps[2])  # rewrapped to version 2
    assert re.fullmatch(TOKEN_RE.format(scheme=name, version=2), new), new
    assert run(steps[3]).splitlines() == ['[1,"active"]', '[2,"active"]']
    assert run(steps[4]) == "2"  # minimum raised to the current version
    assert run(steps[5]) == "destroyed"
    assert run(steps[6]) == "[2]"  # rekey: the one version left
    assert run(steps[7]) == "rekey: 1 of 1 schemes rekeyed, 0 failed"  # veil rekey: every scheme of the tenant
    assert tenant.unprotect([new]) == ["kept through rotation"]
    results = tenant.unprotect_results([old])
    assert results[0]["error"]["code"] == "key_version_destroyed", results
