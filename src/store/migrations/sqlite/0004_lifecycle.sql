-- Veil metadata, version 4: key lifecycle (issue 13). A scheme's optional rotation period, and
-- the KEK that wraps each data-key version (a KEK rotation rewraps versions one by one, so
-- during one a scheme's versions may be wrapped by two KEKs).
-- `rotation_period`: seconds; NULL = no automatic rotation.
ALTER TABLE schemes ADD COLUMN rotation_period INTEGER;
-- `kek`: JSON {"provider": ..., ...} of the KEK that wrapped `wrapped_dek`; NULL = the scheme's.
ALTER TABLE data_keys ADD COLUMN kek TEXT;
