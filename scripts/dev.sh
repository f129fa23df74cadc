#!/usr/bin/env bash
# Quick start: build Veil and serve it on the embedded default (our wasmtime host + SQLite +
# the dev-only local KEK). Dev secrets are generated once into .veil-dev/ and reused, so values
# protected in one run still unprotect after a restart.
#   VEIL_LISTEN=127.0.0.1:3000  where to listen
#   VEIL_DEV_STATE=.veil-dev     where the dev secrets and the SQLite database live
set -euo pipefail
cd "$(dirname "$0")/.."
listen="${VEIL_LISTEN:-127.0.0.1:3000}"
state="${VEIL_DEV_STATE:-.veil-dev}"

scripts/build.sh

mkdir -p "$state"
chmod 700 "$state"
secret_file() { # name bytes: a random base64 secret kept in $state/name
  if [ ! -s "$state/$1" ]; then
    (umask 077 && head -c "$2" /dev/urandom | base64 | tr -d '\n' > "$state/$1")
  fi
  cat "$state/$1"
}
export SPIN_VARIABLE_DEV_MODE=true
SPIN_VARIABLE_LOCAL_KEK="$(secret_file local_kek 32)"
SPIN_VARIABLE_JWT_HS256_SECRET="$(secret_file jwt_hs256_secret 48)"
SPIN_VARIABLE_SUBJECT_DIGEST_KEY="$(secret_file subject_digest_key 32)"
SPIN_VARIABLE_ERASURE_SIGNING_KEY="$(secret_file erasure_signing_key 32)"
SPIN_VARIABLE_AUDIT_MASTER_KEY="$(secret_file audit_master_key 32)"
export SPIN_VARIABLE_LOCAL_KEK SPIN_VARIABLE_JWT_HS256_SECRET SPIN_VARIABLE_SUBJECT_DIGEST_KEY \
  SPIN_VARIABLE_ERASURE_SIGNING_KEY SPIN_VARIABLE_AUDIT_MASTER_KEY
export SPIN_VARIABLE_ERASURE_SIGNING_KID="${SPIN_VARIABLE_ERASURE_SIGNING_KID:-dev-erasure-1}"

token="$(target/release/veil token --manifest spin.toml --tenant demo --roles admin,app,support,analyst,privacy --ttl 8h)"
url="http://$listen"
cat <<MSG

  Veil (DEV MODE: local KEK and HS256 tokens; never use this for real data)
  URL:    $url
  token:  $token   (tenant demo, roles admin,app,support,analyst,privacy, valid 8 h)

  Try it from another terminal:

  export VEIL=$url TOKEN=$token
  curl -s -X POST \$VEIL/v1/schemes -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d '{"name":"pii","kek":{"provider":"local"},"policy":{"protect":["app"],"unprotect":["support"],"mask":["analyst"]},"mask":{"rule":"keep_last","n":4}}'
  curl -s -X POST \$VEIL/v1/protect -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d '{"scheme":"pii","values":["4111111111111111"]}'
  curl -s -X POST \$VEIL/v1/unprotect -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d '{"values":["<paste the token from protect>"]}'

MSG
exec target/release/veil serve --manifest spin.toml --listen "$listen" --state-dir "$state"
