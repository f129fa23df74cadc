"""GET /healthz, GET /v1/openapi.json and the dev-mode label."""
import json
import re
import tomllib

import requests

from veilkit import REPO, TIMEOUT, err, hs256, new_tenant, ok


def doc_routes() -> set[tuple[str, str]]:
    """(method, path) of every route documented in docs/api.md's Routes section."""
    text = (REPO / "docs/api.md").read_text()
    routes_section = text[text.index("## Routes"):]
    return set(re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`", routes_section))


def test_healthz_needs_no_auth(server):
    r = requests.get(server.url + "/healthz", timeout=TIMEOUT)
    assert ok(r) == {"status": "ok"}


def test_openapi_is_31_and_lists_every_documented_route(server):
    r = requests.get(server.url + "/v1/openapi.json", timeout=TIMEOUT)
    doc = ok(r)
    assert doc == json.loads((REPO / "src/api/openapi.json").read_text()), "the served document is not the file"
    assert doc["openapi"] == "3.1.0"
    version = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    assert (doc["info"]["title"], doc["info"]["version"]) == ("Veil", version)
    served = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    assert served == doc_routes(), f"docs/api.md routes vs openapi.json: {sorted(served ^ doc_routes())}"


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
