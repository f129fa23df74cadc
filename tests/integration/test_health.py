"""GET /healthz, GET /v1/openapi.json and the dev-mode label."""
import re

import requests

from veilkit import REPO, TIMEOUT, err, hs256, new_tenant, ok


def doc_routes() -> set[tuple[str, str]]:
    """(method, path) of every route documented in docs/api.md's Routes section."""
    text = (REPO / "docs/api.md").read_text()
    routes_section = text[text.index("## Routes"):]
    found = set(re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`", routes_section))
    assert len(found) >= 9, f"docs/api.md: parsed too few routes: {found}"
    return found


def test_healthz_needs_no_auth(server):
    r = requests.get(server.url + "/healthz", timeout=TIMEOUT)
    assert ok(r) == {"status": "ok"}


def test_openapi_is_31_and_lists_every_documented_route(server):
    r = requests.get(server.url + "/v1/openapi.json", timeout=TIMEOUT)
    doc = ok(r)
    assert isinstance(doc.get("openapi"), str) and doc["openapi"].startswith("3.1"), doc.get("openapi")
    assert isinstance(doc.get("info"), dict) and doc["info"].get("title") and doc["info"].get("version")
    paths = doc.get("paths")
    assert isinstance(paths, dict)
    missing = [f"{m} {p}" for m, p in sorted(doc_routes()) if m.lower() not in paths.get(p, {})]
    assert not missing, f"routes documented in docs/api.md but absent from openapi.json: {missing}"


def test_dev_mode_header_on_every_kind_of_response(server):
    token = hs256(new_tenant(), ["admin"])
    responses = [
        requests.get(server.url + "/healthz", timeout=TIMEOUT),
        requests.get(server.url + "/v1/openapi.json", timeout=TIMEOUT),
        requests.get(server.url + "/v1/schemes", headers={"authorization": f"Bearer {token}"}, timeout=TIMEOUT),
        requests.get(server.url + "/v1/schemes", timeout=TIMEOUT),  # 401
        requests.get(server.url + "/v1/no-such-route", headers={"authorization": f"Bearer {token}"}, timeout=TIMEOUT),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 404]
    for r in responses:
        assert r.headers.get("veil-dev-mode") == "true", (r.request.path_url, r.status_code, dict(r.headers))
    err(responses[3], 401, "unauthenticated")
    err(responses[4], 404, "not_found")
