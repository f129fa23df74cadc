"""The session's secrets and JWT minting.

The local KEK, the HS256 secret and the RSA, EC and Ed25519 signing keys are generated once per
process, when this module is first imported; `JWKS` publishes the public halves under the kids
`rsa1`, `ec1` and `ed1`, and `base_env` (harness.veil) hands all of them to every server.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n: int, length: int | None = None) -> str:
    length = length or (n.bit_length() + 7) // 8
    return b64url(n.to_bytes(length, "big"))


LOCAL_KEK = base64.b64encode(os.urandom(32)).decode()
# Data subjects and erasure (docs/erasure.md): the digest key and the certificate signing key.
SUBJECT_DIGEST_KEY = base64.b64encode(os.urandom(32)).decode()
AUDIT_MASTER_KEY = base64.b64encode(os.urandom(32)).decode()
# The verified-token cache secret (`jwt_cache_key`): set for every server, dev mode or not, so
# that a production-shaped deployment in a test caches tokens as production does.
JWT_CACHE_KEY = base64.b64encode(os.urandom(32)).decode()
# Outside dev mode Veil requires `jwt_audience` (and `jwt_issuer` with JWKS keys, docs/auth.md):
# servers that are not in dev mode get these unless a test sets its own, and every token carries
# them (a dev server that sets neither ignores both claims).
TEST_AUDIENCE = "veil-tests"
TEST_ISSUER = "https://idp.veil-tests.invalid/"
ERASURE_SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()
ERASURE_SIGNING_KID = "test-erasure-1"
HS256_SECRET = secrets.token_urlsafe(36)  # 48 characters

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()

RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
RSA_PRIVATE_PEM = RSA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())


def _jwks() -> str:
    rn = RSA_KEY.public_key().public_numbers()
    en = EC_KEY.public_key().public_numbers()
    ed_raw = ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keys = [
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": _int_b64(rn.n), "e": _int_b64(rn.e)},
        {"kty": "EC", "kid": "ec1", "use": "sig", "alg": "ES256", "crv": "P-256",
         "x": _int_b64(en.x, 32), "y": _int_b64(en.y, 32)},
        {"kty": "OKP", "kid": "ed1", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "x": b64url(ed_raw)},
    ]
    return json.dumps({"keys": keys})


JWKS = _jwks()


def claims(tenant: str | None, roles, **extra) -> dict:
    """A token's claims: a random `sub`, valid for 10 minutes; `extra` adds or replaces claims
    (None removes one)."""
    now = int(time.time())
    body = {"sub": f"user-{secrets.token_hex(3)}", "iat": now, "exp": now + 600, "roles": list(roles),
            "aud": TEST_AUDIENCE, "iss": TEST_ISSUER}
    if tenant is not None:
        body["tenant"] = tenant
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def hs256(tenant, roles=(), secret: str | bytes | None = None, **extra) -> str:
    return jwt.encode(claims(tenant, roles, **extra), secret or HS256_SECRET, algorithm="HS256")


def rs256(tenant, roles=(), key=None, kid="rsa1", **extra) -> str:
    return jwt.encode(claims(tenant, roles, **extra), key or RSA_KEY, algorithm="RS256", headers={"kid": kid})


def es256(tenant, roles=(), **extra) -> str:
    return jwt.encode(claims(tenant, roles, **extra), EC_KEY, algorithm="ES256", headers={"kid": "ec1"})


def eddsa(tenant, roles=(), **extra) -> str:
    return jwt.encode(claims(tenant, roles, **extra), ED_KEY, algorithm="EdDSA", headers={"kid": "ed1"})


def raw_jwt(header: dict, payload: dict, sign=None) -> str:
    """A JWT built by hand (PyJWT refuses to build the hostile ones)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    sig = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(sig)}"


def alg_none(tenant, roles=()) -> str:
    return raw_jwt({"alg": "none", "typ": "JWT"}, claims(tenant, roles))


def hs256_with_rsa_public_pem(tenant, roles=()) -> str:
    """Algorithm confusion: HS256 'signed' with the RS256 verification key as the HMAC secret."""
    return raw_jwt({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}, claims(tenant, roles),
                   lambda m: hmac.new(RSA_PUBLIC_PEM, m, hashlib.sha256).digest())
