-- 24.2 foundation schema: accounts, streaming, billing, the event log and snapshots.

CREATE TABLE users (
    id              BIGSERIAL PRIMARY KEY,
    username        VARCHAR(64)  NOT NULL,
    email           VARCHAR(320) NOT NULL,
    password_hash   TEXT         NOT NULL,
    display_name    VARCHAR(128),
    avatar_url      TEXT,
    is_verified     BOOLEAN      NOT NULL DEFAULT FALSE,
    is_active       BOOLEAN      NOT NULL DEFAULT TRUE,
    last_login_at   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE sessions (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT       NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_token   TEXT         NOT NULL UNIQUE,
    expires_at      TIMESTAMPTZ  NOT NULL,
    is_active       BOOLEAN      NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE streams (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT       NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name            VARCHAR(255) NOT NULL,
    description     TEXT,
    stream_key      VARCHAR(128) NOT NULL UNIQUE,
    is_live         BOOLEAN      NOT NULL DEFAULT FALSE,
    viewer_count    INTEGER      NOT NULL DEFAULT 0,
    bitrate_kbps    INTEGER,
    fps             INTEGER,
    resolution      VARCHAR(32),
    codec           VARCHAR(32),
    started_at      TIMESTAMPTZ,
    ended_at        TIMESTAMPTZ,
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX streams_user_idx ON streams (user_id);
CREATE INDEX streams_live_idx ON streams (is_live) WHERE is_live;

CREATE TABLE stream_sessions (
    id                  BIGSERIAL PRIMARY KEY,
    stream_id           BIGINT      NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
    started_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at            TIMESTAMPTZ,
    duration_seconds    BIGINT,
    total_viewers       INTEGER     NOT NULL DEFAULT 0,
    peak_viewers        INTEGER     NOT NULL DEFAULT 0,
    bytes_transferred   BIGINT      NOT NULL DEFAULT 0,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX stream_sessions_stream_idx ON stream_sessions (stream_id);

CREATE TABLE recordings (
    id                  BIGSERIAL PRIMARY KEY,
    stream_session_id   BIGINT      NOT NULL REFERENCES stream_sessions(id) ON DELETE CASCADE,
    storage_path        TEXT        NOT NULL,
    size_bytes          BIGINT      NOT NULL DEFAULT 0,
    duration_seconds    BIGINT,
    format              VARCHAR(32),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX recordings_session_idx ON recordings (stream_session_id);

CREATE TABLE usage_logs (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT      NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    stream_id       BIGINT      REFERENCES streams(id) ON DELETE SET NULL,
    usage_type      VARCHAR(64) NOT NULL,
    quantity        NUMERIC(20, 6) NOT NULL DEFAULT 0,
    unit            VARCHAR(32) NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX usage_logs_user_time_idx ON usage_logs (user_id, recorded_at);

CREATE TABLE billing_accounts (
    id                  BIGSERIAL PRIMARY KEY,
    user_id             BIGINT      NOT NULL UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    plan                VARCHAR(64) NOT NULL DEFAULT 'free',
    balance_cents       BIGINT      NOT NULL DEFAULT 0,
    currency            CHAR(3)     NOT NULL DEFAULT 'USD',
    payment_method_ref  TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Append-only event log; (aggregate_type, aggregate_id, version) is the optimistic-concurrency key.
CREATE TABLE event_log (
    id              BIGSERIAL PRIMARY KEY,
    aggregate_type  VARCHAR(64)  NOT NULL,
    aggregate_id    VARCHAR(128) NOT NULL,
    version         BIGINT       NOT NULL,
    event_type      VARCHAR(128) NOT NULL,
    payload         JSONB        NOT NULL DEFAULT '{}'::jsonb,
    metadata        JSONB        NOT NULL DEFAULT '{}'::jsonb,
    user_id         BIGINT,
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    UNIQUE (aggregate_type, aggregate_id, version)
);
CREATE INDEX event_log_user_idx ON event_log (user_id, created_at);
CREATE INDEX event_log_type_idx ON event_log (event_type, created_at);

CREATE TABLE snapshots (
    id              BIGSERIAL PRIMARY KEY,
    aggregate_type  VARCHAR(64)  NOT NULL,
    aggregate_id    VARCHAR(128) NOT NULL,
    version         BIGINT       NOT NULL,
    state           JSONB        NOT NULL,
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    UNIQUE (aggregate_type, aggregate_id, version)
);

CREATE FUNCTION rsdb_set_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION rsdb_set_updated_at();
CREATE TRIGGER sessions_updated_at BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION rsdb_set_updated_at();
CREATE TRIGGER streams_updated_at BEFORE UPDATE ON streams
    FOR EACH ROW EXECUTE FUNCTION rsdb_set_updated_at();
CREATE TRIGGER stream_sessions_updated_at BEFORE UPDATE ON stream_sessions
    FOR EACH ROW EXECUTE FUNCTION rsdb_set_updated_at();
CREATE TRIGGER recordings_updated_at BEFORE UPDATE ON recordings
    FOR EACH ROW EXECUTE FUNCTION rsdb_set_updated_at();
CREATE TRIGGER billing_accounts_updated_at BEFORE UPDATE ON billing_accounts
    FOR EACH ROW EXECUTE FUNCTION rsdb_set_updated_at();
