//! EventStore against a real PostgreSQL: optimistic concurrency, replay, audit, snapshots.

mod support;

use rootstream_db::db::migrations;
use rootstream_db::events::{EventStore, NewEvent};
use rootstream_db::{DatabaseManager, Error};
use serde_json::{json, Value};
use support::*;

async fn store() -> (DatabaseManager, EventStore) {
    let mut cfg = fresh_config().await;
    cfg.set("pool_size", "16").unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    (db.clone(), EventStore::new(db))
}

/// A small aggregate: a wallet balance built from deposit/withdraw events.
fn apply(state: &Value, e: &Value, kind: &str) -> Value {
    let bal = state["balance"].as_i64().unwrap_or(0);
    let amt = e["amount"].as_i64().unwrap();
    let n = state["ops"].as_i64().unwrap_or(0) + 1;
    match kind {
        "deposited" => json!({"balance": bal + amt, "ops": n}),
        "withdrew" => json!({"balance": bal - amt, "ops": n}),
        other => panic!("unknown event {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_gets_a_conflict_and_writes_nothing() {
    let (_, es) = store().await;
    let v = es.append("wallet", "w1", 0, &[NewEvent::new("deposited", json!({"amount": 10}))]).await.unwrap();
    assert_eq!(v, 1);
    let v = es
        .append(
            "wallet",
            "w1",
            1,
            &[NewEvent::new("deposited", json!({"amount": 5})), NewEvent::new("withdrew", json!({"amount": 3}))],
        )
        .await
        .unwrap();
    assert_eq!(v, 3);
    let stale = es.append("wallet", "w1", 1, &[NewEvent::new("withdrew", json!({"amount": 100}))]).await.unwrap_err();
    assert!(matches!(stale, Error::Conflict(ref m) if m.contains("version 3")), "{stale}");
    let ahead = es.append("wallet", "w1", 7, &[NewEvent::new("withdrew", json!({"amount": 1}))]).await.unwrap_err();
    assert!(matches!(ahead, Error::Conflict(_)), "a version from the future is refused too");
    assert_eq!(es.current_version("wallet", "w1").await.unwrap(), 3);
    let versions: Vec<i64> = es.load("wallet", "w1", 0).await.unwrap().iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_never_lose_or_duplicate_a_version() {
    let (_, es) = store().await;
    let writers = 12;
    let per_writer = 10;
    let mut handles = Vec::new();
    for w in 0..writers {
        let es = es.clone();
        handles.push(tokio::spawn(async move {
            let mut done = 0;
            let mut conflicts = 0;
            while done < per_writer {
                let v = es.current_version("counter", "c1").await.unwrap();
                match es
                    .append("counter", "c1", v, &[NewEvent::new("incremented", json!({"writer": w, "n": done}))])
                    .await
                {
                    Ok(nv) => {
                        assert_eq!(nv, v + 1);
                        done += 1;
                    }
                    Err(Error::Conflict(_)) => conflicts += 1,
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let events = es.load("counter", "c1", 0).await.unwrap();
    assert_eq!(events.len(), writers * per_writer, "every successful append is there exactly once");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.version, i as i64 + 1, "versions are consecutive");
    }
    let mut seen: Vec<(i64, i64)> =
        events.iter().map(|e| (e.payload["writer"].as_i64().unwrap(), e.payload["n"].as_i64().unwrap())).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), writers * per_writer, "no event stored twice");
    assert!(conflicts > 0, "{writers} writers on one aggregate must have collided at least once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_snapshot_plus_later_events_equals_a_full_replay() {
    let (_, es) = store().await;
    let mut version = 0;
    for i in 1..=25i64 {
        let kind = if i % 4 == 0 { "withdrew" } else { "deposited" };
        version = es.append("wallet", "w9", version, &[NewEvent::new(kind, json!({"amount": i}))]).await.unwrap();
        if i == 10 || i == 20 {
            let events = es.load("wallet", "w9", 0).await.unwrap();
            let state = events.iter().fold(json!({}), |s, e| apply(&s, &e.payload, &e.event_type));
            es.save_snapshot("wallet", "w9", version, &state).await.unwrap();
        }
    }
    let full =
        es.load("wallet", "w9", 0).await.unwrap().iter().fold(json!({}), |s, e| apply(&s, &e.payload, &e.event_type));
    let part = es.load_from_snapshot("wallet", "w9").await.unwrap();
    let snap = part.snapshot.clone().expect("a snapshot");
    assert_eq!(snap.version, 20);
    assert_eq!(part.events.len(), 5);
    assert_eq!(part.events[0].version, 21);
    let rebuilt = part.events.iter().fold(snap.state.clone(), |s, e| apply(&s, &e.payload, &e.event_type));
    assert_eq!(rebuilt, full);
    assert_eq!(full["ops"], 25);
    assert!(
        es.save_snapshot("wallet", "w9", 26, &json!({})).await.is_err(),
        "no snapshot of a version that does not exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_lists_a_users_events_newest_first() {
    let (db, es) = store().await;
    db.execute("INSERT INTO users (id, username, email, password_hash) VALUES (42, 'aud', 'aud@x.io', 'h')", &[])
        .await
        .unwrap();
    es.append("profile", "42", 0, &[NewEvent::new("renamed", json!({"to": "a"})).by_user(42)]).await.unwrap();
    es.append("stream", "7", 0, &[NewEvent::new("started", json!({})).by_user(42)]).await.unwrap();
    es.append("stream", "8", 0, &[NewEvent::new("started", json!({})).by_user(43)]).await.unwrap();
    let trail = es.by_user(42, 100).await.unwrap();
    let kinds: Vec<_> = trail.iter().map(|e| (e.aggregate_type.as_str(), e.event_type.as_str())).collect();
    assert_eq!(kinds, [("stream", "started"), ("profile", "renamed")]);
    assert!(es.append("", "x", 0, &[NewEvent::new("e", json!({}))]).await.is_err());
    assert!(es.append("t", "x", 0, &[]).await.is_err());
}
