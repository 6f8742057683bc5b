-- WAL that `wal-push` reported archived without storing it, because the WAL waiting to be
-- archived had passed `wal_queue_max`. One row per run of consecutive segments; the repository
-- keeps its own signed copy under wal-gaps/. Point-in-time recovery cannot cross a gap; the
-- first full backup taken after it closes it.
CREATE TABLE IF NOT EXISTS wal_gaps (
    id                  BIGSERIAL   PRIMARY KEY,
    gap_id              TEXT        NOT NULL UNIQUE,
    timeline            INTEGER     NOT NULL,
    first_segment       TEXT        NOT NULL,
    last_segment        TEXT        NOT NULL,
    segments            BIGINT      NOT NULL,
    bytes               BIGINT      NOT NULL,
    complete_before     TIMESTAMPTZ,
    first_dropped_at    TIMESTAMPTZ NOT NULL,
    last_dropped_at     TIMESTAMPTZ NOT NULL,
    queue_bytes         BIGINT      NOT NULL,
    limit_bytes         BIGINT      NOT NULL,
    closed_by_backup_id TEXT,
    closed_at           TIMESTAMPTZ
);
