"""Error messages never echo input (issue 19, item 7).

Every plaintext the suite protects or masks (collected from the test files themselves, so a new
test's values join in) is sent in each wrong-typed position of every route's body. The answer
must be exactly the answer to the same malformed body carrying a neutral marker instead: the
message depends on the shape of the mistake, never on the value. No plaintext (nor the marker)
may appear in the answers or in the host's log lines.
"""
import ast
import json
from pathlib import Path

import pytest

from veilkit import new_name

HERE = Path(__file__).resolve().parent
MARKER = "zq-marker-7c1e"


def suite_plaintexts() -> list[str]:
    """String constants passed as values to protect/mask anywhere in tests/integration."""
    found = {"4111111111111111"}
    for f in sorted(HERE.glob("test_*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            lists = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("protect", "mask"):
                lists += node.args[1:2]
            if isinstance(node, ast.Dict):
                lists += [v for k, v in zip(node.keys, node.values)
                          if isinstance(k, ast.Constant) and k.value == "values"]
            for arg in lists:
                found |= {c.value for c in ast.walk(arg) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    found.discard(MARKER)
    return sorted(found)


PLAINTEXTS = suite_plaintexts()


def positions(scheme: str) -> list[tuple[str, object]]:
    """(route, body) with the placeholder P where a value of the wrong type goes."""
    P = "\0P\0"
    protect = {"scheme": scheme, "values": ["x"]}
    unprotect = {"values": ["veil.1.x.1.AAAA"]}
    mask = {"scheme": scheme, "values": ["x"]}
    new = {"name": "ok-name", "kek": {"provider": "local"}}
    out = []
    for route, base in [("/v1/protect", protect), ("/v1/unprotect", unprotect)]:
        out += [
            (route, {**base, "values": P}),
            (route, {**base, "values": [[P]]}),
            (route, {**base, "values": [{"v": P}]}),
            (route, {**base, "subject": [P]}),
            (route, {**base, "context": {"c": P}}),
            (route, {**base, "encoding": P}),
            (route, {**base, P: 1}),
            (route, [P]),
            (route, P),
        ]
    out += [
        ("/v1/protect", {**protect, "scheme": [P]}),
        ("/v1/mask", {**mask, "scheme": {"s": P}}),
        ("/v1/mask", {**mask, "values": P}),
        ("/v1/mask", {**mask, "values": ["ok", [P]]}),
        ("/v1/mask", {**mask, P: None}),
        ("/v1/mask", P),
        ("/v1/schemes", {**new, "name": [P]}),
        ("/v1/schemes", {**new, "algorithm": [P]}),
        ("/v1/schemes", {**new, "description": {"d": P}}),
        ("/v1/schemes", {**new, "kek": P}),
        ("/v1/schemes", {**new, "kek": {"provider": P}}),
        ("/v1/schemes", {**new, "kek": {"provider": "aws-kms", "key_id": [P]}}),
        ("/v1/schemes", {**new, "kek": {"provider": "azure-keyvault", "key_url": {"u": P}}}),
        ("/v1/schemes", {**new, "policy": P}),
        ("/v1/schemes", {**new, "policy": {"protect": P}}),
        ("/v1/schemes", {**new, "policy": {"unprotect": ["ok", [P]]}}),
        ("/v1/schemes", {**new, "policy": {P: []}}),
        ("/v1/schemes", {**new, "mask": P}),
        ("/v1/schemes", {**new, "mask": {"rule": P}}),
        ("/v1/schemes", {**new, "mask": {"rule": "keep_last", "n": P}}),
        ("/v1/schemes", {**new, "mask": {"rule": "keep_last", "n": 4, "char": [P]}}),
        ("/v1/schemes", {**new, "mask": {"rule": "fixed", "length": {"l": P}}}),
        ("/v1/schemes", {**new, "mask": {"rule": "redact", P: 1}}),
        ("/v1/schemes", {**new, P: "x"}),
        ("/v1/schemes", [P]),
    ]
    return out


def fill(body, value):
    """The body with every placeholder (as a value or a key) replaced by `value`."""
    P = "\0P\0"
    if body == P:
        return value
    if isinstance(body, list):
        return [fill(b, value) for b in body]
    if isinstance(body, dict):
        return {(value if k == P else k): fill(v, value) for k, v in body.items()}
    return body


def test_no_plaintext_is_echoed_by_any_error(start_server):
    assert len(PLAINTEXTS) >= 20, PLAINTEXTS  # the collector found the suite's values
    s = start_server("no-echo")
    started = len(s.stderr(tail=10_000_000))  # the start-up lines are not the requests' lines
    t = s.tenant()
    scheme = t.create_scheme(name=new_name())["name"]
    api = t.as_("admin", "app", "support", "analyst")
    answers = []
    for route, shape in positions(scheme):
        control = api.post(route, data=json.dumps(fill(shape, MARKER)), headers={"content-type": "application/json"})
        assert control.status_code in (400, 422), (route, shape, control.text)
        code = control.json()["error"]["code"]
        assert code in ("invalid_request", "invalid_field"), control.text
        assert MARKER not in control.text, control.text
        for pt in PLAINTEXTS:
            r = api.post(route, data=json.dumps(fill(shape, pt)), headers={"content-type": "application/json"})
            assert (r.status_code, r.text) == (control.status_code, control.text), \
                f"{route} {json.dumps(fill(shape, pt))[:200]}: the answer depends on the value sent: {r.text[:300]}"
            answers.append(r.text)
    # digit-only plaintexts as JSON numbers where strings belong
    for pt in [p for p in PLAINTEXTS if p.isdigit()]:
        for route, body in [("/v1/protect", {"scheme": int(pt), "values": ["x"]}),
                            ("/v1/protect", {"scheme": scheme, "values": [int(pt)]}),
                            ("/v1/unprotect", {"values": [int(pt)]}),
                            ("/v1/mask", {"scheme": scheme, "values": [int(pt)]}),
                            ("/v1/schemes", {"name": int(pt), "kek": {"provider": "local"}})]:
            r = api.post(route, body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
            assert pt not in r.text, r.text
            answers.append(r.text)
    # every distinctive plaintext is absent from every answer and from the host's log
    log = s.stderr(tail=10_000_000)[started:]
    for pt in PLAINTEXTS + [MARKER]:
        if len(pt) < 6:
            continue  # short words ("a", "one") occur in any English sentence
        assert not any(pt in a for a in answers), pt
        assert pt not in log, f"{pt!r} in the host's log"
    # and the server still works
    assert t.unprotect(t.protect(scheme, ["still fine"])) == ["still fine"]


@pytest.mark.parametrize("body, message", [
    ({"scheme": "S", "values": "4111111111111111"},
     "the request does not match its schema: `values` has the wrong type or value; expected a sequence"),
    ({"scheme": "S", "values": ["ok", 4111111111111111]},
     "the request does not match its schema: `values[1]` has the wrong type or value; expected a string"),
    ({"scheme": "S", "values": ["x"], "4111111111111111": 1},
     "the request does not match its schema: the body has a field it does not know; expected one of "
     "`scheme`, `values`, `subject`, `context`, `encoding`"),
    ({"values": ["x"]}, "the request does not match its schema: the body is missing the field `scheme`"),
], ids=["string-for-list", "number-in-list", "unknown-field", "missing-field"])
def test_shape_errors_name_the_path_and_expected_type(tenant, body, message):
    scheme = tenant.create_scheme()["name"]
    body = json.loads(json.dumps(body).replace('"S"', json.dumps(scheme)))
    r = tenant.app.post("/v1/protect", body)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": {"code": "invalid_request", "message": message}}
