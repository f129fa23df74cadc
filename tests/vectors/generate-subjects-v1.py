#!/usr/bin/env python3
"""Writes the frozen golden vectors of data subjects (veil-subject-v1.txt) and erasure
certificates (veil-erasure-certificate-v1.txt) beside this file.

Run once, in 2026, to create the files; never to "fix" them. The bytes come from
tests/harness/veilformat.py, an implementation written from docs/token-format.md and
docs/erasure.md independently of Veil's Rust code; src/crypto/kdf.rs, src/crypto/token.rs and
src/subjects/certificate.rs check Veil against them.

Usage: python3 tests/vectors/generate-subjects-v1.py [out_dir]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402

from harness import veilformat as vf  # noqa: E402


def case(name, fields):
    return "name: " + name + "\n" + "".join(f"{k}: {v}\n" for k, v in fields) + "\n"


def subject_file():
    body = ("# Veil data subjects v1: golden vectors (generate-subjects-v1.py; frozen). Spec:\n"
            "# docs/token-format.md, \"Data subjects\".\n#\n"
            "# kind: subject-digest -> tenant_digest_key = kdf::subject_digest_key(digest_root, tenant);\n"
            "#                         subject_digest = HMAC-SHA256(tenant_digest_key, subject_id)\n"
            "# kind: subject-token  -> scheme_key = kdf::scheme_data_key(dek, tenant, scheme, version);\n"
            "#                         subject_key = kdf::subject_key(scheme_key, subject_secret, subject_id);\n"
            "#                         token = AES-256-GCM under subject_key with the fixed nonce and\n"
            "#                         token::aad(tenant, scheme, version, subject_id, context)\n"
            "# Keys in hex; subject_id is taken literally; context is `none` or a JSON string.\n\n")
    root = bytes(range(32))
    for tenant, sid in [("acme", "user-42"), ("acme", "user-43"), ("globex", "user-42"),
                        ("acme", "é-🙂 x"), ("t", "s" * 256)]:
        tk = vf.subject_digest_key(root, tenant)
        body += case(f"subject digest, tenant {tenant!r}, subject {sid[:16]!r}{' (256 bytes)' if len(sid) == 256 else ''}",
                     [("kind", "subject-digest"), ("digest_root", root.hex()), ("tenant", tenant),
                      ("subject_id", sid), ("tenant_digest_key", tk.hex()),
                      ("subject_digest", vf.subject_digest(root, tenant, sid))])
    dek = bytes(range(32))
    for i, (tenant, scheme, version, sid, ctx, pt) in enumerate([
        ("acme", "pii", 1, "user-42", None, b"4111111111111111"),
        ("acme", "pii", 2, "user-42", "orders/2024", b"+44 20 7946 0958"),
        ("acme", "pii", 1, "user-43", None, b""),
    ]):
        secret = bytes([0x10 + i]) * 32
        nonce = bytes(range(0xe0 + i, 0xe0 + i + 12))
        sk = vf.scheme_data_key(dek, tenant, scheme, version)
        subk = vf.subject_key(sk, secret, sid)
        token = vf.seal_token(subk, nonce, tenant, scheme, version, sid, ctx, pt)
        body += case(f"subject token, {tenant}/{scheme}/v{version}, subject {sid!r}",
                     [("kind", "subject-token"), ("dek", dek.hex()), ("tenant", tenant), ("scheme", scheme),
                      ("version", version), ("subject_id", sid), ("subject_secret", secret.hex()),
                      ("context", "none" if ctx is None else json.dumps(ctx)), ("nonce", nonce.hex()),
                      ("plaintext", pt.hex()), ("scheme_key", sk.hex()), ("subject_key", subk.hex()),
                      ("token", token)])
    return body


def certificate_file():
    body = ("# Veil erasure certificates v1: golden vectors (generate-subjects-v1.py; frozen). Spec:\n"
            "# docs/erasure.md, \"Certificates\". Per case: the Ed25519 key from `seed` (RFC 8032), the\n"
            "# certificate's own fields, then `issuer`, `key_id` = kid, `alg` = Ed25519 and `version` = 1 are\n"
            "# added; `signed` is the canonical JSON of all of them (RFC 8785: sorted keys, no white\n"
            "# space) and `certificate` adds `signature` = base64url(Ed25519(seed, signed)).\n\n")
    cases = [
        ("subject erasure", bytes(range(32)), "veil", "erasure-2026",
         {"certificate_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "scope": "subject", "tenant": "acme",
          "subject_digest": vf.subject_digest(bytes(range(32)), "acme", "user-42"), "erased_at": 1796000000,
          "secret_existed": True, "secret_created_at": 1795000000, "schemes": ["cards", "pii"]}),
        ("subject never seen", bytes([0x5a]) * 32, "https://veil.example.com", "k2",
         {"certificate_id": "00000000000000000000000000000001", "scope": "subject", "tenant": "globex",
          "subject_digest": vf.subject_digest(bytes(range(32)), "globex", "nobody"), "erased_at": 1796000001,
          "secret_existed": False, "secret_created_at": None, "schemes": []}),
        # Scheme and tenant erasure (issue 17 item 7): `key_versions` is an object (members sorted
        # by key in the canonical form, like the certificate's own), appended after the frozen
        # subject cases above, which stay byte-identical.
        ("scheme erasure", bytes(range(32)), "veil", "erasure-2026",
         {"certificate_id": "1f1e2d3c4b5a69788796a5b4c3d2e1f0", "scope": "scheme", "tenant": "acme",
          "erased_at": 1796000002, "schemes": ["pii"], "key_versions": {"pii": [1, 2, 3]}}),
        ("tenant erasure", bytes(range(32)), "veil", "erasure-2026",
         {"certificate_id": "2f1e2d3c4b5a69788796a5b4c3d2e1f0", "scope": "tenant", "tenant": "acme",
          "erased_at": 1796000003, "schemes": ["cards", "pii"], "key_versions": {"cards": [1], "pii": [1, 2, 3, 4]},
          "subject_secrets_deleted": 2}),
    ]
    for name, seed, issuer, kid, fields in cases:
        key = Ed25519PrivateKey.from_private_bytes(seed)
        pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        cert = dict(fields, issuer=issuer, key_id=kid, alg="Ed25519", version=1)
        signed = vf.canonical(cert)
        cert["signature"] = vf.b64url(key.sign(signed))
        whole = json.dumps(cert, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        body += case(name, [("seed", seed.hex()), ("public_key", pub.hex()), ("issuer", issuer), ("kid", kid),
                            ("fields", json.dumps(fields, sort_keys=True, separators=(",", ":"))),
                            ("signed", signed.decode()), ("certificate", whole)])
    return body


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    (out / "veil-subject-v1.txt").write_text(subject_file().rstrip("\n") + "\n")
    (out / "veil-erasure-certificate-v1.txt").write_text(certificate_file().rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
