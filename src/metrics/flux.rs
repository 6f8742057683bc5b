//! Flux query text for the v2 API. No Flux server runs in our test stack (InfluxDB 2.x/3.x are
//! not packaged for Debian), so the text is built here and unit-tested as text.

use crate::error::{Error, Result};

/// A range query: points of one measurement between `start` and `stop`, optionally only some
/// fields, filtered by exact tag values, aggregated per window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeQuery {
    pub measurement: String,
    /// A relative duration (`-1h`, `-30m`) or an RFC 3339 time (`2026-12-01T00:00:00Z`).
    pub start: String,
    /// Same forms as `start`; `None` = now.
    pub stop: Option<String>,
    /// Keep only these fields (empty = all).
    pub fields: Vec<String>,
    /// `tag == value` filters, all of which must hold.
    pub tags: Vec<(String, String)>,
    /// `aggregateWindow(every: <every>, fn: <fn>)`, e.g. `("1m", "mean")`.
    pub window: Option<(String, String)>,
}

/// A Flux string literal: `"`, `\` and `$` (interpolation) escaped, newlines as `\n`.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_duration(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["mo", "ns", "us", "ms", "s", "m", "h", "d", "w", "y"].iter().find(|u| rest.starts_with(*u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// A time argument: a duration is written as is, an RFC 3339 time as a time literal.
fn time_arg(s: &str) -> Result<String> {
    if is_duration(s) {
        return Ok(s.to_owned());
    }
    if s == "now()" {
        return Ok(s.to_owned());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .map_err(|_| Error::InvalidArgument(format!("{s:?} is neither a Flux duration (-1h) nor an RFC 3339 time")))
}

fn identifier(s: &str) -> Result<&str> {
    let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(s)
    } else {
        Err(Error::InvalidArgument(format!("{s:?} is not a Flux function name")))
    }
}

/// The Flux text of `q` on `bucket`.
pub fn range_query(bucket: &str, q: &RangeQuery) -> Result<String> {
    if bucket.is_empty() || q.measurement.is_empty() {
        return Err(Error::InvalidArgument("a Flux range query needs a bucket and a measurement".into()));
    }
    let mut out = format!("from(bucket: {})\n  |> range(start: {}", string(bucket), time_arg(&q.start)?);
    if let Some(stop) = &q.stop {
        out.push_str(&format!(", stop: {}", time_arg(stop)?));
    }
    out.push_str(")\n");
    out.push_str(&format!("  |> filter(fn: (r) => r._measurement == {})\n", string(&q.measurement)));
    if !q.fields.is_empty() {
        let alts: Vec<String> = q.fields.iter().map(|f| format!("r._field == {}", string(f))).collect();
        out.push_str(&format!("  |> filter(fn: (r) => {})\n", alts.join(" or ")));
    }
    for (k, v) in &q.tags {
        out.push_str(&format!("  |> filter(fn: (r) => r[{}] == {})\n", string(k), string(v)));
    }
    if let Some((every, func)) = &q.window {
        if !is_duration(every) || every.starts_with('-') {
            return Err(Error::InvalidArgument(format!("window {every:?} is not a positive Flux duration")));
        }
        out.push_str(&format!("  |> aggregateWindow(every: {every}, fn: {}, createEmpty: false)\n", identifier(func)?));
    }
    out.push_str("  |> yield(name: \"result\")");
    Ok(out)
}

/// Flux for one quantile (0..=1) of a field over a range.
pub fn quantile_query(bucket: &str, q: &RangeQuery, quantile: f64) -> Result<String> {
    if !(0.0..=1.0).contains(&quantile) {
        return Err(Error::InvalidArgument(format!("quantile {quantile} is outside 0..1")));
    }
    let base = range_query(bucket, &RangeQuery { window: None, ..q.clone() })?;
    let base = base.trim_end_matches("  |> yield(name: \"result\")");
    Ok(format!("{base}  |> quantile(q: {quantile:?}, method: \"estimate_tdigest\")\n  |> yield(name: \"result\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string(r#"a"b\c${x}"#), r#""a\"b\\c\${x}""#);
        assert_eq!(string("l1\nl2"), r#""l1\nl2""#);
    }

    #[test]
    fn range_query_text() {
        let q = RangeQuery {
            measurement: "stream".into(),
            start: "-1h".into(),
            stop: None,
            fields: vec!["viewers".into(), "bitrate_kbps".into()],
            tags: vec![("stream_id".into(), "s\"1".into())],
            window: Some(("1m".into(), "mean".into())),
        };
        assert_eq!(
            range_query("metrics", &q).unwrap(),
            "from(bucket: \"metrics\")\n  |> range(start: -1h)\n  |> filter(fn: (r) => r._measurement == \"stream\")\n  |> filter(fn: (r) => r._field == \"viewers\" or r._field == \"bitrate_kbps\")\n  |> filter(fn: (r) => r[\"stream_id\"] == \"s\\\"1\")\n  |> aggregateWindow(every: 1m, fn: mean, createEmpty: false)\n  |> yield(name: \"result\")"
        );
        let q2 = RangeQuery {
            measurement: "m".into(),
            start: "2026-12-01T00:00:00+01:00".into(),
            stop: Some("2026-12-01T01:00:00Z".into()),
            ..RangeQuery::default()
        };
        assert_eq!(
            range_query("b", &q2).unwrap(),
            "from(bucket: \"b\")\n  |> range(start: 2026-11-30T23:00:00Z, stop: 2026-12-01T01:00:00Z)\n  |> filter(fn: (r) => r._measurement == \"m\")\n  |> yield(name: \"result\")"
        );
        let p95 = quantile_query(
            "b",
            &RangeQuery { measurement: "m".into(), start: "-2h30m".into(), ..RangeQuery::default() },
            0.95,
        )
        .unwrap();
        assert!(
            p95.ends_with("  |> quantile(q: 0.95, method: \"estimate_tdigest\")\n  |> yield(name: \"result\")"),
            "{p95}"
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        let base = RangeQuery { measurement: "m".into(), start: "-1h".into(), ..RangeQuery::default() };
        for bad_start in ["1 h", "yesterday", "-h", "-1h) |> drop(", ""] {
            let q = RangeQuery { start: bad_start.into(), ..base.clone() };
            assert!(range_query("b", &q).is_err(), "{bad_start:?}");
        }
        let q = RangeQuery { window: Some(("1m".into(), "mean) |> drop(".into())), ..base.clone() };
        assert!(range_query("b", &q).is_err());
        let q = RangeQuery { window: Some(("-1m".into(), "mean".into())), ..base.clone() };
        assert!(range_query("b", &q).is_err());
        assert!(range_query("", &base).is_err());
        assert!(quantile_query("b", &base, 1.5).is_err());
        assert!(is_duration("1mo2w") && is_duration("-30s") && !is_duration("10"));
    }
}
