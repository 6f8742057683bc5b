//! Sessions against real PostgreSQL and Redis: tokens, device binding, lifetimes, limits.

mod support;

use rootstream_db::db::migrations;
use rootstream_db::models::session::{cache_key, DeviceInfo, SessionModel, SessionSettings, DEFAULT_REVOKE_REASON};
use rootstream_db::{Config, DatabaseManager, Error, RedisClient};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

struct Env {
    db: DatabaseManager,
    redis: RedisClient,
    sessions: SessionModel,
    user_id: i64,
}

async fn env_with(tune: impl FnOnce(&mut Config)) -> Env {
    let mut cfg = fresh_config().await;
    tune(&mut cfg);
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    let redis = RedisClient::connect(&cfg).await.unwrap();
    // Test databases all number from 1, but they share one Redis: ids that differ per test keep
    // one test's events out of another's observer.
    let start: i64 = rand::random::<u32>() as i64 + 1000;
    db.execute("SELECT setval('users_id_seq', $1)", &[&start]).await.unwrap();
    db.execute("SELECT setval('sessions_id_seq', $1)", &[&start]).await.unwrap();
    let user_id: i64 = db
        .query(
            "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'x') RETURNING id",
            &[&unique("u"), &format!("{}@example.com", rand::random::<u32>())],
        )
        .await
        .unwrap()[0]
        .get(0);
    let sessions = SessionModel::new(db.clone(), redis.clone(), SessionSettings::from_config(&cfg));
    Env { db, redis, sessions, user_id }
}

impl Env {
    async fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        self.db.query(sql, params).await.unwrap()[0].get(0)
    }

    /// The stored token hash of a session.
    async fn stored_hash(&self, id: i64) -> String {
        self.db.query("SELECT token_hash FROM sessions WHERE id = $1", &[&id]).await.unwrap()[0].get(0)
    }

    /// PTTL of a session's cache entry in ms (-2 when there is none).
    async fn cache_ttl_ms(&self, token: &str) -> i64 {
        self.redis.pttl_ms(&cache_key(&sha256_hex(token))).await.unwrap()
    }

    async fn session_events(&self, id: i64) -> Vec<String> {
        self.db
            .query(
                "SELECT event_type FROM event_log WHERE aggregate_type = 'session' AND aggregate_id = $1 ORDER BY version",
                &[&id.to_string()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// SHA-256 in hex, computed here rather than by the library.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn is_base64url(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_auth(r: Result<rootstream_db::models::session::Session, Error>) -> bool {
    matches!(r, Err(Error::Auth(_)))
}

fn laptop() -> DeviceInfo {
    DeviceInfo {
        fingerprint: "fp-laptop-1".into(),
        ip_address: Some("203.0.113.7".into()),
        user_agent: Some("RootStream/1.0 (Linux)".into()),
        geo_location: Some("Berlin, DE".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_has_256_bits_is_returned_once_and_only_its_hash_is_stored() {
    let e = env_with(|_| {}).await;
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let token = c.token.expose().to_string();
    assert_eq!(token.len(), 43, "32 random bytes in unpadded base64url");
    assert!(is_base64url(&token), "{token}");
    assert!(c.session.id > 0);
    assert!(!format!("{:?}", c.token).contains(&token), "Debug hides the token");
    let dump: String = e.db.query("SELECT row_to_json(s)::text FROM sessions s", &[]).await.unwrap()[0].get(0);
    assert!(!dump.contains(&token), "the database holds no token");
    assert!(dump.contains(&c.token.hash()), "it holds the token's SHA-256");
    assert_eq!(e.stored_hash(c.session.id).await, sha256_hex(&token), "the hex SHA-256 of the token");
    assert_eq!(e.count("SELECT count(*) FROM sessions WHERE session_token IS NOT NULL", &[]).await, 0);
    // The session record handed back carries neither the token nor its hash.
    let record = serde_json::to_string(&c.session).unwrap();
    assert!(!record.contains(&token) && !record.contains(&sha256_hex(&token)), "{record}");
    assert_eq!(c.session.user_id, e.user_id);
    // Every login gets its own token.
    let d = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    assert_ne!(d.token.expose(), token);
    assert_eq!(d.token.expose().len(), 43);
    assert_eq!(e.stored_hash(d.session.id).await, sha256_hex(d.token.expose()));
    assert_eq!(e.count("SELECT count(*) FROM sessions WHERE token_hash = $1", &[&token]).await, 0);
    let ttl = e.redis.ttl(&cache_key(&c.token.hash())).await.unwrap().expect("cached with a TTL");
    assert!(ttl > Duration::from_secs(23 * 3600) && ttl <= Duration::from_secs(24 * 3600), "{ttl:?}");
    let s = e.sessions.validate(&token, "fp-laptop-1", true).await.unwrap();
    assert_eq!((s.user_id, s.geo_location.as_deref(), s.remember_me), (e.user_id, Some("Berlin, DE"), false));
    assert!(matches!(e.sessions.validate("not-a-token", "fp-laptop-1", false).await, Err(Error::Auth(_))));
    let remembered = e.sessions.create(e.user_id, &laptop(), true, false).await.unwrap();
    assert!(remembered.session.expires_at - remembered.session.created_at > chrono::Duration::days(29));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_cached_under_its_hash_for_its_remaining_lifetime() {
    let e = env_with(|_| {}).await;
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let token = c.token.expose();
    let ttl = e.cache_ttl_ms(token).await;
    assert!(ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000, "cached for the 24 h lifetime: {ttl}");
    let cached = e.redis.get(&cache_key(&sha256_hex(token))).await.unwrap().expect("cached");
    assert!(!cached.contains(token), "the cache holds no token either");
    // The cached form is an array in field order: the form's version, then the session id.
    assert_eq!(serde_json::from_str::<Value>(&cached).unwrap()[1], c.session.id);
    assert!(c.session.expires_at - c.session.created_at < chrono::Duration::seconds(24 * 3600 + 1));
    // remember_me: 30 days, in the row and in the cache.
    let r = e.sessions.create(e.user_id, &laptop(), true, false).await.unwrap();
    assert!(r.session.remember_me);
    let lifetime: f64 =
        e.db.query(
            "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM sessions WHERE id = $1",
            &[&r.session.id],
        )
        .await
        .unwrap()[0]
            .get(0);
    assert!(lifetime > 29.0 * 86400.0, "{lifetime}");
    assert!(e.cache_ttl_ms(r.token.expose()).await > 29 * 86400 * 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_with_the_right_fingerprint_returns_the_whole_session() {
    let e = env_with(|_| {}).await;
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let token = c.token.expose();
    let s = e.sessions.validate(token, "fp-laptop-1", true).await.unwrap();
    assert_eq!((s.id, s.user_id, s.device_fingerprint.as_str()), (c.session.id, e.user_id, "fp-laptop-1"));
    assert_eq!(s.ip_address.as_deref(), Some("203.0.113.7"));
    assert_eq!(s.user_agent.as_deref(), Some("RootStream/1.0 (Linux)"));
    assert_eq!(s.geo_location.as_deref(), Some("Berlin, DE"));
    assert!(s.is_active && !s.mfa_required);
    assert!(e.sessions.validate(token, "fp-laptop-1", true).await.is_ok(), "the session stays usable");
    assert!(is_auth(e.sessions.validate(&token[..42], "fp-laptop-1", false).await), "a truncated token");
    assert!(is_auth(e.sessions.validate("", "fp-laptop-1", false).await), "an empty token");
    assert!(
        is_auth(e.sessions.validate(&sha256_hex(token), "fp-laptop-1", false).await),
        "the stored hash is no token"
    );
    assert!(e.sessions.validate(token, "fp-laptop-1", false).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_another_device_revokes_the_session_and_is_recorded() {
    let e = env_with(|_| {}).await;
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let sink = seen.clone();
    let uid = e.user_id;
    let observer = RedisClient::connect(&redis_config()).await.unwrap();
    observer
        .subscribe("session.*", move |m| {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if v["user_id"] == uid {
                sink.lock().unwrap().push(v);
            }
        })
        .await
        .unwrap();
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let err = e.sessions.validate(c.token.expose(), "fp-stolen-elsewhere", false).await.unwrap_err();
    assert!(matches!(err, Error::Auth(ref m) if m.contains("another device")), "{err}");
    let again = e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.unwrap_err();
    assert!(matches!(again, Error::Auth(ref m) if m.contains("revoked")), "the real device is locked out too: {again}");
    let s = e.sessions.get(c.session.id).await.unwrap();
    assert_eq!((s.is_active, s.revoke_reason.as_deref()), (false, Some("hijack_suspected")));
    assert!(s.revoked_at.is_some());
    assert_eq!(e.cache_ttl_ms(c.token.expose()).await, -2, "the cached copy is gone");
    let ev =
        e.db.query(
            "SELECT payload::text, user_id FROM event_log WHERE aggregate_type = 'session' AND aggregate_id = $1
             AND event_type = 'session.hijack_suspected'",
            &[&c.session.id.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].get::<_, Option<i64>>(1), Some(e.user_id));
    let text: String = ev[0].get(0);
    let payload: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(payload["expected_fingerprint_sha256"], sha256_hex("fp-laptop-1"));
    assert_eq!(payload["presented_fingerprint_sha256"], sha256_hex("fp-stolen-elsewhere"));
    assert!(!text.contains(c.token.expose()), "no token in the event");
    let kinds: Vec<String> =
        e.db.query(
            "SELECT event_type FROM event_log WHERE aggregate_type = 'session' AND aggregate_id = $1 ORDER BY version",
            &[&c.session.id.to_string()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["session.revoked", "session.hijack_suspected"]);
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let types: Vec<String> = seen.lock().unwrap().iter().map(|v| v["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["session.created", "session.revoked", "session.hijack_suspected"]);
    // Another session of the same user is not affected.
    let phone = DeviceInfo { fingerprint: "fp-phone-7".into(), ..Default::default() };
    let other = e.sessions.create(e.user_id, &phone, false, false).await.unwrap();
    assert!(e.sessions.validate(other.token.expose(), "fp-phone-7", false).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_and_idle_timeouts_end_sessions() {
    let e = env_with(|c| {
        c.set("session_ttl_s", "1").unwrap();
    })
    .await;
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let err = e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.unwrap_err();
    assert!(matches!(err, Error::Auth(ref m) if m.contains("expired")), "{err}");
    let s = e.sessions.get(c.session.id).await.unwrap();
    assert_eq!((s.is_active, s.revoke_reason.as_deref()), (false, Some("expired")));
    assert_eq!(e.cache_ttl_ms(c.token.expose()).await, -2, "the cached copy is gone");
    assert!(is_auth(e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await), "and stays ended");

    let e = env_with(|c| {
        c.set("session_idle_timeout_s", "2").unwrap();
    })
    .await;
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    assert!(e.sessions.get(c.session.id).await.unwrap().is_active);
    // Activity inside the idle window keeps the session alive ...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.unwrap();
    }
    // ... silence longer than the window ends it.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let err = e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.unwrap_err();
    assert!(matches!(err, Error::Auth(ref m) if m.contains("inactivity")), "{err}");
    let s = e.sessions.get(c.session.id).await.unwrap();
    assert_eq!((s.is_active, s.revoke_reason.as_deref()), (false, Some("idle")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validations_do_not_write_activity_every_time() {
    let e = env_with(|_| {}).await;
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let before: chrono::DateTime<chrono::Utc> =
        e.db.query("SELECT last_activity_at FROM sessions WHERE id = $1", &[&c.session.id]).await.unwrap()[0].get(0);
    for _ in 0..50 {
        e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.unwrap();
    }
    let after: chrono::DateTime<chrono::Utc> =
        e.db.query("SELECT last_activity_at FROM sessions WHERE id = $1", &[&c.session.id]).await.unwrap()[0].get(0);
    assert_eq!(before, after, "50 validations inside the throttle interval wrote nothing");
    assert!(e.sessions.stats().cache_hits >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_and_rotation_replaces_the_token() {
    let e = env_with(|_| {}).await;
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    e.db.execute("UPDATE sessions SET expires_at = now() + interval '1 hour' WHERE id = $1", &[&c.session.id])
        .await
        .unwrap();
    let (none, s) = e.sessions.refresh(c.token.expose(), "fp-laptop-1", false).await.unwrap();
    assert!(none.is_none());
    assert_eq!(s.id, c.session.id);
    assert!(s.expires_at - chrono::Utc::now() > chrono::Duration::hours(23));
    assert_eq!(e.stored_hash(c.session.id).await, sha256_hex(c.token.expose()), "the token stays");
    assert!(e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.is_ok());
    assert_eq!(e.session_events(c.session.id).await, ["session.refreshed"]);
    let (new_token, rotated) = e.sessions.refresh(c.token.expose(), "fp-laptop-1", true).await.unwrap();
    let new_token = new_token.unwrap();
    assert_ne!(new_token.expose(), c.token.expose());
    assert_eq!(new_token.expose().len(), 43);
    assert!(is_base64url(new_token.expose()));
    assert_eq!(rotated.id, c.session.id);
    assert!(matches!(e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await, Err(Error::Auth(_))));
    assert_eq!(e.sessions.validate(new_token.expose(), "fp-laptop-1", false).await.unwrap().id, c.session.id);
    assert_eq!(e.stored_hash(c.session.id).await, sha256_hex(new_token.expose()));
    assert_eq!(e.cache_ttl_ms(c.token.expose()).await, -2, "the old token's cache entry is gone");
    assert!(e.cache_ttl_ms(new_token.expose()).await > 23 * 3600 * 1000);
    assert!(
        matches!(e.sessions.refresh(c.token.expose(), "fp-laptop-1", true).await, Err(Error::Auth(_))),
        "the old token cannot refresh either"
    );
    assert!(e.sessions.validate(new_token.expose(), "fp-laptop-1", false).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_one_revoke_all_and_list_devices() {
    let e = env_with(|_| {}).await;
    let a = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let phone = DeviceInfo {
        fingerprint: "fp-phone".into(),
        user_agent: Some("RootStream/1.0 (Android)".into()),
        ..Default::default()
    };
    let b = e.sessions.create(e.user_id, &phone, false, false).await.unwrap();
    let c = e.sessions.create(e.user_id, &phone, false, false).await.unwrap();
    let listed = e.sessions.list(e.user_id).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), [c.session.id, b.session.id, a.session.id]);
    e.sessions.revoke_token(b.token.expose()).await.unwrap();
    assert!(matches!(e.sessions.validate(b.token.expose(), "fp-phone", false).await, Err(Error::Auth(_))));
    assert_eq!(e.sessions.revoke_all(e.user_id, Some(a.session.id), Some("password changed")).await.unwrap(), 1);
    assert!(e.sessions.validate(a.token.expose(), "fp-laptop-1", false).await.is_ok(), "the kept session still works");
    assert!(matches!(e.sessions.validate(c.token.expose(), "fp-phone", false).await, Err(Error::Auth(_))));
    assert_eq!(e.sessions.list(e.user_id).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_revoke_token_and_revoke_all_record_their_reasons_and_drop_the_cache() {
    let e = env_with(|_| {}).await;
    let phone = DeviceInfo { fingerprint: "fp-phone".into(), ..Default::default() };
    let a = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let b = e.sessions.create(e.user_id, &phone, false, false).await.unwrap();
    let c = e.sessions.create(e.user_id, &phone, false, false).await.unwrap();
    let reason = |id: i64| {
        let sessions = e.sessions.clone();
        async move { sessions.get(id).await.unwrap().revoke_reason }
    };
    e.sessions.revoke_token(b.token.expose()).await.unwrap();
    assert_eq!(reason(b.session.id).await.as_deref(), Some("logout"));
    assert_eq!(e.cache_ttl_ms(b.token.expose()).await, -2);
    assert_eq!(e.sessions.revoke_all(e.user_id, Some(a.session.id), Some("password changed")).await.unwrap(), 1);
    assert_eq!(reason(c.session.id).await.as_deref(), Some("password changed"));
    e.sessions.revoke(a.session.id, Some("admin action")).await.unwrap();
    assert!(is_auth(e.sessions.validate(a.token.expose(), "fp-laptop-1", false).await));
    assert_eq!(reason(a.session.id).await.as_deref(), Some("admin action"));
    // Revoking an ended session again changes nothing; an unknown one is not found.
    e.sessions.revoke(a.session.id, Some("again")).await.unwrap();
    assert_eq!(reason(a.session.id).await.as_deref(), Some("admin action"));
    assert!(matches!(e.sessions.revoke(a.session.id + 1000, None).await, Err(Error::NotFound(_))));
    assert!(matches!(e.sessions.revoke_token("no-such-token").await, Err(Error::NotFound(_))));
    assert!(e.sessions.list(e.user_id).await.unwrap().is_empty());
    // revoke_all without a kept session.
    let d = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let f = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    assert_eq!(e.sessions.revoke_all(e.user_id, None, None).await.unwrap(), 2);
    assert!(is_auth(e.sessions.validate(d.token.expose(), "fp-laptop-1", false).await));
    assert!(is_auth(e.sessions.validate(f.token.expose(), "fp-laptop-1", false).await));
    assert_eq!(e.sessions.revoke_all(e.user_id, None, Some("none left")).await.unwrap(), 0);
    assert_eq!(e.count("SELECT count(*) FROM sessions WHERE is_active", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_only_the_users_active_sessions_newest_first_without_tokens() {
    let e = env_with(|_| {}).await;
    let other_user: i64 =
        e.db.query(
            "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'x') RETURNING id",
            &[&unique("u2"), &format!("{}@example.com", rand::random::<u32>())],
        )
        .await
        .unwrap()[0]
            .get(0);
    let dev = |fp: &str| DeviceInfo { fingerprint: fp.into(), ..Default::default() };
    let a = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let phone = DeviceInfo {
        fingerprint: "fp-phone".into(),
        ip_address: Some("198.51.100.23".into()),
        user_agent: Some("RootStream/1.0 (Android)".into()),
        geo_location: Some("Paris, FR".into()),
    };
    let b = e.sessions.create(e.user_id, &phone, false, false).await.unwrap();
    let c = e.sessions.create(e.user_id, &dev("fp-tv"), false, false).await.unwrap();
    let theirs = e.sessions.create(other_user, &laptop(), false, false).await.unwrap();
    let ended = e.sessions.create(e.user_id, &dev("fp-old"), false, false).await.unwrap();
    e.sessions.revoke(ended.session.id, None).await.unwrap();

    let listed = e.sessions.list(e.user_id).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), [c.session.id, b.session.id, a.session.id]);
    assert_eq!(listed[1].device_fingerprint, "fp-phone");
    assert_eq!(listed[1].ip_address.as_deref(), Some("198.51.100.23"));
    assert_eq!(listed[1].user_agent.as_deref(), Some("RootStream/1.0 (Android)"));
    assert_eq!(listed[1].geo_location.as_deref(), Some("Paris, FR"));
    let text = serde_json::to_string(&listed).unwrap();
    for x in [&a, &b, &c, &theirs, &ended] {
        assert!(!text.contains(x.token.expose()) && !text.contains(&sha256_hex(x.token.expose())));
    }
    let mine = e.sessions.list(other_user).await.unwrap();
    assert_eq!(mine.iter().map(|s| s.id).collect::<Vec<_>>(), [theirs.session.id]);
    assert!(e.sessions.list(other_user + 1000).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_without_a_reason_records_the_default_reason() {
    let e = env_with(|_| {}).await;
    let one = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let two = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    e.sessions.revoke(one.session.id, None).await.unwrap();
    assert_eq!(e.sessions.get(one.session.id).await.unwrap().revoke_reason.as_deref(), Some(DEFAULT_REVOKE_REASON));
    assert_eq!(e.sessions.revoke_all(e.user_id, None, None).await.unwrap(), 1);
    assert_eq!(e.sessions.get(two.session.id).await.unwrap().revoke_reason.as_deref(), Some("revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_limit_holds_under_concurrent_logins() {
    for policy in ["evict_oldest", "refuse"] {
        let e = env_with(|c| {
            c.set("session_max_per_user", "3").unwrap();
            c.set("session_limit_policy", policy).unwrap();
            c.set("pool_size", "12").unwrap();
        })
        .await;
        let mut hs = Vec::new();
        for i in 0..10 {
            let s = e.sessions.clone();
            let uid = e.user_id;
            hs.push(tokio::spawn(async move {
                let d = DeviceInfo { fingerprint: format!("fp-{i}"), ..Default::default() };
                s.create(uid, &d, false, false).await
            }));
        }
        let mut ok = 0;
        let mut refused = 0;
        let mut tokens = Vec::new();
        for (i, h) in hs.into_iter().enumerate() {
            match h.await.unwrap() {
                Ok(c) => {
                    ok += 1;
                    tokens.push((format!("fp-{i}"), c.token.expose().to_string()));
                }
                Err(Error::Conflict(m)) => {
                    assert!(m.contains("limit"), "{m}");
                    refused += 1;
                }
                Err(other) => panic!("{policy}: {other}"),
            }
        }
        assert_eq!(e.sessions.list(e.user_id).await.unwrap().len(), 3, "{policy}");
        let mut valid = 0;
        for (fp, token) in &tokens {
            if e.sessions.validate(token, fp, false).await.is_ok() {
                valid += 1;
            }
        }
        assert_eq!(valid, 3, "{policy}: exactly the three surviving tokens work");
        let active: i64 =
            e.db.query("SELECT count(*) FROM sessions WHERE user_id = $1 AND is_active", &[&e.user_id]).await.unwrap()
                [0]
            .get(0);
        assert_eq!(active, 3, "{policy}: never more than the limit");
        if policy == "refuse" {
            assert_eq!((ok, refused), (3, 7));
            assert_eq!(
                e.count("SELECT count(*) FROM sessions WHERE user_id = $1", &[&e.user_id]).await,
                3,
                "refused logins write nothing"
            );
        } else {
            assert_eq!((ok, refused), (10, 0));
            let evicted: i64 = e
                .db
                .query("SELECT count(*) FROM sessions WHERE user_id = $1 AND revoke_reason = 'evicted'", &[&e.user_id])
                .await
                .unwrap()[0]
                .get(0);
            assert_eq!(evicted, 7);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_ends_expired_sessions_and_deletes_old_ended_ones() {
    let e = env_with(|_| {}).await;
    let keep = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let old = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let gone = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let idle = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    e.db.execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", &[&old.session.id])
        .await
        .unwrap();
    e.db.execute(
        "UPDATE sessions SET last_activity_at = now() - interval '2 hours' WHERE id = $1",
        &[&idle.session.id],
    )
    .await
    .unwrap();
    e.db.execute(
        "UPDATE sessions SET is_active = FALSE, revoked_at = now() - interval '40 days' WHERE id = $1",
        &[&gone.session.id],
    )
    .await
    .unwrap();
    let (ended, deleted) = e.sessions.cleanup_expired(Duration::from_secs(30 * 86400)).await.unwrap();
    assert_eq!((ended, deleted), (2, 1), "the expired and the idle session ended; the long-ended one deleted");
    assert!(e.sessions.get(gone.session.id).await.is_err());
    let expired = e.sessions.get(old.session.id).await.unwrap();
    assert_eq!((expired.is_active, expired.revoke_reason.as_deref()), (false, Some("expired")));
    assert_eq!(e.sessions.get(idle.session.id).await.unwrap().revoke_reason.as_deref(), Some("idle"));
    // The cached copies went with them, so the tokens fail although Redis had them for 24 h.
    for ended in [&old, &idle] {
        assert_eq!(e.cache_ttl_ms(ended.token.expose()).await, -2);
        assert!(is_auth(e.sessions.validate(ended.token.expose(), "fp-laptop-1", false).await));
    }
    assert!(e.sessions.validate(keep.token.expose(), "fp-laptop-1", false).await.is_ok());
    assert_eq!(e.sessions.cleanup_expired(Duration::from_secs(30 * 86400)).await.unwrap(), (0, 0), "nothing left");
    // The background task does the same on a timer.
    e.db.execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", &[&keep.session.id])
        .await
        .unwrap();
    let task = e.sessions.start_cleanup_keeping(Duration::from_millis(100), Duration::from_secs(86400));
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(task);
    let kept = e.sessions.get(keep.session.id).await.unwrap();
    assert_eq!((kept.is_active, kept.revoke_reason.as_deref()), (false, Some("expired")));
    // Dropped: no more background runs.
    let later = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    e.db.execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", &[&later.session.id])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(e.sessions.get(later.session.id).await.unwrap().is_active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_cache_hits_misses_and_errors() {
    let e = env_with(|_| {}).await;
    let s = SessionModel::new(e.db.clone(), e.redis.clone(), e.sessions.settings().clone());
    let zero = s.stats();
    assert_eq!((zero.cache_hits, zero.cache_misses, zero.cache_errors), (0, 0, 0));
    let c = s.create(e.user_id, &laptop(), false, false).await.unwrap();
    let token = c.token.expose();
    s.validate(token, "fp-laptop-1", false).await.unwrap(); // cached at creation: a hit
    s.validate(token, "fp-laptop-1", false).await.unwrap(); // a hit
    assert!(e.redis.del(&cache_key(&sha256_hex(token))).await.unwrap());
    s.validate(token, "fp-laptop-1", false).await.unwrap(); // a miss, answered by PostgreSQL and cached again
    assert!(e.cache_ttl_ms(token).await > 0);
    s.validate(token, "fp-laptop-1", false).await.unwrap(); // a hit
    assert!(is_auth(s.validate("unknown-token", "fp-laptop-1", false).await)); // a miss
    let st = s.stats();
    assert_eq!((st.cache_hits, st.cache_misses, st.cache_errors), (3, 2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_keeps_ended_sessions_for_the_configured_retention() {
    assert_eq!(SessionSettings::from_config(&Config::default()).ended_retention, Duration::from_secs(30 * 86400));
    let e = env_with(|c| c.set("session_retention_days", "7").unwrap()).await;
    let recent = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let old = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    for (id, age) in [(recent.session.id, "6 days"), (old.session.id, "8 days")] {
        e.db.execute(
            "UPDATE sessions SET is_active = FALSE, revoked_at = now() - $2::text::interval WHERE id = $1",
            &[&id, &age],
        )
        .await
        .unwrap();
    }
    assert_eq!(e.sessions.cleanup().await.unwrap(), (0, 1));
    assert!(e.sessions.get(recent.session.id).await.is_ok(), "ended 6 days ago: kept");
    assert!(matches!(e.sessions.get(old.session.id).await, Err(Error::NotFound(_))), "ended 8 days ago: deleted");
    // The scheduled cleanup uses the same retention.
    let older = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    e.db.execute(
        "UPDATE sessions SET is_active = FALSE, revoked_at = now() - interval '9 days' WHERE id = $1",
        &[&older.session.id],
    )
    .await
    .unwrap();
    let task = e.sessions.start_cleanup(Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(task);
    assert!(e.sessions.get(older.session.id).await.is_err());
    assert!(e.sessions.get(recent.session.id).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_tokens_and_device_fields_fail_cleanly_and_write_nothing() {
    let e = env_with(|_| {}).await;
    let mib = "A".repeat(1 << 20);
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let refused = |r: &Error| matches!(r, Error::Auth(_) | Error::InvalidArgument(_));
    assert!(refused(&e.sessions.validate(&mib, "fp-laptop-1", false).await.unwrap_err()));
    assert!(refused(&e.sessions.refresh(&mib, "fp-laptop-1", true).await.unwrap_err()));
    let err = e.sessions.revoke_token(&mib).await.unwrap_err();
    assert!(refused(&err) || matches!(err, Error::NotFound(_)), "{err}");
    let huge = |field: usize| {
        let mut d = DeviceInfo { fingerprint: "fp".into(), ..Default::default() };
        match field {
            0 => d.fingerprint = mib.clone(),
            1 => d.ip_address = Some(mib.clone()),
            2 => d.user_agent = Some(mib.clone()),
            _ => d.geo_location = Some(mib.clone()),
        }
        d
    };
    for field in 0..4 {
        let err = e.sessions.create(e.user_id, &huge(field), false, false).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "field {field}: {err}");
    }
    assert_eq!(e.count("SELECT count(*) FROM sessions", &[]).await, 1, "no session from oversized input");
    assert!(e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.is_ok());
    // A huge fingerprint with a real token is not this device: a clean refusal.
    assert!(refused(&e.sessions.validate(c.token.expose(), &mib, false).await.unwrap_err()));
}

/// Strings that break naive SQL splicing or escaping (no control characters, at most the 64
/// characters of an IP address field).
const HOSTILE: [&str; 9] = [
    "'; DROP TABLE sessions; --",
    "Robert'); DROP TABLE users;--",
    "' OR '1'='1",
    "quotes ' '' \" \"\" ` \u{b4}",
    "back\\slash \\' \\\\ \\x41 \\n",
    "$1",
    "$1; DELETE FROM sessions WHERE $2 = $2",
    "/* c */ SELECT pg_sleep(10) --",
    "\u{fc}n\u{ef}c\u{f8}d\u{e9} \u{65e5}\u{672c}\u{8a9e} \u{1f3ae}",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_fingerprints_user_agents_geo_locations_and_reasons_are_stored_verbatim() {
    let e = env_with(|_| {}).await;
    for h in HOSTILE {
        let d = DeviceInfo {
            fingerprint: h.into(),
            ip_address: Some(h.into()),
            user_agent: Some(h.into()),
            geo_location: Some(h.into()),
        };
        let c = e.sessions.create(e.user_id, &d, false, false).await.unwrap();
        assert_eq!(e.sessions.validate(c.token.expose(), h, false).await.unwrap().device_fingerprint, h);
        let row =
            e.db.query(
                "SELECT device_fingerprint, ip_address, user_agent, geo_location FROM sessions WHERE id = $1",
                &[&c.session.id],
            )
            .await
            .unwrap();
        for i in 0..4 {
            assert_eq!(row[0].get::<_, String>(i), h, "column {i}");
        }
        e.sessions.revoke(c.session.id, Some(h)).await.unwrap();
        assert_eq!(e.sessions.get(c.session.id).await.unwrap().revoke_reason.as_deref(), Some(h));
        assert!(is_auth(e.sessions.validate(c.token.expose(), h, false).await));
    }
    let a = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    let b = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    assert_eq!(e.sessions.revoke_all(e.user_id, Some(a.session.id), Some(HOSTILE[0])).await.unwrap(), 1);
    assert_eq!(e.sessions.get(b.session.id).await.unwrap().revoke_reason.as_deref(), Some(HOSTILE[0]));
    assert!(e.sessions.validate(a.token.expose(), "fp-laptop-1", false).await.is_ok());
    // A hostile fingerprint presented against a real session is just another device.
    let err = e.sessions.validate(a.token.expose(), HOSTILE[2], false).await.unwrap_err();
    assert!(matches!(err, Error::Auth(ref m) if m.contains("another device")), "{err}");
    assert_eq!(e.count("SELECT count(*) FROM users", &[]).await, 1);
    assert_eq!(e.count("SELECT count(*) FROM sessions", &[]).await, HOSTILE.len() as i64 + 2);
    let tables: bool =
        e.db.query(
            "SELECT to_regclass('public.sessions') IS NOT NULL AND to_regclass('public.users') IS NOT NULL
             AND to_regclass('public.user_mfa') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()[0]
            .get(0);
    assert!(tables);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_of_unknown_or_inactive_users_are_refused_with_and_without_a_limit() {
    for limit in ["0", "3"] {
        let e = env_with(|c| {
            c.set("session_max_per_user", limit).unwrap();
            c.set("pool_size", "1").unwrap();
        })
        .await;
        let err = e.sessions.create(e.user_id + 1000, &laptop(), false, false).await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "limit {limit}: unknown user: {err}");
        let other: i64 = e
            .db
            .query(
                "INSERT INTO users (username, email, password_hash, is_active) VALUES ($1, $2, 'x', FALSE) RETURNING id",
                &[&unique("off"), &format!("{}@example.com", rand::random::<u32>())],
            )
            .await
            .unwrap()[0]
            .get(0);
        // Sessions left from before the user was deactivated, more than the limit: a refused
        // login evicts none of them.
        for i in 0..4 {
            e.db.execute(
                "INSERT INTO sessions (user_id, token_hash, expires_at, device_fingerprint) VALUES ($1, $2, now() + interval '1 hour', 'fp')",
                &[&other, &unique(&format!("old{i}"))],
            )
            .await
            .unwrap();
        }
        let err = e.sessions.create(other, &laptop(), false, false).await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "limit {limit}: inactive user: {err}");
        assert_eq!(e.count("SELECT count(*) FROM sessions WHERE user_id = $1 AND is_active", &[&other]).await, 4);
        assert_eq!(e.count("SELECT count(*) FROM sessions WHERE user_id = $1", &[&other]).await, 4);
        // The one pooled connection is left outside any transaction: the next login works.
        let ok = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
        e.sessions.validate(ok.token.expose(), &laptop().fingerprint, false).await.unwrap();
    }
}
