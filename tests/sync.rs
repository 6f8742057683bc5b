//! State sync between instances over the stack's real Redis: events by pattern, changes that
//! cross over, concurrent writers converging, a lost subscriber connection repaired from the
//! log, and a trimmed log reported as a resynchronization.

mod support;

use rootstream_db::sync::{events, Outcome, StateSyncManager, Strategy, SyncOptions};
use rootstream_db::RedisClient;
use serde_json::{json, Map, Value};
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

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_reaches_every_matching_subscriber_in_one_envelope_and_unsubscribe_stops_it() {
    let ns = unique("sync");
    let a = manager(&ns, "a").await;
    let b = manager(&ns, "b").await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let sub = b.subscribe("stream.*", move |e| sink.lock().unwrap().push(e.clone())).unwrap();
    let other = Arc::new(Mutex::new(0));
    let count = other.clone();
    b.subscribe("viewer.*", move |_| *count.lock().unwrap() += 1).unwrap();

    a.publish(events::STREAM_STARTED, json!({"id": 42, "title": "speedrun"})).unwrap();
    a.publish(events::STREAM_STOPPED, json!({"id": 42})).unwrap();
    eventually("both stream events arrive", || got.lock().unwrap().len() == 2).await;
    let e = got.lock().unwrap()[0].clone();
    assert_eq!((e.v, e.kind.as_str(), e.entity.as_str(), e.id.as_str()), (1, "stream.started", "stream", "42"));
    assert_eq!(e.origin, a.origin());
    assert_eq!(e.seq, 1);
    assert_eq!(e.payload["title"], "speedrun");
    assert!(e.hlc.wall_ms > 0 && e.hlc.instance == a.origin());
    assert_eq!(got.lock().unwrap()[1].seq, 2, "per-origin numbers count up without gaps");
    assert_eq!(*other.lock().unwrap(), 0, "a non-matching pattern gets nothing");

    b.unsubscribe(sub).unwrap();
    a.publish(events::STREAM_STARTED, json!({"id": 43})).unwrap();
    a.publish(events::VIEWER_JOINED, json!({"id": 43})).unwrap();
    eventually("the viewer event arrives", || *other.lock().unwrap() == 1).await;
    assert_eq!(got.lock().unwrap().len(), 2, "no delivery after unsubscribe");
    assert!(b.unsubscribe(sub).is_err(), "a second unsubscribe is NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_shows_on_the_other_and_its_subscribers_see_it_applied() {
    let ns = unique("sync");
    let a = manager(&ns, "a").await;
    let b = manager(&ns, "b").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sink, bb) = (seen.clone(), b.clone());
    b.subscribe("stream.delta", move |e| {
        // Delivered after it was applied: the snapshot already shows it.
        sink.lock().unwrap().push(bb.get_snapshot("stream", &e.id).unwrap());
    })
    .unwrap();
    let out = a.apply_delta("stream", "7", &obj(json!({"title": "live", "viewers": 3}))).unwrap();
    assert!(matches!(out, Outcome::Applied { .. }));
    a.flush(Duration::from_secs(5)).await.unwrap();
    eventually("b has the change", || !seen.lock().unwrap().is_empty()).await;
    assert_eq!(seen.lock().unwrap()[0], Some(obj(json!({"title": "live", "viewers": 3}))));
    a.apply_delta("stream", "7", &obj(json!({"viewers": null}))).unwrap();
    eventually("b has the deletion", || b.get_snapshot("stream", "7").unwrap() == Some(obj(json!({"title": "live"}))))
        .await;
    assert_eq!(b.get_snapshot("stream", "8").unwrap(), None);
    assert!(b.get_snapshot("planet", "1").is_err(), "an unknown entity type is an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_writing_the_same_entities_at_once_end_identical() {
    let ns = unique("sync");
    let a = manager(&ns, "a").await;
    let b = manager(&ns, "b").await;
    let write = |m: StateSyncManager, seed: u64| {
        std::thread::spawn(move || {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for _ in 0..2000 {
                let id = rng.random_range(0..100).to_string();
                let mut d = Map::new();
                d.insert(format!("f{}", rng.random_range(0..4)), json!(rng.random_range(0..1_000_000)));
                if rng.random_bool(0.1) {
                    d.insert("gone".into(), Value::Null);
                }
                m.apply_delta("stream", &id, &d).unwrap();
            }
        })
    };
    let (ta, tb) = (write(a.clone(), 1), write(b.clone(), 2));
    ta.join().unwrap();
    tb.join().unwrap();
    a.flush(Duration::from_secs(20)).await.unwrap();
    b.flush(Duration::from_secs(20)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (sa, sb) = (a.status().await.unwrap(), b.status().await.unwrap());
        if sa.lag == 0 && sb.lag == 0 && sa.received == 2000 && sb.received == 2000 {
            assert_eq!((sa.conflicts, sb.conflicts), (0, 0));
            break;
        }
        assert!(Instant::now() < deadline, "not caught up: {sa:?} {sb:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in 0..100 {
        let id = id.to_string();
        assert_eq!(a.get_snapshot("stream", &id).unwrap(), b.get_snapshot("stream", &id).unwrap(), "entity {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_missed_while_the_subscriber_connection_was_gone_are_read_from_the_log_once() {
    let ns = unique("sync");
    let a = manager(&ns, "a").await;
    let b_redis = RedisClient::connect(&redis_config()).await.unwrap();
    let mut b_opts = SyncOptions::new("b");
    b_opts.namespace = ns.clone();
    b_opts.check_interval = Duration::from_millis(100);
    let b = StateSyncManager::start(b_redis.clone(), b_opts).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let sink = order.clone();
    b.subscribe("stream.delta", move |e| sink.lock().unwrap().push(e.seq)).unwrap();
    for i in 0..50 {
        a.apply_delta("stream", "1", &obj(json!({"n": i}))).unwrap();
    }
    a.flush(Duration::from_secs(5)).await.unwrap();
    eventually("the first 50 arrive", || order.lock().unwrap().len() == 50).await;
    // Drop every pub/sub connection on the server: both clients reconnect, and what was
    // published meanwhile never reached b's subscriber.
    let admin = RedisClient::connect(&redis_config()).await.unwrap();
    admin.command(&["CLIENT".into(), "KILL".into(), "TYPE".into(), "pubsub".into()]).await.unwrap();
    for i in 50..300 {
        a.apply_delta("stream", "1", &obj(json!({"n": i}))).unwrap();
    }
    a.flush(Duration::from_secs(5)).await.unwrap();
    eventually("all 300 arrive", || order.lock().unwrap().len() == 300).await;
    let seqs = order.lock().unwrap().clone();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>(), "each once, in a's order");
    assert_eq!(b.get_snapshot("stream", "1").unwrap(), Some(obj(json!({"n": 299}))));
    let st = b.status().await.unwrap();
    assert_eq!(st.resyncs, 0);
    // Whether any message fell into the gap depends on timing; the reconnect did happen, and
    // whatever it missed came from the log (counted in catch_ups when there was any).
    assert!(b_redis.pubsub_stats().reconnects >= 1, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_starts_after_the_log_was_trimmed_reports_a_resync() {
    let ns = unique("sync");
    let redis = RedisClient::connect(&redis_config()).await.unwrap();
    let mut opts = SyncOptions::new("a");
    opts.namespace = ns.clone();
    opts.log_max_len = 10;
    let a = StateSyncManager::start(redis, opts).await.unwrap();
    for i in 0..1000 {
        a.apply_delta("stream", "1", &obj(json!({"n": i}))).unwrap();
    }
    a.flush(Duration::from_secs(10)).await.unwrap();
    let late = manager(&ns, "late").await;
    // The late instance read the trimmed log at start; its status says so.
    let st = late.status().await.unwrap();
    assert_eq!(st.resyncs, 1, "{st:?}");
    let r = late.recent_resyncs().pop().unwrap();
    assert!(r.reason.contains("no snapshot covers it"), "{}", r.reason);
    assert_eq!((r.expected_seq, r.snapshot_version), (1, None));
    assert!(r.found_seq > 1);
    assert_eq!(late.get_snapshot("stream", "1").unwrap(), Some(obj(json!({"n": 999}))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_applied_or_sent() {
    let ns = unique("sync");
    let a = manager(&ns, "a").await;
    assert!(a.apply_delta("planet", "1", &obj(json!({"x": 1}))).is_err());
    assert!(a.apply_delta("stream", "", &obj(json!({"x": 1}))).is_err());
    let big = obj(json!({"x": "y".repeat(70 * 1024)}));
    assert!(a.apply_delta("stream", "1", &big).unwrap_err().to_string().contains("limit"));
    assert!(a.publish("", json!({})).is_err());
    assert!(a.publish("stream.delta", json!({})).is_err(), ".delta types are reserved");
    assert!(a.publish("stream.started", json!({"x": "y".repeat(70 * 1024)})).is_err());
    assert!(a.subscribe("", |_| {}).is_err());
    a.register_entity_type("board", Strategy::VersionVectors).unwrap();
    assert!(a.register_entity_type("board", Strategy::LastWriterWins).is_err());
    a.flush(Duration::from_secs(5)).await.unwrap();
    let st = a.status().await.unwrap();
    assert_eq!(st.sent, 0, "{st:?}");
    assert_eq!(a.get_snapshot("stream", "1").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_whose_clocks_are_ten_seconds_off_still_agree_on_the_later_write() {
    let ns = unique("sync");
    let start = |instance: &'static str, offset_ms: i64| {
        let ns = ns.clone();
        async move {
            let redis = RedisClient::connect(&redis_config()).await.unwrap();
            let mut opts = SyncOptions::new(instance);
            opts.namespace = ns;
            opts.clock_offset_ms = offset_ms;
            opts.check_interval = Duration::from_millis(50);
            StateSyncManager::start(redis, opts).await.unwrap()
        }
    };
    let fast = start("fast", 10_000).await;
    let slow = start("slow", -10_000).await;
    // The fast clock writes first; the slow one writes after it has seen that write, so its
    // write must win everywhere although its wall clock is 20 s behind.
    fast.apply_delta("stream", "1", &obj(json!({"title": "from fast"}))).unwrap();
    fast.flush(Duration::from_secs(5)).await.unwrap();
    eventually("slow sees the fast write", || {
        slow.get_snapshot("stream", "1").unwrap() == Some(obj(json!({"title": "from fast"})))
    })
    .await;
    slow.apply_delta("stream", "1", &obj(json!({"title": "from slow"}))).unwrap();
    slow.flush(Duration::from_secs(5)).await.unwrap();
    eventually("both keep the later write", || {
        let want = Some(obj(json!({"title": "from slow"})));
        fast.get_snapshot("stream", "1").unwrap() == want && slow.get_snapshot("stream", "1").unwrap() == want
    })
    .await;
    let st = fast.status().await.unwrap();
    assert_eq!(st.rejected, 0, "a 20 s skew is within the default limit: {st:?}");
}
