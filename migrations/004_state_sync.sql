-- State sync: versioned, compressed snapshots of the shared entity state, and the concurrent
-- changes no merge function resolved.
CREATE TABLE sync_snapshots (
    id              BIGSERIAL   PRIMARY KEY,
    namespace       TEXT        NOT NULL,
    version         BIGINT      NOT NULL,
    -- The last log entry the state includes (stream id, epoch and number; '' and 0 when the
    -- log was empty), and each origin's last sequence number it includes.
    log_id          TEXT        NOT NULL,
    log_epoch       TEXT        NOT NULL,
    log_n           BIGINT      NOT NULL,
    origin_seqs     JSONB       NOT NULL,
    entity_count    INTEGER     NOT NULL,
    -- zstd-compressed JSON of the entity store (format 1).
    format          SMALLINT    NOT NULL DEFAULT 1,
    state           BYTEA       NOT NULL,
    raw_bytes       BIGINT      NOT NULL,
    taken_by        TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (namespace, version)
);

CREATE TABLE sync_conflicts (
    id              BIGSERIAL   PRIMARY KEY,
    namespace       TEXT        NOT NULL,
    entity_type     TEXT        NOT NULL,
    entity_id       TEXT        NOT NULL,
    kept            JSONB       NOT NULL,
    lost            JSONB       NOT NULL,
    reason          TEXT        NOT NULL,
    detected_by     TEXT        NOT NULL,
    detected_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sync_conflicts_entity_idx ON sync_conflicts (namespace, entity_type, entity_id);
