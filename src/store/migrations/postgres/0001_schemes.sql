-- Veil metadata, version 1: tenants, schemes and their wrapped data keys (DESIGN §6).
-- The same logical schema as migrations/sqlite/0001_schemes.sql. Timestamps are Unix seconds
-- (UTC); every integer is BIGINT so that 64-bit parameters bind without casts.
CREATE TABLE IF NOT EXISTS tenants (
    id          TEXT   NOT NULL PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS schemes (
    tenant                  TEXT   NOT NULL REFERENCES tenants (id),
    name                    TEXT   NOT NULL,
    algorithm               TEXT   NOT NULL,
    kek                     TEXT   NOT NULL,
    policy                  TEXT   NOT NULL,
    mask_rule               TEXT   NOT NULL,
    current_version         BIGINT NOT NULL CHECK (current_version >= 1),
    min_decryption_version  BIGINT NOT NULL DEFAULT 1 CHECK (min_decryption_version >= 1),
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE IF NOT EXISTS data_keys (
    tenant       TEXT   NOT NULL,
    scheme       TEXT   NOT NULL,
    version      BIGINT NOT NULL CHECK (version >= 1),
    wrapped_dek  BYTEA  NOT NULL,
    kek_id       TEXT   NOT NULL,
    kek_version  TEXT   NOT NULL,
    state        TEXT   NOT NULL CHECK (state IN ('active', 'retired', 'destroyed')),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, scheme, version),
    FOREIGN KEY (tenant, scheme) REFERENCES schemes (tenant, name)
);
