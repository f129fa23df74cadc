"""The OpenAPI document is exact (issue 19 item 10): what /v1/openapi.json says is what the real
component answers through the real host, checked field by field here and by schemathesis, the
property-based tester, over every route (docs/testing.md, "Schemathesis")."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from veilkit import TIMEOUT, err, hs256, new_name, ok

# The CI run: bounded and seeded, every phase, every check. The release run (docs/testing.md)
# raises SCHEMATHESIS_MAX_EXAMPLES and adds a time budget with SCHEMATHESIS_MAX_TIME.
SEED = 19
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "12"))
MAX_TIME = os.environ.get("SCHEMATHESIS_MAX_TIME")
RUN_TIMEOUT = int(os.environ.get("SCHEMATHESIS_TIMEOUT", "600"))
ROLES = ("admin", "app", "support", "analyst")
TRANSIT_OPERATIONS = ("transitListKeys", "transitReadKey", "transitCreateKey", "transitDeleteKey", "transitRotateKey",
                      "transitConfigKey", "transitTrimKey", "transitEncrypt", "transitDecrypt", "transitRewrap", "transitDataKey",
                      "transitHmac", "transitVerify", "transitRandom", "transitHash")


def schemathesis_bin() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    assert exe.is_file(), f"schemathesis is not installed beside {sys.executable} (tests/requirements.txt)"
    return str(exe)


def document(server) -> dict:
    return ok(requests.get(server.url + "/v1/openapi.json", timeout=TIMEOUT))


def schema(doc, name):
    return doc["components"]["schemas"][name]


def test_schemathesis_finds_nothing(start_server, tmp_path):
    """Examples, coverage, fuzzing and stateful phases with `--checks all`: no server error, no
    schema-valid request refused, no schema-violating request accepted, every status, header and
    body as documented."""
    # kek_allow names no key that exists: a scheme or rekey naming a vault key is the documented
    # 403 `kek_not_allowed` before any vault is asked.
    s = start_server("schemathesis", max_batch="16", max_value_bytes="256",
                     kek_allow="*=https://none.vault.azure.net/keys/none")
    tenant = f"t-st-{SEED}"
    token = hs256(tenant, ROLES, exp=2**31 - 1)
    # A scheme the examples name ("pii", "cards"), so that their protect/mask/get requests reach
    # the data path and not only 404.
    pii = {"name": "pii", "kek": {"provider": "local"},
           "policy": {r: list(ROLES) for r in ("protect", "unprotect", "mask", "admin")},
           "mask": {"rule": "keep_last", "n": 4, "char": "*"}}
    ok(s.api(token).post("/v1/schemes", pii), 201)
    # The one accepted server error: a scheme on a vault this deployment has no credentials for
    # (schemathesis_hooks.py checks that every 500 of createScheme is exactly that).
    # And a request over `maxItems` is refused with the documented 413 `batch_too_large`, a
    # rejection that schemathesis's default list (400, 422, ...) does not name.
    (tmp_path / "schemathesis.toml").write_text(
        '[checks.negative_data_rejection]\nexpected-statuses = ["400", "401", "403", "404", "405", "406", '
        '"409", "413", "415", "422", "428", "429", "5xx"]\n\n'
        '[[operations]]\ninclude-operation-id = "createScheme"\n'
        'checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "500"]\n'
        # The warehouse routes' fail-the-batch mode (`on_error`/`on-error` = `fail`) answers a
        # schema-valid batch with 422 `row_failed` when a row fails, which depends on the rows'
        # content (is it a token of this scheme?), not on anything a schema can state.
        + "".join(f'\n[[operations]]\ninclude-operation-id = "{op}"\n'
                  'checks.positive_data_acceptance.expected-statuses = '
                  '["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]\n'
                  for op in ("snowflakeCall", "snowflakeCallInPath", "bigqueryCall"))
        # The Transit-compatible routes answer every mistake of the caller with Transit's 400,
        # including those that depend on state rather than on the body (a key that does not exist
        # on a data route, a ciphertext of another key) and on field combinations the loose
        # Transit schema does not state; test_compat_transit.py holds them to a real OpenBao.
        + "".join(f'\n[[operations]]\ninclude-operation-id = "{op}"\n'
                  'checks.positive_data_acceptance.expected-statuses = '
                  '["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]\n'
                  for op in TRANSIT_OPERATIONS))
    cmd = [schemathesis_bin(), "run", s.url + "/v1/openapi.json",
           "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
           "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
           "--header", f"Authorization: Bearer {token}", "--request-timeout", "30",
           "--suppress-health-check", "too_slow", "--no-color"]
    if MAX_TIME:
        cmd += ["--max-time", MAX_TIME]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                       env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
                            "PYTHONPATH": str(Path(__file__).parent)})
    out = (r.stdout + r.stderr).replace(token, "<token>")
    assert r.returncode == 0, f"schemathesis found something (exit {r.returncode}):\n{out[-12000:]}"
    assert re.search(r"\b\d+ passed\b", out) or "No issues found" in out, out[-3000:]


def test_served_document_states_the_configured_batch_limit(start_server):
    s = start_server("batch-doc", max_batch="7")
    assert schema(document(s), "Values")["maxItems"] == 7
    t = s.tenant()
    name = t.create_scheme()["name"]
    assert len(t.protect(name, ["x"] * 7)) == 7
    err(t.app.post("/v1/protect", {"scheme": name, "values": ["x"] * 8}), 413, "batch_too_large")


KEY_URLS = [
    # (url, well-formed)
    ("https://contoso.vault.azure.net/keys/veil-kek", True),
    ("https://contoso.vault.azure.net/keys/veil-kek/0123456789abcdef0123456789abcdef", True),
    ("https://a-b.c.managedhsm.azure.net:8443/keys/K-1/v2", True),
    ("https://x.vault.azure.cn/keys/k", True),
    ("https://x.vault.usgovcloudapi.net/keys/k", True),
    ("https://x.vault.microsoftazure.de/keys/k", True),
    ("http://127.0.0.1:8200/keys/k", True),
    ("http://[::1]/keys/k", True),
    ("https://localhost:65535/keys/k", True),
    ("http://169.254.169.254/keys/k", True),
    ("", False),
    ("not a url", False),
    ("https://vault.azure.net/keys/k", False),
    ("http://contoso.vault.azure.net/keys/k", False),
    ("https://contoso.vault.azure.net/keys/", False),
    ("https://contoso.vault.azure.net/keys/k/", False),
    ("https://contoso.vault.azure.net/keys/k/v/extra", False),
    ("https://contoso.vault.azure.net/secrets/k", False),
    ("https://contoso.vault.azure.net:65536/keys/k", False),
    ("https://contoso.vault.azure.net:0443/keys/k", False),
    ("https://contoso.vault.azure.net/keys/k?api-version=7.4", False),
    ("https://contoso.vault.azure.net/keys/k#x", False),
    ("https://user@contoso.vault.azure.net/keys/k", False),
    ("https://contoso.vault.azure.net.example.com/keys/k", False),
    ("https://example.com/keys/k", False),
    ("http://10.0.0.1/keys/k", False),
    ("https://127.0.0.256/keys/k", False),
    ("https://contoso.vault.azure.net/keys/k_1", False),
    (" https://contoso.vault.azure.net/keys/k", False),
    ("https://contoso.vault.azure.net/keys/k\n", False),
    ("https://contoso.vault.azure.net/keys/" + "k" * 128, False),
]


def test_key_url_pattern_is_what_the_server_accepts(server, tenant):
    """The document's pattern and the server agree on every case: a malformed key URL is the
    caller's 422 `invalid_field` (main answered 500 `misconfigured`, the code for the deployment's
    own variables), and a well-formed one gets past the shape check (this dev deployment has no
    Key Vault credentials: then it is the deployment's 500 `misconfigured`, never `invalid_field`)."""
    prop = schema(document(server), "KekAzureKeyvault")["properties"]["key_url"]
    pattern = re.compile(prop["pattern"])
    for url, good in KEY_URLS:
        # JSON Schema patterns are ECMA-262: `$` is the end of the input, never before a final "\n".
        assert (pattern.search(url) is not None and not url.endswith("\n") and len(url) <= prop["maxLength"]) == good, url
        body = tenant.scheme_body(new_name(), kek={"provider": "azure-keyvault", "key_url": url})
        r = tenant.admin.post("/v1/schemes", body)
        if good:
            assert (r.status_code, r.json()["error"]["code"]) == (500, "misconfigured"), (url, r.text)
        else:
            e = err(r, 422, "invalid_field")
            assert e["message"].startswith("kek.key_url: "), e
            assert not url.strip() or url.strip() not in e["message"], "the message echoes the value"


@pytest.mark.parametrize("key_id, good", [
    ("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", True),
    ("alias/veil", True), ("k" * 2048, True),
    ("", False), (" alias/veil", False), ("alias/a b", False), ("alias/é", False), ("k" * 2049, False),
])
def test_aws_key_id_shape_is_what_the_document_says(server, tenant, key_id, good):
    prop = schema(document(server), "KekAwsKms")["properties"]["key_id"]
    documented = re.fullmatch(prop["pattern"].strip("^$"), key_id) is not None and \
        prop["minLength"] <= len(key_id) <= prop["maxLength"]
    assert documented == good
    r = tenant.admin.post("/v1/schemes", tenant.scheme_body(new_name(), kek={"provider": "aws-kms", "key_id": key_id}))
    if good:  # past the shape check: no AWS credentials in this deployment
        assert (r.status_code, r.json()["error"]["code"]) == (500, "misconfigured"), r.text
    else:
        assert err(r, 422, "invalid_field")["message"].startswith("kek.key_id: ")


def test_mask_rule_limits_are_documented_and_enforced(server, tenant):
    rules = {r["title"]: r["properties"] for r in schema(document(server), "MaskRule")["oneOf"]}
    assert rules["keep_last"]["n"]["maximum"] == rules["keep_first"]["n"]["maximum"] == 4096
    assert (rules["fixed"]["length"]["minimum"], rules["fixed"]["length"]["maximum"]) == (1, 4096)
    char = re.compile(rules["email"]["char"]["pattern"])
    for mask, accepted in [({"rule": "keep_last", "n": 4096}, True), ({"rule": "keep_last", "n": 4097}, False),
                           ({"rule": "fixed", "length": 1}, True), ({"rule": "fixed", "length": 0}, False),
                           ({"rule": "fixed", "length": 4097}, False), ({"rule": "email", "char": "█"}, True),
                           ({"rule": "email", "char": "\u0085"}, False), ({"rule": "email", "char": "\x7f"}, False),
                           ({"rule": "email", "char": "\t"}, False), ({"rule": "keep_first", "n": 1, "char": " "}, True)]:
        if "char" in mask:
            assert (char.search(mask["char"]) is not None) == accepted, mask
        r = tenant.admin.post("/v1/schemes", tenant.scheme_body(new_name(), mask=mask))
        if accepted:
            ok(r, 201)
        else:
            err(r, 422, "invalid_field")


@pytest.mark.parametrize("path, body", [
    ("/v1/protect", {"values": ["x"], "context": None}),
    ("/v1/protect", {"values": ["x"], "subject": None}),
    ("/v1/unprotect", {"values": [], "context": None}),
    ("/v1/unprotect", {"values": [], "subject": None}),
])
def test_null_where_the_document_says_string_is_refused(tenant, path, body):
    """`"context": null` was accepted as "no context" on main although the document says string."""
    name = tenant.create_scheme()["name"]
    api = tenant.app if path == "/v1/protect" else tenant.support
    if path == "/v1/protect":
        body = {"scheme": name, **body}
    err(api.post(path, body), 400, "invalid_request")
    assert tenant.unprotect(tenant.protect(name, ["x"])) == ["x"]


@pytest.mark.parametrize("field", ["algorithm", "mask", "description", "policy"])
def test_null_optional_scheme_fields_are_refused(tenant, field):
    body = tenant.scheme_body(new_name())
    body[field] = None
    r = tenant.admin.post("/v1/schemes", body)
    assert r.status_code in (400, 422) and r.json()["error"]["code"] in ("invalid_request", "invalid_field"), r.text
    err(tenant.admin.get(f"/v1/schemes/{body['name']}"), 404, "scheme_not_found")


@pytest.mark.parametrize("period, good", [
    ("1s", True), ("30d", True), ("3650d", True), ("87600h", True), ("5256000m", True), ("315360000s", True),
    ("3651d", False), ("87601h", False), ("5256001m", False), ("315360001s", False),
    ("0d", False), ("01d", False), ("1w", False), ("99999999999s", False),
])
def test_rotation_period_pattern_is_what_the_server_accepts(server, tenant, period, good):
    prop = schema(document(server), "RotationPeriod")
    assert (re.search(prop["pattern"], period) is not None) == good, period
    r = tenant.admin.post("/v1/schemes", {**tenant.scheme_body(new_name()), "rotation_period": period})
    if good:
        assert ok(r, 201)["rotation_period"] is not None
    else:
        assert "rotation_period" in err(r, 422, "invalid_field")["message"]
