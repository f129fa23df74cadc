#!/usr/bin/env python3
"""Writes the frozen KEK-binding golden vectors (veil-*-v1.txt beside this file).

Run once, in 2026, to create the files; never to "fix" them. The bytes are computed here from the
layouts written in docs/testing.md, independently of Veil's Rust code (Python's hashlib and the
`cryptography` package), and src/kms/binding_vectors.rs checks Veil's code against them. If a test
fails, Veil's encoding changed and every stored data key or cache entry made with the old one is
orphaned: change the code back, or introduce a new, versioned encoding beside the old one.

Usage: python3 tests/vectors/generate-kek-binding-v1.py [out_dir]
"""

import base64
import hashlib
import json
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LOCAL_LABEL = "veil/v1/local-kek-wrap"
AZURE_LABEL = "veil/v1/azure-kv-wrap"
FINGERPRINT_LABEL = b"veil/v1/local-kek-fingerprint"
CACHE_LABEL = b"veil/v1/dek-cache"
CACHE_PREFIX = "veil/dek-cache/v1/"

# The longest tenant and scheme names Veil accepts (64 bytes each).
T64 = "t" + "0123456789abcdef" * 3 + "abcdefghijklmno"
S64 = "s" + "0123456789abcdef" * 3 + "abcdefghijklmno"
assert len(T64) == 64 and len(S64) == 64

# (tenant, scheme, version): shortest names, typical ones, every punctuation Veil allows, the
# longest names, and versions that need 1, 2, 3 and 4 bytes.
CONTEXTS = [
    ("a", "s", 1),
    ("acme", "pii", 1),
    ("acme", "pii", 2),
    ("tenant-7.eu_west", "card_numbers-v2", 256),
    (T64, S64, 65536),
    ("A", "0", 4294967295),
]


def context_bytes(label, tenant, scheme, version):
    """u32be(len) || bytes for label, tenant and scheme, then u32be(version)."""
    out = b""
    for field in (label.encode(), tenant.encode(), scheme.encode()):
        out += struct.pack(">I", len(field)) + field
    return out + struct.pack(">I", version)


def lp64(b):
    return struct.pack(">Q", len(b)) + b


def first_nonce(seed):
    """The first 12 bytes of Csprng::from_seed(seed): ChaCha20 keyed by the seed, counter 0, nonce 0."""
    enc = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor()
    return enc.update(b"\0" * 12)


def case(name, fields):
    return "name: " + name + "\n" + "".join(f"{k}: {v}\n" for k, v in fields) + "\n"


def ids(t, s, v):
    return [("tenant", t), ("scheme", s), ("version", v)]


def short(t):
    return t if len(t) <= 16 else t[:6] + "..(64 bytes)"


def context_file():
    body = ""
    for label in (LOCAL_LABEL, AZURE_LABEL):
        for t, s, v in CONTEXTS:
            c = context_bytes(label, t, s, v)
            body += case(f"{label} {short(t)}/{short(s)}/v{v}", [("label", label)] + ids(t, s, v)
                         + [("context", c.hex())])
    return body


def local_file():
    body = ""
    for i, (t, s, v) in enumerate(CONTEXTS[:4]):
        kek = bytes(range(i, i + 32))
        dek = bytes((0xA0 + i + j) % 256 for j in range(32))
        seed = bytes([i + 1]) * 32
        nonce = first_nonce(seed)
        aad = context_bytes(LOCAL_LABEL, t, s, v)
        blob = nonce + AESGCM(kek).encrypt(nonce, dek, aad)
        fp = hashlib.sha256(FINGERPRINT_LABEL + kek).digest()[:8].hex()
        body += case(f"local wrap {short(t)}/{short(s)}/v{v}",
                     [("kek", kek.hex()), ("rng_seed", seed.hex()), ("dek", dek.hex())] + ids(t, s, v)
                     + [("aad", aad.hex()), ("nonce", nonce.hex()), ("blob", blob.hex()),
                        ("kek_version", fp)])
    return body


def azure_file():
    body = ""
    for i, (t, s, v) in enumerate(CONTEXTS):
        dek = bytes((0x40 + 3 * i + j) % 256 for j in range(32))
        c = context_bytes(AZURE_LABEL, t, s, v)
        value = dek + hashlib.sha256(c).digest()
        b64 = base64.urlsafe_b64encode(value).rstrip(b"=").decode()
        body += case(f"azure wrapkey value {short(t)}/{short(s)}/v{v}",
                     [("dek", dek.hex())] + ids(t, s, v)
                     + [("context", c.hex()), ("value", value.hex()), ("value_b64url", b64)])
    return body


def aws_file():
    body = ""
    for t, s, v in CONTEXTS:
        ec = json.dumps({"veil:tenant": t, "veil:scheme": s, "veil:version": str(v)}, separators=(",", ":"))
        body += case(f"aws encryption context {short(t)}/{short(s)}/v{v}", ids(t, s, v)
                     + [("encryption_context", ec)])
    return body


CACHE = [
    ("acme", "pii", 1, "local", "3f2a9c4d5e6f7081", bytes([1]) * 60, 1700000000, 300),
    ("a", "s", 4294967295,
     "https://contoso.vault.azure.net/keys/veil-kek/0123456789abcdef0123456789abcdef",
     "0123456789abcdef0123456789abcdef", bytes(range(256)), 0, 86400),
    (T64, S64, 2, "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "",
     b"opaque-kms-ciphertext-blob", 1900000000, 1),
]


def cache_file():
    body = ""
    for i, (t, s, v, kek_id, kek_version, blob, now, age) in enumerate(CACHE):
        cache_key = bytes([0x10 + i]) * 32
        dek = bytes((0x70 + 5 * i + j) % 256 for j in range(32))
        seed = bytes([0x30 + i]) * 32
        slot = lp64(t.encode()) + lp64(s.encode()) + struct.pack(">I", v)
        entry_key = CACHE_PREFIX + hashlib.sha256(slot).digest()[:16].hex()
        expiry, uses = now + age, 1
        wrapped = hashlib.sha256(kek_id.encode() + b"\0" + kek_version.encode() + b"\0" + blob).digest()
        aad = lp64(CACHE_LABEL) + slot + wrapped + struct.pack(">Q", expiry) + struct.pack(">I", uses)
        nonce = first_nonce(seed)
        record = struct.pack(">QI", expiry, uses) + nonce + AESGCM(cache_key).encrypt(nonce, dek, aad)
        body += case(f"dek cache entry {short(t)}/{short(s)}/v{v}",
                     [("cache_key", cache_key.hex()), ("rng_seed", seed.hex()), ("dek", dek.hex())]
                     + ids(t, s, v)
                     + [("kek_id", kek_id), ("kek_version", kek_version), ("wrapped_blob", blob.hex()),
                        ("now", now), ("max_age_secs", age), ("entry_key", entry_key), ("aad", aad.hex()),
                        ("record", record.hex())])
    return body


HEADERS = {
    "veil-kek-context-v1.txt": """\
# kms::context_bytes(label, ctx): the binding of a data key to its tenant, scheme and version.
# Pins: the AAD of the local KEK (label veil/v1/local-kek-wrap) and the preimage of the digest
# sent to Azure Key Vault (label veil/v1/azure-kv-wrap). It must never change: every data key
# wrapped under the old bytes would stop unwrapping (kms_unwrap_failed), so nothing stored
# today could be decrypted. Note the 4-byte length prefixes: NOT the 8-byte `Fields` encoding
# of the token AAD and the KDF info; "tidying" one into the other orphans every stored key.
# Layout: u32be(len(label)) || label || u32be(len(tenant)) || tenant || u32be(len(scheme)) ||
#         scheme || u32be(version). Strings are UTF-8 (Veil's ids are ASCII).
# Fields: label, tenant, scheme, version (decimal) as text; context in hex.
""",
    "veil-local-kek-wrap-v1.txt": """\
# The dev-only local KEK's whole wrap (kms::local::LocalKek::wrap) and its fingerprint.
# Pins: blob = nonce || AES-256-GCM(kek, nonce, aad, dek) || tag with aad =
# context_bytes("veil/v1/local-kek-wrap", ctx), and kek_version = hex of the first 8 bytes of
# SHA-256("veil/v1/local-kek-fingerprint" || kek). Both are stored in data_keys rows: a change
# to either makes every locally wrapped data key fail to unwrap (the fingerprint check first).
# nonce = the first 12 bytes of Csprng::from_seed(rng_seed) (ChaCha20, key = seed, counter 0).
# Fields: kek, rng_seed, dek, aad, nonce, blob in hex; kek_version as stored; ids as text.
""",
    "veil-azure-wrap-value-v1.txt": """\
# The value Veil sends to Azure Key Vault's wrapkey (kms::azure): value = dek ||
# SHA-256(context_bytes("veil/v1/azure-kv-wrap", ctx)), 64 bytes, base64url without padding in
# the JSON body. Key Vault wraps these bytes as they are and unwrapkey gives them back: a change
# to the layout or label makes every Azure-wrapped data key fail the digest check on unwrap.
# Fields: dek, context, value in hex; value_b64url as sent; ids as text.
""",
    "veil-aws-encryption-context-v1.txt": """\
# The AWS KMS encryption context (kms::aws) sent with every Encrypt and Decrypt: exactly the
# three pairs veil:tenant, veil:scheme and veil:version (the key version in decimal, as a string).
# KMS binds the ciphertext to these pairs: a renamed key, an added pair or another number format
# makes every stored AWS-wrapped data key fail to decrypt (and breaks IAM conditions on
# kms:EncryptionContext:veil:tenant). Pair order is irrelevant to KMS; the test compares pairs.
# Fields: ids as text; encryption_context = the JSON object.
""",
    "veil-dek-cache-v1.txt": """\
# The opt-in DEK cache's entries (kms::cache): store key, AAD and the sealed record written by
# DekCache::put with uses = 1 and expiry = now + max_age_secs.
# slot       = u64be(len(tenant)) || tenant || u64be(len(scheme)) || scheme || u32be(version)
# entry_key  = "veil/dek-cache/v1/" || hex(SHA-256(slot)[0..16])
# aad        = u64be(17) || "veil/v1/dek-cache" || slot ||
#              SHA-256(kek_id || 00 || kek_version || 00 || wrapped_blob) || u64be(expiry) || u32be(uses)
# record     = u64be(expiry) || u32be(uses) || nonce || AES-256-GCM(cache_key, nonce, aad, dek) || tag
# nonce = the first 12 bytes of Csprng::from_seed(rng_seed). The store outlives a build: after a
# silent change every entry is a miss (one vault call each), and an old and a new build sharing
# the store during a deploy delete each other's entries as unopenable. A new layout gets a new
# prefix and label (v2), never a change to one byte of this one.
# Fields: cache_key, rng_seed, dek, wrapped_blob, aad, record in hex; the rest as text.
""",
}


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    common = ("# Computed by tests/vectors/generate-kek-binding-v1.py (Python hashlib and cryptography, not\n"
              "# Veil's code) and frozen; checked by src/kms/binding_vectors.rs.\n\n")
    bodies = {
        "veil-kek-context-v1.txt": context_file(),
        "veil-local-kek-wrap-v1.txt": local_file(),
        "veil-azure-wrap-value-v1.txt": azure_file(),
        "veil-aws-encryption-context-v1.txt": aws_file(),
        "veil-dek-cache-v1.txt": cache_file(),
    }
    for name, body in bodies.items():
        (out / name).write_text(HEADERS[name] + common + body)


if __name__ == "__main__":
    main()
