"""Issue 15 item 3: BigQuery remote functions, with request bodies in BigQuery's documented shape
(`requestId`, `caller`, `sessionUser`, `userDefinedContext`, `calls`) → `replies` / `errorMessage`."""
import pytest

from veilkit import ok

POLICY = {"protect": ["app"], "unprotect": ["app"], "rewrap": ["app"], "mask": ["app"], "admin": ["admin"]}


@pytest.fixture
def scheme(tenant):
    return tenant.create_scheme(policy=POLICY, mask={"rule": "keep_first", "n": 2, "char": "#"})["name"]


def body(scheme, op, calls, **context):
    return {"requestId": "124ab1c",
            "caller": "//bigquery.googleapis.com/projects/myproject/jobs/myproject:US.bquxjob_5b4c112c_17961fafeaf",
            "sessionUser": "test-user@test-company.com",
            "userDefinedContext": {"scheme": scheme, "operation": op, **context},
            "calls": calls}


def bq_err(resp, status, code):
    """BigQuery's `errorMessage` (what the query's user sees) beside Veil's `error`."""
    assert resp.status_code == status, resp.text
    b = resp.json()
    assert set(b) == {"errorMessage", "error"}, b
    assert b["error"]["code"] == code, b
    assert b["errorMessage"] == f"{code}: {b['error']['message']}", b
    return b["error"]


def test_replies_in_order_with_nulls(tenant, scheme):
    calls = [["4111111111111111"], [None], [""], ["日本語"]]
    replies = ok(tenant.app.post("/v1/bigquery", body(scheme, "protect", calls)))["replies"]
    assert len(replies) == 4 and replies[1] is None
    assert all(r.startswith(f"veil.1.{scheme}.1.") for i, r in enumerate(replies) if i != 1)
    back = [[r] for r in reversed(replies)]
    assert ok(tenant.app.post("/v1/bigquery", body(scheme, "unprotect", back))) == \
        {"replies": ["日本語", "", None, "4111111111111111"]}
    assert ok(tenant.app.post("/v1/bigquery", body(scheme, "mask", calls))) == \
        {"replies": ["41##############", None, "", "日本#"]}
    assert ok(tenant.app.post("/v1/bigquery", body(scheme, "protect", []))) == {"replies": []}


def test_failed_call_is_null_or_fails_the_request(tenant, scheme):
    other = tenant.create_scheme(policy=POLICY)["name"]
    mine, theirs = tenant.protect(scheme, ["mine"])[0], tenant.protect(other, ["theirs"])[0]
    calls = [[mine], [theirs], ["junk"]]
    assert ok(tenant.app.post("/v1/bigquery", body(scheme, "unprotect", calls))) == {"replies": ["mine", None, None]}
    e = bq_err(tenant.app.post("/v1/bigquery", body(scheme, "unprotect", calls, on_error="fail")), 422, "row_failed")
    assert e["message"].startswith("row 1 of the batch (counting from 0) failed with scheme_mismatch")
    assert theirs not in e["message"]


def test_whole_request_errors_carry_error_message(tenant, scheme):
    bq_err(tenant.app.post("/v1/bigquery", body(scheme, "decrypt", [["x"]])), 400, "invalid_request")
    bq_err(tenant.app.post("/v1/bigquery", body(scheme, "protect", [["x"]], on_error="sometimes")),
           400, "invalid_request")
    bq_err(tenant.app.post("/v1/bigquery", body(scheme, "protect", [["x"]], extra="y")), 400, "invalid_request")
    bq_err(tenant.app.post("/v1/bigquery", body(scheme, "protect", [["x", "y"]])), 400, "invalid_request")
    bq_err(tenant.app.post("/v1/bigquery", body(scheme, "protect", [[5]])), 400, "invalid_request")
    bq_err(tenant.app.post("/v1/bigquery", {"calls": [["x"]]}), 400, "invalid_request")
    bq_err(tenant.app.post("/v1/bigquery", body("no-such", "protect", [["x"]])), 404, "scheme_not_found")
    bq_err(tenant.analyst.post("/v1/bigquery", body(scheme, "protect", [["x"]])), 403, "forbidden")
    r = tenant.server.api(None).post("/v1/bigquery", body(scheme, "protect", [["x"]]))
    bq_err(r, 401, "unauthenticated")
    bq_err(tenant.app.post("/v1/bigquery", data=b"{", headers={"content-type": "application/json"}),
           400, "invalid_json")


def test_batch_limit(start_server):
    s = start_server("bigquery-batch", max_batch="2")
    t = s.tenant()
    a = t.create_scheme(policy=POLICY)["name"]
    assert len(ok(t.app.post("/v1/bigquery", body(a, "protect", [["a"], ["b"]])))["replies"]) == 2
    bq_err(t.app.post("/v1/bigquery", body(a, "protect", [["a"], ["b"], ["c"]])), 413, "batch_too_large")
