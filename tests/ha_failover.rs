//! FailoverManager against real servers: a private three-node PostgreSQL cluster and a
//! three-member etcd per test (`stack.sh start --pg-ha`), with kills, freezes and lost quorums.
//! Timings are printed, never asserted.

mod ha_support;

use ha_support::HaStack;
use rootstream_db::ha::failover::{FailoverManager, FailoverOptions, RoleChange};
use rootstream_db::ha::node::{connect, probe, NodeSet};
use rootstream_db::runtime::runtime;
use rootstream_db::{Config, DatabaseManager};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn fast_options(cfg: &Config, member: &str) -> FailoverOptions {
    let mut o = FailoverOptions::from_config(cfg).unwrap();
    o.member = member.into();
    o.cluster = "test".into();
    o.lease_ttl = Duration::from_secs(3);
    o.safety_margin = Duration::from_millis(1500);
    o.loop_interval = Duration::from_millis(300);
    o.etcd_timeout = Duration::from_millis(600);
    o.check_timeout = Duration::from_millis(800);
    o.failure_threshold = 3;
    o
}

fn manager(s: &HaStack, member: &str) -> FailoverManager {
    let cfg = s.config();
    FailoverManager::new(&cfg, s.nodes(), fast_options(&cfg, member)).unwrap()
}

fn wait_for<F: FnMut() -> bool>(what: &str, limit: Duration, mut f: F) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_leader(m: &FailoverManager, primary: &str) {
    wait_for("the manager to lead and know the primary", Duration::from_secs(20), || {
        let st = m.status();
        st["is_leader"] == true && st["primary"] == primary
    });
}

/// Four clients inserting ids through one pool; every acknowledged id and its time is kept.
struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(i64, Instant)>>>,
    errors: Arc<AtomicUsize>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

fn start_writers(db: &DatabaseManager) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicI64::new(1));
    let mut handles = Vec::new();
    for w in 0..4i32 {
        let (db, stop, acks, errors, next) = (db.clone(), stop.clone(), acks.clone(), errors.clone(), next.clone());
        handles.push(runtime().spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = next.fetch_add(1, Ordering::SeqCst);
                match db.execute("INSERT INTO acks (id, writer) VALUES ($1, $2)", &[&id, &w]).await {
                    Ok(_) => acks.lock().unwrap().push((id, Instant::now())),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    Writers { stop, acks, errors, handles }
}

impl Writers {
    fn count(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    fn acked_after(&self, t: Instant) -> usize {
        self.acks.lock().unwrap().iter().filter(|(_, at)| *at > t).count()
    }

    fn finish(self) -> Vec<(i64, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            let _ = runtime().block_on(h);
        }
        let v = self.acks.lock().unwrap().clone();
        v
    }
}

/// Downtime seen by the writers after `t`: the longest gap between two consecutive
/// acknowledgements from just before `t` on (the last ack before the outage to the first after).
fn downtime(acks: &[(i64, Instant)], t: Instant) -> Duration {
    let mut times: Vec<Instant> = acks.iter().map(|(_, a)| *a).collect();
    times.sort();
    let start = times.iter().rposition(|a| *a <= t).unwrap_or(0);
    times[start..].windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

fn create_table(s: &HaStack) -> DatabaseManager {
    let db = DatabaseManager::new(&s.config()).unwrap();
    runtime()
        .block_on(
            db.batch_execute("CREATE TABLE acks (id BIGINT PRIMARY KEY, writer INT, at TIMESTAMPTZ DEFAULT now())"),
        )
        .unwrap();
    db
}

/// Every acknowledged id that is missing on `node`.
fn missing_on(nodes: &NodeSet, node: &str, acks: &[(i64, Instant)]) -> Vec<i64> {
    let n = nodes.get(node).unwrap().clone();
    let present: std::collections::HashSet<i64> = runtime().block_on(async {
        let c = connect(&n, Duration::from_secs(5)).await.unwrap();
        c.query("SELECT id FROM acks", &[]).await.unwrap().iter().map(|r| r.get::<_, i64>(0)).collect()
    });
    acks.iter().map(|(id, _)| *id).filter(|id| !present.contains(id)).collect()
}

/// count and checksum of the acks table on a node.
fn fingerprint(nodes: &NodeSet, node: &str) -> (i64, String) {
    let n = nodes.get(node).unwrap().clone();
    runtime().block_on(async {
        let c = connect(&n, Duration::from_secs(5)).await.unwrap();
        let r = c
            .query_one("SELECT count(*), coalesce(md5(string_agg(id::text, ',' ORDER BY id)), '') FROM acks", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    })
}

fn history_rows(nodes: &NodeSet, node: &str) -> Vec<(String, String, String, i64)> {
    let n = nodes.get(node).unwrap().clone();
    runtime().block_on(async {
        let c = connect(&n, Duration::from_secs(5)).await.unwrap();
        c.query("SELECT kind, old_primary, new_primary, bytes_lost_estimate FROM failover_history ORDER BY id", &[])
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
            .unwrap_or_default()
    })
}

fn changes_of(m: &FailoverManager) -> Arc<Mutex<Vec<RoleChange>>> {
    let v = Arc::new(Mutex::new(Vec::new()));
    let v2 = v.clone();
    m.on_role_change(move |c| v2.lock().unwrap().push(c.clone()));
    v
}

#[test]
fn a_killed_primary_is_replaced_without_losing_an_acknowledged_write_and_rejoins_with_pg_rewind() {
    let s = HaStack::start();
    let nodes = s.nodes();
    let db = create_table(&s);
    let m = manager(&s, "agent-1");
    m.attach_database(db.clone());
    let changes = changes_of(&m);
    m.start().unwrap();
    wait_leader(&m, "p1");

    let w = start_writers(&db);
    wait_for("writes", Duration::from_secs(10), || w.count() > 200);
    let killed = Instant::now();
    assert_eq!(s.cmd("pg-kill", &["primary"]), "p1");
    wait_for("a promotion", Duration::from_secs(30), || !changes.lock().unwrap().is_empty());
    wait_for("writes through the same pool after the failover", Duration::from_secs(30), || {
        w.acked_after(killed) > 200
    });
    let errors = w.errors.load(Ordering::SeqCst);
    let acks = w.finish();
    let change = changes.lock().unwrap()[0].clone();
    let new_primary = change.new_primary.clone();
    println!(
        "failover p1 -> {new_primary}: downtime seen by the writers {:?}, detection to promotion {:?} ms, {} acks, {errors} failed writes",
        downtime(&acks, killed),
        change.detection_to_promotion_ms,
        acks.len()
    );
    assert_ne!(new_primary, "p1");
    assert_eq!(s.role(&new_primary), "primary");
    assert_eq!(change.bytes_lost_estimate, 0);
    let missing = missing_on(&nodes, &new_primary, &acks);
    assert!(missing.is_empty(), "{} acknowledged ids lost: {:?}", missing.len(), &missing[..missing.len().min(20)]);
    let hist = history_rows(&nodes, &new_primary);
    assert_eq!(hist.len(), 1, "{hist:?}");
    assert_eq!((hist[0].0.as_str(), hist[0].1.as_str()), ("automatic", "p1"));
    assert!(m.status()["fenced"].as_array().unwrap().iter().any(|n| n == "p1"));

    // Restarted by someone, the fenced old primary is read-only: a read-write multi-host pool
    // never lands on it.
    s.cmd("pg-start", &["p1"]);
    let fresh = DatabaseManager::new(&s.config()).unwrap();
    for _ in 0..5 {
        let port: i32 = runtime().block_on(fresh.query_opt("SELECT inet_server_port()", &[])).unwrap().unwrap().get(0);
        let want = nodes.get(&new_primary).unwrap().address().unwrap();
        assert!(want.ends_with(&format!(":{port}")), "the pool reached port {port}, not {want}");
    }
    fresh.close();

    // The old primary comes back only as a standby, through pg_rewind.
    let t = Instant::now();
    m.rejoin("p1").unwrap();
    println!("rejoin of p1 with pg_rewind took {:?}", t.elapsed());
    assert_eq!(s.role("p1"), "replica");
    s.cmd("pg-wait", &["30"]);
    // Equal data on all three once the standbys replayed everything.
    let want = fingerprint(&nodes, &new_primary);
    assert_eq!(want.0 as usize, acks.len().max(want.0 as usize));
    wait_for("equal data on every node", Duration::from_secs(20), || {
        ["p1", "p2", "p3"].iter().all(|n| fingerprint(&nodes, n) == want)
    });
    for n in ["p1", "p2", "p3"] {
        let st = runtime().block_on(probe(nodes.get(n).unwrap(), Duration::from_secs(2)));
        if n != new_primary {
            assert_eq!(st.streaming, Some(true), "{st:?}");
        }
    }
    println!("all three nodes hold {} rows, checksum {}", want.0, want.1);
    m.stop();
}

#[test]
fn two_managers_racing_for_the_same_failure_promote_exactly_once() {
    let s = HaStack::start();
    let nodes = s.nodes();
    let _db = create_table(&s);
    let a = manager(&s, "agent-a");
    let b = manager(&s, "agent-b");
    let ca = changes_of(&a);
    let cb = changes_of(&b);
    a.start().unwrap();
    b.start().unwrap();
    wait_for("a leader", Duration::from_secs(20), || a.status()["primary"] == "p1" || b.status()["primary"] == "p1");

    // Poll every node every 50 ms for the whole test: never two that accept writes.
    let stop = Arc::new(AtomicBool::new(false));
    let max_primaries = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let poller = {
        let (stop, max_primaries, polls, nodes) = (stop.clone(), max_primaries.clone(), polls.clone(), nodes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let n = runtime().block_on(async {
                    let futs = nodes.nodes.iter().map(|n| async move {
                        match connect(n, Duration::from_millis(300)).await {
                            Ok(c) => matches!(
                                tokio::time::timeout(
                                    Duration::from_millis(300),
                                    c.query_one("SELECT pg_is_in_recovery()", &[])
                                )
                                .await,
                                Ok(Ok(r)) if !r.get::<_, bool>(0)
                            ),
                            Err(_) => false,
                        }
                    });
                    futures_util::future::join_all(futs).await.into_iter().filter(|p| *p).count()
                });
                max_primaries.fetch_max(n, Ordering::SeqCst);
                polls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    s.cmd("pg-kill", &["primary"]);
    wait_for("a promotion", Duration::from_secs(30), || {
        ca.lock().unwrap().iter().chain(cb.lock().unwrap().iter()).any(|c| c.kind == "automatic")
    });
    // Give the other manager time to (wrongly) act too.
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    let promotions: Vec<RoleChange> =
        ca.lock().unwrap().iter().chain(cb.lock().unwrap().iter()).filter(|c| c.kind == "automatic").cloned().collect();
    println!(
        "{} polls, at most {} primaries at once; promotions {:?}",
        polls.load(Ordering::SeqCst),
        max_primaries.load(Ordering::SeqCst),
        promotions.iter().map(|c| (&c.by, &c.new_primary)).collect::<Vec<_>>()
    );
    assert_eq!(promotions.len(), 1);
    assert!(max_primaries.load(Ordering::SeqCst) <= 1);
    let primaries: Vec<&str> = ["p2", "p3"].into_iter().filter(|n| s.role(n) == "primary").collect();
    assert_eq!(primaries, vec![promotions[0].new_primary.as_str()]);
    assert_eq!(history_rows(&nodes, &promotions[0].new_primary).len(), 1);
    // The other manager learned the new primary from etcd.
    let other = if promotions[0].by == "agent-a" { &b } else { &a };
    wait_for("the other manager to see the new primary", Duration::from_secs(10), || {
        other.status()["primary"] == promotions[0].new_primary.as_str()
    });
    a.stop();
    b.stop();
}

#[test]
fn a_planned_switchover_loses_nothing_and_the_old_primary_streams_again() {
    let s = HaStack::start();
    let nodes = s.nodes();
    let db = create_table(&s);
    let m = manager(&s, "agent-1");
    m.attach_database(db.clone());
    m.start().unwrap();
    wait_leader(&m, "p1");
    let w = start_writers(&db);
    wait_for("writes", Duration::from_secs(10), || w.count() > 200);
    let t = Instant::now();
    let change = m.switchover("p2").unwrap();
    let took = t.elapsed();
    wait_for("writes after the switchover", Duration::from_secs(30), || w.acked_after(t + took) > 200);
    let acks = w.finish();
    println!(
        "switchover p1 -> p2 took {took:?} (rejoin included); writers paused {:?}; {} acks",
        downtime(&acks, t),
        acks.len()
    );
    assert_eq!(change.kind, "switchover");
    assert_eq!(change.new_primary, "p2");
    assert_eq!(s.role("p2"), "primary");
    assert_eq!(s.role("p1"), "replica");
    let missing = missing_on(&nodes, "p2", &acks);
    assert!(missing.is_empty(), "{} acknowledged ids lost", missing.len());
    let p1 = runtime().block_on(probe(nodes.get("p1").unwrap(), Duration::from_secs(2)));
    assert_eq!(p1.streaming, Some(true), "{p1:?}");
    assert_eq!(p1.upstream.as_deref(), Some(nodes.get("p2").unwrap().address().unwrap().as_str()));
    s.cmd("pg-wait", &["30"]);
    assert_eq!(history_rows(&nodes, "p2")[0].0, "switchover");
    m.stop();
}

fn sql(nodes: &NodeSet, node: &str, stmts: &[&str]) {
    let n = nodes.get(node).unwrap().clone();
    runtime().block_on(async {
        let c = connect(&n, Duration::from_secs(5)).await.unwrap();
        for s in stmts {
            c.batch_execute(s).await.unwrap_or_else(|e| panic!("{node}: {s}: {e}"));
        }
    });
}

fn lsn_of(nodes: &NodeSet, node: &str) -> u64 {
    runtime().block_on(probe(nodes.get(node).unwrap(), Duration::from_secs(2))).lsn.map(|l| l.0).unwrap_or(0)
}

fn alerts_of(m: &FailoverManager) -> Arc<Mutex<Vec<rootstream_db::ha::failover::Alert>>> {
    let v = Arc::new(Mutex::new(Vec::new()));
    let v2 = v.clone();
    m.on_alert(move |a| v2.lock().unwrap().push(a.clone()));
    v
}

/// Cuts a standby off its primary (its WAL receiver fails to connect) so it falls behind.
fn disconnect(nodes: &NodeSet, node: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ci = format!(
        "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name={node}'"
    );
    sql(nodes, node, &[&ci, "SELECT pg_reload_conf()"]);
}

fn write_megabytes(nodes: &NodeSet, node: &str, mb: u32) {
    let rows = mb * 1000;
    sql(
        nodes,
        node,
        &[
            "CREATE TABLE IF NOT EXISTS pad (t TEXT)",
            &format!("INSERT INTO pad SELECT repeat(md5(g::text), 32) FROM generate_series(1, {rows}) g"),
        ],
    );
}

fn wait_position_recorded(m: &FailoverManager, nodes: &NodeSet, node: &str) {
    let want = lsn_of(nodes, node);
    wait_for("the leader to record the primary's position", Duration::from_secs(10), || {
        m.status()["primary_lsn"]
            .as_str()
            .and_then(|l| l.parse::<rootstream_db::ha::Lsn>().ok())
            .is_some_and(|l| l.0 >= want)
    });
}

#[test]
fn a_lagging_standby_is_not_chosen_and_with_every_standby_too_far_behind_nothing_is_promoted() {
    let s = HaStack::start();
    let nodes = s.nodes();
    let _db = create_table(&s);
    let m = manager(&s, "agent-1");
    let changes = changes_of(&m);
    let alerts = alerts_of(&m);
    m.start().unwrap();
    wait_leader(&m, "p1");

    // Every standby beyond maximum_lag_on_failover (1 MiB): both cut off, 3 MB written.
    sql(&nodes, "p1", &["ALTER SYSTEM SET synchronous_standby_names = ''", "SELECT pg_reload_conf()"]);
    disconnect(&nodes, "p2");
    disconnect(&nodes, "p3");
    write_megabytes(&nodes, "p1", 3);
    wait_position_recorded(&m, &nodes, "p1");
    s.cmd("pg-freeze", &["p1"]);
    wait_for("a no-candidate alert", Duration::from_secs(20), || {
        alerts.lock().unwrap().iter().any(|a| a.kind == "no_candidate")
    });
    std::thread::sleep(Duration::from_secs(2));
    let alert = alerts.lock().unwrap().iter().find(|a| a.kind == "no_candidate").cloned().unwrap();
    println!("alert: {}", alert.message);
    assert!(alert.message.contains("maximum_lag_on_failover"), "{}", alert.message);
    assert!(changes.lock().unwrap().is_empty());
    assert_eq!(s.role("p2"), "replica");
    assert_eq!(s.role("p3"), "replica");
    s.cmd("pg-thaw", &["p1"]);
    wait_for("the primary to be healthy again", Duration::from_secs(10), || m.status()["failed_checks"] == 0);

    // Only p3 lags: p2 catches up and is the one promoted.
    let p1 = nodes.get("p1").unwrap().clone();
    let p2 = nodes.get("p2").unwrap().clone();
    runtime().block_on(async {
        let c = connect(&p2, Duration::from_secs(5)).await.unwrap();
        rootstream_db::ha::node::set_primary_conninfo(&c, &p2, &p1, Some("p2")).await.unwrap();
    });
    sql(&nodes, "p1", &["ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (p2, p3)'", "SELECT pg_reload_conf()"]);
    write_megabytes(&nodes, "p1", 2);
    wait_for("p2 to catch up", Duration::from_secs(20), || lsn_of(&nodes, "p2") >= lsn_of(&nodes, "p1"));
    wait_position_recorded(&m, &nodes, "p1");
    println!("p1 at {}, p2 at {}, p3 at {}", lsn_of(&nodes, "p1"), lsn_of(&nodes, "p2"), lsn_of(&nodes, "p3"));
    s.cmd("pg-kill", &["p1"]);
    wait_for("a promotion", Duration::from_secs(30), || !changes.lock().unwrap().is_empty());
    let c = changes.lock().unwrap()[0].clone();
    println!("promoted {} (p3 lagged)", c.new_primary);
    assert_eq!(c.new_primary, "p2");
    m.stop();
}

#[test]
fn killing_the_etcd_leader_during_a_failover_still_promotes_once_and_a_lost_quorum_promotes_nothing() {
    let s = HaStack::start();
    let nodes = s.nodes();
    let _db = create_table(&s);
    let m = manager(&s, "agent-1");
    let changes = changes_of(&m);
    let alerts = alerts_of(&m);
    m.start().unwrap();
    wait_leader(&m, "p1");

    let t = Instant::now();
    s.cmd("pg-kill", &["p1"]);
    let etcd_killed = s.cmd("etcd-kill", &["leader"]);
    wait_for("a promotion", Duration::from_secs(40), || !changes.lock().unwrap().is_empty());
    println!("etcd leader {etcd_killed} killed with the primary: promoted after {:?}", t.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    let c = changes.lock().unwrap().clone();
    assert_eq!(c.len(), 1, "{c:?}");
    let new_primary = c[0].new_primary.clone();
    let primaries: Vec<&str> = ["p2", "p3"].into_iter().filter(|n| s.role(n) == "primary").collect();
    assert_eq!(primaries, vec![new_primary.as_str()]);
    assert_eq!(history_rows(&nodes, &new_primary).len(), 1);
    wait_for("the new primary recorded in etcd", Duration::from_secs(10), || {
        m.status()["primary"] == new_primary.as_str()
    });

    // Lose the quorum (a second member down), then the new primary: nothing is promoted.
    s.cmd("etcd-wait", &["15"]);
    s.cmd("etcd-kill", &["leader"]);
    std::thread::sleep(Duration::from_millis(500));
    s.cmd("pg-kill", &[&new_primary]);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(changes.lock().unwrap().len(), 1);
    let other = if new_primary == "p2" { "p3" } else { "p2" };
    assert_eq!(s.role(other), "replica");
    let a = alerts.lock().unwrap().clone();
    println!("alerts: {:?}", a.iter().map(|a| (&a.kind, &a.message)).collect::<Vec<_>>());
    assert!(a.iter().any(|a| a.kind == "etcd_unavailable" || a.kind == "lease_lost"), "{a:?}");
    assert!(!m.lease().holds());
    m.stop();
}
