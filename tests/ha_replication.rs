//! ReplicationManager against a real replicated cluster (`scripts/stack.sh --pg-ha`): status,
//! read routing around frozen and stopped standbys, adding and removing a fourth standby, the
//! refusals (a replica URL that is a primary, rejoin without checksums or wal_log_hints,
//! promoting a primary), and a real promote + rejoin with pg_rewind on a private cluster.
//!
//! The tests that use the run's shared cluster take one lock, so they never overlap, and leave
//! it as they found it (p1 primary, p2 and p3 streaming).

// Each test runs on a runtime of its own and holds the cluster lock for its whole body on
// purpose: it serializes the tests, not tasks of one runtime.
#![allow(clippy::await_holding_lock)]

use rootstream_db::db::migrations;
use rootstream_db::ha::node::{self, NodeSet};
use rootstream_db::ha::{ReadRouting, ReplicationManager, ReplicationOptions};
use rootstream_db::{Config, DatabaseManager, Error};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

struct HaStack {
    dir: PathBuf,
    vars: HashMap<String, String>,
    private: bool,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/stack.sh")
}

impl HaStack {
    /// A private `--pg-ha` stack owned by this test process (its watchdog stops it if we die).
    fn start_private() -> HaStack {
        let dir = std::env::temp_dir().join(format!("rsdb-repl-{}-{}", std::process::id(), rand::random::<u32>()));
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&dir)
            .args(["--pg-ha", "--no-s3", "--no-influx", "--no-vm", "--owner-pid", &std::process::id().to_string()])
            .output()
            .expect("could not run scripts/stack.sh");
        assert!(
            out.status.success(),
            "the private --pg-ha stack did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut vars = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.trim().strip_prefix("export ").and_then(|l| l.split_once('=')) {
                // The values are shell-quoted with backslashes (`\,`, `\?`).
                vars.insert(k.to_string(), v.trim_matches('\'').replace('\\', ""));
            }
        }
        HaStack { dir, vars, private: true }
    }

    fn var(&self, k: &str) -> &str {
        self.vars.get(k).map(String::as_str).unwrap_or_else(|| panic!("{k} is not set"))
    }

    fn nodes(&self) -> NodeSet {
        NodeSet::parse(self.var("ROOTSTREAM_HA_PG_NODES"), Some(self.var("ROOTSTREAM_HA_PG_DATA"))).unwrap()
    }

    fn cmd(&self, cmd: &str, arg: &str) -> String {
        let out = Command::new("bash").arg(script()).arg(cmd).arg(&self.dir).arg(arg).output().unwrap();
        assert!(out.status.success(), "stack.sh {cmd} {arg} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn wait(&self) {
        self.cmd("pg-wait", "60");
    }

    fn manager(&self, opts: ReplicationOptions) -> ReplicationManager {
        ReplicationManager::new(self.nodes(), &config(), opts).unwrap()
    }
}

impl Drop for HaStack {
    fn drop(&mut self) {
        if self.private {
            let _ = Command::new("bash").arg(script()).arg("stop").arg(&self.dir).output();
        }
    }
}

/// The run's `--pg-ha` stack, or a private one for this binary when the run has none.
fn shared() -> (&'static HaStack, MutexGuard<'static, ()>) {
    static STACK: OnceLock<HaStack> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s =
        STACK.get_or_init(|| match (std::env::var("ROOTSTREAM_HA_PG_NODES"), std::env::var("ROOTSTREAM_STACK_DIR")) {
            (Ok(_), Ok(dir)) => HaStack {
                dir: PathBuf::from(dir),
                vars: std::env::vars().filter(|(k, _)| k.starts_with("ROOTSTREAM_")).collect(),
                private: false,
            },
            _ => HaStack::start_private(),
        });
    (s, guard)
}

fn config() -> Config {
    let mut cfg = Config::default();
    if let Ok(bin) = std::env::var("ROOTSTREAM_PG_BIN") {
        cfg.set("pg_bin_dir", &bin).unwrap();
    }
    cfg
}

fn fast() -> ReplicationOptions {
    ReplicationOptions { probe_timeout_ms: 1500, refresh_interval_ms: 0, stream_wait_s: 60, ..Default::default() }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn sql_on(set: &NodeSet, name: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let c = node::connect(set.get(name).unwrap(), Duration::from_secs(5)).await.unwrap();
    c.query(sql, &[]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_primary_its_streaming_standbys_lag_and_slots() {
    let (stack, _g) = shared();
    stack.wait();
    let m = stack.manager(fast());
    let st = m.status().await.unwrap();
    println!("{}", serde_json::to_string_pretty(&st).unwrap());
    assert_eq!(st.primary.as_deref(), Some("p1"));
    assert!(!st.split_brain);
    assert_eq!(st.primaries, vec!["p1".to_string()]);
    assert_eq!(st.nodes.len(), 3);
    assert!(st.synchronous_standby_names.as_deref().unwrap().starts_with("ANY 1"));
    assert_eq!(st.replicas.len(), 2);
    for r in &st.replicas {
        assert_eq!(r.state.as_deref(), Some("streaming"), "{r:?}");
        assert!(r.lag_bytes.is_some() && r.lag_seconds.is_some(), "lag in bytes and seconds: {r:?}");
        assert!(r.readable, "{r:?}");
        let slot = r.slot.as_ref().expect("a slot named after the node");
        assert!(slot.active && slot.retained_bytes.is_some() && slot.restart_lsn.is_some(), "{slot:?}");
    }
    assert!(
        st.replicas.iter().any(|r| matches!(r.sync_state.as_deref(), Some("sync" | "quorum"))),
        "one standby is synchronous: {:?}",
        st.replicas
    );
    // The JSON has the documented fields.
    let v = serde_json::to_value(&st).unwrap();
    for k in ["primary", "split_brain", "replicas", "slots", "nodes", "synchronous_standby_names"] {
        assert!(v.get(k).is_some(), "{k} missing");
    }

    // Lag under a write on the primary: bytes and seconds are reported, whatever their size.
    let set = stack.nodes();
    sql_on(&set, "p1", "CREATE TABLE IF NOT EXISTS repl_lag_probe (id bigserial primary key, pad text)").await;
    sql_on(&set, "p1", "INSERT INTO repl_lag_probe (pad) SELECT repeat('x', 200) FROM generate_series(1, 20000)").await;
    let st = m.status().await.unwrap();
    for r in &st.replicas {
        println!(
            "{}: lag {:?} bytes, {:?} s (write {:?}, flush {:?}, replay {:?})",
            r.name, r.lag_bytes, r.lag_seconds, r.write_lag_s, r.flush_lag_s, r.replay_lag_s
        );
    }

    // record_status writes one row per standby.
    let mut cfg = config();
    cfg.set("database_url", stack.var("ROOTSTREAM_HA_DATABASE_URL")).unwrap();
    let db = DatabaseManager::new(&cfg).unwrap();
    migrations::migrate(&db).await.unwrap();
    let before: i64 = db.query_opt("SELECT count(*) FROM replication_status", &[]).await.unwrap().unwrap().get(0);
    assert_eq!(m.record_status(&db).await.unwrap(), 2);
    let rows = db
        .query(
            "SELECT replica_node, primary_node, state, lag_bytes FROM replication_status ORDER BY id DESC LIMIT 2",
            &[],
        )
        .await
        .unwrap();
    let after: i64 = db.query_opt("SELECT count(*) FROM replication_status", &[]).await.unwrap().unwrap().get(0);
    assert_eq!(after, before + 2);
    let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    names.sort();
    assert_eq!(names, vec!["p2", "p3"]);
    for r in &rows {
        assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some("p1"));
        assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some("streaming"));
        assert!(r.get::<_, Option<i64>>(3).is_some());
    }
    db.close();
}

async fn served_by(m: &ReplicationManager, n: usize) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = m.query_read("SELECT pg_is_in_recovery() AS standby, $1::int AS x", Some("[7]")).await.unwrap();
        assert_eq!(r.rows[0]["x"], 7);
        // The node that says it served is the node that ran the query.
        assert_eq!(r.rows[0]["standby"], !r.primary, "{r:?}");
        out.push((r.node, r.primary));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_fresh_standbys_skip_frozen_and_stopped_ones_and_fall_back_or_refuse() {
    let (stack, _g) = shared();
    stack.wait();
    let m = stack.manager(fast());
    let all = served_by(&m, 6).await;
    println!("round robin: {all:?}");
    assert!(all.iter().all(|(_, p)| !p), "standbys serve while they are fresh");
    assert!(all.iter().any(|(n, _)| n == "p2") && all.iter().any(|(n, _)| n == "p3"), "{all:?}");

    // Writes are refused on the read path, on the standbys and on the primary alike.
    let e = m.query_read("CREATE TABLE repl_nope (id int)", None).await.unwrap_err();
    assert!(matches!(e, Error::Query(_)), "{e}");

    // A frozen standby (its connections hang) is skipped; the other one serves.
    stack.cmd("pg-freeze", "p2");
    let t = Instant::now();
    m.refresh();
    let frozen = served_by(&m, 4).await;
    println!("p2 frozen: {frozen:?} (first routing decision and 4 reads in {:?})", t.elapsed());
    let st = m.status().await.unwrap();
    let p2 = st.replica("p2").unwrap();
    assert!(!p2.reachable && !p2.readable, "{p2:?}");
    assert!(frozen.iter().all(|(n, _)| n == "p3"), "{frozen:?}");

    // And p3 stopped as well: the primary serves.
    stack.cmd("pg-stop", "p3");
    m.refresh();
    let none = served_by(&m, 2).await;
    assert!(none.iter().all(|(n, p)| n == "p1" && *p), "{none:?}");
    // Unless falling back is off: the read is refused and says why.
    let strict = stack.manager(ReplicationOptions { fallback_to_primary: false, ..fast() });
    let e = strict.query_read("SELECT 1", None).await.unwrap_err();
    println!("refused: {e}");
    assert!(matches!(e, Error::Connection(_)) && e.to_string().contains("p3"), "{e}");
    assert!(strict.read_pool().await.is_err());

    stack.cmd("pg-thaw", "p2");
    stack.cmd("pg-start", "p3");
    stack.wait();
    m.refresh();
    // Least lag: both are fresh again and the primary is no longer used.
    let least = stack.manager(ReplicationOptions { routing: ReadRouting::LeastLag, ..fast() });
    let back = served_by(&least, 3).await;
    assert!(back.iter().all(|(_, p)| !p), "{back:?}");
    let t = least.read_pool().await.unwrap();
    assert!(!t.primary && (t.node == "p2" || t.node == "p3"));
    let h = t.db.health_check().await.unwrap();
    assert!(h.in_recovery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_standby_is_added_streams_and_is_removed_with_its_slot() {
    let (stack, _g) = shared();
    stack.wait();
    let m = stack.manager(fast());
    let port = free_port();
    let dir = stack.dir.join("pgha").join("p4");
    let url = format!("postgres://postgres@127.0.0.1:{port}/rootstream");
    let rep = m.add_replica("p4", &url, &dir, port).await.unwrap();
    println!("{}", serde_json::to_string(&rep).unwrap());
    assert_eq!(rep.primary, "p1");
    let st = m.status().await.unwrap();
    let p4 = st.replica("p4").expect("p4 in the status");
    assert_eq!(p4.state.as_deref(), Some("streaming"), "{p4:?}");
    assert!(p4.slot.as_ref().is_some_and(|s| s.active), "{p4:?}");
    let ssn = st.synchronous_standby_names.clone().unwrap();
    assert!(ssn.contains("p4") && ssn.contains("p2") && ssn.contains("p3"), "{ssn}");
    // Its data is the primary's.
    let set = m.node_set();
    let c = node::connect(set.get("p1").unwrap(), Duration::from_secs(5)).await.unwrap();
    c.batch_execute("CREATE TABLE IF NOT EXISTS repl_p4 (v int); INSERT INTO repl_p4 VALUES (4)").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c4 = node::connect(set.get("p4").unwrap(), Duration::from_secs(5)).await.unwrap();
        let n: Option<i64> = c4
            .query_one("SELECT CASE WHEN to_regclass('repl_p4') IS NULL THEN NULL ELSE 1 END::bigint", &[])
            .await
            .unwrap()
            .get(0);
        if n.is_some() {
            let k: i64 = c4.query_one("SELECT count(*) FROM repl_p4 WHERE v = 4", &[]).await.unwrap().get(0);
            if k >= 1 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "p4 did not replay the primary's write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Adding it again, or another one into the same directory, is refused.
    let e = m.add_replica("p4", &url, &stack.dir.join("pgha/p5"), port).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    let p5 = free_port();
    let e = m.add_replica("p5", &format!("postgres://postgres@127.0.0.1:{p5}/rootstream"), &dir, p5).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("not empty"), "{e}");

    let rm = m.remove_replica("p4").await.unwrap();
    println!("{}", serde_json::to_string(&rm).unwrap());
    assert!(rm.stopped && rm.slot_dropped && rm.warning.is_none());
    let st = m.status().await.unwrap();
    assert!(st.replica("p4").is_none());
    assert!(st.slots.iter().all(|s| s.name != "p4"), "slot gone: {:?}", st.slots);
    let ssn = st.synchronous_standby_names.unwrap();
    assert!(!ssn.contains("p4") && ssn.contains("p2") && ssn.contains("p3"), "{ssn}");
    assert!(!Path::new(&dir).join("postmaster.pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
    // The primary still commits (it does not wait for the removed standby).
    c.batch_execute("INSERT INTO repl_p4 VALUES (5); DROP TABLE repl_p4").await.unwrap();
    stack.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_a_primary_url_an_existing_name_promoting_a_primary() {
    let (stack, _g) = shared();
    stack.wait();
    let m = stack.manager(fast());
    let set = stack.nodes();
    let p1 = set.get("p1").unwrap();
    let p1_port: u16 = p1.address().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let tmp = std::env::temp_dir().join(format!("rsdb-repl-bad-{}", std::process::id()));
    // A replica URL that is a primary.
    let e = m.add_replica("p9", &p1.url, &tmp, p1_port).await.unwrap_err();
    println!("{e}");
    assert!(matches!(e, Error::State(_)) && e.to_string().contains("primary"), "{e}");
    // A standby's URL: a server is already there.
    let p2 = set.get("p2").unwrap();
    let p2_port: u16 = p2.address().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let e = m.add_replica("p9", &p2.url, &tmp, p2_port).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    // An existing name, a bad name, a port that is not the URL's.
    let e = m.add_replica("p2", "postgres://postgres@127.0.0.1:1/x", &tmp, 1).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert!(m.add_replica("P-9", "postgres://postgres@127.0.0.1:1/x", &tmp, 1).await.is_err());
    assert!(m.add_replica("p9", "postgres://postgres@127.0.0.1:1/x", &tmp, 2).await.is_err());
    assert!(!tmp.exists(), "nothing was created");

    // Promote refuses a primary and an unknown node; remove refuses the primary.
    let e = m.promote("p1").await.unwrap_err();
    assert!(matches!(e, Error::State(_)) && e.to_string().contains("already a primary"), "{e}");
    assert!(matches!(m.promote("p7").await.unwrap_err(), Error::NotFound(_)));
    assert!(matches!(m.remove_replica("p1").await.unwrap_err(), Error::State(_)));
    // Rejoining onto a standby, or onto itself, is refused before anything is touched.
    assert!(matches!(m.rejoin("p1", Some("p2")).await.unwrap_err(), Error::State(_)));
    assert!(matches!(m.rejoin("p1", Some("p1")).await.unwrap_err(), Error::InvalidArgument(_)));
    let st = m.status().await.unwrap();
    assert_eq!(st.primary.as_deref(), Some("p1"));
    assert_eq!(st.replicas.iter().filter(|r| r.readable).count(), 2);
}

/// initdb (as postgres when root) a small cluster without data checksums or wal_log_hints,
/// started on a free port.
fn plain_cluster(dir: &Path) -> (String, u16) {
    let bin = PathBuf::from(std::env::var("ROOTSTREAM_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
    let root = libc_geteuid() == 0;
    let run = |tool: &str| {
        let mut c = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
            c
        } else {
            Command::new(bin.join(tool))
        };
        c.current_dir("/");
        c
    };
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    if root {
        Command::new("chown").args(["postgres:"]).arg(dir.parent().unwrap()).status().unwrap();
    }
    let out = run("initdb")
        .arg("-D")
        .arg(dir)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let out = run("pg_ctl")
        .arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(dir.parent().unwrap().join("plain.log"))
        .arg("-o")
        .arg(format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"))
        .args(["-w", "start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    (format!("postgres://postgres@127.0.0.1:{port}/postgres"), port)
}

fn libc_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn stop_plain(dir: &Path) {
    let bin = PathBuf::from(std::env::var("ROOTSTREAM_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
    let mut c = if libc_geteuid() == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join("pg_ctl"));
        c
    } else {
        Command::new(bin.join("pg_ctl"))
    };
    let _ = c.current_dir("/").arg("-D").arg(dir).args(["-m", "immediate", "-w", "stop"]).output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_is_refused_without_data_checksums_or_wal_log_hints() {
    let (stack, _g) = shared();
    let base = std::env::temp_dir().join(format!("rsdb-repl-plain-{}-{}", std::process::id(), rand::random::<u32>()));
    let dir = base.join("x");
    let (url, _) = plain_cluster(&dir);
    let set = stack.nodes();
    // The target (a cluster without checksums or wal_log_hints) rejoining the stack's primary,
    // which has both.
    let nodes =
        NodeSet::parse(&format!("p1={},x={url}", set.get("p1").unwrap().url), Some(&format!("x={}", dir.display())))
            .unwrap();
    let m = ReplicationManager::new(nodes, &config(), fast()).unwrap();
    let e = m.rejoin("x", Some("p1")).await.unwrap_err();
    println!("target: {e}");
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(e.to_string().contains("neither data checksums nor wal_log_hints"), "{e}");
    // Nothing was changed: it still runs as a primary, without a standby.signal.
    let st = node::probe(m.node_set().get("x").unwrap(), Duration::from_secs(5)).await;
    assert!(st.is_primary(), "{st:?}");
    assert!(!dir.join("standby.signal").exists());

    // The same cluster as the source: refused as well.
    let nodes = NodeSet::parse(
        &format!("x={url},y=postgres://postgres@127.0.0.1:{}/x", free_port()),
        Some(&format!("y={}", base.join("y").display())),
    )
    .unwrap();
    let m = ReplicationManager::new(nodes, &config(), fast()).unwrap();
    let e = m.rejoin("y", Some("x")).await.unwrap_err();
    println!("source: {e}");
    assert!(matches!(e, Error::Config(_)) && e.to_string().contains("neither data checksums nor wal_log_hints"), "{e}");

    stop_plain(&dir);
    let _ = std::fs::remove_dir_all(&base);
}

/// The real thing on a cluster of its own: p2 promoted while p1 still runs (a split brain,
/// reported as such), p1 writes a row p2 never sees, p3 follows p2, then p1 rejoins with
/// pg_rewind: three nodes stream from p2 with equal data and p1's divergent row is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rejoin_with_pg_rewind_on_a_private_cluster() {
    let t0 = Instant::now();
    let stack = HaStack::start_private();
    println!("private --pg-ha stack up in {:?}", t0.elapsed());
    let m = stack.manager(fast());
    let set = m.node_set();
    let p1 = set.get("p1").unwrap().clone();
    let p2 = set.get("p2").unwrap().clone();
    let p3 = set.get("p3").unwrap().clone();
    let c1 = node::connect(&p1, Duration::from_secs(5)).await.unwrap();
    c1.batch_execute("CREATE TABLE t (id int primary key, who text); INSERT INTO t VALUES (1, 'before')")
        .await
        .unwrap();
    stack.wait();

    let t = Instant::now();
    m.promote("p2").await.unwrap();
    println!("promote p2: {:?}", t.elapsed());
    let st = m.status().await.unwrap();
    assert!(st.split_brain, "two primaries are reported: {:?}", st.primaries);
    assert_eq!(st.primary, None);
    assert!(st.error.as_deref().unwrap().contains("split brain"));
    // Read routing never picks "the" primary during a split brain.
    m.refresh();

    // p3 follows p2 before p1 writes anything more.
    node::create_slot(&node::connect(&p2, Duration::from_secs(5)).await.unwrap(), &p2, "p3").await.unwrap();
    let c3 = node::connect(&p3, Duration::from_secs(5)).await.unwrap();
    node::set_primary_conninfo(&c3, &p3, &p2, Some("p3")).await.unwrap();
    // The reload restarts p3's WAL receiver in the background: until it has left p1, p1's next
    // commit would reach p3 too, past the point where p2's timeline forked, and p3 could then
    // only follow p2 after a rewind of its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = c1
            .query_one("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'p3'", &[])
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "p3 still streams from p1 30 s after it was pointed at p2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // p1 diverges: a commit that only p1 has (it no longer has standbys, so no waiting).
    c1.batch_execute("SET synchronous_commit = local; INSERT INTO t VALUES (2, 'lost on p1')").await.unwrap();
    drop(c1);

    let rep = match m.rejoin("p1", Some("p2")).await {
        Ok(r) => r,
        Err(e) => {
            let log = std::fs::read_to_string(stack.dir.join("pgha/p1.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let log2 = std::fs::read_to_string(stack.dir.join("pgha/p2.log")).unwrap_or_default();
            let tail2: Vec<&str> = log2.lines().rev().take(20).collect();
            panic!(
                "rejoin failed: {e}\np1 log:\n{}\np2 log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                tail2.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    };
    println!(
        "rejoin: rewound {} in {:.2} s (total {:.2} s)\n{}",
        rep.rewound, rep.rewind_s, rep.total_s, rep.rewind_output
    );
    assert!(rep.rewound, "p1 had diverged, so pg_rewind had work to do");
    assert!(Path::new(stack.var("ROOTSTREAM_HA_PG_DATA").split(',').next().unwrap().split('=').nth(1).unwrap())
        .join("standby.signal")
        .exists());

    // Wait for p3 to stream from p2 too, then compare.
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        let st = m.status().await.unwrap();
        let ok = st.primary.as_deref() == Some("p2")
            && st.replicas.len() == 2
            && st.replicas.iter().all(|r| r.state.as_deref() == Some("streaming"));
        if ok {
            break st;
        }
        assert!(Instant::now() < deadline, "p1 and p3 did not both stream from p2: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!st.split_brain);
    let ssn = st.synchronous_standby_names.clone().unwrap();
    assert!(ssn.contains("p1") && ssn.contains("p3"), "{ssn}");
    let c2 = node::connect(&p2, Duration::from_secs(5)).await.unwrap();
    c2.batch_execute("INSERT INTO t VALUES (3, 'after')").await.unwrap();
    let want = vec![(1, "before".to_string()), (3, "after".to_string())];
    for n in ["p1", "p2", "p3"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = node::connect(set.get(n).unwrap(), Duration::from_secs(5)).await.unwrap();
            let rows: Vec<(i32, String)> = c
                .query("SELECT id, who FROM t ORDER BY id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if rows == want {
                break;
            }
            assert!(Instant::now() < deadline, "{n} has {rows:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A promoted node cannot be promoted again.
    assert!(matches!(m.promote("p2").await.unwrap_err(), Error::State(_)));
    // Rejoin of a node that already follows the primary: nothing to rewind, still a standby.
    let rep = m.rejoin("p3", Some("p2")).await.unwrap();
    println!("rejoin p3 (already following): rewound {}: {}", rep.rewound, rep.rewind_output);
    let s3 = node::probe(&p3, Duration::from_secs(5)).await;
    assert!(s3.is_standby(), "{s3:?}");
    println!("whole test {:?}", t0.elapsed());
    drop(stack);
}

#[test]
fn the_cli_prints_status_and_refuses_bad_requests_with_exit_codes() {
    let (stack, _g) = shared();
    stack.wait();
    let rsdb = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rsdb"))
            .args(args)
            .env("ROOTSTREAM_HA_PG_NODES", stack.var("ROOTSTREAM_HA_PG_NODES"))
            .env("ROOTSTREAM_HA_PG_DATA", stack.var("ROOTSTREAM_HA_PG_DATA"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = rsdb(&["ha", "status", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["primary"], "p1");
    assert_eq!(v["split_brain"], false);
    let (code, out, _) = rsdb(&["ha", "status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("primary p1") && out.contains("p2") && out.contains("streaming"), "{out}");
    let set = stack.nodes();
    let p1 = set.get("p1").unwrap();
    let port = p1.address().unwrap().rsplit(':').next().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("rsdb-repl-cli-{}", std::process::id()));
    let (code, _, err) =
        rsdb(&["ha", "replica", "add", "p9", "--url", &p1.url, "--data-dir", dir.to_str().unwrap(), "--port", &port]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("primary"), "{err}");
    let (code, _, err) = rsdb(&["ha", "replica", "remove", "p9"]);
    assert_eq!(code, Some(4), "{err}");
    let (code, _, err) = rsdb(&["ha", "rejoin", "p1", "--primary", "p1"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, _) = rsdb(&["ha", "status", "--nodes", "p1=postgres://postgres@127.0.0.1:1/x"]);
    assert_eq!(code, Some(1), "no primary");
}
