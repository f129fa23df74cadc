"""An independent implementation of Veil's token format, key derivation, subject digests, the
local KEK's wrapping and erasure certificates, written from docs/token-format.md,
docs/erasure.md and docs/testing.md only (Python's hashlib/hmac and the `cryptography`
package; nothing here calls Veil). Tests use it to open tokens from raw key material found in
the store, and to check certificates without `veil verify-erasure`."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KDF_LABEL_VERSION = 1
LOCAL_KEK_LABEL = "veil/v1/local-kek-wrap"


def lp(b: bytes | str) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">Q", len(b)) + b


def opt(s: str | None) -> bytes:
    return b"\x00" if s is None else b"\x01" + lp(s)


def hkdf(salt: bytes | None, ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def scheme_data_key(dek: bytes, tenant: str, scheme: str, version: int) -> bytes:
    info = lp("veil") + lp("scheme-data-key") + struct.pack(">I", KDF_LABEL_VERSION) + lp(tenant) + lp(scheme) \
        + struct.pack(">I", version)
    return hkdf(None, dek, info)


def subject_key(scheme_key: bytes, subject_secret: bytes, subject_id: str) -> bytes:
    info = lp("veil") + lp("subject-key") + struct.pack(">I", KDF_LABEL_VERSION) + lp(subject_id)
    return hkdf(subject_secret, scheme_key, info)


def subject_digest_key(root: bytes, tenant: str) -> bytes:
    info = lp("veil") + lp("subject-digest-key") + struct.pack(">I", KDF_LABEL_VERSION) + lp(tenant)
    return hkdf(None, root, info)


def subject_digest(root: bytes, tenant: str, subject_id: str) -> str:
    return hmac.new(subject_digest_key(root, tenant), subject_id.encode(), hashlib.sha256).hexdigest()


def aad(tenant: str, scheme: str, version: int, subject: str | None, context: str | None) -> bytes:
    return lp("veil") + lp("token-aad") + b"\x01" + lp(tenant) + lp(scheme) + struct.pack(">I", version) \
        + opt(subject) + opt(context)


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def parse_token(token: str) -> tuple[str, int, bytes]:
    prefix, fmt, scheme, version, payload = token.split(".")
    assert (prefix, fmt) == ("veil", "1"), token
    return scheme, int(version), b64url_decode(payload)


def open_token(key: bytes, token: str, tenant: str, subject: str | None = None, context: str | None = None,
               algorithm: str = "aes-256-gcm") -> bytes | None:
    """The plaintext, or None when the token does not open under `key`."""
    scheme, version, sealed = parse_token(token)
    if algorithm == "aes-256-gcm":
        cipher, n = AESGCM(key), 12
    elif algorithm == "chacha20-poly1305":
        cipher, n = ChaCha20Poly1305(key), 12
    else:
        raise ValueError(algorithm)
    try:
        return cipher.decrypt(sealed[:n], sealed[n:], aad(tenant, scheme, version, subject, context))
    except InvalidTag:
        return None


def seal_token(key: bytes, nonce: bytes, tenant: str, scheme: str, version: int, subject: str | None,
               context: str | None, plaintext: bytes) -> str:
    sealed = nonce + AESGCM(key).encrypt(nonce, plaintext, aad(tenant, scheme, version, subject, context))
    return f"veil.1.{scheme}.{version}.{b64url(sealed)}"


def transit_hmac_key(dek: bytes, tenant: str, scheme: str, version: int) -> bytes:
    """The key of the Transit-compatible hmac/verify routes (docs/token-format.md)."""
    info = lp("veil") + lp("scheme-transit-hmac-key") + struct.pack(">I", KDF_LABEL_VERSION) + lp(tenant) \
        + lp(scheme) + struct.pack(">I", version)
    return hkdf(None, dek, info)


def transit_context(context_b64: str | None) -> str | None:
    """Veil's context string for a Transit `context`: the standard padded base64 of its bytes."""
    return None if context_b64 is None else base64.b64encode(base64.b64decode(context_b64)).decode()


def transit_ciphertext(version: int, sealed: bytes) -> str:
    return f"vault:v{version}:{base64.b64encode(sealed).decode()}"


def transit_to_token(scheme: str, ciphertext: str) -> str:
    """The Veil token a Transit ciphertext of key `scheme` is (same payload, same AAD)."""
    prefix, version, payload = ciphertext.split(":")
    assert prefix == "vault" and version.startswith("v"), ciphertext
    return f"veil.1.{scheme}.{int(version[1:])}.{b64url(base64.b64decode(payload))}"


def local_unwrap(kek: bytes, blob: bytes, tenant: str, scheme: str, version: int) -> bytes | None:
    """A DEK wrapped by the dev-only local KEK (docs/testing.md), or None."""
    ctx = b"".join(struct.pack(">I", len(f)) + f for f in (LOCAL_KEK_LABEL.encode(), tenant.encode(),
                                                            scheme.encode())) + struct.pack(">I", version)
    if len(blob) < 28:
        return None
    try:
        return AESGCM(kek).decrypt(blob[:12], blob[12:], ctx)
    except InvalidTag:
        return None


def canonical(cert: dict) -> bytes:
    """The bytes an erasure certificate's signature covers (docs/erasure.md): every field but
    `signature`, as RFC 8785 canonical JSON (sorted keys, no white space)."""
    fields = {k: v for k, v in cert.items() if k != "signature"}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_certificate(cert: dict, jwks: dict) -> bool:
    """True when `cert` carries a valid Ed25519 signature by the JWKS key named in `key_id`."""
    if cert.get("alg") != "Ed25519":
        return False
    keys = [k for k in jwks["keys"] if k.get("kid") == cert.get("key_id") and k.get("kty") == "OKP"
            and k.get("crv") == "Ed25519"]
    if len(keys) != 1 or not isinstance(cert.get("signature"), str):
        return False
    try:
        sig = b64url_decode(cert["signature"])
        Ed25519PublicKey.from_public_bytes(b64url_decode(keys[0]["x"])).verify(sig, canonical(cert))
        return True
    except (InvalidSignature, ValueError):
        return False
