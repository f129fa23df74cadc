"""`"mask_on_deny": true` per scheme (issue 14 item 2, docs/api.md § Unprotect): a caller with a
mask role but no unprotect role gets each value masked by the scheme's rule, flagged
`"masked": true`, instead of 403; every other caller is answered as before (deny by default)."""
from __future__ import annotations

import requests

from veilkit import DEFAULT_POLICY, TIMEOUT, err, ok

CARD = "4111111111111111"
KEEP_LAST = {"rule": "keep_last", "n": 4, "char": "*"}


def unprotect(api, tokens):
    return api.post("/v1/unprotect", {"values": tokens})


def test_matrix_per_role(server):
    t = server.tenant()
    on = t.create_scheme(mask=KEEP_LAST, mask_on_deny=True)
    off = t.create_scheme(mask=KEEP_LAST)
    assert (on["mask_on_deny"], off["mask_on_deny"]) == (True, False)
    tok_on = t.protect(on["name"], [CARD, "5500"])
    tok_off = t.protect(off["name"], [CARD])
    masked = [{"value": "************1111", "masked": True}, {"value": "5500", "masked": True}]
    plain = [{"value": CARD}, {"value": "5500"}]
    # (roles, expected answer for the mask_on_deny scheme, for the plain scheme)
    matrix = [
        (("support",), plain, [{"value": CARD}]),
        (("analyst",), masked, 403),
        (("analyst", "support"), plain, [{"value": CARD}]),
        (("app",), 403, 403),
        (("admin",), 403, 403),
        ((), 403, 403),
    ]
    for roles, want_on, want_off in matrix:
        for tokens, want in ((tok_on, want_on), (tok_off, want_off)):
            r = unprotect(t.as_(*roles), tokens)
            if want == 403:
                err(r, 403, "forbidden")
            else:
                assert ok(r)["results"] == want, (roles, r.text)
    # a batch naming both schemes: the plain scheme's refusal refuses the whole batch
    err(unprotect(t.analyst, tok_on + tok_off), 403, "forbidden")


def test_mixed_batch_and_item_errors(server):
    t = server.tenant()
    policy = {**DEFAULT_POLICY, "unprotect": ["support", "reader"], "mask": ["analyst", "reader"]}
    a = t.create_scheme(mask=KEEP_LAST, mask_on_deny=True, policy={**policy, "unprotect": ["support"]})
    b = t.create_scheme(policy=policy)
    tok_a, tok_b = t.protect(a["name"], [CARD])[0], t.protect(b["name"], ["hello"])[0]
    tampered = tok_a[:-2] + ("AA" if not tok_a.endswith("AA") else "BB")
    r = ok(unprotect(t.as_("reader"), [tok_a, tok_b, tampered, "not a token"]))
    codes = [x.get("error", {}).get("code") for x in r["results"]]
    assert r["results"][:2] == [{"value": "************1111", "masked": True}, {"value": "hello"}], r
    assert codes[2:] == ["decryption_failed", "invalid_token"], r


def test_nullify_and_hmac_rules(server):
    t = server.tenant()
    nul = t.create_scheme(mask={"rule": "nullify"}, mask_on_deny=True)
    mac = t.create_scheme(mask={"rule": "hmac"}, mask_on_deny=True)
    assert ok(unprotect(t.analyst, t.protect(nul["name"], ["x"])))["results"] == [{"value": None, "masked": True}]
    got = ok(unprotect(t.analyst, t.protect(mac["name"], [CARD])))["results"]
    assert got == [{"value": t.mask(mac["name"], [CARD])[0], "masked": True}], got
    assert CARD not in str(got)


def test_patch_turns_it_on_and_off(server):
    t = server.tenant()
    s = t.create_scheme(mask=KEEP_LAST)
    tokens = t.protect(s["name"], [CARD])
    err(unprotect(t.analyst, tokens), 403, "forbidden")
    path = f"/v1/schemes/{s['name']}"
    patch = lambda body: requests.patch(server.url + path, json=body, timeout=TIMEOUT,  # noqa: E731
                                        headers={"authorization": f"Bearer {t.admin.token}"})
    assert ok(patch({"mask_on_deny": True}))["mask_on_deny"] is True
    assert ok(t.admin.get(path))["mask_on_deny"] is True
    assert ok(unprotect(t.analyst, tokens))["results"] == [{"value": "************1111", "masked": True}]
    assert ok(patch({"mask_on_deny": False}))["mask_on_deny"] is False
    err(unprotect(t.analyst, tokens), 403, "forbidden")
    err(patch({"mask_on_deny": "yes"}), 400, "invalid_request")
    err(patch({"mask_on_deny": None}), 400, "invalid_request")
    # other callers' PATCH is refused as before
    r = requests.patch(server.url + path, json={"mask_on_deny": True}, timeout=TIMEOUT,
                       headers={"authorization": f"Bearer {t.analyst.token}"})
    err(r, 403, "forbidden")
