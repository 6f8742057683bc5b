//! Model benchmarks beside a raw INSERT baseline from the same run: user registration and login
//! (bounded by the Argon2id cost, which is printed), and event appends.
//!
//! Run with `scripts/bench.sh --bench models`.

#[path = "../tests/support/mod.rs"]
mod support;

use rootstream_db::crypto::password;
use rootstream_db::db::migrations;
use rootstream_db::events::{EventStore, NewEvent};
use rootstream_db::models::{NewUser, UserModel};
use rootstream_db::DatabaseManager;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn pct(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 * q) as usize).min(v.len() - 1)).copied().unwrap_or_default()
}

async fn timed_workers<F, Fut>(workers: usize, per: usize, op: F) -> (f64, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..workers {
        let op = op.clone();
        let counter = counter.clone();
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..per {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in hs {
        all.extend(h.await.unwrap());
    }
    ((workers * per) as f64 / started.elapsed().as_secs_f64(), all)
}

fn line(name: &str, ours: (f64, Vec<Duration>), raw: f64) {
    // `raw` is a prepared INSERT of a comparable row at the same concurrency.
    let (rate, lat) = ours;
    println!(
        "{name:<40} ours {rate:>9.0}/s p50 {:>7.2}ms p99 {:>7.2}ms | raw INSERT {raw:>7.0}/s | ratio {:.3}",
        pct(lat.clone(), 0.5).as_secs_f64() * 1e3,
        pct(lat, 0.99).as_secs_f64() * 1e3,
        rate / raw
    );
}

async fn raw_insert_rate(url: &str, workers: usize, per: usize, sql: &'static str) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..workers {
        let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let st = c.prepare(sql).await.unwrap();
        clients.push(Arc::new((c, st)));
    }
    let clients = Arc::new(clients);
    let (rate, _) = timed_workers(workers, per, move |i| {
        let clients = clients.clone();
        async move {
            let (c, st) = &*clients[i % clients.len()];
            c.execute(st, &[&(i as i64), &format!("raw{i}")]).await.unwrap();
        }
    })
    .await;
    rate
}

fn main() {
    rootstream_db::runtime::runtime().block_on(async {
        let mut cfg = fresh_config().await;
        cfg.set("pool_size", "8").unwrap();
        let url = cfg.database_url.clone().unwrap();
        let db = DatabaseManager::connect(&cfg).await.unwrap();
        migrations::migrate(&db).await.unwrap();
        db.batch_execute("CREATE TABLE raw_rows (n BIGINT, body TEXT)").await.unwrap();

        let t = Instant::now();
        let h = password::hash("benchmark password").unwrap();
        let hash_cost = t.elapsed();
        let t = Instant::now();
        assert!(password::verify("benchmark password", &h).unwrap());
        let verify_cost = t.elapsed();
        println!(
            "Argon2id m={} KiB t={} p={}: one hash {:.1} ms, one verify {:.1} ms (single core)",
            password::MEMORY_KIB,
            password::ITERATIONS,
            password::PARALLELISM,
            hash_cost.as_secs_f64() * 1e3,
            verify_cost.as_secs_f64() * 1e3
        );

        let raw2 = raw_insert_rate(&url, 2, 1000, "INSERT INTO raw_rows (n, body) VALUES ($1, $2)").await;

        // Hashing is CPU-bound: two workers on two cores.
        let users = UserModel::new(db.clone());
        let u = users.clone();
        let create = timed_workers(2, 20, move |i| {
            let u = u.clone();
            async move {
                let name = format!("bench{i}");
                let email = format!("bench{i}@example.com");
                u.create(NewUser {
                    username: &name,
                    email: &email,
                    password: "benchmark password",
                    display_name: None,
                })
                .await
                .unwrap();
            }
        })
        .await;
        line("user registration, 2 clients", create, raw2);
        println!(
            "{:<40} the hash alone allows at most {:.0}/s on 2 cores",
            "",
            2.0 / hash_cost.as_secs_f64()
        );
        let u = users.clone();
        let login = timed_workers(2, 20, move |i| {
            let u = u.clone();
            async move {
                u.authenticate(&format!("bench{}", i % 40), "benchmark password").await.unwrap();
            }
        })
        .await;
        line("login (password check), 2 clients", login, raw2);

        // The same row through a raw prepared INSERT into event_log (same table, same indexes).
        let raw_log = raw_insert_rate(
            &url,
            8,
            1000,
            "INSERT INTO event_log (aggregate_type, aggregate_id, version, event_type, payload) VALUES ('raw', $2, $1, 'happened', '{}')",
        )
        .await;
        let es = EventStore::new(db.clone());
        let e = es.clone();
        let append = timed_workers(8, 1000, move |i| {
            let e = e.clone();
            async move {
                // Each append goes to its own aggregate at version 0: the conflict check is
                // always exercised, never lost.
                e.append("bench", &format!("agg{i}"), 0, &[NewEvent::new("happened", json!({"i": i}))]).await.unwrap();
            }
        })
        .await;
        line("event append (new aggregate), 8 clients", append, raw_log);
        let e = es.clone();
        let versions: Arc<Vec<tokio::sync::Mutex<i64>>> = Arc::new((0..8).map(|_| tokio::sync::Mutex::new(0)).collect());
        let append_seq = timed_workers(8, 1000, move |i| {
            let e = e.clone();
            let versions = versions.clone();
            async move {
                // Eight long-lived aggregates; each append names the version it read.
                let agg = i % 8;
                let mut v = versions[agg].lock().await;
                *v = e.append("seq", &format!("agg{agg}"), *v, &[NewEvent::new("happened", json!({"i": i}))]).await.unwrap();
            }
        })
        .await;
        line("event append (growing aggregates), 8 clients", append_seq, raw_log);
    });
}
