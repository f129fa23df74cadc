"""The client's own logic, against a scripted loopback server (tests/integration/test_python_client.py
runs it against the real component): batching under both limits, retries and their waits, which
requests are retried, per-item results, credentials."""
from __future__ import annotations

import json
import socket

import pytest

from veil_client import BatchResult, ItemError, ItemErrors, RetryPolicy, VeilClient, VeilError
from veil_client.batching import json_size, plan
from veil_client.retry import parse_retry_after


def echo(req):
    """Protect-like: each value back as `tok:<value>`."""
    return 200, {"key_version": 1, "results": [{"value": f"tok:{v}"} for v in req["body"]["values"]]}, {}


def no_sleep():
    waits: list[float] = []
    return waits, RetryPolicy(sleep=waits.append, random=lambda: 1.0)


# ---- batching
def test_plan_respects_count_and_bytes_and_keeps_order():
    values = [f"v{i}" for i in range(10)]
    assert [list(r) for r in plan(values, 4, 1 << 20)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    big = ["x" * 100] * 10  # 102 bytes each in JSON, 103 with the comma
    ranges = plan(big, 1000, 64 + 20 + 3 * 103, overhead=20)
    assert [len(r) for r in ranges] == [3, 3, 3, 1]
    assert [i for r in ranges for i in r] == list(range(10))
    # one value larger than any body travels alone, so only its own request fails
    assert [list(r) for r in plan(["a", "b" * 500, "c"], 10, 300)] == [[0], [1], [2]]
    assert plan([], 10, 100) == []
    assert json_size("é\n") == len('"\\u00e9\\n"')
    with pytest.raises(ValueError):
        plan(["a"], 0, 100)


def test_long_lists_go_out_in_requests_under_max_batch_with_nulls_kept(scripted):
    s = scripted(echo)
    c = VeilClient(s.url, api_key="veil_k.s", max_batch=3)
    values = ["a", None, "b", "c", None, "d", "e", "f", "g"]
    res = c.protect("pii", values)
    assert res.values() == [None if v is None else f"tok:{v}" for v in values]
    assert [r["body"]["values"] for r in s.requests] == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert all(r["body"]["scheme"] == "pii" and set(r["body"]) == {"scheme", "values"} for r in s.requests)
    assert res.requests_sent == 3 and res.key_versions == (1,)
    assert c.protect("pii", [None, None]).values() == [None, None] and len(s.requests) == 3  # nothing to send


def test_bodies_stay_under_max_body_bytes(scripted):
    s = scripted(echo)
    c = VeilClient(s.url, token="jwt", max_batch=1000, max_body_bytes=2000)
    values = [f"{i:04d}" + "x" * 96 for i in range(50)]
    assert c.protect("pii", values, context="orders.card").values() == [f"tok:{v}" for v in values]
    assert len(s.requests) > 2 and all(r["size"] <= 2000 for r in s.requests)
    assert [v for r in s.requests for v in r["body"]["values"]] == values
    assert all(r["body"]["context"] == "orders.card" for r in s.requests)


def test_max_batch_is_read_from_the_servers_openapi_document(scripted):
    def answer(req):
        if req["path"] == "/v1/openapi.json":
            return 200, {"components": {"schemas": {"Values": {"type": "array", "maxItems": 2}}}}, {}
        return echo(req)

    s = scripted(answer)
    c = VeilClient(s.url, api_key="veil_k.s")
    assert c.unprotect(["1", "2", "3"]).values() == ["tok:1", "tok:2", "tok:3"]
    assert [r["path"] for r in s.requests] == ["/v1/openapi.json", "/v1/unprotect", "/v1/unprotect"]
    assert c.max_batch == 2


def test_a_413_for_size_halves_the_request_and_lowers_the_limit(scripted):
    def answer(req):
        if len(req["body"]["values"]) > 2:
            return 413, {"error": {"code": "batch_too_large", "message": "more than max_batch (2)"}}, {}
        return echo(req)

    s = scripted(answer)
    c = VeilClient(s.url, api_key="veil_k.s", max_batch=8)
    values = [str(i) for i in range(8)]
    assert c.protect("pii", values).values() == [f"tok:{v}" for v in values]
    assert c.max_batch == 2
    before = len(s.requests)
    c.protect("pii", values)  # now planned at 2 a request: no 413 any more
    assert [len(r["body"]["values"]) for r in s.requests[before:]] == [2, 2, 2, 2]


# ---- per-item results
def test_per_item_errors_are_typed_and_positioned(scripted):
    def answer(req):
        out = [{"error": {"code": "decryption_failed", "message": "the token does not open"}} if v == "bad" else
               {"value": "************1111", "masked": True} if v == "m" else {"value": f"p:{v}"}
               for v in req["body"]["values"]]
        return 200, {"results": out}, {}

    s = scripted(answer)
    res = VeilClient(s.url, api_key="veil_k.s", max_batch=2).unprotect(["a", None, "bad", "m", "bad"], scheme="pii")
    assert isinstance(res, BatchResult) and len(res) == 5
    assert res.errors() == {2: ItemError("decryption_failed", "the token does not open"),
                            4: ItemError("decryption_failed", "the token does not open")}
    assert res[3].masked and res[3].ok and not res[2].ok and not res[0].masked
    with pytest.raises(ItemErrors) as e:
        res.values()
    assert e.value.errors.keys() == {2, 4}
    assert "decryption_failed × 2" in str(e.value) and "position 2" in str(e.value)
    assert res.values(on_error="none") == ["p:a", None, None, "************1111", None]
    assert s.requests[0]["body"] == {"scheme": "pii", "values": ["a", "bad"]}


def test_wrong_input_types_fail_before_sending(scripted):
    s = scripted(echo)
    c = VeilClient(s.url, api_key="veil_k.s", max_batch=10)
    with pytest.raises(TypeError, match=r"values\[1\] is a int"):
        c.protect("pii", ["a", 4111])
    with pytest.raises(TypeError):
        c.protect("pii", "4111111111111111")
    assert s.requests == []


def test_an_answer_of_the_wrong_shape_is_a_bad_response(scripted):
    s = scripted(lambda req: (200, {"results": [{"value": "only one"}]}, {}))
    with pytest.raises(VeilError) as e:
        VeilClient(s.url, api_key="veil_k.s", max_batch=10).protect("pii", ["a", "b"])
    assert (e.value.status, e.value.code) == (200, "bad_response")


# ---- retries
def test_429_and_503_are_retried_with_backoff_honouring_retry_after(scripted):
    script = [(429, {"error": {"code": "rate_limited", "message": "slow down"}}, {"retry-after": "2"}),
              (503, {"error": {"code": "kms_unavailable", "message": "vault down"}}, {}),
              (503, {"error": {"code": "overloaded", "message": "busy"}}, {"retry-after": "1"})]

    def answer(req):
        return script.pop(0) if script else echo(req)

    s = scripted(answer)
    waits, policy = no_sleep()
    c = VeilClient(s.url, api_key="veil_k.s", max_batch=10, retry=policy)
    assert c.protect("pii", ["a"]).values() == ["tok:a"]
    # backoff with random()=1.0: 0.1, 0.2, 0.4; Retry-After wins when longer
    assert waits == [2.0, 0.2, 1.0]
    assert len(s.requests) == 4 and c.requests_sent == 4


def test_backoff_grows_exponentially_is_jittered_and_capped():
    p = RetryPolicy(base=0.5, cap=3.0, random=lambda: 1.0)
    assert [p.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    half = RetryPolicy(base=0.5, cap=3.0, random=lambda: 0.5)
    assert [half.backoff(n) for n in range(1, 4)] == [0.25, 0.5, 1.0]
    assert p.delay(1, 30.0) == 30.0 and p.delay(1, 61.0) is None  # over max_retry_after: not waited for
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_retry_after_as_seconds_or_an_http_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412490.0) == 0.0


def test_retries_end_after_the_attempts_with_the_last_error(scripted):
    s = scripted(lambda req: (503, {"error": {"code": "store_unavailable", "message": "db down"}}, {}))
    waits, _ = no_sleep()
    c = VeilClient(s.url, api_key="veil_k.s", max_batch=10,
                   retry=RetryPolicy(attempts=3, sleep=waits.append, random=lambda: 1.0))
    with pytest.raises(VeilError) as e:
        c.protect("pii", ["a"])
    assert (e.value.status, e.value.code, e.value.attempts) == (503, "store_unavailable", 3)
    assert e.value.retryable and len(s.requests) == 3 and waits == [0.1, 0.2]


def test_a_retry_after_beyond_the_limit_is_raised_at_once(scripted):
    s = scripted(lambda req: (503, {"error": {"code": "overloaded", "message": "busy"}}, {"retry-after": "3600"}))
    waits, policy = no_sleep()
    with pytest.raises(VeilError) as e:
        VeilClient(s.url, api_key="veil_k.s", max_batch=10, retry=policy).protect("pii", ["a"])
    assert e.value.code == "overloaded" and len(s.requests) == 1 and waits == []


def test_other_errors_are_not_retried(scripted):
    s = scripted(lambda req: (403, {"error": {"code": "forbidden", "message": "no role"}}, {}))
    waits, policy = no_sleep()
    with pytest.raises(VeilError) as e:
        VeilClient(s.url, api_key="veil_k.s", max_batch=10, retry=policy).unprotect(["t"])
    assert (e.value.status, e.value.code, e.value.message) == (403, "forbidden", "no role")
    assert not e.value.retryable and len(s.requests) == 1 and waits == []
    s2 = scripted(lambda req: (502, b"<html>bad gateway</html>", {}))
    with pytest.raises(VeilError) as e:
        VeilClient(s2.url, api_key="veil_k.s", max_batch=10, retry=policy).unprotect(["t"])
    assert (e.value.status, e.value.code) == (502, "http_502")


def test_admin_writes_are_retried_only_when_not_served(scripted):
    script = [(503, {"error": {"code": "overloaded", "message": "busy"}}, {}),
              (503, {"error": {"code": "store_unavailable", "message": "db down"}}, {})]
    s = scripted(lambda req: script.pop(0))
    waits, policy = no_sleep()
    c = VeilClient(s.url, token=lambda: "jwt", retry=policy)
    with pytest.raises(VeilError) as e:
        c.rotate_scheme("pii")  # overloaded: never reached Veil, retried; store_unavailable: maybe served, not retried
    assert e.value.code == "store_unavailable" and len(s.requests) == 2 and waits == [0.1]
    assert s.requests[0]["path"] == "/v1/schemes/pii/rotate"


def test_no_answer_is_retried_then_a_transport_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits, _ = no_sleep()
    c = VeilClient(f"http://127.0.0.1:{port}", api_key="veil_k.s", max_batch=10, timeout=2,
                   retry=RetryPolicy(attempts=3, sleep=waits.append, random=lambda: 1.0))
    with pytest.raises(VeilError) as e:
        c.protect("pii", ["4111111111111111"])
    assert (e.value.status, e.value.code, e.value.attempts) == (None, "transport", 3) and waits == [0.1, 0.2]
    assert "4111111111111111" not in str(e.value) and "veil_k.s" not in str(e.value)
    with pytest.raises(VeilError) as e:
        c.create_scheme("s", kek={"provider": "local"}, policy={})  # not safe to send twice: one try
    assert e.value.attempts == 1


# ---- credentials
def test_credentials_go_in_the_right_header_and_never_in_repr(scripted):
    s = scripted(lambda req: (200, {"schemes": []}, {}))
    VeilClient(s.url, api_key="veil_abc.secret").list_schemes()
    calls = iter(["jwt-1", "jwt-2"])
    c = VeilClient(s.url, token=lambda: next(calls))
    c.list_schemes()
    c.list_schemes()
    h = [r["headers"] for r in s.requests]
    assert h[0]["x-api-key"] == "veil_abc.secret" and "authorization" not in h[0]
    assert [x["authorization"] for x in h[1:]] == ["Bearer jwt-1", "Bearer jwt-2"]  # a fresh token each time
    assert "secret" not in repr(VeilClient(s.url, api_key="veil_abc.secret"))
    with pytest.raises(ValueError):
        VeilClient(s.url, api_key="veil_a.b", token="jwt")


def test_scheme_routes(scripted):
    def answer(req):
        if req["method"] == "POST" and req["path"] == "/v1/schemes":
            return 201, dict(req["body"], current_version=1), {}
        return 200, {"name": "a/b", "current_version": 2}, {}

    s = scripted(answer)
    c = VeilClient(s.url, token="jwt")
    made = c.create_scheme("pii", kek={"provider": "local"}, policy={"protect": ["app"]}, algorithm="chacha20-poly1305")
    assert made["algorithm"] == "chacha20-poly1305"
    assert s.requests[0]["headers"]["content-type"] == "application/json"
    assert json.loads(json.dumps(s.requests[0]["body"]))["policy"] == {"protect": ["app"]}
    c.get_scheme("a/b")
    assert s.requests[1]["path"] == "/v1/schemes/a%2Fb"
