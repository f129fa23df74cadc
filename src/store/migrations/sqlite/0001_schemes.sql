-- Veil metadata, version 1: tenants, schemes and their wrapped data keys (DESIGN §6).
-- Timestamps are Unix seconds (UTC). Data keys are stored only wrapped by their KEK.
CREATE TABLE IF NOT EXISTS tenants (
    id          TEXT    NOT NULL PRIMARY KEY,
    created_at  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS schemes (
    tenant                  TEXT    NOT NULL REFERENCES tenants (id),
    name                    TEXT    NOT NULL,
    algorithm               TEXT    NOT NULL,
    kek                     TEXT    NOT NULL,  -- JSON: {"provider": ..., ...}
    policy                  TEXT    NOT NULL,  -- JSON: {"protect": [...], ...}
    mask_rule               TEXT    NOT NULL,  -- JSON: {"rule": ..., ...}
    current_version         INTEGER NOT NULL CHECK (current_version >= 1),
    min_decryption_version  INTEGER NOT NULL DEFAULT 1 CHECK (min_decryption_version >= 1),
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE IF NOT EXISTS data_keys (
    tenant       TEXT    NOT NULL,
    scheme       TEXT    NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1),
    wrapped_dek  BLOB    NOT NULL,
    kek_id       TEXT    NOT NULL,
    kek_version  TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('active', 'retired', 'destroyed')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, scheme, version),
    FOREIGN KEY (tenant, scheme) REFERENCES schemes (tenant, name)
);
