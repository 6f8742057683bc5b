//! Failovers under load against real processes (`stack.sh --sentinel`): the master is killed
//! with SIGKILL while a client writes in a loop; writes resume on the promoted replica, every
//! write acknowledged after the switch is there, a pattern subscription made before keeps
//! receiving, the old master comes back as a replica and is never written to; session
//! validation and state sync keep working across a failover. The tests run one at a time.

mod support;

use rootstream_db::cache::FailoverEvent;
use rootstream_db::db::migrations;
use rootstream_db::models::session::{DeviceInfo, SessionModel, SessionSettings};
use rootstream_db::sync::{events, StateSyncManager, SyncOptions};
use rootstream_db::{DatabaseManager, Error, ErrorCode, RedisClient};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn role_of(url: &str) -> Option<String> {
    let c = redis::Client::open(url).ok()?;
    let mut conn =
        tokio::time::timeout(Duration::from_secs(1), c.get_multiplexed_async_connection()).await.ok()?.ok()?;
    let v: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.ok()?;
    match v.first() {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

async fn get_direct(url: &str, key: &str) -> Option<String> {
    let c = redis::Client::open(url).unwrap();
    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap()
}

/// Restarts the killed node and waits until the setup is whole again.
fn restore(node: &str) {
    let s = ha_stack();
    s.ha("ha-start", node);
    s.ha("ha-wait", "30");
}

struct Ack {
    i: u64,
    at: Instant,
    master_port: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_the_master_is_killed_and_the_old_master_is_never_written_again() {
    let _g = SERIAL.lock().await;
    let s = ha_stack();
    s.ha("ha-wait", "30");
    let cfg = s.sentinel_config();
    let client = RedisClient::connect(&cfg).await.unwrap();
    let subscriber = RedisClient::connect(&cfg).await.unwrap();
    let old = client.sentinel_master().unwrap();
    let old_node = if old.port == s.ha_port("r1") { "r1" } else { "r2" };
    let new_node = if old_node == "r1" { "r2" } else { "r1" };

    let failovers: Arc<Mutex<Vec<FailoverEvent>>> = Arc::default();
    let sink = failovers.clone();
    let manager = client.sentinel_manager().unwrap().clone();
    manager.on_failover(move |e| sink.lock().unwrap().push(e.clone()));

    let ns = unique("fo");
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    subscriber
        .subscribe(&format!("{ns}.*"), move |m| sink.lock().unwrap().push(m.payload_str().into_owned()))
        .await
        .unwrap();

    // The write loop.
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let errors: Arc<Mutex<Vec<ErrorCode>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, acks, errors, stop, ns) = (client.clone(), acks.clone(), errors.clone(), stop.clone(), ns.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // INCRBY is not idempotent: a lost connection is reported, not retried.
                match c.incr(&format!("{ns}.w.{i}"), i as i64 + 1).await {
                    Ok(_) => {
                        let port = c.sentinel_master().unwrap().port;
                        acks.lock().unwrap().push(Ack { i, at: Instant::now(), master_port: port });
                        i += 1;
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(e.code());
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    eventually("writes before the kill", 10, || acks.lock().unwrap().len() >= 50).await;

    assert_eq!(s.ha("ha-kill", "master"), old_node);
    let killed_at = Instant::now();
    let new_port = s.ha_port(new_node);
    eventually("a write acknowledged by the promoted replica", 30, || {
        acks.lock().unwrap().iter().any(|a| a.master_port == new_port)
    })
    .await;
    let first_new = {
        let a = acks.lock().unwrap();
        a.iter().find(|a| a.master_port == new_port).map(|a| (a.i, a.at)).unwrap()
    };
    let kill_to_write = first_new.1 - killed_at;
    println!("kill -9 of the master -> first acknowledged write on the new master: {kill_to_write:?}");
    assert_eq!(client.sentinel_master().unwrap().port, new_port);
    eventually("the failover callback", 10, || !failovers.lock().unwrap().is_empty()).await;
    {
        let f = failovers.lock().unwrap();
        assert_eq!(f.len(), 1, "one callback per failover, not one per sentinel: {:?}", *f);
        assert_eq!(f[0].old, old);
        assert_eq!(f[0].new.port, new_port);
        println!("sentinels took {} ms from +sdown to +switch-master", f[0].took_ms);
    }
    let codes = errors.lock().unwrap().clone();
    assert!(
        codes.iter().all(|c| matches!(c, ErrorCode::Failover | ErrorCode::Connection | ErrorCode::Timeout)),
        "only retryable errors during the switch: {codes:?}"
    );

    // The subscription made before the failover receives what is published after it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        client.publish(&format!("{ns}.after"), "after-failover").await.ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if got.lock().unwrap().iter().any(|m| m == "after-failover") {
            break;
        }
        assert!(Instant::now() < deadline, "the pattern subscription did not follow the failover");
    }

    // The old master comes back: it claims to be master until Sentinel demotes it, and the
    // client must not write to it meanwhile.
    s.ha("ha-start", old_node);
    let marker = format!("{ns}.marker");
    client.set(&marker, "m", None).await.unwrap();
    let old_url = s.ha_node_url(old_node);
    if role_of(&old_url).await.as_deref() == Some("master") {
        assert_eq!(get_direct(&old_url, &marker).await, None, "a write reached the restarted old master");
    }
    s.ha("ha-wait", "30");
    assert_eq!(role_of(&old_url).await.as_deref(), Some("slave"), "the old master was demoted");
    let before = acks.lock().unwrap().len();
    eventually("writes after the old master is back", 10, || acks.lock().unwrap().len() >= before + 50).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    // Every write acknowledged after the switch is on the new master; none went to the old one.
    let new_url = s.ha_node_url(new_node);
    let acks: Vec<Ack> = std::mem::take(&mut *acks.lock().unwrap());
    let after: Vec<&Ack> = acks.iter().filter(|a| a.i >= first_new.0).collect();
    assert!(after.iter().all(|a| a.master_port == new_port), "an acknowledged write went to the old master");
    let c = redis::Client::open(new_url.as_str()).unwrap();
    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
    for a in &after {
        let v: Option<i64> = redis::cmd("GET").arg(format!("{ns}.w.{}", a.i)).query_async(&mut conn).await.unwrap();
        assert_eq!(v, Some(a.i as i64 + 1), "write {} acknowledged after the switch is missing", a.i);
    }
    println!(
        "{} writes before the kill, {} acknowledged after the switch, {} errors during it",
        first_new.0,
        after.len(),
        codes.len()
    );
    assert_eq!(client.sentinel_master().unwrap().port, new_port);
    assert!(client.master_switches() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_validation_keeps_working_across_a_failover() {
    let _g = SERIAL.lock().await;
    let s = ha_stack();
    s.ha("ha-wait", "30");
    let mut cfg = fresh_config().await;
    let sc = s.sentinel_config();
    for k in ["redis_sentinels", "redis_master_name", "redis_sentinel_password", "redis_master_password"] {
        let v = match k {
            "redis_sentinels" => sc.redis_sentinels.join(","),
            "redis_master_name" => sc.redis_master_name.clone().unwrap(),
            "redis_sentinel_password" => sc.redis_sentinel_password.clone().unwrap(),
            _ => sc.redis_master_password.clone().unwrap(),
        };
        cfg.set(k, &v).unwrap();
    }
    cfg.set("redis_timeout_ms", "500").unwrap();
    // An explicit redis_url would mean a direct connection.
    cfg.set("redis_url", "").unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    let redis = RedisClient::new(&cfg).unwrap();
    assert!(redis.sentinel_master().is_some(), "the session cache goes through Sentinel");
    let uid: i64 = db
        .query("INSERT INTO users (username, email, password_hash) VALUES ('fo', 'fo@x.io', 'x') RETURNING id", &[])
        .await
        .unwrap()[0]
        .get(0);
    let sessions = SessionModel::new(db.clone(), redis.clone(), SessionSettings::from_config(&cfg));
    let d = DeviceInfo { fingerprint: "fp".into(), ..Default::default() };
    let a = sessions.create(uid, &d, false, false).await.unwrap();
    sessions.validate(a.token.expose(), "fp", false).await.unwrap();
    let old = redis.sentinel_master().unwrap();

    let killed = s.ha("ha-kill", "master");
    // Validation answers throughout: from Redis when it can, from PostgreSQL otherwise.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut checks = 0;
    while redis.sentinel_master().as_ref() == Some(&old) || checks < 5 {
        sessions.validate(a.token.expose(), "fp", false).await.unwrap();
        checks += 1;
        assert!(Instant::now() < deadline, "the client did not follow the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = sessions.create(uid, &d, false, false).await.unwrap();
    sessions.validate(b.token.expose(), "fp", false).await.unwrap();
    sessions.validate(a.token.expose(), "fp", false).await.unwrap();
    sessions.revoke(b.session.id, Some("logout")).await.unwrap();
    assert!(matches!(sessions.validate(b.token.expose(), "fp", false).await, Err(Error::Auth(_))));
    println!("{checks} validations during the failover, stats {:?}", sessions.stats());
    restore(&killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_sync_publish_and_subscribe_follow_a_failover() {
    let _g = SERIAL.lock().await;
    let s = ha_stack();
    s.ha("ha-wait", "30");
    let ns = unique("sy");
    let start = |instance: &'static str| {
        let ns = ns.clone();
        async move {
            let redis = RedisClient::connect(&ha_stack().sentinel_config()).await.unwrap();
            let mut opts = SyncOptions::new(instance);
            opts.namespace = ns;
            opts.check_interval = Duration::from_millis(100);
            StateSyncManager::start(redis, opts).await.unwrap()
        }
    };
    let a = start("a").await;
    let b = start("b").await;
    let got: Arc<Mutex<Vec<i64>>> = Arc::default();
    let sink = got.clone();
    b.subscribe("stream.*", move |e| {
        if let Some(n) = e.payload.get("n").and_then(|v| v.as_i64()) {
            sink.lock().unwrap().push(n);
        }
    })
    .unwrap();
    a.publish(events::STREAM_STARTED, json!({"id": 1, "n": 0})).unwrap();
    eventually("an event before the failover", 10, || got.lock().unwrap().contains(&0)).await;

    let killed = s.ha("ha-kill", "master");
    let killed_at = Instant::now();
    // Publish through the failover; events published after it must arrive.
    let mut n = 1;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let _ = a.publish(events::STREAM_STARTED, json!({"id": 1, "n": n}));
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let switched =
            killed_at.elapsed() > Duration::from_secs(1) && got.lock().unwrap().iter().any(|v| *v > 1 && *v >= n - 10);
        if switched {
            break;
        }
        assert!(Instant::now() < deadline, "state sync did not follow the failover (got {:?})", got.lock().unwrap());
    }
    let marker = n + 1000;
    a.publish(events::STREAM_STARTED, json!({"id": 1, "n": marker})).unwrap();
    eventually("an event after the failover", 15, || got.lock().unwrap().contains(&marker)).await;
    println!("state sync: {} events seen by b across the failover", got.lock().unwrap().len());
    a.close();
    b.close();
    restore(&killed);
}
