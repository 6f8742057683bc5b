//! HealthMonitor against the real stack: a long query and a saturated pool cross their
//! thresholds, a server that goes away (a TCP relay in front of the stack's PostgreSQL is shut)
//! raises a critical connectivity alert that resolves when it is back, callbacks that panic are
//! caught, periodic rounds run on `rsdb-health` and stop promptly; with the HA stack
//! (`ROOTSTREAM_HA_PG_NODES`) replication lag and the nodes are checked on every node.

mod support;

use rootstream_db::ha::{Alert, CheckState, HealthMonitor, HealthOptions, Severity};
use rootstream_db::{Config, DatabaseManager};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Seen = Arc<Mutex<Vec<(Alert, String)>>>;

fn collect(m: &HealthMonitor) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    m.on_alert(move |a| {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        s.lock().unwrap().push((a.clone(), thread));
    });
    seen
}

fn state(status: &Value, check: &str) -> String {
    status["checks"][check]["state"].as_str().unwrap_or_default().to_string()
}

fn alerts_for(seen: &Seen, check: &str) -> Vec<Alert> {
    seen.lock().unwrap().iter().filter(|(a, _)| a.check == check).map(|(a, _)| a.clone()).collect()
}

fn opts(json: &str) -> HealthOptions {
    HealthOptions::from_json(json).unwrap()
}

/// Calls `check_now` until `check` is in `want` (at most `limit`), returning the status.
async fn until_state(m: &HealthMonitor, check: &str, want: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let st = m.check_now().await.unwrap();
        if state(&st, check) == want || started.elapsed() > limit {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_database_is_ok_and_every_check_reports_a_value() {
    let db = DatabaseManager::connect(&fresh_config().await).await.unwrap();
    let dir = std::env::temp_dir();
    let m = HealthMonitor::new(
        db.clone(),
        // Disk limits low enough that the machine's own fill level does not matter here.
        HealthOptions {
            disk_path: Some(dir.to_string_lossy().into_owned()),
            disk_free_warning_pct: 0.01,
            disk_free_critical_pct: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.status()["overall"], "unknown", "nothing has run yet");
    let started = Instant::now();
    let st = m.check_now().await.unwrap();
    println!("one round: {:?} (the monitor's figure: {} ms)", started.elapsed(), st["last_round_ms"]);
    println!("{}", serde_json::to_string_pretty(&st).unwrap());
    assert_eq!(state(&st, "connectivity"), "ok");
    assert_eq!(state(&st, "latency"), "ok");
    assert!(st["checks"]["latency"]["value"].as_f64().unwrap() > 0.0);
    assert_eq!(state(&st, "pool"), "ok");
    assert_eq!(state(&st, "disk"), "ok", "{}", st["checks"]["disk"]);
    assert!(st["checks"]["disk"]["details"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(state(&st, "replication_bytes"), "ok", "the plain stack's server has no replicas");
    assert_eq!(st["checks"]["replication_bytes"]["details"]["role"], "primary");
    assert_eq!(state(&st, "nodes"), "disabled");
    assert_eq!(st["rounds"], 1);
    for c in rootstream_db::ha::health::CHECKS {
        assert!(st["checks"][c]["checked_at"].is_string(), "{c} has its time");
    }
    // The monitor's own connection is not one of the pool's.
    assert_eq!(db.stats().in_use, 0);
    // And its own statements are not long queries.
    let mine = st["checks"]["long_queries"]["details"]["longest"].as_array().unwrap().iter().any(|q| {
        q["application_name"] == rootstream_db::ha::health::APPLICATION_NAME
            && q["query"].as_str().unwrap_or_default().contains("pg_stat_activity")
    });
    assert!(!mine, "the monitor lists its own query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_query_is_critical_while_it_runs_and_resolved_after() {
    let db = DatabaseManager::connect(&fresh_config().await).await.unwrap();
    let m = HealthMonitor::new(
        db.clone(),
        opts(r#"{"long_query_warning_s": 1, "long_query_critical_s": 2, "checks": ["connectivity", "long_queries"]}"#),
    )
    .unwrap();
    let seen = collect(&m);
    // The check sees the whole server: another test's slow statement (a CREATE DATABASE on a
    // loaded machine) can hold it at warning for a moment, so wait for the quiet state, and
    // count only the alerts from there on.
    let st = until_state(&m, "long_queries", "ok", Duration::from_secs(30)).await;
    assert_eq!(state(&st, "long_queries"), "ok", "{}", st["checks"]["long_queries"]);
    seen.lock().unwrap().clear();

    let sleeper = {
        let db = db.clone();
        tokio::spawn(async move { db.execute("SELECT pg_sleep(3)", &[]).await })
    };
    let st = until_state(&m, "long_queries", "critical", Duration::from_secs(10)).await;
    let lq = &st["checks"]["long_queries"];
    println!("{lq}");
    assert_eq!(lq["state"], "critical");
    assert!(lq["value"].as_f64().unwrap() >= 2.0);
    let listed = lq["details"]["longest"].as_array().unwrap();
    assert!(listed.iter().any(|q| q["query"].as_str().unwrap().contains("pg_sleep(3)")), "{listed:?}");
    assert_eq!(st["overall"], "critical");

    sleeper.await.unwrap().unwrap();
    let st = until_state(&m, "long_queries", "ok", Duration::from_secs(10)).await;
    assert_eq!(state(&st, "long_queries"), "ok");
    let alerts = alerts_for(&seen, "long_queries");
    println!("{alerts:#?}");
    // On the way up it may pass through warning (1 s) before critical (2 s): one alert per change.
    let crit: Vec<_> = alerts.iter().filter(|a| !a.resolved && a.severity == Severity::Critical).collect();
    assert_eq!(crit.len(), 1, "one critical alert, not one per round");
    assert!(crit[0].threshold == Some(2.0) && crit[0].state == CheckState::Critical);
    let last = alerts.last().unwrap();
    assert!(last.resolved, "the last alert resolves it");
    assert_eq!(last.state, CheckState::Ok);
    assert_eq!(alerts.iter().filter(|a| a.resolved).count(), 1);
    // check_now delivers on the calling thread.
    let threads: Vec<String> = seen.lock().unwrap().iter().map(|(_, t)| t.clone()).collect();
    assert!(threads.iter().all(|t| t != "rsdb-health"), "{threads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_the_pools_connections_raises_pool_warning_then_critical() {
    let mut cfg = fresh_config().await;
    cfg.set("pool_size", "4").unwrap();
    cfg.set("acquire_timeout_ms", "3000").unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    let m = HealthMonitor::new(
        db.clone(),
        opts(r#"{"pool_warning_pct": 50, "pool_critical_pct": 100, "checks": ["connectivity", "pool"]}"#),
    )
    .unwrap();
    let seen = collect(&m);
    assert_eq!(state(&m.check_now().await.unwrap(), "pool"), "ok");

    let mut held = vec![db.acquire().await.unwrap(), db.acquire().await.unwrap()];
    let st = m.check_now().await.unwrap();
    assert_eq!(state(&st, "pool"), "warning", "{}", st["checks"]["pool"]);
    assert_eq!(st["checks"]["pool"]["value"], 50.0);

    held.push(db.acquire().await.unwrap());
    held.push(db.acquire().await.unwrap());
    let st = m.check_now().await.unwrap();
    assert_eq!(state(&st, "pool"), "critical", "{}", st["checks"]["pool"]);
    assert_eq!(st["checks"]["pool"]["details"]["in_use"], 4);
    // The monitor still answers with every pooled connection held: it uses its own.
    assert_eq!(state(&st, "connectivity"), "ok");

    // A caller waiting for a connection is critical by itself.
    held.pop();
    held.pop();
    held.pop();
    let st = m.check_now().await.unwrap();
    assert_eq!(state(&st, "pool"), "ok", "1 of 4 in use");
    let a = db.acquire().await.unwrap();
    let b = db.acquire().await.unwrap();
    let c = db.acquire().await.unwrap();
    let waiter = {
        let db = db.clone();
        tokio::spawn(async move { db.acquire().await.map(|_| ()) })
    };
    let mut waited = Value::Null;
    for _ in 0..50 {
        if db.stats().waiting > 0 {
            waited = m.check_now().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state(&waited, "pool"), "critical", "{}", waited["checks"]["pool"]);
    assert!(waited["checks"]["pool"]["message"].as_str().unwrap().contains("wait"));
    drop((a, b, c, held));
    waiter.await.unwrap().unwrap();
    let st = m.check_now().await.unwrap();
    assert_eq!(state(&st, "pool"), "ok");

    let pool = alerts_for(&seen, "pool");
    println!("{pool:#?}");
    let kinds: Vec<(Severity, bool)> = pool.iter().map(|a| (a.severity, a.resolved)).collect();
    assert_eq!(
        kinds,
        vec![
            (Severity::Warning, false),
            (Severity::Critical, false),
            (Severity::Critical, true),
            (Severity::Critical, false),
            (Severity::Critical, true)
        ]
    );
}

/// A TCP relay to the stack's PostgreSQL that can be shut (connections cut, port closed)
/// and opened again on the same port.
struct Relay {
    port: u16,
    target: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    async fn new(target: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Relay { port, target, tasks: Arc::default(), accept: None };
        r.serve(l);
        r
    }

    fn serve(&mut self, l: TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let t = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                tasks.lock().unwrap().push(t);
            }
        }));
    }

    fn shut(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn open(&mut self) {
        let mut tries = 0;
        let l = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("could not listen on {} again: {e}", self.port),
            }
        };
        self.serve(l);
    }
}

async fn relayed_db(relay: &Relay) -> DatabaseManager {
    let name = create_database().await;
    let mut cfg = Config::default();
    cfg.set("database_url", &format!("postgresql://postgres@127.0.0.1:{}/{name}", relay.port)).unwrap();
    cfg.set("connect_timeout_ms", "500").unwrap();
    cfg.set("acquire_timeout_ms", "500").unwrap();
    DatabaseManager::connect(&cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_a_critical_alert_and_resolves_when_it_is_back() {
    let mut relay = Relay::new(stack().pg_port()).await;
    let db = relayed_db(&relay).await;
    let m = HealthMonitor::new(
        db.clone(),
        opts(r#"{"check_timeout_ms": 500, "checks": ["connectivity", "latency", "long_queries"]}"#),
    )
    .unwrap();
    let seen = collect(&m);
    let st = m.check_now().await.unwrap();
    assert_eq!(state(&st, "connectivity"), "ok");

    relay.shut();
    let started = Instant::now();
    let st = m.check_now().await.unwrap();
    println!("round with the server gone: {:?}", started.elapsed());
    println!("{}", st["checks"]["connectivity"]);
    assert_eq!(state(&st, "connectivity"), "critical");
    assert_eq!(state(&st, "latency"), "unknown");
    assert_eq!(state(&st, "long_queries"), "unknown");
    assert_eq!(st["overall"], "critical");
    // Still down: no second alert.
    let st = m.check_now().await.unwrap();
    assert_eq!(st["checks"]["connectivity"]["value"], 2.0, "two failed rounds in a row");
    let conn = alerts_for(&seen, "connectivity");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert_eq!(conn[0].severity, Severity::Critical);
    assert!(!conn[0].resolved);

    relay.open().await;
    let st = until_state(&m, "connectivity", "ok", Duration::from_secs(10)).await;
    assert_eq!(state(&st, "connectivity"), "ok");
    assert_eq!(st["overall"], "ok", "{st}");
    let conn = alerts_for(&seen, "connectivity");
    println!("{conn:#?}");
    assert_eq!(conn.len(), 2);
    assert!(conn[1].resolved && conn[1].severity == Severity::Critical && conn[1].state == CheckState::Ok);
    assert!(alerts_for(&seen, "latency").is_empty(), "unknown is not an alert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_rounds_run_on_rsdb_health_follow_an_outage_and_stop_promptly() {
    let mut relay = Relay::new(stack().pg_port()).await;
    let db = relayed_db(&relay).await;
    let m = HealthMonitor::new(
        db.clone(),
        opts(
            r#"{"interval_ms": 100, "check_timeout_ms": 500, "connectivity_critical_after": 3,
                 "repeat_interval_ms": 300, "checks": ["connectivity"]}"#,
        ),
    )
    .unwrap();
    let seen = collect(&m);
    // A callback on rsdb-health may use the library's blocking calls (as the C and C++ APIs do).
    let nested: Arc<Mutex<Vec<bool>>> = Arc::default();
    {
        let (nested, other) = (nested.clone(), DatabaseManager::connect(&fresh_config().await).await.unwrap());
        m.on_alert(move |_| {
            let r = rootstream_db::runtime::block_on(other.execute("SELECT 1", &[]));
            nested.lock().unwrap().push(r.is_ok());
        });
    }
    m.start().unwrap();
    m.start().unwrap(); // idempotent
    assert!(m.is_running());
    let wait_rounds = |n: u64| {
        let started = Instant::now();
        while m.status()["rounds"].as_u64().unwrap() < n && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_rounds(2);
    assert_eq!(state(&m.status(), "connectivity"), "ok");
    relay.shut();
    let started = Instant::now();
    while !alerts_for(&seen, "connectivity").iter().any(|a| a.repeat) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = alerts_for(&seen, "connectivity");
    println!("{down:#?}");
    // Warning on the first failures, critical from the third, then repeated while it lasts.
    assert_eq!(down[0].severity, Severity::Warning);
    assert_eq!(down[1].severity, Severity::Critical);
    assert!(!down[1].repeat);
    assert!(down.iter().skip(2).all(|a| a.repeat && a.severity == Severity::Critical));
    relay.open().await;
    let started = Instant::now();
    while !alerts_for(&seen, "connectivity").iter().any(|a| a.resolved) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alerts_for(&seen, "connectivity").last().unwrap().resolved);
    let threads: Vec<String> = seen.lock().unwrap().iter().map(|(_, t)| t.clone()).collect();
    assert!(threads.iter().all(|t| t == "rsdb-health"), "{threads:?}");
    let nested = nested.lock().unwrap().clone();
    assert!(!nested.is_empty() && nested.iter().all(|ok| *ok), "{nested:?}");

    let started = Instant::now();
    m.stop().unwrap();
    println!("stop took {:?}", started.elapsed());
    assert!(!m.is_running());
    let rounds = m.status()["rounds"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(m.status()["rounds"].as_u64().unwrap(), rounds, "no round after stop");
    m.stop().unwrap();

    // Stop during a round that hangs: the relay accepts but never answers.
    let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let mut cfg = Config::default();
    cfg.set("database_url", &format!("postgresql://postgres@127.0.0.1:{hang_port}/x")).unwrap();
    cfg.set("connect_timeout_ms", "10000").unwrap();
    cfg.set("acquire_timeout_ms", "10000").unwrap();
    let hung = HealthMonitor::new(DatabaseManager::new(&cfg).unwrap(), opts(r#"{"check_timeout_ms": 10000}"#)).unwrap();
    hung.start().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    hung.stop().unwrap();
    println!("stop during a hanging round took {:?}", started.elapsed());
    keep.abort();
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_critical_and_a_panicking_callback_is_caught() {
    let mut cfg = Config::default();
    cfg.set("database_url", &format!("postgresql://postgres@127.0.0.1:{}/x", closed_port())).unwrap();
    cfg.set("connect_timeout_ms", "300").unwrap();
    let m = Arc::new(HealthMonitor::new(DatabaseManager::new(&cfg).unwrap(), HealthOptions::default()).unwrap());
    m.on_alert(|_| panic!("a callback that panics"));
    let seen = collect(&m);
    // A callback may not run a round itself.
    let reentrant = Arc::new(Mutex::new(None));
    {
        let (weak, r) = (Arc::downgrade(&m), reentrant.clone());
        m.on_alert(move |_| {
            if let Some(m) = weak.upgrade() {
                *r.lock().unwrap() = Some(rootstream_db::runtime::block_on(m.check_now()).is_err());
            }
        });
    }
    let st = m.check_now().await.unwrap();
    assert_eq!(state(&st, "connectivity"), "critical");
    assert!(st["checks"]["connectivity"]["message"].as_str().unwrap().contains("does not answer"));
    assert_eq!(st["overall"], "critical");
    assert!(st["callback_panics"].as_u64().unwrap() >= 1);
    assert_eq!(alerts_for(&seen, "connectivity").len(), 1, "the next callback still ran");
    assert_eq!(*reentrant.lock().unwrap(), Some(true), "check_now from a callback is refused");
    m.close().unwrap();
    assert!(m.check_now().await.is_err());
    assert!(m.start().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ha_stack_replication_and_nodes_are_checked_on_every_node() {
    let Some(nodes) = stack().vars.get("ROOTSTREAM_HA_PG_NODES").cloned() else {
        println!("skipped: no ROOTSTREAM_HA_PG_NODES (run inside `stack.sh run --pg-ha`)");
        return;
    };
    let primary_url = nodes.split(',').find_map(|p| p.strip_prefix("p1=")).unwrap().to_string();
    let mut cfg = Config::default();
    cfg.set("database_url", &primary_url).unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    let options = HealthOptions { nodes: Some(nodes.clone()), ..Default::default() };
    let m = HealthMonitor::new(db.clone(), options).unwrap();
    // Some writes so there is WAL to replicate.
    db.batch_execute("CREATE TABLE IF NOT EXISTS health_probe (id bigserial primary key, v text)").await.unwrap();
    for _ in 0..20 {
        db.execute("INSERT INTO health_probe (v) VALUES (repeat('x', 1000))", &[]).await.unwrap();
    }
    let st = m.check_now().await.unwrap();
    println!("{}", serde_json::to_string_pretty(&st["checks"]["replication_bytes"]).unwrap());
    println!("{}", serde_json::to_string_pretty(&st["checks"]["nodes"]).unwrap());
    assert_eq!(state(&st, "nodes"), "ok");
    assert_eq!(st["checks"]["nodes"]["details"]["primaries"], serde_json::json!(["p1"]));
    assert!(["ok", "warning"].contains(&state(&st, "replication_bytes").as_str()));
    let per_node = st["checks"]["replication_seconds"]["details"]["nodes"].as_array().unwrap();
    assert_eq!(per_node.len(), 3);
    let p1 = per_node.iter().find(|n| n["node"] == "p1").unwrap();
    assert_eq!(p1["replicas"].as_array().unwrap().len(), 2, "{p1}");
    for r in per_node.iter().filter(|n| n["role"] == "replica") {
        assert_eq!(r["wal_receiver"], "streaming", "{r}");
        println!("{}: replay lag {} s, backlog {} bytes", r["node"], r["replay_lag_s"], r["replay_backlog_bytes"]);
    }
    // The pool's server alone (no nodes option) sees the same two replicas.
    let plain = HealthMonitor::new(db.clone(), HealthOptions::default()).unwrap();
    let st = plain.check_now().await.unwrap();
    assert_eq!(st["checks"]["replication_bytes"]["details"]["replicas"].as_array().unwrap().len(), 2);

    // A node the monitor cannot reach is a warning on `nodes`.
    let mut with_dead = nodes.clone();
    with_dead.push_str(&format!(",p9=postgres://postgres@127.0.0.1:{}/rootstream", closed_port()));
    let m = HealthMonitor::new(
        db.clone(),
        HealthOptions { nodes: Some(with_dead), check_timeout_ms: 500, ..Default::default() },
    )
    .unwrap();
    let seen = collect(&m);
    let st = m.check_now().await.unwrap();
    assert_eq!(state(&st, "nodes"), "warning", "{}", st["checks"]["nodes"]);
    assert!(st["checks"]["nodes"]["message"].as_str().unwrap().contains("p9"));
    assert_eq!(alerts_for(&seen, "nodes").len(), 1);
}
