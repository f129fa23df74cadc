-- Veil metadata, version 2: who destroyed a data-key version and when (key lifecycle, issue 13;
-- scheme and tenant erasure, issue 17). A destroyed version keeps its row (state 'destroyed')
-- with `wrapped_dek` emptied to zero bytes: the column stays NOT NULL, the key material is gone.
ALTER TABLE data_keys ADD COLUMN destroyed_at INTEGER;
ALTER TABLE data_keys ADD COLUMN destroyed_by TEXT;
