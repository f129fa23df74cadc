"""Writes the fuzz targets' seed corpora (fuzz/run.sh calls it): inputs taken from the tests'
vectors and fixtures, made at run time so that nothing binary is committed.

    python3 fuzz/seeds.py OUT_DIR    # OUT_DIR/<target>/<n> for every target

Sources: tests/vectors/veil-token-v1.txt (tokens), spin.toml (manifest), tests/keys (PEM keys),
the test harness's JWKS and JWT minting (tests/harness/tokens.py, when its packages are
installed: the venv of scripts/test.sh), and the request and answer shapes of docs/api.md and
docs/kms.md (bodies, KMS answers).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# api_body: the first byte picks the route (api::fuzzing::BodyRoute::ALL order)
CREATE, PROTECT, UNPROTECT, MASK, REWRAP, UPDATE, REKEY = 0, 1, 2, 3, 4, 5, 6
ERASE_SCHEME, ERASE_TENANT, ERASE_SUBJECTS, JOB, JOB_STEP, JOB_CANCEL = 7, 8, 9, 10, 11, 12
SNOWFLAKE, SNOWFLAKE_SCHEME, BIGQUERY, API_KEY = 13, 14, 15, 16


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def tokens() -> list[bytes]:
    lines = (REPO / "tests/vectors/veil-token-v1.txt").read_text().splitlines()
    found = [line.split(": ", 1)[1].encode() for line in lines if line.startswith("token: ")]
    assert found, "no tokens in tests/vectors/veil-token-v1.txt"
    return found + [b"veil.2.pii.1.AAAA", b"veil.1.pii.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]


def api_bodies(tokens_: list[bytes]) -> list[bytes]:
    token = tokens_[0].decode()
    bodies = [
        (CREATE, {"name": "pii", "kek": {"provider": "local"},
                  "policy": {"protect": ["app"], "unprotect": ["support"], "mask": ["analyst"]},
                  "mask": {"rule": "keep_last", "n": 4, "char": "*"}, "description": "cards"}),
        (CREATE, {"name": "mail", "algorithm": "xchacha20-poly1305",
                  "kek": {"provider": "aws-kms", "key_id": "alias/veil"}, "mask": {"rule": "email"}}),
        (CREATE, {"name": "vault", "algorithm": "chacha20-poly1305",
                  "kek": {"provider": "azure-keyvault", "key_url": "https://v.vault.azure.net/keys/k"},
                  "mask": {"rule": "fixed", "length": 8, "char": "#"}}),
        (CREATE, {"name": "h", "kek": {"provider": "local"}, "mask": {"rule": "hmac"}}),
        (PROTECT, {"scheme": "pii", "values": ["4111111111111111", ""]}),
        (PROTECT, {"scheme": "pii", "values": ["AAEC", "AA=="], "encoding": "base64",
                   "subject": "user-1", "context": "orders"}),
        (UNPROTECT, {"values": [token], "subject": "user-1", "context": "orders", "encoding": "utf8"}),
        (UNPROTECT, {"values": [token, "not-a-token"], "encoding": "base64"}),
        (MASK, {"scheme": "pii", "values": ["4111111111111111", "jane.doe@example.com"]}),
        (UNPROTECT, {"scheme": "pii", "values": [token]}),
        (REWRAP, {"scheme": "pii", "values": [token], "subject": "user-1", "context": "orders"}),
        (UPDATE, {"min_decryption_version": 2}),
        (REKEY, {"kek": {"provider": "aws-kms", "key_id": "alias/veil-2"}}),
        (ERASE_SCHEME, {"confirm": "pii"}),
        (ERASE_TENANT, {"confirm": "acme"}),
        (ERASE_SUBJECTS, {"subjects": ["user-1", "user-2"]}),
        (JOB, {"scheme": "pii", "database": "app", "table": "customers", "key_column": "id",
               "token_column": "card", "subject_column": "user_id", "context": "orders",
               "batch_size": 500, "target_version": 2}),
        (JOB, {"scheme": "pii", "database": "app", "table": "t", "key_column": "id",
               "token_column": "card", "batch_size": 500.0}),
        (JOB_STEP, {}),
        (JOB_CANCEL, {}),
        (SNOWFLAKE, {"data": [[0, "4111111111111111"], [1, None], [4294967295, token]]}),
        (SNOWFLAKE_SCHEME, {"data": [[3.0, "jane.doe@example.com"]], "extra": 1}),
        (BIGQUERY, {"requestId": "r-1", "caller": "//bigquery.googleapis.com/projects/p/jobs/j",
                    "sessionUser": "a@example.com", "calls": [["4111111111111111"], [None]],
                    "userDefinedContext": {"scheme": "pii", "operation": "protect"}}),
        (BIGQUERY, {"calls": [[token]],
                    "userDefinedContext": {"scheme": "pii", "operation": "unprotect", "on_error": "fail"}}),
        (API_KEY, {"label": "warehouse", "roles": ["app", "analyst"], "expires_at": "2027-01-31T00:00:00Z"}),
        (API_KEY, {"label": "cron", "roles": []}),
    ]
    empty = [bytes([r]) for r in (REKEY, ERASE_SCHEME, ERASE_TENANT, JOB_STEP, JOB_CANCEL)]
    return [bytes([route]) + json.dumps(body).encode() for route, body in bodies] + empty


def harness_tokens():
    """The test harness's key material, when its packages (PyJWT, cryptography) are there."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from harness import tokens as t  # noqa: PLC0415
    except ImportError as e:
        print(f"seeds: tests/harness not importable ({e}); JWKS and JWT seeds from tests/keys only",
              file=sys.stderr)
        return None
    return t


def jwt_seeds(t) -> list[bytes]:
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"tenant": "acme", "roles": ["app", "support"], "sub": "u", "exp": 4102444800,
               "iat": 1795388400, "nbf": 1795388400}
    # mode 1: header 0x00 payload, signed by the target
    seeds = [b"\x01" + json.dumps(header).encode() + b"\x00" + json.dumps(payload).encode(),
             b"\x01" + json.dumps(header).encode() + b"\x00" + json.dumps(dict(payload, roles="a b")).encode()]
    if t is not None:
        for tok in (t.hs256("acme", ["app"]), t.rs256("acme", ["app"]), t.es256("acme", ["app"]),
                    t.eddsa("acme", ["app"]), t.alg_none("acme"), t.hs256_with_rsa_public_pem("acme")):
            seeds.append(b"\x00" + tok.encode())
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    sig = hmac.new(b"another-secret-another-secret-!!", signing_input.encode(), hashlib.sha256).digest()
    seeds.append(b"\x00" + f"{signing_input}.{b64url(sig)}".encode())
    return seeds


def jwks_seeds(t) -> list[bytes]:
    seeds = [b"\x01" + (REPO / "tests/keys/rsa-a.pub.pem").read_bytes()]
    seeds.append(b"\x00" + json.dumps({"keys": [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "kid": "e", "x": b64url(bytes(32)), "y": b64url(bytes(32))},
        {"kty": "OKP", "crv": "Ed25519", "key_ops": ["verify"], "x": b64url(bytes(32))},
    ]}).encode())
    if t is not None:
        seeds.append(b"\x00" + t.JWKS.encode())
        seeds.append(b"\x01" + t.RSA_PUBLIC_PEM)
    return seeds


def record(status: int, body: bytes, h1: bytes = b"", h2: bytes = b"") -> bytes:
    """One scripted answer in veil_fuzz::replies' format."""
    rest = body if not (h1 or h2) else h1 + b"\xfe" + (h2 + b"\xfe" if h2 else b"") + body
    return status.to_bytes(2, "big") + rest


def answers(records: list[bytes]) -> bytes:
    return b"\xff".join(records)


def aws_seeds() -> list[bytes]:
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    enc = json.dumps({"CiphertextBlob": base64.b64encode(b"\x01\x02\x03blob").decode(), "KeyId": arn,
                      "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}).encode()
    dec = json.dumps({"Plaintext": base64.b64encode(bytes(range(32))).decode(), "KeyId": arn}).encode()
    throttled = json.dumps({"__type": "ThrottlingException", "message": "slow down"}).encode()
    return [
        b"\x00" + answers([record(200, enc)]),
        b"\x01" + answers([record(200, dec)]),
        b"\x00" + answers([record(400, throttled, h2=b"1"), record(500, b"{}"), record(200, enc)]),
        b"\x01" + answers([record(400, b"{}", h1=b"com.amazonaws.kms#InvalidCiphertextException")]),
        b"\x01" + answers([record(400, json.dumps({"__type": "NotFoundException:http://x"}).encode())]),
        b"\x00" + answers([record(2, b""), record(3, b""), record(200, enc)]),
        b"\x00" + answers([record(403, json.dumps({"__type": "AccessDeniedException"}).encode())]),
    ]


def azure_seeds() -> list[bytes]:
    tok = json.dumps({"token_type": "Bearer", "access_token": "eyJ0eXAi.eyJhdWQi.c2ln",
                      "expires_in": 3599}).encode()
    imds = json.dumps({"access_token": "abc.def.ghi", "expires_on": "1795392000",
                       "resource": "https://vault.azure.net"}).encode()
    kid = "https://myvault.vault.azure.net/keys/k1/v1"
    wrapped = json.dumps({"kid": kid, "value": b64url(b"\x07" * 256)}).encode()
    bound = bytes(range(32)) + hashlib.sha256(b"context").digest()
    unwrapped = json.dumps({"kid": kid, "value": b64url(bound)}).encode()
    challenge = (b'Bearer authorization="https://login.microsoftonline.com/t", '
                 b'resource="https://vault.azure.net"')
    err = json.dumps({"error": {"code": "Forbidden", "message": "no"}}).encode()
    return [
        b"\x00" + answers([record(200, tok), record(200, wrapped)]),
        b"\x01" + answers([record(200, tok), record(200, unwrapped)]),
        b"\x02" + answers([record(200, imds), record(200, wrapped)]),
        b"\x04" + answers([record(200, tok), record(401, b"", h1=challenge), record(200, tok),
                           record(200, wrapped)]),
        b"\x01" + answers([record(200, tok), record(429, err, h2=b"1"), record(503, err),
                           record(200, unwrapped)]),
        b"\x00" + answers([record(400, json.dumps({"error": "invalid_client"}).encode())]),
        b"\x05" + answers([record(200, tok), record(403, err)]),
    ]


def manifests() -> list[bytes]:
    spin = (REPO / "spin.toml").read_bytes()
    small = b"""spin_manifest_version = 2
[variables]
region = { default = "eu" }
secret_key = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "veil"
[[trigger.http]]
route = { private = true }
component = "veil"
[component.veil]
source = "veil.wasm"
sqlite_databases = ["default"]
[component.veil.variables]
url = "https://{{ region }}.example.com/{{region}}"
"""
    return [spin, small, small.replace(b"required = true, ", b"")]


def main() -> None:
    out = Path(sys.argv[1])
    t = harness_tokens()
    toks = tokens()
    sets = {
        "token": toks,
        "api_body": api_bodies(toks),
        "jwt": jwt_seeds(t),
        "jwks": jwks_seeds(t),
        "aws_kms": aws_seeds(),
        "azure_keyvault": azure_seeds(),
        "manifest": manifests(),
    }
    for name, seeds in sets.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        for i, s in enumerate(seeds):
            (d / f"seed-{i:02}").write_bytes(s)
        print(f"seeds: {name}: {len(seeds)}", file=sys.stderr)


if __name__ == "__main__":
    main()
