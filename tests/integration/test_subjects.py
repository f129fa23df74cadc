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
from veilkit import LOCAL_KEK, binaries, err, free_port, item_errors, ok

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


# Scheme and tenant erasure (issue 17 item 7; docs/erasure.md, "Erasing a scheme or the tenant").

def deks_of(material, tenant_id, scheme, versions):
    """Every data key of `scheme` (any of `versions`) that the local KEK unwraps from `material`."""
    return [d for b in material for v in versions if (d := vf.local_unwrap(KEK, b, tenant_id, scheme, v))]


def opens_plain(tenant_id, token, material):
    """Whether any data key found in `material` opens a subject-less `token`."""
    scheme, version, _ = vf.parse_token(token)
    return any(vf.open_token(vf.scheme_data_key(d, tenant_id, scheme, version), token, tenant_id) is not None
               for d in deks_of(material, tenant_id, scheme, [version]))


def variable_bytes(server):
    """The server's variables (its SPIN_VARIABLE_* environment and the manifest), as raw bytes and,
    where a value is base64, decoded: where a key could hide outside the store."""
    values = [v for k, v in server.env.items() if k.startswith("SPIN_VARIABLE_")]
    values.append(server.manifest.read_text())
    out = []
    for v in values:
        out.append(v.encode())
        try:
            out.append(base64.b64decode(v, validate=True))
        except ValueError:
            pass
    return out


def assert_no_key_of(server, tenant_id, erased, secrets_=()):
    """No wrapped or unwrapped data key of the `erased` {scheme: versions} (nor any of `secrets_`)
    is left in any column of any table or in the variables."""
    material = key_material(server.state_dir)
    for scheme, versions in erased.items():
        assert deks_of(material, tenant_id, scheme, versions) == [], scheme
    for rows in store.tables(server.state_dir).values():
        for row in rows:
            for v in row:
                if isinstance(v, str) and v.startswith("veil.1."):
                    raise AssertionError("a token is stored")
    return material


def scope_cert_checks(tmp_path, server, cert, scope, tenant_id, key_versions):
    assert (cert["scope"], cert["tenant"], cert["key_versions"]) == (scope, tenant_id, key_versions)
    assert cert["schemes"] == sorted(key_versions)
    jwks = ok(server.api(None).get("/.well-known/veil/erasure-keys"))
    assert vf.verify_certificate(cert, jwks)
    r = verify_cli(tmp_path, cert, jwks)
    assert r.returncode == 0 and cert["certificate_id"] in r.stdout, r.stderr
    first = next(iter(key_versions))
    for field, value in [("tenant", tenant_id + "x"), ("scope", "subject"), ("schemes", []),
                         ("key_versions", {first: key_versions[first][:-1]}), ("erased_at", cert["erased_at"] + 1)]:
        bad = dict(cert, **{field: value})
        assert not vf.verify_certificate(bad, jwks), field
        r = verify_cli(tmp_path, bad, jwks)
        assert r.returncode == 1 and "does NOT verify" in r.stderr, (field, r.stderr)


def test_scheme_erase_leaves_no_key_of_the_scheme(server, tenant, tmp_path):
    gone = tenant.create_scheme()["name"]
    kept = tenant.create_scheme()["name"]
    other = server.tenant()
    theirs = other.create_scheme(gone)["name"]  # the same name in another tenant
    v1 = tenant.protect(gone, ["plain v1"])
    ok(tenant.admin.post(f"/v1/schemes/{gone}/rotate"))
    v2 = tenant.protect(gone, ["plain v2"]) + tenant.protect(gone, ["alice v2"], subject="alice")
    mine = tenant.protect(kept, ["kept"], subject="alice")
    their = other.protect(theirs, ["theirs"])
    before = key_material(server.state_dir)
    deks = deks_of(before, tenant.id, gone, [1, 2])
    assert len(deks) == 2 and opens_plain(tenant.id, v1[0], before) and opens_plain(tenant.id, v2[0], before)

    path = f"/v1/schemes/{gone}/erase"
    err(tenant.app.post(path, {"confirm": gone}), 403, "forbidden")
    err(tenant.privacy.post(path, {"confirm": gone}), 403, "forbidden")
    for body in ({}, {"confirm": kept}, {"confirm": gone.upper()}, {"confirm": tenant.id}):
        e = err(tenant.admin.post(path, body), 409, "confirmation_mismatch")
        assert kept not in json.dumps(e), e
    err(tenant.admin.post(path, {"confirm": gone, "extra": 1}), 400, "invalid_request")
    assert tenant.unprotect(v1) == ["plain v1"], "a refused erase erases nothing"

    cert = ok(tenant.admin.post(path, {"confirm": gone}))
    scope_cert_checks(tmp_path, server, cert, "scheme", tenant.id, {gone: [1, 2]})
    after = assert_no_key_of(server, tenant.id, {gone: [1, 2]})
    for b in after + variable_bytes(server):
        assert not any(d in b for d in deks), "an unwrapped data key is left"
    assert not opens_plain(tenant.id, v1[0], after) and not opens_plain(tenant.id, v2[0], after)
    assert not opens_with_any_or_none(tenant.id, gone, v2[1], "alice", after)
    results = tenant.unprotect_results(v1 + v2[:1])
    assert item_errors(results) == ["key_version_destroyed"] * 2
    assert item_errors(tenant.unprotect_results(v2[1:], subject="alice")) == ["key_version_destroyed"]
    # The rest of the tenant and the other tenant are untouched.
    assert tenant.unprotect(mine, subject="alice") == ["kept"]
    assert opens_with_any(tenant.id, kept, mine[0], "alice", after)
    assert other.unprotect(their) == ["theirs"] and opens_plain(other.id, their[0], after)

    # Refused on the erased scheme; the versions stay, as destroyed.
    err(tenant.app.post("/v1/protect", {"scheme": gone, "values": ["x"]}), 409, "scheme_erased")
    err(tenant.analyst.post("/v1/mask", {"scheme": gone, "values": ["x"]}), 409, "scheme_erased")
    err(tenant.admin.post(f"/v1/schemes/{gone}/rotate"), 409, "scheme_erased")
    err(tenant.admin.request("PATCH", f"/v1/schemes/{gone}", {"rotation_period": "1d"}), 409, "scheme_erased")
    err(tenant.admin.post(f"/v1/schemes/{gone}/rekey"), 409, "scheme_erased")
    versions = ok(tenant.admin.get(f"/v1/schemes/{gone}/versions"))["versions"]
    assert [(v["version"], v["state"]) for v in versions] == [(1, "destroyed"), (2, "destroyed")]
    assert ok(tenant.admin.get(f"/v1/schemes/{gone}"))["erased_at"] is not None

    # Idempotent and stored; the name is reused only by creating a new scheme.
    assert ok(tenant.admin.post(path, {"confirm": gone})) == cert
    assert ok(tenant.admin.get(f"/v1/erasures/{cert['certificate_id']}")) == cert
    fresh = tenant.create_scheme(gone)
    assert (fresh["current_version"], fresh["min_decryption_version"], fresh["erased_at"]) == (3, 3, None)
    err(tenant.admin.post("/v1/schemes", tenant.scheme_body(gone)), 409, "scheme_exists")
    new = tenant.protect(gone, ["new data"])
    assert vf.parse_token(new[0])[1] == 3 and tenant.unprotect(new) == ["new data"]
    assert item_errors(tenant.unprotect_results(v1 + v2[:1])) == ["key_version_destroyed"] * 2
    assert not opens_plain(tenant.id, v1[0], key_material(server.state_dir))


def opens_with_any_or_none(tenant_id, scheme, token, subject, material):
    """Like opens_with_any, but False (not an assertion) when no data key is left at all."""
    _, version, _ = vf.parse_token(token)
    if not deks_of(material, tenant_id, scheme, [version]):
        return False
    return opens_with_any(tenant_id, scheme, token, subject, material)


def test_tenant_erase_leaves_no_key_of_the_tenant(server, tenant, tmp_path):
    a = tenant.create_scheme()["name"]
    b = tenant.create_scheme()["name"]
    other = server.tenant()
    theirs = other.create_scheme()["name"]
    ta = tenant.protect(a, ["a1"]) + tenant.protect(a, ["alice a"], subject="alice")
    ok(tenant.admin.post(f"/v1/schemes/{b}/rotate"))
    tb = tenant.protect(b, ["bob b"], subject="bob")
    their = other.protect(theirs, ["theirs"], subject="alice")
    before = key_material(server.state_dir)
    deks = deks_of(before, tenant.id, a, [1]) + deks_of(before, tenant.id, b, [1, 2])
    assert len(deks) == 3
    digests = {bytes.fromhex(vf.subject_digest(ROOT, tenant.id, s)) for s in ("alice", "bob")}
    secrets_before = [bytes(r[2]) for r in store.tables(server.state_dir)["subjects"]
                      if r[0] == tenant.id and bytes(r[1]) in digests]
    assert len(secrets_before) == 2

    err(tenant.privacy.post("/v1/tenant/erase", {"confirm": tenant.id}), 403, "forbidden")
    for body in ({}, {"confirm": other.id}, {"confirm": a}):
        err(tenant.admin.post("/v1/tenant/erase", body), 409, "confirmation_mismatch")
    cert = ok(tenant.admin.post("/v1/tenant/erase", {"confirm": tenant.id}))
    scope_cert_checks(tmp_path, server, cert, "tenant", tenant.id, {a: [1], b: [1, 2]})
    assert cert["subject_secrets_deleted"] == 2

    after = assert_no_key_of(server, tenant.id, {a: [1], b: [1, 2]})
    for blob in after + variable_bytes(server):
        assert not any(d in blob for d in deks + secrets_before), "a key of the erased tenant is left"
    assert [r for r in store.tables(server.state_dir)["subjects"] if r[0] == tenant.id] == []
    assert not opens_plain(tenant.id, ta[0], after)
    assert item_errors(tenant.unprotect_results(ta[:1])) == ["key_version_destroyed"]
    assert item_errors(tenant.unprotect_results(ta[1:], subject="alice")) == ["key_version_destroyed"]
    assert item_errors(tenant.unprotect_results(tb, subject="bob")) == ["key_version_destroyed"]
    for s in (a, b):
        err(tenant.app.post("/v1/protect", {"scheme": s, "values": ["x"]}), 409, "scheme_erased")
    # Another tenant's tokens still open, through Veil and with the raw material.
    assert other.unprotect(their, subject="alice") == ["theirs"]
    assert opens_with_any(other.id, theirs, their[0], "alice", after)

    # Idempotent; each erased scheme answers with the tenant's certificate.
    assert ok(tenant.admin.post("/v1/tenant/erase", {"confirm": tenant.id})) == cert
    assert ok(tenant.admin.post(f"/v1/schemes/{a}/erase", {"confirm": a})) == cert
    assert ok(tenant.privacy.get(f"/v1/erasures/{cert['certificate_id']}")) == cert
    err(other.admin.get(f"/v1/erasures/{cert['certificate_id']}"), 404, "erasure_not_found")


def test_verify_erasure_fetches_the_keys_from_a_url(server, tenant, tmp_path):
    name = tenant.create_scheme()["name"]
    cert = ok(tenant.admin.post(f"/v1/schemes/{name}/erase", {"confirm": name}))
    (tmp_path / "cert.json").write_text(json.dumps(cert))
    veil, _ = binaries()
    url = server.url + "/.well-known/veil/erasure-keys"

    def run(*args):
        return subprocess.run([veil, "verify-erasure", tmp_path / "cert.json", *args],
                              capture_output=True, text=True, timeout=60)

    r = run("--keys", url)
    assert r.returncode == 0 and cert["certificate_id"] in r.stdout, r.stderr
    (tmp_path / "cert.json").write_text(json.dumps(dict(cert, tenant="someone-else")))
    r = run("--keys", url)
    assert r.returncode == 1 and "does NOT verify" in r.stderr, r.stderr
    (tmp_path / "cert.json").write_text(json.dumps(cert))
    dead = f"http://127.0.0.1:{free_port()}/.well-known/veil/erasure-keys"
    r = run("--keys", dead)
    assert r.returncode == 2 and "could not fetch the verification keys from " + dead in r.stderr, r.stderr
    assert "verifies" not in r.stdout
    r = run("--keys", server.url + "/no-such-path")
    assert r.returncode == 2 and "HTTP status 404" in r.stderr, r.stderr


def test_rotations_racing_a_scheme_erase_never_leave_a_live_version(tenant):
    for round_ in range(2):
        name = tenant.create_scheme()["name"]
        statuses, errors = [], []

        def rotate():
            try:
                for _ in range(2):
                    r = tenant.admin.post(f"/v1/schemes/{name}/rotate")
                    statuses.append((r.status_code, r.json().get("error", {}).get("code")))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=rotate) for _ in range(3)]
        for t in threads:
            t.start()
        cert = ok(tenant.admin.post(f"/v1/schemes/{name}/erase", {"confirm": name}))
        for t in threads:
            t.join()
        assert errors == [], errors
        assert {s for s in statuses} <= {(200, None), (409, "scheme_erased")}, statuses
        versions = ok(tenant.admin.get(f"/v1/schemes/{name}/versions"))["versions"]
        assert {v["state"] for v in versions} == {"destroyed"}, (round_, versions)
        # The certificate lists the versions it destroyed; a rotation after it added none.
        assert cert["key_versions"][name] == [v["version"] for v in versions], (round_, cert, versions)
        err(tenant.app.post("/v1/protect", {"scheme": name, "values": ["x"]}), 409, "scheme_erased")
