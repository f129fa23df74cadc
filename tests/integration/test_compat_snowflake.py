"""Issue 15 item 2: Snowflake external functions, with request bodies in Snowflake's documented
batch format (`{"data": [[row_number, value], ...]}`) and the headers Snowflake sends."""
import pytest

from veilkit import err, ok

POLICY = {"protect": ["app"], "unprotect": ["app"], "rewrap": ["app"], "mask": ["app"], "admin": ["admin"]}

# What Snowflake sends with every batch (docs.snowflake.com, "Remote service input and output
# data formats"): tolerated, not needed.
SF_HEADERS = {
    "sf-external-function-format": "json",
    "sf-external-function-format-version": "1.0",
    "sf-external-function-query-batch-id": "01a2b3c4-0000-0000-0000-000000000000:0",
    "sf-external-function-current-query-id": "01a2b3c4-0000-0000-0000-000000000000",
    "sf-external-function-name": "VEIL_PROTECT",
    "sf-external-function-name-base64": "VkVJTF9QUk9URUNU",
    "sf-external-function-signature": "(VALUE VARCHAR)",
    "sf-external-function-return-type": "VARCHAR(16777216)",
}


@pytest.fixture
def scheme(tenant):
    return tenant.create_scheme(policy=POLICY, mask={"rule": "keep_last", "n": 4, "char": "*"})["name"]


def call(tenant, op, rows, scheme=None, in_path=False, **headers):
    h = dict(SF_HEADERS)
    path = f"/v1/snowflake/{op}"
    if in_path:
        path += f"/{scheme}"
    elif scheme is not None:
        h["sf-custom-scheme"] = scheme
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return tenant.app.post(path, {"data": rows}, headers=h)


def test_round_trip_keeps_row_numbers_order_and_nulls(tenant, scheme):
    # Snowflake numbers rows from 0 within a batch; order is not assumed sorted.
    rows = [[3, "4111111111111111"], [0, None], [2, ""], [1, "ünï 🙂"]]
    out = ok(call(tenant, "protect", rows, scheme))["data"]
    assert [r[0] for r in out] == [3, 0, 2, 1]
    assert out[1] == [0, None]
    assert all(r[1].startswith(f"veil.1.{scheme}.1.") for r in out if r[0] != 0)
    back = ok(call(tenant, "unprotect", out, scheme, in_path=True))["data"]
    assert back == rows
    masked = ok(call(tenant, "mask", rows, scheme))["data"]
    assert masked == [[3, "************1111"], [0, None], [2, ""], [1, "*nï 🙂"]]


def test_a_failed_row_is_null_or_fails_the_batch(start_server):
    s = start_server("snowflake-limits", max_value_bytes="8")
    t = s.tenant()
    a = t.create_scheme(policy=POLICY)["name"]
    b = t.create_scheme(policy=POLICY)["name"]
    tb = t.protect(b, ["other"])[0]
    ta = t.protect(a, ["mine"])[0]
    rows = [[0, ta], [1, tb], [2, "not a token"], [3, None]]
    assert ok(call(t, "unprotect", rows, a))["data"] == [[0, "mine"], [1, None], [2, None], [3, None]]
    e = err(call(t, "unprotect", rows, a, sf_custom_on_error="fail"), 422, "row_failed")
    assert e["message"] == ("row 1 of the batch (counting from 0) failed with scheme_mismatch: "
                            "the token belongs to another scheme than the request's \"scheme\"")
    assert tb not in e["message"]
    big = "123456789"  # over max_value_bytes
    assert ok(call(t, "protect", [[0, big], [1, "ok"]], a))["data"][0] == [0, None]
    e = err(call(t, "protect", [[0, "ok"], [1, big]], a, sf_custom_on_error="fail"), 422, "row_failed")
    assert big not in e["message"] and "value_too_large" in e["message"]
    # rewrap keeps tokens and row numbers
    assert ok(call(t, "rewrap", [[5, ta]], a, in_path=True))["data"] == [[5, ta]]


def test_whole_batch_errors(tenant, scheme):
    err(call(tenant, "protect", [[0, "x"]]), 400, "invalid_request")  # no scheme at all
    err(call(tenant, "protect", [[0, "x"]], scheme, in_path=True, sf_custom_scheme="other"), 400, "invalid_request")
    err(call(tenant, "protect", [[0, "x"]], scheme, sf_custom_on_error="maybe"), 400, "invalid_request")
    err(call(tenant, "protect", [[0, "x"]], "no-such"), 404, "scheme_not_found")
    err(call(tenant, "encrypt", [[0, "x"]], scheme, in_path=True), 404, "not_found")
    v = "4111111111111111"
    for bad in ([[0]], [[0, v, v]], [[v, v]], [[-1, v]], [[1.5, v]], [[4294967296, v]], [[0, 4111]], [0, v]):
        e = err(call(tenant, "protect", bad, scheme), 400, "invalid_request")
        assert "4111" not in e["message"], e
    # an integral row number written with a fraction is an integer to JSON Schema: echoed as sent
    r = call(tenant, "mask", [[3.0, "abcdef"]], scheme)
    assert ok(r)["data"] == [[3, "**cdef"]] and r.text == '{"data":[[3.0,"**cdef"]]}', r.text
    err(tenant.app.post(f"/v1/snowflake/protect/{scheme}", {"rows": []}), 400, "invalid_request")
    # the unprotect role is needed for the whole batch
    tok = tenant.protect(scheme, ["v"])[0]
    err(tenant.analyst.post(f"/v1/snowflake/unprotect/{scheme}", {"data": [[0, tok]]}), 403, "forbidden")
    r = tenant.app.request("GET", f"/v1/snowflake/protect/{scheme}")
    err(r, 405, "method_not_allowed")


def test_batch_limit(start_server):
    s = start_server("snowflake-batch", max_batch="3")
    t = s.tenant()
    a = t.create_scheme(policy=POLICY)["name"]
    assert len(ok(call(t, "protect", [[i, "v"] for i in range(3)], a))["data"]) == 3
    err(call(t, "protect", [[i, "v"] for i in range(4)], a), 413, "batch_too_large")
