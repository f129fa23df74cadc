"""AWS Lambda: the packaged `bootstrap` (scripts/package.sh lambda) started as Lambda starts a
custom runtime (cwd and LAMBDA_TASK_ROOT = the unpacked zip, AWS_LAMBDA_RUNTIME_API), driven
through a local runtime API (tests/fixtures/lambda_runtime_api.py, written from the AWS docs:
the Lambda service cannot run here) with Function URL / HTTP API (payload 2.0), REST API
(payload 1.0) and direct-invocation events."""
from __future__ import annotations

import base64
import json
import signal
import subprocess
import time

import pytest

import store
from lambda_runtime_api import RuntimeApi
from platforms import app_settings, entries, is_linux_x86_64, package, unpack
from veilkit import DEFAULT_POLICY, HarnessError, hs256, new_name, new_tenant
from harness import postgres as pg
from harness import procs


def url_event(method: str, path: str, body=None, token: str | None = None, *, query: str = "",
              b64: bool = False, cookies=None, headers=None) -> dict:
    """A Lambda Function URL event (payload format 2.0)."""
    h = {"content-type": "application/json", "host": "abcdefgh.lambda-url.eu-west-1.on.aws",
         "x-forwarded-proto": "https"}
    if token:
        h["authorization"] = f"Bearer {token}"
    h.update(headers or {})
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    event = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query, "headers": h,
        "requestContext": {"accountId": "anonymous", "apiId": "abcdefgh", "domainName": h["host"],
                           "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "203.0.113.9", "userAgent": "test"},
                           "requestId": "r", "routeKey": "$default", "stage": "$default"},
        "isBase64Encoded": b64,
    }
    if cookies:
        event["cookies"] = cookies
    if body is not None:
        event["body"] = base64.b64encode(raw).decode() if b64 else raw.decode()
    return event


def http_answer(outcome, status: int) -> dict:
    """A payload-2.0 answer: exact envelope, JSON body."""
    assert outcome.kind == "response", (outcome.kind, outcome.body[:300])
    doc = outcome.json()
    assert set(doc) == {"statusCode", "headers", "cookies", "body", "isBase64Encoded"}, doc
    assert doc["statusCode"] == status, doc
    assert doc["isBase64Encoded"] is False and doc["cookies"] == [], doc
    assert doc["headers"]["content-type"] == "application/json", doc
    return json.loads(doc["body"])


class Lambda:
    """The unpacked zip's `bootstrap` under a runtime API; `task_root` (cwd and LAMBDA_TASK_ROOT)
    defaults to where the zip was unpacked."""

    def __init__(self, root, env=None, task=None, task_root=None):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.api = RuntimeApi()
        self.task = task or unpack(package("lambda", root / "veil-lambda.zip"), root / "task")
        task_root = task_root or self.task
        self.env = env or app_settings(root, max_batch="3")
        self.env.update({"AWS_LAMBDA_RUNTIME_API": self.api.address, "LAMBDA_TASK_ROOT": str(task_root),
                         "AWS_LAMBDA_FUNCTION_NAME": "veil", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
                         "_HANDLER": "veil"})
        self.stderr_path = root / "bootstrap.stderr"
        self.t0 = time.monotonic()
        with open(self.stderr_path, "w") as err:
            self.proc = procs.spawn([self.task / "bootstrap"], cwd=task_root, env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def invoke(self, event, **kw):
        if self.proc.poll() is not None:
            raise HarnessError(f"bootstrap exited with {self.proc.returncode}\n{self.stderr()}")
        return self.api.invoke(event, **kw)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        procs.forget(self.proc)
        self.api.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def customer_db():
    """A customer database for the job-step invocation (tests/integration/test_jobs.py has the rest)."""
    name = pg.new_database_name("veil_lambda_job")
    url = pg.create_database(store.ADMIN_URL, name)
    yield url
    pg.drop_database(store.ADMIN_URL, name)


@pytest.fixture(scope="module")
def lam(tmp_path_factory, customer_db):
    root = tmp_path_factory.mktemp("lambda")
    fn = Lambda(root, env=app_settings(root, max_batch="3", job_databases="job_db", job_db=customer_db,
                                       allow_job_database_url=pg.outbound_host(customer_db)))
    yield fn
    assert fn.stop() == 0, fn.stderr()


@pytest.fixture(scope="module")
def scheme(lam):
    """A tenant with a local-KEK scheme, created through a Function URL event."""
    tenant, name = new_tenant(), new_name()
    body = {"name": name, "algorithm": "aes-256-gcm", "kek": {"provider": "local"}, "policy": DEFAULT_POLICY}
    created = http_answer(lam.invoke(url_event("POST", "/v1/schemes", body, hs256(tenant, ["admin"]))), 201)
    assert created["name"] == name
    return tenant, name


def test_the_lambda_zip_holds_bootstrap_component_and_manifest(tmp_path):
    z = package("lambda", tmp_path / "veil-lambda.zip")
    assert entries(z) == {"bootstrap": 0o755, "veil.wasm": 0o644, "spin.toml": 0o644}
    task = unpack(z, tmp_path / "task")
    assert is_linux_x86_64(task / "bootstrap")
    assert (task / "veil.wasm").read_bytes()[:8] == b"\0asm\x0d\0\x01\0"  # a component, not a module
    assert '\nsource = "veil.wasm"\n' in (task / "spin.toml").read_text()


def test_protect_and_unprotect_through_function_url_events(lam, scheme):
    tenant, name = scheme
    values = ["4111 1111 1111 1111", "ünïcode"]
    # A base64 body (as Function URLs send binary or when configured), a cookie, a query string.
    protected = http_answer(lam.invoke(url_event(
        "POST", "/v1/protect", {"scheme": name, "values": values}, hs256(tenant, ["app"]),
        b64=True, cookies=["session=abc", "theme=dark"], query="trace=1")), 200)
    tokens = [r["value"] for r in protected["results"]]
    assert [t.split(".")[:3] for t in tokens] == [["veil", "1", name]] * 2
    clear = http_answer(lam.invoke(url_event("POST", "/v1/unprotect", {"values": tokens},
                                             hs256(tenant, ["support"]))), 200)
    assert clear == {"results": [{"value": v} for v in values]}


def test_a_rest_api_event_with_multi_value_headers_and_query(lam, scheme):
    tenant, name = scheme
    token = hs256(tenant, ["admin"])
    event = {
        "resource": "/{proxy+}", "path": f"/v1/schemes/{name}", "httpMethod": "GET",
        "headers": {"Authorization": "Bearer stale"},
        "multiValueHeaders": {"Authorization": [f"Bearer {token}"], "Accept": ["application/json", "*/*"]},
        "queryStringParameters": {"a": "2"}, "multiValueQueryStringParameters": {"a": ["1", "2"]},
        "requestContext": {"identity": {"sourceIp": "198.51.100.4"}, "stage": "prod"},
        "body": None, "isBase64Encoded": False,
    }
    outcome = lam.invoke(event)
    assert outcome.kind == "response"
    doc = outcome.json()
    assert set(doc) == {"statusCode", "multiValueHeaders", "body", "isBase64Encoded"}, doc
    assert (doc["statusCode"], doc["isBase64Encoded"]) == (200, False)
    assert doc["multiValueHeaders"]["content-type"] == ["application/json"]
    assert json.loads(doc["body"])["name"] == name


def test_errors_come_back_as_answers_or_invocation_errors(lam, scheme):
    tenant, name = scheme
    # max_batch is 3 here (SPIN_VARIABLE_MAX_BATCH): a batch error is the component's 413.
    too_many = http_answer(lam.invoke(url_event("POST", "/v1/protect", {"scheme": name, "values": ["a"] * 4},
                                                hs256(tenant, ["app"]))), 413)
    assert too_many == {"error": {"code": "batch_too_large", "message": "4 values is more than max_batch (3)"}}
    # No token: the component's 401 with its challenge header.
    outcome = lam.invoke(url_event("POST", "/v1/protect", {"scheme": name, "values": ["a"]}))
    assert outcome.json()["headers"]["www-authenticate"] == "Bearer"
    assert json.loads(outcome.json()["body"])["error"]["code"] == "unauthenticated"
    # Not an event Veil understands: an invocation error, without echoing the event.
    bad = lam.invoke(b'{"hello": "secret-value"}')
    assert bad.kind == "error"
    assert bad.headers["lambda-runtime-function-error-type"] == "Runtime.InvalidEvent"
    assert bad.json() == {"errorMessage": "neither an HTTP event (payload format 1.0 or 2.0) nor an `action`",
                          "errorType": "Runtime.InvalidEvent", "stackTrace": []}
    not_json = lam.invoke(b"\xff")
    assert (not_json.kind, not_json.json()["errorMessage"]) == ("error", "the event is not JSON")
    # A deadline already (nearly) passed: the request is not run past it.
    late = lam.invoke(url_event("POST", "/v1/protect", {"scheme": name, "values": ["a"]}, hs256(tenant, ["app"])),
                      deadline_in_ms=10)
    assert http_answer(late, 500)["error"]["code"] == "timeout"


def test_a_job_step_invocation_runs_a_step(lam, customer_db):
    tenant, name = new_tenant(), new_name()
    admin, app = hs256(tenant, ["admin"]), hs256(tenant, ["app"])
    body = {"name": name, "algorithm": "aes-256-gcm", "kek": {"provider": "local"}, "policy": DEFAULT_POLICY}
    http_answer(lam.invoke(url_event("POST", "/v1/schemes", body, admin)), 201)
    tokens = [r["value"] for r in http_answer(lam.invoke(url_event(
        "POST", "/v1/protect", {"scheme": name, "values": ["a", "b", "c"]}, app)), 200)["results"]]
    table = name.replace("-", "_")
    with pg.connect(customer_db) as c:
        c.execute(f'CREATE TABLE "{table}" (id INT PRIMARY KEY, tok TEXT)')
        for i, t in enumerate(tokens):
            c.execute(f'INSERT INTO "{table}" VALUES (%s, %s)', (i, t))
    http_answer(lam.invoke(url_event("POST", f"/v1/schemes/{name}/rotate", None, admin)), 200)
    job = http_answer(lam.invoke(url_event("POST", "/v1/jobs", {
        "scheme": name, "database": "job_db", "table": table, "key_column": "id", "token_column": "tok"}, admin)), 201)

    def step(auth):
        outcome = lam.invoke({"action": "job_step", "job": job["id"], "authorization": f"Bearer {auth}"})
        assert outcome.kind == "response"
        doc = outcome.json()
        assert set(doc) == {"statusCode", "body"}, doc
        return doc

    assert step(admin) == {"statusCode": 200, "body": {"done": 3, "failed": 0, "remaining": 0, "state": "running"}}
    assert step(admin) == {"statusCode": 200, "body": {"done": 0, "failed": 0, "remaining": 0, "state": "finished"}}
    with pg.connect(customer_db) as c:
        assert {r[0].split(".")[3] for r in c.execute(f'SELECT tok FROM "{table}"')} == {"2"}
    missing = lam.invoke({"action": "job_step", "job": "job-123", "authorization": f"Bearer {admin}"}).json()
    assert missing == {"statusCode": 404, "body": {"error": {
        "code": "job_not_found", "message": "no re-encryption job of this id in this tenant"}}}
    bad = lam.invoke({"action": "job_step", "job": "../../v1/schemes"})
    assert (bad.kind, bad.json()["errorMessage"]) == ("error", "`job` is not a job id (1-128 letters, digits, `-`, `_`)")


def test_a_rekey_invocation_rekeys_every_scheme_of_the_tenant(lam):
    """`{"action": "rekey"}`: KEK rotation of each scheme of the credential's tenant (or of
    `scheme`), as `veil rekey` drives it; the report is the body, the status 200 when every scheme
    was rekeyed, else the first failed scheme's."""
    tenant = new_tenant()
    admin = f"Bearer {hs256(tenant, ['admin'])}"
    names = []
    for _ in range(2):
        name = new_name()
        body = {"name": name, "algorithm": "aes-256-gcm", "kek": {"provider": "local"}, "policy": DEFAULT_POLICY}
        http_answer(lam.invoke(url_event("POST", "/v1/schemes", body, hs256(tenant, ["admin"]))), 201)
        names.append(name)
    http_answer(lam.invoke(url_event("POST", f"/v1/schemes/{names[0]}/rotate", None, hs256(tenant, ["admin"]))), 200)
    protected = http_answer(lam.invoke(url_event("POST", "/v1/protect", {"scheme": names[0], "values": ["a", "b"]},
                                                 hs256(tenant, ["app"]))), 200)
    tokens = [r["value"] for r in protected["results"]]
    listed = [s["name"] for s in http_answer(lam.invoke(url_event("GET", "/v1/schemes", None,
                                                                  hs256(tenant, ["admin"]))), 200)["schemes"]]
    assert sorted(listed) == sorted(names)
    local = {"provider": "local"}
    rewrapped = {names[0]: [1, 2], names[1]: [1]}

    outcome = lam.invoke({"action": "rekey", "authorization": admin})
    assert outcome.kind == "response", outcome.body[:300]
    assert outcome.json() == {"statusCode": 200, "body": {
        "schemes": [{"name": n, "rewrapped": rewrapped[n], "kek": local} for n in listed],
        "rekeyed": 2, "failed": 0}}
    # one scheme, to a KEK given in the event (here the same local KEK)
    one = lam.invoke({"action": "rekey", "scheme": names[1], "kek": local, "authorization": admin})
    assert one.json() == {"statusCode": 200, "body": {
        "schemes": [{"name": names[1], "rewrapped": [1], "kek": local}], "rekeyed": 1, "failed": 0}}
    clear = http_answer(lam.invoke(url_event("POST", "/v1/unprotect", {"values": tokens},
                                             hs256(tenant, ["support"]))), 200)
    assert clear == {"results": [{"value": "a"}, {"value": "b"}]}

    # not an administrator: each scheme refused, the first refusal's status
    denied = lam.invoke({"action": "rekey", "authorization": f"Bearer {hs256(tenant, ['app'])}"}).json()
    assert denied["statusCode"] == 403 and (denied["body"]["rekeyed"], denied["body"]["failed"]) == (0, 2), denied
    assert [(s["name"], s["status"], s["error"]["code"]) for s in denied["body"]["schemes"]] == \
        [(n, 403, "forbidden") for n in listed]
    missing = lam.invoke({"action": "rekey", "scheme": "nope", "authorization": admin}).json()
    assert (missing["statusCode"], missing["body"]["schemes"][0]["error"]["code"]) == (404, "scheme_not_found")
    # no credential: the listing's own answer
    anonymous = lam.invoke({"action": "rekey"}).json()
    assert (anonymous["statusCode"], anonymous["body"]["error"]["code"]) == (401, "unauthenticated"), anonymous
    # a malformed event: an invocation error without its values
    bad = lam.invoke({"action": "rekey", "kek": "secret-value"})
    assert (bad.kind, bad.json()["errorMessage"]) == ("error", "`kek` is not a JSON object")


def test_settings_from_plain_names_and_an_init_error(tmp_path):
    env = app_settings(tmp_path)
    env["MAX_BATCH"] = "2"  # a plain Lambda environment variable
    fn = Lambda(tmp_path / "plain", env=env)
    try:
        tenant, name = new_tenant(), new_name()
        body = {"name": name, "algorithm": "aes-256-gcm", "kek": {"provider": "local"}, "policy": DEFAULT_POLICY}
        http_answer(fn.invoke(url_event("POST", "/v1/schemes", body, hs256(tenant, ["admin"]))), 201)
        answer = http_answer(fn.invoke(url_event("POST", "/v1/protect", {"scheme": name, "values": ["a"] * 3},
                                                 hs256(tenant, ["app"]))), 413)
        assert answer["error"]["message"] == "3 values is more than max_batch (2)"
    finally:
        assert fn.stop() == 0, fn.stderr()

    # A task root without a manifest: reported to /init/error, then exit 2 (a configuration error).
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = Lambda(tmp_path / "broken", env=app_settings(tmp_path), task=tmp_path / "plain" / "task",
                    task_root=empty)
    assert broken.proc.wait(timeout=60) == 2, broken.stderr()
    assert broken.stop() == 2
    assert len(broken.api.init_errors) == 1
    init = broken.api.init_errors[0]
    assert init.headers["lambda-runtime-function-error-type"] == "Runtime.ConfigError"
    doc = init.json()
    assert (doc["errorType"], doc["stackTrace"]) == ("Runtime.ConfigError", [])
    assert doc["errorMessage"].startswith(f"cannot read manifest {empty}/spin.toml: "), doc
