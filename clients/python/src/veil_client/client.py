"""`VeilClient`: Veil's /v1 data routes (protect, unprotect, mask, rewrap) and scheme routes over
HTTP, with long lists split under the server's limits, retries with backoff on 429/503, timeouts,
and a typed result per item."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, overload
from urllib.parse import quote

import requests

from . import batching
from .errors import ItemError, ItemErrors, VeilError
from .retry import RetryPolicy, parse_retry_after

__version__ = "0.1.0"

DEFAULT_MAX_BATCH = 1000  # the server's default `max_batch` (docs/api.md, Limits)
DEFAULT_MAX_BODY_BYTES = 1 << 20  # the server's default `max_body_bytes`
DEFAULT_TIMEOUT = (3.05, 60.0)  # seconds: (connect, read), as requests takes them


@dataclass(frozen=True)
class ItemResult:
    """One item of a batch answer: `value` (a token, a plaintext, a masked value; None for a None
    input, which is never sent, and for the `nullify` mask rule) or `error`. `masked` is true when
    unprotect answered with the mask instead of the plaintext (`mask_on_deny`)."""

    value: str | None
    error: ItemError | None = None
    masked: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class BatchResult(Sequence[ItemResult]):
    """The items of one call, in the order of its input, however many requests it took.
    `key_versions`: for protect, the key versions that made the tokens (more than one if the
    scheme rotated while the requests went out)."""

    def __init__(self, items: Sequence[ItemResult], key_versions: Sequence[int] = (), requests_sent: int = 0):
        self._items = tuple(items)
        self.key_versions = tuple(sorted(set(key_versions)))
        self.requests_sent = requests_sent

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> ItemResult: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[ItemResult]: ...

    def __getitem__(self, i):
        return self._items[i]

    def __iter__(self) -> Iterator[ItemResult]:
        return iter(self._items)

    def errors(self) -> dict[int, ItemError]:
        """The failed items by position."""
        return {i: r.error for i, r in enumerate(self._items) if r.error is not None}

    def values(self, on_error: str = "raise") -> list[str | None]:
        """Every item's value. `on_error="raise"` (default): raises ItemErrors if any item failed;
        `"none"`: a failed item's value is None."""
        if on_error not in ("raise", "none"):
            raise ValueError('on_error must be "raise" or "none"')
        errs = self.errors()
        if errs and on_error == "raise":
            raise ItemErrors(errs)
        return [r.value for r in self._items]


Token = str | Callable[[], str]


class VeilClient:
    """A client for one Veil deployment.

    Credentials: `api_key` (a Veil API key `veil_<id>.<secret>`, sent as `X-API-Key`) or `token`
    (a JWT, or a function returning a current one, called for every request; sent as
    `Authorization: Bearer`), not both. `max_batch`: values per request; None reads the
    deployment's limit from its `/v1/openapi.json` on first use. `max_body_bytes`: the
    deployment's body limit (not published by the server; default its default, 1 MiB).
    `timeout`: seconds, a number or (connect, read). `retry`: RetryPolicy."""

    def __init__(self, url: str, *, api_key: str | None = None, token: Token | None = None,
                 max_batch: int | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, retry: RetryPolicy | None = None,
                 session: requests.Session | None = None):
        if api_key is not None and token is not None:
            raise ValueError("give api_key or token, not both (Veil refuses a request with two credentials)")
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._token = token
        self._max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.requests_sent = 0  # HTTP requests this client sent, retries included

    def __repr__(self) -> str:  # never the credential
        auth = "api_key" if self._api_key else "token" if self._token else "none"
        return f"VeilClient({self.url!r}, auth={auth}, max_batch={self._max_batch})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> VeilClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- limits
    @property
    def max_batch(self) -> int:
        """Values per request: as given, else the deployment's `max_batch` from its
        /v1/openapi.json (read once)."""
        if self._max_batch is None:
            doc = self._request("GET", "/v1/openapi.json", None, idempotent=True)
            n = doc.get("components", {}).get("schemas", {}).get("Values", {}).get("maxItems")
            self._max_batch = n if isinstance(n, int) and n >= 1 else DEFAULT_MAX_BATCH
        return self._max_batch

    # ---- data routes
    def protect(self, scheme: str, values: Sequence[str | None], *, subject: str | None = None,
                context: str | None = None, encoding: str | None = None) -> BatchResult:
        """Tokens for `values` under `scheme` (None stays None and is not sent)."""
        return self._batch("/v1/protect", values, _fields(scheme=scheme, subject=subject, context=context,
                                                          encoding=encoding))

    def unprotect(self, tokens: Sequence[str | None], *, scheme: str | None = None, subject: str | None = None,
                  context: str | None = None, encoding: str | None = None) -> BatchResult:
        """Plaintexts of `tokens`. With `scheme`, a token of another scheme is the per-item error
        `scheme_mismatch` and is not opened."""
        return self._batch("/v1/unprotect", tokens, _fields(scheme=scheme, subject=subject, context=context,
                                                            encoding=encoding))

    def rewrap(self, tokens: Sequence[str | None], *, scheme: str | None = None, subject: str | None = None,
               context: str | None = None) -> BatchResult:
        """`tokens` re-encrypted under their scheme's current key version (never plaintext)."""
        return self._batch("/v1/rewrap", tokens, _fields(scheme=scheme, subject=subject, context=context))

    def mask(self, scheme: str, values: Sequence[str | None]) -> BatchResult:
        """`values` masked by the scheme's mask rule."""
        return self._batch("/v1/mask", values, _fields(scheme=scheme))

    # ---- schemes
    def list_schemes(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/schemes", None, idempotent=True)["schemes"]

    def get_scheme(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/schemes/{quote(name, safe='')}", None, idempotent=True)

    def create_scheme(self, name: str, *, kek: Mapping[str, Any], policy: Mapping[str, Any],
                      **fields: Any) -> dict[str, Any]:
        """POST /v1/schemes: `algorithm`, `mask`, `rotation_period`, `audit`, `mask_on_deny`
        as keyword arguments (docs/api.md)."""
        body = {"name": name, "kek": dict(kek), "policy": dict(policy), **fields}
        return self._request("POST", "/v1/schemes", body, idempotent=False)

    def rotate_scheme(self, name: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/schemes/{quote(name, safe='')}/rotate", None, idempotent=False)

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/healthz", None, idempotent=True)

    # ---- the machinery
    def _batch(self, path: str, values: Sequence[str | None], fields: dict[str, Any]) -> BatchResult:
        if isinstance(values, (str, bytes)):
            raise TypeError("values must be a sequence of strings, not one string")
        positions: list[int] = []
        send: list[str] = []
        for i, v in enumerate(values):
            if v is None:
                continue
            if not isinstance(v, str):
                raise TypeError(f"values[{i}] is a {type(v).__name__}, not a string or None")
            positions.append(i)
            send.append(v)
        items: list[ItemResult] = [ItemResult(None)] * len(values)
        versions: list[int] = []
        sent_before = self.requests_sent
        if send:
            overhead = batching.json_size(fields)
            for r in batching.plan(send, self.max_batch, self.max_body_bytes, overhead):
                for k, item in zip(r, self._send(path, fields, send[r.start:r.stop], versions)):
                    items[positions[k]] = item
        return BatchResult(items, versions, self.requests_sent - sent_before)

    def _send(self, path: str, fields: dict[str, Any], chunk: list[str], versions: list[int]) -> list[ItemResult]:
        """One request for `chunk`; a 413 for its size (a deployment with lower limits than this
        client was told) halves the chunk, lowers the client's limit, and sends both halves."""
        try:
            body = self._request("POST", path, {**fields, "values": chunk}, idempotent=True)
        except VeilError as e:
            if e.status == 413 and e.code in ("batch_too_large", "body_too_large") and len(chunk) > 1:
                half = len(chunk) // 2
                if e.code == "batch_too_large":
                    self._max_batch = max(1, min(self._max_batch or half, half))
                else:
                    self.max_body_bytes = max(1, batching.json_size(chunk[:half]) + batching.json_size(fields)
                                              + batching.BODY_SLACK)
                return self._send(path, fields, chunk[:half], versions) + self._send(path, fields, chunk[half:],
                                                                                     versions)
            raise
        results = body.get("results")
        if not isinstance(results, list) or len(results) != len(chunk):
            raise VeilError(200, "bad_response", f"expected {len(chunk)} results", method="POST", path=path)
        if isinstance(body.get("key_version"), int):
            versions.append(body["key_version"])
        return [_item(r, path) for r in results]

    def _headers(self, has_body: bool) -> dict[str, str]:
        h = {"user-agent": f"veil-client/{__version__}", "accept": "application/json"}
        if has_body:
            h["content-type"] = "application/json"
        if self._api_key is not None:
            h["x-api-key"] = self._api_key
        elif self._token is not None:
            h["authorization"] = "Bearer " + (self._token() if callable(self._token) else self._token)
        return h

    def _request(self, method: str, path: str, body: Any, *, idempotent: bool) -> dict[str, Any]:
        """One call with retries. `idempotent`: safe to send twice (data routes: a repeated protect
        only makes other tokens; reads), so retried on every retryable answer and on no answer;
        otherwise only on answers that mean the request was not served (429, 503 `overloaded`)."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= policy.attempts
            self.requests_sent += 1
            try:
                resp = self.session.request(method, self.url + path, data=data, headers=self._headers(data is not None),
                                            timeout=self.timeout)
            except requests.RequestException as e:
                if idempotent and policy.retry_transport and not last:
                    policy.sleep(policy.backoff(attempt))
                    continue
                raise VeilError(None, "transport", f"no answer from the server ({type(e).__name__})",
                                method=method, path=path, attempts=attempt) from None
            if 200 <= resp.status_code < 300:
                try:
                    out = resp.json()
                except ValueError:
                    out = None
                if not isinstance(out, dict):
                    raise VeilError(resp.status_code, "bad_response", "the answer is not a JSON object",
                                    method=method, path=path, attempts=attempt)
                return out
            code, message = _error_of(resp)
            served = not (resp.status_code == 429 or code == "overloaded")
            if resp.status_code in policy.statuses and not last and (idempotent or not served):
                wait = policy.delay(attempt, parse_retry_after(resp.headers.get("retry-after")))
                if wait is not None:
                    resp.close()
                    policy.sleep(wait)
                    continue
            raise VeilError(resp.status_code, code, message, method=method, path=path, attempts=attempt)


def _fields(**kw: Any) -> dict[str, Any]:
    """The request's fields besides `values`; unset optional fields are left out (Veil refuses
    `null` for them)."""
    return {k: v for k, v in kw.items() if v is not None}


def _error_of(resp: requests.Response) -> tuple[str, str]:
    try:
        e = resp.json()["error"]
        if isinstance(e.get("code"), str) and isinstance(e.get("message"), str):
            return e["code"], e["message"]
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return f"http_{resp.status_code}", "the answer is not Veil's JSON error body"


def _item(r: Any, path: str) -> ItemResult:
    if isinstance(r, dict):
        if isinstance(r.get("error"), dict):
            e = r["error"]
            return ItemResult(None, ItemError(str(e.get("code", "")), str(e.get("message", ""))))
        if "value" in r and (r["value"] is None or isinstance(r["value"], str)):
            return ItemResult(r["value"], masked=r.get("masked") is True)
    raise VeilError(200, "bad_response", "an item is neither a value nor an error", method="POST", path=path)
