#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests, and prints the URL the
# tests should use. Uses the one already running; else starts the installed cluster; else
# installs PostgreSQL from the distribution (Debian/Ubuntu) with trust auth on loopback.
set -euo pipefail
host=127.0.0.1 port=5432
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 || ! ready; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "==> installing PostgreSQL (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
  fi
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
    echo "==> allowing trust auth on 127.0.0.1 for the tests ($hba)" >&2
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  echo "==> starting PostgreSQL $version" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || pg_ctlcluster "$version" main reload >&2 || true
  for _ in $(seq 1 60); do ready && break; sleep 0.5; done
  ready || { echo "PostgreSQL did not start on $host:$port" >&2; exit 1; }
fi
if ! psql -h "$host" -p "$port" -U postgres -d test -qtAc 'select 1' >/dev/null 2>&1; then
  psql -h "$host" -p "$port" -U postgres -d postgres -qc 'CREATE DATABASE test' >&2
fi
echo "postgres://postgres@$host:$port/test"
