-- Every automatic failover, manual failover and planned switchover of the PostgreSQL cluster,
-- written by the failover manager on the new primary right after promotion.
CREATE TABLE IF NOT EXISTS failover_history (
    id                  BIGSERIAL   PRIMARY KEY,
    cluster             TEXT        NOT NULL,
    kind                TEXT        NOT NULL CHECK (kind IN ('automatic', 'manual', 'switchover')),
    mode                TEXT        NOT NULL CHECK (mode IN ('sync', 'async')),
    old_primary         TEXT        NOT NULL,
    new_primary         TEXT        NOT NULL,
    decided_by          TEXT        NOT NULL,
    detected_at         TIMESTAMPTZ NOT NULL,
    decided_at          TIMESTAMPTZ NOT NULL,
    promoted_at         TIMESTAMPTZ NOT NULL,
    old_primary_lsn     TEXT,
    new_primary_lsn     TEXT,
    -- max(0, last known primary position - chosen node's position); 0 in synchronous mode,
    -- where every acknowledged commit was already on a synchronous standby.
    bytes_lost_estimate BIGINT      NOT NULL DEFAULT 0,
    timeline            INTEGER,
    reason              TEXT        NOT NULL,
    details             JSONB       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS failover_history_time_idx ON failover_history (promoted_at);
