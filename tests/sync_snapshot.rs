//! Snapshots of the shared state in PostgreSQL, and what they are for: reconstructing the
//! state, repairing a trimmed log, and keeping conflicts on record.

mod support;

use rootstream_db::sync::{SnapshotManager, StateSyncManager, Strategy, SyncOptions};
use rootstream_db::{DatabaseManager, RedisClient};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};
use support::*;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

async fn database() -> DatabaseManager {
    let db = DatabaseManager::connect(&fresh_config().await).await.unwrap();
    rootstream_db::db::migrations::migrate(&db).await.unwrap();
    db
}

async fn manager(ns: &str, instance: &str, max_len: u64, db: Option<DatabaseManager>) -> StateSyncManager {
    let redis = RedisClient::connect(&redis_config()).await.unwrap();
    let mut opts = SyncOptions::new(instance);
    opts.namespace = ns.to_string();
    opts.log_max_len = max_len;
    opts.check_interval = Duration::from_millis(100);
    StateSyncManager::start_with_database(redis, opts, db).await.unwrap()
}

// True when the log no longer starts with the first message.
async fn b_would_miss_entries(m: &StateSyncManager) -> bool {
    m.read_log_after(None).await.unwrap().first().is_some_and(|e| e.seq > 1)
}

// Waits until the manager has read its own messages back from the log.
async fn settled(m: &StateSyncManager) {
    m.flush(Duration::from_secs(10)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.status().await.unwrap().lag > 0 {
        assert!(Instant::now() < deadline, "still behind the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_versioned_compressed_listed_and_pruned() {
    let db = database().await;
    let ns = unique("snap");
    let a = manager(&ns, "a", 100_000, None).await;
    let snaps = SnapshotManager::new(db.clone(), a.clone());
    for i in 0..200 {
        a.apply_delta(
            "stream",
            &(i % 40).to_string(),
            &obj(json!({"title": "the same long title every time", "n": i})),
        )
        .unwrap();
    }
    settled(&a).await;
    let first = snaps.take().await.unwrap();
    assert_eq!((first.version, first.entity_count), (1, 40));
    assert!(first.stored_bytes < first.raw_bytes / 2, "{first:?}");
    assert!(!first.log_id.is_empty());
    let second = snaps.take().await.unwrap();
    assert_eq!(second.version, 2);
    let listed: Vec<i64> = snaps.list().await.unwrap().iter().map(|s| s.version).collect();
    assert_eq!(listed, [2, 1]);
    let loaded = snaps.load(1).await.unwrap();
    assert_eq!(loaded.image.visible(), a.capture().image.visible());
    assert_eq!(loaded.origin_seqs.get(a.origin()), Some(&200));
    assert_eq!(snaps.cleanup(1).await.unwrap(), 1);
    assert!(matches!(snaps.load(1).await, Err(rootstream_db::Error::NotFound(_))));
    assert_eq!(snaps.cleanup(0).await.unwrap(), 0, "the newest is always kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_snapshot_plus_the_later_deltas_equals_the_live_state() {
    let db = database().await;
    let ns = unique("snap");
    let a = manager(&ns, "a", 100_000, None).await;
    let snaps = SnapshotManager::new(db, a.clone());
    for i in 0..300 {
        a.apply_delta(
            "stream",
            &(i % 30).to_string(),
            &obj(json!({"n": i, "odd": if i % 2 == 1 { json!(true) } else { Value::Null }})),
        )
        .unwrap();
    }
    settled(&a).await;
    let v = snaps.take().await.unwrap().version;
    for i in 300..500 {
        a.apply_delta("stream", &(i % 50).to_string(), &obj(json!({"n": i}))).unwrap();
    }
    settled(&a).await;
    assert_eq!(snaps.deltas_since(Some(v)).await.unwrap().len(), 200);
    let rebuilt = snaps.reconstruct().await.unwrap();
    assert_eq!(rebuilt.image().visible(), a.capture().image.visible());
    assert_eq!(rebuilt.image().entity_count(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_behind_a_trimmed_log_restores_the_snapshot_reports_it_and_ends_equal() {
    let db = database().await;
    let ns = unique("snap");
    // The log keeps about 500 entries: the 20 changes after the snapshot, not the 2,000 before.
    let a = manager(&ns, "a", 500, Some(db.clone())).await;
    let snaps = SnapshotManager::new(db.clone(), a.clone());
    for i in 0..2000 {
        a.apply_delta("stream", &(i % 100).to_string(), &obj(json!({"n": i}))).unwrap();
    }
    settled(&a).await;
    snaps.take().await.unwrap();
    assert!(b_would_miss_entries(&a).await, "the log was trimmed");
    for i in 0..20 {
        a.apply_delta("stream", &i.to_string(), &obj(json!({"after": true}))).unwrap();
    }
    settled(&a).await;
    let b = manager(&ns, "b", 500, Some(db)).await;
    let st = b.status().await.unwrap();
    let resync = b.recent_resyncs().pop().expect("the resync is on record");
    assert_eq!(resync.snapshot_version, Some(1));
    assert!(resync.reason.contains("covers the gap"), "{}", resync.reason);
    assert_eq!(st.resyncs, 1, "{st:?}");
    for id in 0..100 {
        let id = id.to_string();
        assert_eq!(b.get_snapshot("stream", &id).unwrap(), a.get_snapshot("stream", &id).unwrap(), "entity {id}");
    }
    assert_eq!(b.get_snapshot("stream", "3").unwrap(), Some(obj(json!({"n": 1903, "after": true}))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_conflicts_are_stored_in_postgres_and_given_to_the_callback() {
    let db = database().await;
    let ns = unique("snap");
    let a = manager(&ns, "a", 100_000, Some(db.clone())).await;
    let b = manager(&ns, "b", 100_000, Some(db.clone())).await;
    for m in [&a, &b] {
        m.register_entity_type("board", Strategy::VersionVectors).unwrap();
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.on_conflict(move |c| sink.lock().unwrap().push(c.id.clone()));
    // Two changes made at the same moment on both sides are concurrent unless one arrives
    // in between; a few tries make that certain.
    for i in 0..20 {
        let id = format!("b{i}");
        a.apply_delta("board", &id, &obj(json!({"owner": "a"}))).unwrap();
        b.apply_delta("board", &id, &obj(json!({"owner": "b"}))).unwrap();
    }
    settled(&a).await;
    settled(&b).await;
    let conflicts = b.recent_conflicts();
    assert!(!conflicts.is_empty(), "no concurrent pair in 20 tries");
    assert_eq!(seen.lock().unwrap().len(), conflicts.len());
    let c = &conflicts[0];
    assert_eq!(c.lost.len(), 1);
    assert_ne!(c.kept.get("owner"), c.lost[0].state.get("owner"), "both sides are on record");
    assert_eq!(a.get_snapshot("board", &c.id).unwrap(), b.get_snapshot("board", &c.id).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = db
            .query(
                "SELECT entity_type, reason, kept, lost FROM sync_conflicts WHERE namespace = $1 AND entity_id = $2",
                &[&ns, &c.id],
            )
            .await
            .unwrap();
        if rows.len() >= 2 {
            let t: String = rows[0].get("entity_type");
            let reason: String = rows[0].get("reason");
            assert_eq!(t, "board");
            assert!(reason.contains("no merge function"), "{reason}");
            break;
        }
        assert!(Instant::now() < deadline, "both instances record the conflict");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_an_integrity_error_and_is_not_restored() {
    let db = database().await;
    let ns = unique("snap");
    let a = manager(&ns, "a", 100_000, None).await;
    let snaps = SnapshotManager::new(db.clone(), a.clone());
    a.apply_delta("stream", "1", &obj(json!({"n": 1}))).unwrap();
    settled(&a).await;
    snaps.take().await.unwrap();
    // Flip one byte of the compressed state, in the database itself.
    db.execute(
        "UPDATE sync_snapshots SET state = overlay(state placing decode(lpad(to_hex(get_byte(state, 8) # 255), 2, '0'), 'hex') from 9 for 1) WHERE namespace = $1",
        &[&ns],
    )
    .await
    .unwrap();
    let err = snaps.load(1).await.unwrap_err();
    assert!(matches!(err, rootstream_db::Error::Integrity(_)), "{err}");
    assert!(matches!(snaps.latest().await, Err(rootstream_db::Error::Integrity(_))));
    assert!(snaps.reconstruct().await.is_err(), "nothing is rebuilt from a damaged snapshot");
}
