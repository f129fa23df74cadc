"""Long lists split into requests that the server accepts: at most `max_batch` values each (413
`batch_too_large` otherwise) and a JSON body within `max_body_bytes` (413 `body_too_large`)."""
from __future__ import annotations

import json
from typing import Sequence

# Room left in every body for the fields beside `values` (scheme, subject, context, encoding and
# the JSON punctuation), on top of their measured size.
BODY_SLACK = 64


def json_size(value: object) -> int:
    """Bytes the value takes in a compact UTF-8 JSON body (what requests sends: ASCII escapes)."""
    return len(json.dumps(value, separators=(",", ":")).encode())


def plan(values: Sequence[str], max_batch: int, max_body_bytes: int, overhead: int = 0) -> list[range]:
    """Consecutive ranges of `values` (indexes), in order, each within both limits once the
    request's other fields (`overhead` bytes) are added. A value too large to fit any body on its
    own gets a range of its own: the server then refuses that request (413 `body_too_large`), not
    its neighbours'."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    budget = max_body_bytes - overhead - BODY_SLACK
    out: list[range] = []
    start, size = 0, 0
    for i, v in enumerate(values):
        n = json_size(v) + 1  # the value and its comma
        if i > start and (i - start >= max_batch or size + n > budget):
            out.append(range(start, i))
            start, size = i, 0
        size += n
    if start < len(values):
        out.append(range(start, len(values)))
    return out
