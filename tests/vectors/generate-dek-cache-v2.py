#!/usr/bin/env python3
"""Writes the frozen DEK-cache v2 golden vectors (veil-dek-cache-v2.txt beside this file).

Run once, in 2026, to create the file; never to "fix" it. The bytes are computed here from the
layout written in docs/kms.md ("DEK cache"), independently of Veil's Rust code: Python's hashlib,
the `cryptography` package's ChaCha20-Poly1305 and ChaCha20, and an HChaCha20 written here from
draft-irtf-cfrg-xchacha-03 §2.2 (checked first against that draft's own test vector, A.3.1, kept
in xchacha20-poly1305-draft-irtf-cfrg-xchacha-03.txt). src/kms/binding_vectors.rs checks Veil's
code against the file.

Usage: python3 tests/vectors/generate-dek-cache-v2.py [out_dir]
"""

import hashlib
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

CACHE_LABEL = b"veil/v2/dek-cache"
CACHE_PREFIX = "veil/dek-cache/v2/"
MASK32 = 0xFFFFFFFF

T64 = "t" + "0123456789abcdef" * 3 + "abcdefghijklmno"
S64 = "s" + "0123456789abcdef" * 3 + "abcdefghijklmno"

# (tenant, scheme, version, kek_id, kek_version, wrapped blob, now, max_age_secs, seals_at_put)
CACHE = [
    ("acme", "pii", 1, "local", "3f2a9c4d5e6f7081", b"\x01" * 60, 1700000000, 300, 0),
    ("a", "s", 4294967295, "https://contoso.vault.azure.net/keys/veil-kek/0123456789abcdef0123456789abcdef",
     "0123456789abcdef0123456789abcdef", bytes(range(256)), 0, 86400, 2**31 - 1),
    (T64, S64, 2, "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "",
     b"opaque-kms-ciphertext-blob", 1900000000, 1, 2**64 - 1),
]


def rotl(v, n):
    return ((v << n) & MASK32) | (v >> (32 - n))


def quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & MASK32
    s[d] = rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & MASK32
    s[b] = rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & MASK32
    s[d] = rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & MASK32
    s[b] = rotl(s[b] ^ s[c], 7)


def hchacha20(key, nonce16):
    """draft-irtf-cfrg-xchacha-03 §2.2: 20 ChaCha rounds, no final addition; words 0-3 and 12-15."""
    s = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) \
        + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        quarter(s, 0, 4, 8, 12)
        quarter(s, 1, 5, 9, 13)
        quarter(s, 2, 6, 10, 14)
        quarter(s, 3, 7, 11, 15)
        quarter(s, 0, 5, 10, 15)
        quarter(s, 1, 6, 11, 12)
        quarter(s, 2, 7, 8, 13)
        quarter(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def xchacha_seal(key, nonce24, plaintext, aad):
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).encrypt(b"\0" * 4 + nonce24[16:], plaintext, aad)


def self_check():
    """The draft's A.3.1 vector, from the file Veil's own AEAD tests use."""
    path = Path(__file__).parent / "xchacha20-poly1305-draft-irtf-cfrg-xchacha-03.txt"
    block = path.read_text().split("\n\n")[1]
    f = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
    h = {k: bytes.fromhex(v) for k, v in f.items() if k in ("key", "iv", "aad", "pt", "ct", "tag")}
    assert xchacha_seal(h["key"], h["iv"], h["pt"], h["aad"]) == h["ct"] + h["tag"], "HChaCha20 is wrong"


def first_bytes(seed, n):
    """The first n bytes of Csprng::from_seed(seed): ChaCha20 keyed by the seed, counter 0, nonce 0."""
    enc = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor()
    return enc.update(b"\0" * n)


def lp64(b):
    return struct.pack(">Q", len(b)) + b


def short(t):
    return t if len(t) < 20 else t[:6] + "..(64 bytes)"


def cache_file():
    body = ""
    for i, (t, s, v, kek_id, kek_version, blob, now, age, seals) in enumerate(CACHE):
        cache_key = bytes([0x20 + i]) * 32
        dek = bytes((0x90 + 7 * i + j) % 256 for j in range(32))
        seed = bytes([0x40 + i]) * 32
        slot = lp64(t.encode()) + lp64(s.encode()) + struct.pack(">I", v)
        entry_key = CACHE_PREFIX + hashlib.sha256(slot).digest()[:16].hex()
        expiry = now + age
        wrapped = hashlib.sha256(kek_id.encode() + b"\0" + kek_version.encode() + b"\0" + blob).digest()
        aad = lp64(CACHE_LABEL) + slot + wrapped + struct.pack(">QQ", expiry, seals)
        nonce = first_bytes(seed, 24)
        record = struct.pack(">QQ", expiry, seals) + nonce + xchacha_seal(cache_key, nonce, dek, aad)
        fields = [("cache_key", cache_key.hex()), ("rng_seed", seed.hex()), ("dek", dek.hex()),
                  ("tenant", t), ("scheme", s), ("version", v), ("kek_id", kek_id),
                  ("kek_version", kek_version), ("wrapped_blob", blob.hex()), ("now", now),
                  ("max_age_secs", age), ("seals_at_put", seals), ("entry_key", entry_key),
                  ("aad", aad.hex()), ("record", record.hex())]
        body += f"name: dek cache v2 entry {short(t)}/{short(s)}/v{v}\n" \
            + "".join(f"{k}: {val}\n" for k, val in fields) + "\n"
    return body


HEADER = """\
# The DEK cache's v2 entries (kms::cache, docs/kms.md "DEK cache"): store key, AAD and the record
# written by DekCache::put with expiry = now + max_age_secs and seals_at_put = the version's seal
# count in the metadata database before the request that cached it. Written once per unwrap,
# never re-sealed on a hit.
# slot       = u64be(len(tenant)) || tenant || u64be(len(scheme)) || scheme || u32be(version)
# entry_key  = "veil/dek-cache/v2/" || hex(SHA-256(slot)[0..16])
# aad        = u64be(17) || "veil/v2/dek-cache" || slot ||
#              SHA-256(kek_id || 00 || kek_version || 00 || wrapped_blob) ||
#              u64be(expiry) || u64be(seals_at_put)
# record     = u64be(expiry) || u64be(seals_at_put) || nonce ||
#              XChaCha20-Poly1305(cache_key, nonce, aad, dek) || tag
# nonce = the first 24 bytes of Csprng::from_seed(rng_seed). Frozen like v1: a new layout gets a
# new prefix and label (v3), never a change to one byte of this one.
# Fields: cache_key, rng_seed, dek, wrapped_blob, aad, record in hex; the rest as text.
# Computed by tests/vectors/generate-dek-cache-v2.py (Python hashlib and cryptography, and an
# HChaCha20 checked against draft-irtf-cfrg-xchacha-03 A.3.1; not Veil's code) and frozen;
# checked by src/kms/binding_vectors.rs.

"""


def main():
    self_check()
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    (out / "veil-dek-cache-v2.txt").write_text(HEADER + cache_file())


if __name__ == "__main__":
    main()
