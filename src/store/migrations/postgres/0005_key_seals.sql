-- Veil metadata, version 5: how many values each data-key version has sealed (issue 19 item 6).
-- Every protect request adds its count here before it seals (Store::reserve_seals), so the count
-- only grows and is exact across instances; a scheme rotates before its algorithm's bound
-- (docs/kms.md, "Key-use limits"). A version with no row has sealed nothing. No foreign key, so
-- that erasing a scheme's keys never depends on this bookkeeping.
CREATE TABLE IF NOT EXISTS key_seals (
    tenant   TEXT    NOT NULL,
    scheme   TEXT    NOT NULL,
    version  BIGINT  NOT NULL CHECK (version >= 1),
    seals    BIGINT  NOT NULL CHECK (seals >= 0),
    PRIMARY KEY (tenant, scheme, version)
);
