//! Session validation stays correct from PostgreSQL while Redis is down. Its own test binary
//! because it stops the stack's Redis.

mod support;

use rootstream_db::db::migrations;
use rootstream_db::models::session::{cache_key, DeviceInfo, SessionModel, SessionSettings};
use rootstream_db::{DatabaseManager, Error, RedisClient};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_answers_from_postgres_while_redis_is_down() {
    let mut cfg = fresh_config().await;
    cfg.set("redis_timeout_ms", "300").unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    let redis = RedisClient::connect(&cfg).await.unwrap();
    let uid: i64 = db
        .query("INSERT INTO users (username, email, password_hash) VALUES ('rd', 'rd@x.io', 'x') RETURNING id", &[])
        .await
        .unwrap()[0]
        .get(0);
    let sessions = SessionModel::new(db.clone(), redis.clone(), SessionSettings::from_config(&cfg));
    let d = DeviceInfo { fingerprint: "fp".into(), ..Default::default() };
    let good = sessions.create(uid, &d, false, false).await.unwrap();
    let revoked = sessions.create(uid, &d, false, false).await.unwrap();
    let hijacked = sessions.create(uid, &d, false, false).await.unwrap();

    stack().redis_stop();
    let (s2, d2) = (sessions.clone(), d.clone());
    let (good_t, revoked_t, hijacked_t) =
        (good.token.expose().to_string(), revoked.token.expose().to_string(), hijacked.token.expose().to_string());
    let (revoked_id, hijacked_id) = (revoked.session.id, hijacked.session.id);
    assert_eq!(sessions.stats().cache_errors, 0);
    let outcome = async move {
        let (sessions, d) = (s2, d2);
        let start = std::time::Instant::now();
        // Creating and validating work from PostgreSQL alone.
        let made_while_down = sessions.create(uid, &d, false, false).await.unwrap();
        assert_eq!(made_while_down.token.expose().len(), 43);
        sessions.validate(&good_t, "fp", false).await.unwrap();
        sessions.validate(made_while_down.token.expose(), "fp", false).await.unwrap();
        sessions.revoke(revoked_id, Some("logout")).await.unwrap();
        assert!(matches!(sessions.validate(&revoked_t, "fp", false).await, Err(Error::Auth(_))));
        let err = sessions.validate(&hijacked_t, "other-fp", false).await.unwrap_err();
        assert!(matches!(err, Error::Auth(ref m) if m.contains("another device")), "{err}");
        assert!(matches!(sessions.validate(&hijacked_t, "fp", false).await, Err(Error::Auth(_))));
        assert!(matches!(sessions.validate("garbage", "fp", false).await, Err(Error::Auth(_))));
        assert_eq!(sessions.get(hijacked_id).await.unwrap().revoke_reason.as_deref(), Some("hijack_suspected"));
        assert_eq!(sessions.get(revoked_id).await.unwrap().revoke_reason.as_deref(), Some("logout"));
        assert!(start.elapsed() < Duration::from_secs(20), "each Redis failure costs about redis_timeout_ms");
        let st = sessions.stats();
        assert!(st.cache_errors > 0, "the Redis failures were counted, not hidden");
        assert!(st.cache_misses >= 6, "{st:?}");
    };
    let result = tokio::spawn(outcome).await;
    stack().redis_start();
    result.unwrap();

    // Back with Redis (empty after the restart): still right, and caching again.
    sessions.validate(good.token.expose(), "fp", false).await.unwrap();
    assert!(matches!(sessions.validate(revoked.token.expose(), "fp", false).await, Err(Error::Auth(_))));
    assert!(matches!(sessions.validate(hijacked.token.expose(), "fp", false).await, Err(Error::Auth(_))));
    let key = cache_key(&good.token.hash());
    let mut cached = false;
    for _ in 0..50 {
        sessions.validate(good.token.expose(), "fp", false).await.unwrap();
        if redis.pttl_ms(&key).await.unwrap_or(-2) > 0 {
            cached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cached, "validations after the outage cache the session again");
}
