"""Slow clients and overload (docs/configuration.md, "Slow clients and overload"): the host reads a
request's body before the request takes an instance, within `max_body_bytes` and
`--body-read-timeout-ms`; a request waits at most `--queue-timeout-ms` for an instance (then 503
`overloaded` with `Retry-After`); at most `--max-connections` connections are open at once.

Bounds on how long an answer may take are derived from the configured timeouts, with seconds of
slack: they tell "answered" from "hung until the 30 s request deadline", nothing finer."""
import json
import socket
import threading
import time

import requests

from faults import hostport, json_error, lock_flags, read_response, serving, write_lock
from veilkit import err, ok

SLACK = 5.0  # seconds added to every bound


def slow_post(server, declared=1000) -> socket.socket:
    """A connection that sends a protect request's head with `content-length: declared`, no body."""
    sock = socket.create_connection(hostport(server), timeout=10)
    sock.sendall(b"POST /v1/protect HTTP/1.1\r\nHost: veil\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n" % declared)
    return sock


def test_slow_bodies_do_not_starve_the_gateway(tmp_path):
    body_ms, queue_ms = 3000, 2000
    with serving(tmp_path / "flood", "--max-instances", "4", "--body-read-timeout-ms", str(body_ms),
                 "--queue-timeout-ms", str(queue_ms)) as s:
        # 16 clients (four times the instances) each declare a 1000-byte body and dribble it.
        flood = [slow_post(s) for _ in range(16)]
        started = time.monotonic()
        stop = threading.Event()

        def dribble():
            while not stop.wait(0.5):
                for sock in flood:
                    sock.sendall(b" ")

        dribbler = threading.Thread(target=dribble)
        dribbler.start()
        try:
            # Meanwhile a normal client keeps getting answers, each well within the queue timeout.
            answers = 0
            while time.monotonic() - started < body_ms / 1000 - 0.8:
                r = requests.get(s.url + "/healthz", timeout=queue_ms / 1000 + SLACK)
                assert ok(r) == {"status": "ok"}
                answers += 1
                time.sleep(0.1)
            assert answers >= 3
        finally:
            stop.set()
            dribbler.join()
        # Each slow body is cut off at the body timeout with a JSON 408, and its connection closed.
        for sock in flood:
            status, headers, body = read_response(sock, timeout=body_ms / 1000 + SLACK)
            e = json_error(status, headers, body, 408, "request_timeout")
            assert "3000 ms" in e["message"]
            assert headers.get("veil-dev-mode") == "true" and headers.get("cache-control") == "no-store"
            sock.close()
        assert ok(requests.get(s.url + "/healthz", timeout=10)) == {"status": "ok"}


def test_oversized_bodies_get_the_components_413_from_the_host(tmp_path):
    with serving(tmp_path / "big", max_body_bytes="2048") as s:
        t = s.tenant()
        name = t.create_scheme()["name"]
        want = {"error": {"code": "body_too_large", "message": "the body is larger than max_body_bytes (2048)"}}
        # declared too long: answered before a byte of the body is read
        sock = slow_post(s, declared=2049)
        status, headers, body = read_response(sock, timeout=SLACK)
        sock.close()
        json_error(status, headers, body, 413, "body_too_large")
        assert json.loads(body) == want
        assert headers.get("veil-dev-mode") == "true" and headers.get("cache-control") == "no-store"
        # chunked, and longer than the limit once read
        chunks = (b" " * 512 for _ in range(5))
        r = t.app.post("/v1/protect", data=chunks, headers={"content-type": "application/json"})
        err(r, 413, "body_too_large")
        assert r.json() == want
        # exactly at the limit: the component gets the whole body
        doc = json.dumps({"scheme": name, "values": ["at the limit"]}).encode()
        padded = doc + b" " * (2048 - len(doc))
        r = t.app.post("/v1/protect", data=padded, headers={"content-type": "application/json"})
        assert t.unprotect([ok(r)["results"][0]["value"]]) == ["at the limit"]
        chunked = (padded[i:i + 100] for i in range(0, len(padded), 100))
        r = t.app.post("/v1/protect", data=chunked, headers={"content-type": "application/json"})
        assert t.unprotect([ok(r)["results"][0]["value"]]) == ["at the limit"]


def test_the_wait_for_an_instance_is_bounded(tmp_path):
    lock_ms, queue_ms = 4000, 300
    with serving(tmp_path / "queue", "--max-instances", "1", "--queue-timeout-ms", str(queue_ms),
                 *lock_flags(lock_ms)) as s:
        t = s.tenant()
        t.create_scheme()
        with write_lock(s):
            # a write stuck behind the lock holds the only instance for about lock_ms (1.5 s is
            # ample for it to get there first, and leaves 2.5 s to ask for another instance)
            blocked = {}
            th = threading.Thread(target=lambda: blocked.update(
                r=t.admin.post("/v1/schemes", t.scheme_body())))
            th.start()
            time.sleep(1.5)
            begun = time.monotonic()
            r = requests.get(s.url + "/healthz", timeout=queue_ms / 1000 + SLACK)
            assert time.monotonic() - begun < queue_ms / 1000 + SLACK
            err(r, 503, "overloaded")
            assert r.headers["retry-after"] == "1"
            assert r.headers.get("veil-dev-mode") == "true"
            th.join(lock_ms / 1000 + SLACK + 10)
            err(blocked["r"], 503, "store_unavailable")
        assert ok(requests.get(s.url + "/healthz", timeout=10)) == {"status": "ok"}
        t.create_scheme()


def test_connections_beyond_the_cap_wait_their_turn(tmp_path):
    idle_ms = 1500
    with serving(tmp_path / "conns", "--max-connections", "4", "--body-read-timeout-ms", str(idle_ms)) as s:
        # four connections that never send a request fill the cap ...
        idle = [socket.create_connection(hostport(s), timeout=10) for _ in range(4)]
        try:
            time.sleep(0.3)
            # ... the next client is accepted once they are closed for sending no headers in time
            r = requests.get(s.url + "/healthz", timeout=idle_ms / 1000 + SLACK)
            assert ok(r) == {"status": "ok"}
            for sock in idle:
                sock.settimeout(SLACK)
                assert sock.recv(100) == b"", "an idle connection was not closed at the header timeout"
        finally:
            for sock in idle:
                sock.close()
        assert "4 connections open (--max-connections)" in s.stderr()
