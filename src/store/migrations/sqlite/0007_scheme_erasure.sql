-- Veil metadata, version 7: erasure of a whole scheme or tenant (issue 17 item 7, docs/erasure.md).
-- An erased scheme keeps its row (and its data-key rows, all 'destroyed'): `erased_at` says when,
-- `erasure_id` names the certificate that a repeated erase returns. A new scheme of the same name
-- takes the row over and continues its key versions, so that an old token never names a live key.
-- `tenants.erasure_id` names the tenant's latest tenant-wide certificate.
ALTER TABLE schemes ADD COLUMN erased_at INTEGER;
ALTER TABLE schemes ADD COLUMN erasure_id TEXT;
ALTER TABLE tenants ADD COLUMN erasure_id TEXT;
