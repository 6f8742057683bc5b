//! `scripts/bench.sh --bench ha`: the failover part. Downtime seen by writing clients and
//! acknowledged writes lost when the primary is killed (kill -9), for our FailoverManager
//! (default options) and, as the baseline in the same run, for Patroni 3 on the same stack's
//! etcd with its shortest documented-safe timings (ttl 20, loop_wait 2, retry_timeout 5,
//! synchronous_mode). Needs a stack started with `--pg-ha`; the run changes its topology, so
//! it runs last. Section name: `failover`.

use rootstream_db::ha::failover::{FailoverManager, FailoverOptions};
use rootstream_db::runtime::runtime;
use rootstream_db::{Config, DatabaseManager};
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: i32 = 4;

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run `scripts/bench.sh --bench ha`"))
}

fn stack(cmd: &str, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack.sh");
    let out = Command::new("bash").arg(script).arg(cmd).arg(var("ROOTSTREAM_STACK_DIR")).args(args).output().unwrap();
    assert!(out.status.success(), "stack.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Outcome {
    downtime: Duration,
    acked: usize,
    lost: usize,
}

/// Four clients insert ids through `db`; `kill` kills the primary after 3 s; the run goes on
/// until 200 writes succeeded after the kill (or `limit`).
fn measure(db: &DatabaseManager, kill: impl FnOnce(), limit: Duration) -> Outcome {
    runtime()
        .block_on(db.batch_execute("DROP TABLE IF EXISTS bench_acks; CREATE TABLE bench_acks (id BIGINT PRIMARY KEY)"))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicI64::new(1));
    let handles: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (db, stop, acks, next) = (db.clone(), stop.clone(), acks.clone(), next.clone());
            runtime().spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    match db.execute("INSERT INTO bench_acks (id) VALUES ($1)", &[&id]).await {
                        Ok(_) => acks.lock().unwrap().push((id, Instant::now())),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    kill();
    let end = killed + limit;
    while Instant::now() < end && acks.lock().unwrap().iter().filter(|(_, t)| *t > killed).count() < 200 {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = runtime().block_on(h);
    }
    let acks = acks.lock().unwrap().clone();
    let mut times: Vec<Instant> = acks.iter().map(|(_, t)| *t).collect();
    times.sort();
    let start = times.iter().rposition(|t| *t <= killed).unwrap_or(0);
    let downtime = times[start..].windows(2).map(|w| w[1] - w[0]).max().unwrap_or(limit);
    let present: HashSet<i64> = runtime()
        .block_on(db.query("SELECT id FROM bench_acks", &[]))
        .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0)).collect())
        .unwrap_or_default();
    let lost = acks.iter().filter(|(id, _)| !present.contains(id)).count();
    Outcome { downtime, acked: acks.len(), lost }
}

fn config(url: &str) -> Config {
    let mut c = Config::from_env().unwrap_or_default();
    c.set("database_url", url).unwrap();
    c.set("pool_size", "8").unwrap();
    c.set("connect_timeout_ms", "1000").unwrap();
    c.set("acquire_timeout_ms", "2000").unwrap();
    c
}

fn main() {
    if std::env::var("ROOTSTREAM_HA_PG_NODES").is_err() {
        println!("failover: skipped (needs a stack started with --pg-ha: scripts/bench.sh --bench ha)");
        return;
    }
    println!("failover: {WRITERS} writing clients, kill -9 of the primary, synchronous replication");

    // Ours, with the default options (loop 500 ms, 3 failed checks, lease TTL 5 s).
    let mut cfg = config(&var("ROOTSTREAM_HA_DATABASE_URL"));
    cfg.set("ha_nodes", &var("ROOTSTREAM_HA_PG_NODES")).unwrap();
    cfg.set("ha_data_dirs", &var("ROOTSTREAM_HA_PG_DATA")).unwrap();
    cfg.set("etcd_endpoints", &var("ROOTSTREAM_ETCD_ENDPOINTS")).unwrap();
    let mut opts = FailoverOptions::from_config(&cfg).unwrap();
    opts.cluster = "bench".into();
    opts.member = "bench-agent".into();
    let m = FailoverManager::new(&cfg, cfg.ha_node_set().unwrap(), opts).unwrap();
    let db = DatabaseManager::new(&cfg).unwrap();
    m.attach_database(db.clone());
    m.start().unwrap();
    let t = Instant::now();
    while m.status()["primary"].is_null() || m.status()["is_leader"] != true {
        assert!(t.elapsed() < Duration::from_secs(30), "the manager did not take the lease");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ours = measure(&db, || drop(stack("pg-kill", &["primary"])), Duration::from_secs(60));
    let promoted = m.status()["last_change"]["detection_to_promotion_ms"].clone();
    m.stop();
    db.close();
    println!(
        "  rootstream-db FailoverManager: downtime {:>7.2} s, acknowledged writes lost {} of {} (detection to promotion {} ms)",
        ours.downtime.as_secs_f64(),
        ours.lost,
        ours.acked,
        promoted
    );

    // Patroni on the same etcd, its own three data directories.
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack.sh"))
        .arg("patroni-start")
        .arg(var("ROOTSTREAM_STACK_DIR"))
        .output()
        .unwrap();
    if !out.status.success() {
        println!("  Patroni: not measured (patroni-start failed: {})", String::from_utf8_lossy(&out.stderr).trim());
        return;
    }
    let url = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("export ROOTSTREAM_PATRONI_URL=")
                .map(|v| v.replace('\\', "").trim_matches('\'').to_string())
        })
        .expect("patroni-start printed no ROOTSTREAM_PATRONI_URL");
    let db = DatabaseManager::new(&config(&url)).unwrap();
    let theirs = measure(&db, || drop(stack("patroni-kill-primary", &[])), Duration::from_secs(120));
    db.close();
    let _ = stack("patroni-stop", &[]);
    println!(
        "  Patroni 3 (ttl 20, loop_wait 2, retry_timeout 5): downtime {:>7.2} s, acknowledged writes lost {} of {}",
        theirs.downtime.as_secs_f64(),
        theirs.lost,
        theirs.acked
    );
    println!(
        "  ratio (ours / Patroni downtime): {:.2}x",
        ours.downtime.as_secs_f64() / theirs.downtime.as_secs_f64().max(1e-9)
    );
}
