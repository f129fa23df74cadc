-- Veil metadata, version 9: the audit log (issue 14 item 3, docs/audit.md).
-- audit_log holds one sealed entry per audited request: AES-256-GCM under the tenant's audit key,
-- its AAD binding the tenant and prev, the SHA-256 of the tenant's previous sealed entry (32 zero
-- bytes before the first). Nothing else of the entry is stored in the clear.
-- audit_heads holds each tenant's last sequence and the hash of its sealed entry: an append moves
-- it compare-and-set in the same transaction, so sequences stay gapless and unique per tenant
-- across instances, and a truncated tail shows against it.
CREATE TABLE IF NOT EXISTS audit_log (
    tenant    TEXT    NOT NULL,
    sequence  INTEGER NOT NULL CHECK (sequence >= 1),
    prev      BLOB   NOT NULL,
    sealed    BLOB   NOT NULL,
    PRIMARY KEY (tenant, sequence)
);
CREATE TABLE IF NOT EXISTS audit_heads (
    tenant    TEXT    NOT NULL PRIMARY KEY,
    sequence  INTEGER NOT NULL CHECK (sequence >= 0),
    hash      BLOB   NOT NULL
);
-- Each scheme's audit setting for its data operations: all (default), denied, none.
ALTER TABLE schemes ADD COLUMN audit TEXT NOT NULL DEFAULT 'all' CHECK (audit IN ('all', 'denied', 'none'));
