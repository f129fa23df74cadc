-- Veil metadata, version 10: a scheme's `context_required` (issue 15, docs/transit.md "Context").
-- The same logical schema as migrations/sqlite/0010_context_required.sql.
ALTER TABLE schemes ADD COLUMN IF NOT EXISTS context_required BIGINT NOT NULL DEFAULT 0 CHECK (context_required IN (0, 1));
