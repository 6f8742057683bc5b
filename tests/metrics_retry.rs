//! The batching writer against a local listener that answers 500, 429 with Retry-After, 400,
//! or never answers: retries back off, callers are never blocked, every drop is counted.

mod metrics_support;
mod support;

use metrics_support::*;
use rootstream_db::metrics::{
    ClientOptions, DropEvent, DropReason, InfluxDBClient, MetricsWriter, Point, WriterOptions,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn client(url: &str, timeout: Duration) -> InfluxDBClient {
    let mut o = ClientOptions::v1(url, "db");
    o.timeout = timeout;
    InfluxDBClient::new(o).unwrap()
}

fn opts() -> WriterOptions {
    WriterOptions {
        batch_size: 10,
        flush_interval: Duration::from_millis(50),
        retry_initial: Duration::from_millis(100),
        retry_base: 2,
        retry_max_interval: Duration::from_secs(5),
        log_drops: false,
        ..WriterOptions::default()
    }
}

/// Writes `n` points and returns the slowest write_point call.
fn write_n(w: &MetricsWriter, n: i64) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        w.write_point(&Point::new("m").field("v", i)).unwrap();
        slowest = slowest.max(t.elapsed());
    }
    slowest
}

/// The documented limit: write_point never waits on the network. We allow a generous margin
/// for a loaded machine; a call that waited for a request would take the request's timeout.
const CALLER_LIMIT: Duration = Duration::from_millis(200);

#[test]
fn server_errors_are_retried_with_growing_delays() {
    let l = Listener::start(vec![status(500), status(503), status(500), status(502), ok()]);
    let w = MetricsWriter::new(client(&l.url, Duration::from_secs(5)), opts()).unwrap();
    let slowest = write_n(&w, 10);
    w.flush(Duration::from_secs(20)).unwrap();
    let s = w.stats();
    assert_eq!((s.delivered, s.retries, s.dropped()), (10, 4, 0), "{s:?}");
    let req = l.requests();
    assert_eq!(req.len(), 5);
    assert!(req.iter().all(|r| r.path.starts_with("/write?db=db") && r.body.lines().count() == 10));
    // Delay n is drawn from [100 ms * 2^(n-1), 100 ms * 2^n].
    for n in 1..5 {
        let gap = req[n].at.duration_since(req[n - 1].at);
        let lo = Duration::from_millis(100 << (n - 1));
        let hi = Duration::from_millis(100 << n) + Duration::from_millis(500);
        assert!(gap >= lo && gap <= hi, "retry {n} after {gap:?}, expected {lo:?}..{hi:?}");
    }
    assert!(slowest < CALLER_LIMIT, "write_point took {slowest:?}");
}

#[test]
fn retry_after_of_429_is_honoured() {
    let l = Listener::start(vec![
        Reply::Status(429, vec![("Retry-After".into(), "2".into())], "{\"error\":\"slow down\"}".into()),
        ok(),
    ]);
    let w = MetricsWriter::new(client(&l.url, Duration::from_secs(5)), opts()).unwrap();
    write_n(&w, 10);
    w.flush(Duration::from_secs(20)).unwrap();
    let req = l.requests();
    assert_eq!(req.len(), 2);
    let gap = req[1].at.duration_since(req[0].at);
    // Not the 100..200 ms backoff: the server's 2 s.
    assert!(gap >= Duration::from_secs(2) && gap < Duration::from_millis(3500), "retried after {gap:?}");
    let s = w.stats();
    assert_eq!((s.delivered, s.retries), (10, 1));
    assert!(s.last_error.unwrap().contains("429"));
}

#[test]
fn a_hanging_server_never_blocks_the_caller() {
    let l = Listener::start(vec![Reply::Hang]);
    let w = MetricsWriter::new(client(&l.url, Duration::from_secs(30)), opts()).unwrap();
    write_n(&w, 10);
    // The writer is now stuck in a request that gets no answer.
    wait_for(Duration::from_secs(5), || (!l.requests().is_empty()).then_some(())).unwrap();
    let slowest = write_n(&w, 5_000);
    assert!(slowest < CALLER_LIMIT, "write_point took {slowest:?} while the server hung");
    // flush waits only as long as it is told to.
    let t = Instant::now();
    let r = w.flush(Duration::from_millis(500));
    assert!(matches!(r, Err(rootstream_db::Error::Timeout(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "flush took {:?}", t.elapsed());
    // Shutdown gives up at its deadline, dropping (and counting) what is left.
    let t = Instant::now();
    let s = w.shutdown(Duration::from_secs(1));
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
    assert_eq!(s.accepted, 5_010);
    assert_eq!(s.delivered, 0);
    assert_eq!(s.dropped_shutdown, 5_010, "{s:?}");
}

#[test]
fn a_request_that_times_out_is_retried() {
    let l = Listener::start(vec![Reply::Hang, ok()]);
    let w = MetricsWriter::new(client(&l.url, Duration::from_millis(500)), opts()).unwrap();
    write_n(&w, 10);
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!((s.delivered, s.retries), (10, 1), "{s:?}");
    assert!(s.last_error.unwrap().contains("timed out") || l.requests().len() == 2);
}

#[test]
fn bad_request_drops_the_batch_with_the_reason() {
    let l = Listener::start(vec![
        Reply::Status(400, vec![], "{\"error\":\"unable to parse 'm v=': missing field value\"}".into()),
        ok(),
    ]);
    let events: Arc<Mutex<Vec<DropEvent>>> = Arc::default();
    let w = MetricsWriter::new(client(&l.url, Duration::from_secs(5)), opts()).unwrap();
    let e2 = events.clone();
    w.set_drop_callback(Some(Arc::new(move |e: &DropEvent| e2.lock().unwrap().push(e.clone()))));
    write_n(&w, 10);
    w.flush(Duration::from_secs(10)).unwrap();
    write_n(&w, 10);
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!((s.dropped_rejected, s.delivered, s.retries), (10, 10, 0), "{s:?}");
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].reason, DropReason::Rejected);
    assert_eq!(ev[0].points, 10);
    assert!(ev[0].message.contains("400") && ev[0].message.contains("missing field value"), "{ev:?}");
}

#[test]
fn retries_give_up_after_the_configured_time_and_count_it() {
    let l = Listener::start(vec![status(500)]);
    let events: Arc<Mutex<Vec<DropEvent>>> = Arc::default();
    let w = MetricsWriter::new(
        client(&l.url, Duration::from_secs(5)),
        WriterOptions { retry_max_elapsed: Duration::from_millis(600), ..opts() },
    )
    .unwrap();
    let e2 = events.clone();
    w.set_drop_callback(Some(Arc::new(move |e: &DropEvent| e2.lock().unwrap().push(e.clone()))));
    write_n(&w, 10);
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!((s.dropped_retries_exhausted, s.delivered), (10, 0), "{s:?}");
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.iter().map(|e| e.points).sum::<u64>(), 10);
    assert!(ev[0].message.contains("gave up") && ev[0].message.contains("500"), "{ev:?}");
}

#[test]
fn flush_on_size_and_on_interval() {
    let l = Listener::start(vec![ok()]);
    let w = MetricsWriter::new(
        client(&l.url, Duration::from_secs(5)),
        WriterOptions { batch_size: 100, flush_interval: Duration::from_secs(2), ..opts() },
    )
    .unwrap();
    // A full batch goes at once.
    let t = Instant::now();
    write_n(&w, 100);
    wait_for(Duration::from_secs(5), || (l.requests().len() == 1).then_some(())).unwrap();
    assert!(t.elapsed() < Duration::from_millis(1500), "the full batch waited {:?}", t.elapsed());
    // A partial one waits for the interval.
    let t = Instant::now();
    write_n(&w, 7);
    wait_for(Duration::from_secs(5), || (l.requests().len() == 2).then_some(())).unwrap();
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4), "partial batch after {waited:?}");
    assert_eq!(l.requests()[1].body.lines().count(), 7);
    assert_eq!(w.shutdown(Duration::from_secs(1)).delivered, 107);
}

#[test]
fn byte_bound_drops_oldest() {
    let l = Listener::start(vec![Reply::Hang]);
    // Lines "m v=Ni" of about 7 bytes; a 1,000-byte buffer.
    let w = MetricsWriter::new(
        client(&l.url, Duration::from_secs(30)),
        WriterOptions { batch_size: 10, max_buffer_bytes: 1_000, ..opts() },
    )
    .unwrap();
    write_n(&w, 1_000);
    let s = w.stats();
    assert!(s.buffered_bytes <= 1_000, "{s:?}");
    assert!(s.dropped_buffer_full > 0);
    assert_eq!(s.accepted, s.dropped_buffer_full + s.buffered_points, "{s:?}");
    let s = w.shutdown(Duration::from_millis(200));
    assert_eq!(s.accepted, s.dropped(), "{s:?}");
}
