//! Login sessions bound to a device.
//!
//! A session's token is 256 bits from the OS random source, returned once at creation; only
//! its SHA-256 is stored (PostgreSQL) and used as the cache key (Redis, with the session's
//! remaining lifetime as TTL). Validation reads the cache first and falls back to PostgreSQL
//! when Redis misses or is down. A token presented from another device fingerprint revokes the
//! session and records `session.hijack_suspected`. Activity timestamps are written at most once
//! per throttle interval, not on every validation.

use crate::cache::RedisClient;
use crate::config::Config;
use crate::crypto::random;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use crate::events::{EventStore, NewEvent};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Row;

/// A session token. Shown once; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    fn generate() -> Result<Self> {
        use base64::Engine;
        Ok(SessionToken(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::bytes(32)?)))
    }

    /// Wraps a token received from a client.
    pub fn from_client(token: &str) -> Self {
        SessionToken(token.to_string())
    }

    /// The token text, to hand to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the token, hex: what is stored and used as the cache key.
    pub fn hash(&self) -> String {
        token_hash(&self.0)
    }
}

/// SHA-256 of a token as presented, hex.
fn token_hash(token: &str) -> String {
    let mut text = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(Sha256::digest(token.as_bytes()), &mut text);
    std::str::from_utf8(&text).unwrap_or_default().to_owned()
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// Where a login comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// A stable identifier of the client device, computed by the client. Required.
    pub fingerprint: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub geo_location: Option<String>,
}

/// A session as stored (without its token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: i64,
    pub user_id: i64,
    pub device_fingerprint: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub geo_location: Option<String>,
    pub remember_me: bool,
    /// The login needs a second factor before the session grants access.
    pub mfa_required: bool,
    #[serde(serialize_with = "crate::models::rfc3339::option::serialize")]
    pub mfa_verified_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::models::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::models::rfc3339::serialize")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::models::rfc3339::serialize")]
    pub last_activity_at: DateTime<Utc>,
    pub idle_timeout_seconds: i32,
    pub is_active: bool,
    #[serde(serialize_with = "crate::models::rfc3339::option::serialize")]
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<String>,
}

impl Session {
    /// The session as JSON, exactly as its `Serialize` writes it (a test holds the two equal),
    /// but written directly: the C face hands one out on every validation.
    pub fn to_json(&self) -> String {
        fn int(o: &mut String, v: i64) {
            let mut digits = [0u8; 20];
            let mut n = digits.len();
            let mut u = v.unsigned_abs();
            loop {
                n -= 1;
                digits[n] = b'0' + (u % 10) as u8;
                u /= 10;
                if u == 0 {
                    break;
                }
            }
            if v < 0 {
                o.push('-');
            }
            o.push_str(std::str::from_utf8(&digits[n..]).unwrap_or_default());
        }
        fn text(o: &mut String, v: Option<&str>) {
            match v {
                None => o.push_str("null"),
                Some(v) if !v.bytes().any(|c| c < 0x20 || c == b'"' || c == b'\\') => {
                    o.push('"');
                    o.push_str(v);
                    o.push('"');
                }
                Some(v) => o.push_str(&serde_json::to_string(v).unwrap_or_default()),
            }
        }
        fn time(o: &mut String, v: Option<&DateTime<Utc>>) {
            match v {
                None => o.push_str("null"),
                Some(t) => crate::models::rfc3339::push_json(t, o),
            }
        }
        let flag = |v: bool| if v { "true" } else { "false" };
        let mut o = String::with_capacity(384 + self.user_agent.as_ref().map_or(0, String::len));
        o.push_str("{\"id\":");
        int(&mut o, self.id);
        o.push_str(",\"user_id\":");
        int(&mut o, self.user_id);
        o.push_str(",\"device_fingerprint\":");
        text(&mut o, Some(&self.device_fingerprint));
        o.push_str(",\"ip_address\":");
        text(&mut o, self.ip_address.as_deref());
        o.push_str(",\"user_agent\":");
        text(&mut o, self.user_agent.as_deref());
        o.push_str(",\"geo_location\":");
        text(&mut o, self.geo_location.as_deref());
        o.push_str(",\"remember_me\":");
        o.push_str(flag(self.remember_me));
        o.push_str(",\"mfa_required\":");
        o.push_str(flag(self.mfa_required));
        o.push_str(",\"mfa_verified_at\":");
        time(&mut o, self.mfa_verified_at.as_ref());
        o.push_str(",\"created_at\":");
        time(&mut o, Some(&self.created_at));
        o.push_str(",\"expires_at\":");
        time(&mut o, Some(&self.expires_at));
        o.push_str(",\"last_activity_at\":");
        time(&mut o, Some(&self.last_activity_at));
        o.push_str(",\"idle_timeout_seconds\":");
        int(&mut o, i64::from(self.idle_timeout_seconds));
        o.push_str(",\"is_active\":");
        o.push_str(flag(self.is_active));
        o.push_str(",\"revoked_at\":");
        time(&mut o, self.revoked_at.as_ref());
        o.push_str(",\"revoke_reason\":");
        text(&mut o, self.revoke_reason.as_deref());
        o.push('}');
        o
    }

    /// True when no second factor is pending.
    pub fn mfa_satisfied(&self) -> bool {
        !self.mfa_required || self.mfa_verified_at.is_some()
    }

    /// A row whose first columns are [`COLUMNS`], in that order (every session query selects
    /// them so): read by position, without looking names up.
    fn from_row(r: &Row) -> Self {
        debug_assert!(
            COLUMNS.split(", ").zip(r.columns()).all(|(want, c)| c.name() == want),
            "a session row starts with COLUMNS"
        );
        Session {
            id: r.get(0),
            user_id: r.get(1),
            device_fingerprint: r.get::<_, Option<String>>(2).unwrap_or_default(),
            ip_address: r.get(3),
            user_agent: r.get(4),
            geo_location: r.get(5),
            remember_me: r.get(6),
            mfa_required: r.get(7),
            mfa_verified_at: r.get(8),
            created_at: r.get(9),
            expires_at: r.get(10),
            last_activity_at: r.get(11),
            idle_timeout_seconds: r.get(12),
            is_active: r.get(13),
            revoked_at: r.get(14),
            revoke_reason: r.get(15),
        }
    }
}

/// A new session and its token (which is not stored anywhere and cannot be shown again).
#[derive(Debug, Clone)]
pub struct CreatedSession {
    pub token: SessionToken,
    pub session: Session,
}

const COLUMNS: &str = "id, user_id, device_fingerprint, ip_address, user_agent, geo_location, remember_me, mfa_required, mfa_verified_at, created_at, expires_at, last_activity_at, idle_timeout_seconds, is_active, revoked_at, revoke_reason";

/// Creates a session in one statement: evicts the oldest sessions over the limit (or inserts
/// nothing under the refuse policy) of an active user, inserts the new one, and records a `session.revoked` event
/// for each eviction. (Creation itself is published, and is the session row; the event log
/// keeps what ends sessions.) $1 user, $2 limit (0 = none), $3 refuse, $4 token hash, $5 lifetime
/// in seconds, $6..$9 device, $10 remember me, $11 MFA required, $12 idle timeout.
const CREATE_SQL: &str = "
WITH active AS (
    SELECT id, token_hash FROM sessions
    WHERE user_id = $1 AND is_active AND expires_at > now()
    ORDER BY created_at DESC, id DESC
    OFFSET GREATEST($2::bigint - 1, 0)
), evicted AS (
    UPDATE sessions s SET is_active = FALSE, revoked_at = now(), revoke_reason = 'evicted'
    FROM active a
    WHERE s.id = a.id AND $2::bigint > 0 AND NOT $3::boolean
      AND EXISTS (SELECT 1 FROM users u WHERE u.id = $1::bigint AND u.is_active)
    RETURNING s.id, s.token_hash
), ins AS (
    INSERT INTO sessions (user_id, token_hash, expires_at, device_fingerprint, ip_address, user_agent, geo_location,
                          remember_me, mfa_required, idle_timeout_seconds)
    SELECT u.id, $4::text, now() + make_interval(secs => $5::float8), $6::text, $7::text, $8::text, $9::text,
           $10::boolean, $11::boolean, $12::int
    FROM users u
    WHERE u.id = $1::bigint AND u.is_active AND ($2::bigint = 0 OR NOT $3::boolean OR NOT EXISTS (SELECT 1 FROM active))
    RETURNING *
), evicted_events AS (
    INSERT INTO event_log (aggregate_type, aggregate_id, version, event_type, payload, user_id)
    SELECT 'session', e.id::text,
           (SELECT COALESCE(MAX(version), 0) + 1 FROM event_log WHERE aggregate_type = 'session' AND aggregate_id = e.id::text),
           'session.revoked',
           jsonb_build_object('type', 'session.revoked', 'session_id', e.id, 'user_id', $1, 'reason', 'evicted', 'at', now()),
           $1
    FROM evicted e
)
SELECT ins.id, ins.user_id, ins.device_fingerprint, ins.ip_address, ins.user_agent, ins.geo_location, ins.remember_me,
       ins.mfa_required, ins.mfa_verified_at, ins.created_at, ins.expires_at, ins.last_activity_at,
       ins.idle_timeout_seconds, ins.is_active, ins.revoked_at, ins.revoke_reason,
       COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id, 'token_hash', token_hash)) FROM evicted), '[]'::jsonb) AS evicted
FROM ins";

/// The column of [`CREATE_SQL`] that lists the evicted sessions (after the session's columns).
const EVICTED_COLUMN: usize = 16;

/// Creation without a per-user limit: the INSERT alone. $1 user, $2 token hash, $3 lifetime in
/// seconds, $4..$7 device, $8 remember me, $9 MFA required, $10 idle timeout.
const CREATE_UNLIMITED_SQL: &str = "
INSERT INTO sessions (user_id, token_hash, expires_at, device_fingerprint, ip_address, user_agent, geo_location,
                      remember_me, mfa_required, idle_timeout_seconds)
SELECT u.id, $2::text, now() + make_interval(secs => $3::float8), $4::text, $5::text, $6::text, $7::text,
       $8::boolean, $9::boolean, $10::int
FROM users u
WHERE u.id = $1::bigint AND u.is_active
RETURNING id, user_id, device_fingerprint, ip_address, user_agent, geo_location, remember_me, mfa_required,
          mfa_verified_at, created_at, expires_at, last_activity_at, idle_timeout_seconds, is_active, revoked_at,
          revoke_reason";

/// The lock that queues the logins of one user (with a limit).
const LOCK_USER_SQL: &str = "SELECT 1 FROM users WHERE id = $1 AND is_active FOR UPDATE";

/// What to do when a user already has the maximum number of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    /// Revoke the oldest sessions to make room.
    EvictOldest,
    /// Refuse the new login.
    Refuse,
}

/// Session lifetimes and limits (from [`Config`]).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub ttl: Duration,
    pub remember_ttl: Duration,
    pub idle_timeout: Duration,
    pub max_per_user: u32,
    pub policy: LimitPolicy,
    /// How long ended sessions are kept (for audit) before [`SessionModel::cleanup`] deletes them.
    pub ended_retention: Duration,
}

/// The reason recorded when a caller revokes a session without giving one.
pub const DEFAULT_REVOKE_REASON: &str = "revoked";

/// The reason recorded when an operator revokes all of a user's sessions (`rsdb sessions
/// revoke-all`).
pub const OPERATOR_REVOKE_REASON: &str = "revoked by an operator";

fn reason_or_default(reason: Option<&str>) -> &str {
    reason.unwrap_or(DEFAULT_REVOKE_REASON)
}

impl SessionSettings {
    pub fn from_config(cfg: &Config) -> Self {
        SessionSettings {
            ttl: cfg.session_ttl,
            remember_ttl: cfg.session_remember_ttl,
            idle_timeout: cfg.session_idle_timeout,
            max_per_user: cfg.session_max_per_user,
            policy: if cfg.session_limit_policy == "refuse" { LimitPolicy::Refuse } else { LimitPolicy::EvictOldest },
            ended_retention: cfg.session_ended_retention,
        }
    }

    /// How stale the recorded activity may get before a validation writes it again: a tenth
    /// of the idle timeout, at most a minute, at least a second.
    pub fn activity_interval(&self) -> Duration {
        (self.idle_timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// Counters of the session layer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SessionStats {
    /// Validations answered from Redis.
    pub cache_hits: u64,
    /// Validations answered from PostgreSQL (cache miss or Redis down).
    pub cache_misses: u64,
    /// Redis operations that failed (the database answered instead).
    pub cache_errors: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

/// Redis key of a cached session.
pub fn cache_key(token_hash: &str) -> String {
    const PREFIX: &str = "rsdb:session:";
    let mut key = String::with_capacity(PREFIX.len() + token_hash.len());
    key.push_str(PREFIX);
    key.push_str(token_hash);
    key
}

/// Version tag of the cached form; a value with another tag is read from the database instead.
const CACHED_FORM: u8 = 2;

/// The cached form of a session: a JSON array in field order, timestamps as Unix microseconds
/// (PostgreSQL's precision), so a validation reads it without matching field names or parsing
/// dates.
#[derive(Serialize, Deserialize)]
struct CachedForm<'a>(
    u8,
    i64,
    i64,
    Cow<'a, str>,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    bool,
    bool,
    Option<i64>,
    i64,
    i64,
    i64,
    i32,
    bool,
    Option<i64>,
    Option<Cow<'a, str>>,
);

/// The value cached under [`cache_key`] for a session.
fn encode_cached(s: &Session) -> String {
    let us = |t: &DateTime<Utc>| t.timestamp_micros();
    let form = CachedForm(
        CACHED_FORM,
        s.id,
        s.user_id,
        Cow::Borrowed(&s.device_fingerprint),
        s.ip_address.as_deref().map(Cow::Borrowed),
        s.user_agent.as_deref().map(Cow::Borrowed),
        s.geo_location.as_deref().map(Cow::Borrowed),
        s.remember_me,
        s.mfa_required,
        s.mfa_verified_at.as_ref().map(us),
        us(&s.created_at),
        us(&s.expires_at),
        us(&s.last_activity_at),
        s.idle_timeout_seconds,
        s.is_active,
        s.revoked_at.as_ref().map(us),
        s.revoke_reason.as_deref().map(Cow::Borrowed),
    );
    serde_json::to_string(&form).unwrap_or_default()
}

/// Reads the cached form as [`encode_cached`] writes it (no whitespace, strings without
/// escapes) with a scanner that knows its shape; `None` sends the text to the JSON parser.
fn scan_cached(text: &str) -> Option<CachedForm<'_>> {
    let mut s = Scan { b: text.as_bytes(), i: 0 };
    s.eat(b'[')?;
    let tag = s.int()?;
    let f = CachedForm(
        u8::try_from(tag).ok()?,
        s.next()?.int()?,
        s.next()?.int()?,
        Cow::Borrowed(s.next()?.string()?),
        s.next()?.opt(Scan::string)?.map(Cow::Borrowed),
        s.next()?.opt(Scan::string)?.map(Cow::Borrowed),
        s.next()?.opt(Scan::string)?.map(Cow::Borrowed),
        s.next()?.boolean()?,
        s.next()?.boolean()?,
        s.next()?.opt(Scan::int)?,
        s.next()?.int()?,
        s.next()?.int()?,
        s.next()?.int()?,
        i32::try_from(s.next()?.int()?).ok()?,
        s.next()?.boolean()?,
        s.next()?.opt(Scan::int)?,
        s.next()?.opt(Scan::string)?.map(Cow::Borrowed),
    );
    s.eat(b']')?;
    (s.i == s.b.len()).then_some(f)
}

/// A cursor over the cached form for [`scan_cached`].
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn next(&mut self) -> Option<&mut Self> {
        self.eat(b',')?;
        Some(self)
    }

    fn word(&mut self, w: &[u8]) -> bool {
        let hit = self.b[self.i..].starts_with(w);
        if hit {
            self.i += w.len();
        }
        hit
    }

    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.word(b"null") {
            return Some(None);
        }
        read(self).map(Some)
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.word(b"true") {
            Some(true)
        } else if self.word(b"false") {
            Some(false)
        } else {
            None
        }
    }

    fn int(&mut self) -> Option<i64> {
        let negative = self.eat(b'-').is_some();
        let start = self.i;
        // Accumulated negative, so i64::MIN fits; "-" alone and overflow go to the JSON parser.
        let mut v: i64 = 0;
        while let Some(d) = self.b.get(self.i).filter(|c| c.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        if negative {
            Some(v)
        } else {
            v.checked_neg()
        }
    }

    /// A string without escapes (a backslash hands the whole value to the JSON parser).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let len = self.b[start..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        // The slice ends before an ASCII quote of valid UTF-8 text: still valid UTF-8.
        std::str::from_utf8(&self.b[start..start + len]).ok()
    }
}

/// Reads a cached session; `None` for anything unreadable or of another form (the database
/// answers instead).
fn decode_cached(text: &str) -> Option<Session> {
    // Strings in a cached value may carry escapes: the JSON parser reads those owned.
    let f: CachedForm<'_> = match scan_cached(text) {
        Some(f) => f,
        None => serde_json::from_str::<CachedForm<'static>>(text).ok()?,
    };
    if f.0 != CACHED_FORM {
        return None;
    }
    let at = DateTime::<Utc>::from_timestamp_micros;
    let opt = |t: Option<i64>| match t {
        Some(t) => at(t).map(Some),
        None => Some(None),
    };
    Some(Session {
        id: f.1,
        user_id: f.2,
        device_fingerprint: f.3.into_owned(),
        ip_address: f.4.map(Cow::into_owned),
        user_agent: f.5.map(Cow::into_owned),
        geo_location: f.6.map(Cow::into_owned),
        remember_me: f.7,
        mfa_required: f.8,
        mfa_verified_at: opt(f.9)?,
        created_at: at(f.10)?,
        expires_at: at(f.11)?,
        last_activity_at: at(f.12)?,
        idle_timeout_seconds: f.13,
        is_active: f.14,
        revoked_at: opt(f.15)?,
        revoke_reason: f.16.map(Cow::into_owned),
    })
}

/// The `session.created` announcement: the fields of [`SessionModel::payload`] and the login's
/// flags, in the order a JSON object's keys are written (sorted).
#[derive(Serialize)]
struct CreatedPayload<'a> {
    at: String,
    ip_address: Option<&'a str>,
    mfa_required: bool,
    remember_me: bool,
    session_id: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: i64,
}

/// Sessions. Cheap to clone.
#[derive(Clone)]
pub struct SessionModel {
    db: DatabaseManager,
    redis: RedisClient,
    events: EventStore,
    settings: SessionSettings,
    counters: Arc<Counters>,
    broadcast: super::Broadcaster,
}

impl std::fmt::Debug for SessionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionModel").field("settings", &self.settings).finish()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl SessionModel {
    pub fn new(db: DatabaseManager, redis: RedisClient, settings: SessionSettings) -> Self {
        let events = EventStore::new(db.clone());
        SessionModel {
            db,
            redis,
            events,
            settings,
            counters: Arc::new(Counters::default()),
            broadcast: super::Broadcaster::default(),
        }
    }

    /// Announces created and revoked sessions through `sync` from now on (None stops it): the
    /// events `session.created` and `session.revoked`, and the shared `session` entity's
    /// `user_id` and `active` fields. No token or hash is ever announced. Clones share this.
    pub fn set_sync(&self, sync: Option<crate::sync::StateSyncManager>) {
        self.broadcast.set(sync);
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            cache_hits: self.counters.hits.load(Ordering::Relaxed),
            cache_misses: self.counters.misses.load(Ordering::Relaxed),
            cache_errors: self.counters.errors.load(Ordering::Relaxed),
        }
    }

    /// Creates a session. `mfa_required` makes it grant access only after `mark_mfa_verified`.
    /// Enforces the per-user limit under a lock on the user, so concurrent logins cannot exceed it.
    pub async fn create(
        &self,
        user_id: i64,
        device: &DeviceInfo,
        remember_me: bool,
        mfa_required: bool,
    ) -> Result<CreatedSession> {
        if device.fingerprint.is_empty() || device.fingerprint.len() > 512 {
            return Err(Error::invalid("device fingerprint must have 1 to 512 bytes"));
        }
        crate::models::check_text("fingerprint", &device.fingerprint, 512, false)?;
        for (name, v, max) in [
            ("ip_address", &device.ip_address, 64),
            ("user_agent", &device.user_agent, 1024),
            ("geo_location", &device.geo_location, 256),
        ] {
            if let Some(v) = v {
                crate::models::check_text(name, v, max, false)?;
            }
        }
        let token = SessionToken::generate()?;
        let hash = token.hash();
        let ttl = if remember_me { self.settings.remember_ttl } else { self.settings.ttl };
        let idle = self.settings.idle_timeout.as_secs().min(i32::MAX as u64) as i32;
        let limit = self.settings.max_per_user as i64;
        let refuse = self.settings.policy == LimitPolicy::Refuse;

        let client = self.db.acquire().await?;
        let c = &client;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
            &user_id,
            &limit,
            &refuse,
            &hash,
            &secs(ttl),
            &device.fingerprint,
            &device.ip_address,
            &device.user_agent,
            &device.geo_location,
            &remember_me,
            &mfa_required,
            &idle,
        ];
        let created = self
            .db
            .timed(Some(c), "session creation", async {
                if limit == 0 {
                    // Nothing to count or evict: one plain INSERT, no transaction around it.
                    let stmt = c.prepare_cached(CREATE_UNLIMITED_SQL).await?;
                    let unlimited: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
                        params[0], params[3], params[4], params[5], params[6], params[7], params[8], params[9],
                        params[10], params[11],
                    ];
                    return Ok(Some(c.query(&stmt, &unlimited).await?));
                }
                // Logins of one user queue on the user's row. BEGIN, the lock, the counting
                // statement and COMMIT travel in one round trip: the server runs them in order,
                // and under READ COMMITTED the counting statement takes its snapshot only when
                // it starts, after the lock was granted, so it sees every session committed by
                // the login that held the lock before. After a failed statement PostgreSQL
                // turns the COMMIT into a rollback.
                let lock = c.prepare_cached(LOCK_USER_SQL).await?;
                let stmt = c.prepare_cached(CREATE_SQL).await?;
                let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&user_id];
                let (begin, locked, rows, commit) = tokio::join!(
                    c.batch_execute("BEGIN"),
                    c.query_opt(&lock, &lock_params),
                    c.query(&stmt, &params),
                    c.batch_execute("COMMIT")
                );
                begin?;
                if locked?.is_none() {
                    commit?;
                    return Ok(None);
                }
                let rows = rows?;
                commit?;
                Ok(Some(rows))
            })
            .await;
        let rows = match created {
            Ok(Some(rows)) => rows,
            Ok(None) => return Err(Error::NotFound(format!("active user {user_id}"))),
            Err(e) => {
                // The connection's transaction state is unknown: do not reuse it.
                let _ = deadpool_postgres::Object::take(client);
                return Err(e);
            }
        };
        drop(client);
        let Some(row) = rows.first() else {
            if limit > 0 && refuse {
                return Err(Error::Conflict(format!("user {user_id} already has {limit} active sessions (the limit)")));
            }
            return Err(Error::NotFound(format!("active user {user_id}")));
        };
        let session = Session::from_row(row);
        let evicted: Vec<(i64, String)> = if limit > 0 {
            let list: serde_json::Value = row.get(EVICTED_COLUMN);
            list.as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (e["id"].as_i64().unwrap_or_default(), e["token_hash"].as_str().unwrap_or_default().to_string())
                })
                .collect()
        } else {
            Vec::new()
        };
        let lib = crate::metrics::library::counters();
        crate::metrics::library::bump(&lib.sessions_created, 1);
        crate::metrics::library::bump(&lib.sessions_revoked, evicted.len() as u64);
        let created = CreatedPayload {
            at: crate::models::ts(&Utc::now()),
            ip_address: device.ip_address.as_deref(),
            mfa_required,
            remember_me,
            session_id: session.id,
            kind: "session.created",
            user_id,
        };
        // The evicted sessions' cache entries go first, then the new entry and the
        // announcements: one Redis round trip for all of them.
        let remaining = (session.expires_at - Utc::now()).to_std().unwrap_or_default().as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for (_, h) in evicted.iter().filter(|(_, h)| !h.is_empty()) {
            pipe.cmd("DEL").arg(cache_key(h)).ignore();
        }
        pipe.cmd("SET").arg(cache_key(&hash)).arg(encode_cached(&session)).arg("PX").arg(remaining).ignore();
        let mut revoked = Vec::with_capacity(evicted.len());
        for (id, _) in &evicted {
            let p = Self::payload("session.revoked", *id, user_id, json!({"reason": "evicted"}));
            pipe.cmd("PUBLISH").arg("session.revoked").arg(p.to_string()).ignore();
            revoked.push(p);
        }
        pipe.cmd("PUBLISH").arg("session.created").arg(serde_json::to_string(&created).unwrap_or_default()).ignore();
        let mut conn = self.redis.connection();
        let sent = tokio::time::timeout(self.redis.timeout(), pipe.query_async::<()>(&mut conn)).await;
        if !matches!(sent, Ok(Ok(()))) {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            // A revoked session must not come back from a stale cache entry.
            for (_, h) in &evicted {
                self.invalidate_cache(h).await;
            }
        }
        if self.broadcast.attached() {
            for p in &revoked {
                self.broadcast_change("session.revoked", p);
            }
            self.broadcast_change("session.created", &serde_json::to_value(&created).unwrap_or_default());
        }
        Ok(CreatedSession { token, session })
    }

    /// Checks a token presented with a device fingerprint. Fails with `Auth` for an unknown,
    /// revoked or expired session; revokes the session (and records `session.hijack_suspected`)
    /// when the fingerprint differs; with `require_mfa`, fails with `MfaRequired` while the second
    /// factor is pending. Answers from Redis when it can, from PostgreSQL otherwise.
    pub async fn validate(&self, token: &str, fingerprint: &str, require_mfa: bool) -> Result<Session> {
        let hash = token_hash(token);
        let session = match self.cached(&hash).await {
            Some(s) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                s
            }
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                let s = self.load_by_hash(&hash).await?.ok_or_else(|| Error::Auth("invalid session token".into()))?;
                if s.is_active {
                    self.cache(&hash, &s).await;
                }
                s
            }
        };
        let now = Utc::now();
        if !session.is_active {
            return Err(Error::Auth("the session has been revoked".into()));
        }
        if now >= session.expires_at {
            self.end(&session, &hash, "expired").await;
            return Err(Error::Auth("the session has expired".into()));
        }
        if now - session.last_activity_at > chrono::Duration::seconds(session.idle_timeout_seconds as i64) {
            self.end(&session, &hash, "idle").await;
            return Err(Error::Auth("the session expired after inactivity".into()));
        }
        if !crate::crypto::envelope::constant_time_eq(session.device_fingerprint.as_bytes(), fingerprint.as_bytes()) {
            self.revoke_hashed(&session, &hash, "hijack_suspected").await?;
            let payload = json!({
                "user_id": session.user_id,
                "expected_fingerprint_sha256": hex::encode(Sha256::digest(session.device_fingerprint.as_bytes())),
                "presented_fingerprint_sha256": hex::encode(Sha256::digest(fingerprint.as_bytes())),
            });
            self.announce("session.hijack_suspected", session.id, session.user_id, payload).await;
            return Err(Error::Auth("the session was presented from another device and has been revoked".into()));
        }
        if require_mfa && !session.mfa_satisfied() {
            return Err(Error::MfaRequired(format!("session {} needs its second factor", session.id)));
        }
        let stale = (now - session.last_activity_at).to_std().unwrap_or_default() >= self.settings.activity_interval();
        if stale {
            self.touch(&session, &hash, now).await?;
        }
        crate::metrics::library::bump(&crate::metrics::library::counters().sessions_validated, 1);
        Ok(session)
    }

    async fn touch(&self, session: &Session, hash: &str, now: DateTime<Utc>) -> Result<()> {
        self.db.execute("UPDATE sessions SET last_activity_at = $2 WHERE id = $1", &[&session.id, &now]).await?;
        let mut s = session.clone();
        s.last_activity_at = now;
        self.cache(hash, &s).await;
        Ok(())
    }

    async fn cached(&self, hash: &str) -> Option<Session> {
        match self.redis.get(&cache_key(hash)).await {
            Ok(Some(text)) => decode_cached(&text),
            Ok(None) => None,
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn cache(&self, hash: &str, s: &Session) {
        let remaining = (s.expires_at - Utc::now()).to_std().unwrap_or_default();
        if remaining.is_zero() {
            return;
        }
        let text = encode_cached(s);
        if self.redis.set(&cache_key(hash), text, Some(remaining)).await.is_err() {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes a cached session. If Redis cannot be reached, keeps retrying in the background
    /// (for up to an hour) so a revoked session does not come back from a stale cache.
    async fn invalidate_cache(&self, hash: &str) {
        if hash.is_empty() {
            return;
        }
        let key = cache_key(hash);
        if self.redis.del(&key).await.is_ok() {
            return;
        }
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let redis = self.redis.clone();
        crate::runtime::runtime().spawn(async move {
            let mut wait = Duration::from_millis(200);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(wait).await;
                if redis.del(&key).await.is_ok() {
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        });
    }

    fn payload(event: &str, session_id: i64, user_id: i64, extra: serde_json::Value) -> serde_json::Value {
        let mut payload =
            json!({"type": event, "session_id": session_id, "user_id": user_id, "at": crate::models::ts(&Utc::now())});
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        payload
    }

    /// Records the event in the event store, then publishes it. The durable record comes first;
    /// the live notification is best effort (Redis may be down).
    async fn announce(&self, event: &str, session_id: i64, user_id: i64, extra: serde_json::Value) {
        let payload = Self::payload(event, session_id, user_id, extra);
        let _ = self
            .events
            .record("session", &session_id.to_string(), NewEvent::new(event, payload.clone()).by_user(user_id))
            .await;
        self.publish_payload(event, &payload).await;
    }

    // Creation and revocation also reach other instances through an attached sync manager.
    fn broadcast_change(&self, event: &str, payload: &serde_json::Value) {
        if (event == "session.created" || event == "session.revoked") && self.broadcast.attached() {
            let id = payload.get("session_id").and_then(serde_json::Value::as_i64).unwrap_or(0);
            let user = payload.get("user_id").cloned().unwrap_or(serde_json::Value::Null);
            let fields = json!({"user_id": user, "active": event == "session.created"});
            self.broadcast.announce(event, "session", id, payload, fields);
        }
    }

    async fn publish_payload(&self, event: &str, payload: &serde_json::Value) {
        self.broadcast_change(event, payload);
        if self.redis.publish(event, payload.to_string()).await.is_err() {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn load_by_hash(&self, hash: &str) -> Result<Option<Session>> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE token_hash = $1");
        Ok(self.db.query_opt(&sql, &[&hash]).await?.as_ref().map(Session::from_row))
    }

    /// Loads a session by id.
    pub async fn get(&self, id: i64) -> Result<Session> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
        self.db
            .query_opt(&sql, &[&id])
            .await?
            .as_ref()
            .map(Session::from_row)
            .ok_or_else(|| Error::NotFound(format!("session {id}")))
    }

    async fn end(&self, s: &Session, hash: &str, reason: &str) {
        let _ = self
            .db
            .execute(
                "UPDATE sessions SET is_active = FALSE, revoked_at = COALESCE(revoked_at, now()), revoke_reason = COALESCE(revoke_reason, $2) WHERE id = $1",
                &[&s.id, &reason],
            )
            .await;
        self.invalidate_cache(hash).await;
    }

    async fn revoke_hashed(&self, s: &Session, hash: &str, reason: &str) -> Result<()> {
        self.db
            .execute(
                "UPDATE sessions SET is_active = FALSE, revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND is_active",
                &[&s.id, &reason],
            )
            .await?;
        crate::metrics::library::bump(&crate::metrics::library::counters().sessions_revoked, 1);
        self.invalidate_cache(hash).await;
        self.announce("session.revoked", s.id, s.user_id, json!({"reason": reason})).await;
        Ok(())
    }

    /// Revokes one session by id. Without a reason the session records
    /// [`DEFAULT_REVOKE_REASON`].
    pub async fn revoke(&self, id: i64, reason: Option<&str>) -> Result<()> {
        let reason = reason_or_default(reason);
        let row = self
            .db
            .query_opt(
                "UPDATE sessions SET is_active = FALSE, revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND is_active RETURNING user_id, token_hash",
                &[&id, &reason],
            )
            .await?;
        match row {
            Some(r) => {
                crate::metrics::library::bump(&crate::metrics::library::counters().sessions_revoked, 1);
                self.invalidate_cache(&r.get::<_, Option<String>>(1).unwrap_or_default()).await;
                self.announce("session.revoked", id, r.get(0), json!({"reason": reason})).await;
                Ok(())
            }
            None => {
                self.get(id).await?;
                Ok(())
            }
        }
    }

    /// Revokes the session of a token (logout).
    pub async fn revoke_token(&self, token: &str) -> Result<()> {
        let hash = SessionToken::from_client(token).hash();
        let s = self.load_by_hash(&hash).await?.ok_or_else(|| Error::NotFound("session for that token".into()))?;
        self.revoke(s.id, Some("logout")).await
    }

    /// Revokes every active session of a user, except `keep` if given; returns how many.
    /// Without a reason the sessions record [`DEFAULT_REVOKE_REASON`].
    pub async fn revoke_all(&self, user_id: i64, keep: Option<i64>, reason: Option<&str>) -> Result<u64> {
        let reason = reason_or_default(reason);
        let rows = self
            .db
            .query(
                "UPDATE sessions SET is_active = FALSE, revoked_at = now(), revoke_reason = $3
                 WHERE user_id = $1 AND is_active AND id IS DISTINCT FROM $2 RETURNING id, token_hash",
                &[&user_id, &keep, &reason],
            )
            .await?;
        crate::metrics::library::bump(&crate::metrics::library::counters().sessions_revoked, rows.len() as u64);
        for r in &rows {
            self.invalidate_cache(&r.get::<_, Option<String>>(1).unwrap_or_default()).await;
            self.announce("session.revoked", r.get(0), user_id, json!({"reason": reason})).await;
        }
        Ok(rows.len() as u64)
    }

    /// A user's active sessions, newest first (the "your devices" page).
    pub async fn list(&self, user_id: i64) -> Result<Vec<Session>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions WHERE user_id = $1 AND is_active AND expires_at > now() ORDER BY created_at DESC, id DESC"
        );
        Ok(self.db.query(&sql, &[&user_id]).await?.iter().map(Session::from_row).collect())
    }

    /// Extends a valid session by its full lifetime from now. With `rotate`, the old token stops
    /// working and a new one is returned.
    pub async fn refresh(
        &self,
        token: &str,
        fingerprint: &str,
        rotate: bool,
    ) -> Result<(Option<SessionToken>, Session)> {
        let current = self.validate(token, fingerprint, false).await?;
        let old_hash = SessionToken::from_client(token).hash();
        let ttl = if current.remember_me { self.settings.remember_ttl } else { self.settings.ttl };
        let new_token = if rotate { Some(SessionToken::generate()?) } else { None };
        let new_hash = new_token.as_ref().map(|t| t.hash()).unwrap_or_else(|| old_hash.clone());
        let sql = format!(
            "UPDATE sessions SET expires_at = now() + make_interval(secs => $2), last_activity_at = now(), token_hash = $3
             WHERE id = $1 AND is_active RETURNING {COLUMNS}"
        );
        let row = self
            .db
            .query_opt(&sql, &[&current.id, &secs(ttl), &new_hash])
            .await?
            .ok_or_else(|| Error::Auth("the session has been revoked".into()))?;
        let session = Session::from_row(&row);
        if rotate {
            self.invalidate_cache(&old_hash).await;
        }
        self.cache(&new_hash, &session).await;
        self.announce("session.refreshed", session.id, session.user_id, json!({"rotated": rotate})).await;
        Ok((new_token, session))
    }

    /// Marks the session's second factor as passed.
    pub async fn mark_mfa_verified(&self, token: &str) -> Result<Session> {
        let hash = SessionToken::from_client(token).hash();
        let sql = format!(
            "UPDATE sessions SET mfa_verified_at = now() WHERE token_hash = $1 AND is_active RETURNING {COLUMNS}"
        );
        let row =
            self.db.query_opt(&sql, &[&hash]).await?.ok_or_else(|| Error::Auth("invalid session token".into()))?;
        let s = Session::from_row(&row);
        self.cache(&hash, &s).await;
        Ok(s)
    }

    /// Ends sessions past their absolute or idle lifetime and deletes ended sessions older than
    /// `keep_ended`. Returns (ended now, deleted).
    pub async fn cleanup_expired(&self, keep_ended: Duration) -> Result<(u64, u64)> {
        let ended = self
            .db
            .query(
                "UPDATE sessions SET is_active = FALSE, revoked_at = now(),
                        revoke_reason = CASE WHEN expires_at <= now() THEN 'expired' ELSE 'idle' END
                 WHERE is_active AND (expires_at <= now() OR last_activity_at + make_interval(secs => idle_timeout_seconds) <= now())
                 RETURNING token_hash",
                &[],
            )
            .await?;
        for r in &ended {
            self.invalidate_cache(&r.get::<_, Option<String>>(0).unwrap_or_default()).await;
        }
        let deleted = self
            .db
            .execute(
                "DELETE FROM sessions WHERE NOT is_active AND COALESCE(revoked_at, expires_at) < now() - make_interval(secs => $1)",
                &[&secs(keep_ended)],
            )
            .await?;
        Ok((ended.len() as u64, deleted))
    }

    /// [`cleanup_expired`](Self::cleanup_expired) with the configured retention of ended
    /// sessions ([`SessionSettings::ended_retention`]). Returns (ended now, deleted).
    pub async fn cleanup(&self) -> Result<(u64, u64)> {
        self.cleanup_expired(self.settings.ended_retention).await
    }

    /// Runs [`cleanup`](Self::cleanup) every `interval` on the library runtime until the
    /// handle is dropped.
    pub fn start_cleanup(&self, interval: Duration) -> CleanupTask {
        self.start_cleanup_keeping(interval, self.settings.ended_retention)
    }

    /// Runs `cleanup_expired` every `interval` on the library runtime until the handle is dropped.
    pub fn start_cleanup_keeping(&self, interval: Duration, keep_ended: Duration) -> CleanupTask {
        let me = self.clone();
        let handle = crate::runtime::runtime().spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = me.cleanup_expired(keep_ended).await;
            }
        });
        CleanupTask(handle)
    }
}

/// The background cleanup; stops when dropped.
pub struct CleanupTask(tokio::task::JoinHandle<()>);

impl Drop for CleanupTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(fp: &str, text: Option<&str>) -> Session {
        let t = |us: i64| DateTime::<Utc>::from_timestamp_micros(us).unwrap();
        Session {
            id: 9_007_199_254_740_993,
            user_id: -4,
            device_fingerprint: fp.into(),
            ip_address: text.map(Into::into),
            user_agent: text.map(|v| format!("{v} agent")),
            geo_location: None,
            remember_me: true,
            mfa_required: text.is_some(),
            mfa_verified_at: text.map(|_| t(1_700_000_000_123_456)),
            created_at: t(-86_400_000_001),
            expires_at: t(1_800_000_000_000_000),
            last_activity_at: t(0),
            idle_timeout_seconds: i32::MAX,
            is_active: text.is_none(),
            revoked_at: None,
            revoke_reason: text.map(|v| format!("why {v}")),
        }
    }

    #[test]
    fn the_cached_form_reads_back_the_same_session_by_the_scanner_and_by_the_json_parser() {
        let texts =
            [None, Some(""), Some("10.0.0.1"), Some("quote \" and \\ back"), Some("tab\tnew\nline"), Some("ünï €")];
        for fp in ["fp", "fingerprint with \"quotes\"", "é"] {
            for text in texts {
                let s = session(fp, text);
                let cached = encode_cached(&s);
                assert_eq!(decode_cached(&cached), Some(s.clone()), "{cached}");
                let by_parser: CachedForm<'static> = serde_json::from_str(&cached).unwrap();
                let escapes = cached.contains('\\');
                match scan_cached(&cached) {
                    // What the scanner reads, the parser reads the same.
                    Some(f) => {
                        assert!(!escapes);
                        assert_eq!(serde_json::to_string(&f).unwrap(), serde_json::to_string(&by_parser).unwrap());
                    }
                    None => assert!(escapes, "the scanner refused {cached}"),
                }
            }
        }
    }

    #[test]
    fn damaged_or_foreign_cached_values_are_refused_by_both_readers() {
        let good = encode_cached(&session("fp", Some("x")));
        assert!(decode_cached(&good).is_some());
        let mut cases = vec![
            String::new(),
            "[]".into(),
            "null".into(),
            good.replacen("[2,", "[1,", 1),
            good.replacen("[2,", "[-2,", 1),
            good.replacen("[2,", "[99999999999999999999,", 1),
            format!("{good} "),
            format!(" {good}"),
            good.trim_end_matches(']').to_string(),
            good.replacen(",true,", ",tru,", 1),
            good.replacen(",\"fp\",", ",fp,", 1),
            good.replacen(&i32::MAX.to_string(), "2147483648", 1),
            good.replacen("[2,9007199254740993,", "[2,9223372036854775808,", 1),
            good.replacen("[2,9007199254740993,", "[2,-,", 1),
        ];
        for cut in 1..good.len() {
            cases.push(good[..cut].to_string());
        }
        for c in &cases {
            if serde_json::from_str::<CachedForm<'static>>(c).map_or(true, |f| f.0 != CACHED_FORM) {
                assert!(decode_cached(c).is_none(), "{c}");
            }
            // Whatever the scanner accepts, the JSON parser accepts with the same content.
            if let Some(f) = scan_cached(c) {
                let p: CachedForm<'static> = serde_json::from_str(c).unwrap();
                assert_eq!(serde_json::to_string(&f).unwrap(), serde_json::to_string(&p).unwrap());
            }
        }
        // The extremes of an id are read by the scanner as the parser reads them.
        for id in ["-9223372036854775808", "9223372036854775807", "-0", "0"] {
            let c = good.replacen("[2,9007199254740993,", &format!("[2,{id},"), 1);
            assert_eq!(scan_cached(&c).unwrap().1, id.parse::<i64>().unwrap(), "{c}");
        }
        // Whitespace a different writer might leave is read by the JSON parser.
        let spaced = good.replace(',', ", ");
        assert_eq!(decode_cached(&spaced), decode_cached(&good));
    }

    #[test]
    fn the_session_json_written_directly_is_the_serialized_json() {
        let texts = [
            None,
            Some(""),
            Some("10.0.0.1"),
            Some("quote \" and \\ back"),
            Some("tab\tnew\nline\u{1}"),
            Some("ünï €"),
        ];
        for fp in ["fp", "fingerprint with \"quotes\"", "é"] {
            for text in texts {
                let mut s = session(fp, text);
                assert_eq!(s.to_json(), serde_json::to_string(&s).unwrap());
                s.id = i64::MIN;
                s.user_id = i64::MAX;
                s.idle_timeout_seconds = i32::MIN;
                s.revoked_at = Some(s.created_at);
                s.expires_at = DateTime::<Utc>::from_timestamp(253_402_300_800, 5).unwrap();
                assert_eq!(s.to_json(), serde_json::to_string(&s).unwrap());
                s.id = 0;
                assert_eq!(s.to_json(), serde_json::to_string(&s).unwrap());
            }
        }
    }

    #[test]
    fn the_token_hash_is_the_hex_sha256_of_the_token_and_the_cache_key_carries_it() {
        for t in ["", "a", "token-with-43-characters-aaaaaaaaaaaaaaaaaa"] {
            let h = token_hash(t);
            assert_eq!(h, hex::encode(Sha256::digest(t.as_bytes())));
            assert_eq!(cache_key(&h), format!("rsdb:session:{h}"));
        }
        assert_eq!(SessionToken::from_client("x").hash(), token_hash("x"));
    }

    #[test]
    fn the_creation_announcement_is_the_generic_payload_with_the_login_flags() {
        for ip in [None, Some("10.1.2.3")] {
            let typed = CreatedPayload {
                at: "2026-12-07T14:00:00.000000Z".into(),
                ip_address: ip,
                mfa_required: true,
                remember_me: false,
                session_id: 7,
                kind: "session.created",
                user_id: 3,
            };
            let mut generic = SessionModel::payload(
                "session.created",
                7,
                3,
                json!({"remember_me": false, "mfa_required": true, "ip_address": ip}),
            );
            generic["at"] = json!("2026-12-07T14:00:00.000000Z");
            assert_eq!(serde_json::to_string(&typed).unwrap(), generic.to_string());
        }
    }
}
