-- Every backup attempt, from start to completed or failed, and deleted by retention.
CREATE TABLE backup_history (
    id                      BIGSERIAL PRIMARY KEY,
    backup_id               TEXT        NOT NULL UNIQUE,
    backup_type             TEXT        NOT NULL CHECK (backup_type IN ('full', 'incremental', 'differential')),
    method                  TEXT        NOT NULL,
    status                  TEXT        NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed', 'deleted')),
    storage                 TEXT        NOT NULL,
    path                    TEXT        NOT NULL,
    database_name           TEXT,
    size_bytes              BIGINT,
    compressed_size_bytes   BIGINT,
    encryption              TEXT,
    key_id                  TEXT,
    parent_backup_id        TEXT,
    start_lsn               TEXT,
    stop_lsn                TEXT,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at             TIMESTAMPTZ,
    deleted_at              TIMESTAMPTZ,
    error_message           TEXT,
    metadata                JSONB       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX backup_history_type_time_idx ON backup_history (backup_type, started_at);
