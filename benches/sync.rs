//! State-sync benchmarks between two processes, each figure beside a raw `redis` crate baseline
//! measured in the same run between the same two processes:
//! - propagation latency of one small delta (apply_delta here → subscriber callback there) vs
//!   PUBLISH → PSUBSCRIBE of a payload of the same size;
//! - updates per second from one instance, all counted on the other, vs pipelined PUBLISH;
//! - catch-up: a manager starting after 10,000 updates are in the log, vs XRANGE of them.
//!
//! The bench re-executes itself as the receiving process (`RSDB_SYNC_BENCH_ROLE=receiver`),
//! driven by lines on its stdin. Latency is measured one way, from the sender's wall clock
//! written into the payload to the receiver's wall clock (one machine, one clock).
//!
//! Run with `scripts/bench.sh --bench sync`.

#[path = "../tests/support/mod.rs"]
mod support;

use futures_util::StreamExt;
use rootstream_db::sync::{StateSyncManager, SyncOptions};
use rootstream_db::{Config, RedisClient};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROLE_VAR: &str = "RSDB_SYNC_BENCH_ROLE";
/// Bytes of the delta (as JSON text) and of the raw payload.
const PAYLOAD_BYTES: usize = 100;
const LATENCY_SAMPLES: usize = 2000;
const LATENCY_WARMUP: usize = 200;
const THROUGHPUT_UPDATES: u64 = 100_000;
const CATCH_UP_UPDATES: usize = 10_000;
const WRITER_THREADS: usize = 2;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn pct(v: &mut [u64], q: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

/// A delta of about PAYLOAD_BYTES of JSON, stamped with the send time when `t` is given.
fn delta(t: Option<u64>, i: u64) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("t".into(), json!(t.unwrap_or(0)));
    d.insert("i".into(), json!(i));
    let used = serde_json::to_string(&d).unwrap().len() + r#","pad":"""#.len();
    d.insert("pad".into(), json!("x".repeat(PAYLOAD_BYTES.saturating_sub(used))));
    d
}

/// A raw payload of PAYLOAD_BYTES: the send time, a space, padding.
fn raw_payload(t: u64) -> Vec<u8> {
    let mut p = format!("{t} ").into_bytes();
    p.resize(PAYLOAD_BYTES, b'x');
    p
}

fn sync_options(ns: &str, instance: &str) -> SyncOptions {
    let mut o = SyncOptions::new(instance);
    o.namespace = ns.to_string();
    // The throughput run queues its updates faster than Redis takes them.
    o.max_outbox = 1_000_000;
    o.log_max_len = 1_000_000;
    o
}

fn redis_cfg(url: &str) -> Config {
    let mut cfg = Config::default();
    cfg.set("redis_url", url).unwrap();
    cfg
}

// ----- the receiving process -----

#[derive(Default)]
struct Tally {
    count: AtomicU64,
    last_ns: AtomicU64,
    latencies: Mutex<Vec<u64>>,
}

impl Tally {
    fn record(&self, sent_ns: u64) {
        let now = now_ns();
        if sent_ns > 0 {
            self.latencies.lock().unwrap().push(now.saturating_sub(sent_ns));
        }
        self.last_ns.store(now, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.latencies.lock().unwrap().clear();
    }

    // Waits for `n` messages; answers "<count> <last receipt ns> <p50 ns> <p99 ns>".
    fn answer(&self, n: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut lat = std::mem::take(&mut *self.latencies.lock().unwrap());
        let skip = LATENCY_WARMUP.min(lat.len());
        let lat = &mut lat[skip..];
        let (p50, p99) = (pct(lat, 0.5), pct(lat, 0.99));
        format!("{} {} {p50} {p99}", self.count.load(Ordering::SeqCst), self.last_ns.load(Ordering::SeqCst))
    }
}

fn receiver() {
    let url = std::env::var("ROOTSTREAM_REDIS_URL").unwrap();
    let ns = std::env::var("RSDB_SYNC_BENCH_NS").unwrap();
    let rt = rootstream_db::runtime::runtime();
    let ours = Arc::new(Tally::default());
    let raw = Arc::new(Tally::default());
    let _manager = rt.block_on(async {
        let redis = RedisClient::connect(&redis_cfg(&url)).await.unwrap();
        let m = StateSyncManager::start(redis, sync_options(&ns, "bench-receiver")).await.unwrap();
        let t = ours.clone();
        m.subscribe("stream.delta", move |e| t.record(e.payload["delta"]["t"].as_u64().unwrap_or(0))).unwrap();

        let client = redis::Client::open(url.as_str()).unwrap();
        let mut ps = client.get_async_pubsub().await.unwrap();
        ps.psubscribe(format!("{ns}:raw*")).await.unwrap();
        let t = raw.clone();
        tokio::spawn(async move {
            let mut messages = ps.into_on_message();
            while let Some(msg) = messages.next().await {
                let p = msg.get_payload_bytes();
                let end = p.iter().position(|&b| b == b' ').unwrap_or(0);
                let sent = std::str::from_utf8(&p[..end]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                t.record(sent);
            }
        });
        m
    });
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let (what, n) = (words.next().unwrap_or(""), words.next().and_then(|w| w.parse().ok()).unwrap_or(0));
        let tally = match what {
            "ours" => &ours,
            "raw" => &raw,
            _ => return,
        };
        writeln!(out, "{}", tally.answer(n)).unwrap();
        tally.reset();
    }
}

// ----- the sending process -----

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(url: &str, ns: &str) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_VAR, "receiver")
            .env("ROOTSTREAM_REDIS_URL", url)
            .env("RSDB_SYNC_BENCH_NS", ns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the receiving process");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the receiving process did not start");
        Peer { child, stdin, stdout }
    }

    /// Waits until the peer has `n` messages of `what`: (count, last receipt ns, p50 ns, p99 ns).
    fn ask(&mut self, what: &str, n: u64) -> (u64, u64, u64, u64) {
        writeln!(self.stdin, "{what} {n}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Vec<u64> = line.split_whitespace().map(|w| w.parse().unwrap()).collect();
        (v[0], v[1], v[2], v[3])
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

// Sends `n` messages one at a time, about 1 ms apart, stamping each with the send time.
fn paced(n: usize, mut send: impl FnMut(u64, u64)) {
    for i in 0..n {
        send(now_ns(), i as u64);
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    if std::env::var(ROLE_VAR).as_deref() == Ok("receiver") {
        return receiver();
    }
    let url = support::stack().redis_url().to_string();
    let ns = support::unique("bench-sync");
    let rt = rootstream_db::runtime::runtime();
    let cfg = redis_cfg(&url);
    let sender = rt.block_on(async {
        let redis = RedisClient::connect(&cfg).await.unwrap();
        StateSyncManager::start(redis, sync_options(&ns, "bench-sender")).await.unwrap()
    });
    let mut peer = Peer::spawn(&url, &ns);
    let raw_client = redis::Client::open(url.as_str()).unwrap();
    let mut raw_conn = rt.block_on(raw_client.get_multiplexed_async_connection()).unwrap();
    let raw_channel = format!("{ns}:raw");
    println!(
        "state sync, two processes on one Redis; payload {PAYLOAD_BYTES} bytes (delta JSON / raw message), \
         {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    // Propagation latency.
    // Also timed on this side: until the log has the delta (flush), and the PUBLISH round trip.
    let n = LATENCY_SAMPLES + LATENCY_WARMUP;
    let mut ours_send = Vec::new();
    paced(n, |t, i| {
        sender.apply_delta("stream", &(i % 100).to_string(), &delta(Some(t), i)).unwrap();
        rt.block_on(sender.flush(Duration::from_secs(5))).unwrap();
        ours_send.push(now_ns() - t);
    });
    let (got, _, ours50, ours99) = peer.ask("ours", n as u64);
    assert_eq!(got, n as u64, "the receiver missed deltas");
    let mut raw_send = Vec::new();
    paced(n, |t, _| {
        rt.block_on(redis::cmd("PUBLISH").arg(&raw_channel).arg(raw_payload(t)).query_async::<i64>(&mut raw_conn))
            .unwrap();
        raw_send.push(now_ns() - t);
    });
    let (got, _, raw50, raw99) = peer.ask("raw", n as u64);
    assert_eq!(got, n as u64, "the raw subscriber missed messages");
    println!(
        "{:<44} ours p50 {:>7.1} µs p99 {:>7.1} µs | raw PUBLISH→PSUBSCRIBE p50 {:>7.1} µs p99 {:>7.1} µs | \
         ratio p50 {:.2} p99 {:.2} (target p99 < 1000 µs, ≤ 2×)",
        format!("propagation latency, {LATENCY_SAMPLES} samples"),
        us(ours50),
        us(ours99),
        us(raw50),
        us(raw99),
        ours50 as f64 / raw50.max(1) as f64,
        ours99 as f64 / raw99.max(1) as f64
    );
    let (s50, r50) = (pct(&mut ours_send[LATENCY_WARMUP..], 0.5), pct(&mut raw_send[LATENCY_WARMUP..], 0.5));
    println!(
        "{:<44} ours p50 {:>7.1} µs (apply_delta until the log has it) | raw p50 {:>7.1} µs (PUBLISH round trip) \
         | ratio {:.2}",
        "  of which the sending side",
        us(s50),
        us(r50),
        s50 as f64 / r50.max(1) as f64
    );

    // Throughput: updates applied here from WRITER_THREADS threads, counted there.
    rt.block_on(redis::cmd("CONFIG").arg("RESETSTAT").query_async::<()>(&mut raw_conn)).unwrap();
    let start = now_ns();
    let per = THROUGHPUT_UPDATES / WRITER_THREADS as u64;
    let writers: Vec<_> = (0..WRITER_THREADS as u64)
        .map(|w| {
            let m = sender.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let k = w * per + i;
                    m.apply_delta("stream", &(k % 100).to_string(), &delta(None, k)).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|h| h.join().unwrap());
    let applied = now_ns();
    rt.block_on(sender.flush(Duration::from_secs(120))).unwrap();
    let logged = now_ns();
    let (got, last, _, _) = peer.ask("ours", THROUGHPUT_UPDATES);
    assert_eq!(got, THROUGHPUT_UPDATES, "the receiver missed updates");
    let ours_rate = THROUGHPUT_UPDATES as f64 / ((last - start) as f64 / 1e9);
    let apply_rate = THROUGHPUT_UPDATES as f64 / ((applied - start) as f64 / 1e9);
    let log_rate = THROUGHPUT_UPDATES as f64 / ((logged - start) as f64 / 1e9);

    let info: String = rt.block_on(redis::cmd("INFO").arg("commandstats").query_async(&mut raw_conn)).unwrap();
    let script = info.lines().find_map(|l| l.strip_prefix("cmdstat_evalsha:")).unwrap_or("").to_string();

    let start = now_ns();
    rt.block_on(async {
        for chunk in (0..THROUGHPUT_UPDATES).collect::<Vec<_>>().chunks(512) {
            let mut pipe = redis::pipe();
            for _ in chunk {
                pipe.cmd("PUBLISH").arg(&raw_channel).arg(raw_payload(0)).ignore();
            }
            pipe.query_async::<()>(&mut raw_conn).await.unwrap();
        }
    });
    let (got, last, _, _) = peer.ask("raw", THROUGHPUT_UPDATES);
    assert_eq!(got, THROUGHPUT_UPDATES, "the raw subscriber missed messages");
    let raw_rate = THROUGHPUT_UPDATES as f64 / ((last - start) as f64 / 1e9);
    println!(
        "{:<44} ours {ours_rate:>9.0}/s (apply_delta {apply_rate:.0}/s, in the log {log_rate:.0}/s) | raw \
         pipelined PUBLISH {raw_rate:>9.0}/s | ratio {:.3} (target ≥ 100000/s)",
        format!("updates/s, {THROUGHPUT_UPDATES} from {WRITER_THREADS} threads"),
        ours_rate / raw_rate
    );
    // Redis's own account of the script: calls (one per batch) and time per call.
    let stat = |k: &str| script.split(',').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')).unwrap_or("?");
    println!(
        "{:<44} {} calls, {} µs per call in Redis ({:.0} messages per call)",
        "  the send script",
        stat("calls"),
        stat("usec_per_call"),
        THROUGHPUT_UPDATES as f64 / stat("calls").parse::<f64>().unwrap_or(f64::NAN)
    );
    drop(peer);

    // Catch-up: a manager starting after CATCH_UP_UPDATES are in a fresh log.
    let ns2 = support::unique("bench-sync-catchup");
    let (ours_catch, raw_catch, applied) = rt.block_on(async {
        let redis = RedisClient::connect(&cfg).await.unwrap();
        let writer = StateSyncManager::start(redis, sync_options(&ns2, "bench-writer")).await.unwrap();
        for i in 0..CATCH_UP_UPDATES as u64 {
            writer.apply_delta("stream", &(i % 100).to_string(), &delta(None, i)).unwrap();
        }
        writer.flush(Duration::from_secs(60)).await.unwrap();
        let redis = RedisClient::connect(&cfg).await.unwrap();
        let t = Instant::now();
        let late = StateSyncManager::start(redis, sync_options(&ns2, "bench-late")).await.unwrap();
        let ours = t.elapsed();
        let applied = late.status().await.unwrap().caught_up_messages;

        let stream_key = format!("{{{ns2}:sync}}:log");
        let t = Instant::now();
        let mut from = "-".to_string();
        let mut read = 0;
        loop {
            let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(&stream_key)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut raw_conn)
                .await
                .unwrap();
            // Each entry is a batch; `c` is the number of messages in it.
            read += entries
                .iter()
                .map(|(_, f)| f.get("c").and_then(|c| c.parse::<usize>().ok()).unwrap_or(0))
                .sum::<usize>();
            match entries.last() {
                Some((id, _)) if entries.len() == 1000 => from = format!("({id}"),
                _ => break,
            }
        }
        assert_eq!(read, CATCH_UP_UPDATES);
        (ours, t.elapsed(), applied)
    });
    assert_eq!(applied, CATCH_UP_UPDATES as u64, "the late manager did not take every update");
    println!(
        "{:<44} ours {:>8.1} ms (start + apply, {:.0}/s) | raw XRANGE {:>8.1} ms | ratio {:.2}",
        format!("catch-up of {CATCH_UP_UPDATES} updates"),
        ours_catch.as_secs_f64() * 1e3,
        CATCH_UP_UPDATES as f64 / ours_catch.as_secs_f64(),
        raw_catch.as_secs_f64() * 1e3,
        ours_catch.as_secs_f64() / raw_catch.as_secs_f64()
    );
}
