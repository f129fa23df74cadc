"""Tenant isolation, route by route (issue 14 item 5): every route of /v1/openapi.json is called as
tenant B, with every role, on tenant A's objects (scheme, key versions, tokens, subjects, erasure
certificate, audit log). Each is refused with its documented status and code, or works only inside
B's own namespace; no body reveals anything of A; and A is unchanged afterwards (its schemes, its
tokens, and its audit chain, to which B's requests add nothing).

The routes come from the document the server serves: a route added later without a case here
fails `test_every_route_has_a_case`.
"""
import base64
import json

import pytest
import requests

import store
from harness import postgres as pg
from veilkit import TIMEOUT, VeilServer, new_name, ok

ROLES = ("admin", "app", "support", "analyst", "privacy", "auditor")


class World:
    """Tenant A's objects, and tenant B with every role."""

    def __init__(self, server):
        self.server = server
        self.a = server.tenant()
        self.b = server.tenant()
        self.scheme = self.a.create_scheme()["name"]
        ok(self.a.admin.post(f"/v1/schemes/{self.scheme}/rotate"))
        ok(self.a.admin.request("PATCH", f"/v1/schemes/{self.scheme}", {"min_decryption_version": 2}))
        self.subject = f"subject-{new_name()}"
        self.values = [f"a-secret-{new_name()}", f"a-card-{new_name()}"]
        self.tokens = self.a.protect(self.scheme, self.values[:1])
        self.subject_tokens = self.a.protect(self.scheme, self.values[1:], subject=self.subject)
        self.cert = ok(self.a.privacy.post(f"/v1/subjects/{new_name()}/erase"))
        self.scheme_view = ok(self.a.admin.get(f"/v1/schemes/{self.scheme}"))
        # A's re-encryption job over a table of A's tokens in the customer database
        self.table = f"iso_{new_name()}".replace("-", "_")
        with pg.connect(server.customer_db) as c:
            c.execute(f'CREATE TABLE "{self.table}" (id BIGINT PRIMARY KEY, tok TEXT)')
            c.execute(f'INSERT INTO "{self.table}" VALUES (1, %s)', (self.tokens[0],))
        self.job_body = {"scheme": self.scheme, "database": "job_db", "table": self.table, "key_column": "id",
                         "token_column": "tok"}
        self.job = ok(self.a.admin.post("/v1/jobs", self.job_body), 201)["id"]
        self.api_key = ok(self.a.as_("admin", "app").post("/v1/api-keys", {"label": "a-key", "roles": ["app"]}), 201)
        self.verdict = ok(self.a.as_("auditor").get("/v1/audit/verify"))
        self.b_api = self.b.as_(*ROLES)
        # Anything of A that must never show in an answer to B.
        self.needles = [self.a.id, *self.values, *self.tokens, *self.subject_tokens, self.cert["certificate_id"],
                        self.cert["signature"], self.cert["subject_digest"], self.verdict["head"], self.job,
                        self.table, self.api_key["id"], self.api_key["key"]]


def call(w: World, method: str, path: str, body=None) -> requests.Response:
    return w.b_api.request(method, path, body)


def refused(status: int, code: str):
    def check(r: requests.Response, w: World):
        assert r.status_code == status and r.json()["error"]["code"] == code, (r.status_code, r.text)
    return check


def items_refused(code: str):
    """A batch answered per item: every one of A's tokens fails for B with `code`."""
    def check(r: requests.Response, w: World):
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x.get("error", {}).get("code") for x in results] == [code] * len(results), results
    return check


def transit_refused(status: int):
    """A Transit route: Transit's status and `{"errors": [...]}` body (docs/transit.md)."""
    def check(r: requests.Response, w: World):
        assert r.status_code == status and list(r.json()) == ["errors"], (r.status_code, r.text)
    return check


def vault_ciphertext(token: str) -> str:
    """A's Veil token as the Transit routes spell it (docs/token-format.md, "Transit ciphertexts")."""
    _, _, _, version, payload = token.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return f"vault:v{version}:{base64.b64encode(raw).decode()}"


def only_own(r: requests.Response, w: World):
    """A route that works inside B's own namespace: it answers, with nothing of A."""
    assert r.status_code in (200, 201), (r.status_code, r.text)


def own_schemes(r: requests.Response, w: World):
    assert r.status_code == 200 and r.json()["schemes"] == [], r.text


def own_api_keys(r: requests.Response, w: World):
    assert r.status_code == 200, r.text
    assert all(k["label"] != "a-key" for k in r.json()["api_keys"]), r.text


def own_audit(r: requests.Response, w: World):
    assert r.status_code == 200, r.text
    body = r.json()
    entries = body.get("entries")
    if isinstance(entries, list):  # the list: B's own entries only (none of them A's)
        assert all(e["tenant"] == w.b.id for e in entries), entries
    else:  # the verdict of B's own chain
        assert body["ok"] is True, body


# operationId → (method, path with A's objects, body, check)
CASES = {
    "getHealth": lambda w: ("GET", "/healthz", None, only_own),
    "getOpenApi": lambda w: ("GET", "/v1/openapi.json", None, only_own),
    "erasureKeys": lambda w: ("GET", "/.well-known/veil/erasure-keys", None, only_own),
    "listSchemes": lambda w: ("GET", "/v1/schemes", None, own_schemes),
    # B may create a scheme of the same name: its own, beside A's (checked unchanged below).
    "createScheme": lambda w: ("POST", "/v1/schemes", w.b.scheme_body(w.scheme), only_own),
    "getScheme": lambda w: ("GET", f"/v1/schemes/{w.scheme}", None, refused(404, "scheme_not_found")),
    "updateScheme": lambda w: ("PATCH", f"/v1/schemes/{w.scheme}", {"min_decryption_version": 1},
                               refused(404, "scheme_not_found")),
    "rotateScheme": lambda w: ("POST", f"/v1/schemes/{w.scheme}/rotate", None, refused(404, "scheme_not_found")),
    "listKeyVersions": lambda w: ("GET", f"/v1/schemes/{w.scheme}/versions", None,
                                  refused(404, "scheme_not_found")),
    "destroyKeyVersion": lambda w: ("POST", f"/v1/schemes/{w.scheme}/versions/1/destroy", None,
                                    refused(404, "scheme_not_found")),
    "rekeyScheme": lambda w: ("POST", f"/v1/schemes/{w.scheme}/rekey", None, refused(404, "scheme_not_found")),
    "protect": lambda w: ("POST", "/v1/protect", {"scheme": w.scheme, "values": ["x"]},
                          refused(404, "scheme_not_found")),
    "mask": lambda w: ("POST", "/v1/mask", {"scheme": w.scheme, "values": ["x"]},
                       refused(404, "scheme_not_found")),
    "unprotect": lambda w: ("POST", "/v1/unprotect", {"values": w.tokens}, items_refused("decryption_failed")),
    "rewrap": lambda w: ("POST", "/v1/rewrap", {"values": w.tokens}, items_refused("decryption_failed")),
    # Erasing "the same" subject id erases B's subject of that id, never A's (checked below).
    "eraseSubject": lambda w: ("POST", f"/v1/subjects/{w.subject}/erase", None, only_own),
    "eraseSubjects": lambda w: ("POST", "/v1/subjects/erase", {"subjects": [w.subject]}, only_own),
    "getErasure": lambda w: ("GET", f"/v1/erasures/{w.cert['certificate_id']}", None,
                             refused(404, "erasure_not_found")),
    "eraseScheme": lambda w: ("POST", f"/v1/schemes/{w.scheme}/erase", {"confirm": w.scheme},
                              refused(404, "scheme_not_found")),
    # B's tenant erasure must name B's own tenant: naming A's is refused, and erases nothing.
    "eraseTenant": lambda w: ("POST", "/v1/tenant/erase", {"confirm": w.a.id}, refused(409, "confirmation_mismatch")),
    "createJob": lambda w: ("POST", "/v1/jobs", w.job_body, refused(404, "scheme_not_found")),
    "getJob": lambda w: ("GET", f"/v1/jobs/{w.job}", None, refused(404, "job_not_found")),
    "stepJob": lambda w: ("POST", f"/v1/jobs/{w.job}/step", None, refused(404, "job_not_found")),
    "getJobFailures": lambda w: ("GET", f"/v1/jobs/{w.job}/failures", None, refused(404, "job_not_found")),
    "cancelJob": lambda w: ("POST", f"/v1/jobs/{w.job}/cancel", None, refused(404, "job_not_found")),
    # Without the scheme header (this client sends none) the batch is refused before any row is read;
    # the scheme in the path is the case below.
    "snowflakeCall": lambda w: ("POST", "/v1/snowflake/unprotect", {"data": [[0, w.tokens[0]]]},
                                refused(400, "invalid_request")),
    "snowflakeCallInPath": lambda w: ("POST", f"/v1/snowflake/protect/{w.scheme}", {"data": [[0, "x"]]},
                                      refused(404, "scheme_not_found")),
    "bigqueryCall": lambda w: ("POST", "/v1/bigquery",
                               {"calls": [["x"]], "userDefinedContext": {"scheme": w.scheme, "operation": "protect"}},
                               refused(404, "scheme_not_found")),
    # B's own key (capped by B's roles), beside A's; B's list shows only B's keys.
    "createApiKey": lambda w: ("POST", "/v1/api-keys", {"label": "b-key", "roles": ["app"]}, only_own),
    "listApiKeys": lambda w: ("GET", "/v1/api-keys", None, own_api_keys),
    "revokeApiKey": lambda w: ("DELETE", f"/v1/api-keys/{w.api_key['id']}", None, refused(404, "api_key_not_found")),
    # Transit: A's scheme name is no key of B's tenant (B has none when these run).
    "transitListKeys": lambda w: ("GET", "/v1/transit/keys?list=true", None, transit_refused(404)),
    "transitReadKey": lambda w: ("GET", f"/v1/transit/keys/{w.scheme}", None, transit_refused(404)),
    "transitCreateKey": lambda w: ("POST", f"/v1/transit/keys/{new_name()}", {}, only_own),
    "transitDeleteKey": lambda w: ("DELETE", f"/v1/transit/keys/{w.scheme}", None, transit_refused(400)),
    "transitRotateKey": lambda w: ("POST", f"/v1/transit/keys/{w.scheme}/rotate", None, transit_refused(404)),
    "transitConfigKey": lambda w: ("POST", f"/v1/transit/keys/{w.scheme}/config", {"min_decryption_version": 1},
                                   transit_refused(404)),
    "transitTrimKey": lambda w: ("POST", f"/v1/transit/keys/{w.scheme}/trim", {"min_available_version": 1},
                                 transit_refused(404)),
    "transitEncrypt": lambda w: ("POST", f"/v1/transit/encrypt/{w.scheme}", {"plaintext": "eA=="},
                                 transit_refused(400)),
    "transitDecrypt": lambda w: ("POST", f"/v1/transit/decrypt/{w.scheme}",
                                 {"ciphertext": vault_ciphertext(w.tokens[0])}, transit_refused(400)),
    "transitRewrap": lambda w: ("POST", f"/v1/transit/rewrap/{w.scheme}",
                                {"ciphertext": vault_ciphertext(w.tokens[0])}, transit_refused(400)),
    "transitDataKey": lambda w: ("POST", f"/v1/transit/datakey/plaintext/{w.scheme}", {}, transit_refused(400)),
    "transitHmac": lambda w: ("POST", f"/v1/transit/hmac/{w.scheme}", {"input": "eA=="}, transit_refused(400)),
    "transitVerify": lambda w: ("POST", f"/v1/transit/verify/{w.scheme}",
                                {"input": "eA==", "hmac": "vault:v1:AAAA"}, transit_refused(400)),
    "transitRandom": lambda w: ("POST", "/v1/transit/random", {}, only_own),
    "transitHash": lambda w: ("POST", "/v1/transit/hash", {"input": "eA=="}, only_own),
    "listAudit": lambda w: ("GET", "/v1/audit", None, own_audit),
    "verifyAudit": lambda w: ("GET", "/v1/audit/verify", None, own_audit),
}


def routes(server) -> list[tuple[str, str, str]]:
    doc = ok(requests.get(server.url + "/v1/openapi.json", timeout=TIMEOUT))
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((method.upper(), path, op["operationId"]))
    assert len(out) >= len(CASES) - 1, out
    return out


def test_every_route_has_a_case(server):
    missing = [(m, p, o) for m, p, o in routes(server) if o not in CASES]
    assert missing == [], f"routes without a tenant-isolation case: {missing}"


@pytest.fixture(scope="module")
def customer_db():
    name = pg.new_database_name("veil_iso")
    url = pg.create_database(store.ADMIN_URL, name)
    yield url
    pg.drop_database(store.ADMIN_URL, name)


@pytest.fixture(scope="module")
def server(tmp_path_factory, customer_db):
    """A dev-mode server that may run re-encryption jobs on `customer_db` (so that A has a job)."""
    s = VeilServer(tmp_path_factory.mktemp("isolation"), name="isolation", allowed_hosts=[pg.outbound_host(customer_db)],
                   job_databases="job_db", job_db=customer_db)
    s.customer_db = customer_db
    yield s
    s.stop()


@pytest.fixture(scope="module")
def world(server):
    return World(server)


def test_tenant_b_gets_nothing_of_tenant_a(server, world):
    w = world
    # createScheme last: B's scheme of A's scheme's name would answer B's later calls itself.
    todo = sorted(routes(server), key=lambda r: r[2] == "createScheme")
    failures = []
    for method, path, op in todo:
        m, p, body, check = CASES[op](w)
        assert m == method and p.count("/") == path.count("/"), (op, m, p, method, path)
        r = call(w, m, p, body)
        try:
            check(r, w)
            leaked = [n for n in w.needles if n in r.text]
            assert not leaked, ("reveals", leaked)
        except AssertionError as e:
            failures.append((op, m, p, str(e)[:300]))
    assert failures == [], failures

    # A is unchanged: its scheme, its tokens (with and without the subject), its audit chain.
    assert ok(w.a.admin.get(f"/v1/schemes/{w.scheme}")) == w.scheme_view
    assert w.a.unprotect(w.tokens) == w.values[:1]
    assert w.a.unprotect(w.subject_tokens, subject=w.subject) == w.values[1:]
    assert ok(w.a.privacy.get(f"/v1/erasures/{w.cert['certificate_id']}")) == w.cert
    n = w.verdict["entries"]
    after = ok(w.a.as_("auditor").get(f"/v1/audit/verify?head={w.verdict['head']}&entries={n}"))
    # A's own calls since: the verify above, get scheme, 2 unprotects, get erasure; nothing of B's.
    assert after["ok"] is True and after["entries"] == n + 5, after
    entries = ok(w.a.as_("auditor").get(f"/v1/audit?cursor={n}"))["entries"]
    assert [e["operation"] for e in entries] == ["audit.verify", "scheme.get", "unprotect", "unprotect",
                                                 "erasure.get", "audit.verify"], entries
