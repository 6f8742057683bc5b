//! InfluxDB line protocol: points, field values, precisions, and their exact text form.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`
//!
//! - measurement: `,` and space are escaped with a backslash;
//! - tag keys, tag values and field keys: `,`, `=` and space are escaped;
//! - string field values are double-quoted, with `"` and `\` escaped;
//! - integers carry the `i` suffix, unsigned integers `u`, floats none, booleans are `true`/`false`;
//! - tags are written sorted by key (byte order), as InfluxDB recommends;
//! - the timestamp is written in the chosen precision (nanoseconds by default).
//!
//! What line protocol cannot carry is rejected before anything is sent: empty names, newlines,
//! a backslash at the end of a name or right before a character that needs escaping (the server
//! would read it as an escape), NaN and infinite floats, an empty field set, duplicate keys and
//! the reserved keys `time`, `_field` and `_measurement`.

use crate::error::{Error, Result};
use std::fmt::Write as _;

/// The longest string field value InfluxDB accepts (64 KiB).
pub const MAX_STRING_FIELD_BYTES: usize = 64 * 1024;

/// Timestamp precision of a write (`precision=` on the write URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
}

impl Precision {
    /// The value of `precision=` for the v1 API (`n`, `u`, `ms`, `s`).
    pub fn v1_param(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "n",
            Precision::Microseconds => "u",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        }
    }

    /// The value of `precision=` for the v2 API (`ns`, `us`, `ms`, `s`).
    pub fn v2_param(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        }
    }

    /// Nanoseconds per unit.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
        }
    }

    /// Parses `ns`/`n`, `us`/`u`, `ms`, `s`.
    pub fn parse(s: &str) -> Result<Precision> {
        Ok(match s {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            _ => return Err(Error::InvalidArgument(format!("unknown precision {s:?} (ns, us, ms or s)"))),
        })
    }
}

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    Bool(bool),
    String(String),
}

impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::Float(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::Integer(v)
    }
}
impl From<i32> for FieldValue {
    fn from(v: i32) -> Self {
        FieldValue::Integer(v.into())
    }
}
impl From<u64> for FieldValue {
    fn from(v: u64) -> Self {
        FieldValue::Unsigned(v)
    }
}
impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::String(v.to_owned())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::String(v)
    }
}

/// How unsigned fields are written. InfluxDB 1.x (OSS) has no unsigned type and rejects the `u`
/// suffix, so the v1 client writes them as integers (values above `i64::MAX` are rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsignedMode {
    /// `42u` (InfluxDB 2.x/3.x, VictoriaMetrics).
    #[default]
    Suffix,
    /// `42i`.
    AsInteger,
}

/// One point: a measurement, sorted tags, at least one field and an optional timestamp in
/// nanoseconds since the Unix epoch (without one, the server stamps the point on arrival).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Point {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    pub timestamp_ns: Option<i64>,
}

impl Point {
    pub fn new(measurement: impl Into<String>) -> Point {
        Point { measurement: measurement.into(), ..Point::default() }
    }

    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Point {
        self.tags.push((key.into(), value.into()));
        self
    }

    pub fn field(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Point {
        self.fields.push((key.into(), value.into()));
        self
    }

    pub fn timestamp_ns(mut self, ns: i64) -> Point {
        self.timestamp_ns = Some(ns);
        self
    }

    /// The point's line (without a trailing newline), or the reason it cannot be written.
    pub fn to_line(&self, precision: Precision) -> Result<String> {
        self.to_line_with(precision, UnsignedMode::Suffix)
    }

    /// [`Point::to_line`] with a choice of how unsigned fields are written.
    pub fn to_line_with(&self, precision: Precision, unsigned: UnsignedMode) -> Result<String> {
        let mut out = String::with_capacity(64);
        self.write_line(&mut out, precision, unsigned)?;
        Ok(out)
    }

    /// Appends the point's line to `out`; on an error `out` is left as it was.
    pub fn write_line(&self, out: &mut String, precision: Precision, unsigned: UnsignedMode) -> Result<()> {
        let start = out.len();
        let r = self.write_line_inner(out, precision, unsigned);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn write_line_inner(&self, out: &mut String, precision: Precision, unsigned: UnsignedMode) -> Result<()> {
        check_name("measurement", &self.measurement)?;
        if self.measurement.starts_with('#') {
            return Err(Error::InvalidArgument(format!(
                "measurement {:?} starts with '#', which line protocol reads as a comment",
                self.measurement
            )));
        }
        if self.fields.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "point of measurement {:?} has no fields (at least one is required)",
                self.measurement
            )));
        }
        escape_into(out, &self.measurement, &[',', ' ']);
        let mut tags: Vec<&(String, String)> = self.tags.iter().collect();
        tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (i, (k, v)) in tags.iter().enumerate() {
            check_key("tag key", k)?;
            check_name("tag value", v)?;
            if i > 0 && tags[i - 1].0 == *k {
                return Err(Error::InvalidArgument(format!("tag key {k:?} appears twice")));
            }
            out.push(',');
            escape_into(out, k, &[',', '=', ' ']);
            out.push('=');
            escape_into(out, v, &[',', '=', ' ']);
        }
        out.push(' ');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            check_key("field key", k)?;
            if self.fields[..i].iter().any(|(other, _)| other == k) {
                return Err(Error::InvalidArgument(format!("field key {k:?} appears twice")));
            }
            if i > 0 {
                out.push(',');
            }
            escape_into(out, k, &[',', '=', ' ']);
            out.push('=');
            write_value(out, k, v, unsigned)?;
        }
        if let Some(ns) = self.timestamp_ns {
            let _ = write!(out, " {}", ns.div_euclid(precision.nanos_per_unit()));
        }
        Ok(())
    }
}

/// Encodes many points into one newline-separated body; fails on the first bad point (its index
/// is in the message) without returning a partial body.
pub fn encode_batch(points: &[Point], precision: Precision, unsigned: UnsignedMode) -> Result<String> {
    let mut out = String::with_capacity(points.len() * 64);
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        p.write_line(&mut out, precision, unsigned)
            .map_err(|e| Error::InvalidArgument(format!("point {i}: {}", strip_prefix(&e))))?;
    }
    Ok(out)
}

fn strip_prefix(e: &Error) -> String {
    match e {
        Error::InvalidArgument(m) => m.clone(),
        other => other.to_string(),
    }
}

fn write_value(out: &mut String, key: &str, v: &FieldValue, unsigned: UnsignedMode) -> Result<()> {
    match v {
        FieldValue::Float(f) => {
            if !f.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "field {key:?} is {f}; line protocol has no NaN or infinite floats"
                )));
            }
            // Debug gives the shortest text that reads back as the same f64, with an exponent
            // for very large or small values, and always a '.' or an exponent (so the server
            // never reads it as an integer).
            let _ = write!(out, "{f:?}");
        }
        FieldValue::Integer(i) => {
            let _ = write!(out, "{i}i");
        }
        FieldValue::Unsigned(u) => match unsigned {
            UnsignedMode::Suffix => {
                let _ = write!(out, "{u}u");
            }
            UnsignedMode::AsInteger => {
                if *u > i64::MAX as u64 {
                    return Err(Error::InvalidArgument(format!(
                        "field {key:?} = {u} does not fit the server's signed integers (no unsigned type on InfluxDB 1.x)"
                    )));
                }
                let _ = write!(out, "{u}i");
            }
        },
        FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        FieldValue::String(s) => {
            if s.len() > MAX_STRING_FIELD_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "string field {key:?} is {} bytes; the limit is {MAX_STRING_FIELD_BYTES}",
                    s.len()
                )));
            }
            if s.contains(['\n', '\r']) {
                return Err(Error::InvalidArgument(format!("string field {key:?} contains a newline")));
            }
            push_quoted(out, s, '"');
        }
    }
    Ok(())
}

fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn check_key(what: &str, k: &str) -> Result<()> {
    check_name(what, k)?;
    if matches!(k, "time" | "_field" | "_measurement") {
        return Err(Error::InvalidArgument(format!("{what} {k:?} is reserved")));
    }
    Ok(())
}

/// Names and tag values: not empty, no newline or other control character, and no backslash
/// that the server would read as an escape (at the end, or before `,`, `=`, space or `\`).
fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} is empty")));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgument(format!("{what} {s:?} contains a newline or control character")));
    }
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'\\' {
            match b.get(i + 1) {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "{what} {s:?} ends with a backslash, which line protocol cannot carry"
                    )))
                }
                Some(b',' | b'=' | b' ' | b'\\' | b'"') => {
                    return Err(Error::InvalidArgument(format!(
                        "{what} {s:?} has a backslash before '{}', which line protocol would read as an escape",
                        b[i + 1] as char
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_nanos() as i64
}

/// Appends `s` between two `quote` characters, with `quote` and `\\` escaped by a backslash: the
/// form of line-protocol string fields and of InfluxQL identifiers and string literals.
pub(crate) fn push_quoted(out: &mut String, s: &str, quote: char) {
    out.reserve(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        if c == quote || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(p: &Point) -> String {
        p.to_line(Precision::Nanoseconds).unwrap()
    }

    fn err(p: &Point) -> String {
        p.to_line(Precision::Nanoseconds).unwrap_err().to_string()
    }

    #[test]
    fn simple_point_with_every_field_type() {
        let p = Point::new("stream")
            .tag("stream_id", "42")
            .field("f", 1.5)
            .field("i", -7i64)
            .field("u", 9u64)
            .field("b", true)
            .field("s", "hi")
            .timestamp_ns(1_700_000_000_123_456_789);
        assert_eq!(line(&p), r#"stream,stream_id=42 f=1.5,i=-7i,u=9u,b=true,s="hi" 1700000000123456789"#);
    }

    #[test]
    fn floats_keep_a_dot_or_exponent() {
        let p = Point::new("m").field("a", 1.0).field("b", 1e300).field("c", -2.5e-9).field("d", 0.1);
        assert_eq!(line(&p), "m a=1.0,b=1e300,c=-2.5e-9,d=0.1");
        for v in [1.0, 1e300, -2.5e-9, 0.1, f64::MAX, f64::MIN_POSITIVE, 123456.789] {
            let s = format!("{v:?}");
            assert_eq!(s.parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn escaping_of_every_part() {
        let p = Point::new("my measure,ment=x")
            .tag("tag key,=", "tag value,= ")
            .field("field key,= ", r#"say "hi" \ bye"#)
            .timestamp_ns(1);
        assert_eq!(
            line(&p),
            r#"my\ measure\,ment=x,tag\ key\,\==tag\ value\,\=\  field\ key\,\=\ ="say \"hi\" \\ bye" 1"#
        );
        // '=' in a measurement and '"' in names need no escape.
        let p = Point::new("a=b\"c").tag("k\"", "v\"").field("f\"", 1i64);
        assert_eq!(line(&p), r#"a=b"c,k"=v" f"=1i"#);
        // A lone backslash before an ordinary character is carried as is.
        let p = Point::new(r"C:\dir").tag("path", r"a\b").field("v", 1i64);
        assert_eq!(line(&p), r"C:\dir,path=a\b v=1i");
        // Unicode is fine.
        let p = Point::new("métrique").tag("ключ", "値").field("ü", "✓");
        assert_eq!(line(&p), "métrique,ключ=値 ü=\"✓\"");
    }

    #[test]
    fn tags_are_sorted_by_key() {
        let p = Point::new("m").tag("zone", "1").tag("Host", "2").tag("app", "3").field("v", 1i64);
        assert_eq!(line(&p), "m,Host=2,app=3,zone=1 v=1i");
    }

    #[test]
    fn precisions() {
        let p = Point::new("m").field("v", 1i64).timestamp_ns(1_700_000_000_123_456_789);
        assert_eq!(p.to_line(Precision::Nanoseconds).unwrap(), "m v=1i 1700000000123456789");
        assert_eq!(p.to_line(Precision::Microseconds).unwrap(), "m v=1i 1700000000123456");
        assert_eq!(p.to_line(Precision::Milliseconds).unwrap(), "m v=1i 1700000000123");
        assert_eq!(p.to_line(Precision::Seconds).unwrap(), "m v=1i 1700000000");
        let before_epoch = Point::new("m").field("v", 1i64).timestamp_ns(-1);
        assert_eq!(before_epoch.to_line(Precision::Seconds).unwrap(), "m v=1i -1");
        assert_eq!(Precision::parse("ms").unwrap().v1_param(), "ms");
        assert_eq!(Precision::parse("ns").unwrap().v1_param(), "n");
        assert_eq!(Precision::parse("u").unwrap().v2_param(), "us");
        assert!(Precision::parse("h").is_err());
    }

    #[test]
    fn unsigned_as_integer_for_v1() {
        let p = Point::new("m").field("u", 5u64);
        assert_eq!(p.to_line_with(Precision::Seconds, UnsignedMode::AsInteger).unwrap(), "m u=5i");
        let big = Point::new("m").field("u", u64::MAX);
        assert!(big.to_line_with(Precision::Seconds, UnsignedMode::AsInteger).is_err());
        assert_eq!(line(&big), format!("m u={}u", u64::MAX));
    }

    #[test]
    fn rejects_what_line_protocol_cannot_carry() {
        assert!(err(&Point::new("m")).contains("no fields"));
        assert!(err(&Point::new("").field("v", 1i64)).contains("measurement is empty"));
        assert!(err(&Point::new("#m").field("v", 1i64)).contains("comment"));
        assert!(err(&Point::new("m").field("v", f64::NAN)).contains("NaN"));
        assert!(err(&Point::new("m").field("v", f64::INFINITY)).contains("infinite"));
        assert!(err(&Point::new("m").field("v", f64::NEG_INFINITY)).contains("infinite"));
        assert!(err(&Point::new("m").field("", 1i64)).contains("field key is empty"));
        assert!(err(&Point::new("m").tag("", "v").field("v", 1i64)).contains("tag key is empty"));
        assert!(err(&Point::new("m").tag("k", "").field("v", 1i64)).contains("tag value is empty"));
        assert!(err(&Point::new("m\nx").field("v", 1i64)).contains("newline"));
        assert!(err(&Point::new("m").tag("k", "a\nb").field("v", 1i64)).contains("newline"));
        assert!(err(&Point::new("m").field("s", "a\nb")).contains("newline"));
        assert!(err(&Point::new("m").field("time", 1i64)).contains("reserved"));
        assert!(err(&Point::new("m").tag("_measurement", "x").field("v", 1i64)).contains("reserved"));
        assert!(err(&Point::new("m").tag("_field", "x").field("v", 1i64)).contains("reserved"));
        assert!(err(&Point::new("m").field("v", 1i64).field("v", 2i64)).contains("twice"));
        assert!(err(&Point::new("m").tag("k", "1").tag("k", "2").field("v", 1i64)).contains("twice"));
        assert!(err(&Point::new(r"m\").field("v", 1i64)).contains("backslash"));
        assert!(err(&Point::new("m").tag("k", r"a\,b").field("v", 1i64)).contains("backslash"));
        assert!(err(&Point::new("m").tag("k", r"a\ b").field("v", 1i64)).contains("backslash"));
        let long = "x".repeat(MAX_STRING_FIELD_BYTES + 1);
        assert!(err(&Point::new("m").field("s", long)).contains("limit"));
        // A string field may end with a backslash: it is escaped inside the quotes.
        assert_eq!(line(&Point::new("m").field("s", "a\\")), r#"m s="a\\""#);
    }

    #[test]
    fn batch_fails_whole_on_a_bad_point() {
        let good = Point::new("m").field("v", 1i64).timestamp_ns(5);
        let bad = Point::new("m").field("v", f64::NAN);
        let body = encode_batch(&[good.clone(), good.clone()], Precision::Nanoseconds, UnsignedMode::Suffix).unwrap();
        assert_eq!(body, "m v=1i 5\nm v=1i 5");
        let e = encode_batch(&[good, bad], Precision::Nanoseconds, UnsignedMode::Suffix).unwrap_err();
        assert!(e.to_string().contains("point 1"), "{e}");
        let mut out = String::from("keep");
        assert!(Point::new("m")
            .field("v", f64::NAN)
            .write_line(&mut out, Precision::Seconds, UnsignedMode::Suffix)
            .is_err());
        assert_eq!(out, "keep");
    }
}
