//! Binary NUMERIC values as a server (or anything posing as one) sends them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = rootstream_db::fuzzing::decode_numeric(data) {
        // The text form is bounded by what the value can hold: at most 4 characters per digit
        // group of the integer part (weight < 2^15) plus the display scale (< 2^14).
        assert!(s.len() <= 4 * 32768 + 16384 + 3, "{} characters from {} bytes", s.len(), data.len());
    }
});
