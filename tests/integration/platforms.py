"""The serverless packages (scripts/package.sh) as the platforms see them: build one from the
built binaries, unpack it as the platform would (modes kept), and the environment a platform
gives the process (its own variables, then the app settings)."""
from __future__ import annotations

import os
import stat
import subprocess
import zipfile
from pathlib import Path

import store
from veilkit import REPO, HarnessError, base_env, binaries


def package(kind: str, out: Path) -> Path:
    """Runs `scripts/package.sh KIND OUT` on the built binaries; returns OUT."""
    veil, wasm = binaries()
    env = dict(os.environ, VEIL_BIN=str(veil), VEIL_WASM=str(wasm))
    r = subprocess.run(["bash", str(REPO / "scripts/package.sh"), kind, str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise HarnessError(f"scripts/package.sh {kind}: exit {r.returncode}\n{r.stderr}")
    assert r.stdout == f"{out}\n", r.stdout
    return out


def entries(zip_path: Path) -> dict[str, int]:
    """Each file in the zip with its unix mode bits (permissions only)."""
    with zipfile.ZipFile(zip_path) as z:
        return {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in z.infolist()}


def unpack(zip_path: Path, dest: Path) -> Path:
    """Extracts like the platforms do: the stored unix modes are applied (zipfile alone drops them)."""
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            path = Path(z.extract(info, dest))
            os.chmod(path, stat.S_IMODE(info.external_attr >> 16))
    return dest


def is_linux_x86_64(path: Path) -> bool:
    head = path.read_bytes()[:20]
    return head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1 and head[18:20] == b"\x3e\x00"


def app_settings(tmp: Path, **spin_variables) -> dict[str, str]:
    """The dev-mode settings of every test server plus the store's, as a platform passes them
    (environment variables); the packaged manifest takes its outbound hosts from `allow_*`
    variables, so PostgreSQL's goes in `allow_database_url`. TMPDIR keeps the state directory
    (`<tmp>/veil`) inside the test."""
    hosts = store.allowed_outbound_hosts()
    env = base_env(**({"allow_database_url": hosts[0]} if hosts else {}), **spin_variables)
    env["TMPDIR"] = str(tmp)
    return env
