//! Foundation benchmarks: each figure is printed beside a raw baseline measured in the same run
//! against the same private servers, as a ratio (ours / raw). Not a timed test: nothing here
//! passes or fails on speed.
//!
//! Run with `scripts/bench.sh` (builds in release mode and starts a private stack).

#[path = "../tests/support/mod.rs"]
mod support;

use rootstream_db::{Config, DatabaseManager, RedisClient};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

struct Figure {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn figure(total: usize, elapsed: Duration, mut lat: Vec<Duration>) -> Figure {
    lat.sort();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    Figure { ops_per_sec: total as f64 / elapsed.as_secs_f64(), p50: pick(0.50), p99: pick(0.99) }
}

fn report(name: &str, ours: &Figure, raw: &Figure) {
    println!(
        "{name:<44} ours {:>9.0}/s p50 {:>6.0}µs p99 {:>6.0}µs | raw {:>9.0}/s p50 {:>6.0}µs p99 {:>6.0}µs | ratio {:.2}",
        ours.ops_per_sec,
        ours.p50.as_secs_f64() * 1e6,
        ours.p99.as_secs_f64() * 1e6,
        raw.ops_per_sec,
        raw.p50.as_secs_f64() * 1e6,
        raw.p99.as_secs_f64() * 1e6,
        ours.ops_per_sec / raw.ops_per_sec
    );
}

/// Runs `per_worker` operations on each of `workers` tasks; returns throughput and latencies.
async fn drive<F, Fut>(workers: usize, per_worker: usize, op: F) -> Figure
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let t = Instant::now();
                op(w, i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    figure(workers * per_worker, started.elapsed(), all)
}

async fn raw_pg(url: &str) -> Arc<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    Arc::new(client)
}

async fn bench_postgres(cfg: &Config) {
    let url = cfg.database_url.clone().unwrap();
    for &workers in &[1usize, 8] {
        let per = if workers == 1 { 5_000 } else { 2_500 };
        let mut c = cfg.clone();
        c.set("pool_size", &workers.to_string()).unwrap();
        let db = DatabaseManager::connect(&c).await.unwrap();
        let mut raws = Vec::new();
        for _ in 0..workers {
            raws.push(raw_pg(&url).await);
        }
        let stmts: Vec<_> = futures_util::future::join_all(raws.iter().map(|r| r.prepare("SELECT $1::int4"))).await;
        let stmts: Arc<Vec<_>> = Arc::new(stmts.into_iter().map(|s| s.unwrap()).collect());
        let raws = Arc::new(raws);
        // Warm both paths once so connection setup is not measured.
        drive(workers, 50, {
            let db = db.clone();
            move |_, i| {
                let db = db.clone();
                async move {
                    db.query("SELECT $1::int4", &[&(i as i32)]).await.unwrap();
                }
            }
        })
        .await;
        let raw = drive(workers, per, {
            let raws = raws.clone();
            let stmts = stmts.clone();
            move |w, i| {
                let raws = raws.clone();
                let stmts = stmts.clone();
                async move {
                    raws[w].query(&stmts[w], &[&(i as i32)]).await.unwrap();
                }
            }
        })
        .await;
        let ours = drive(workers, per, {
            let db = db.clone();
            move |_, i| {
                let db = db.clone();
                async move {
                    db.query("SELECT $1::int4", &[&(i as i32)]).await.unwrap();
                }
            }
        })
        .await;
        let label = if workers == 1 {
            "pooled SELECT, 1 client (raw: 1 connection)".to_string()
        } else {
            format!("pooled SELECT, {workers} clients (raw: {workers} conns)")
        };
        report(&label, &ours, &raw);
    }

    // INSERT with synchronous commit: ours through the pool, raw through direct connections.
    let workers = 8;
    let per = 1_000;
    let mut c = cfg.clone();
    c.set("pool_size", "8").unwrap();
    let db = DatabaseManager::connect(&c).await.unwrap();
    db.batch_execute("CREATE TABLE IF NOT EXISTS bench_rows (id BIGSERIAL PRIMARY KEY, body TEXT)").await.unwrap();
    let mut raws = Vec::new();
    for _ in 0..workers {
        raws.push(raw_pg(&url).await);
    }
    let stmts: Vec<_> =
        futures_util::future::join_all(raws.iter().map(|r| r.prepare("INSERT INTO bench_rows (body) VALUES ($1)")))
            .await;
    let stmts: Arc<Vec<_>> = Arc::new(stmts.into_iter().map(|s| s.unwrap()).collect());
    let raws = Arc::new(raws);
    let raw = drive(workers, per, move |w, _| {
        let raws = raws.clone();
        let stmts = stmts.clone();
        async move {
            raws[w].execute(&stmts[w], &[&"payload"]).await.unwrap();
        }
    })
    .await;
    let ours = drive(workers, per, move |_, _| {
        let db = db.clone();
        async move {
            db.execute("INSERT INTO bench_rows (body) VALUES ($1)", &[&"payload"]).await.unwrap();
        }
    })
    .await;
    report("INSERT, 8 clients", &ours, &raw);
}

async fn bench_redis(cfg: &Config) {
    let url = cfg.redis_url.clone().unwrap();
    let ours_client = RedisClient::connect(cfg).await.unwrap();
    let key = unique("bench");
    ours_client.set(&key, "x".repeat(100), None).await.unwrap();
    let raw_client = redis::Client::open(url.as_str()).unwrap();
    let raw_conn = raw_client.get_multiplexed_async_connection().await.unwrap();
    for &workers in &[1usize, 50] {
        let per = if workers == 1 { 10_000 } else { 2_000 };
        let raw = drive(workers, per, {
            let raw_conn = raw_conn.clone();
            let key = key.clone();
            move |_, _| {
                let mut c = raw_conn.clone();
                let key = key.clone();
                async move {
                    let _: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut c).await.unwrap();
                }
            }
        })
        .await;
        let ours = drive(workers, per, {
            let r = ours_client.clone();
            let key = key.clone();
            move |_, _| {
                let r = r.clone();
                let key = key.clone();
                async move {
                    r.get(&key).await.unwrap();
                }
            }
        })
        .await;
        report(&format!("Redis GET, {workers} concurrent (raw: redis crate)"), &ours, &raw);
    }
}

fn main() {
    // The library's own runtime: the one every C and C++ call runs on.
    rootstream_db::runtime::runtime().block_on(async {
        let cfg = fresh_config().await;
        println!("rootstream-db foundation benchmarks (2 worker threads, servers on loopback)");
        bench_postgres(&cfg).await;
        bench_redis(&cfg).await;
    });
}
