-- Veil metadata, version 8: API keys (issue 14 item 1, docs/auth.md "API keys") and a scheme's
-- `mask_on_deny` (item 2). A key is stored as the SHA-256 of its secret only: the secret itself is
-- shown once, in the response that creates it, and never written anywhere. `id` is random and
-- global (it is the part of `veil_<id>.<secret>` that finds the row); the tenant comes from the row.
-- `last_used_at` is coarse: updated at most once a minute per key (Store::touch_api_key).
CREATE TABLE IF NOT EXISTS api_keys (
    id             TEXT    NOT NULL PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    secret_sha256  BLOB    NOT NULL CHECK (length(secret_sha256) = 32),
    label          TEXT    NOT NULL,
    roles          TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER,
    last_used_at   INTEGER
);

CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant, created_at);

ALTER TABLE schemes ADD COLUMN mask_on_deny INTEGER NOT NULL DEFAULT 0 CHECK (mask_on_deny IN (0, 1));
