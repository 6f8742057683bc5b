-- Sessions with device binding and MFA state; per-user TOTP enrollment, backup codes and the
-- log of every MFA attempt. Additive: existing sessions rows keep working.

-- New sessions store only the SHA-256 of their token; the old column stays for old rows.
ALTER TABLE sessions ALTER COLUMN session_token DROP NOT NULL;
ALTER TABLE sessions
    ADD COLUMN token_hash           TEXT UNIQUE,
    ADD COLUMN device_fingerprint   TEXT,
    ADD COLUMN ip_address           TEXT,
    ADD COLUMN user_agent           TEXT,
    ADD COLUMN geo_location         TEXT,
    ADD COLUMN remember_me          BOOLEAN     NOT NULL DEFAULT FALSE,
    ADD COLUMN mfa_required         BOOLEAN     NOT NULL DEFAULT FALSE,
    ADD COLUMN mfa_verified_at      TIMESTAMPTZ,
    ADD COLUMN last_activity_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN idle_timeout_seconds INTEGER     NOT NULL DEFAULT 1800,
    ADD COLUMN revoked_at           TIMESTAMPTZ,
    ADD COLUMN revoke_reason        TEXT;
CREATE INDEX sessions_user_active_idx ON sessions (user_id, created_at) WHERE is_active;

CREATE TABLE user_mfa (
    user_id           BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret_encrypted  BYTEA       NOT NULL,
    key_id            TEXT        NOT NULL,
    algorithm         TEXT        NOT NULL DEFAULT 'SHA1',
    digits            SMALLINT    NOT NULL DEFAULT 6,
    period_seconds    SMALLINT    NOT NULL DEFAULT 30,
    enabled           BOOLEAN     NOT NULL DEFAULT FALSE,
    confirmed_at      TIMESTAMPTZ,
    -- The highest time step ever accepted: a code is accepted only for a later step.
    last_used_step    BIGINT      NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TRIGGER user_mfa_updated_at BEFORE UPDATE ON user_mfa
    FOR EACH ROW EXECUTE FUNCTION rsdb_set_updated_at();

CREATE TABLE mfa_backup_codes (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT      NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT        NOT NULL,
    key_id      TEXT        NOT NULL,
    used_at     TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, code_hash)
);

CREATE TABLE mfa_attempts (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT      NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id  BIGINT,
    method      TEXT        NOT NULL,
    success     BOOLEAN     NOT NULL,
    reason      TEXT        NOT NULL,
    ip_address  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX mfa_attempts_user_time_idx ON mfa_attempts (user_id, created_at);
