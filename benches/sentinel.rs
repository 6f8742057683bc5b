//! Redis Sentinel benchmarks against the stack's master, replica and three sentinels
//! (`stack.sh --sentinel`), each figure beside a baseline measured in the same run:
//! - follow delay: from `+switch-master` (as a raw subscription on a sentinel sees it) to the
//!   first successful write of our Sentinel-configured client, beside a plain `redis` crate
//!   client that, on any error, asks the sentinels again for the master (with a ROLE check, as
//!   redis-rs's own sentinel client does on every connect) and reconnects, written in a 1 ms loop;
//!   the master is killed with SIGKILL, three rounds;
//! - GET throughput of a Sentinel-configured client vs a direct client of the same master.
//!
//! Run with `scripts/bench.sh --bench sentinel`.

#[path = "../tests/support/mod.rs"]
mod support;

use futures_util::StreamExt;
use rootstream_db::RedisClient;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const ROUNDS: usize = 3;
const GET_SECONDS: u64 = 3;
const GET_TASKS: usize = 8;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The baseline: ask each sentinel for the master, check ROLE, connect.
async fn resolve_and_connect(s: &Stack) -> Option<redis::aio::MultiplexedConnection> {
    let spw = s.var("ROOTSTREAM_REDIS_SENTINEL_PASSWORD");
    let mpw = s.var("ROOTSTREAM_REDIS_MASTER_PASSWORD");
    let name = s.var("ROOTSTREAM_REDIS_MASTER_NAME");
    for addr in s.var("ROOTSTREAM_REDIS_SENTINELS").split(',') {
        let ask = async {
            let c = redis::Client::open(format!("redis://:{spw}@{addr}/")).ok()?;
            let mut conn = c.get_multiplexed_async_connection().await.ok()?;
            let (host, port): (String, String) =
                redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(name).query_async(&mut conn).await.ok()?;
            let m = redis::Client::open(format!("redis://:{mpw}@{host}:{port}/")).ok()?;
            let mut mc = m.get_multiplexed_async_connection().await.ok()?;
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut mc).await.ok()?;
            (role.first() == Some(&redis::Value::BulkString(b"master".to_vec()))).then_some(mc)
        };
        if let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(500), ask).await {
            return Some(c);
        }
    }
    None
}

async fn follow_round(s: &'static Stack, round: usize) -> (f64, f64) {
    s.ha("ha-wait", "30");
    let ours = RedisClient::connect(&s.sentinel_config()).await.unwrap();
    let ns = unique("bs");
    // The raw +switch-master observer.
    let switched: Arc<Mutex<Option<Instant>>> = Arc::default();
    let sw = switched.clone();
    let first = s.var("ROOTSTREAM_REDIS_SENTINELS").split(',').next().unwrap().to_string();
    let spw = s.var("ROOTSTREAM_REDIS_SENTINEL_PASSWORD").to_string();
    let mut ps = redis::Client::open(format!("redis://:{spw}@{first}/")).unwrap().get_async_pubsub().await.unwrap();
    ps.subscribe("+switch-master").await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut st = ps.into_on_message();
        if st.next().await.is_some() {
            *sw.lock().unwrap() = Some(Instant::now());
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let ours_first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let base_first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let old_port = ours.sentinel_master().unwrap().port;
    // Our client's write loop.
    let t1 = {
        let (stop, first, sw, c, ns) = (stop.clone(), ours_first.clone(), switched.clone(), ours.clone(), ns.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if c.set(&format!("{ns}.o"), i.to_string(), None).await.is_ok()
                    && sw.lock().unwrap().is_some()
                    && c.sentinel_master().map(|m| m.port) != Some(old_port)
                {
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    // The baseline's write loop.
    let t2 = {
        let (stop, first, sw, ns) = (stop.clone(), base_first.clone(), switched.clone(), ns.clone());
        tokio::spawn(async move {
            let mut conn = resolve_and_connect(s).await;
            let mut on_old = true;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let ok = match conn.as_mut() {
                    Some(c) => tokio::time::timeout(
                        Duration::from_millis(1000),
                        redis::cmd("SET").arg(format!("{ns}.b")).arg(i).query_async::<()>(c),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok()),
                    None => false,
                };
                if ok {
                    if !on_old && sw.lock().unwrap().is_some() {
                        first.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                } else {
                    conn = resolve_and_connect(s).await;
                    on_old = false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = s.ha("ha-kill", "master");
    let deadline = Instant::now() + Duration::from_secs(30);
    while (ours_first.lock().unwrap().is_none() || base_first.lock().unwrap().is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = t1.await;
    let _ = t2.await;
    watcher.abort();
    let sw = switched.lock().unwrap().expect("+switch-master seen");
    let ours_ms = ours_first.lock().unwrap().map(|t| t.saturating_duration_since(sw).as_secs_f64() * 1000.0);
    let base_ms = base_first.lock().unwrap().map(|t| t.saturating_duration_since(sw).as_secs_f64() * 1000.0);
    println!(
        "  round {}: +switch-master -> first write: ours {:.1} ms, re-asking baseline {:.1} ms",
        round + 1,
        ours_ms.unwrap_or(f64::NAN),
        base_ms.unwrap_or(f64::NAN)
    );
    s.ha("ha-start", &killed);
    s.ha("ha-wait", "30");
    (ours_ms.unwrap_or(f64::NAN), base_ms.unwrap_or(f64::NAN))
}

async fn gets_per_second(c: &RedisClient, key: &str) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(GET_SECONDS);
    let tasks: Vec<_> = (0..GET_TASKS)
        .map(|_| {
            let (c, count, key) = (c.clone(), count.clone(), key.to_string());
            tokio::spawn(async move {
                while Instant::now() < until {
                    c.get(&key).await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / GET_SECONDS as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let s = ha_stack();
        s.ha("ha-wait", "30");
        println!("sentinel benchmark ({ROUNDS} failovers by SIGKILL of the master; quorum 2, down-after 1000 ms)");
        let mut ours = Vec::new();
        let mut base = Vec::new();
        for r in 0..ROUNDS {
            let (o, b) = follow_round(s, r).await;
            ours.push(o);
            base.push(b);
        }
        let (mo, mb) = (median(&mut ours), median(&mut base));
        println!(
            "follow delay after +switch-master (median of {ROUNDS}): ours {mo:.1} ms, re-asking baseline {mb:.1} ms, \
             ours/baseline {:.2} (target: ours < 100 ms)",
            mo / mb
        );

        // GET throughput, sentinel-configured vs direct, alternating runs.
        let sc = RedisClient::connect(&s.sentinel_config()).await.unwrap();
        let master = sc.sentinel_master().unwrap();
        let direct = RedisClient::open(
            &format!("redis://:{}@{}/", s.var("ROOTSTREAM_REDIS_MASTER_PASSWORD"), master),
            Duration::from_secs(2),
        )
        .unwrap();
        let key = unique("bget");
        direct.set(&key, "x".repeat(64), None).await.unwrap();
        let (mut d, mut t) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            d.push(gets_per_second(&direct, &key).await);
            t.push(gets_per_second(&sc, &key).await);
        }
        let (md, mt) = (median(&mut d), median(&mut t));
        println!(
            "GET throughput ({GET_TASKS} tasks, median of 3 x {GET_SECONDS} s): sentinel-configured {mt:.0}/s, \
             direct {md:.0}/s, ratio {:.3} (target >= 0.95)",
            mt / md
        );
    });
}
