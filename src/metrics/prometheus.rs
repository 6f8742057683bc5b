//! Prometheus text exposition (format 0.0.4) of the library's own counters and gauges, written
//! here (no extra crate), checked with Debian's `promtool check metrics` in the tests.
//!
//! One `# HELP` and one `# TYPE` line per family, before its samples; label values escape `\`,
//! `"` and newline; counters end in `_total`; names are snake_case with base units.

use super::writer::{DropReason, WriterStats};
use crate::db::PoolStats;
use crate::error::{Error, Result};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// `text/plain; version=0.0.4; charset=utf-8`
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family: name, help, kind and its samples (labels, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Family {
    pub fn counter(name: &str, help: &str) -> Family {
        Family { name: name.into(), help: help.into(), kind: Kind::Counter, samples: Vec::new() }
    }

    pub fn gauge(name: &str, help: &str) -> Family {
        Family { name: name.into(), help: help.into(), kind: Kind::Gauge, samples: Vec::new() }
    }

    pub fn sample(mut self, labels: &[(&str, &str)], value: f64) -> Family {
        self.samples.push((labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), value));
        self
    }
}

fn valid_name(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// Renders families as 0.0.4 text; refuses names promtool would refuse.
pub fn render(families: &[Family]) -> Result<String> {
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    for f in families {
        if !valid_name(&f.name) {
            return Err(Error::InvalidArgument(format!("metric name {:?} is not snake_case", f.name)));
        }
        if (f.kind == Kind::Counter) != f.name.ends_with("_total") {
            return Err(Error::InvalidArgument(format!(
                "metric {:?}: counters, and only counters, end in _total",
                f.name
            )));
        }
        if f.help.is_empty() {
            return Err(Error::InvalidArgument(format!("metric {:?} has no help text", f.name)));
        }
        if !seen.insert(f.name.clone()) {
            return Err(Error::InvalidArgument(format!("metric {:?} appears twice", f.name)));
        }
        out.push_str("# HELP ");
        out.push_str(&f.name);
        out.push(' ');
        escape_help(&f.help, &mut out);
        out.push('\n');
        let _ = writeln!(out, "# TYPE {} {}", f.name, if f.kind == Kind::Counter { "counter" } else { "gauge" });
        for (labels, v) in &f.samples {
            out.push_str(&f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, lv)) in labels.iter().enumerate() {
                    if !valid_name(k) || k.starts_with("__") || k == "le" || k == "quantile" {
                        return Err(Error::InvalidArgument(format!("label name {k:?} of {:?} is not allowed", f.name)));
                    }
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(lv, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value(*v, &mut out);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The library's own counters and gauges at one moment. Every part is optional.
#[derive(Debug, Clone, Default)]
pub struct LibraryMetrics {
    pub writer: Option<WriterStats>,
    pub pool: Option<PoolStats>,
    /// Per collector: (name, successful runs, failed runs).
    pub collectors: Vec<(String, u64, u64)>,
    /// Anything else the application counts (sessions, MFA failures, backups...).
    pub extra: Vec<Family>,
}

/// The families of a [`LibraryMetrics`] snapshot, named `rootstream_*`, followed by the
/// process-wide counters of [`super::library`] (sessions, MFA failures, backups, cache); an
/// `extra` family of the same name replaces the built-in one.
pub fn library_families(m: &LibraryMetrics) -> Vec<Family> {
    let mut f = Vec::new();
    if let Some(w) = &m.writer {
        f.push(
            Family::counter("rootstream_metrics_points_accepted_total", "Points accepted by the metrics writer.")
                .sample(&[], w.accepted as f64),
        );
        f.push(
            Family::counter("rootstream_metrics_points_delivered_total", "Points the time-series server took.")
                .sample(&[], w.delivered as f64),
        );
        let mut d =
            Family::counter("rootstream_metrics_points_dropped_total", "Points the metrics writer dropped, by reason.");
        for r in DropReason::ALL {
            d = d.sample(&[("reason", r.as_str())], w.dropped_by(r) as f64);
        }
        f.push(d);
        f.push(
            Family::counter("rootstream_metrics_batches_total", "Write requests that succeeded.")
                .sample(&[], w.batches as f64),
        );
        f.push(
            Family::counter("rootstream_metrics_retries_total", "Write attempts that failed and were retried.")
                .sample(&[], w.retries as f64),
        );
        f.push(
            Family::gauge(
                "rootstream_metrics_buffered_points",
                "Points held by the metrics writer (queued and in flight).",
            )
            .sample(&[], w.buffered_points as f64),
        );
        f.push(
            Family::gauge("rootstream_metrics_buffered_bytes", "Line-protocol bytes held by the metrics writer.")
                .sample(&[], w.buffered_bytes as f64),
        );
    }
    if let Some(p) = &m.pool {
        f.push(
            Family::gauge("rootstream_db_pool_connections", "PostgreSQL pool connections by state.")
                .sample(&[("state", "in_use")], p.in_use as f64)
                .sample(&[("state", "idle")], p.available as f64),
        );
        f.push(
            Family::gauge("rootstream_db_pool_max_connections", "Configured maximum of the PostgreSQL pool.")
                .sample(&[], p.max_size as f64),
        );
        f.push(
            Family::gauge("rootstream_db_pool_waiting", "Callers waiting for a PostgreSQL connection.")
                .sample(&[], p.waiting as f64),
        );
    }
    if !m.collectors.is_empty() {
        let mut ok = Family::counter("rootstream_collector_runs_total", "Collector runs, by collector and outcome.");
        for (name, good, bad) in &m.collectors {
            ok = ok.sample(&[("collector", name), ("outcome", "ok")], *good as f64);
            ok = ok.sample(&[("collector", name), ("outcome", "error")], *bad as f64);
        }
        f.push(ok);
    }
    // A family the application supplies in `extra` under the same name replaces the built-in one.
    f.extend(super::library::counter_families().into_iter().filter(|b| m.extra.iter().all(|e| e.name != b.name)));
    f.extend(m.extra.iter().cloned());
    f
}

fn sanitize(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Collected points as gauges: `rootstream_<measurement>_<field>` with the tags as labels
/// (numbers and booleans only; a name ending in `_total` is skipped, counters are not guessed).
pub fn point_families(points: &[super::line::Point]) -> Vec<Family> {
    use super::line::FieldValue;
    let mut fams: Vec<Family> = Vec::new();
    for p in points {
        for (k, v) in &p.fields {
            let value = match v {
                FieldValue::Float(f) => *f,
                FieldValue::Integer(i) => *i as f64,
                FieldValue::Unsigned(u) => *u as f64,
                FieldValue::Bool(b) => f64::from(u8::from(*b)),
                FieldValue::String(_) => continue,
            };
            let name = format!("rootstream_{}_{}", sanitize(&p.measurement), sanitize(k));
            if name.ends_with("_total") {
                continue;
            }
            let labels: Vec<(String, String)> = p.tags.iter().map(|(tk, tv)| (sanitize(tk), tv.clone())).collect();
            match fams.iter_mut().find(|f| f.name == name) {
                Some(f) => f.samples.push((labels, value)),
                None => fams.push(Family {
                    help: format!("Field {k} of the {} measurement.", p.measurement),
                    name,
                    kind: Kind::Gauge,
                    samples: vec![(labels, value)],
                }),
            }
        }
    }
    fams
}

/// A minimal HTTP server answering `GET /metrics` with the text `render_fn` returns (404 for
/// other paths). Binds `addr` (use `127.0.0.1:0` for a free loopback port).
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start<F>(addr: &str, render_fn: F) -> Result<MetricsServer>
    where
        F: Fn() -> Result<String> + Send + Sync + 'static,
    {
        let l = TcpListener::bind(addr).map_err(|e| Error::Io(format!("binding {addr}: {e}")))?;
        let local = l.local_addr().map_err(|e| Error::Io(e.to_string()))?;
        l.set_nonblocking(true).map_err(|e| Error::Io(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rsdb-metrics-http".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                            let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                            serve_one(conn, &render_fn);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("could not start the /metrics thread: {e}")))?;
        Ok(MetricsServer { addr: local, stop, thread: Some(thread) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_one<F: Fn() -> Result<String>>(conn: std::net::TcpStream, render_fn: &F) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" {
        ("405 Method Not Allowed", "text/plain", "only GET\n".to_owned())
    } else if path == "/metrics" || path.starts_with("/metrics?") {
        match render_fn() {
            Ok(t) => ("200 OK", CONTENT_TYPE, t),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
    };
    let mut c = conn;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_refuses_what_promtool_would() {
        let t = render(&[
            Family::counter("a_total", "Help with \\ and\nnewline.").sample(&[("l", "q\"x\\y\nz")], 3.0),
            Family::gauge("b_bytes", "B.").sample(&[], 1.5).sample(&[("k", "v")], f64::NAN),
        ])
        .unwrap();
        assert_eq!(
            t,
            "# HELP a_total Help with \\\\ and\\nnewline.\n# TYPE a_total counter\na_total{l=\"q\\\"x\\\\y\\nz\"} 3\n# HELP b_bytes B.\n# TYPE b_bytes gauge\nb_bytes 1.5\nb_bytes{k=\"v\"} NaN\n"
        );
        assert!(render(&[Family::gauge("x_total", "x")]).is_err());
        assert!(render(&[Family::counter("x", "x")]).is_err());
        assert!(render(&[Family::gauge("camelCase", "x")]).is_err());
        assert!(render(&[Family::gauge("x", "")]).is_err());
        assert!(render(&[Family::gauge("x", "x"), Family::gauge("x", "x")]).is_err());
        assert!(render(&[Family::gauge("x", "x").sample(&[("le", "1")], 1.0)]).is_err());
    }
}
