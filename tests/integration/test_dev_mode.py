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


@pytest.mark.parametrize("value", ["yes", "1", "TRUE"])
def test_dev_mode_is_only_true_or_false(tmp_path, value):
    """Issue 19 item 5: `1`/`yes` once turned dev mode on in the component while the host (which
    compares with `true`) printed no warning. Now neither takes them as dev mode: the component
    refuses the variable, and no dev-mode label, dev token or warning appears."""
    s = VeilServer(tmp_path / "odd", name="odd-dev-mode", dev_mode=value)
    try:
        tenant = new_tenant()
        r = requests.get(s.url + "/v1/schemes", headers={"authorization": f"Bearer {hs256(tenant, ['admin'])}"},
                         timeout=TIMEOUT)
        e = err(r, 500, "misconfigured")
        assert e["message"] == "variable dev_mode must be true or false"
        assert "veil-dev-mode" not in r.headers
        assert "WARNING: dev mode" not in s.stderr()
        assert "veil: WARNING: dev_mode must be true or false" in s.stderr()
    finally:
        s.stop()
