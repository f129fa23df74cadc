-- Veil metadata, version 3: data subjects and erasure certificates (issue 17, docs/erasure.md).
-- The same logical schema as migrations/sqlite/0003_subjects.sql.
CREATE TABLE IF NOT EXISTS subjects (
    tenant      TEXT   NOT NULL,
    digest      BYTEA  NOT NULL CHECK (length(digest) = 32),
    secret      BYTEA  NOT NULL CHECK (length(secret) = 32),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, digest)
);

CREATE TABLE IF NOT EXISTS erasures (
    certificate_id  TEXT   NOT NULL PRIMARY KEY,
    tenant          TEXT   NOT NULL,
    scope           TEXT   NOT NULL CHECK (scope IN ('subject', 'scheme', 'tenant')),
    subject_digest  BYTEA,
    scheme          TEXT,
    certificate     TEXT   NOT NULL,
    erased_at       BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS erasures_by_subject ON erasures (tenant, subject_digest, erased_at);
