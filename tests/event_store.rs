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

async fn event_rows(db: &DatabaseManager) -> i64 {
    db.query("SELECT count(*) FROM event_log", &[]).await.unwrap()[0].get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_with_expected_versions_keep_payload_metadata_and_user_and_load_after_a_version() {
    let (_, es) = store().await;
    assert_eq!(es.current_version("order", "o-1").await.unwrap(), 0);
    assert!(es.load("order", "o-1", 0).await.unwrap().is_empty());
    let mut placed = NewEvent::new("order.placed", json!({"total": 42})).by_user(7);
    placed.metadata = json!({"ip": "10.0.0.1"});
    let paid = NewEvent::new("order.paid", json!({}));
    assert_eq!(es.append("order", "o-1", 0, &[placed, paid]).await.unwrap(), 2, "a batch returns its last version");
    assert_eq!(es.append("order", "o-1", 2, &[NewEvent::new("order.shipped", json!({}))]).await.unwrap(), 3);
    assert_eq!(
        es.append("order", "o-2", 0, &[NewEvent::new("order.placed", json!({}))]).await.unwrap(),
        1,
        "per aggregate"
    );
    let all = es.load("order", "o-1", 0).await.unwrap();
    let seen: Vec<_> = all.iter().map(|e| (e.version, e.event_type.as_str(), e.aggregate_id.as_str())).collect();
    assert_eq!(seen, [(1, "order.placed", "o-1"), (2, "order.paid", "o-1"), (3, "order.shipped", "o-1")]);
    assert_eq!(
        (&all[0].payload, &all[0].metadata, all[0].user_id),
        (&json!({"total": 42}), &json!({"ip": "10.0.0.1"}), Some(7))
    );
    let tail: Vec<i64> = es.load("order", "o-1", 2).await.unwrap().iter().map(|e| e.version).collect();
    assert_eq!(tail, [3]);
    assert!(es.load("order", "o-1", 3).await.unwrap().is_empty(), "nothing after the last version");
    assert_eq!(es.current_version("order", "o-1").await.unwrap(), 3);
    assert_eq!(
        es.append("invoice", "o-1", 0, &[NewEvent::new("invoice.issued", json!({}))]).await.unwrap(),
        1,
        "per type"
    );

    // The faces hand events over as JSON; an event with only its type gets an empty payload
    // and metadata and no user.
    let parsed: Vec<NewEvent> = serde_json::from_str(r#"[{"event_type":"order.delivered"}]"#).unwrap();
    assert_eq!(es.append("order", "o-1", 3, &parsed).await.unwrap(), 4);
    let delivered = es.load("order", "o-1", 3).await.unwrap().remove(0);
    assert_eq!((&delivered.payload, &delivered.metadata, delivered.user_id), (&json!({}), &json!({}), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stale_or_future_expected_version_writes_nothing_and_the_current_one_succeeds() {
    let (db, es) = store().await;
    let three = [
        NewEvent::new("item.added", json!({})),
        NewEvent::new("item.added", json!({})),
        NewEvent::new("item.removed", json!({})),
    ];
    assert_eq!(es.append("cart", "c-1", 0, &three).await.unwrap(), 3);
    let before = es.load("cart", "c-1", 0).await.unwrap();
    let batch = [NewEvent::new("stale.one", json!({})), NewEvent::new("stale.two", json!({}))];
    for stale in [0, 1, 2, 4, 100] {
        assert!(matches!(es.append("cart", "c-1", stale, &batch).await, Err(Error::Conflict(_))), "expected {stale}");
    }
    let after = es.load("cart", "c-1", 0).await.unwrap();
    assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), before.iter().map(|e| e.id).collect::<Vec<_>>());
    assert_eq!(event_rows(&db).await, 3, "a refused batch writes none of its events");
    assert_eq!(es.append("cart", "c-1", 3, &batch).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_snapshot_every_event_is_replayed_and_the_audit_trail_is_limited() {
    let (_, es) = store().await;
    es.append(
        "wallet",
        "w1",
        0,
        &[NewEvent::new("deposited", json!({"amount": 1})), NewEvent::new("deposited", json!({"amount": 2}))],
    )
    .await
    .unwrap();
    let none = es.load_from_snapshot("wallet", "w1").await.unwrap();
    assert!(none.snapshot.is_none());
    assert_eq!(none.events.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);

    es.append("session", "s-1", 0, &[NewEvent::new("user.logged_in", json!({})).by_user(42)]).await.unwrap();
    es.append("stream", "st-9", 0, &[NewEvent::new("stream.created", json!({})).by_user(42)]).await.unwrap();
    es.append("stream", "st-9", 1, &[NewEvent::new("stream.renamed", json!({})).by_user(43)]).await.unwrap();
    es.append("session", "s-1", 1, &[NewEvent::new("user.logged_out", json!({})).by_user(42)]).await.unwrap();
    let types = |list: Vec<rootstream_db::events::Event>| list.into_iter().map(|e| e.event_type).collect::<Vec<_>>();
    assert_eq!(types(es.by_user(42, 100).await.unwrap()), ["user.logged_out", "stream.created", "user.logged_in"]);
    assert_eq!(types(es.by_user(42, 2).await.unwrap()), ["user.logged_out", "stream.created"], "newest first, limited");
    assert_eq!(es.by_user(43, 100).await.unwrap().len(), 1);
    assert!(es.by_user(44, 100).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_aggregate_names_event_types_payloads_and_snapshot_state_are_stored_verbatim() {
    let (db, es) = store().await;
    let hostile = ["'; DROP TABLE event_log; --", "quotes ' '' \" `", "back\\slash \\' \\x41 \\n", "$1", "日本語 🎮"];
    for h in hostile {
        let payload = json!({"text": h, h: h, "list": [h, format!("{h}{h}")]});
        let mut e = NewEvent::new(h, payload.clone());
        e.metadata = json!({"note": h});
        assert_eq!(es.append(h, h, 0, &[e]).await.unwrap(), 1);
        let back = es.load(h, h, 0).await.unwrap();
        assert_eq!(back.len(), 1, "{h}");
        let b = &back[0];
        assert_eq!((b.aggregate_type.as_str(), b.aggregate_id.as_str(), b.event_type.as_str()), (h, h, h));
        assert_eq!((&b.payload, &b.metadata), (&payload, &json!({"note": h})));
        es.save_snapshot(h, h, 1, &json!({"s": h})).await.unwrap();
        let snap = es.load_from_snapshot(h, h).await.unwrap().snapshot.unwrap();
        assert_eq!((snap.aggregate_id.as_str(), &snap.state), (h, &json!({"s": h})));
    }
    assert_eq!(event_rows(&db).await, hostile.len() as i64);
}
