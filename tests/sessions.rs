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
    assert!(!format!("{:?}", c.token).contains(&token), "Debug hides the token");
    let dump: String = e.db.query("SELECT row_to_json(s)::text FROM sessions s", &[]).await.unwrap()[0].get(0);
    assert!(!dump.contains(&token), "the database holds no token");
    assert!(dump.contains(&c.token.hash()), "it holds the token's SHA-256");
    let ttl = e.redis.ttl(&cache_key(&c.token.hash())).await.unwrap().expect("cached with a TTL");
    assert!(ttl > Duration::from_secs(23 * 3600) && ttl <= Duration::from_secs(24 * 3600), "{ttl:?}");
    let s = e.sessions.validate(&token, "fp-laptop-1", true).await.unwrap();
    assert_eq!((s.user_id, s.geo_location.as_deref(), s.remember_me), (e.user_id, Some("Berlin, DE"), false));
    assert!(matches!(e.sessions.validate("not-a-token", "fp-laptop-1", false).await, Err(Error::Auth(_))));
    let remembered = e.sessions.create(e.user_id, &laptop(), true, false).await.unwrap();
    assert!(remembered.session.expires_at - remembered.session.created_at > chrono::Duration::days(29));
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

    let e = env_with(|c| {
        c.set("session_idle_timeout_s", "2").unwrap();
    })
    .await;
    let c = e.sessions.create(e.user_id, &laptop(), false, false).await.unwrap();
    // Activity inside the idle window keeps the session alive ...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.unwrap();
    }
    // ... silence longer than the window ends it.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let err = e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await.unwrap_err();
    assert!(matches!(err, Error::Auth(ref m) if m.contains("inactivity")), "{err}");
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
    assert!(s.expires_at - chrono::Utc::now() > chrono::Duration::hours(23));
    let (new_token, _) = e.sessions.refresh(c.token.expose(), "fp-laptop-1", true).await.unwrap();
    let new_token = new_token.unwrap();
    assert_ne!(new_token.expose(), c.token.expose());
    assert!(matches!(e.sessions.validate(c.token.expose(), "fp-laptop-1", false).await, Err(Error::Auth(_))));
    assert_eq!(e.sessions.validate(new_token.expose(), "fp-laptop-1", false).await.unwrap().id, c.session.id);
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
        for h in hs {
            match h.await.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::Conflict(_)) => refused += 1,
                Err(other) => panic!("{policy}: {other}"),
            }
        }
        let active: i64 =
            e.db.query("SELECT count(*) FROM sessions WHERE user_id = $1 AND is_active", &[&e.user_id]).await.unwrap()
                [0]
            .get(0);
        assert_eq!(active, 3, "{policy}: never more than the limit");
        if policy == "refuse" {
            assert_eq!((ok, refused), (3, 7));
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
    e.db.execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", &[&old.session.id])
        .await
        .unwrap();
    e.db.execute(
        "UPDATE sessions SET is_active = FALSE, revoked_at = now() - interval '40 days' WHERE id = $1",
        &[&gone.session.id],
    )
    .await
    .unwrap();
    let (ended, deleted) = e.sessions.cleanup_expired(Duration::from_secs(30 * 86400)).await.unwrap();
    assert_eq!((ended, deleted), (1, 1));
    assert!(e.sessions.get(gone.session.id).await.is_err());
    assert_eq!(e.sessions.get(old.session.id).await.unwrap().revoke_reason.as_deref(), Some("expired"));
    assert!(e.sessions.validate(keep.token.expose(), "fp-laptop-1", false).await.is_ok());
    // The background task does the same on a timer.
    e.db.execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", &[&keep.session.id])
        .await
        .unwrap();
    let task = e.sessions.start_cleanup_keeping(Duration::from_millis(100), Duration::from_secs(86400));
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(task);
    assert!(!e.sessions.get(keep.session.id).await.unwrap().is_active);
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
