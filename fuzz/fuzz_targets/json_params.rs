//! JSON statement parameters (the C and C++ APIs' `params_json`) and their conversion to every
//! SQL type they may be bound to; decimal text through the binary NUMERIC encoder and back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rootstream_db::fuzzing;

// bool int2 int4 int8 oid float4 float8 json jsonb bytea timestamptz timestamp date uuid numeric
// text varchar bpchar name unknown, arrays of int2 int4 text int8 float4 bool jsonb uuid
// timestamptz timestamp, and types without a conversion (point, interval).
const TYPES: &[u32] = &[
    16, 21, 23, 20, 26, 700, 701, 114, 3802, 17, 1184, 1114, 1082, 2950, 1700, 25, 1043, 1042, 19, 705, 1005, 1007,
    1009, 1016, 1021, 1000, 3807, 2951, 1185, 1115, 600, 1186,
];

/// What a decimal string reads back as: no `+`, no leading zeros, `-` only when not zero.
fn canonical(text: &str) -> String {
    let s = text.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int_part, frac) = body.split_once('.').unwrap_or((body, ""));
    let int_part = int_part.trim_start_matches('0');
    let nonzero = int_part.bytes().chain(frac.bytes()).any(|b| b != b'0');
    let mut out = String::new();
    if neg && nonzero {
        out.push('-');
    }
    out.push_str(if int_part.is_empty() { "0" } else { int_part });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let _ = fuzzing::encode_params(text, TYPES[sel as usize % TYPES.len()]);
    if let Ok(bin) = fuzzing::encode_numeric(text) {
        let back = fuzzing::decode_numeric(&bin).expect("an encoded numeric decodes");
        assert_eq!(back, canonical(text), "numeric {text:?} did not round-trip");
    }
});
