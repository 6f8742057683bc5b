//! JSON forms of the metrics settings, shared by the C and C++ APIs: writer options, client
//! options, retention setups, alert rules and points. Unknown keys are refused.

use super::client::{ClientOptions, InfluxApi, RetentionSetup};
use super::line::{FieldValue, Point, Precision};
use super::reporter::{AlertRule, Comparison, Severity};
use super::writer::{WriterOptions, WriterStats};
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::time::Duration;

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| Error::Json(format!("{what} must be a JSON object")))
}

fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>> {
    let v: Value = serde_json::from_str(text).map_err(|e| Error::Json(format!("{what}: {e}")))?;
    Ok(object(&v, what)?.clone())
}

fn check_keys(obj: &Map<String, Value>, known: &[&str], what: &str) -> Result<()> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(Error::InvalidArgument(format!("unknown {what} key {k:?}; known: {}", known.join(", ")))),
        None => Ok(()),
    }
}

fn uint(obj: &Map<String, Value>, k: &str) -> Result<Option<u64>> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| Error::InvalidArgument(format!("{k} must be a whole number"))),
    }
}

fn text<'a>(obj: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::InvalidArgument(format!("{k} must be a string"))),
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn size(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl WriterOptions {
    /// Applies a JSON object with any of `batch_size`, `flush_interval_ms`,
    /// `max_buffer_points`, `max_buffer_bytes`, `retry_initial_ms`, `retry_base`,
    /// `retry_max_interval_ms`, `retry_max_elapsed_ms`, `shutdown_timeout_ms`, `log_drops`,
    /// `senders`.
    pub fn apply_json(&mut self, text_json: &str) -> Result<()> {
        let obj = parse_object(text_json, "writer options")?;
        const KNOWN: [&str; 11] = [
            "batch_size",
            "flush_interval_ms",
            "max_buffer_points",
            "max_buffer_bytes",
            "retry_initial_ms",
            "retry_base",
            "retry_max_interval_ms",
            "retry_max_elapsed_ms",
            "shutdown_timeout_ms",
            "log_drops",
            "senders",
        ];
        check_keys(&obj, &KNOWN, "writer option")?;
        if let Some(v) = uint(&obj, "batch_size")? {
            self.batch_size = size(v);
        }
        if let Some(v) = uint(&obj, "flush_interval_ms")? {
            self.flush_interval = ms(v);
        }
        if let Some(v) = uint(&obj, "max_buffer_points")? {
            self.max_buffer_points = size(v);
        }
        if let Some(v) = uint(&obj, "max_buffer_bytes")? {
            self.max_buffer_bytes = size(v);
        }
        if let Some(v) = uint(&obj, "retry_initial_ms")? {
            self.retry_initial = ms(v);
        }
        if let Some(v) = uint(&obj, "retry_base")? {
            self.retry_base = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = uint(&obj, "retry_max_interval_ms")? {
            self.retry_max_interval = ms(v);
        }
        if let Some(v) = uint(&obj, "retry_max_elapsed_ms")? {
            self.retry_max_elapsed = ms(v);
        }
        if let Some(v) = uint(&obj, "shutdown_timeout_ms")? {
            self.shutdown_timeout = ms(v);
        }
        match obj.get("log_drops") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => self.log_drops = *b,
            Some(_) => return Err(Error::InvalidArgument("log_drops must be true or false".into())),
        }
        if let Some(v) = uint(&obj, "senders")? {
            self.senders = size(v);
        }
        Ok(())
    }
}

impl ClientOptions {
    /// Applies a JSON object with any of `precision` (`ns`, `us`, `ms`, `s`), `timeout_ms`, and
    /// for the v1 API `retention_policy`, `username`, `password`.
    pub fn apply_json(&mut self, text_json: &str) -> Result<()> {
        let obj = parse_object(text_json, "client options")?;
        check_keys(&obj, &["precision", "timeout_ms", "retention_policy", "username", "password"], "client option")?;
        if let Some(p) = text(&obj, "precision")? {
            self.precision = Precision::parse(p)?;
        }
        if let Some(v) = uint(&obj, "timeout_ms")? {
            self.timeout = ms(v);
        }
        let v1_only = ["retention_policy", "username", "password"];
        match &mut self.api {
            InfluxApi::V1 { retention_policy, username, password, .. } => {
                if let Some(v) = text(&obj, "retention_policy")? {
                    *retention_policy = Some(v.to_owned());
                }
                if let Some(v) = text(&obj, "username")? {
                    *username = Some(v.to_owned());
                }
                if let Some(v) = text(&obj, "password")? {
                    *password = Some(v.to_owned());
                }
            }
            InfluxApi::V2 { .. } => {
                if let Some(k) = v1_only.iter().find(|k| obj.get(**k).is_some_and(|v| !v.is_null())) {
                    return Err(Error::InvalidArgument(format!("{k} is a v1 option (the v2 API uses the token)")));
                }
            }
        }
        Ok(())
    }
}

impl RetentionSetup {
    /// The default setup changed by a JSON object with any of `raw_policy`, `raw_duration`,
    /// `downsampled_policy`, `downsampled_duration`, `interval`, `continuous_query`.
    pub fn from_json(text_json: &str) -> Result<RetentionSetup> {
        let obj = parse_object(text_json, "retention setup")?;
        const KNOWN: [&str; 6] = [
            "raw_policy",
            "raw_duration",
            "downsampled_policy",
            "downsampled_duration",
            "interval",
            "continuous_query",
        ];
        check_keys(&obj, &KNOWN, "retention")?;
        let mut r = RetentionSetup::default();
        for (k, slot) in [
            ("raw_policy", &mut r.raw_policy),
            ("raw_duration", &mut r.raw_duration),
            ("downsampled_policy", &mut r.downsampled_policy),
            ("downsampled_duration", &mut r.downsampled_duration),
            ("interval", &mut r.interval),
            ("continuous_query", &mut r.continuous_query),
        ] {
            if let Some(v) = text(&obj, k)? {
                *slot = v.to_owned();
            }
        }
        r.validate()?;
        Ok(r)
    }
}

impl AlertRule {
    /// `{"name", "metric", "comparison": "above"|"below", "threshold", "severity":
    /// "info"|"warning"|"critical"}`.
    pub fn from_json(text_json: &str) -> Result<AlertRule> {
        let obj = parse_object(text_json, "alert rule")?;
        check_keys(&obj, &["name", "metric", "comparison", "threshold", "severity"], "alert rule")?;
        let need = |k: &str| text(&obj, k)?.ok_or_else(|| Error::InvalidArgument(format!("the alert rule needs {k}")));
        let comparison = match need("comparison")? {
            "above" => Comparison::Above,
            "below" => Comparison::Below,
            c => return Err(Error::InvalidArgument(format!("comparison {c:?} must be above or below"))),
        };
        let threshold = obj
            .get("threshold")
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::InvalidArgument("the alert rule needs a numeric threshold".into()))?;
        Ok(AlertRule {
            name: need("name")?.to_owned(),
            metric: need("metric")?.to_owned(),
            comparison,
            threshold,
            severity: Severity::parse(need("severity")?)?,
        })
    }
}

/// `{"metric": value, ...}` as the (metric, value) pairs `MetricsReporter::check` takes.
pub fn metric_values(text_json: &str) -> Result<Vec<(String, f64)>> {
    let obj = parse_object(text_json, "metric values")?;
    obj.iter()
        .map(|(k, v)| {
            v.as_f64()
                .map(|f| (k.clone(), f))
                .ok_or_else(|| Error::InvalidArgument(format!("the value of {k:?} must be a number")))
        })
        .collect()
}

/// `{"tag": "value", ...}` as pairs.
pub fn tag_pairs(text_json: &str) -> Result<Vec<(String, String)>> {
    let obj = parse_object(text_json, "tags")?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(Error::InvalidArgument(format!("tag {k:?} must be a string"))),
        })
        .collect()
}

/// A point as JSON: `{"measurement", "tags": {..}, "fields": {..}, "time_ns"}` (integers are
/// `{"i": n}`, unsigned `{"u": n}`, so a reader can tell them from floats).
pub fn point_json(p: &Point) -> Value {
    let tags: Map<String, Value> = p.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let fields: Map<String, Value> = p
        .fields
        .iter()
        .map(|(k, v)| {
            let v = match v {
                FieldValue::Float(f) => json!(f),
                FieldValue::Integer(i) => json!({ "i": i }),
                FieldValue::Unsigned(u) => json!({ "u": u }),
                FieldValue::Bool(b) => json!(b),
                FieldValue::String(s) => json!(s),
            };
            (k.clone(), v)
        })
        .collect();
    json!({ "measurement": p.measurement, "tags": tags, "fields": fields, "time_ns": p.timestamp_ns })
}

/// Writer statistics as JSON (every counter, `dropped` by reason, `last_error`).
pub fn writer_stats_json(s: &WriterStats) -> Value {
    json!({
        "accepted": s.accepted,
        "delivered": s.delivered,
        "dropped": {
            "buffer_full": s.dropped_buffer_full,
            "rejected": s.dropped_rejected,
            "retries_exhausted": s.dropped_retries_exhausted,
            "shutdown": s.dropped_shutdown,
        },
        "dropped_total": s.dropped(),
        "batches": s.batches,
        "retries": s.retries,
        "buffered_points": s.buffered_points,
        "buffered_bytes": s.buffered_bytes,
        "last_error": s.last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_refuse_unknown_keys() {
        let mut w = WriterOptions::default();
        w.apply_json(r#"{"batch_size": 10, "senders": 4, "log_drops": false, "flush_interval_ms": 250}"#).unwrap();
        assert_eq!((w.batch_size, w.senders, w.log_drops), (10, 4, false));
        assert_eq!(w.flush_interval, Duration::from_millis(250));
        assert!(w.apply_json(r#"{"batchsize": 1}"#).is_err());
        assert!(w.apply_json(r#"{"batch_size": -1}"#).is_err());
        assert!(w.apply_json("[]").is_err());
        let mut c = ClientOptions::v1("http://127.0.0.1:1", "db");
        c.apply_json(r#"{"precision": "ms", "username": "u"}"#).unwrap();
        assert_eq!(c.precision, Precision::Milliseconds);
        let mut c2 = ClientOptions::v2("http://127.0.0.1:1", "o", "b", None);
        assert!(c2.apply_json(r#"{"password": "p"}"#).is_err());
        assert!(RetentionSetup::from_json(r#"{"raw_duration": "2d"}"#).is_ok());
        assert!(RetentionSetup::from_json(r#"{"raw_duration": "2d; DROP"}"#).is_err());
        let r = AlertRule::from_json(
            r#"{"name":"n","metric":"stream.fps","comparison":"below","threshold":30,"severity":"warning"}"#,
        )
        .unwrap();
        assert_eq!((r.comparison, r.severity, r.threshold), (Comparison::Below, Severity::Warning, 30.0));
        assert!(AlertRule::from_json(r#"{"name":"n"}"#).is_err());
        assert_eq!(metric_values(r#"{"a": 1.5}"#).unwrap(), vec![("a".to_owned(), 1.5)]);
        assert!(metric_values(r#"{"a": "x"}"#).is_err());
        let p = Point::new("m").tag("t", "v").field("i", 3i64).field("f", 1.5).timestamp_ns(7);
        assert_eq!(point_json(&p)["fields"]["i"]["i"], json!(3));
    }
}
