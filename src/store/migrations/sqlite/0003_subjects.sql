-- Veil metadata, version 3: data subjects and erasure certificates (issue 17, docs/erasure.md).
-- A subject is found by its keyed digest (HMAC-SHA256 of the id under a per-tenant key), never
-- by the id itself; `secret` is its random 32-byte secret, deleted to erase it. `erasures` keeps
-- each signed certificate (canonical JSON), with the digest, never the id.
CREATE TABLE IF NOT EXISTS subjects (
    tenant      TEXT    NOT NULL,
    digest      BLOB    NOT NULL CHECK (length(digest) = 32),
    secret      BLOB    NOT NULL CHECK (length(secret) = 32),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, digest)
);

CREATE TABLE IF NOT EXISTS erasures (
    certificate_id  TEXT    NOT NULL PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    scope           TEXT    NOT NULL CHECK (scope IN ('subject', 'scheme', 'tenant')),
    subject_digest  BLOB,
    scheme          TEXT,
    certificate     TEXT    NOT NULL,
    erased_at       INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS erasures_by_subject ON erasures (tenant, subject_digest, erased_at);
