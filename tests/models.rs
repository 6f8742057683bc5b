//! Users, streams and stream sessions against real PostgreSQL and Redis.

mod support;

use rootstream_db::db::migrations;
use rootstream_db::events::EventStore;
use rootstream_db::models::{NewUser, StreamModel, StreamSessionModel, StreamStats, UserModel};
use rootstream_db::{DatabaseManager, Error, RedisClient};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

async fn setup() -> (DatabaseManager, RedisClient) {
    let cfg = fresh_config().await;
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    (db, RedisClient::connect(&cfg).await.unwrap())
}

fn new_user<'a>(name: &'a str, email: &'a str) -> NewUser<'a> {
    NewUser { username: name, email, password: "correct horse battery", display_name: Some("Player One") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_update_profile_and_reload() {
    let (db, _) = setup().await;
    let users = UserModel::new(db.clone());
    let u = users.create(new_user("ada", "ada@example.com")).await.unwrap();
    assert_eq!(u.username, "ada");
    assert!(u.is_active && !u.is_verified && u.last_login_at.is_none());

    // The stored hash is Argon2id, never the password.
    let stored: String = db.query("SELECT password_hash FROM users WHERE id = $1", &[&u.id]).await.unwrap()[0].get(0);
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
    assert!(!stored.contains("correct horse"));
    let users_rows: i64 = db.query("SELECT count(*) FROM users", &[]).await.unwrap()[0].get(0);
    assert_eq!(users_rows, 1, "one registration writes one row");

    let logged_in = users.authenticate("ADA", "correct horse battery").await.unwrap();
    assert_eq!(logged_in.id, u.id);
    assert!(logged_in.last_login_at.is_some());
    assert_eq!(users.authenticate("ada@example.com", "correct horse battery").await.unwrap().id, u.id);
    assert!(matches!(users.authenticate("ada", "wrong password").await, Err(Error::Auth(_))));
    assert!(matches!(users.authenticate("nobody", "correct horse battery").await, Err(Error::Auth(_))));
    assert!(users.verify_password(u.id, "correct horse battery").await.unwrap());
    assert!(!users.verify_password(u.id, "correct horse batterx").await.unwrap());

    users.update_profile(u.id, Some("Ada L."), Some("https://cdn.example.com/a.png")).await.unwrap();
    let reloaded = users.find_by_username("ada").await.unwrap();
    assert_eq!(reloaded.display_name.as_deref(), Some("Ada L."));
    assert_eq!(reloaded.avatar_url.as_deref(), Some("https://cdn.example.com/a.png"));
    assert_eq!(users.find_by_email("ADA@example.com").await.unwrap().id, u.id);
    assert_eq!(users.find_by_id(u.id).await.unwrap().username, "ada");
    assert!(matches!(users.find_by_id(u.id + 1000).await, Err(Error::NotFound(_))));

    assert!(users.mark_verified(u.id).await.unwrap().is_verified);
    users.set_active(u.id, false).await.unwrap();
    assert!(
        matches!(users.authenticate("ada", "correct horse battery").await, Err(Error::Auth(_))),
        "inactive users cannot log in"
    );
    users.set_active(u.id, true).await.unwrap();
    users.change_password(u.id, "a brand new secret").await.unwrap();
    assert!(users.authenticate("ada", "a brand new secret").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_invalid_input_are_refused_with_nothing_written() {
    let (db, _) = setup().await;
    let users = UserModel::new(db.clone());
    users.create(new_user("bob", "bob@example.com")).await.unwrap();
    let e = users.create(new_user("BOB", "other@example.com")).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(ref m) if m == "username already exists"), "{e}");
    let e = users.create(new_user("bobby", "Bob@Example.com")).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(ref m) if m == "email already exists"), "{e}");
    let e = users.create(new_user("carol", "not-an-email")).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(ref m) if m.contains("email")), "{e}");
    let short = NewUser { username: "dave", email: "dave@example.com", password: "short", display_name: None };
    assert!(matches!(users.create(short).await, Err(Error::InvalidArgument(_))));
    let n: i64 = db.query("SELECT count(*) FROM users", &[]).await.unwrap()[0].get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_in_every_user_and_stream_text_field_are_stored_verbatim() {
    let (db, redis) = setup().await;
    let users = UserModel::new(db.clone());
    let streams = StreamModel::new(db.clone(), redis);
    let hostile = ["'; DROP TABLE users; --", "Robert'); DROP TABLE streams;--", "$1 \\' \" ` 😀 中文", "' OR '1'='1"];
    for (i, h) in hostile.iter().enumerate() {
        let email = format!("o'brien+{i};--@example.com");
        let u = users
            .create(NewUser { username: h, email: &email, password: "correct horse battery", display_name: Some(h) })
            .await
            .unwrap();
        let back = users.find_by_username(h).await.unwrap();
        assert_eq!(
            (back.username.as_str(), back.email.as_str(), back.display_name.as_deref()),
            (*h, email.as_str(), Some(*h))
        );
        users.update_profile(u.id, None, Some(h)).await.unwrap();
        assert_eq!(users.find_by_id(u.id).await.unwrap().avatar_url.as_deref(), Some(*h));
        let s = streams.create(u.id, h, Some(h)).await.unwrap();
        let st = streams
            .update_stats(
                s.id,
                &StreamStats { resolution: Some(h[..h.len().min(8)].to_string()), ..Default::default() },
            )
            .await;
        // Resolution is short text; the truncated hostile prefix is stored verbatim or refused cleanly.
        if let Ok(st) = st {
            assert_eq!(st.resolution.as_deref(), Some(&h[..h.len().min(8)]));
        }
        let back = streams.find_by_id(s.id).await.unwrap();
        assert_eq!((back.name.as_str(), back.description.as_deref()), (*h, Some(*h)));
    }
    let tables: i64 = db
        .query("SELECT count(*) FROM pg_tables WHERE schemaname='public' AND tablename IN ('users','streams')", &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(tables, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_lifecycle_is_visible_to_a_second_redis_connection() {
    let (db, redis) = setup().await;
    let users = UserModel::new(db.clone());
    let streams = StreamModel::new(db.clone(), redis.clone());
    let u = users.create(new_user("streamer", "s@example.com")).await.unwrap();
    let s = streams.create(u.id, "Speedrun", Some("any%")).await.unwrap();
    assert!(s.stream_key.starts_with("live_") && s.stream_key.len() == 69);
    assert!(!format!("{s:?}").contains(&s.stream_key), "Debug hides the key");
    assert_eq!(streams.find_by_key(&s.stream_key).await.unwrap().id, s.id);

    // An independent observer: its own client, its own subscriber connection.
    let observer = RedisClient::connect(&redis_config()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let sink = seen.clone();
    let sid = s.id;
    for pattern in ["stream.*", "viewer.*"] {
        let sink = sink.clone();
        observer
            .subscribe(pattern, move |m| {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if v["stream_id"] == sid {
                    sink.lock().unwrap().push(v);
                }
            })
            .await
            .unwrap();
    }

    let session = streams.start(s.id).await.unwrap();
    assert!(matches!(streams.start(s.id).await, Err(Error::State(_))), "cannot start twice");
    let live = observer.hgetall(&format!("rsdb:stream:{}:live", s.id)).await.unwrap();
    assert_eq!(live["session_id"], session.id.to_string());
    assert!(observer.ttl(&format!("rsdb:stream:{}:live", s.id)).await.unwrap().is_some(), "live cache has a TTL");
    assert!(streams.find_by_id(s.id).await.unwrap().is_live);

    assert_eq!(streams.viewer_joined(s.id).await.unwrap(), 1);
    assert_eq!(streams.viewer_joined(s.id).await.unwrap(), 2);
    assert_eq!(streams.viewer_joined(s.id).await.unwrap(), 3);
    assert_eq!(streams.viewer_left(s.id).await.unwrap(), 2);
    assert_eq!(observer.get(&format!("rsdb:stream:{}:viewers", s.id)).await.unwrap().as_deref(), Some("2"));
    assert_eq!(streams.viewer_count(s.id).await.unwrap(), 2);
    streams
        .update_stats(
            s.id,
            &StreamStats {
                bitrate_kbps: Some(6000),
                fps: Some(60),
                resolution: Some("1920x1080".into()),
                codec: Some("h264".into()),
            },
        )
        .await
        .unwrap();

    let ended = streams.stop(s.id).await.unwrap();
    assert_eq!(ended.id, session.id);
    assert_eq!((ended.total_viewers, ended.peak_viewers), (3, 3));
    assert!(ended.duration_seconds.unwrap() >= 0);
    assert!(observer.hgetall(&format!("rsdb:stream:{}:live", s.id)).await.unwrap().is_empty(), "live cache cleared");
    assert!(matches!(streams.stop(s.id).await, Err(Error::State(_))));
    let after = streams.find_by_id(s.id).await.unwrap();
    assert!(!after.is_live && after.ended_at.is_some());
    assert_eq!((after.bitrate_kbps, after.fps, after.codec.as_deref()), (Some(6000), Some(60), Some("h264")));

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let types: Vec<String> = seen.lock().unwrap().iter().map(|v| v["type"].as_str().unwrap().to_string()).collect();
        if types.len() >= 6 {
            assert_eq!(
                types,
                ["stream.started", "viewer.joined", "viewer.joined", "viewer.joined", "viewer.left", "stream.stopped"]
            );
            break;
        }
        assert!(Instant::now() < deadline, "observer saw only {types:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The same lifecycle is in the event store, in order.
    let events = EventStore::new(db.clone()).load("stream", &s.id.to_string(), 0).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| (e.version, e.event_type.as_str())).collect();
    assert_eq!(kinds, [(1, "stream.started"), (2, "stream.stopped")]);
    assert_eq!(events[1].payload["peak_viewers"], 3);

    let rekeyed = streams.regenerate_key(s.id).await.unwrap();
    assert_ne!(rekeyed.stream_key, s.stream_key);
    assert!(matches!(streams.find_by_key(&s.stream_key).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sessions_count_viewers_and_bytes_and_compute_duration() {
    let (db, redis) = setup().await;
    let users = UserModel::new(db.clone());
    let streams = StreamModel::new(db.clone(), redis);
    let sessions = StreamSessionModel::new(db.clone());
    let u = users.create(new_user("caster", "c@example.com")).await.unwrap();
    let s = streams.create(u.id, "Chess", None).await.unwrap();
    let ss = sessions.create(s.id).await.unwrap();
    sessions.record_viewer_join(ss.id, 1).await.unwrap();
    sessions.record_viewer_join(ss.id, 5).await.unwrap();
    sessions.record_viewer_join(ss.id, 2).await.unwrap();
    sessions.add_bytes(ss.id, 1_000_000).await.unwrap();
    sessions.add_bytes(ss.id, 24).await.unwrap();
    assert!(sessions.add_bytes(ss.id, -1).await.is_err());
    db.execute("UPDATE stream_sessions SET started_at = now() - interval '90 seconds' WHERE id = $1", &[&ss.id])
        .await
        .unwrap();
    let ended = sessions.end(ss.id).await.unwrap();
    assert_eq!((ended.total_viewers, ended.peak_viewers, ended.bytes_transferred), (3, 5, 1_000_024));
    assert!((90..=92).contains(&ended.duration_seconds.unwrap()), "{:?}", ended.duration_seconds);
    assert!(matches!(sessions.end(ss.id).await, Err(Error::State(_))));
    assert_eq!(sessions.list_for_stream(s.id).await.unwrap().len(), 1);
    assert!(matches!(sessions.create(999_999).await, Err(Error::NotFound(_))));
}
