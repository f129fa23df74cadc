"""Issue 15 item 5: what PEG and curl users type. `/v1/unprotect` and `/v1/rewrap` take an optional
`scheme` (a token of another scheme is the per-item `scheme_mismatch`); a body without any
content-type is read as JSON; a form body (curl -d's default) is 415 naming the header to add."""
import json

import pytest

from veilkit import err, item_errors, ok

POLICY = {"protect": ["app"], "unprotect": ["app"], "rewrap": ["app"], "admin": ["admin"]}


@pytest.fixture
def two(tenant):
    a = tenant.create_scheme(policy=POLICY)["name"]
    b = tenant.create_scheme(policy=POLICY)["name"]
    return a, b


@pytest.mark.parametrize("path", ["/v1/unprotect", "/v1/rewrap"])
def test_scheme_marks_tokens_of_other_schemes_per_item(tenant, two, path):
    a, b = two
    ta = ok(tenant.app.post("/v1/protect", {"scheme": a, "values": ["alpha"]}))["results"][0]["value"]
    tb = ok(tenant.app.post("/v1/protect", {"scheme": b, "values": ["beta"]}))["results"][0]["value"]
    results = ok(tenant.app.post(path, {"scheme": a, "values": [tb, ta, "not-a-token", tb]}))["results"]
    assert item_errors(results) == ["scheme_mismatch", None, "invalid_token", "scheme_mismatch"], results
    assert results[0]["error"]["message"] == "the token belongs to another scheme than the request's \"scheme\""
    assert tb not in json.dumps(results[0])
    if path == "/v1/unprotect":
        assert results[1]["value"] == "alpha"
    else:
        assert results[1]["value"] == ta  # already at the current version
    # without `scheme` both open, as before
    both = ok(tenant.app.post(path, {"values": [tb, ta]}))["results"]
    assert item_errors(both) == [None, None]


def test_scheme_must_exist_and_be_allowed(tenant, two):
    a, _ = two
    ta = tenant.protect(a, ["x"])[0]
    err(tenant.app.post("/v1/unprotect", {"scheme": "no-such-scheme", "values": [ta]}), 404, "scheme_not_found")
    err(tenant.app.post("/v1/rewrap", {"scheme": "no-such-scheme", "values": []}), 404, "scheme_not_found")
    err(tenant.app.post("/v1/unprotect", {"scheme": "Not A Name", "values": [ta]}), 422, "invalid_field")
    err(tenant.app.post("/v1/unprotect", {"scheme": None, "values": [ta]}), 400, "invalid_request")
    # a role without unprotect on the named scheme is refused even when no token names it
    err(tenant.admin.post("/v1/unprotect", {"scheme": a, "values": []}), 403, "forbidden")


def test_no_content_type_is_read_as_json(tenant, two):
    a, _ = two
    body = json.dumps({"scheme": a, "values": ["plain"]}).encode()
    r = tenant.app.post("/v1/protect", data=body)
    assert "content-type" not in {k.lower() for k in r.request.headers}, r.request.headers
    token = ok(r)["results"][0]["value"]
    r = tenant.app.post("/v1/unprotect", data=json.dumps({"scheme": a, "values": [token]}).encode())
    assert ok(r)["results"] == [{"value": "plain"}]


def test_form_body_is_415_naming_the_header(tenant, two):
    a, _ = two
    # what `curl -d '{"scheme":...}'` sends
    body = json.dumps({"scheme": a, "values": ["x"]})
    e = err(tenant.app.post("/v1/protect", data=body,
                            headers={"content-type": "application/x-www-form-urlencoded"}),
            415, "unsupported_media_type")
    assert e["message"] == ("the body is sent as a form (application/x-www-form-urlencoded, curl -d's default); "
                            "send JSON with the header `Content-Type: application/json` (curl -H), or none")
    e = err(tenant.app.post("/v1/protect", data=body, headers={"content-type": "text/plain"}),
            415, "unsupported_media_type")
    assert e["message"] == "send the body as JSON with the header `Content-Type: application/json`, or none"
