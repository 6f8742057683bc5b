//! MetricsReporter: a stream's dashboard series over a time range, p50/p95/p99 of a series,
//! Prometheus and JSON exports of the library's own counters, and threshold alerts.

use super::client::{quote_ident, quote_string, rows_of, InfluxDBClient};
use super::prometheus::{library_families, render, LibraryMetrics};
use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// One bucket of a stream's dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DashboardPoint {
    /// Start of the bucket, nanoseconds since the epoch.
    pub time_ns: i64,
    pub viewers: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    pub fps: Option<f64>,
    pub bytes_sent: Option<f64>,
}

/// p50/p95/p99 and how many values they were computed from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Nearest-rank percentile (as InfluxQL's `PERCENTILE`) of sorted values.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50/p95/p99 of values (NaN refused).
pub fn percentiles_of(values: &[f64]) -> Result<Percentiles> {
    if values.iter().any(|v| v.is_nan()) {
        return Err(Error::InvalidArgument("a value is NaN".into()));
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |p| percentile_sorted(&v, p).ok_or_else(|| Error::NotFound("no values".into()));
    Ok(Percentiles { count: v.len() as u64, p50: pick(50.0)?, p95: pick(95.0)?, p99: pick(99.0)? })
}

/// Which way a threshold is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    Above,
    Below,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Result<Severity> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(Error::InvalidArgument(format!("unknown severity {s:?} (info, warning, critical)"))),
        }
    }
}

/// An alert rule on one named value (e.g. `stream.fps`, `system.cpu_usage_percent`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRule {
    pub name: String,
    pub metric: String,
    pub comparison: Comparison,
    pub threshold: f64,
    pub severity: Severity,
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub rule: String,
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub severity: Severity,
    pub message: String,
}

pub type AlertCallback = Arc<dyn Fn(&Alert) + Send + Sync>;

/// The reporter. The client is optional: without one, only exports and alerts work.
#[derive(Default)]
pub struct MetricsReporter {
    client: Option<InfluxDBClient>,
    rules: Mutex<Vec<AlertRule>>,
    callbacks: Mutex<Vec<AlertCallback>>,
}

impl MetricsReporter {
    pub fn new(client: Option<InfluxDBClient>) -> MetricsReporter {
        MetricsReporter { client, ..MetricsReporter::default() }
    }

    fn client(&self) -> Result<&InfluxDBClient> {
        self.client.as_ref().ok_or_else(|| Error::Config("the reporter has no InfluxDB client".into()))
    }

    /// Mean viewers, bitrate, fps and bytes of `stream_id` per `interval` (InfluxQL duration)
    /// between two times in nanoseconds (v1 API).
    pub fn stream_dashboard(
        &self,
        stream_id: &str,
        start_ns: i64,
        end_ns: i64,
        interval: &str,
    ) -> Result<Vec<DashboardPoint>> {
        check_interval(interval)?;
        if end_ns < start_ns {
            return Err(Error::InvalidArgument("the range ends before it starts".into()));
        }
        let q = format!(
            "SELECT mean(\"viewers\") AS viewers, mean(\"bitrate_kbps\") AS bitrate_kbps, mean(\"fps\") AS fps, \
             max(\"bytes_sent\") AS bytes_sent FROM \"stream\" WHERE \"stream_id\" = {} AND time >= {start_ns} \
             AND time <= {end_ns} GROUP BY time({interval}) fill(none)",
            quote_string(stream_id)
        );
        let v = self.client()?.query(&q, Some("ns"))?;
        let f = |r: &serde_json::Map<String, Value>, k: &str| r.get(k).and_then(Value::as_f64);
        Ok(rows_of(&v)
            .iter()
            .map(|r| DashboardPoint {
                time_ns: r.get("time").and_then(Value::as_i64).unwrap_or(0),
                viewers: f(r, "viewers"),
                bitrate_kbps: f(r, "bitrate_kbps"),
                fps: f(r, "fps"),
                bytes_sent: f(r, "bytes_sent"),
            })
            .collect())
    }

    /// p50/p95/p99 (InfluxQL `PERCENTILE`, nearest rank) of `field` of `measurement` where all
    /// `tags` match, between two times in nanoseconds.
    pub fn percentiles(
        &self,
        measurement: &str,
        field: &str,
        tags: &[(&str, &str)],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Percentiles> {
        let f = quote_ident(field);
        let mut q = format!(
            "SELECT count({f}) AS n, percentile({f}, 50) AS p50, percentile({f}, 95) AS p95, percentile({f}, 99) AS p99 \
             FROM {} WHERE time >= {start_ns} AND time <= {end_ns}",
            quote_ident(measurement)
        );
        for (k, v) in tags {
            q.push_str(&format!(" AND {} = {}", quote_ident(k), quote_string(v)));
        }
        let rows = self.client()?.query_rows(&q, Some("ns"))?;
        let r =
            rows.first().ok_or_else(|| Error::NotFound(format!("no values of {measurement}.{field} in the range")))?;
        let g = |k: &str| r.get(k).and_then(Value::as_f64).ok_or_else(|| Error::NotFound(format!("no {k}")));
        Ok(Percentiles { count: g("n")? as u64, p50: g("p50")?, p95: g("p95")?, p99: g("p99")? })
    }

    /// Prometheus 0.0.4 text of a snapshot.
    pub fn prometheus_text(&self, m: &LibraryMetrics) -> Result<String> {
        render(&library_families(m))
    }

    /// The same snapshot as JSON: `{"name": {"type": ..., "help": ..., "samples": [{"labels":
    /// {...}, "value": v}]}}`.
    pub fn json_export(&self, m: &LibraryMetrics) -> Value {
        let mut out = serde_json::Map::new();
        for f in library_families(m) {
            let samples: Vec<Value> = f
                .samples
                .iter()
                .map(|(labels, v)| {
                    let l: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    json!({ "labels": l, "value": if v.is_finite() { json!(v) } else { Value::Null } })
                })
                .collect();
            let kind = match f.kind {
                super::prometheus::Kind::Counter => "counter",
                super::prometheus::Kind::Gauge => "gauge",
            };
            out.insert(f.name.clone(), json!({ "type": kind, "help": f.help, "samples": samples }));
        }
        Value::Object(out)
    }

    pub fn add_rule(&self, rule: AlertRule) -> Result<()> {
        if rule.name.is_empty() || rule.metric.is_empty() || !rule.threshold.is_finite() {
            return Err(Error::InvalidArgument("an alert rule needs a name, a metric and a finite threshold".into()));
        }
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).push(rule);
        Ok(())
    }

    pub fn on_alert(&self, cb: AlertCallback) {
        self.callbacks.lock().unwrap_or_else(|p| p.into_inner()).push(cb);
    }

    /// Checks `values` (metric name, value) against the rules; every alert that fires goes to
    /// every callback and is returned.
    pub fn check(&self, values: &[(&str, f64)]) -> Vec<Alert> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut fired = Vec::new();
        for r in &rules {
            for (metric, v) in values.iter().filter(|(m, _)| *m == r.metric) {
                let hit = match r.comparison {
                    Comparison::Above => *v > r.threshold,
                    Comparison::Below => *v < r.threshold,
                };
                if hit {
                    let dir = if r.comparison == Comparison::Above { "above" } else { "below" };
                    fired.push(Alert {
                        rule: r.name.clone(),
                        metric: (*metric).to_owned(),
                        value: *v,
                        threshold: r.threshold,
                        severity: r.severity,
                        message: format!(
                            "{}: {metric} = {v} is {dir} {} ({})",
                            r.name,
                            r.threshold,
                            r.severity.as_str()
                        ),
                    });
                }
            }
        }
        let cbs = self.callbacks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for a in &fired {
            for cb in &cbs {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(a)));
            }
        }
        fired
    }
}

fn check_interval(s: &str) -> Result<()> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits > 0 && matches!(&s[digits..], "s" | "m" | "h" | "d" | "w" | "ms") {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{s:?} is not an InfluxQL interval (like 10s, 1m)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles_of(&v).unwrap();
        assert_eq!((p.count, p.p50, p.p95, p.p99), (100, 50.0, 95.0, 99.0));
        let p = percentiles_of(&[3.0]).unwrap();
        assert_eq!((p.p50, p.p99), (3.0, 3.0));
        assert!(percentiles_of(&[]).is_err());
        assert!(percentiles_of(&[f64::NAN]).is_err());
    }

    #[test]
    fn alerts_fire_with_severity_to_callbacks() {
        let r = MetricsReporter::new(None);
        r.add_rule(AlertRule {
            name: "low fps".into(),
            metric: "stream.fps".into(),
            comparison: Comparison::Below,
            threshold: 30.0,
            severity: Severity::Warning,
        })
        .unwrap();
        r.add_rule(AlertRule {
            name: "cpu".into(),
            metric: "system.cpu".into(),
            comparison: Comparison::Above,
            threshold: 90.0,
            severity: Severity::Critical,
        })
        .unwrap();
        assert!(r
            .add_rule(AlertRule {
                name: "x".into(),
                metric: "m".into(),
                comparison: Comparison::Above,
                threshold: f64::NAN,
                severity: Severity::Info
            })
            .is_err());
        let got: Arc<Mutex<Vec<Alert>>> = Arc::default();
        let g2 = got.clone();
        r.on_alert(Arc::new(move |a| g2.lock().unwrap().push(a.clone())));
        let fired = r.check(&[("stream.fps", 24.0), ("system.cpu", 50.0), ("other", 1.0)]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].severity, Severity::Warning);
        assert!(fired[0].message.contains("below 30"));
        let fired = r.check(&[("stream.fps", 60.0), ("system.cpu", 95.5)]);
        assert_eq!(fired[0].severity, Severity::Critical);
        assert_eq!(got.lock().unwrap().len(), 2);
        assert!(r.stream_dashboard("s", 0, 1, "1m").is_err());
        assert!(check_interval("1m").is_ok() && check_interval("1m; DROP").is_err() && check_interval("m").is_err());
    }
}
