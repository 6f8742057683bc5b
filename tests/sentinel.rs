//! RedisSentinelManager against real sentinels (`stack.sh --sentinel`): discovery with the ROLE
//! check, listing, one sentinel down, all sentinels down, unknown master name, wrong passwords,
//! and a Sentinel-configured RedisClient. Failovers are in `sentinel_failover.rs`.

mod support;

use rootstream_db::cache::RedisSentinelManager;
use rootstream_db::{Error, RedisClient};
use std::time::{Duration, Instant};
use support::*;

// Stopping a sentinel must not overlap the tests that count the sentinels.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn r1_r2_ports() -> [u16; 2] {
    [ha_stack().ha_port("r1"), ha_stack().ha_port("r2")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_the_master_and_confirms_it_with_role() {
    let _g = SERIAL.lock().await;
    let m = RedisSentinelManager::open(&ha_stack().sentinel_config()).await.unwrap();
    let master = m.master_addr().await.unwrap();
    assert_eq!(master.host, "127.0.0.1");
    assert!(r1_r2_ports().contains(&master.port), "{master}");
    assert_eq!(m.current_master(), Some(master.clone()));
    // The address really is a master.
    let c =
        redis::Client::open(ha_stack().ha_node_url(if master.port == r1_r2_ports()[0] { "r1" } else { "r2" })).unwrap();
    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.unwrap();
    assert_eq!(role[0], redis::Value::BulkString(b"master".to_vec()));
    // Subscriptions come up on all three sentinels.
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.subscribed_count() < 3 {
        assert!(Instant::now() < deadline, "subscribed to {} sentinels", m.subscribed_count());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_replicas_and_sentinels() {
    let _g = SERIAL.lock().await;
    let m = RedisSentinelManager::open(&ha_stack().sentinel_config()).await.unwrap();
    let master = m.master_addr().await.unwrap();
    let replicas = m.replicas().await.unwrap();
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    assert_ne!(replicas[0].port, master.port);
    assert!(r1_r2_ports().contains(&replicas[0].port));
    assert!(replicas[0].flags.contains("slave"), "{replicas:?}");
    // A sentinel lists the other two.
    let sentinels = m.sentinels().await.unwrap();
    assert_eq!(sentinels.len(), 2, "{sentinels:?}");
    let status = m.sentinel_status().await;
    assert_eq!(status.len(), 3);
    assert!(status.iter().all(|s| s.answers && s.master.as_deref() == Some(master.to_string().as_str())), "{status:?}");
    let json = serde_json::to_string(&replicas).unwrap();
    assert!(json.contains("\"port\""), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sentinel_down_discovery_still_works() {
    let _g = SERIAL.lock().await;
    let s = ha_stack();
    assert_eq!(s.ha("ha-kill", "s1"), "s1");
    let started = Instant::now();
    let r = RedisSentinelManager::open(&s.sentinel_config()).await;
    let took = started.elapsed();
    let status = match &r {
        Ok(m) => Some(m.sentinel_status().await),
        Err(_) => None,
    };
    s.ha("ha-start", "s1");
    s.ha("ha-wait", "30");
    let m = r.expect("discovery with one sentinel down");
    assert!(m.current_master().is_some());
    assert!(took < Duration::from_secs(3), "{took:?}");
    let status = status.unwrap();
    assert!(!status[0].answers, "{status:?}");
    assert!(status[1].answers && status[2].answers, "{status:?}");
    // The client works through the remaining sentinels as well.
    let c = RedisClient::with_sentinel(m).unwrap();
    c.set(&unique("one-down"), "v", Some(Duration::from_secs(30))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_sentinels_down_is_a_clear_error_bounded_in_time() {
    let mut cfg = ha_stack().sentinel_config();
    let dead: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", closed_port())).collect();
    cfg.set("redis_sentinels", &dead.join(",")).unwrap();
    cfg.set("redis_timeout_ms", "500").unwrap();
    let started = Instant::now();
    let err = RedisSentinelManager::open(&cfg).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Connection(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("no sentinel") && text.contains(&dead[0]), "{text}");
    assert!(took < Duration::from_secs(3), "3 sentinels x 500 ms bound, took {took:?}");
    // The client reports the same error at creation.
    let err = RedisClient::new(&cfg).unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_master_name_is_not_found() {
    let mut cfg = ha_stack().sentinel_config();
    cfg.set("redis_master_name", "no-such-master").unwrap();
    let err = RedisSentinelManager::open(&cfg).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    assert!(err.to_string().contains("no-such-master"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_auth_errors() {
    let mut cfg = ha_stack().sentinel_config();
    cfg.set("redis_sentinel_password", "wrong-sentinel-pw").unwrap();
    let err = RedisSentinelManager::open(&cfg).await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err}");
    assert!(err.to_string().contains("redis_sentinel_password"), "{err}");
    assert!(!err.to_string().contains("wrong-sentinel-pw"), "{err}");

    let mut cfg = ha_stack().sentinel_config();
    cfg.set("redis_master_password", "wrong-master-pw").unwrap();
    let err = RedisSentinelManager::open(&cfg).await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err}");
    assert!(err.to_string().contains("redis_master_password"), "{err}");
    assert!(!err.to_string().contains("wrong-master-pw"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_configured_client_works_like_a_direct_one() {
    let cfg = ha_stack().sentinel_config();
    let c = RedisClient::connect(&cfg).await.unwrap();
    let master = c.sentinel_master().expect("uses sentinel");
    assert!(r1_r2_ports().contains(&master.port));
    let ns = unique("sc");
    c.set(&format!("{ns}.k"), "v", Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(c.get(&format!("{ns}.k")).await.unwrap().as_deref(), Some("v"));
    let replies = c
        .exec_atomic(&[vec!["SET".into(), format!("{ns}.a"), "1".into()], vec!["INCR".into(), format!("{ns}.a")]])
        .await
        .unwrap();
    assert_eq!(replies[1], serde_json::json!(2));
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    c.subscribe(&format!("{ns}.*"), move |m| sink.lock().unwrap().push(m.payload_str().into_owned())).await.unwrap();
    c.publish(&format!("{ns}.x"), "hello").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(format!("{c:?}").contains("sentinel master"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsdb_health_shows_the_master_its_replica_and_which_sentinels_answer() {
    let _g = SERIAL.lock().await;
    let s = ha_stack();
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rsdb"));
        cmd.arg("health");
        if json {
            cmd.arg("--json");
        }
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ROOTSTREAM_")) {
            cmd.env_remove(k);
        }
        cmd.env("ROOTSTREAM_DATABASE_URL", s.admin_url());
        for k in [
            "ROOTSTREAM_REDIS_SENTINELS",
            "ROOTSTREAM_REDIS_MASTER_NAME",
            "ROOTSTREAM_REDIS_SENTINEL_PASSWORD",
            "ROOTSTREAM_REDIS_MASTER_PASSWORD",
        ] {
            cmd.env(k, s.var(k));
        }
        cmd.output().unwrap()
    };
    let out = run(false);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sentinel: master \"rsdbmaster\" at 127.0.0.1:"), "{text}");
    assert!(text.contains("(3/3 sentinels answer)"), "{text}");
    assert!(text.contains("  replica 127.0.0.1:"), "{text}");
    assert!(!text.contains(s.var("ROOTSTREAM_REDIS_MASTER_PASSWORD")), "no password in the output");
    let out = run(true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sentinel"]["answering"], 3, "{v}");
    assert_eq!(v["sentinel"]["replicas"].as_array().unwrap().len(), 1, "{v}");
}
