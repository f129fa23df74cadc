"""dev_mode=false: no HS256, no local KEK, no dev label."""
import pytest
import requests

from veilkit import TIMEOUT, VeilServer, err, hs256, new_tenant, ok, rs256


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    s = VeilServer(tmp_path_factory.mktemp("prod"), name="prod", dev_mode="false")
    yield s
    s.stop()


def test_hs256_is_refused(prod):
    tenant = new_tenant()
    r = requests.get(prod.url + "/v1/schemes", headers={"authorization": f"Bearer {hs256(tenant, ['admin'])}"},
                     timeout=TIMEOUT)
    err(r, 401, "invalid_credentials")
    assert "veil-dev-mode" not in r.headers
    r = prod.api(hs256(tenant, ["admin"])).post("/v1/schemes", prod.tenant(tenant).scheme_body())
    err(r, 401, "invalid_credentials")


def test_rs256_works_and_no_dev_label(prod):
    t = prod.tenant(signer=rs256)
    r = t.admin.get("/v1/schemes")
    assert ok(r) == {"schemes": []}
    for resp in [r, requests.get(prod.url + "/healthz", timeout=TIMEOUT),
                 requests.get(prod.url + "/v1/openapi.json", timeout=TIMEOUT),
                 requests.get(prod.url + "/v1/schemes", timeout=TIMEOUT)]:
        assert "veil-dev-mode" not in resp.headers, (resp.request.path_url, dict(resp.headers))


def test_local_kek_needs_dev_mode(prod):
    t = prod.tenant(signer=rs256)
    body = t.scheme_body()
    err(t.admin.post("/v1/schemes", body), 422, "dev_mode_required")
    err(t.admin.get(f"/v1/schemes/{body['name']}"), 404, "scheme_not_found")
