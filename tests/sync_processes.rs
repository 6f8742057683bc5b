//! Two instances in separate processes converge: 5,000 random concurrent deltas from each side
//! to the same 100 entities (mixed fields, some deleted with null) end with identical
//! snapshots on both, equal to a replay of the whole log into a fresh store.
//!
//! The test binary runs itself a second time as the other instance (the ignored test below,
//! chosen by name, marked by an environment variable); the two talk over stdin/stdout lines.

mod support;

use rootstream_db::sync::{Change, ChangeBody, StateSyncManager, SyncOptions};
use rootstream_db::RedisClient;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const CHILD_TEST: &str = "the_second_process";
const NS_VAR: &str = "RSDB_SYNC_PROCESS_NS";
const PER_SIDE: u64 = 5000;
const ENTITIES: u64 = 100;
/// The second process's lines carry this, to tell them from the test harness's output.
const TAG: &str = "sync-process:";

async fn manager(ns: &str, instance: &str) -> StateSyncManager {
    let redis = RedisClient::connect(&redis_config()).await.unwrap();
    let mut opts = SyncOptions::new(instance);
    opts.namespace = ns.to_string();
    opts.check_interval = Duration::from_millis(100);
    StateSyncManager::start(redis, opts).await.unwrap()
}

/// Random deltas: one to three of six fields set to numbers, text or booleans, and in one
/// delta out of eight a field deleted with null.
fn apply_random_deltas(m: &StateSyncManager, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..PER_SIDE {
        let id = rng.random_range(0..ENTITIES).to_string();
        let mut d = Map::new();
        for _ in 0..rng.random_range(1..=3) {
            let v = match rng.random_range(0..3) {
                0 => json!(rng.random_range(0..1_000_000)),
                1 => json!(format!("s{}", rng.random_range(0..1000))),
                _ => json!(rng.random_bool(0.5)),
            };
            d.insert(format!("f{}", rng.random_range(0..6)), v);
        }
        if rng.random_bool(0.125) {
            d.insert(format!("f{}", rng.random_range(0..6)), Value::Null);
        }
        m.apply_delta("stream", &id, &d).unwrap();
    }
}

/// Waits until this instance has sent its own deltas and received the other side's.
async fn wait_converged(m: &StateSyncManager) {
    m.flush(Duration::from_secs(60)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = m.status().await.unwrap();
        if st.received >= PER_SIDE && st.lag == 0 {
            assert_eq!(st.received, PER_SIDE, "{st:?}");
            assert_eq!((st.conflicts, st.rejected, st.resyncs), (0, 0, 0), "{st:?}");
            return;
        }
        assert!(Instant::now() < deadline, "the other side's deltas did not all arrive: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SHA-256 of the canonical JSON (keys sorted) of all entities' snapshots, and that JSON.
fn digest(snapshot: impl Fn(&str) -> Option<Map<String, Value>>) -> (String, String) {
    let all: BTreeMap<u64, Option<BTreeMap<String, Value>>> =
        (0..ENTITIES).map(|id| (id, snapshot(&id.to_string()).map(|s| s.into_iter().collect()))).collect();
    let text = serde_json::to_string(&all).unwrap();
    (hex::encode(Sha256::digest(text.as_bytes())), text)
}

fn live_digest(m: &StateSyncManager) -> (String, String) {
    digest(|id| m.get_snapshot("stream", id).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_applying_random_concurrent_deltas_end_identical_and_equal_to_a_replay() {
    let ns = unique("sync-proc");
    let a = manager(&ns, "parent").await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--ignored", "--nocapture", "--test-threads", "1"])
        .env(NS_VAR, &ns)
        .env("ROOTSTREAM_STACK_DIR", &stack().dir)
        .envs(stack().vars.iter())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(|l| l.ok()) {
            // The harness may have begun the line ("test the_second_process ... ").
            if let Some(at) = line.find(TAG) {
                let _ = tx.send(line[at + TAG.len()..].to_string());
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("the second process did not report {what}"))
    };
    assert_eq!(next("that it started"), "ready");

    // Both sides write at once.
    writeln!(to_child, "go").unwrap();
    let writer = a.clone();
    tokio::task::spawn_blocking(move || apply_random_deltas(&writer, 1)).await.unwrap();
    wait_converged(&a).await;
    let theirs = next("its digest");
    let (ours, text) = live_digest(&a);
    writeln!(to_child, "done").unwrap();
    assert!(child.wait().unwrap().success(), "the second process failed");
    assert_eq!(theirs, ours, "the two processes hold different state; ours: {text}");
    assert!((0..ENTITIES).all(|id| a.get_snapshot("stream", &id.to_string()).unwrap().is_some()), "{text}");

    // A replay of the whole log into a fresh store gives the same state.
    let mut replay = a.empty_store();
    let log = a.read_log_after(None).await.unwrap();
    assert_eq!(log.len() as u64, 2 * PER_SIDE);
    for env in log {
        let body: ChangeBody = serde_json::from_value(env.payload).unwrap();
        replay.apply(&Change { entity_type: env.entity, id: env.id, hlc: env.hlc, body }).unwrap();
    }
    let (replayed, replay_text) = digest(|id| replay.snapshot("stream", id).unwrap());
    assert_eq!(replayed, ours, "the replay differs from the live state: {replay_text}");
}

/// The other instance of the test above; runs only when that test starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the second process of two_processes_applying_random_concurrent_deltas_end_identical_and_equal_to_a_replay"]
async fn the_second_process() {
    let ns = std::env::var(NS_VAR).expect("started by the two-process test");
    let b = manager(&ns, "child").await;
    let say = |line: &str| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{TAG}{line}").unwrap();
        out.flush().unwrap();
    };
    let mut input = BufReader::new(std::io::stdin()).lines();
    say("ready");
    assert_eq!(input.next().unwrap().unwrap(), "go");
    let writer = b.clone();
    tokio::task::spawn_blocking(move || apply_random_deltas(&writer, 2)).await.unwrap();
    wait_converged(&b).await;
    say(&live_digest(&b).0);
    // Stay up (and subscribed) until the parent has its own digest.
    assert_eq!(input.next().unwrap().unwrap(), "done");
}
