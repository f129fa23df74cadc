"""POST /v1/protect and /v1/unprotect: round trips, bindings, tampering, isolation."""
import base64
import re

import pytest

from veilkit import TOKEN_RE, item_errors, new_name, ok

MAX_VALUE_BYTES = 65536  # the manifest default, which the shared server runs with
NON_UTF8 = b"\xbb>\x1e\x89\xfe\xafu.\x00"  # invalid UTF-8; its base64 is alphanumeric in every alphabet
NON_UTF8_B64 = "uz4eif6vdS4A"


def b64decode_any(s: str) -> bytes:
    s = s.replace("-", "+").replace("_", "/")
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def retoken(token: str, scheme=None, version=None, payload=None) -> str:
    prefix, fmt, s, v, p = token.split(".")
    assert (prefix, fmt) == ("veil", "1"), token
    return ".".join([prefix, fmt, scheme or s, str(version or v), payload if payload is not None else p])


def flip_payload_char(token: str, i: int = 0) -> str:
    """Changes one payload character to another base64url character: still well-formed, no longer authentic."""
    p = token.split(".")[4]
    c = "B" if p[i] != "B" else "C"
    return retoken(token, payload=p[:i] + c + p[i + 1:])


def truncate(token: str) -> str:
    """Drops the last 3 bytes' worth of payload, keeping a canonical base64url length (a multiple of 4)."""
    p = token.split(".")[4]
    return retoken(token, payload=p[:(len(p) // 4 - 1) * 4])


@pytest.fixture
def scheme(tenant):
    return tenant.create_scheme()["name"]


def test_batch_round_trip_is_byte_identical(tenant, scheme):
    values = ["", "a", "ünïcødé — 日本語 🙂 e\u0301", "a\u0000b\r\n\t\"\\/", "4111111111111111",
              "x" * MAX_VALUE_BYTES, "é" * (MAX_VALUE_BYTES // 2)]
    body = ok(tenant.app.post("/v1/protect", {"scheme": scheme, "values": values}))
    assert body["scheme"] == scheme and body["key_version"] == 1
    assert item_errors(body["results"]) == [None] * len(values), [r.get("error") for r in body["results"]]
    tokens = [r["value"] for r in body["results"]]
    assert [t for t in tokens if not re.fullmatch(TOKEN_RE.format(scheme=scheme, version=1), t)] == []
    assert len(set(tokens)) == len(tokens)
    assert tenant.unprotect(tokens) == values


def test_same_plaintext_gives_different_tokens(tenant, scheme):
    tokens = tenant.protect(scheme, ["same", "same"]) + tenant.protect(scheme, ["same"])
    assert len(set(tokens)) == 3
    assert tenant.unprotect(tokens) == ["same"] * 3


def test_base64_encoding_round_trips_arbitrary_bytes(tenant, scheme):
    tokens = tenant.protect(scheme, [NON_UTF8_B64, ""], encoding="base64")
    back = tenant.unprotect(tokens, encoding="base64")
    assert [b64decode_any(v) for v in back] == [NON_UTF8, b""]
    results = tenant.unprotect_results(tokens[:1])  # utf8 is the default
    assert item_errors(results) == ["not_utf8"]
    assert NON_UTF8_B64 not in results[0]["error"]["message"]


def test_base64_encoding_rejects_non_base64_per_item(tenant, scheme):
    body = ok(tenant.app.post("/v1/protect", {"scheme": scheme, "values": ["@@not base64@@", NON_UTF8_B64],
                                              "encoding": "base64"}))
    assert item_errors(body["results"]) == ["invalid_encoding", None]
    assert b64decode_any(tenant.unprotect([body["results"][1]["value"]], encoding="base64")[0]) == NON_UTF8


BOUND = {"subject": "customer-42", "context": "orders.card"}


@pytest.mark.parametrize("given, opens", [
    (BOUND, True),
    ({"subject": "customer-43", "context": "orders.card"}, False),
    ({"context": "orders.card"}, False),
    ({"subject": "customer-42", "context": "orders.cvv"}, False),
    ({"subject": "customer-42"}, False),
    ({}, False),
], ids=["same", "wrong-subject", "no-subject", "wrong-context", "no-context", "neither"])
def test_subject_and_context_are_bound(tenant, scheme, given, opens):
    token = tenant.protect(scheme, ["secret-value"], **BOUND)[0]
    results = tenant.unprotect_results([token], **given)
    assert item_errors(results) == [None if opens else "decryption_failed"]
    if opens:
        assert results[0]["value"] == "secret-value"


def test_unbound_token_does_not_open_with_a_subject(tenant, scheme):
    token = tenant.protect(scheme, ["v"])[0]
    assert item_errors(tenant.unprotect_results([token], subject="customer-42")) == ["decryption_failed"]
    assert item_errors(tenant.unprotect_results([token], context="ctx")) == ["decryption_failed"]
    assert tenant.unprotect([token]) == ["v"]


def test_damaged_tokens_fail_per_item_and_the_rest_succeed(tenant, scheme):
    other = tenant.create_scheme()["name"]
    plain = ["first value", "a rather longer second value to truncate", "third", "fourth", "fifth", "sixth"]
    t = tenant.protect(scheme, plain)
    batch = [
        t[0],
        truncate(t[1]),                                    # truncated (still valid base64url)
        flip_payload_char(t[2], 0),                        # tampered nonce
        flip_payload_char(t[3], len(t[3].split(".")[4]) // 2),  # tampered ciphertext
        retoken(t[4], version=7),                          # a key version the scheme does not have
        retoken(t[5], scheme=other),                       # relabelled to another scheme of the tenant
        retoken(t[5], scheme=new_name("unknown")),         # a scheme unknown in the tenant
        t[5],
    ]
    results = tenant.unprotect_results(batch)
    assert item_errors(results) == [None] + ["decryption_failed"] * 6 + [None]
    assert [results[0]["value"], results[-1]["value"]] == ["first value", "sixth"]
    for r, tok in zip(results[1:-1], batch[1:-1]):
        msg = r["error"]["message"]
        assert tok not in msg and tok.split(".")[4] not in msg and not any(p in msg for p in plain), msg


@pytest.mark.parametrize("garbage", [
    "hello", "", "veil.1.pii", "veil.1.pii.1.%%%%%%%%", "veil.1.pii.x.AAAAAAAAAAAAAAAA", "veil..1..AAAA",
])
def test_garbage_is_invalid_token(tenant, scheme, garbage):
    good = tenant.protect(scheme, ["ok"])[0]
    results = tenant.unprotect_results([garbage, good])
    assert item_errors(results) == ["invalid_token", None]
    assert results[1]["value"] == "ok"


def test_token_of_another_tenant_does_not_open(server):
    a, b = server.tenant(), server.tenant()
    name = new_name("shared")
    a.create_scheme(name)
    b.create_scheme(name)
    token = a.protect(name, ["tenant a's secret"])[0]
    assert item_errors(b.unprotect_results([token])) == ["decryption_failed"]
    assert a.unprotect([token]) == ["tenant a's secret"]


def test_subject_and_context_size_limits_accept_the_maximum(tenant, scheme):
    bound = {"subject": "s" * 256, "context": "c" * 1024}
    tokens = tenant.protect(scheme, ["edge"], **bound)
    assert tenant.unprotect(tokens, **bound) == ["edge"]


def test_value_over_max_is_per_item_error_counted_in_bytes(tenant, scheme):
    values = ["x" * (MAX_VALUE_BYTES + 1), "é" * (MAX_VALUE_BYTES // 2) + "x", "fine"]
    body = ok(tenant.app.post("/v1/protect", {"scheme": scheme, "values": values}))
    assert item_errors(body["results"]) == ["value_too_large", "value_too_large", None]
    assert tenant.unprotect([body["results"][2]["value"]]) == ["fine"]
