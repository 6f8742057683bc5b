//! The sender keeps several script calls in flight on one connection. Killing its connection
//! again and again while it writes must not reorder, lose or repeat anything: the receiver
//! takes every message once in the origin's order, and an instance reading the whole log
//! afterwards finds the origin's messages in order too. (Its own test binary: it kills every
//! ordinary client connection of the stack's Redis.)

mod support;

use rootstream_db::sync::{StateSyncManager, SyncOptions};
use rootstream_db::RedisClient;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

async fn manager(namespace: &str, instance: &str) -> StateSyncManager {
    let redis = RedisClient::connect(&redis_config()).await.unwrap();
    let mut opts = SyncOptions::new(instance);
    opts.namespace = namespace.to_string();
    opts.check_interval = Duration::from_millis(100);
    StateSyncManager::start(redis, opts).await.unwrap()
}

fn recorder(m: &StateSyncManager, origin: String) -> Arc<Mutex<Vec<u64>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    m.subscribe("stream.delta", move |e| {
        if e.origin == origin {
            sink.lock().unwrap().push(e.seq);
        }
    })
    .unwrap();
    seen
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "not within 60 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_under_a_burst_leave_each_origin_in_order_and_once() {
    const N: u64 = 20_000;
    let ns = unique("sync-pipelined");
    let a = manager(&ns, "a").await;
    let b = manager(&ns, "b").await;
    let at_b = recorder(&b, a.origin().to_string());

    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let admin = RedisClient::connect(&redis_config()).await.unwrap();
            let kill: Vec<String> = ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"].map(String::from).into();
            let mut kills = 0;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(15)).await;
                if admin.command(&kill).await.is_ok() {
                    kills += 1;
                }
            }
            kills
        })
    };
    for i in 0..N {
        a.apply_delta("stream", &(i % 50).to_string(), &obj(json!({"n": i}))).unwrap();
        if i % 2_000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let flushed = a.flush(Duration::from_secs(60)).await;
    stop.store(true, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    flushed.unwrap();
    eventually("b has every message", || at_b.lock().unwrap().len() as u64 >= N).await;
    assert_eq!(*at_b.lock().unwrap(), (1..=N).collect::<Vec<u64>>(), "each once, in a's order");

    // The log itself holds a's messages in order: a late instance reading all of it sees them
    // so (repeats of a re-sent batch are skipped by number).
    let c = manager(&ns, "c").await;
    let from_log: Vec<u64> =
        c.read_log_after(None).await.unwrap().iter().filter(|e| e.origin == a.origin()).map(|e| e.seq).collect();
    let mut last = 0;
    for s in &from_log {
        assert!(*s <= last + 1, "the log jumps from {last} to {s}");
        last = last.max(*s);
    }
    assert_eq!(last, N);
    for m in [&a, &b] {
        assert_eq!(m.get_snapshot("stream", "7").unwrap(), Some(obj(json!({"n": N - 50 + 7}))));
    }
    assert_eq!(c.get_snapshot("stream", "7").unwrap(), Some(obj(json!({"n": N - 50 + 7}))));
    let st = b.status().await.unwrap();
    assert_eq!(st.resyncs, 0, "{st:?}");
    println!(
        "{kills} kills of every client connection during the burst; log entries of a: {}, repeats {}",
        from_log.len(),
        from_log.len() as u64 - N
    );
}
