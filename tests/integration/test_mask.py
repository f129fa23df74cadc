"""POST /v1/mask: every rule of docs/api.md."""
import re

import pytest

from veilkit import new_name, ok

PAN = "4111111111111111"


@pytest.mark.parametrize("rule, values, expected", [
    ({"rule": "redact"}, [PAN, "x"], ["[REDACTED]", "[REDACTED]"]),
    (None, [PAN], ["[REDACTED]"]),  # the default rule
    ({"rule": "keep_last", "n": 4, "char": "*"}, [PAN], ["************1111"]),
    ({"rule": "keep_last", "n": 2, "char": "#"}, ["abcdef"], ["####ef"]),
    ({"rule": "keep_first", "n": 4, "char": "*"}, [PAN], ["4111************"]),
    ({"rule": "keep_first", "n": 1, "char": "x"}, ["secret"], ["sxxxxx"]),
    ({"rule": "fixed", "length": 8, "char": "*"}, ["short", "a much longer value than eight"], ["********"] * 2),
    ({"rule": "nullify"}, [PAN, "anything"], [None, None]),
], ids=["redact", "default-redact", "keep_last", "keep_last-char", "keep_first", "keep_first-1", "fixed", "nullify"])
def test_rules(tenant, rule, values, expected):
    s = tenant.create_scheme(mask=rule)
    assert tenant.mask(s["name"], values) == expected


def test_email_hides_the_local_part(tenant):
    s = tenant.create_scheme(mask={"rule": "email"})
    values = ["jane.doe@example.com", "zoë@exämple.de", "j@x.io", "not an address", "a@b@c", "@example.com"]
    assert tenant.mask(s["name"], values) == [
        "j*******@example.com", "z**@exämple.de", "*@x.io", "[REDACTED]", "[REDACTED]", "[REDACTED]"]


def test_hmac_is_keyed_deterministic_hex(server):
    a, b = server.tenant(), server.tenant()
    name = new_name("h")
    a.create_scheme(name, mask={"rule": "hmac"})
    b.create_scheme(name, mask={"rule": "hmac"})
    x1, x2, y = a.mask(name, [PAN, PAN, "4111111111111112"])
    assert re.fullmatch(r"[0-9a-f]{64}", x1), x1
    assert x1 == x2 and x1 != y
    assert a.mask(name, [PAN]) == [x1]  # stable across requests
    [other_tenant] = b.mask(name, [PAN])
    assert re.fullmatch(r"[0-9a-f]{64}", other_tenant) and other_tenant != x1
    ok(a.admin.post(f"/v1/schemes/{name}/rotate"))
    [rotated] = a.mask(name, [PAN])  # keyed by the current data key: a new version, a new hash
    assert re.fullmatch(r"[0-9a-f]{64}", rotated) and rotated != x1


def test_mask_of_a_batch_with_unicode_and_empty_values(tenant):
    s = tenant.create_scheme(mask={"rule": "redact"})
    assert tenant.mask(s["name"], ["", "日本語", "a"]) == ["[REDACTED]"] * 3
