"""The verified-token cache (docs/configuration.md): a changed token is never served from it.
(Expiry within the cache is covered by the unit tests in src/auth/tests.rs, which control the
clock; over HTTP the 60 s leeway would make the test a minute long.)"""
from veilkit import err, ok, rs256


def test_a_changed_token_is_verified_again(server):
    t = server.tenant()
    name = t.create_scheme()["name"]
    token = rs256(t.id, ["app"])
    ok(server.api(token).post("/v1/protect", {"scheme": name, "values": ["x"]}))
    head, body, sig = token.split(".")
    forged_sig = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    err(server.api(f"{head}.{body}.{forged_sig}").post("/v1/protect", {"scheme": name, "values": ["x"]}),
        401, "invalid_credentials")
    # the same claims under another tenant, re-signed: verified on its own merits
    other = rs256(t.id + "x", ["app"])
    err(server.api(other).post("/v1/protect", {"scheme": name, "values": ["x"]}), 404, "scheme_not_found")
