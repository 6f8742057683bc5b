//! HealthMonitor on the HA stack (`stack.sh run --pg-ha`): a replica that hangs (SIGSTOP, the
//! stack's `pg-freeze`) while the primary keeps writing falls behind in bytes and stops
//! answering; the monitor reports both within its check timeout and resolves both once the
//! replica runs again. Skips without `ROOTSTREAM_HA_PG_NODES`. Its own binary, because the
//! frozen replica would disturb other tests.

mod support;

use rootstream_db::ha::{Alert, HealthMonitor, HealthOptions, Severity};
use rootstream_db::{Config, DatabaseManager};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn stack_cmd(args: &[&str]) -> bool {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/stack.sh");
    let (cmd, rest) = args.split_first().unwrap();
    Command::new("bash").arg(script).arg(cmd).arg(&stack().dir).args(rest).status().unwrap().success()
}

/// Thaws the node even when the test fails half-way.
struct Frozen(&'static str);

impl Drop for Frozen {
    fn drop(&mut self) {
        stack_cmd(&["pg-thaw", self.0]);
    }
}

fn state(st: &Value, check: &str) -> String {
    st["checks"][check]["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_falls_behind_and_is_reported_then_resolved() {
    let Some(nodes) = stack().vars.get("ROOTSTREAM_HA_PG_NODES").cloned() else {
        println!("skipped: no ROOTSTREAM_HA_PG_NODES (run inside `stack.sh run --pg-ha`)");
        return;
    };
    assert!(stack_cmd(&["pg-wait", "30"]), "the HA stack is not streaming");
    let primary_url = nodes.split(',').find_map(|p| p.strip_prefix("p1=")).unwrap().to_string();
    let mut cfg = Config::default();
    cfg.set("database_url", &primary_url).unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    db.batch_execute("CREATE TABLE IF NOT EXISTS health_lag (id bigserial primary key, v text)").await.unwrap();
    let m = HealthMonitor::new(
        db.clone(),
        HealthOptions {
            nodes: Some(nodes),
            check_timeout_ms: 1000,
            replication_lag_warning_bytes: 4096.0,
            replication_lag_critical_bytes: 65536.0,
            checks: Some(vec!["nodes".into(), "replication_bytes".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    let seen: Arc<Mutex<Vec<Alert>>> = Arc::default();
    {
        let s = seen.clone();
        m.on_alert(move |a| s.lock().unwrap().push(a.clone()));
    }
    let st = m.check_now().await.unwrap();
    assert_eq!(state(&st, "nodes"), "ok", "{}", st["checks"]["nodes"]);
    assert_eq!(state(&st, "replication_bytes"), "ok", "{}", st["checks"]["replication_bytes"]);

    assert!(stack_cmd(&["pg-freeze", "p2"]));
    let frozen = Frozen("p2");
    // About 400 kB of WAL; p3 still acknowledges the synchronous commits.
    for _ in 0..400 {
        db.execute("INSERT INTO health_lag (v) VALUES (repeat('x', 1000))", &[]).await.unwrap();
    }
    let started = Instant::now();
    let st = m.check_now().await.unwrap();
    println!("round with p2 frozen: {:?}", started.elapsed());
    println!("{}", serde_json::to_string_pretty(&st["checks"]["replication_bytes"]).unwrap());
    println!("{}", st["checks"]["nodes"]["message"]);
    assert_eq!(state(&st, "replication_bytes"), "critical");
    let p1 = st["checks"]["replication_bytes"]["details"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "p1")
        .cloned()
        .unwrap();
    let p2 = p1["replicas"].as_array().unwrap().iter().find(|r| r["application_name"] == "p2").cloned().unwrap();
    assert!(p2["lag_bytes"].as_f64().unwrap() >= 65536.0, "{p2}");
    assert_eq!(state(&st, "nodes"), "warning", "a hung node does not answer within check_timeout_ms");
    assert!(st["checks"]["nodes"]["message"].as_str().unwrap().contains("p2"));

    drop(frozen);
    assert!(stack_cmd(&["pg-wait", "30"]));
    let started = Instant::now();
    let st = loop {
        let st = m.check_now().await.unwrap();
        if (state(&st, "replication_bytes") == "ok" && state(&st, "nodes") == "ok")
            || started.elapsed() > Duration::from_secs(30)
        {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("caught up after the thaw in {:?}", started.elapsed());
    assert_eq!(state(&st, "replication_bytes"), "ok", "{}", st["checks"]["replication_bytes"]);
    assert_eq!(state(&st, "nodes"), "ok");
    let alerts = seen.lock().unwrap().clone();
    println!("{alerts:#?}");
    let of = |c: &str| alerts.iter().filter(|a| a.check == c).map(|a| (a.severity, a.resolved)).collect::<Vec<_>>();
    assert_eq!(of("replication_bytes"), vec![(Severity::Critical, false), (Severity::Critical, true)]);
    assert_eq!(of("nodes"), vec![(Severity::Warning, false), (Severity::Warning, true)]);

    // A replica that stops leaves pg_stat_replication: an info notice, and one when it is back.
    seen.lock().unwrap().clear();
    assert!(stack_cmd(&["pg-stop", "p3"]));
    let st = m.check_now().await.unwrap();
    let restarted = stack_cmd(&["pg-start", "p3"]);
    assert!(restarted);
    assert_eq!(state(&st, "nodes"), "warning", "{}", st["checks"]["nodes"]);
    assert!(stack_cmd(&["pg-wait", "30"]));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let st = m.check_now().await.unwrap();
        if state(&st, "nodes") == "ok" && seen.lock().unwrap().iter().filter(|a| a.check == "replicas").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let notices: Vec<Alert> = seen.lock().unwrap().iter().filter(|a| a.check == "replicas").cloned().collect();
    println!("{notices:#?}");
    assert_eq!(notices.len(), 2, "{notices:#?}");
    assert!(notices.iter().all(|a| a.severity == Severity::Info && !a.resolved));
    assert!(notices[0].message.contains("gone p3"), "{}", notices[0].message);
    assert!(notices[1].message.contains("connected p3"), "{}", notices[1].message);
}
