"""veil-client: a small typed client for Veil's /v1 API (docs/api.md).

    from veil_client import VeilClient
    veil = VeilClient("https://veil.example.com", api_key=KEY)
    tokens = veil.protect("pii", ["4111111111111111", None]).values()
    plain = veil.unprotect(tokens, scheme="pii").values()

Long lists are split under the server's limits, 429/503 are retried with backoff (honouring
`Retry-After`), and every item comes back as a value or a typed per-item error.
`veil_client.spark` protects and unprotects DataFrame columns (PySpark, mapInPandas).
"""
from .client import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, BatchResult, ItemResult, VeilClient, __version__
from .errors import ITEM_CODES, ItemError, ItemErrors, VeilError
from .retry import RetryPolicy

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_BYTES", "BatchResult", "ItemResult", "VeilClient", "__version__",
           "ITEM_CODES", "ItemError", "ItemErrors", "VeilError", "RetryPolicy"]
