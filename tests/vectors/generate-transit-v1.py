#!/usr/bin/env python3
"""Writes the frozen golden vectors of the Transit-compatible routes (veil-transit-v1.txt) beside
this file: Transit ciphertexts (`vault:v<N>:<base64>`) and HMACs.

Run once, in 2026, to create the file; never to "fix" it. The bytes come from
tests/harness/veilformat.py, written from docs/token-format.md independently of Veil's Rust code;
src/crypto/transit.rs checks Veil against them.

Usage: python3 tests/vectors/generate-transit-v1.py [out_dir]
"""
import hmac
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402

from harness import veilformat as vf  # noqa: E402


def case(name, fields):
    return "name: " + name + "\n" + "".join(f"{k}: {v}".rstrip() + "\n" for k, v in fields) + "\n"


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    dek = bytes(range(32))
    body = ("# Veil Transit-compatible formats v1: golden vectors (generate-transit-v1.py; frozen). Spec:\n"
            "# docs/token-format.md, \"Transit ciphertexts\".\n#\n"
            "# kind: ciphertext -> seal plaintext with nonce under kdf::scheme_data_key(dek, tenant, scheme,\n"
            "#   version) and token::aad(tenant, scheme, version, no subject, context), where context is the\n"
            "#   standard base64 of context_b64's bytes (`none`: no context); ciphertext is\n"
            "#   vault:v<version>:<base64(nonce || ct || tag)> and veil_token the same payload as a Veil token.\n"
            "# kind: hmac -> hmac_key = kdf::scheme_transit_hmac_key(dek, tenant, scheme, version);\n"
            "#   hmac = vault:v<version>:<base64(HMAC-SHA256(hmac_key, input))>.\n"
            "# dek, nonce, plaintext, input, hmac_key in hex.\n\n")
    cases = [
        ("aes-256-gcm", "acme", "orders", 1, None, bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab"), b"hello"),
        ("aes-256-gcm", "acme", "orders", 3, "Y3VzdG9tZXItNDI=", bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babb"),
         b"4111111111111111"),
        ("chacha20-poly1305", "Acme.eu-1", "pii", 2, "AAEC", bytes.fromhex("c0c1c2c3c4c5c6c7c8c9cacb"), b""),
    ]
    for alg, tenant, scheme, version, ctx_b64, nonce, pt in cases:
        key = vf.scheme_data_key(dek, tenant, scheme, version)
        ad = vf.aad(tenant, scheme, version, None, vf.transit_context(ctx_b64))
        cipher = AESGCM(key) if alg == "aes-256-gcm" else ChaCha20Poly1305(key)
        sealed = nonce + cipher.encrypt(nonce, pt, ad)
        ct = vf.transit_ciphertext(version, sealed)
        body += case(f"{alg}, tenant {tenant!r}, key {scheme!r} v{version}, context {ctx_b64 or 'none'}", [
            ("kind", "ciphertext"), ("algorithm", alg), ("dek", dek.hex()), ("tenant", tenant),
            ("scheme", scheme), ("version", version), ("context_b64", ctx_b64 or "none"),
            ("nonce", nonce.hex()), ("plaintext", pt.hex()), ("ciphertext", ct),
            ("veil_token", vf.transit_to_token(scheme, ct))])
    for tenant, scheme, version, inp in [("acme", "orders", 1, b"hello"), ("acme", "orders", 2, b""),
                                         ("Acme.eu-1", "pii", 7, b"\x00\xff" * 40)]:
        k = vf.transit_hmac_key(dek, tenant, scheme, version)
        mac = hmac.new(k, inp, hashlib.sha256).digest()
        body += case(f"hmac, tenant {tenant!r}, key {scheme!r} v{version}, {len(inp)}-byte input", [
            ("kind", "hmac"), ("dek", dek.hex()), ("tenant", tenant), ("scheme", scheme), ("version", version),
            ("input", inp.hex()), ("hmac_key", k.hex()), ("hmac", vf.transit_ciphertext(version, mac))])
    (out / "veil-transit-v1.txt").write_text(body)


if __name__ == "__main__":
    main()
