"""docs/erasure.md: every `sh` block, run as written (bash, curl, jq, the `veil` CLI) in order
against a real server, with its output checked; then the certificates it wrote are checked
independently (harness/veilformat.py)."""
import json
import os
import re
import subprocess

from harness import veilformat as vf
from veilkit import REPO, binaries, hs256, item_errors, ok


def blocks() -> list[str]:
    return [textwrap_dedent(b) for b in re.findall(r"```sh\n(.*?)```", (REPO / "docs/erasure.md").read_text(), re.S)]


def textwrap_dedent(block: str) -> str:
    """A block inside a list item is indented; the shell does not care, but keep it plain."""
    lines = block.splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return "\n".join(x[indent:] for x in lines) + "\n"


def test_the_erasure_commands_work_as_written(server, tenant, tmp_path):
    scheme = tenant.create_scheme()["name"]
    gone = tenant.protect(scheme, ["erased with its subject"], subject="user-42")
    plain = tenant.protect(scheme, ["erased with its scheme"])
    veil, _ = binaries()
    env = {**os.environ, "VEIL_URL": server.url, "PRIVACY_TOKEN": hs256(tenant.id, ["privacy"]),
           "ADMIN_TOKEN": hs256(tenant.id, ["admin"]), "SUBJECT": "user-42", "SCHEME": scheme,
           "TENANT": tenant.id, "PATH": f"{veil.parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(block: str) -> list[str]:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, (block, r.stdout, r.stderr)
        return r.stdout.strip().splitlines()

    steps = blocks()
    assert len(steps) == 6, steps
    assert run(steps[0]) == ["subject", "true"]  # the subject erased
    cert = json.loads((tmp_path / "certificate.json").read_text())
    assert run(steps[1]) == [cert["certificate_id"]]  # fetched again by its id
    out = run(steps[2])  # keys downloaded, certificate verified
    assert len(out) == 1 and cert["certificate_id"] in out[0] and "verifies" in out[0], out
    keys = json.loads((tmp_path / "keys.json").read_text())
    assert vf.verify_certificate(cert, keys)
    out = run(steps[3])  # verified with the URL
    assert len(out) == 1 and cert["certificate_id"] in out[0], out
    assert item_errors(tenant.unprotect_results(gone, subject="user-42")) == ["subject_erased"]

    assert run(steps[4]) == ["scheme", "1"]  # the scheme erased: its one version
    scheme_cert = json.loads((tmp_path / "scheme-certificate.json").read_text())
    assert vf.verify_certificate(scheme_cert, keys) and scheme_cert["key_versions"] == {scheme: [1]}
    assert item_errors(tenant.unprotect_results(plain)) == ["key_version_destroyed"]

    out = run(steps[5])  # the tenant erased, and its certificate verified against the URL
    assert out[:2] == ["tenant", "0"] and "verifies" in out[2], out
    tenant_cert = json.loads((tmp_path / "tenant-certificate.json").read_text())
    assert vf.verify_certificate(tenant_cert, keys)
    assert (tenant_cert["tenant"], tenant_cert["schemes"]) == (tenant.id, [scheme])
    assert ok(tenant.admin.get(f"/v1/erasures/{tenant_cert['certificate_id']}")) == tenant_cert
