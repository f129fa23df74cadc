-- Veil metadata, version 6: bulk re-encryption jobs (issue 13 item 4, docs/rotation.md
-- "Converting a table"). A job names the scheme, the target version and where the data is: a
-- Spin variable holding the customer database's URL (never the URL itself), a table and its
-- columns (validated identifiers). The rows' progress of record is kept in the customer database,
-- in the same transaction as the rows (veil_job_progress there); the counters here are a copy,
-- refreshed after every step and only ever raised, so a step killed between the two databases
-- loses nothing: the next step or GET brings them level.
CREATE TABLE IF NOT EXISTS jobs (
    tenant            TEXT    NOT NULL,
    id                TEXT    NOT NULL,
    scheme            TEXT    NOT NULL,
    target_version    BIGINT  NOT NULL CHECK (target_version >= 1),
    database_var      TEXT    NOT NULL,
    table_name        TEXT    NOT NULL,
    key_column        TEXT    NOT NULL,
    token_column      TEXT    NOT NULL,
    subject_column    TEXT,
    context           TEXT,
    batch_size        BIGINT  NOT NULL CHECK (batch_size >= 1),
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'finished', 'cancelled')),
    total             BIGINT  NOT NULL CHECK (total >= 0),
    done              BIGINT  NOT NULL DEFAULT 0 CHECK (done >= 0),
    failed            BIGINT  NOT NULL DEFAULT 0 CHECK (failed >= 0),
    rows_below_target BIGINT,
    created_at        BIGINT  NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    PRIMARY KEY (tenant, id)
);
-- Rows a job could not rewrap: the row's key (as text) and the per-item code, never the token.
CREATE TABLE IF NOT EXISTS job_failures (
    tenant   TEXT    NOT NULL,
    job      TEXT    NOT NULL,
    row_key  TEXT    NOT NULL,
    code     TEXT    NOT NULL,
    PRIMARY KEY (tenant, job, row_key)
);
