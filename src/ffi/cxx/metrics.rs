//! Time-series metrics behind `rootstream::metrics::InfluxDBClient`, `MetricsWriter`,
//! `MetricsCollector` and `MetricsReporter`. Points cross as shared structs; options, results
//! and reports as JSON text. Callbacks reach C++ through `MessageObserver`s and never run after
//! the box that registered them is dropped.

use super::{Observer, R};
use crate::db::DatabaseManager;
use crate::error::Error;
use crate::ffi::c::metrics::Gate;
use crate::metrics::options::{metric_values, point_json, tag_pairs, writer_stats_json};
use crate::metrics::prometheus::LibraryMetrics;
use crate::metrics::reporter::percentiles_of;
use crate::metrics::{
    AlertRule, CacheCollector, ClientOptions, DatabaseCollector, DropEvent, FieldValue, InfluxDBClient,
    MetricsCollector, MetricsReporter, MetricsServer, MetricsWriter, Point, RetentionSetup, StreamCollector,
    StreamMetrics, SystemCollector, WriterOptions,
};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("message_observer.h");
        include!("rootstream-db/src/ffi/cxx/config.rs.h");
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        include!("rootstream-db/src/ffi/cxx/cache.rs.h");
        type ConfigBox = crate::ffi::cxx::config::ConfigBox;
        type DbBox = crate::ffi::cxx::db::DbBox;
        type RedisBox = crate::ffi::cxx::cache::RedisBox;
        type MessageObserver = crate::ffi::cxx::cache::MessageObserver;
    }

    struct MetricsTag {
        key: String,
        value: String,
    }

    /// `kind`: 0 float, 1 integer, 2 unsigned, 3 bool, 4 string (as the C API's constants).
    struct MetricsField {
        key: String,
        kind: u8,
        float_value: f64,
        int_value: i64,
        uint_value: u64,
        bool_value: bool,
        string_value: String,
    }

    struct MetricsPoint {
        measurement: String,
        tags: Vec<MetricsTag>,
        fields: Vec<MetricsField>,
        has_timestamp: bool,
        timestamp_ns: i64,
    }

    struct MetricsStreamState {
        stream_id: String,
        viewers: i64,
        bitrate_kbps: f64,
        fps: f64,
        width: i64,
        height: i64,
        duration_seconds: f64,
        bytes_sent: i64,
    }

    extern "Rust" {
        type MetricsClientBox;
        fn metrics_client_v1(url: &str, database: &str, options_json: &str) -> Result<Box<MetricsClientBox>>;
        fn metrics_client_v2(
            url: &str,
            org: &str,
            bucket: &str,
            token: &str,
            has_token: bool,
            options_json: &str,
        ) -> Result<Box<MetricsClientBox>>;
        fn metrics_client_from_config(cfg: &ConfigBox) -> Result<Box<MetricsClientBox>>;
        fn clone_box(self: &MetricsClientBox) -> Box<MetricsClientBox>;
        fn ping(self: &MetricsClientBox) -> Result<()>;
        fn write_point(self: &MetricsClientBox, point: &MetricsPoint) -> Result<()>;
        fn write_points(self: &MetricsClientBox, points: &[MetricsPoint]) -> Result<()>;
        fn write_lines(self: &MetricsClientBox, lines: &str) -> Result<()>;
        fn encode(self: &MetricsClientBox, point: &MetricsPoint) -> Result<String>;
        fn query(self: &MetricsClientBox, influxql: &str, epoch: &str) -> Result<String>;
        fn query_flux(self: &MetricsClientBox, flux: &str) -> Result<String>;
        fn create_database(self: &MetricsClientBox) -> Result<()>;
        fn create_bucket(self: &MetricsClientBox, retention_seconds: u64) -> Result<()>;
        fn setup_retention(self: &MetricsClientBox, options_json: &str) -> Result<()>;

        type MetricsWriterBox;
        fn metrics_writer_new(client: &MetricsClientBox, options_json: &str) -> Result<Box<MetricsWriterBox>>;
        fn write_point(self: &MetricsWriterBox, point: &MetricsPoint) -> Result<()>;
        fn write_points(self: &MetricsWriterBox, points: &[MetricsPoint]) -> Result<()>;
        fn write_line(self: &MetricsWriterBox, line: &str) -> Result<()>;
        fn flush(self: &MetricsWriterBox, timeout_ms: u64) -> Result<()>;
        fn shutdown(self: &MetricsWriterBox, timeout_ms: u64) -> String;
        fn stats_json(self: &MetricsWriterBox) -> String;
        /// The observer gets the reason as the channel and `{"points", "message"}` as payload.
        fn set_drop_observer(self: &MetricsWriterBox, observer: UniquePtr<MessageObserver>);

        type MetricsCollectorBox;
        fn metrics_collector_new() -> Box<MetricsCollectorBox>;
        fn add_system(self: &MetricsCollectorBox, disk_path: &str);
        fn add_database(self: &MetricsCollectorBox, db: &DbBox);
        fn add_cache(self: &MetricsCollectorBox, redis: &RedisBox, server: &str);
        fn update_stream(self: &MetricsCollectorBox, state: &MetricsStreamState) -> Result<()>;
        fn remove_stream(self: &MetricsCollectorBox, stream_id: &str) -> bool;
        /// The observer gets the collector's name as the channel and the message as payload.
        fn set_failure_observer(self: &MetricsCollectorBox, observer: UniquePtr<MessageObserver>);
        fn collect_once_json(self: &MetricsCollectorBox) -> String;
        fn start(self: &MetricsCollectorBox, writer: &MetricsWriterBox, interval_ms: u64) -> Result<()>;
        fn stop(self: &MetricsCollectorBox);
        fn stats_json(self: &MetricsCollectorBox) -> String;

        type MetricsReporterBox;
        fn metrics_reporter_new(client: &MetricsClientBox) -> Box<MetricsReporterBox>;
        fn metrics_reporter_without_client() -> Box<MetricsReporterBox>;
        fn attach_writer(self: &MetricsReporterBox, writer: &MetricsWriterBox);
        fn attach_db(self: &MetricsReporterBox, db: &DbBox);
        fn attach_collector(self: &MetricsReporterBox, collector: &MetricsCollectorBox);
        fn detach_all(self: &MetricsReporterBox);
        fn prometheus_text(self: &MetricsReporterBox) -> Result<String>;
        fn json_export(self: &MetricsReporterBox) -> String;
        fn serve(self: &MetricsReporterBox, addr: &str) -> Result<String>;
        fn stop_serving(self: &MetricsReporterBox);
        fn stream_dashboard(
            self: &MetricsReporterBox,
            stream_id: &str,
            start_ns: i64,
            end_ns: i64,
            interval: &str,
        ) -> Result<String>;
        fn percentiles(
            self: &MetricsReporterBox,
            measurement: &str,
            field: &str,
            tags_json: &str,
            start_ns: i64,
            end_ns: i64,
        ) -> Result<String>;
        fn add_rule(self: &MetricsReporterBox, rule_json: &str) -> Result<()>;
        /// The observer gets "alert" as the channel and the alert's JSON as payload.
        fn on_alert(self: &MetricsReporterBox, observer: UniquePtr<MessageObserver>);
        fn check(self: &MetricsReporterBox, values_json: &str) -> Result<String>;

        fn metrics_percentiles_of(values: &[f64]) -> Result<String>;
    }
}

use super::cache::{MessageObserver, RedisBox};
use super::config::ConfigBox;
use super::db::DbBox;
pub use bridge::{MetricsField, MetricsPoint, MetricsStreamState, MetricsTag};

fn point_of(p: &MetricsPoint) -> crate::Result<Point> {
    let mut out = Point::new(p.measurement.as_str());
    out.tags = p.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    for f in &p.fields {
        let v = match f.kind {
            0 => FieldValue::Float(f.float_value),
            1 => FieldValue::Integer(f.int_value),
            2 => FieldValue::Unsigned(f.uint_value),
            3 => FieldValue::Bool(f.bool_value),
            4 => FieldValue::String(f.string_value.clone()),
            k => return Err(Error::InvalidArgument(format!("field {:?} has unknown kind {k}", f.key))),
        };
        out.fields.push((f.key.clone(), v));
    }
    if p.has_timestamp {
        out.timestamp_ns = Some(p.timestamp_ns);
    }
    Ok(out)
}

fn points_of(points: &[MetricsPoint]) -> crate::Result<Vec<Point>> {
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            point_of(p).map_err(|e| match e {
                Error::InvalidArgument(m) => Error::InvalidArgument(format!("point {i}: {m}")),
                other => other,
            })
        })
        .collect()
}

// ------------------------------------------------------------------------------ client

/// The client a C++ `InfluxDBClient` holds.
pub struct MetricsClientBox(InfluxDBClient);

fn client_with(mut opts: ClientOptions, options_json: &str) -> R<Box<MetricsClientBox>> {
    if !options_json.is_empty() {
        opts.apply_json(options_json)?;
    }
    Ok(Box::new(MetricsClientBox(InfluxDBClient::new(opts)?)))
}

fn metrics_client_v1(url: &str, database: &str, options_json: &str) -> R<Box<MetricsClientBox>> {
    client_with(ClientOptions::v1(url, database), options_json)
}

fn metrics_client_v2(
    url: &str,
    org: &str,
    bucket: &str,
    token: &str,
    has_token: bool,
    options_json: &str,
) -> R<Box<MetricsClientBox>> {
    client_with(ClientOptions::v2(url, org, bucket, has_token.then(|| token.to_owned())), options_json)
}

fn metrics_client_from_config(cfg: &ConfigBox) -> R<Box<MetricsClientBox>> {
    client_with(ClientOptions::from_config(&cfg.0)?, "")
}

impl MetricsClientBox {
    fn clone_box(&self) -> Box<MetricsClientBox> {
        Box::new(MetricsClientBox(self.0.clone()))
    }

    fn ping(&self) -> R<()> {
        Ok(self.0.ping()?)
    }

    fn write_point(&self, point: &MetricsPoint) -> R<()> {
        Ok(self.0.write_point(&point_of(point)?)?)
    }

    fn write_points(&self, points: &[MetricsPoint]) -> R<()> {
        Ok(self.0.write_points(&points_of(points)?)?)
    }

    fn write_lines(&self, lines: &str) -> R<()> {
        if lines.trim().is_empty() {
            return Err(Error::InvalidArgument("no lines to write".into()).into());
        }
        Ok(self.0.write_lines(lines)?)
    }

    fn encode(&self, point: &MetricsPoint) -> R<String> {
        Ok(self.0.encode(&point_of(point)?)?)
    }

    fn query(&self, influxql: &str, epoch: &str) -> R<String> {
        Ok(self.0.query(influxql, super::nonempty(epoch))?.to_string())
    }

    fn query_flux(&self, flux: &str) -> R<String> {
        Ok(self.0.query_flux(flux)?)
    }

    fn create_database(&self) -> R<()> {
        Ok(self.0.create_database()?)
    }

    fn create_bucket(&self, retention_seconds: u64) -> R<()> {
        Ok(self.0.create_bucket(retention_seconds)?)
    }

    fn setup_retention(&self, options_json: &str) -> R<()> {
        let r =
            if options_json.is_empty() { RetentionSetup::default() } else { RetentionSetup::from_json(options_json)? };
        Ok(self.0.setup_retention(&r)?)
    }
}

// ------------------------------------------------------------------------------ writer

/// The writer a C++ `MetricsWriter` holds; dropping it shuts the writer down and ends its
/// callback.
pub struct MetricsWriterBox {
    w: Arc<MetricsWriter>,
    gate: Arc<Gate>,
}

impl Drop for MetricsWriterBox {
    fn drop(&mut self) {
        let t = self.w.options().shutdown_timeout;
        self.w.shutdown(t);
        self.gate.close();
    }
}

fn metrics_writer_new(client: &MetricsClientBox, options_json: &str) -> R<Box<MetricsWriterBox>> {
    let mut opts = WriterOptions::default();
    if !options_json.is_empty() {
        opts.apply_json(options_json)?;
    }
    Ok(Box::new(MetricsWriterBox { w: Arc::new(MetricsWriter::new(client.0.clone(), opts)?), gate: Gate::open() }))
}

impl MetricsWriterBox {
    fn write_point(&self, point: &MetricsPoint) -> R<()> {
        Ok(self.w.write_point(&point_of(point)?)?)
    }

    fn write_points(&self, points: &[MetricsPoint]) -> R<()> {
        Ok(self.w.write_points(&points_of(points)?)?)
    }

    fn write_line(&self, line: &str) -> R<()> {
        Ok(self.w.write_line(line.to_owned())?)
    }

    fn flush(&self, timeout_ms: u64) -> R<()> {
        Ok(self.w.flush(Duration::from_millis(timeout_ms))?)
    }

    fn shutdown(&self, timeout_ms: u64) -> String {
        let s = self.w.shutdown(Duration::from_millis(timeout_ms));
        self.gate.close();
        writer_stats_json(&s).to_string()
    }

    fn stats_json(&self) -> String {
        writer_stats_json(&self.w.stats()).to_string()
    }

    fn set_drop_observer(&self, observer: cxx::UniquePtr<MessageObserver>) {
        if observer.is_null() {
            self.w.set_drop_callback(None);
            return;
        }
        let (obs, gate) = (Observer(observer), self.gate.clone());
        self.w.set_drop_callback(Some(Arc::new(move |e: &DropEvent| {
            gate.run(|| {
                let payload = json!({"points": e.points, "message": e.message}).to_string();
                obs.notify(e.reason.as_str(), payload.as_bytes());
            });
        })));
    }
}

// ------------------------------------------------------------------------------ collector

/// The collectors a C++ `MetricsCollector` holds; dropping it stops collection and ends its
/// callback.
pub struct MetricsCollectorBox {
    c: Arc<MetricsCollector>,
    streams: Arc<StreamCollector>,
    gate: Arc<Gate>,
}

impl Drop for MetricsCollectorBox {
    fn drop(&mut self) {
        self.c.stop();
        self.gate.close();
    }
}

fn metrics_collector_new() -> Box<MetricsCollectorBox> {
    let c = MetricsCollector::new();
    let streams = Arc::new(StreamCollector::new());
    c.add(streams.clone());
    Box::new(MetricsCollectorBox { c: Arc::new(c), streams, gate: Gate::open() })
}

impl MetricsCollectorBox {
    fn add_system(&self, disk_path: &str) {
        self.c.add(Arc::new(SystemCollector::new(super::nonempty(disk_path).unwrap_or("/"))));
    }

    fn add_database(&self, db: &DbBox) {
        self.c.add(Arc::new(DatabaseCollector::new(db.0.clone())));
    }

    fn add_cache(&self, redis: &RedisBox, server: &str) {
        self.c.add(Arc::new(CacheCollector::new(redis.0.clone(), server)));
    }

    fn update_stream(&self, s: &MetricsStreamState) -> R<()> {
        Ok(self.streams.update(StreamMetrics {
            stream_id: s.stream_id.clone(),
            viewers: s.viewers,
            bitrate_kbps: s.bitrate_kbps,
            fps: s.fps,
            width: s.width,
            height: s.height,
            duration_seconds: s.duration_seconds,
            bytes_sent: s.bytes_sent,
        })?)
    }

    fn remove_stream(&self, stream_id: &str) -> bool {
        self.streams.remove(stream_id)
    }

    fn set_failure_observer(&self, observer: cxx::UniquePtr<MessageObserver>) {
        if observer.is_null() {
            self.c.set_failure_callback(None);
            return;
        }
        let (obs, gate) = (Observer(observer), self.gate.clone());
        self.c.set_failure_callback(Some(Arc::new(move |f| {
            gate.run(|| obs.notify(&f.collector, f.message.as_bytes()));
        })));
    }

    fn collect_once_json(&self) -> String {
        let r = self.c.collect_once();
        json!({
            "points": r.points.iter().map(point_json).collect::<Vec<_>>(),
            "failures": r.failures.iter().map(|f| json!({"collector": f.collector, "message": f.message})).collect::<Vec<_>>(),
        })
        .to_string()
    }

    fn start(&self, writer: &MetricsWriterBox, interval_ms: u64) -> R<()> {
        Ok(self.c.start(writer.w.clone(), Duration::from_millis(interval_ms))?)
    }

    fn stop(&self) {
        self.c.stop();
    }

    fn stats_json(&self) -> String {
        let v: Vec<_> = self
            .c
            .stats()
            .iter()
            .map(|s| json!({"name": s.name, "runs_ok": s.runs_ok, "runs_failed": s.runs_failed, "last_error": s.last_error}))
            .collect();
        serde_json::Value::from(v).to_string()
    }
}

// ------------------------------------------------------------------------------ reporter

#[derive(Default)]
struct Sources {
    writer: Option<Arc<MetricsWriter>>,
    db: Option<DatabaseManager>,
    collector: Option<Arc<MetricsCollector>>,
}

fn snapshot(s: &Mutex<Sources>) -> LibraryMetrics {
    let s = s.lock().unwrap_or_else(|p| p.into_inner());
    LibraryMetrics {
        writer: s.writer.as_ref().map(|w| w.stats()),
        pool: s.db.as_ref().map(|d| d.stats()),
        collectors: s
            .collector
            .as_ref()
            .map(|c| c.stats().into_iter().map(|st| (st.name, st.runs_ok, st.runs_failed)).collect())
            .unwrap_or_default(),
        extra: Vec::new(),
    }
}

/// The reporter a C++ `MetricsReporter` holds; dropping it stops the `/metrics` endpoint and
/// ends its alert callbacks.
pub struct MetricsReporterBox {
    r: Arc<MetricsReporter>,
    sources: Arc<Mutex<Sources>>,
    server: Mutex<Option<MetricsServer>>,
    gate: Arc<Gate>,
}

impl Drop for MetricsReporterBox {
    fn drop(&mut self) {
        self.stop_serving();
        self.gate.close();
    }
}

fn reporter_with(client: Option<InfluxDBClient>) -> Box<MetricsReporterBox> {
    Box::new(MetricsReporterBox {
        r: Arc::new(MetricsReporter::new(client)),
        sources: Arc::default(),
        server: Mutex::new(None),
        gate: Gate::open(),
    })
}

fn metrics_reporter_new(client: &MetricsClientBox) -> Box<MetricsReporterBox> {
    reporter_with(Some(client.0.clone()))
}

fn metrics_reporter_without_client() -> Box<MetricsReporterBox> {
    reporter_with(None)
}

fn metrics_percentiles_of(values: &[f64]) -> R<String> {
    Ok(serde_json::to_string(&percentiles_of(values)?)?)
}

impl MetricsReporterBox {
    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attach_writer(&self, writer: &MetricsWriterBox) {
        self.sources().writer = Some(writer.w.clone());
    }

    fn attach_db(&self, db: &DbBox) {
        self.sources().db = Some(db.0.clone());
    }

    fn attach_collector(&self, collector: &MetricsCollectorBox) {
        self.sources().collector = Some(collector.c.clone());
    }

    fn detach_all(&self) {
        *self.sources() = Sources::default();
    }

    fn prometheus_text(&self) -> R<String> {
        Ok(self.r.prometheus_text(&snapshot(&self.sources))?)
    }

    fn json_export(&self) -> String {
        self.r.json_export(&snapshot(&self.sources)).to_string()
    }

    fn serve(&self, addr: &str) -> R<String> {
        let mut slot = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(Error::State("the /metrics endpoint is already running".into()).into());
        }
        let (rep, src) = (self.r.clone(), self.sources.clone());
        let server = MetricsServer::start(addr, move || rep.prometheus_text(&snapshot(&src)))?;
        let local = server.local_addr().to_string();
        *slot = Some(server);
        Ok(local)
    }

    fn stop_serving(&self) {
        let s = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut s) = s {
            s.stop();
        }
    }

    fn stream_dashboard(&self, stream_id: &str, start_ns: i64, end_ns: i64, interval: &str) -> R<String> {
        Ok(serde_json::to_string(&self.r.stream_dashboard(stream_id, start_ns, end_ns, interval)?)?)
    }

    fn percentiles(&self, measurement: &str, field: &str, tags_json: &str, start_ns: i64, end_ns: i64) -> R<String> {
        let tags = if tags_json.is_empty() { Vec::new() } else { tag_pairs(tags_json)? };
        let refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Ok(serde_json::to_string(&self.r.percentiles(measurement, field, &refs, start_ns, end_ns)?)?)
    }

    fn add_rule(&self, rule_json: &str) -> R<()> {
        Ok(self.r.add_rule(AlertRule::from_json(rule_json)?)?)
    }

    fn on_alert(&self, observer: cxx::UniquePtr<MessageObserver>) {
        let (obs, gate) = (Observer(observer), self.gate.clone());
        self.r.on_alert(Arc::new(move |a| {
            gate.run(|| obs.notify("alert", serde_json::to_string(a).unwrap_or_default().as_bytes()));
        }));
    }

    fn check(&self, values_json: &str) -> R<String> {
        let values = metric_values(values_json)?;
        let refs: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        Ok(serde_json::to_string(&self.r.check(&refs))?)
    }
}
