-- Replication status samples: one row per standby each time ReplicationManager::record_status
-- runs, so lag and slot retention can be followed over time.
CREATE TABLE IF NOT EXISTS replication_status (
    id                  BIGSERIAL PRIMARY KEY,
    checked_at          TIMESTAMPTZ NOT NULL,
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    primary_node        TEXT,
    replica_node        TEXT NOT NULL,
    reachable           BOOLEAN NOT NULL,
    in_recovery         BOOLEAN,
    streaming           BOOLEAN,
    state               TEXT,
    sync_state          TEXT,
    replay_lsn          TEXT,
    lag_bytes           BIGINT CHECK (lag_bytes IS NULL OR lag_bytes >= 0),
    lag_seconds         DOUBLE PRECISION,
    slot_active         BOOLEAN,
    slot_retained_bytes BIGINT,
    split_brain         BOOLEAN NOT NULL DEFAULT false,
    error               TEXT
);

CREATE INDEX IF NOT EXISTS replication_status_replica_time ON replication_status (replica_node, checked_at DESC);
