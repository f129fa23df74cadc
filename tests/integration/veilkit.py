"""The integration tests' door to the shared harness (tests/harness, which the benchmarks use
too): the same names as always, with every server pointed at the store this run tests
(store.py: VEIL_STORE=sqlite or postgres).

Keys (JWT signing keys, the local KEK, the HS256 secret) are generated once per test session,
when the harness is first imported.
"""
from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:  # tests/pytest.ini puts it there; this covers an import from elsewhere
    sys.path.insert(0, _TESTS)

import store  # noqa: E402
from harness import veil as _veil  # noqa: E402
from harness.api import (DEFAULT_POLICY, TIMEOUT, TOKEN_RE, Api, Tenant, err, item_errors,  # noqa: E402,F401
                         new_name, new_tenant, ok)
from harness.procs import HarnessError, free_port  # noqa: E402,F401
from harness.tokens import (ED_KEY, EC_KEY, HS256_SECRET, JWKS, LOCAL_KEK, OTHER_RSA_KEY,  # noqa: E402,F401
                            RSA_KEY, RSA_PUBLIC_PEM, alg_none, b64url, claims, eddsa, es256, hs256,
                            hs256_with_rsa_public_pem, raw_jwt, rs256)
from harness.veil import LISTEN_RE, REPO, binaries  # noqa: E402,F401

__all__ = [  # the harness's names, as the tests have always imported them from here
    "DEFAULT_POLICY", "TIMEOUT", "TOKEN_RE", "Api", "Tenant", "err", "item_errors", "new_name", "new_tenant", "ok",
    "HarnessError", "free_port", "ED_KEY", "EC_KEY", "HS256_SECRET", "JWKS", "LOCAL_KEK", "OTHER_RSA_KEY", "RSA_KEY",
    "RSA_PUBLIC_PEM", "alg_none", "b64url", "claims", "eddsa", "es256", "hs256", "hs256_with_rsa_public_pem",
    "raw_jwt", "rs256", "LISTEN_RE", "REPO", "binaries", "base_env", "write_manifest", "VeilServer",
]


def base_env(**overrides: str) -> dict[str, str]:
    """The host's environment for this run's store, with `overrides` as Spin variables."""
    return _veil.base_env(store.server_env(), **overrides)


def write_manifest(dest_dir: Path, wasm: Path, allowed_hosts: list[str] | None = None) -> Path:
    """A copy of spin.toml serving `wasm`; `allowed_outbound_hosts` = the store's entries plus
    `allowed_hosts` (e.g. a KMS emulator's `http://127.0.0.1:PORT`)."""
    return _veil.write_manifest(dest_dir, wasm, store.allowed_outbound_hosts() + list(allowed_hosts or []))


class VeilServer(_veil.VeilServer):
    """One `veil serve` process on a free loopback port, on this run's store:
    VeilServer(workdir, state_dir=None, name="veil", raw_env=None, allowed_hosts=None,
    extra_args=(), **Spin variable overrides)."""

    def __init__(self, workdir: Path, state_dir: Path | None = None, name="veil", raw_env: dict | None = None,
                 allowed_hosts: list[str] | None = None, extra_args=(), **env_overrides):
        super().__init__(workdir, state_dir, name, raw_env,
                         store.allowed_outbound_hosts() + list(allowed_hosts or []), extra_args,
                         layers=[store.server_env()], **env_overrides)
