//! The batching writer while the stack's InfluxDB is stopped: nothing is lost while the buffer
//! has room, and with a buffer too small the drops are exact, oldest first, and reported.
//! (One test binary of its own: it stops the stack's InfluxDB.)

mod metrics_support;
mod support;

use metrics_support::*;
use rootstream_db::metrics::line::now_ns;
use rootstream_db::metrics::{DropEvent, DropReason, MetricsWriter, Point, WriterOptions};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::stack;

static SERIAL: Mutex<()> = Mutex::new(());

fn point(i: i64, t0: i64) -> Point {
    Point::new("run").tag("writer", "w1").field("seq", i).timestamp_ns(t0 + i)
}

#[test]
fn influx_down_for_10_s_during_100k_points_loses_none() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = v1_client("mt_down");
    let events: Arc<Mutex<Vec<DropEvent>>> = Arc::default();
    let w = MetricsWriter::new(
        c.clone(),
        WriterOptions {
            batch_size: 5_000,
            max_buffer_points: 200_000,
            retry_initial: Duration::from_millis(200),
            retry_max_interval: Duration::from_secs(2),
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let e2 = events.clone();
    w.set_drop_callback(Some(Arc::new(move |e: &DropEvent| e2.lock().unwrap().push(e.clone()))));
    let t0 = now_ns() - 3_600_000_000_000;
    let total = 100_000i64;
    let mut slowest = Duration::ZERO;
    let mut write = |range: std::ops::Range<i64>, pace: Option<Duration>| {
        for i in range {
            let t = Instant::now();
            w.write_point(&point(i, t0)).unwrap();
            slowest = slowest.max(t.elapsed());
            if let Some(p) = pace {
                if i % 1_000 == 0 {
                    std::thread::sleep(p);
                }
            }
        }
    };
    write(0..30_000, None);
    stack().influx_stop();
    let down_at = Instant::now();
    // 40,000 points over the 10 s the server is down.
    write(30_000..70_000, Some(Duration::from_millis(250)));
    let remaining = Duration::from_secs(10).saturating_sub(down_at.elapsed());
    std::thread::sleep(remaining);
    let during = w.stats();
    stack().influx_start();
    write(70_000..total, None);
    w.flush(Duration::from_secs(60)).unwrap();
    let s = w.shutdown(Duration::from_secs(10));
    assert_eq!(s.accepted, total as u64);
    assert_eq!(s.dropped(), 0, "{s:?}");
    assert_eq!(s.delivered, total as u64, "{s:?}");
    assert!(during.retries > 0 && during.buffered_points > 0, "the outage was not noticed: {during:?}");
    assert!(events.lock().unwrap().is_empty());
    let rows = c.query_rows("SELECT count(seq), sum(seq) FROM run", None).unwrap();
    assert_eq!(rows[0]["count"], json!(total), "{rows:?}");
    assert_eq!(rows[0]["sum"], json!(total * (total - 1) / 2), "{rows:?}");
    eprintln!("slowest write_point during the run: {slowest:?}; stats {s:?}");
}

#[test]
fn small_buffer_drops_exactly_the_oldest_and_reports_them() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = v1_client("mt_small");
    let events: Arc<Mutex<Vec<DropEvent>>> = Arc::default();
    let max = 10_000usize;
    let w = MetricsWriter::new(
        c.clone(),
        WriterOptions {
            batch_size: 1_000,
            max_buffer_points: max,
            // Long enough that all points below are written while the writer waits to retry.
            retry_initial: Duration::from_secs(4),
            retry_max_interval: Duration::from_secs(8),
            log_drops: false,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let e2 = events.clone();
    w.set_drop_callback(Some(Arc::new(move |e: &DropEvent| e2.lock().unwrap().push(e.clone()))));
    let t0 = now_ns() - 3_600_000_000_000;
    stack().influx_stop();
    // The first batch fails; then the writer is in its backoff.
    for i in 0..1_000 {
        w.write_point(&point(i, t0)).unwrap();
    }
    wait_for(Duration::from_secs(10), || (w.stats().retries >= 1).then_some(())).expect("no failed attempt");
    let total = 25_000i64;
    for i in 1_000..total {
        w.write_point(&point(i, t0)).unwrap();
    }
    let s = w.stats();
    let expect_dropped = total as u64 - max as u64;
    assert_eq!(s.dropped_buffer_full, expect_dropped, "{s:?}");
    assert_eq!(s.buffered_points, max as u64, "{s:?}");
    stack().influx_start();
    w.flush(Duration::from_secs(60)).unwrap();
    let s = w.shutdown(Duration::from_secs(10));
    assert_eq!(s.delivered, max as u64, "{s:?}");
    assert_eq!(s.dropped(), expect_dropped, "{s:?}");
    // Reported through the callback, exactly.
    let ev = events.lock().unwrap().clone();
    assert!(ev.iter().all(|e| e.reason == DropReason::BufferFull && e.message.contains("buffer full")), "{ev:?}");
    assert_eq!(ev.iter().map(|e| e.points).sum::<u64>(), expect_dropped);
    // What was kept arrived: the newest `max` points.
    let rows = c.query_rows("SELECT count(seq), min(seq), max(seq) FROM run", None).unwrap();
    assert_eq!(rows[0]["count"], json!(max), "{rows:?}");
    assert_eq!(rows[0]["min"], json!(total - max as i64), "{rows:?}");
    assert_eq!(rows[0]["max"], json!(total - 1), "{rows:?}");
}

#[test]
fn shutdown_with_the_server_down_drops_what_is_left_within_the_deadline() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = v1_client("mt_shut");
    let w = MetricsWriter::new(
        c,
        WriterOptions { retry_initial: Duration::from_millis(100), log_drops: false, ..WriterOptions::default() },
    )
    .unwrap();
    stack().influx_stop();
    for i in 0..500 {
        w.write_point(&point(i, now_ns())).unwrap();
    }
    let t = Instant::now();
    let s = w.shutdown(Duration::from_secs(2));
    let took = t.elapsed();
    stack().influx_start();
    assert_eq!(s.dropped_shutdown, 500, "{s:?}");
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}
