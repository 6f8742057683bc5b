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

/// Moves the stream id sequence to a random point: every test has its own database, but the
/// live cache keys and pub/sub channels (which carry the stream id) are shared by the stack.
async fn random_stream_ids(db: &DatabaseManager) {
    let start: i64 = rand::random_range(1_000_000_000..4_000_000_000_000);
    db.query("SELECT setval('streams_id_seq', $1)", &[&start]).await.unwrap();
}

async fn count(db: &DatabaseManager, table: &str) -> i64 {
    db.query(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap()[0].get(0)
}

async fn stored_hash(db: &DatabaseManager, id: i64) -> String {
    db.query("SELECT password_hash FROM users WHERE id = $1", &[&id]).await.unwrap()[0].get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_records_never_carry_the_hash_and_a_missing_profile_value_is_kept() {
    let (db, _) = setup().await;
    let users = UserModel::new(db.clone());
    let password = "correct horse battery staple";
    let new = NewUser { username: "Alice_Streams", email: "Alice@Example.com", password, display_name: Some("Alice") };
    let created = users.create(new).await.unwrap();
    assert_eq!((created.username.as_str(), created.email.as_str()), ("Alice_Streams", "Alice@Example.com"));
    assert_eq!((created.display_name.as_deref(), created.avatar_url.as_deref()), (Some("Alice"), None));
    assert_eq!(users.authenticate("ALICE@EXAMPLE.COM", password).await.unwrap().id, created.id, "email ignores case");
    assert_eq!(users.find_by_username("ALICE_STREAMS").await.unwrap().id, created.id);

    users.update_profile(created.id, Some("Alice in Streamland"), Some("https://cdn.example.com/a.png")).await.unwrap();
    let kept_name = users.update_profile(created.id, None, Some("https://cdn.example.com/b.png")).await.unwrap();
    assert_eq!(kept_name.display_name.as_deref(), Some("Alice in Streamland"), "None leaves the name");
    let kept_avatar = users.update_profile(created.id, Some("Alice"), None).await.unwrap();
    assert_eq!(kept_avatar.avatar_url.as_deref(), Some("https://cdn.example.com/b.png"), "None leaves the avatar");
    let reloaded = users.find_by_id(created.id).await.unwrap();
    assert_eq!(reloaded, kept_avatar);
    assert!(reloaded.last_login_at.is_some(), "the login was recorded");

    // Every face serializes this record; none of them may carry the hash or the password.
    for u in [&created, &kept_name, &reloaded] {
        let text = serde_json::to_string(u).unwrap();
        for secret in ["password_hash", "argon2", password] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_inactive_account_get_one_and_the_same_answer() {
    let (db, _) = setup().await;
    let users = UserModel::new(db.clone());
    let password = "right password 1";
    let carol = users
        .create(NewUser { username: "carol", email: "carol@example.com", password, display_name: None })
        .await
        .unwrap();
    let message = |r: rootstream_db::Result<rootstream_db::models::User>| match r {
        Err(Error::Auth(m)) => m,
        other => panic!("expected an auth error, got {other:?}"),
    };
    let wrong = message(users.authenticate("carol", "wrong password 1").await);
    let unknown = message(users.authenticate("nobody-here", password).await);
    let unknown_email = message(users.authenticate("nobody@example.com", password).await);
    assert!(!users.set_active(carol.id, false).await.unwrap().is_active);
    assert!(!users.find_by_id(carol.id).await.unwrap().is_active);
    let inactive = message(users.authenticate("carol", password).await);
    assert!(!wrong.is_empty());
    // One answer for all, so a login does not reveal which accounts exist.
    assert_eq!([&unknown, &unknown_email, &inactive], [&wrong, &wrong, &wrong]);
    assert!(users.set_active(carol.id, true).await.unwrap().is_active);
    assert_eq!(users.authenticate("carol@example.com", password).await.unwrap().id, carol.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_password_mark_verified_record_login_and_change_password() {
    let (db, _) = setup().await;
    let users = UserModel::new(db.clone());
    let (old, new) = ("first password", "second password");
    let dave = users
        .create(NewUser { username: "dave", email: "dave@example.com", password: old, display_name: None })
        .await
        .unwrap();
    assert!(users.verify_password(dave.id, old).await.unwrap());
    assert!(!users.verify_password(dave.id, "First password").await.unwrap());
    assert!(!users.verify_password(dave.id, "").await.unwrap());

    assert!(!dave.is_verified);
    assert!(users.mark_verified(dave.id).await.unwrap().is_verified);
    assert!(users.find_by_id(dave.id).await.unwrap().is_verified);
    assert!(users.record_login(dave.id).await.unwrap().last_login_at.is_some());
    assert!(users.find_by_id(dave.id).await.unwrap().last_login_at.is_some());

    let old_hash = stored_hash(&db, dave.id).await;
    users.change_password(dave.id, new).await.unwrap();
    let new_hash = stored_hash(&db, dave.id).await;
    assert_ne!(new_hash, old_hash);
    assert!(new_hash.starts_with("$argon2id$") && !new_hash.contains(new), "{new_hash}");
    assert_eq!(users.authenticate("dave", new).await.unwrap().id, dave.id);
    assert!(matches!(users.authenticate("dave", old).await, Err(Error::Auth(_))));
    assert!(users.verify_password(dave.id, new).await.unwrap());
    assert!(!users.verify_password(dave.id, old).await.unwrap());

    // The new password obeys the same policy; a refused change keeps the current one.
    assert!(matches!(users.change_password(dave.id, "short").await, Err(Error::InvalidArgument(_))));
    assert_eq!(stored_hash(&db, dave.id).await, new_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_email_and_short_password_is_refused_and_the_existing_user_is_unchanged() {
    let (db, _) = setup().await;
    let users = UserModel::new(db.clone());
    let pw = "erin's password";
    let erin = users
        .create(NewUser { username: "Erin", email: "erin@example.com", password: pw, display_name: None })
        .await
        .unwrap();
    for email in ["not-an-email", "a@b", "@example.com", "a b@example.com", ""] {
        let r = users.create(NewUser { username: "grace", email, password: "long enough 1", display_name: None }).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "email {email:?}: {r:?}");
    }
    let seven = NewUser { username: "grace", email: "grace@example.com", password: "1234567", display_name: None };
    assert!(matches!(users.create(seven).await, Err(Error::InvalidArgument(ref m)) if m.contains('8')));
    let empty = NewUser { username: "grace", email: "grace@example.com", password: "", display_name: None };
    assert!(matches!(users.create(empty).await, Err(Error::InvalidArgument(_))));

    assert_eq!(count(&db, "users").await, 1);
    let again = users.find_by_id(erin.id).await.unwrap();
    assert_eq!((again.username.as_str(), again.email.as_str()), ("Erin", "erin@example.com"));
    assert!(users.verify_password(erin.id, pw).await.unwrap());
    assert!(matches!(users.find_by_username("grace").await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keys_are_distinct_lower_hex_and_find_their_stream() {
    let (db, redis) = setup().await;
    let streams = StreamModel::new(db.clone(), redis);
    let owner = UserModel::new(db.clone()).create(new_user("streamer", "st@example.com")).await.unwrap().id;
    let a = streams.create(owner, "Speedrun", Some("any% attempts")).await.unwrap();
    let b = streams.create(owner, "Chill", None).await.unwrap();
    for s in [&a, &b] {
        let hex = s.stream_key.strip_prefix("live_").expect("the key starts with live_");
        assert_eq!(hex.len(), 64, "256 bits");
        assert!(hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)), "{hex}");
        assert_eq!((s.user_id, s.is_live, s.viewer_count), (owner, false, 0));
    }
    assert_ne!(a.stream_key, b.stream_key);
    assert_ne!(a.id, b.id);
    assert_eq!(
        (a.name.as_str(), a.description.as_deref(), b.description.as_deref()),
        ("Speedrun", Some("any% attempts"), None)
    );
    let found = streams.find_by_key(&a.stream_key).await.unwrap();
    assert!(found == streams.find_by_id(a.id).await.unwrap() && found.id == a.id);
    assert!(matches!(streams.find_by_key(&format!("live_{}", "0".repeat(64))).await, Err(Error::NotFound(_))));
    assert!(matches!(streams.find_by_id(a.id + 1000).await, Err(Error::NotFound(_))));

    let rekeyed = streams.regenerate_key(a.id).await.unwrap();
    assert_eq!(rekeyed.id, a.id);
    assert!(rekeyed.stream_key.starts_with("live_") && rekeyed.stream_key.len() == 69);
    assert_eq!(streams.find_by_key(&rekeyed.stream_key).await.unwrap().id, a.id);
    assert_eq!(streams.find_by_id(a.id).await.unwrap().stream_key, rekeyed.stream_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_streams_and_users_are_not_found_and_an_idle_stream_cannot_stop() {
    let (db, redis) = setup().await;
    random_stream_ids(&db).await;
    let streams = StreamModel::new(db.clone(), redis);
    assert!(matches!(streams.start(123).await, Err(Error::NotFound(_))));
    assert!(matches!(streams.stop(123).await, Err(Error::NotFound(_))));
    assert!(matches!(streams.create(987_654, "Orphan", None).await, Err(Error::NotFound(_))));
    assert_eq!(count(&db, "streams").await, 0);
    let owner = UserModel::new(db.clone()).create(new_user("idle", "idle@example.com")).await.unwrap().id;
    let idle = streams.create(owner, "Idle", None).await.unwrap();
    assert!(matches!(streams.viewer_joined(idle.id).await, Err(Error::State(_))), "no viewer joins before start");
    assert!(matches!(streams.stop(idle.id).await, Err(Error::State(_))), "never started");
    assert_eq!((count(&db, "stream_sessions").await, count(&db, "event_log").await), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_state_viewer_floor_partial_stats_and_every_event_payload() {
    let (db, redis) = setup().await;
    random_stream_ids(&db).await;
    let streams = StreamModel::new(db.clone(), redis.clone());
    let sessions = StreamSessionModel::new(db.clone());
    let owner = UserModel::new(db.clone()).create(new_user("live_owner", "lo@example.com")).await.unwrap().id;
    let id = streams.create(owner, "Main Stage", Some("the big one")).await.unwrap().id;

    let observer = RedisClient::connect(&redis_config()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::<(String, Value)>::new()));
    for pattern in ["stream.*", "viewer.*"] {
        let sink = seen.clone();
        observer
            .subscribe(pattern, move |m| {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if v["stream_id"] == id {
                    sink.lock().unwrap().push((m.channel.clone(), v));
                }
            })
            .await
            .unwrap();
    }

    let session = streams.start(id).await.unwrap();
    assert_eq!((session.stream_id, session.total_viewers, session.peak_viewers), (id, 0, 0));
    assert!(session.ended_at.is_none() && session.duration_seconds.is_none());
    let live = streams.find_by_id(id).await.unwrap();
    assert!(live.is_live && live.started_at.is_some());
    assert!(streams.list_live().await.unwrap().iter().any(|s| s.id == id));
    let key = format!("rsdb:stream:{id}:live");
    let hash = observer.hgetall(&key).await.unwrap();
    assert_eq!(
        (hash["stream_id"].as_str(), hash["user_id"].as_str(), hash["name"].as_str()),
        (id.to_string().as_str(), owner.to_string().as_str(), "Main Stage")
    );

    let mut joined = Vec::new();
    for _ in 0..3 {
        joined.push(streams.viewer_joined(id).await.unwrap());
    }
    assert_eq!(joined, [1, 2, 3]);
    let mut left = Vec::new();
    for _ in 0..4 {
        left.push(streams.viewer_left(id).await.unwrap());
    }
    assert_eq!(left, [2, 1, 0, 0], "the count never goes below zero");
    assert_eq!(streams.viewer_count(id).await.unwrap(), 0);

    let full = StreamStats {
        bitrate_kbps: Some(6000),
        fps: Some(60),
        resolution: Some("1920x1080".into()),
        codec: Some("h264".into()),
    };
    assert_eq!(streams.update_stats(id, &full).await.unwrap().bitrate_kbps, Some(6000));
    let partial = StreamStats { fps: Some(30), codec: Some("av1".into()), ..Default::default() };
    streams.update_stats(id, &partial).await.unwrap();
    let s = streams.find_by_id(id).await.unwrap();
    assert_eq!(
        (s.bitrate_kbps, s.fps, s.resolution.as_deref(), s.codec.as_deref()),
        (Some(6000), Some(30), Some("1920x1080"), Some("av1")),
        "unset values are left as they are"
    );

    let ended = streams.stop(id).await.unwrap();
    assert_eq!((ended.stream_id, ended.total_viewers, ended.peak_viewers), (id, 3, 3));
    assert!(ended.ended_at.is_some());
    assert_eq!(sessions.get(session.id).await.unwrap(), ended);
    assert!(!streams.list_live().await.unwrap().iter().any(|s| s.id == id));
    assert!(!observer.exists(&key).await.unwrap(), "the live cache is gone");

    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 9 {
        assert!(Instant::now() < deadline, "observer saw only {:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 9, "nothing else follows: {got:?}");
    for (channel, payload) in &got {
        assert_eq!(payload["type"], channel.as_str(), "the payload names its channel");
    }
    assert_eq!(got[0].1["session_id"], session.id);
    for (i, n) in [1, 2, 3].iter().enumerate() {
        assert_eq!(got[1 + i].1["viewers"], *n);
    }
    for (i, n) in left.iter().enumerate() {
        assert_eq!(got[4 + i].1["viewers"], *n);
    }
    assert_eq!(
        (&got[8].1["session_id"], &got[8].1["total_viewers"], &got[8].1["peak_viewers"]),
        (&Value::from(session.id), &Value::from(3), &Value::from(3))
    );

    let events = EventStore::new(db.clone());
    let log = events.load("stream", &id.to_string(), 0).await.unwrap();
    assert_eq!((log[0].aggregate_type.as_str(), log[0].aggregate_id.as_str()), ("stream", id.to_string().as_str()));
    assert_eq!((log[0].user_id, &log[0].payload["session_id"]), (Some(owner), &Value::from(session.id)));
    assert_eq!(log[1].payload["total_viewers"], 3);
    let trail: Vec<_> = events.by_user(owner, 100).await.unwrap().into_iter().map(|e| e.event_type).collect();
    assert_eq!(trail, ["stream.stopped", "stream.started"], "the owner's audit trail, newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_session_counts_every_join_keeps_large_byte_counts_and_refuses_what_is_missing() {
    let (db, redis) = setup().await;
    let streams = StreamModel::new(db.clone(), redis);
    let sessions = StreamSessionModel::new(db.clone());
    let owner = UserModel::new(db.clone()).create(new_user("sessions", "ss@example.com")).await.unwrap().id;
    let stream = streams.create(owner, "Sessions", None).await.unwrap().id;
    let s = sessions.create(stream).await.unwrap();
    assert_eq!((s.stream_id, s.total_viewers, s.peak_viewers, s.bytes_transferred), (stream, 0, 0, 0));
    assert!(s.ended_at.is_none() && s.duration_seconds.is_none());
    let mut last = s.clone();
    for current in [1, 4, 2, 3] {
        last = sessions.record_viewer_join(s.id, current).await.unwrap();
    }
    assert_eq!((last.total_viewers, last.peak_viewers), (4, 4), "total counts joins, peak is the maximum");
    assert_eq!(sessions.add_bytes(s.id, 1000).await.unwrap().bytes_transferred, 1000);
    assert_eq!(sessions.add_bytes(s.id, 5_000_000_000).await.unwrap().bytes_transferred, 5_000_001_000);
    assert!(matches!(sessions.add_bytes(s.id, -1).await, Err(Error::InvalidArgument(_))));
    assert_eq!(sessions.get(s.id).await.unwrap().bytes_transferred, 5_000_001_000);
    let ended = sessions.end(s.id).await.unwrap();
    assert_eq!(sessions.get(s.id).await.unwrap(), ended);
    assert!(matches!(sessions.end(s.id).await, Err(Error::State(_))));
    assert_eq!(sessions.get(s.id).await.unwrap(), ended, "a refused end changes nothing");
    assert_eq!(sessions.list_for_stream(stream).await.unwrap(), [ended]);

    let missing = stream + 1000;
    assert!(matches!(sessions.create(missing).await, Err(Error::NotFound(_))));
    assert_eq!(count(&db, "stream_sessions").await, 1);
    assert!(matches!(sessions.get(777).await, Err(Error::NotFound(_))));
    assert!(matches!(sessions.end(777).await, Err(Error::NotFound(_))));
    assert!(sessions.list_for_stream(missing).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_logins_passwords_and_repeated_profile_updates_are_stored_verbatim() {
    let (db, redis) = setup().await;
    let users = UserModel::new(db.clone());
    let streams = StreamModel::new(db.clone(), redis);
    let hostile = ["'; DROP TABLE users; --", "Robert'); DROP TABLE streams;--", "$1; DELETE FROM users WHERE $2 = $2"];
    let password = hostile[0];
    let mut ids = Vec::new();
    for (i, h) in hostile.iter().enumerate() {
        let email = format!("h{i}+$1'@example.com");
        let u = users.create(NewUser { username: h, email: &email, password, display_name: None }).await.unwrap();
        assert_eq!(users.find_by_email(&email).await.unwrap().id, u.id);
        ids.push(u.id);
    }
    assert_eq!(users.authenticate(hostile[1], password).await.unwrap().id, ids[1]);
    for h in hostile {
        let avatar = format!("{h}/avatar.png");
        users.update_profile(ids[2], Some(h), Some(avatar.as_str())).await.unwrap();
        let back = users.find_by_id(ids[2]).await.unwrap();
        assert_eq!((back.display_name.as_deref(), back.avatar_url), (Some(h), Some(avatar)));
        assert_eq!(back.username, hostile[2]);
        // Free text keeps newlines and tabs.
        let description = format!("{h}\nsecond line\t{h}");
        let s = streams.create(ids[0], h, Some(description.as_str())).await.unwrap();
        assert_eq!(
            streams.find_by_key(&s.stream_key).await.unwrap().description.as_deref(),
            Some(description.as_str())
        );
    }
    assert_eq!(count(&db, "users").await, 3);
}
