"""What can go wrong, as values: a whole request refused (`VeilError`), one item of a batch that
failed (`ItemError`), and a batch read with `values()` while some items failed (`ItemErrors`).

Messages carry what Veil said (its stable `code` and caller-safe `message`) and positions, never
a value, token or credential.
"""
from __future__ import annotations

from dataclasses import dataclass

# The per-item codes docs/api.md documents ("Per-item codes inside `results`").
ITEM_CODES = frozenset({
    "value_too_large", "invalid_token", "decryption_failed", "invalid_encoding", "not_utf8",
    "key_version_retired", "key_version_destroyed", "scheme_mismatch", "subject_erased",
})


@dataclass(frozen=True)
class ItemError:
    """One item's failure inside a batch answer: `code` is one of the API's per-item codes
    (`decryption_failed`, `key_version_retired`, ...; ITEM_CODES lists the documented ones)."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class VeilError(Exception):
    """A whole request refused or failed: the HTTP status and Veil's error `code` (`forbidden`,
    `scheme_not_found`, `batch_too_large`, `overloaded`, ...). `code` is `transport` when no
    answer came (connection refused, reset, timed out) and `bad_response` when the answer was not
    Veil's JSON."""

    def __init__(self, status: int | None, code: str, message: str, *, method: str = "", path: str = "",
                 attempts: int = 1):
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path
        self.attempts = attempts
        where = f"{method} {path}: " if method else ""
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{where}{status if status is not None else 'no answer'} {code}: {message}{tries}")

    @property
    def retryable(self) -> bool:
        """What the client itself retries (with backoff): 429, 503 and no answer at all."""
        return self.status in (429, 503) or self.status is None


class ItemErrors(Exception):
    """Raised by `BatchResult.values()` when items failed: `errors` maps each failed item's
    position in the input to its `ItemError`."""

    def __init__(self, errors: dict[int, ItemError]):
        self.errors = dict(errors)
        counts: dict[str, int] = {}
        for e in self.errors.values():
            counts[e.code] = counts.get(e.code, 0) + 1
        first = min(self.errors)
        summary = ", ".join(f"{code} × {n}" for code, n in sorted(counts.items()))
        super().__init__(f"{len(self.errors)} item(s) failed ({summary}); the first at position {first}: "
                         f"{self.errors[first]}")
