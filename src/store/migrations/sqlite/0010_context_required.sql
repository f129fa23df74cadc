-- Veil metadata, version 10: a scheme's `context_required` (issue 15, docs/transit.md "Context"):
-- 1 for a key created through the Transit routes with `derived: true`, on which every encrypt,
-- decrypt, rewrap and datakey call must carry a context. Existing schemes keep 0.
ALTER TABLE schemes ADD COLUMN context_required INTEGER NOT NULL DEFAULT 0 CHECK (context_required IN (0, 1));
