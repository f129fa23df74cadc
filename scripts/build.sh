#!/usr/bin/env bash
# Builds the component (wasm32-wasip2) and the `veil` host, adding the wasm target if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "==> adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2
fi
echo "==> building the component (target/wasm32-wasip2/release/veil.wasm)" >&2
cargo build --release --locked --target wasm32-wasip2 -p veil
echo "==> building the host (target/release/veil)" >&2
cargo build --release --locked -p veil-host
