//! Collectors on the stack's own servers (/proc, Redis INFO, PostgreSQL), the reporter's
//! dashboard and percentiles read from InfluxDB 1.6, and the Prometheus export checked by
//! `promtool check metrics` (also through the HTTP `/metrics` endpoint).

mod metrics_support;
mod support;

use metrics_support::*;
use rootstream_db::metrics::collector::CollectorFailure;
use rootstream_db::metrics::line::now_ns;
use rootstream_db::metrics::prometheus::Family;
use rootstream_db::metrics::{
    CacheCollector, DatabaseCollector, FieldValue, LibraryMetrics, MetricsCollector, MetricsReporter, MetricsServer,
    MetricsWriter, Point, StreamCollector, StreamMetrics, SystemCollector, WriterOptions,
};
use rootstream_db::{DatabaseManager, RedisClient};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian prometheus; scripts/install-deps.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn field<'a>(p: &'a Point, k: &str) -> &'a FieldValue {
    &p.fields.iter().find(|(name, _)| name == k).unwrap_or_else(|| panic!("{k} in {p:?}")).1
}

fn int(v: &FieldValue) -> i64 {
    match v {
        FieldValue::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn library_snapshot(w: &MetricsWriter, db: Option<&DatabaseManager>, mc: &MetricsCollector) -> LibraryMetrics {
    LibraryMetrics {
        writer: Some(w.stats()),
        pool: db.map(|d| d.stats()),
        collectors: mc.stats().into_iter().map(|s| (s.name, s.runs_ok, s.runs_failed)).collect(),
        // Sessions, MFA failures, backups and cache GETs are the library's own counters; the
        // application adds what only it knows.
        extra: vec![Family::gauge("rootstream_sessions_active", "Sessions currently valid.").sample(&[], 3.0)],
    }
}

#[test]
fn collectors_read_the_stacks_servers_and_go_to_influx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = rt.block_on(support::fresh_config());
    let db = DatabaseManager::new(&cfg).unwrap();
    let redis = RedisClient::open(support::stack().redis_url(), Duration::from_secs(5)).unwrap();
    let mc = MetricsCollector::new();
    mc.add(Arc::new(SystemCollector::new("/")));
    mc.add(Arc::new(DatabaseCollector::new(db.clone())));
    mc.add(Arc::new(CacheCollector::new(redis, "stack")));
    let streams = Arc::new(StreamCollector::new());
    streams
        .update(StreamMetrics {
            stream_id: "s-1".into(),
            viewers: 12,
            bitrate_kbps: 6000.0,
            fps: 59.94,
            width: 1920,
            height: 1080,
            duration_seconds: 42.5,
            bytes_sent: 1 << 30,
        })
        .unwrap();
    mc.add(streams.clone());
    let r = mc.collect_once();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let by = |m: &str| r.points.iter().find(|p| p.measurement == m).unwrap_or_else(|| panic!("{m}"));
    assert!(int(field(by("system"), "memory_total_bytes")) > 0);
    assert!(int(field(by("system"), "process_rss_bytes")) > 0);
    assert!(int(field(by("database"), "connections")) >= 1);
    assert!(int(field(by("database"), "size_bytes")) > 0);
    assert!(int(field(by("cache"), "total_commands")) >= 1);
    assert!(int(field(by("cache"), "connected_clients")) >= 1);
    assert_eq!(int(field(by("stream"), "viewers")), 12);

    // Periodically into InfluxDB, with one collector that fails each time.
    let c = v1_client("mt_coll");
    let w = Arc::new(
        MetricsWriter::new(
            c.clone(),
            WriterOptions { flush_interval: Duration::from_millis(100), ..WriterOptions::default() },
        )
        .unwrap(),
    );
    mc.add(Arc::new(SystemCollector::new("/").with_proc_root("/nonexistent")));
    let failures: Arc<Mutex<Vec<CollectorFailure>>> = Arc::default();
    let f2 = failures.clone();
    mc.set_failure_callback(Some(Arc::new(move |f: &CollectorFailure| f2.lock().unwrap().push(f.clone()))));
    mc.start(w.clone(), Duration::from_millis(300)).unwrap();
    assert!(mc.start(w.clone(), Duration::from_millis(300)).is_err());
    let rows = wait_for(Duration::from_secs(15), || {
        let n = c.query_rows("SELECT count(viewers) FROM stream", None).ok()?.first()?.get("count")?.as_i64()?;
        (n >= 3).then_some(n)
    });
    mc.stop();
    assert!(!mc.is_running());
    assert!(rows.is_some(), "fewer than 3 rounds reached InfluxDB");
    w.flush(Duration::from_secs(10)).unwrap();
    for m in ["system", "database", "cache", "stream"] {
        let rows = c.query_rows(&format!("SELECT * FROM \"{m}\""), None).unwrap();
        assert!(rows.len() >= 3, "{m}: {rows:?}");
    }
    let cache = c.query_rows("SELECT hit_rate, server FROM cache LIMIT 1", None).unwrap();
    assert_eq!(cache[0]["server"], json!("stack"));
    let f = failures.lock().unwrap().clone();
    assert!(f.len() >= 3 && f.iter().all(|x| x.collector == "system" && x.message.contains("/nonexistent")), "{f:?}");
    let stats = mc.stats();
    assert!(stats[1].runs_ok >= 4 && stats[4].runs_failed >= 3, "{stats:?}");

    // The library's counters as Prometheus text pass promtool.
    let rep = MetricsReporter::new(Some(c.clone()));
    let text = rep.prometheus_text(&library_snapshot(&w, Some(&db), &mc)).unwrap();
    let (ok, out) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{out}\n{text}");
    assert!(text.contains("rootstream_metrics_points_dropped_total{reason=\"buffer_full\"} 0"), "{text}");
    assert!(text.contains("rootstream_collector_runs_total{collector=\"system\",outcome=\"error\"}"), "{text}");
    for family in [
        "rootstream_sessions_total",
        "rootstream_mfa_failures_total",
        "rootstream_backups_total",
        "rootstream_backup_last_success_timestamp_seconds",
        "rootstream_cache_gets_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing:\n{text}");
    }
    // An application family of a built-in name replaces it (no duplicate family).
    let mut custom = library_snapshot(&w, Some(&db), &mc);
    custom.extra.push(Family::counter("rootstream_mfa_failures_total", "Counted by the application.").sample(&[], 7.0));
    let replaced = rep.prometheus_text(&custom).unwrap();
    assert!(replaced.contains("rootstream_mfa_failures_total 7"), "{replaced}");
    assert!(promtool_check(&replaced).0, "{replaced}");
    let j = rep.json_export(&library_snapshot(&w, Some(&db), &mc));
    assert_eq!(j["rootstream_metrics_points_dropped_total"]["type"], json!("counter"));
    assert_eq!(j["rootstream_sessions_active"]["samples"][0]["value"], json!(3.0));
    db.close();
}

#[test]
fn promtool_refuses_what_we_refuse_and_the_http_endpoint_serves_valid_text() {
    // The checks of our renderer match promtool's: a name it would refuse we refuse too.
    let (ok, _) = promtool_check("# HELP lat_ms x\n# TYPE lat_ms gauge\nlat_ms 1\n");
    assert!(!ok, "promtool accepted a _ms unit");
    let (ok, out) =
        promtool_check("# HELP good_requests_total x\n# TYPE good_requests_total counter\ngood_requests_total 1\n");
    assert!(ok, "{out}");

    let c = v1_client("mt_http");
    let w = Arc::new(MetricsWriter::new(c, WriterOptions::default()).unwrap());
    w.write_point(&Point::new("m").field("v", 1i64)).unwrap();
    w.flush(Duration::from_secs(10)).unwrap();
    let mc = Arc::new(MetricsCollector::new());
    let rep = Arc::new(MetricsReporter::new(None));
    let (w2, mc2, rep2) = (w.clone(), mc.clone(), rep.clone());
    let mut server =
        MetricsServer::start("127.0.0.1:0", move || rep2.prometheus_text(&library_snapshot(&w2, None, &mc2))).unwrap();
    let url = format!("http://{}", server.local_addr());
    let resp = ureq::get(&format!("{url}/metrics")).call().unwrap();
    assert_eq!(resp.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let body = resp.into_string().unwrap();
    let (ok, out) = promtool_check(&body);
    assert!(ok, "{out}\n{body}");
    assert!(body.contains("rootstream_metrics_points_delivered_total 1"), "{body}");
    match ureq::get(&format!("{url}/other")).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("{other:?}"),
    }
    server.stop();
    assert!(ureq::get(&format!("{url}/metrics")).timeout(Duration::from_secs(2)).call().is_err());
}

#[test]
fn dashboard_series_and_percentiles_from_influx() {
    let c = v1_client("mt_rep");
    let minute = 60_000_000_000i64;
    let start = (now_ns() / minute - 10) * minute;
    let mut pts = Vec::new();
    // Three minutes of a stream, one point every 6 s; and another stream that must not show.
    for m in 0..3 {
        for k in 0..10 {
            let t = start + m * minute + k * 6_000_000_000;
            let s = StreamMetrics {
                stream_id: "s'1".into(),
                viewers: 10 * (m + 1),
                bitrate_kbps: 1000.0 + k as f64,
                fps: 60.0,
                width: 1280,
                height: 720,
                duration_seconds: (m * 60 + k * 6) as f64,
                bytes_sent: (m * 10 + k) * 1000,
            };
            pts.push(s.to_point(t));
            pts.push(StreamMetrics { stream_id: "other".into(), viewers: 999, ..s }.to_point(t));
        }
    }
    // 1..=100 for the percentiles.
    for i in 1..=100 {
        pts.push(Point::new("latency").tag("op", "join").field("seconds", i as f64).timestamp_ns(start + i));
    }
    c.write_points(&pts).unwrap();
    let rep = MetricsReporter::new(Some(c));
    let d = rep.stream_dashboard("s'1", start, start + 3 * minute - 1, "1m").unwrap();
    assert_eq!(d.len(), 3, "{d:?}");
    for (m, row) in d.iter().enumerate() {
        assert_eq!(row.time_ns, start + m as i64 * minute);
        assert_eq!(row.viewers, Some(10.0 * (m as f64 + 1.0)));
        assert_eq!(row.bitrate_kbps, Some(1004.5));
        assert_eq!(row.fps, Some(60.0));
        assert_eq!(row.bytes_sent, Some(((m as i64 * 10 + 9) * 1000) as f64));
    }
    assert!(rep.stream_dashboard("s'1", start, start + minute, "1m; DROP").is_err());
    let p = rep.percentiles("latency", "seconds", &[("op", "join")], start, start + 1_000).unwrap();
    assert_eq!((p.count, p.p50, p.p95, p.p99), (100, 50.0, 95.0, 99.0));
    assert!(rep.percentiles("latency", "seconds", &[("op", "none")], start, start + 1_000).is_err());
}
