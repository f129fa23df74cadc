-- Veil metadata, version 7: erasure of a whole scheme or tenant (issue 17 item 7, docs/erasure.md).
-- The same logical schema as migrations/sqlite/0007_scheme_erasure.sql.
ALTER TABLE schemes ADD COLUMN IF NOT EXISTS erased_at BIGINT;
ALTER TABLE schemes ADD COLUMN IF NOT EXISTS erasure_id TEXT;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS erasure_id TEXT;
