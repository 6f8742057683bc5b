//! RedisClient against a real Redis: TTL, hashes, lists, MULTI/EXEC, pub/sub with patterns.

mod support;

use rootstream_db::{Config, Error, RedisClient};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

async fn client() -> RedisClient {
    RedisClient::connect(&redis_config()).await.unwrap()
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_a_ttl_expires() {
    let r = client().await;
    let k = unique("ttl");
    r.set(&k, "v", Some(Duration::from_millis(150))).await.unwrap();
    assert_eq!(r.get(&k).await.unwrap().as_deref(), Some("v"));
    let left = r.ttl(&k).await.unwrap().expect("has an expiry");
    assert!(left <= Duration::from_millis(150) && left > Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(r.get(&k).await.unwrap(), None);
    assert!(matches!(r.ttl(&k).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_and_ttl_follow_redis_semantics() {
    let r = client().await;
    let k = unique("exp");
    assert!(!r.expire(&k, Duration::from_secs(5)).await.unwrap(), "a missing key cannot expire");
    r.set(&k, "v", None).await.unwrap();
    assert_eq!(r.ttl(&k).await.unwrap(), None, "no expiry yet");
    assert!(r.expire(&k, Duration::from_secs(5)).await.unwrap());
    assert!(r.ttl(&k).await.unwrap().unwrap() > Duration::from_secs(4));
    assert!(r.exists(&k).await.unwrap());
    assert!(r.del(&k).await.unwrap());
    assert!(!r.del(&k).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_lists_and_counters_work() {
    let r = client().await;
    let h = unique("h");
    assert!(r.hset(&h, "a", "1").await.unwrap());
    assert!(!r.hset(&h, "a", "2").await.unwrap(), "updating a field is not new");
    r.hset(&h, "b", "x").await.unwrap();
    assert_eq!(r.hget(&h, "a").await.unwrap().as_deref(), Some("2"));
    assert_eq!(r.hget(&h, "zz").await.unwrap(), None);
    let all = r.hgetall(&h).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["b"], "x");
    assert!(r.hdel(&h, "a").await.unwrap());

    let l = unique("l");
    assert_eq!(r.rpush(&l, "b").await.unwrap(), 1);
    assert_eq!(r.rpush(&l, "c").await.unwrap(), 2);
    assert_eq!(r.lpush(&l, "a").await.unwrap(), 3);
    assert_eq!(r.lrange(&l, 0, -1).await.unwrap(), vec!["a", "b", "c"]);
    assert_eq!(r.lpop(&l).await.unwrap().as_deref(), Some("a"));
    assert_eq!(r.rpop(&l).await.unwrap().as_deref(), Some("c"));
    assert_eq!(r.llen(&l).await.unwrap(), 1);

    let c = unique("c");
    assert_eq!(r.incr(&c, 5).await.unwrap(), 5);
    assert_eq!(r.incr(&c, -2).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_applies_all_commands_atomically() {
    let r = client().await;
    let a = unique("a");
    let n = unique("n");
    let replies = r
        .exec_atomic(&[
            vec!["SET".into(), a.clone(), "1".into()],
            vec!["INCRBY".into(), n.clone(), "3".into()],
            vec!["GET".into(), a.clone()],
        ])
        .await
        .unwrap();
    assert_eq!(json!(replies), json!(["OK", 3, "1"]));
    // A command that fails inside EXEC does not undo the others (Redis semantics); a command
    // that Redis rejects while queueing aborts the whole transaction.
    let err = r.exec_atomic(&[vec!["SET".into(), a.clone(), "2".into()], vec!["NOSUCHCOMMAND".into()]]).await;
    assert!(err.is_err());
    assert_eq!(r.get(&a).await.unwrap().as_deref(), Some("1"), "aborted transaction changed nothing");
    assert_eq!(r.command(&["STRLEN".into(), a.clone()]).await.unwrap(), json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscription_receives_matching_channels_only() {
    let r = client().await;
    let ns = unique("ev");
    let got = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let sink = got.clone();
    let id = r
        .subscribe(&format!("{ns}.stream.*"), move |m| {
            sink.lock().unwrap().push((m.channel.clone(), m.payload_str().into_owned()))
        })
        .await
        .unwrap();
    let receivers = r.publish(&format!("{ns}.stream.started"), r#"{"id":1}"#).await.unwrap();
    assert_eq!(receivers, 1);
    r.publish(&format!("{ns}.user.updated"), "no").await.unwrap();
    r.publish(&format!("{ns}.stream.stopped"), r#"{"id":1}"#).await.unwrap();
    wait_for("two stream events", || got.lock().unwrap().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got_now = got.lock().unwrap().clone();
    assert_eq!(
        got_now,
        vec![
            (format!("{ns}.stream.started"), r#"{"id":1}"#.to_string()),
            (format!("{ns}.stream.stopped"), r#"{"id":1}"#.to_string())
        ]
    );

    r.unsubscribe(id).await.unwrap();
    r.publish(&format!("{ns}.stream.started"), "after").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(got.lock().unwrap().len(), 2, "no delivery after unsubscribe");
    assert!(matches!(r.unsubscribe(id).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_within_the_timeout() {
    let mut cfg = Config::default();
    cfg.set("redis_url", &format!("redis://127.0.0.1:{}/", closed_port())).unwrap();
    cfg.set("redis_timeout_ms", "500").unwrap();
    let started = Instant::now();
    let err = RedisClient::connect(&cfg).await.unwrap_err();
    assert!(matches!(err, Error::Connection(_) | Error::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_returns_each_reply_and_a_refused_batch_runs_nothing() {
    let r = client().await;
    let (a, h, b) = (unique("a"), unique("h"), unique("b"));
    let cmds = rootstream_db::cache::client::parse_commands(
        &json!([["SET", a, "5"], ["INCRBY", a, 10], ["GET", a], ["HSET", h, "f", "v"]]).to_string(),
    )
    .unwrap();
    assert_eq!(
        json!(r.exec_atomic(&cmds).await.unwrap()),
        json!(["OK", 15, "15", 1]),
        "numbers given as JSON numbers too"
    );
    assert_eq!(r.get(&a).await.unwrap().as_deref(), Some("15"));
    assert!(r.exec_atomic(&[]).await.unwrap().is_empty());
    let nested = r.exec_atomic(&[vec!["SET".into(), b.clone(), "1".into()], vec!["MULTI".into()]]).await;
    assert!(matches!(nested, Err(Error::InvalidArgument(_))), "{nested:?}");
    assert_eq!(r.get(&b).await.unwrap(), None, "nothing of a refused batch runs");
    assert!(matches!(rootstream_db::cache::client::parse_commands(r#"{"SET":"x"}"#), Err(Error::Json(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_one_pattern_keeps_the_clients_other_subscriptions() {
    let r = client().await;
    let publisher = client().await;
    let ns = unique("unsub");
    let stopped = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = Arc::new(Mutex::new(Vec::<String>::new()));
    let (s1, s2) = (stopped.clone(), kept.clone());
    let stopped_id = r
        .subscribe(&format!("{ns}.stream.*"), move |m| s1.lock().unwrap().push(m.payload_str().into_owned()))
        .await
        .unwrap();
    let kept_id =
        r.subscribe(&format!("{ns}.*"), move |m| s2.lock().unwrap().push(m.payload_str().into_owned())).await.unwrap();
    publisher.publish(&format!("{ns}.stream.a"), "one").await.unwrap();
    wait_for("the first message", || stopped.lock().unwrap().len() == 1).await;
    r.unsubscribe(stopped_id).await.unwrap();
    publisher.publish(&format!("{ns}.stream.a"), "two").await.unwrap();
    wait_for("the second message on the kept pattern", || kept.lock().unwrap().iter().any(|p| p == "two")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*stopped.lock().unwrap(), ["one"]);
    assert_eq!(r.pubsub_stats().subscriptions, 1);
    r.unsubscribe(kept_id).await.unwrap();
    assert_eq!(r.pubsub_stats().subscriptions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_key_and_value_round_trip_and_hostile_text_is_kept_verbatim() {
    let r = client().await;
    let mib = "y".repeat(1 << 20);
    let k = format!("{}{mib}", unique("big"));
    r.set(&k, &mib, Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(r.get(&k).await.unwrap().as_deref(), Some(mib.as_str()));
    for s in ["'; DROP TABLE users; --", "\"]}, {\"injected\": true}, [\"", "ünïcødé 日本語 🎮", "line1\nline2\ttab"]
    {
        let k = format!("{}{s}", unique("hostile"));
        r.set(&k, s, Some(Duration::from_secs(30))).await.unwrap();
        assert_eq!(r.get(&k).await.unwrap().as_deref(), Some(s));
    }
}
