//! Metrics write throughput against the stack's InfluxDB 1.6, each figure beside a raw baseline
//! from the same run:
//! - points/s through the background writer (write_point callers → batches of 5,000 → InfluxDB,
//!   timed until flush returns) vs a raw loop POSTing pre-encoded batches of 5,000 lines, with 1
//!   and 4 writers;
//! - points/s one write_point caller hands over (the enqueue alone);
//! - RSS growth while the server is down and the writer buffers, against the configured bound.
//!
//! Run with `scripts/bench.sh --bench metrics`.

#[path = "../tests/support/mod.rs"]
mod support;

use rootstream_db::metrics::line::now_ns;
use rootstream_db::metrics::{ClientOptions, InfluxDBClient, MetricsWriter, Point, WriterOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 5_000;
const POINTS: usize = 200_000;

fn client(tag: &str) -> InfluxDBClient {
    let url = support::stack().var("ROOTSTREAM_INFLUX_URL").to_owned();
    let db = format!("bench_{tag}_{}", rand::random::<u32>());
    let c = InfluxDBClient::new(ClientOptions::v1(url, db)).unwrap();
    c.create_database().unwrap();
    c
}

fn point(writer: usize, i: usize, t0: i64) -> Point {
    Point::new("bench")
        .tag("writer", writer.to_string())
        .tag("stream_id", (i % 100).to_string())
        .field("viewers", (i % 1000) as i64)
        .field("bitrate_kbps", 4500.5)
        .field("fps", 60.0)
        .timestamp_ns(t0 + i as i64)
}

fn count(c: &InfluxDBClient) -> i64 {
    c.query_rows("SELECT count(viewers) FROM bench", None).unwrap()[0]["count"].as_i64().unwrap()
}

/// Raw: `writers` threads POST pre-encoded batches of BATCH lines.
fn raw(writers: usize) -> f64 {
    let c = client("raw");
    let t0 = now_ns() - 3_600_000_000_000;
    let per = POINTS / writers;
    let bodies: Vec<Vec<String>> = (0..writers)
        .map(|w| {
            (0..per)
                .collect::<Vec<_>>()
                .chunks(BATCH)
                .map(|ch| ch.iter().map(|&i| c.encode(&point(w, i, t0)).unwrap()).collect::<Vec<_>>().join("\n"))
                .collect()
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for b in &bodies {
            let c = c.clone();
            s.spawn(move || {
                for body in b {
                    c.write_lines(body).unwrap();
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(count(&c), (per * writers) as i64);
    (per * writers) as f64 / secs
}

/// Ours: `writers` threads call write_point (or, with `prepared`, write_line with lines encoded
/// before the clock starts, the raw loop's input); timed until flush returns. `senders` is the
/// writer's sender threads (requests in flight at once).
fn ours(writers: usize, senders: usize, prepared: bool) -> (f64, f64) {
    let c = client("ours");
    let w = Arc::new(
        MetricsWriter::new(
            c.clone(),
            WriterOptions { batch_size: BATCH, max_buffer_points: POINTS * 2, senders, ..WriterOptions::default() },
        )
        .unwrap(),
    );
    let t0 = now_ns() - 3_600_000_000_000;
    let per = POINTS / writers;
    let mut lines: Vec<Vec<String>> = (0..writers)
        .map(|wi| if prepared { (0..per).map(|i| c.encode(&point(wi, i, t0)).unwrap()).collect() } else { Vec::new() })
        .collect();
    let start = Instant::now();
    let enqueue_secs: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = lines
            .iter_mut()
            .enumerate()
            .map(|(wi, mine)| {
                let w = w.clone();
                let mine = std::mem::take(mine);
                s.spawn(move || {
                    let t = Instant::now();
                    if prepared {
                        for l in mine {
                            w.write_line(l).unwrap();
                        }
                    } else {
                        for i in 0..per {
                            w.write_point(&point(wi, i, t0)).unwrap();
                        }
                    }
                    t.elapsed().as_secs_f64()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    w.flush(Duration::from_secs(120)).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let st = w.shutdown(Duration::from_secs(10));
    assert_eq!(st.dropped(), 0);
    assert_eq!(count(&c), (per * writers) as i64);
    let enqueue_rate = per as f64 / enqueue_secs.iter().cloned().fold(0.0, f64::max);
    ((per * writers) as f64 / secs, enqueue_rate)
}

fn rss_bytes() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    rootstream_db::metrics::collector::parse_kb_field(&s, "VmRSS").unwrap()
}

fn memory_while_down() {
    let c = client("down");
    let bound_bytes = 32usize << 20;
    let w = MetricsWriter::new(
        c,
        WriterOptions {
            max_buffer_points: 1_000_000,
            max_buffer_bytes: bound_bytes,
            retry_initial: Duration::from_secs(5),
            log_drops: false,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    support::stack().influx_stop();
    let before = rss_bytes();
    let t0 = now_ns();
    let n = 1_500_000;
    let mut peak = before;
    for i in 0..n {
        w.write_point(&point(0, i, t0)).unwrap();
        if i % 100_000 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    peak = peak.max(rss_bytes());
    let st = w.stats();
    println!(
        "server down: {n} points written, {} buffered ({} bytes charged, bound {bound_bytes}), {} dropped (buffer_full); \
         RSS {} MiB -> peak {} MiB (growth {:.1} MiB, {:.2}x the byte bound)",
        st.buffered_points,
        st.buffered_bytes,
        st.dropped_buffer_full,
        before >> 20,
        peak >> 20,
        (peak - before) as f64 / (1 << 20) as f64,
        (peak - before) as f64 / bound_bytes as f64
    );
    w.shutdown(Duration::from_millis(100));
    support::stack().influx_start();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("metrics writes to InfluxDB 1.6, {POINTS} points, batches of {BATCH}");
    // Warm-up.
    raw(1);
    let default_senders = WriterOptions::default().senders;
    for (writers, senders) in [(1, default_senders), (4, default_senders), (1, 1)] {
        let r = raw(writers);
        let (o, enqueue) = ours(writers, senders, false);
        let (p, _) = ours(writers, senders, true);
        println!(
            "{writers} writer(s), {senders} sender(s): background writer {o:.0} points/s (write_point, encoding \
             included), {p:.0} points/s (write_line, prepared lines); raw POST loop ({writers} thread(s), prepared \
             lines) {r:.0} points/s; ratios {:.2} / {:.2}; one write_point caller hands over {enqueue:.0} points/s",
            o / r,
            p / r
        );
    }
    memory_while_down();
}
