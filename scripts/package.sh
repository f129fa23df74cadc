#!/usr/bin/env bash
# Builds a deployable zip of the one component and the `veil` host for a serverless platform:
#
#   scripts/package.sh azure-functions [OUT.zip]   (default dist/veil-azure-functions.zip)
#     host.json, gateway/function.json (the catch-all HTTP function), veil (the host, linux
#     x86-64), veil.wasm, spin.toml                 docs/deploy/azure-functions.md
#   scripts/package.sh lambda [OUT.zip]            (default dist/veil-lambda.zip)
#     bootstrap (the host, linux x86-64), veil.wasm, spin.toml      docs/deploy/aws-lambda.md
#
# It packages what is built (scripts/build.sh builds both; VEIL_BIN / VEIL_WASM point elsewhere)
# and never builds itself. The packaged spin.toml is the repository's with `source = "veil.wasm"`.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/package.sh azure-functions|lambda [OUT.zip]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
kind="$1"
case "$kind" in
  azure-functions) out="${2:-dist/veil-azure-functions.zip}" ;;
  lambda) out="${2:-dist/veil-lambda.zip}" ;;
  *) usage ;;
esac
bin="${VEIL_BIN:-target/release/veil}"
wasm="${VEIL_WASM:-target/wasm32-wasip2/release/veil.wasm}"
for f in "$bin" "$wasm"; do
  if [ ! -f "$f" ]; then
    echo "package.sh: $f is missing: run scripts/build.sh first (or set VEIL_BIN / VEIL_WASM)" >&2
    exit 1
  fi
done
mkdir -p "$(dirname "$out")"

python3 - "$kind" "$out" "$bin" "$wasm" <<'PY'
import re
import sys
import zipfile
from pathlib import Path

kind, out, binary, wasm = sys.argv[1:]
elf = Path(binary).read_bytes()[:20]
# ELF, 64-bit, little-endian, e_machine 0x3e (x86-64): what both platforms run.
if not (elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1 and elf[18:20] == b"\x3e\x00"):
    sys.exit(f"package.sh: {binary} is not a linux x86-64 executable")
manifest, n = re.subn(r'(?m)^(\s*source\s*=\s*)"[^"\n]*"', r'\1"veil.wasm"', Path("spin.toml").read_text())
if n != 1:
    sys.exit("package.sh: spin.toml must have exactly one `source = \"...\"` line")

# (name in the zip, bytes, unix mode); a fixed date so that the same inputs give the same zip.
files = [("veil.wasm", Path(wasm).read_bytes(), 0o644), ("spin.toml", manifest.encode(), 0o644)]
if kind == "azure-functions":
    root = Path("host-adapters/azure-functions")
    files = [("host.json", (root / "host.json").read_bytes(), 0o644),
             ("gateway/function.json", (root / "gateway/function.json").read_bytes(), 0o644),
             ("veil", Path(binary).read_bytes(), 0o755)] + files
else:
    files = [("bootstrap", Path(binary).read_bytes(), 0o755)] + files

tmp = Path(out + ".tmp")
with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
    for name, data, mode in files:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.create_system = 3  # unix: the mode below is honoured when unpacked
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, data)
tmp.replace(out)
print(out)
PY
