"""Data subjects (docs/erasure.md): per-subject keys, erase and its signed certificates, checked
against an independent implementation of the formats (harness/veilformat.py) and with the raw
key material read straight from the store."""
import base64
import json
import subprocess
import threading

import store
from harness import veilformat as vf
from harness.tokens import SUBJECT_DIGEST_KEY
from veilkit import LOCAL_KEK, binaries, err, item_errors, ok

ROOT = base64.b64decode(SUBJECT_DIGEST_KEY)
KEK = base64.b64decode(LOCAL_KEK)


def other_first(text: str, choices: str) -> str:
    """`text` with its first character changed (to the first of `choices` it is not)."""
    return next(c for c in choices if c != text[0]) + text[1:]


def blobs(value):
    return [bytes(value)] if isinstance(value, (bytes, bytearray, memoryview)) else []


def key_material(state_dir):
    """Every byte string of every column of every table: candidate secrets and wrapped keys."""
    out = []
    for rows in store.tables(state_dir).values():
        for row in rows:
            for v in row:
                out += blobs(v)
    return out


def opens_with_any(tenant_id, scheme, token, subject, material):
    """Whether any key material found in the store opens `token` of `subject`: every wrapped DEK
    is unwrapped with the local KEK, and every 32-byte value is tried as the subject secret."""
    _, version, _ = vf.parse_token(token)
    deks = [d for b in material if (d := vf.local_unwrap(KEK, b, tenant_id, scheme, version))]
    assert deks, "the scheme's data key is in the store"
    secrets_ = [b for b in material if len(b) == 32]
    for dek in deks:
        sk = vf.scheme_data_key(dek, tenant_id, scheme, version)
        for s in secrets_:
            if vf.open_token(vf.subject_key(sk, s, subject), token, tenant_id, subject) is not None:
                return True
    return False


def verify_cli(tmp_path, cert, jwks):
    (tmp_path / "cert.json").write_text(json.dumps(cert))
    (tmp_path / "keys.json").write_text(json.dumps(jwks))
    veil, _ = binaries()
    return subprocess.run([veil, "verify-erasure", tmp_path / "cert.json", "--keys", tmp_path / "keys.json"],
                          capture_output=True, text=True, timeout=60)


def test_erase_certificate_and_key_material(server, tenant, tmp_path):
    scheme = tenant.create_scheme()["name"]
    gone = tenant.protect(scheme, ["alice's card", "alice's phone"], subject="alice")
    kept = tenant.protect(scheme, ["bob's card"], subject="bob")
    plain = tenant.protect(scheme, ["no subject"])
    before = key_material(server.state_dir)
    assert opens_with_any(tenant.id, scheme, gone[0], "alice", before)

    err(tenant.app.post("/v1/subjects/alice/erase"), 403, "forbidden")
    cert = ok(tenant.privacy.post("/v1/subjects/alice/erase"))
    assert cert["subject_digest"] == vf.subject_digest(ROOT, tenant.id, "alice")
    assert (cert["tenant"], cert["scope"], cert["secret_existed"], cert["schemes"]) == \
        (tenant.id, "subject", True, [scheme])
    assert "alice" not in json.dumps(cert)

    # Unrecoverable with everything left in the store; others unaffected.
    after = key_material(server.state_dir)
    assert not opens_with_any(tenant.id, scheme, gone[0], "alice", after)
    assert opens_with_any(tenant.id, scheme, kept[0], "bob", after)
    assert item_errors(tenant.unprotect_results(gone, subject="alice")) == ["subject_erased"] * 2
    assert tenant.unprotect(kept, subject="bob") == ["bob's card"]
    assert tenant.unprotect(plain) == ["no subject"]

    # The certificate verifies with the published keys, by Veil's CLI and independently.
    jwks = ok(server.api(None).get("/.well-known/veil/erasure-keys"))
    assert [k["kty"] for k in jwks["keys"]] == ["OKP"]
    assert vf.verify_certificate(cert, jwks)
    r = verify_cli(tmp_path, cert, jwks)
    assert r.returncode == 0 and cert["certificate_id"] in r.stdout, r.stderr
    for field, value in [("tenant", cert["tenant"] + "x"), ("erased_at", cert["erased_at"] + 1),
                         ("secret_existed", False), ("subject_digest", other_first(cert["subject_digest"], "01")),
                         ("schemes", []), ("signature", other_first(cert["signature"], "AB"))]:
        bad = dict(cert, **{field: value})
        assert not vf.verify_certificate(bad, jwks), field
        r = verify_cli(tmp_path, bad, jwks)
        assert r.returncode == 1 and "does NOT verify" in r.stderr, (field, r.stderr)

    # Twice: the same certificate, stored under its id; a fresh secret afterwards.
    assert ok(tenant.admin.post("/v1/subjects/alice/erase")) == cert
    assert ok(tenant.privacy.get(f"/v1/erasures/{cert['certificate_id']}")) == cert
    err(server.tenant().privacy.get(f"/v1/erasures/{cert['certificate_id']}"), 404, "erasure_not_found")
    new = tenant.protect(scheme, ["alice again"], subject="alice")
    assert tenant.unprotect(new, subject="alice") == ["alice again"]
    assert item_errors(tenant.unprotect_results(gone[:1], subject="alice")) == ["subject_erased"]


def test_bulk_erase_mixes_known_unknown_and_invalid(tenant):
    scheme = tenant.create_scheme()["name"]
    tok = tenant.protect(scheme, ["v"], subject="known")
    body = ok(tenant.privacy.post("/v1/subjects/erase", {"subjects": ["known", "unknown", "", "s" * 257]}))
    assert item_errors(body["results"]) == [None, None, "invalid_subject", "invalid_subject"]
    assert [r["value"]["secret_existed"] for r in body["results"][:2]] == [True, False]
    assert body["results"][1]["value"]["secret_created_at"] is None
    assert item_errors(tenant.unprotect_results(tok, subject="known")) == ["subject_erased"]


def test_concurrent_first_protects_make_one_secret(server, tenant):
    scheme = tenant.create_scheme()["name"]
    results, errors = [None] * 16, []

    def one(i):
        try:
            results[i] = tenant.protect(scheme, [f"v{i}"], subject="racer")[0]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert tenant.unprotect(results, subject="racer") == [f"v{i}" for i in range(16)]
    digest = bytes.fromhex(vf.subject_digest(ROOT, tenant.id, "racer"))
    rows = [r for r in store.tables(server.state_dir)["subjects"] if bytes(r[1]) == digest]
    assert len(rows) == 1


def test_protect_racing_erase_never_resurrects_the_old_secret(server, tenant):
    scheme = tenant.create_scheme()["name"]
    for round_ in range(5):
        old = tenant.protect(scheme, ["old"], subject="raced")
        made = []
        t = threading.Thread(target=lambda: made.extend(tenant.protect(scheme, ["during"], subject="raced")))
        t.start()
        ok(tenant.privacy.post("/v1/subjects/raced/erase"))
        t.join()
        assert item_errors(tenant.unprotect_results(old, subject="raced")) == ["subject_erased"], round_
        assert not opens_with_any(tenant.id, scheme, old[0], "raced", key_material(server.state_dir))
