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

/// Four clients insert ids through `db` and note the server (port) that acknowledged each;
/// `kill` kills the primary after 3 s. The run goes on until 200 writes were acknowledged by
/// another server (or `limit`). Downtime: the last ack by the old primary to the first by the
/// new one. Lost: acknowledged ids missing on the new primary.
fn measure(db: &DatabaseManager, kill: impl FnOnce(), limit: Duration) -> Outcome {
    runtime()
        .block_on(db.batch_execute("DROP TABLE IF EXISTS bench_acks; CREATE TABLE bench_acks (id BIGINT PRIMARY KEY)"))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<(i64, Instant, i32)>>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicI64::new(1));
    let handles: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (db, stop, acks, next) = (db.clone(), stop.clone(), acks.clone(), next.clone());
            runtime().spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    let r = db
                        .query_opt("INSERT INTO bench_acks (id) VALUES ($1) RETURNING inet_server_port()", &[&id])
                        .await;
                    match r {
                        Ok(Some(row)) => acks.lock().unwrap().push((id, Instant::now(), row.get::<_, i32>(0))),
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let old_port = acks.lock().unwrap().last().map(|a| a.2).expect("no write before the kill");
    kill();
    let end = Instant::now() + limit;
    while Instant::now() < end && acks.lock().unwrap().iter().filter(|a| a.2 != old_port).count() < 200 {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = runtime().block_on(h);
    }
    let acks = acks.lock().unwrap().clone();
    let last_old = acks.iter().filter(|a| a.2 == old_port).map(|a| a.1).max().expect("acks on the old primary");
    let first_new = acks.iter().filter(|a| a.2 != old_port).map(|a| a.1).min();
    let downtime = first_new.map(|f| f.saturating_duration_since(last_old)).unwrap_or(limit);
    let mut present: Option<HashSet<i64>> = None;
    for _ in 0..50 {
        if let Ok(rows) = runtime().block_on(db.query("SELECT id FROM bench_acks", &[])) {
            present = Some(rows.iter().map(|r| r.get::<_, i64>(0)).collect());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let present = present.expect("the new primary did not answer");
    let lost = acks.iter().filter(|a| !present.contains(&a.0)).count();
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

pub fn run() {
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
