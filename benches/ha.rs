//! PostgreSQL HA benchmarks on a `stack.sh --pg-ha` cluster (p1 primary, p2 and p3 streaming,
//! `ANY 1 (p2,p3)` synchronous).
//!
//! Replication lag under write load: `pgbench -i` on p1, then `pgbench -c 4 -T N` against p1
//! while the primary's `pg_stat_replication` is sampled every 100 ms (write, flush and replay
//! lag of each standby, and the bytes not yet replayed); p50/p99 over all samples. Beside it,
//! the raw baseline of the same run: pgbench's own tps with nothing sampling, and the tps
//! while sampling.
//!
//! Failover (`ha/failover.rs`, run last because it changes the topology): downtime and lost
//! acknowledged writes for our FailoverManager and for Patroni 3 in the same run.
//!
//! Run with `scripts/bench.sh --bench ha` (N from ROOTSTREAM_BENCH_HA_SECONDS, default 20).

use rootstream_db::ha::node::{self, NodeSet};
use rootstream_db::ha::{ReplicationManager, ReplicationOptions};
use rootstream_db::Config;

#[path = "ha/failover.rs"]
mod failover;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/stack.sh")
}

/// The run's --pg-ha variables, or a private stack's (stopped at the end).
fn stack_vars() -> (HashMap<String, String>, Option<PathBuf>) {
    if std::env::var("ROOTSTREAM_HA_PG_NODES").is_ok() {
        return (std::env::vars().filter(|(k, _)| k.starts_with("ROOTSTREAM_")).collect(), None);
    }
    let dir = std::env::temp_dir().join(format!("rsdb-bench-ha-{}", std::process::id()));
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(&dir)
        .args(["--pg-ha", "--no-s3", "--no-influx", "--no-vm", "--owner-pid", &std::process::id().to_string()])
        .output()
        .expect("could not run scripts/stack.sh");
    assert!(out.status.success(), "the --pg-ha stack did not start:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut vars = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = line.trim().strip_prefix("export ").and_then(|l| l.split_once('=')) {
            vars.insert(k.to_string(), v.trim_matches('\'').replace('\\', ""));
        }
    }
    (vars, Some(dir))
}

fn pg_bin(vars: &HashMap<String, String>, tool: &str) -> PathBuf {
    PathBuf::from(vars.get("ROOTSTREAM_PG_BIN").cloned().unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into()))
        .join(tool)
}

/// Runs pgbench; returns its tps (excluding connection time) and its output.
fn pgbench(vars: &HashMap<String, String>, url: &str, args: &[&str]) -> (Option<f64>, String) {
    let out = Command::new(pg_bin(vars, "pgbench")).args(args).arg(url).output().expect("could not run pgbench");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok());
    (tps, text)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[derive(Default)]
struct Samples {
    write_ms: Vec<f64>,
    flush_ms: Vec<f64>,
    replay_ms: Vec<f64>,
    bytes: Vec<f64>,
    null_lag: usize,
    rounds: usize,
    sample_ms: Vec<f64>,
}

fn main() {
    replication_lag();
    failover::run();
}

fn replication_lag() {
    let (vars, own) = stack_vars();
    let set = NodeSet::parse(&vars["ROOTSTREAM_HA_PG_NODES"], vars.get("ROOTSTREAM_HA_PG_DATA").map(String::as_str))
        .expect("ROOTSTREAM_HA_PG_NODES");
    let secs: u64 = std::env::var("ROOTSTREAM_BENCH_HA_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut cfg = Config::default();
    if let Some(b) = vars.get("ROOTSTREAM_PG_BIN") {
        cfg.set("pg_bin_dir", b).unwrap();
    }
    let rm = ReplicationManager::new(set.clone(), &cfg, ReplicationOptions::default()).unwrap();
    let st = rt.block_on(rm.status()).unwrap();
    let primary = st.primary.clone().expect("one primary");
    let p = set.get(&primary).unwrap().clone();
    println!(
        "ha replication lag: primary {primary}, synchronous_standby_names '{}', pgbench -c 4 -T {secs}",
        st.synchronous_standby_names.clone().unwrap_or_default()
    );
    let (_, init) = pgbench(&vars, &p.url, &["-i", "-q", "-s", "10"]);
    println!("  pgbench -i -s 10: {}", init.lines().last().unwrap_or_default());

    // Raw baseline: pgbench alone.
    let base_secs = (secs / 2).max(5).to_string();
    let (base_tps, _) = pgbench(&vars, &p.url, &["-c", "4", "-j", "2", "-T", &base_secs, "-n"]);

    // Sampled run.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let p2 = p.clone();
    let sampler = rt.spawn(async move {
        let mut s = Samples::default();
        let client = node::connect(&p2, Duration::from_secs(5)).await.unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !stop2.load(Ordering::Relaxed) {
            tick.tick().await;
            let t = Instant::now();
            let Ok(rows) = node::stat_replication(&client, &p2, Duration::from_secs(5)).await else { continue };
            s.sample_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            s.rounds += 1;
            for r in rows {
                match (r.write_lag_s, r.flush_lag_s, r.replay_lag_s) {
                    (Some(w), Some(f), Some(rp)) => {
                        s.write_ms.push(w * 1000.0);
                        s.flush_ms.push(f * 1000.0);
                        s.replay_ms.push(rp * 1000.0);
                    }
                    _ => s.null_lag += 1,
                }
                if let Some(b) = r.lag_bytes {
                    s.bytes.push(b as f64);
                }
            }
        }
        s
    });
    let secs_s = secs.to_string();
    let (tps, _) = pgbench(&vars, &p.url, &["-c", "4", "-j", "2", "-T", &secs_s, "-n"]);
    stop.store(true, Ordering::Relaxed);
    let mut s = rt.block_on(sampler).unwrap();
    println!(
        "  lag over {} samples of {} standbys ({} with the lag columns NULL, i.e. idle/caught up):",
        s.rounds,
        st.replicas.len(),
        s.null_lag
    );
    for (name, v) in [("write", &mut s.write_ms), ("flush", &mut s.flush_ms), ("replay", &mut s.replay_ms)] {
        println!(
            "    {name:<6} lag p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    println!(
        "    bytes not replayed p50 {:.0}  p99 {:.0}  max {:.0}",
        pct(&mut s.bytes, 0.5),
        pct(&mut s.bytes, 0.99),
        pct(&mut s.bytes, 1.0)
    );
    println!("    one pg_stat_replication sample took p50 {:.2} ms", pct(&mut s.sample_ms, 0.5));
    println!(
        "  pgbench tps while sampled: {:.0}; raw baseline (same run, nothing sampling, {base_secs} s): {:.0} ({:.2}x)",
        tps.unwrap_or(f64::NAN),
        base_tps.unwrap_or(f64::NAN),
        tps.unwrap_or(f64::NAN) / base_tps.unwrap_or(f64::NAN)
    );
    let st = rt.block_on(rm.status()).unwrap();
    for r in &st.replicas {
        println!("  after: {} {} lag {:?} bytes", r.name, r.state.as_deref().unwrap_or("-"), r.lag_bytes);
    }
    // The pgbench tables stay small (scale 10); drop them so the shared cluster is as before.
    let c = rt.block_on(node::connect(&p, Duration::from_secs(5))).unwrap();
    rt.block_on(
        c.batch_execute("DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers"),
    )
    .unwrap();
    drop(rm);
    if let Some(dir) = own {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(dir).output();
    }
}
