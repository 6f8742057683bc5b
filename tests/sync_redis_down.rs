//! No lost update across a Redis outage: an instance keeps applying changes while the stack's
//! Redis is stopped, and the other receives every one, once, in order, after it returns. Kept
//! in its own test binary because it stops the stack's Redis.

mod support;

use rootstream_db::sync::{Resync, StateSyncManager, SyncOptions};
use rootstream_db::RedisClient;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

async fn manager(namespace: &str, instance: &str) -> StateSyncManager {
    let redis = RedisClient::connect(&redis_config()).await.unwrap();
    let mut opts = SyncOptions::new(instance);
    opts.namespace = namespace.to_string();
    opts.check_interval = Duration::from_millis(100);
    StateSyncManager::start(redis, opts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_changes_made_while_redis_is_stopped_reach_the_other_instance_once_and_in_order() {
    let ns = unique("syncdown");
    let a = manager(&ns, "a").await;
    let b = manager(&ns, "b").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.subscribe("stream.delta", move |e| sink.lock().unwrap().push((e.id.clone(), e.seq))).unwrap();
    let resyncs = Arc::new(Mutex::new(Vec::<Resync>::new()));
    let rs = resyncs.clone();
    b.on_resync(move |r| rs.lock().unwrap().push(r.clone()));

    a.apply_delta("stream", "0", json!({"n": -1}).as_object().unwrap()).unwrap();
    a.flush(Duration::from_secs(5)).await.unwrap();

    stack().redis_stop();
    let stopped = Instant::now();
    for i in 0..1000 {
        let id = (i % 10).to_string();
        a.apply_delta("stream", &id, json!({"n": i}).as_object().unwrap()).unwrap();
        // Spread the changes over the outage.
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
    }
    assert!(a.flush(Duration::from_millis(200)).await.is_err(), "nothing can reach the log yet");
    let wait = Duration::from_secs(5).saturating_sub(stopped.elapsed());
    tokio::time::sleep(wait).await;
    stack().redis_start();

    a.flush(Duration::from_secs(30)).await.expect("the outbox drains once Redis is back");
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 1001 {
        assert!(Instant::now() < deadline, "b has {} of 1001", seen.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1001, "each change exactly once");
    let seqs: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(seqs, (1..=1001).collect::<Vec<u64>>(), "in a's order");
    for id in 0..10 {
        let last = 990 + id;
        assert_eq!(b.get_snapshot("stream", &id.to_string()).unwrap(), json!({"n": last}).as_object().cloned());
    }
    assert!(resyncs.lock().unwrap().is_empty(), "nothing was missing from the log");
}
