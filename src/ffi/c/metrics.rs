//! C functions for the time-series metrics: `InfluxDBClient`, the background `MetricsWriter`,
//! `MetricsCollector` and `MetricsReporter` (see docs/metrics.md).

use super::config::rsdb_config;
use super::db::rsdb_db;
use super::redis::rsdb_redis;
use super::{arg_ref, arg_str, guard, hand_out, opt_str, out_ptr, release_with, set_out_string};
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use crate::metrics::options::{metric_values, point_json, tag_pairs};
use crate::metrics::prometheus::LibraryMetrics;
use crate::metrics::reporter::percentiles_of;
use crate::metrics::{
    AlertRule, CacheCollector, ClientOptions, DatabaseCollector, DropEvent, FieldValue, InfluxDBClient,
    MetricsCollector, MetricsReporter, MetricsServer, MetricsWriter, Point, RetentionSetup, StreamCollector,
    StreamMetrics, SystemCollector, WriterOptions, WriterStats,
};
use serde_json::json;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A client for one InfluxDB server and database (v1) or bucket (v2). Thread-safe.
pub struct rsdb_metrics_client(InfluxDBClient);

/// A background batching writer over a client. Thread-safe.
pub struct rsdb_metrics_writer {
    w: Arc<MetricsWriter>,
    gate: Arc<Gate>,
}

/// Collectors (stream, system, database, cache) run once or periodically into a writer.
/// Thread-safe.
pub struct rsdb_metrics_collector {
    c: Arc<MetricsCollector>,
    streams: Arc<StreamCollector>,
    gate: Arc<Gate>,
}

/// Dashboards, percentiles, exports, the `/metrics` endpoint and threshold alerts. Thread-safe.
pub struct rsdb_metrics_reporter {
    r: Arc<MetricsReporter>,
    sources: Arc<Mutex<Sources>>,
    server: Mutex<Option<MetricsServer>>,
    gate: Arc<Gate>,
}

/// `rsdb_metrics_field.kind`: a float (`float_value`; NaN and infinities are refused).
pub const RSDB_METRICS_FLOAT: c_int = 0;
/// `rsdb_metrics_field.kind`: a signed integer (`int_value`).
pub const RSDB_METRICS_INTEGER: c_int = 1;
/// `rsdb_metrics_field.kind`: an unsigned integer (`uint_value`; written as an integer over
/// the v1 API, which has no unsigned type, so it must fit in int64 there).
pub const RSDB_METRICS_UNSIGNED: c_int = 2;
/// `rsdb_metrics_field.kind`: a boolean (`bool_value`, zero or not).
pub const RSDB_METRICS_BOOL: c_int = 3;
/// `rsdb_metrics_field.kind`: a string (`string_value`, UTF-8).
pub const RSDB_METRICS_STRING: c_int = 4;

/// One tag of a point. Both strings are required, UTF-8, non-empty.
#[repr(C)]
pub struct rsdb_metrics_tag {
    pub key: *const c_char,
    pub value: *const c_char,
}

/// One field of a point: `key` (required) and the value member that `kind` (an
/// `RSDB_METRICS_*` constant) names; the other members are ignored.
#[repr(C)]
pub struct rsdb_metrics_field {
    pub key: *const c_char,
    pub kind: c_int,
    pub float_value: f64,
    pub int_value: i64,
    pub uint_value: u64,
    pub bool_value: c_int,
    pub string_value: *const c_char,
}

/// A point in structured form; the library writes its line protocol (escaping, sorted tags,
/// the client's precision). `tags` may be NULL when `tag_count` is 0; at least one field is
/// required. With `has_timestamp` zero the server stamps the point on arrival.
#[repr(C)]
pub struct rsdb_metrics_point {
    pub measurement: *const c_char,
    pub tags: *const rsdb_metrics_tag,
    pub tag_count: usize,
    pub fields: *const rsdb_metrics_field,
    pub field_count: usize,
    pub has_timestamp: c_int,
    pub timestamp_ns: i64,
}

/// The state of one live stream, as the streaming code reports it (`stream_id` required).
#[repr(C)]
pub struct rsdb_stream_metrics {
    pub stream_id: *const c_char,
    pub viewers: i64,
    pub bitrate_kbps: f64,
    pub fps: f64,
    pub width: i64,
    pub height: i64,
    pub duration_seconds: f64,
    pub bytes_sent: i64,
}

/// A writer's counters and gauges. Every accepted point ends delivered or dropped, and every
/// drop is counted by reason.
#[repr(C)]
#[derive(Default)]
pub struct rsdb_metrics_writer_stats {
    /// Points accepted by the write functions.
    pub accepted: u64,
    /// Points the server took.
    pub delivered: u64,
    /// Dropped because the buffer (points or bytes) was full; the oldest go first.
    pub dropped_buffer_full: u64,
    /// Dropped because the server refused the batch for good (a 4xx other than 408/429).
    pub dropped_rejected: u64,
    /// Dropped after the server stayed down or failing for `retry_max_elapsed_ms`.
    pub dropped_retries_exhausted: u64,
    /// Still buffered when the shutdown deadline passed.
    pub dropped_shutdown: u64,
    /// Write requests that succeeded.
    pub batches: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Points held now (queued and in flight).
    pub buffered_points: u64,
    /// Line-protocol bytes held now.
    pub buffered_bytes: u64,
}

impl From<&WriterStats> for rsdb_metrics_writer_stats {
    fn from(s: &WriterStats) -> Self {
        rsdb_metrics_writer_stats {
            accepted: s.accepted,
            delivered: s.delivered,
            dropped_buffer_full: s.dropped_buffer_full,
            dropped_rejected: s.dropped_rejected,
            dropped_retries_exhausted: s.dropped_retries_exhausted,
            dropped_shutdown: s.dropped_shutdown,
            batches: s.batches,
            retries: s.retries,
            buffered_points: s.buffered_points,
            buffered_bytes: s.buffered_bytes,
        }
    }
}

/// Called for points a writer dropped: `reason` (`buffer_full`, `rejected`,
/// `retries_exhausted`, `shutdown`), how many points since the last call for that reason, and
/// the latest message (the server's answer, or what was full). Strings are valid only during
/// the call. It runs on one of the writer's sender threads, or on the thread calling
/// `rsdb_metrics_writer_flush`/`_shutdown`/`_free`, one call at a time; it must not call
/// `rsdb_metrics_writer_flush`, `_shutdown` or `_free` itself. Once `rsdb_metrics_writer_shutdown`
/// or `rsdb_metrics_writer_free` has returned it is never called again.
pub type rsdb_metrics_drop_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, reason: *const c_char, points: u64, message: *const c_char)>;

/// Called with a collector's failure: the collector's name and the message. Runs on the
/// collection thread (or the thread calling `rsdb_metrics_collector_collect_once`); never after
/// `rsdb_metrics_collector_free` has returned.
pub type rsdb_metrics_failure_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, collector: *const c_char, message: *const c_char)>;

/// Called with an alert that fired, as JSON (`rule`, `metric`, `value`, `threshold`,
/// `severity`, `message`), on the thread calling `rsdb_metrics_reporter_check`; never after
/// `rsdb_metrics_reporter_free` has returned.
pub type rsdb_metrics_alert_cb = Option<unsafe extern "C" fn(user_data: *mut c_void, alert_json: *const c_char)>;

struct UserData(*mut c_void);
// SAFETY: the caller promises user_data may be used from library threads until the callback
// is replaced or its handle is freed; the library only passes it back.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Lets callbacks run only while their handle is alive: each call holds the read side; closing
/// takes the write side, so it waits for a call in progress and no call starts after it.
#[derive(Default)]
pub(crate) struct Gate(RwLock<bool>);

impl Gate {
    pub(crate) fn open() -> Arc<Gate> {
        Arc::new(Gate(RwLock::new(true)))
    }

    pub(crate) fn run(&self, f: impl FnOnce()) {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        if *g {
            f();
        }
    }

    pub(crate) fn close(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

unsafe fn field_from_c(f: &rsdb_metrics_field) -> Result<(String, FieldValue)> {
    let key = arg_str(f.key, "field key")?.to_owned();
    let v = match f.kind {
        RSDB_METRICS_FLOAT => FieldValue::Float(f.float_value),
        RSDB_METRICS_INTEGER => FieldValue::Integer(f.int_value),
        RSDB_METRICS_UNSIGNED => FieldValue::Unsigned(f.uint_value),
        RSDB_METRICS_BOOL => FieldValue::Bool(f.bool_value != 0),
        RSDB_METRICS_STRING => FieldValue::String(arg_str(f.string_value, "field string_value")?.to_owned()),
        k => return Err(Error::InvalidArgument(format!("field {key:?} has unknown kind {k}"))),
    };
    Ok((key, v))
}

/// Converts a C point. Line-protocol rules (names, NaN, empty field set) are the core's, checked
/// when the point is encoded.
unsafe fn point_from_c(p: &rsdb_metrics_point) -> Result<Point> {
    let mut out = Point::new(arg_str(p.measurement, "measurement")?);
    if p.tag_count > 0 {
        if p.tags.is_null() {
            return Err(Error::Null("tags"));
        }
        for t in std::slice::from_raw_parts(p.tags, p.tag_count) {
            out.tags.push((arg_str(t.key, "tag key")?.to_owned(), arg_str(t.value, "tag value")?.to_owned()));
        }
    }
    if p.field_count > 0 {
        if p.fields.is_null() {
            return Err(Error::Null("fields"));
        }
        for f in std::slice::from_raw_parts(p.fields, p.field_count) {
            out.fields.push(field_from_c(f)?);
        }
    }
    if p.has_timestamp != 0 {
        out.timestamp_ns = Some(p.timestamp_ns);
    }
    Ok(out)
}

unsafe fn points_from_c(points: *const rsdb_metrics_point, count: usize) -> Result<Vec<Point>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if points.is_null() {
        return Err(Error::Null("points"));
    }
    std::slice::from_raw_parts(points, count)
        .iter()
        .enumerate()
        .map(|(i, p)| point_from_c(p).map_err(|e| prefix_error(i, e)))
        .collect()
}

fn prefix_error(i: usize, e: Error) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("point {i}: {m}")),
        other => other,
    }
}

// ------------------------------------------------------------------------------ client

fn new_client(mut opts: ClientOptions, options_json: Option<&str>, slot: &mut *mut rsdb_metrics_client) -> Result<()> {
    if let Some(t) = options_json {
        opts.apply_json(t)?;
    }
    hand_out(slot, rsdb_metrics_client(InfluxDBClient::new(opts)?));
    Ok(())
}

/// A v1-API client (InfluxDB 1.x, or the v1-compatible endpoints of 2.x/3.x) for `url` (e.g.
/// `http://127.0.0.1:8086`) and `database`. `options_json` may be NULL or a JSON object with
/// any of `precision` (`ns`, `us`, `ms`, `s`; default `ns`), `timeout_ms` (one request;
/// default 10000), `retention_policy`, `username`, `password`. Nothing is sent yet. `*out`
/// receives a handle to release with `rsdb_metrics_client_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_new_v1(
    url: *const c_char,
    database: *const c_char,
    options_json: *const c_char,
    out: *mut *mut rsdb_metrics_client,
) -> c_int {
    guard(|| {
        let url = arg_str(url, "url")?;
        let database = arg_str(database, "database")?;
        let options = opt_str(options_json, "options_json")?;
        let slot = out_ptr(out, "out")?;
        new_client(ClientOptions::v1(url, database), options, slot)
    })
}

/// A v2-API client (`/api/v2/write` with `org` and `bucket`). `token` may be NULL (no
/// `Authorization` header). `options_json` may be NULL or a JSON object with `precision` and
/// `timeout_ms`. `*out` receives a handle to release with `rsdb_metrics_client_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_new_v2(
    url: *const c_char,
    org: *const c_char,
    bucket: *const c_char,
    token: *const c_char,
    options_json: *const c_char,
    out: *mut *mut rsdb_metrics_client,
) -> c_int {
    guard(|| {
        let url = arg_str(url, "url")?;
        let org = arg_str(org, "org")?;
        let bucket = arg_str(bucket, "bucket")?;
        let token = opt_str(token, "token")?;
        let options = opt_str(options_json, "options_json")?;
        let slot = out_ptr(out, "out")?;
        new_client(ClientOptions::v2(url, org, bucket, token.map(str::to_owned)), options, slot)
    })
}

/// A client from the configuration: `influx_url`, and v2 when `influx_org` and
/// `influx_bucket` are set (with `influx_token`), otherwise v1 with `influx_database` (default
/// `rootstream`). `RSDB_ERR_CONFIG` when `influx_url` is not set. `*out` receives a handle to
/// release with `rsdb_metrics_client_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_from_config(
    cfg: *const rsdb_config,
    out: *mut *mut rsdb_metrics_client,
) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let slot = out_ptr(out, "out")?;
        new_client(ClientOptions::from_config(&cfg.0)?, None, slot)
    })
}

/// Releases a client. NULL is accepted. Writers made from it keep their own copy.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_free(c: *mut rsdb_metrics_client) {
    release_with(c, drop)
}

/// Checks that the server answers (`/ping`, or `/health` on v2).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_ping(c: *const rsdb_metrics_client) -> c_int {
    guard(|| arg_ref(c, "client")?.0.ping())
}

/// Writes one point now, in one request (no buffering, no retry). An invalid point (empty or
/// control characters in names, NaN or infinite floats, no fields, invalid UTF-8) is
/// `RSDB_ERR_INVALID_ARGUMENT`/`RSDB_ERR_INVALID_UTF8` and nothing is sent.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_write_point(
    c: *const rsdb_metrics_client,
    point: *const rsdb_metrics_point,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "client")?;
        let p = point_from_c(arg_ref(point, "point")?)?;
        c.0.write_point(&p)
    })
}

/// Writes `count` points in one request; when any is invalid nothing is sent. `points` may be
/// NULL when `count` is 0.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_write_points(
    c: *const rsdb_metrics_client,
    points: *const rsdb_metrics_point,
    count: usize,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "client")?;
        let pts = points_from_c(points, count)?;
        c.0.write_points(&pts)
    })
}

/// Sends newline-separated lines of line protocol, already in the client's precision, in one
/// request. The server checks them (a bad line is `RSDB_ERR_QUERY`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_write_lines(c: *const rsdb_metrics_client, lines: *const c_char) -> c_int {
    guard(|| {
        let c = arg_ref(c, "client")?;
        let body = arg_str(lines, "lines")?;
        if body.trim().is_empty() {
            return Err(Error::InvalidArgument("no lines to write".into()));
        }
        c.0.write_lines(body)
    })
}

/// The line protocol this client writes for `point` (for `rsdb_metrics_writer_write_line`);
/// `*out` receives it, to release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_encode(
    c: *const rsdb_metrics_client,
    point: *const rsdb_metrics_point,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "client")?;
        let p = arg_ref(point, "point")?;
        out_ptr(out, "out")?;
        let line = c.0.encode(&point_from_c(p)?)?;
        set_out_string(out, Some(&line))
    })
}

/// Runs an InfluxQL query (v1 API) and stores InfluxDB's JSON answer in `*out` (release with
/// `rsdb_string_free`). `epoch` may be NULL (RFC 3339 times) or one of `ns`, `u`, `ms`, `s`,
/// `m`, `h`. An error the server reports for a statement is `RSDB_ERR_QUERY`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_query(
    c: *const rsdb_metrics_client,
    influxql: *const c_char,
    epoch: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "client")?;
        let q = arg_str(influxql, "influxql")?;
        let epoch = opt_str(epoch, "epoch")?;
        out_ptr(out, "out")?;
        let v = c.0.query(q, epoch)?;
        set_out_string(out, Some(&v.to_string()))
    })
}

/// Runs a Flux query (v2 API, `/api/v2/query`) and stores the annotated CSV answer in `*out`
/// (release with `rsdb_string_free`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_query_flux(
    c: *const rsdb_metrics_client,
    flux: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "client")?;
        let q = arg_str(flux, "flux")?;
        out_ptr(out, "out")?;
        let csv = c.0.query_flux(q)?;
        set_out_string(out, Some(&csv))
    })
}

/// Creates the client's database (v1; exists already is fine).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_create_database(c: *const rsdb_metrics_client) -> c_int {
    guard(|| arg_ref(c, "client")?.0.create_database())
}

/// Creates the client's bucket (v2) keeping points `retention_seconds` (0: forever).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_create_bucket(
    c: *const rsdb_metrics_client,
    retention_seconds: u64,
) -> c_int {
    guard(|| arg_ref(c, "client")?.0.create_bucket(retention_seconds))
}

/// Sets up retention on the client's database (v1): a default policy for raw points (1 day),
/// one for downsampled points (30 days) and a continuous query filling it (5 m means).
/// `options_json` may be NULL (those defaults) or a JSON object with any of `raw_policy`,
/// `raw_duration`, `downsampled_policy`, `downsampled_duration`, `interval`,
/// `continuous_query`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_client_setup_retention(
    c: *const rsdb_metrics_client,
    options_json: *const c_char,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "client")?;
        let r = match opt_str(options_json, "options_json")? {
            Some(t) => RetentionSetup::from_json(t)?,
            None => RetentionSetup::default(),
        };
        c.0.setup_retention(&r)
    })
}

// ------------------------------------------------------------------------------ writer

/// Starts a background batching writer over a copy of `client`. `options_json` may be NULL or
/// a JSON object with any of `batch_size` (5000), `flush_interval_ms` (1000),
/// `max_buffer_points` (100000), `max_buffer_bytes` (64 MiB), `retry_initial_ms` (1000),
/// `retry_base` (2), `retry_max_interval_ms` (30000), `retry_max_elapsed_ms` (180000),
/// `shutdown_timeout_ms` (5000, used by `rsdb_metrics_writer_free`), `log_drops` (true),
/// `senders` (4: requests in flight at once; with more than one, batches may arrive out of
/// order). `*out` receives a handle to release with `rsdb_metrics_writer_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_new(
    client: *const rsdb_metrics_client,
    options_json: *const c_char,
    out: *mut *mut rsdb_metrics_writer,
) -> c_int {
    guard(|| {
        let client = arg_ref(client, "client")?;
        let options = opt_str(options_json, "options_json")?;
        let slot = out_ptr(out, "out")?;
        let mut opts = WriterOptions::default();
        if let Some(t) = options {
            opts.apply_json(t)?;
        }
        let w = MetricsWriter::new(client.0.clone(), opts)?;
        hand_out(slot, rsdb_metrics_writer { w: Arc::new(w), gate: Gate::open() });
        Ok(())
    })
}

/// Shuts the writer down (delivering what is buffered within its `shutdown_timeout_ms`, the
/// rest counted as dropped) and releases it. The drop callback is not called after this
/// returns. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_free(w: *mut rsdb_metrics_writer) {
    release_with(w, |w| {
        let t = w.w.options().shutdown_timeout;
        w.w.shutdown(t);
        w.gate.close();
    })
}

/// Sets the drop callback (see `rsdb_metrics_drop_cb`). `callback` may be NULL, which removes
/// it. `user_data` must stay valid until the callback is replaced or the writer is shut down.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_set_drop_callback(
    w: *const rsdb_metrics_writer,
    callback: rsdb_metrics_drop_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let w = arg_ref(w, "writer")?;
        let Some(cb) = callback else {
            w.w.set_drop_callback(None);
            return Ok(());
        };
        let (ud, gate) = (UserData(user_data), w.gate.clone());
        w.w.set_drop_callback(Some(Arc::new(move |e: &DropEvent| {
            let ud = &ud;
            gate.run(|| {
                let (reason, msg) = (cstring(e.reason.as_str()), cstring(&e.message));
                // SAFETY: the caller registered `cb`; the strings live for the call.
                unsafe { cb(ud.0, reason.as_ptr(), e.points, msg.as_ptr()) };
            });
        })));
        Ok(())
    })
}

/// Buffers one point (never waits on the network). An invalid point is
/// `RSDB_ERR_INVALID_ARGUMENT`/`RSDB_ERR_INVALID_UTF8` and nothing of it is buffered;
/// `RSDB_ERR_STATE` after shutdown. When the buffer is full the oldest points are dropped
/// (counted, reported), not this call's.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_write_point(
    w: *const rsdb_metrics_writer,
    point: *const rsdb_metrics_point,
) -> c_int {
    guard(|| {
        let w = arg_ref(w, "writer")?;
        let p = point_from_c(arg_ref(point, "point")?)?;
        w.w.write_point(&p)
    })
}

/// Buffers `count` points; when any is invalid none is buffered. `points` may be NULL when
/// `count` is 0.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_write_points(
    w: *const rsdb_metrics_writer,
    points: *const rsdb_metrics_point,
    count: usize,
) -> c_int {
    guard(|| {
        let w = arg_ref(w, "writer")?;
        let pts = points_from_c(points, count)?;
        w.w.write_points(&pts)
    })
}

/// Buffers one prepared line of line protocol in the client's precision (from
/// `rsdb_metrics_client_encode`, or your own), without a newline. Only its shape is checked
/// here; the server checks its content (a bad line is dropped as `rejected`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_write_line(w: *const rsdb_metrics_writer, line: *const c_char) -> c_int {
    guard(|| {
        let w = arg_ref(w, "writer")?;
        let line = arg_str(line, "line")?;
        w.w.write_line(line.to_owned())
    })
}

/// Sends what is buffered and waits until every point accepted before the call is delivered or
/// dropped; `RSDB_ERR_TIMEOUT` after `timeout_ms` (the points stay buffered).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_flush(w: *const rsdb_metrics_writer, timeout_ms: u32) -> c_int {
    guard(|| arg_ref(w, "writer")?.w.flush(Duration::from_millis(u64::from(timeout_ms))))
}

/// Stops accepting points, delivers what is buffered until `timeout_ms` passes and drops the
/// rest (`shutdown`, counted and reported), then stops the senders. Returns within about
/// `timeout_ms` + 100 ms even when a request hangs. Idempotent. `*stats` (may be NULL)
/// receives the final statistics. The drop callback is not called after this returns.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_shutdown(
    w: *const rsdb_metrics_writer,
    timeout_ms: u32,
    stats: *mut rsdb_metrics_writer_stats,
) -> c_int {
    guard(|| {
        let w = arg_ref(w, "writer")?;
        let s = w.w.shutdown(Duration::from_millis(u64::from(timeout_ms)));
        w.gate.close();
        if let Some(out) = stats.as_mut() {
            *out = (&s).into();
        }
        Ok(())
    })
}

/// The writer's statistics now.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_get_stats(
    w: *const rsdb_metrics_writer,
    stats: *mut rsdb_metrics_writer_stats,
) -> c_int {
    guard(|| {
        let w = arg_ref(w, "writer")?;
        let out = out_ptr(stats, "stats")?;
        *out = (&w.w.stats()).into();
        Ok(())
    })
}

/// The writer's statistics as JSON (`accepted`, `delivered`, `dropped` by reason,
/// `dropped_total`, `batches`, `retries`, `buffered_points`, `buffered_bytes`, `last_error`);
/// release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_writer_stats_json(w: *const rsdb_metrics_writer, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let w = arg_ref(w, "writer")?;
        out_ptr(out, "out")?;
        let v = crate::metrics::options::writer_stats_json(&w.w.stats());
        set_out_string(out, Some(&v.to_string()))
    })
}

// ------------------------------------------------------------------------------ collector

/// A collector set holding the stream collector (fed by `rsdb_metrics_collector_update_stream`);
/// add the others with the `rsdb_metrics_collector_add_*` functions. `*out` receives a handle
/// to release with `rsdb_metrics_collector_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_new(out: *mut *mut rsdb_metrics_collector) -> c_int {
    guard(|| {
        let slot = out_ptr(out, "out")?;
        let c = MetricsCollector::new();
        let streams = Arc::new(StreamCollector::new());
        c.add(streams.clone());
        hand_out(slot, rsdb_metrics_collector { c: Arc::new(c), streams, gate: Gate::open() });
        Ok(())
    })
}

/// Stops periodic collection (waiting for a round in progress) and releases the handle. The
/// failure callback is not called after this returns. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_free(c: *mut rsdb_metrics_collector) {
    release_with(c, |c| {
        c.c.stop();
        c.gate.close();
    })
}

/// Adds the system collector: cpu, memory, disk (of `disk_path`) and network from `/proc`.
/// `disk_path` may be NULL (`/`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_add_system(
    c: *const rsdb_metrics_collector,
    disk_path: *const c_char,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        let path = opt_str(disk_path, "disk_path")?.unwrap_or("/");
        c.c.add(Arc::new(SystemCollector::new(path)));
        Ok(())
    })
}

/// Adds the database collector (connections, query time, size, pool statistics) on `db`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_add_database(
    c: *const rsdb_metrics_collector,
    db: *const rsdb_db,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        let db = arg_ref(db, "db")?;
        c.c.add(Arc::new(DatabaseCollector::new(db.0.clone())));
        Ok(())
    })
}

/// Adds the cache collector (hit rate, operations, memory from Redis `INFO`) on `redis`,
/// tagging its points `server=<server>`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_add_cache(
    c: *const rsdb_metrics_collector,
    redis: *const rsdb_redis,
    server: *const c_char,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        let redis = arg_ref(redis, "redis")?;
        let server = arg_str(server, "server")?;
        c.c.add(Arc::new(CacheCollector::new(redis.0.clone(), server)));
        Ok(())
    })
}

/// Records the latest state of a stream (one `stream` point per stream and round).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_update_stream(
    c: *const rsdb_metrics_collector,
    metrics: *const rsdb_stream_metrics,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        let m = arg_ref(metrics, "metrics")?;
        c.streams.update(StreamMetrics {
            stream_id: arg_str(m.stream_id, "stream_id")?.to_owned(),
            viewers: m.viewers,
            bitrate_kbps: m.bitrate_kbps,
            fps: m.fps,
            width: m.width,
            height: m.height,
            duration_seconds: m.duration_seconds,
            bytes_sent: m.bytes_sent,
        })
    })
}

/// Forgets a stream (it ended); `*removed` (may be NULL) receives 1 when it was known.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_remove_stream(
    c: *const rsdb_metrics_collector,
    stream_id: *const c_char,
    removed: *mut c_int,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        let id = arg_str(stream_id, "stream_id")?;
        let r = c.streams.remove(id);
        if let Some(out) = removed.as_mut() {
            *out = c_int::from(r);
        }
        Ok(())
    })
}

/// Sets the failure callback (see `rsdb_metrics_failure_cb`). `callback` may be NULL, which
/// removes it. `user_data` must stay valid until it is replaced or the handle is freed.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_set_failure_callback(
    c: *const rsdb_metrics_collector,
    callback: rsdb_metrics_failure_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        let Some(cb) = callback else {
            c.c.set_failure_callback(None);
            return Ok(());
        };
        let (ud, gate) = (UserData(user_data), c.gate.clone());
        c.c.set_failure_callback(Some(Arc::new(move |f| {
            let ud = &ud;
            gate.run(|| {
                let (name, msg) = (cstring(&f.collector), cstring(&f.message));
                // SAFETY: the caller registered `cb`; the strings live for the call.
                unsafe { cb(ud.0, name.as_ptr(), msg.as_ptr()) };
            });
        })));
        Ok(())
    })
}

/// Runs every collector once; one that fails is reported and the others still run. `*out`
/// receives JSON `{"points": [{"measurement", "tags", "fields", "time_ns"}], "failures":
/// [{"collector", "message"}]}` (integer fields as `{"i": n}`); release with
/// `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_collect_once(
    c: *const rsdb_metrics_collector,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        out_ptr(out, "out")?;
        let r = c.c.collect_once();
        let v = json!({
            "points": r.points.iter().map(point_json).collect::<Vec<_>>(),
            "failures": r.failures.iter().map(|f| json!({"collector": f.collector, "message": f.message})).collect::<Vec<_>>(),
        });
        set_out_string(out, Some(&v.to_string()))
    })
}

/// Collects every `interval_ms` on a background thread into `writer` until
/// `rsdb_metrics_collector_stop` or `rsdb_metrics_collector_free` (the writer stays usable
/// meanwhile; freeing it first makes the rounds' writes fail quietly). `RSDB_ERR_STATE` when
/// already running.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_start(
    c: *const rsdb_metrics_collector,
    writer: *const rsdb_metrics_writer,
    interval_ms: u32,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        let w = arg_ref(writer, "writer")?;
        c.c.start(w.w.clone(), Duration::from_millis(u64::from(interval_ms)))
    })
}

/// Stops periodic collection (waits for a round in progress; not running is fine).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_stop(c: *const rsdb_metrics_collector) -> c_int {
    guard(|| {
        arg_ref(c, "collector")?.c.stop();
        Ok(())
    })
}

/// Per-collector counters as a JSON array of `{"name", "runs_ok", "runs_failed",
/// "last_error"}`; release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_collector_stats(
    c: *const rsdb_metrics_collector,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let c = arg_ref(c, "collector")?;
        out_ptr(out, "out")?;
        let v: Vec<_> = c
            .c
            .stats()
            .iter()
            .map(|s| json!({"name": s.name, "runs_ok": s.runs_ok, "runs_failed": s.runs_failed, "last_error": s.last_error}))
            .collect();
        set_out_string(out, Some(&serde_json::Value::from(v).to_string()))
    })
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

/// A reporter. `client` may be NULL: then only the exports and alerts work (dashboards and
/// percentiles need it). `*out` receives a handle to release with `rsdb_metrics_reporter_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_new(
    client: *const rsdb_metrics_client,
    out: *mut *mut rsdb_metrics_reporter,
) -> c_int {
    guard(|| {
        let slot = out_ptr(out, "out")?;
        let client = client.as_ref().map(|c| c.0.clone());
        hand_out(
            slot,
            rsdb_metrics_reporter {
                r: Arc::new(MetricsReporter::new(client)),
                sources: Arc::default(),
                server: Mutex::new(None),
                gate: Gate::open(),
            },
        );
        Ok(())
    })
}

/// Stops the `/metrics` endpoint and releases the reporter. Alert callbacks are not called
/// after this returns. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_free(r: *mut rsdb_metrics_reporter) {
    release_with(r, |r| {
        if let Some(mut s) = r.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            s.stop();
        }
        r.gate.close();
    })
}

/// Chooses what the exports include besides the process-wide counters (sessions, MFA
/// failures, backups, cache): a writer's buffer and drops, a database pool, collectors' runs.
/// `writer`, `db` and `collector` may be NULL (left out); each call replaces all three. The
/// reporter keeps its own references (the handles may be freed before it).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_attach(
    r: *const rsdb_metrics_reporter,
    writer: *const rsdb_metrics_writer,
    db: *const rsdb_db,
    collector: *const rsdb_metrics_collector,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        let mut s = r.sources.lock().unwrap_or_else(|p| p.into_inner());
        s.writer = writer.as_ref().map(|w| w.w.clone());
        s.db = db.as_ref().map(|d| d.0.clone());
        s.collector = collector.as_ref().map(|c| c.c.clone());
        Ok(())
    })
}

/// The Prometheus text exposition (format 0.0.4) of the library's counters and gauges; release
/// with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_prometheus(
    r: *const rsdb_metrics_reporter,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        out_ptr(out, "out")?;
        let text = r.r.prometheus_text(&snapshot(&r.sources))?;
        set_out_string(out, Some(&text))
    })
}

/// The same snapshot as JSON: `{"<name>": {"type", "help", "samples": [{"labels", "value"}]}}`;
/// release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_json(r: *const rsdb_metrics_reporter, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        out_ptr(out, "out")?;
        set_out_string(out, Some(&r.r.json_export(&snapshot(&r.sources)).to_string()))
    })
}

/// Serves `GET /metrics` (the Prometheus text) on `addr` (`127.0.0.1:0` picks a free loopback
/// port; `0.0.0.0:9464` listens on every interface) until `rsdb_metrics_reporter_serve_stop` or
/// `rsdb_metrics_reporter_free`. `*bound_addr` (may be NULL) receives the address it listens
/// on, to release with `rsdb_string_free`. `RSDB_ERR_STATE` when already serving.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_serve(
    r: *const rsdb_metrics_reporter,
    addr: *const c_char,
    bound_addr: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        let addr = arg_str(addr, "addr")?;
        let mut slot = r.server.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(Error::State("the /metrics endpoint is already running".into()));
        }
        let (rep, src) = (r.r.clone(), r.sources.clone());
        let server = MetricsServer::start(addr, move || rep.prometheus_text(&snapshot(&src)))?;
        let local = server.local_addr().to_string();
        *slot = Some(server);
        if !bound_addr.is_null() {
            set_out_string(bound_addr, Some(&local))?;
        }
        Ok(())
    })
}

/// Stops the `/metrics` endpoint (not running is fine).
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_serve_stop(r: *const rsdb_metrics_reporter) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        let s = r.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut s) = s {
            s.stop();
        }
        Ok(())
    })
}

/// Mean viewers, bitrate, fps and the most bytes of `stream_id` per `interval` (an InfluxQL
/// duration such as `1m`) between `start_ns` and `end_ns`, as a JSON array of `{"time_ns",
/// "viewers", "bitrate_kbps", "fps", "bytes_sent"}`; release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_stream_dashboard(
    r: *const rsdb_metrics_reporter,
    stream_id: *const c_char,
    start_ns: i64,
    end_ns: i64,
    interval: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        let id = arg_str(stream_id, "stream_id")?;
        let interval = arg_str(interval, "interval")?;
        out_ptr(out, "out")?;
        let rows = r.r.stream_dashboard(id, start_ns, end_ns, interval)?;
        set_out_string(out, Some(&serde_json::to_string(&rows)?))
    })
}

/// p50/p95/p99 (nearest rank) of `field` of `measurement` between `start_ns` and `end_ns`,
/// where the tags of `tags_json` (`{"tag": "value"}`) match, as JSON `{"count", "p50", "p95",
/// "p99"}`; release with `rsdb_string_free`. `tags_json` may be NULL. `RSDB_ERR_NOT_FOUND`
/// when there are no values.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_percentiles(
    r: *const rsdb_metrics_reporter,
    measurement: *const c_char,
    field: *const c_char,
    tags_json: *const c_char,
    start_ns: i64,
    end_ns: i64,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        let m = arg_str(measurement, "measurement")?;
        let f = arg_str(field, "field")?;
        let tags = opt_str(tags_json, "tags_json")?;
        out_ptr(out, "out")?;
        let tags = tags.map(tag_pairs).transpose()?.unwrap_or_default();
        let refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = r.r.percentiles(m, f, &refs, start_ns, end_ns)?;
        set_out_string(out, Some(&serde_json::to_string(&p)?))
    })
}

/// p50/p95/p99 (nearest rank) of `count` values in memory, as JSON like
/// `rsdb_metrics_reporter_percentiles`. NaN is `RSDB_ERR_INVALID_ARGUMENT`; no values is
/// `RSDB_ERR_NOT_FOUND`. `values` may be NULL when `count` is 0.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_percentiles_of(values: *const f64, count: usize, out: *mut *mut c_char) -> c_int {
    guard(|| {
        out_ptr(out, "out")?;
        let v: &[f64] = if count == 0 {
            &[]
        } else if values.is_null() {
            return Err(Error::Null("values"));
        } else {
            std::slice::from_raw_parts(values, count)
        };
        let p = percentiles_of(v)?;
        set_out_string(out, Some(&serde_json::to_string(&p)?))
    })
}

/// Adds a threshold rule from JSON `{"name", "metric", "comparison": "above"|"below",
/// "threshold", "severity": "info"|"warning"|"critical"}`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_add_rule(
    r: *const rsdb_metrics_reporter,
    rule_json: *const c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        let rule = AlertRule::from_json(arg_str(rule_json, "rule_json")?)?;
        r.r.add_rule(rule)
    })
}

/// Adds an alert callback (see `rsdb_metrics_alert_cb`). `user_data` must stay valid until the
/// reporter is freed.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_on_alert(
    r: *const rsdb_metrics_reporter,
    callback: rsdb_metrics_alert_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        let cb = callback.ok_or(Error::Null("callback"))?;
        let (ud, gate) = (UserData(user_data), r.gate.clone());
        r.r.on_alert(Arc::new(move |a| {
            let ud = &ud;
            gate.run(|| {
                let text = cstring(&serde_json::to_string(a).unwrap_or_default());
                // SAFETY: the caller registered `cb`; the string lives for the call.
                unsafe { cb(ud.0, text.as_ptr()) };
            });
        }));
        Ok(())
    })
}

/// Checks named values (`{"stream.fps": 24, "system.cpu_usage_percent": 93}`) against the
/// rules; every alert that fires goes to every callback (on this thread, before this returns).
/// `*fired_json` (may be NULL) receives the JSON array of the alerts, to release with
/// `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_metrics_reporter_check(
    r: *const rsdb_metrics_reporter,
    metrics_json: *const c_char,
    fired_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "reporter")?;
        let values = metric_values(arg_str(metrics_json, "metrics_json")?)?;
        let refs: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let fired = r.r.check(&refs);
        if !fired_json.is_null() {
            set_out_string(fired_json, Some(&serde_json::to_string(&fired)?))?;
        }
        Ok(())
    })
}
