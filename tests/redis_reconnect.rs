//! The Redis client survives a server restart: commands work again and subscriptions are
//! renewed. Kept in its own test binary because it stops the stack's Redis.

mod support;

use rootstream_db::RedisClient;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_subscriptions_recover_after_the_server_restarts() {
    let r = RedisClient::connect(&redis_config()).await.unwrap();
    let ns = unique("rc");
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = got.clone();
    r.subscribe(&format!("{ns}.*"), move |m| sink.lock().unwrap().push(m.payload_str().into_owned())).await.unwrap();
    r.set(&format!("{ns}.k"), "before", None).await.unwrap();

    stack().redis_stop();
    let err = r.get(&format!("{ns}.k")).await;
    assert!(err.is_err(), "a command while the server is down fails");
    stack().redis_start();

    // The server kept nothing (no persistence); writing and reading again must work.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match r.set(&format!("{ns}.k"), "after", None).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "no reconnect within 10 s: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(r.get(&format!("{ns}.k")).await.unwrap().as_deref(), Some("after"));

    // The subscription is renewed once the subscriber connection is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        r.publish(&format!("{ns}.ping"), "after-restart").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if got.lock().unwrap().iter().any(|m| m == "after-restart") {
            break;
        }
        assert!(Instant::now() < deadline, "subscription not renewed within 10 s");
    }
    assert!(r.pubsub_stats().reconnects >= 1);
}
