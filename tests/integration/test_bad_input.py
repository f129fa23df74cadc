"""Malformed, mistyped, oversized and misrouted requests: exact status and code, and no damage."""
import json

import pytest

from veilkit import VeilServer, err, item_errors, new_name, ok

MAX_BODY, MAX_BATCH, MAX_VALUE = 4096, 5, 64


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    s = VeilServer(tmp_path_factory.mktemp("limited"), name="limited", max_body_bytes=MAX_BODY,
                   max_batch=MAX_BATCH, max_value_bytes=MAX_VALUE)
    yield s
    s.stop()


@pytest.fixture
def scheme(tenant):
    return tenant.create_scheme()["name"]


def still_works(tenant, scheme):
    assert tenant.unprotect(tenant.protect(scheme, ["still fine"])) == ["still fine"]


ROUTES = ["/v1/protect", "/v1/unprotect", "/v1/mask", "/v1/schemes"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("raw", [
    b'{"scheme": "s", "values": [',
    b"not json",
    b"",
    b'{"scheme": "s", "values": ["a"]} trailing',
    b'{"scheme": "s", "values": ["\xff\xfe"]}',   # invalid UTF-8 inside a string
    b'\xef\xbb\xbf\xc3(',
], ids=["truncated", "text", "empty", "trailing", "invalid-utf8", "bad-bytes"])
def test_not_json_is_400_invalid_json(tenant, scheme, route, raw):
    api = tenant.as_("admin", "app", "support", "analyst")
    err(api.post(route, data=raw, headers={"content-type": "application/json"}), 400, "invalid_json")
    still_works(tenant, scheme)


WRONG_SHAPES = [
    ("/v1/protect", {"scheme": "S", "values": "not a list"}),
    ("/v1/protect", {"scheme": "S", "values": ["ok", 5]}),
    ("/v1/protect", {"scheme": 5, "values": ["x"]}),
    ("/v1/protect", {"values": ["x"]}),
    ("/v1/protect", {"scheme": "S"}),
    ("/v1/protect", {"scheme": "S", "values": ["x"], "bogus": 1}),
    ("/v1/protect", {"scheme": "S", "values": ["x"], "subject": 42}),
    ("/v1/protect", ["S", "x"]),
    ("/v1/unprotect", {"values": [None]}),
    ("/v1/unprotect", {"values": {"a": 1}}),
    ("/v1/unprotect", {"values": [], "extra": True}),
    ("/v1/mask", {"scheme": "S", "values": [["nested"]]}),
    ("/v1/mask", {"scheme": "S", "values": ["x"], "bogus": None}),
    ("/v1/schemes", {"name": 5, "kek": {"provider": "local"}}),
    ("/v1/schemes", {"name": "ok-name", "kek": {"provider": "local"}, "policy": {"protect": "app"}}),
    ("/v1/schemes", {"name": "ok-name", "kek": {"provider": "local"}, "colour": "blue"}),
]


@pytest.mark.parametrize("route, body", WRONG_SHAPES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(WRONG_SHAPES)])
def test_wrong_shape_is_400_invalid_request(tenant, scheme, route, body):
    body = json.loads(json.dumps(body).replace('"S"', json.dumps(scheme)))
    api = tenant.as_("admin", "app", "support", "analyst")
    err(api.post(route, body), 400, "invalid_request")
    still_works(tenant, scheme)
    if route == "/v1/schemes":
        err(tenant.admin.get("/v1/schemes/ok-name"), 404, "scheme_not_found")


def test_content_type_other_than_json_is_415(tenant, scheme):
    body = json.dumps({"scheme": scheme, "values": ["x"]})
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]:
        err(tenant.app.post("/v1/protect", data=body, headers={"content-type": ct}), 415, "unsupported_media_type")
    r = tenant.app.post("/v1/protect", data=body, headers={"content-type": "application/json; charset=utf-8"})
    assert item_errors(ok(r)["results"]) == [None]


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/protect"), ("GET", "/v1/unprotect"), ("PUT", "/v1/mask"),
    ("DELETE", "/v1/schemes"), ("GET", "/v1/schemes/{s}/rotate"), ("POST", "/healthz"),
])
def test_wrong_method_is_405(tenant, scheme, method, path):
    err(tenant.admin.request(method, path.format(s=scheme)), 405, "method_not_allowed")
    still_works(tenant, scheme)


@pytest.mark.parametrize("path", ["/v1/nope", "/v2/protect", "/", "/v1/schemes/a/b/c", "/v1/protect/extra"])
def test_unknown_route_is_404(tenant, path):
    err(tenant.admin.get(path), 404, "not_found")
    err(tenant.admin.post(path, {}), 404, "not_found")


@pytest.mark.parametrize("field, value", [
    ("subject", "s" * 257), ("subject", "é" * 257), ("context", "c" * 1025), ("context", "日" * 1025),
])
def test_subject_and_context_over_limit_are_422(tenant, scheme, field, value):
    """Limits count characters (Unicode code points), as the document's `maxLength` does."""
    token = tenant.protect(scheme, ["x"])[0]
    err(tenant.app.post("/v1/protect", {"scheme": scheme, "values": ["x"], field: value}), 422, "invalid_field")
    err(tenant.support.post("/v1/unprotect", {"values": [token], field: value}), 422, "invalid_field")
    still_works(tenant, scheme)


@pytest.mark.parametrize("field, value", [("subject", "é" * 256), ("context", "日" * 1024)])
def test_subject_and_context_at_the_limit_in_characters_work(tenant, scheme, field, value):
    token = tenant.protect(scheme, ["x"], **{field: value})[0]
    assert tenant.unprotect([token], **{field: value}) == ["x"]


def test_bad_items_change_nothing_else(tenant, scheme):
    before = ok(tenant.admin.get(f"/v1/schemes/{scheme}"))
    listing = ok(tenant.admin.get("/v1/schemes"))
    tokens = tenant.protect(scheme, ["keep me"])
    body = ok(tenant.app.post("/v1/protect", {"scheme": scheme, "values": ["@@", "b2s="], "encoding": "base64"}))
    assert item_errors(body["results"]) == ["invalid_encoding", None]
    assert item_errors(tenant.unprotect_results(["garbage", tokens[0]])) == ["invalid_token", None]
    err(tenant.app.post("/v1/protect", {"scheme": scheme, "values": ["x"], "subject": "s" * 300}), 422, "invalid_field")
    err(tenant.admin.post("/v1/schemes", tenant.scheme_body(new_name(), mask={"rule": "nope"})), 422, "invalid_field")
    assert ok(tenant.admin.get(f"/v1/schemes/{scheme}")) == before
    assert ok(tenant.admin.get("/v1/schemes")) == listing
    assert tenant.unprotect(tokens) == ["keep me"]


# ---------------------------------------------------------------- limits (a server with small limits)

def padded(body: dict, size: int) -> bytes:
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))  # JSON whitespace


def test_body_limit_is_exact(limited):
    t = limited.tenant()
    s = t.create_scheme()["name"]
    body = {"scheme": s, "values": ["x"]}
    r = t.app.post("/v1/protect", data=padded(body, MAX_BODY), headers={"content-type": "application/json"})
    assert item_errors(ok(r)["results"]) == [None]
    r = t.app.post("/v1/protect", data=padded(body, MAX_BODY + 1), headers={"content-type": "application/json"})
    err(r, 413, "body_too_large")
    r = t.app.post("/v1/protect", data=padded(body, 64 * 1024), headers={"content-type": "application/json"})
    err(r, 413, "body_too_large")
    assert t.unprotect(t.protect(s, ["after"])) == ["after"]


def test_body_limit_applies_to_chunked_bodies(limited):
    t = limited.tenant()
    s = t.create_scheme()["name"]
    data = padded({"scheme": s, "values": ["x"]}, 3 * MAX_BODY)
    chunks = (data[i:i + 1000] for i in range(0, len(data), 1000))  # a generator: transfer-encoding chunked
    err(t.app.post("/v1/protect", data=chunks, headers={"content-type": "application/json"}), 413, "body_too_large")
    assert t.unprotect(t.protect(s, ["after"])) == ["after"]


def test_batch_limit(limited):
    t = limited.tenant()
    s = t.create_scheme()["name"]
    tokens = t.protect(s, [f"v{i}" for i in range(MAX_BATCH)])
    assert t.unprotect(tokens) == [f"v{i}" for i in range(MAX_BATCH)]
    over = [f"v{i}" for i in range(MAX_BATCH + 1)]
    err(t.app.post("/v1/protect", {"scheme": s, "values": over}), 413, "batch_too_large")
    err(t.support.post("/v1/unprotect", {"values": tokens + tokens[:1]}), 413, "batch_too_large")
    err(t.analyst.post("/v1/mask", {"scheme": s, "values": over}), 413, "batch_too_large")
    assert t.unprotect(tokens) == [f"v{i}" for i in range(MAX_BATCH)]


def test_value_limit_is_per_item(limited):
    t = limited.tenant()
    s = t.create_scheme()["name"]
    values = ["x" * MAX_VALUE, "x" * (MAX_VALUE + 1), "é" * (MAX_VALUE // 2), "é" * (MAX_VALUE // 2) + "x", ""]
    body = ok(t.app.post("/v1/protect", {"scheme": s, "values": values}))
    assert item_errors(body["results"]) == [None, "value_too_large", None, "value_too_large", None]
    good = [body["results"][i]["value"] for i in (0, 2, 4)]
    assert t.unprotect(good) == [values[0], values[2], values[4]]
    huge = f"veil.1.{s}.1." + "A" * 1000  # far longer than any token of a 64-byte value
    results = t.unprotect_results([huge, good[0]])
    assert item_errors(results) == ["value_too_large", None]
    assert results[1]["value"] == values[0]
