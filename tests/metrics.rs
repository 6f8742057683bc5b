//! Metrics against the real servers: points written through every path read back exactly
//! (InfluxQL on InfluxDB 1.6 for the v1 path, VictoriaMetrics' export API for the v2 path),
//! including every escaping case; retention; rejected batches; bad input.

mod metrics_support;
mod support;

use metrics_support::*;
use rootstream_db::metrics::client::quote_ident;
use rootstream_db::metrics::line::now_ns;
use rootstream_db::metrics::{
    ClientOptions, DropEvent, DropReason, FieldValue, InfluxDBClient, MetricsWriter, Point, Precision, RetentionSetup,
    WriterOptions,
};
use rootstream_db::Error;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every case that needs escaping, in the measurement, tag keys and values, field keys and
/// string values, plus characters that need none.
fn escaping_points(measurement: &str, t0: i64) -> Vec<Point> {
    vec![
        Point::new(measurement)
            .tag("tag key", "value with spaces")
            .tag("comma,key", "comma,value")
            .tag("eq=key", "eq=value")
            .field("field key", "string with \"quotes\" and \\ backslash")
            .field("comma,field", 1.5)
            .field("eq=field", -42i64)
            .field("b", true)
            .timestamp_ns(t0),
        Point::new(measurement)
            .tag("tag key", r"back\slash")
            .tag("unicode", "ストリーム ü")
            .field("field key", "ends with backslash \\")
            .field("comma,field", 2.25e-7)
            .field("eq=field", i64::MAX)
            .field("b", false)
            .timestamp_ns(t0 + 1),
        Point::new(measurement)
            .tag("tag key", "a\"b")
            .field("field key", "'single' and = , chars")
            .field("comma,field", -0.0)
            .field("eq=field", i64::MIN)
            .field("b", true)
            .field("u", 7u64)
            .timestamp_ns(t0 + 2),
    ]
}

fn as_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Float(f) => json!(f),
        FieldValue::Integer(i) => json!(i),
        FieldValue::Unsigned(u) => json!(u),
        FieldValue::Bool(b) => json!(b),
        FieldValue::String(s) => json!(s),
    }
}

/// Reads the measurement back with InfluxQL and checks every point's tags, fields and time.
fn check_read_back(c: &InfluxDBClient, measurement: &str, points: &[Point]) {
    let rows = c.query_rows(&format!("SELECT * FROM {} ORDER BY time", quote_ident(measurement)), Some("ns")).unwrap();
    assert_eq!(rows.len(), points.len(), "rows of {measurement:?}: {rows:?}");
    for (row, p) in rows.iter().zip(points) {
        assert_eq!(row["time"], json!(p.timestamp_ns.unwrap()), "{row:?}");
        for (k, v) in &p.tags {
            assert_eq!(row[k], json!(v), "tag {k:?} in {row:?}");
        }
        for (k, v) in &p.fields {
            let got = &row[k];
            match v {
                // JSON has no -0.0 / exponent distinction that matters here: compare numerically.
                FieldValue::Float(f) => assert_eq!(got.as_f64().unwrap(), *f, "field {k:?} in {row:?}"),
                _ => assert_eq!(got, &as_json(v), "field {k:?} in {row:?}"),
            }
        }
        // Tags the point does not have are null.
        let tag_keys: Vec<&str> = points.iter().flat_map(|p| p.tags.iter().map(|(k, _)| k.as_str())).collect();
        for k in tag_keys {
            if !p.tags.iter().any(|(tk, _)| tk == k) {
                assert_eq!(row[k], Value::Null);
            }
        }
    }
}

#[test]
fn v1_points_read_back_exactly_through_every_write_path() {
    let c = v1_client("mt_v1");
    let t0 = now_ns() - 60_000_000_000;
    // One point at a time.
    let m1 = "single point, with = escaping";
    let pts = escaping_points(m1, t0);
    for p in &pts {
        c.write_point(p).unwrap();
    }
    check_read_back(&c, m1, &pts);
    // One batch.
    let m2 = "batch measurement";
    let pts = escaping_points(m2, t0);
    c.write_points(&pts).unwrap();
    check_read_back(&c, m2, &pts);
    // Through the background writer.
    let m3 = "writer,measurement";
    let pts = escaping_points(m3, t0);
    let w = MetricsWriter::new(c.clone(), WriterOptions { batch_size: 2, ..WriterOptions::default() }).unwrap();
    w.write_points(&pts).unwrap();
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.shutdown(Duration::from_secs(5));
    assert_eq!((s.accepted, s.delivered, s.dropped()), (3, 3, 0), "{s:?}");
    check_read_back(&c, m3, &pts);
    // The line text, for the record: tags sorted, everything escaped.
    assert_eq!(
        c.encode(&pts[2]).unwrap(),
        format!(
            r#"writer\,measurement,tag\ key=a"b field\ key="'single' and = , chars",comma\,field=-0.0,eq\=field={}i,b=true,u=7i {}"#,
            i64::MIN,
            t0 + 2
        )
    );
}

#[test]
fn v1_every_precision() {
    for (precision, unit) in [
        (Precision::Nanoseconds, 1i64),
        (Precision::Microseconds, 1_000),
        (Precision::Milliseconds, 1_000_000),
        (Precision::Seconds, 1_000_000_000),
    ] {
        let db = unique_db("mt_prec");
        let mut o = ClientOptions::v1(influx_url(), &db);
        o.precision = precision;
        let c = InfluxDBClient::new(o).unwrap();
        c.create_database().unwrap();
        let t = 1_790_000_000_123_456_789i64;
        c.write_point(&Point::new("p").field("v", 1i64).timestamp_ns(t)).unwrap();
        let rows = c.query_rows("SELECT v FROM p", Some("ns")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["time"], json!(t / unit * unit), "{precision:?}");
    }
}

#[test]
fn v1_retention_policies_and_continuous_query() {
    let c = v1_client("mt_rp");
    let r = RetentionSetup::default();
    c.setup_retention(&r).unwrap();
    // Idempotent.
    c.setup_retention(&r).unwrap();
    let rps = c.query_rows("SHOW RETENTION POLICIES", None).unwrap();
    let find = |name: &str| {
        rps.iter().find(|row| row["name"] == json!(name)).cloned().unwrap_or_else(|| panic!("{name} in {rps:?}"))
    };
    assert_eq!(find("raw_1d")["duration"], json!("24h0m0s"));
    assert_eq!(find("raw_1d")["default"], json!(true));
    assert_eq!(find("downsampled_30d")["duration"], json!("720h0m0s"));
    assert_eq!(find("downsampled_30d")["default"], json!(false));
    let cqs = c.query("SHOW CONTINUOUS QUERIES", None).unwrap();
    let text = cqs.to_string();
    assert!(text.contains("downsample_5m") && text.contains("mean(*)") && text.contains("downsampled_30d"), "{text}");
    // A changed setup replaces durations and the continuous query.
    let r2 = RetentionSetup { raw_duration: "2d".into(), interval: "10m".into(), ..RetentionSetup::default() };
    c.setup_retention(&r2).unwrap();
    let rps = c.query_rows("SHOW RETENTION POLICIES", None).unwrap();
    assert!(rps.iter().any(|row| row["name"] == json!("raw_1d") && row["duration"] == json!("48h0m0s")), "{rps:?}");
    let text = c.query("SHOW CONTINUOUS QUERIES", None).unwrap().to_string();
    assert!(text.contains("time(10m)"), "{text}");
    // Points go to the default (raw) policy.
    c.write_point(&Point::new("rp_probe").field("v", 1.0)).unwrap();
    let rows =
        c.query_rows(&format!("SELECT v FROM {}.\"raw_1d\".\"rp_probe\"", quote_ident(&db_of(&c))), None).unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn v1_continuous_query_downsamples_into_the_second_policy() {
    let c = v1_client("mt_cq");
    // A short interval so the server's continuous-query service (run-interval 1 s) runs it soon.
    let r =
        RetentionSetup { interval: "2s".into(), continuous_query: "downsample_2s".into(), ..RetentionSetup::default() };
    c.setup_retention(&r).unwrap();
    // A basic continuous query covers the interval that has just ended, so the points go into
    // an interval that ends after they are written.
    let t = now_ns() + 1_000_000_000;
    let pts: Vec<Point> =
        (0..4).map(|i| Point::new("cq_m").tag("s", "1").field("v", i as f64).timestamp_ns(t + i)).collect();
    c.write_points(&pts).unwrap();
    let db = db_of(&c);
    let got = wait_for(Duration::from_secs(20), || {
        let rows =
            c.query_rows(&format!("SELECT * FROM {}.\"downsampled_30d\".\"cq_m\"", quote_ident(&db)), None).ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .expect("the continuous query wrote no downsampled point within 20 s");
    assert!(got.iter().any(|r| r["mean_v"] == json!(1.5) && r["s"] == json!("1")), "{got:?}");
}

fn db_of(c: &InfluxDBClient) -> String {
    match &c.options().api {
        rootstream_db::metrics::InfluxApi::V1 { database, .. } => database.clone(),
        _ => unreachable!(),
    }
}

#[test]
fn v2_points_read_back_from_victoriametrics() {
    let c = v2_client();
    let m = format!("v2 m,{}", rand::random::<u32>());
    // VictoriaMetrics keeps milliseconds and numbers only; strings are not stored there.
    let t0 = (now_ns() / 1_000_000 - 10_000) * 1_000_000;
    let p1 = Point::new(&m)
        .tag("tag key", "a,b=c d")
        .tag("path", r"x\y")
        .field("f", 1.25)
        .field("i", -3i64)
        .field("u", 9u64)
        .field("b", true)
        .timestamp_ns(t0);
    let p2 = Point::new(&m)
        .tag("tag key", "a,b=c d")
        .tag("path", r"x\y")
        .field("f", 2.5)
        .field("i", 4i64)
        .field("u", 10u64)
        .field("b", false)
        .timestamp_ns(t0 + 1_000_000);
    c.write_points(&[p1]).unwrap();
    // And through the background writer.
    let w = MetricsWriter::new(c.clone(), WriterOptions::default()).unwrap();
    w.write_point(&p2).unwrap();
    w.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(w.stats().delivered, 1);
    let selector = format!("{{__name__=~\"{}_.*\"}}", regex_escape(&m));
    let series = wait_for(Duration::from_secs(15), || {
        let s = vm_export(&selector);
        (s.len() == 4 && s.iter().all(|x| x.values.len() == 2)).then_some(s)
    })
    .unwrap_or_else(|| panic!("VictoriaMetrics did not show the 2 points x 4 fields: {:?}", vm_export(&selector)));
    let labels: BTreeMap<String, String> =
        [("tag key".to_owned(), "a,b=c d".to_owned()), ("path".to_owned(), r"x\y".to_owned())].into();
    let expect = [("b", [1.0, 0.0]), ("f", [1.25, 2.5]), ("i", [-3.0, 4.0]), ("u", [9.0, 10.0])];
    for (s, (field, values)) in series.iter().zip(expect) {
        assert_eq!(s.name, format!("{m}_{field}"));
        assert_eq!(s.labels, labels);
        assert_eq!(s.values, values.to_vec(), "{s:?}");
        assert_eq!(s.timestamps_ms, vec![t0 / 1_000_000, t0 / 1_000_000 + 1]);
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[test]
fn rejected_batches_are_dropped_counted_and_reported() {
    let c = v1_client("mt_rej");
    c.write_point(&Point::new("conflict").field("v", 1.0)).unwrap();
    let events: Arc<Mutex<Vec<DropEvent>>> = Arc::default();
    let w =
        MetricsWriter::new(c.clone(), WriterOptions { batch_size: 3, log_drops: false, ..WriterOptions::default() })
            .unwrap();
    let e2 = events.clone();
    w.set_drop_callback(Some(Arc::new(move |e: &DropEvent| e2.lock().unwrap().push(e.clone()))));
    // A field type conflict (integer into a float field): InfluxDB refuses it with a 400.
    let t = now_ns();
    w.write_points(&[
        Point::new("conflict").field("v", 2i64).timestamp_ns(t),
        Point::new("conflict").field("v", 3.0).timestamp_ns(t + 1),
        Point::new("conflict").field("v", 4.0).timestamp_ns(t + 2),
    ])
    .unwrap();
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!(s.dropped_rejected, 1, "{s:?}");
    assert_eq!(s.delivered, 2, "{s:?}");
    assert!(s.last_error.as_deref().unwrap_or("").contains("conflict"), "{s:?}");
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].reason, ev[0].points), (DropReason::Rejected, 1));
    assert!(ev[0].message.contains("400"), "{ev:?}");
    assert_eq!(c.query_rows("SELECT count(v) FROM conflict", None).unwrap()[0]["count"], json!(3));

    // An unknown database: every point of the batch is dropped, with the server's reason.
    let missing = InfluxDBClient::new(ClientOptions::v1(influx_url(), unique_db("mt_missing"))).unwrap();
    let w = MetricsWriter::new(missing, WriterOptions { log_drops: false, ..WriterOptions::default() }).unwrap();
    for i in 0..5 {
        w.write_point(&Point::new("m").field("v", i)).unwrap();
    }
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!((s.dropped_rejected, s.delivered), (5, 0), "{s:?}");
    assert!(s.last_error.unwrap().contains("database not found"));
}

#[test]
fn bad_input_is_refused_and_nothing_is_sent() {
    let c = v1_client("mt_bad");
    let bad = [
        Point::new("m"),
        Point::new("").field("v", 1i64),
        Point::new("m").field("v", f64::NAN),
        Point::new("m").field("v", f64::INFINITY),
        Point::new("m").field("", 1i64),
        Point::new("m").field("time", 1i64),
        Point::new("m").tag("k", "").field("v", 1i64),
        Point::new("m\n").field("v", 1i64),
        Point::new("m").field("u", u64::MAX),
    ];
    let w = MetricsWriter::new(c.clone(), WriterOptions::default()).unwrap();
    for p in &bad {
        assert!(matches!(c.write_point(p), Err(Error::InvalidArgument(_))), "{p:?}");
        assert!(matches!(w.write_point(p), Err(Error::InvalidArgument(_))), "{p:?}");
        // A batch with one bad point sends nothing.
        let good = Point::new("m").field("v", 1i64);
        assert!(c.write_points(&[good.clone(), p.clone()]).is_err());
        assert!(w.write_points(&[good, p.clone()]).is_err());
    }
    assert!(w.write_line("m v=1i\nm v=2i".into()).is_err());
    w.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(w.stats().accepted, 0);
    assert!(c.query_rows("SELECT * FROM m", None).unwrap().is_empty());
    // InfluxQL errors come back as errors.
    assert!(matches!(c.query("SELEKT 1", None), Err(Error::Query(_))));
    // A shut-down writer refuses points.
    w.shutdown(Duration::from_secs(1));
    assert!(matches!(w.write_point(&Point::new("m").field("v", 1i64)), Err(Error::State(_))));
}

#[test]
fn ping_and_query_answers() {
    let c = v1_client("mt_ping");
    c.ping().unwrap();
    v2_client().ping().unwrap();
    let v = c.query("SHOW DATABASES", None).unwrap();
    assert!(v.to_string().contains(&db_of(&c)));
    let down =
        InfluxDBClient::new(ClientOptions::v1(format!("http://127.0.0.1:{}", support::closed_port()), "x")).unwrap();
    assert!(matches!(down.ping(), Err(Error::Connection(_))));
    assert!(matches!(down.write_point(&Point::new("m").field("v", 1i64)), Err(Error::Connection(_))));
}
