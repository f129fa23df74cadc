"""When to try a request again and how long to wait: exponential backoff with full jitter,
capped, and the server's `Retry-After` honoured (Veil's host sends it with 503 `overloaded`)."""
from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all (1: never retry). Before try n+1 the client waits a random time in
    [0, min(`cap`, `base` · 2ⁿ⁻¹)] ("full jitter", so that many workers that failed together do
    not come back together), or the server's `Retry-After` when that is longer (at most
    `max_retry_after`; a longer one is not waited for: the error is raised at once). `statuses`
    are the answers worth another try; a request that got no answer (connection refused or reset,
    timed out) is retried too when it is safe to send twice (`retry_transport`)."""

    attempts: int = 5
    base: float = 0.1
    cap: float = 10.0
    statuses: frozenset[int] = frozenset({429, 503})
    max_retry_after: float = 60.0
    retry_transport: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base < 0 or self.cap < 0 or self.max_retry_after < 0:
            raise ValueError("base, cap and max_retry_after must not be negative")

    def backoff(self, retry: int) -> float:
        """The jittered wait before retry number `retry` (1 for the first retry)."""
        return self.random() * min(self.cap, self.base * (2 ** (retry - 1)))

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """How long to wait before retry number `retry`, or None when the server asked for more
        than `max_retry_after`."""
        wait = self.backoff(retry)
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            wait = max(wait, retry_after)
        return wait


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` as seconds: a whole number of seconds, or an HTTP date (RFC 9110 §10.2.3).
    None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())
