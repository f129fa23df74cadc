"""Spin 3.x: the built component imports nothing a Spin 3.x host lacks, and the shipped spin.toml
(every variable, secrets marked, outbound hosts templated from variables) is served as it is.

The allow-list is the stable part of the `platform` world of spin:up@3.6.0, the world spin-sdk
5.2 targets (its wit/world.wit): wasi:cli/imports@0.2.6 with clocks, filesystem, sockets, random
and io; wasi:http/outgoing-handler@0.2.6 (and the types it uses); fermyon:spin/platform@2.0.0;
wasi:keyvalue/imports@0.2.0-draft2; spin:postgres/postgres@3.0.0 and @4.0.0;
spin:sqlite/sqlite@3.0.0; wasi:config/store@0.2.0-draft-2024-09-27. Spin links WASI 0.2.x
imports up to 0.2.6 by semver. The unstable WASI 0.3 release candidates are left out on purpose.
"""
from __future__ import annotations

import re
import subprocess
import tomllib

from veilkit import REPO, VeilServer, binaries
from harness import veil as harness_veil

WASI_02 = {
    "cli": {"environment", "exit", "stdin", "stdout", "stderr", "terminal-input", "terminal-output",
            "terminal-stdin", "terminal-stdout", "terminal-stderr"},
    "clocks": {"monotonic-clock", "wall-clock"},
    "filesystem": {"types", "preopens"},
    "sockets": {"network", "instance-network", "udp", "udp-create-socket", "tcp", "tcp-create-socket",
                "ip-name-lookup"},
    "random": {"random", "insecure", "insecure-seed"},
    "io": {"error", "poll", "streams"},
    "http": {"types", "outgoing-handler"},
}
SPIN_3 = {f"fermyon:spin/{i}@2.0.0" for i in
          ("llm", "redis", "mqtt", "postgres", "mysql", "sqlite", "key-value", "variables", "rdbms-types")}
SPIN_3 |= {f"wasi:keyvalue/{i}@0.2.0-draft2" for i in ("store", "atomics", "batch")}
SPIN_3 |= {"spin:postgres/postgres@3.0.0", "spin:postgres/postgres@4.0.0", "spin:sqlite/sqlite@3.0.0",
           "wasi:config/store@0.2.0-draft-2024-09-27"}
WASI_RE = re.compile(r"wasi:([a-z]+)/([a-z-]+)@0\.2\.([0-6])")


def provided_by_spin_3(name: str) -> bool:
    m = WASI_RE.fullmatch(name)
    if m:
        return m.group(2) in WASI_02.get(m.group(1), set())
    return name in SPIN_3


def component_imports() -> list[str]:
    veil, wasm = binaries()
    r = subprocess.run([veil, "imports", wasm], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    return r.stdout.splitlines()


def test_the_component_imports_only_what_spin_3_provides():
    imports = component_imports()
    assert imports, "no imports listed"
    assert len(imports) == len(set(imports)), imports
    outside = [i for i in imports if not provided_by_spin_3(i)]
    assert outside == [], f"imports Spin 3.x does not provide: {outside}"
    # What Veil needs from Spin, by name: storage, variables, the cache store, outbound HTTP.
    for needed in ("spin:sqlite/sqlite@3.0.0", "spin:postgres/postgres@4.0.0", "fermyon:spin/variables@2.0.0",
                   "fermyon:spin/key-value@2.0.0"):
        assert needed in imports, imports
    assert any(i.startswith("wasi:http/outgoing-handler@0.2.") for i in imports), imports


def test_the_allow_list_refuses_what_spin_lacks():
    for name in ("wasi:http/outgoing-handler@0.2.7", "wasi:cli/run@0.2.0", "wasi:nn/tensor@0.2.0",
                 "spin:postgres/postgres@5.0.0", "fermyon:spin/key-value@3.0.0", "veil:gateway/protection@0.1.0"):
        assert not provided_by_spin_3(name), name
    assert provided_by_spin_3("wasi:io/streams@0.2.0")


def test_the_shipped_manifest_declares_every_variable_and_marks_secrets():
    m = tomllib.loads((REPO / "spin.toml").read_text())
    declared = m["variables"]
    component = m["component"]["veil"]
    assert component["variables"] == {k: f"{{{{ {k} }}}}" for k in declared if not k.startswith("allow_")}
    secrets = {k for k, v in declared.items() if v.get("secret")}
    assert secrets == {"local_kek", "database_url", "jwt_hs256_secret", "aws_secret_access_key", "aws_session_token",
                       "azure_client_secret", "azure_identity_header", "dek_cache_key", "jwt_cache_key",
                       "subject_digest_key", "erasure_signing_key", "job_db", "audit_master_key"}
    assert all("default" in v and not v.get("required") for v in declared.values())
    assert component["allowed_outbound_hosts"] == [
        "{{ allow_kms_url }}", "{{ allow_auth_url }}", "{{ allow_identity_url }}", "{{ allow_jwks_url }}",
        "{{ allow_database_url }}", "{{ allow_job_database_url }}"]
    assert (component["sqlite_databases"], component["key_value_stores"]) == (["default"], ["default"])


def test_the_shipped_manifest_is_served_with_its_templated_outbound_hosts(tmp_path, monkeypatch):
    # Only `source` changes: allowed_outbound_hosts stays as shipped (no harness override).
    _, wasm = binaries()
    original = harness_veil.write_manifest

    def as_shipped(dest_dir, wasm_path, outbound=None):
        path = original(dest_dir, wasm_path, [])
        text = (REPO / "spin.toml").read_text()
        text = re.sub(r'(?m)^(\s*source\s*=\s*)"[^"\n]*"', lambda mm: mm.group(1) + f'"{wasm_path}"', text)
        path.write_text(text)
        return path

    monkeypatch.setattr(harness_veil, "write_manifest", as_shipped)
    s = VeilServer(tmp_path, name="shipped", allow_kms_url="https://kms.eu-west-1.amazonaws.com")
    try:
        log = s.stderr()
        assert ("veil: allowed outbound hosts: https://kms.eu-west-1.amazonaws.com, https://auth.invalid, "
                "http://identity.invalid, https://jwks.invalid, ") in log, log
    finally:
        s.stop()
