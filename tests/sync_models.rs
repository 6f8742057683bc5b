//! The models announce their changes through an attached state sync manager: another instance
//! sees streams go live and stop, viewers, profile changes and sessions without polling.

mod support;

use rootstream_db::models::session::{DeviceInfo, SessionModel, SessionSettings};
use rootstream_db::models::{NewUser, StreamModel, UserModel};
use rootstream_db::sync::{StateSyncManager, SyncOptions};
use rootstream_db::{DatabaseManager, RedisClient};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

async fn manager(ns: &str, instance: &str, redis: &RedisClient) -> StateSyncManager {
    let mut opts = SyncOptions::new(instance);
    opts.namespace = ns.to_string();
    opts.check_interval = Duration::from_millis(50);
    StateSyncManager::start(redis.clone(), opts).await.unwrap()
}

async fn until(b: &StateSyncManager, entity: &str, id: i64, want: impl Fn(&serde_json::Map<String, Value>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = b.get_snapshot(entity, &id.to_string()).unwrap() {
            if want(&s) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{entity} {id} on the other instance: {:?}",
            b.get_snapshot(entity, &id.to_string())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_users_and_sessions_announce_their_changes_to_another_instance() {
    let cfg = fresh_config().await;
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    rootstream_db::db::migrations::migrate(&db).await.unwrap();
    let redis = RedisClient::connect(&cfg).await.unwrap();
    let ns = unique("syncmodels");
    let a = manager(&ns, "a", &redis).await;
    let b = manager(&ns, "b", &RedisClient::connect(&cfg).await.unwrap()).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    b.subscribe("*", move |e| {
        if !e.is_delta() {
            sink.lock().unwrap().push((e.kind.clone(), e.id.clone()));
        }
    })
    .unwrap();

    let users = UserModel::new(db.clone());
    users.set_sync(Some(a.clone()));
    let user = users
        .create(NewUser {
            username: "syncer",
            email: "syncer@example.com",
            password: "a long enough password",
            display_name: None,
        })
        .await
        .unwrap();
    users.update_profile(user.id, Some("Speedrunner"), None).await.unwrap();
    until(&b, "user", user.id, |s| s.get("display_name") == Some(&json!("Speedrunner"))).await;
    users.set_active(user.id, false).await.unwrap();
    until(&b, "user", user.id, |s| s.get("is_active") == Some(&json!(false))).await;
    users.set_active(user.id, true).await.unwrap();

    let streams = StreamModel::new(db.clone(), redis.clone());
    streams.set_sync(Some(a.clone()));
    let stream = streams.create(user.id, "run", None).await.unwrap();
    let session = streams.start(stream.id).await.unwrap();
    until(&b, "stream", stream.id, |s| {
        s.get("live") == Some(&json!(true)) && s.get("session_id") == Some(&json!(session.id))
    })
    .await;
    streams.viewer_joined(stream.id).await.unwrap();
    streams.viewer_joined(stream.id).await.unwrap();
    until(&b, "stream", stream.id, |s| s.get("viewers") == Some(&json!(2))).await;
    streams.viewer_left(stream.id).await.unwrap();
    until(&b, "stream", stream.id, |s| s.get("viewers") == Some(&json!(1))).await;
    streams.stop(stream.id).await.unwrap();
    until(&b, "stream", stream.id, |s| s.get("live") == Some(&json!(false))).await;

    let mut settings = SessionSettings::from_config(&cfg);
    settings.max_per_user = 0;
    let sessions = SessionModel::new(db.clone(), redis.clone(), settings);
    sessions.set_sync(Some(a.clone()));
    let device = DeviceInfo { fingerprint: "fp".into(), ip_address: None, user_agent: None, geo_location: None };
    let created = sessions.create(user.id, &device, false, false).await.unwrap();
    until(&b, "session", created.session.id, |s| {
        s.get("active") == Some(&json!(true)) && s.get("user_id") == Some(&json!(user.id))
    })
    .await;
    sessions.revoke(created.session.id, Some("logout")).await.unwrap();
    until(&b, "session", created.session.id, |s| s.get("active") == Some(&json!(false))).await;
    let token_seen = b.get_snapshot("session", &created.session.id.to_string()).unwrap().unwrap();
    assert!(!serde_json::to_string(&token_seen).unwrap().contains(created.token.expose()), "no token is announced");

    // Detached: nothing more is announced.
    streams.set_sync(None);
    streams.start(stream.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.get_snapshot("stream", &stream.id.to_string()).unwrap().unwrap().get("live"), Some(&json!(false)));

    let seen = events.lock().unwrap().clone();
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "user.updated",
        "stream.started",
        "viewer.joined",
        "viewer.left",
        "stream.stopped",
        "session.created",
        "session.revoked",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert!(
        seen.iter().any(|(k, id)| k == "stream.started" && *id == stream.id.to_string()),
        "events name their entity"
    );
}
