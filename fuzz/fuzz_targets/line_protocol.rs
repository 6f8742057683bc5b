//! InfluxDB points built from outside strings (the C/C++ `write_point` arguments, tag and
//! field JSON) and their line-protocol text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rootstream_db::metrics::options;
use rootstream_db::metrics::{FieldValue, Point, Precision, UnsignedMode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = options::metric_values(text);
    let _ = options::tag_pairs(text);
    let _ = Precision::parse(text);
    let parts: Vec<&str> = text.split('\u{0}').collect();
    let get = |i: usize| parts.get(i).copied().unwrap_or("");
    let value = match get(4).len() % 5 {
        0 => FieldValue::Float(get(4).len() as f64 / 3.0),
        1 => FieldValue::Integer(-(get(4).len() as i64)),
        2 => FieldValue::Unsigned(u64::MAX - get(4).len() as u64),
        3 => FieldValue::Bool(true),
        _ => FieldValue::String(get(4).to_string()),
    };
    let p = Point::new(get(0)).tag(get(1), get(2)).field(get(3), value).timestamp_ns(text.len() as i64 * 1_000_003);
    for prec in [Precision::Nanoseconds, Precision::Milliseconds, Precision::Seconds] {
        for mode in [UnsignedMode::Suffix, UnsignedMode::AsInteger] {
            if let Ok(line) = p.to_line_with(prec, mode) {
                assert!(!line.contains('\n'), "{line:?}");
            }
        }
    }
});
