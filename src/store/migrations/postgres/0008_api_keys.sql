-- Veil metadata, version 8: API keys (issue 14 item 1, docs/auth.md "API keys") and a scheme's
-- `mask_on_deny` (item 2). The same logical schema as migrations/sqlite/0008_api_keys.sql.
CREATE TABLE IF NOT EXISTS api_keys (
    id             TEXT    NOT NULL PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    secret_sha256  BYTEA   NOT NULL CHECK (length(secret_sha256) = 32),
    label          TEXT    NOT NULL,
    roles          TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT,
    last_used_at   BIGINT
);

CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant, created_at);

ALTER TABLE schemes ADD COLUMN IF NOT EXISTS mask_on_deny BIGINT NOT NULL DEFAULT 0 CHECK (mask_on_deny IN (0, 1));
