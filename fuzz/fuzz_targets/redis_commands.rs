//! Redis commands given as JSON (`exec`, `exec_atomic` of the C and C++ APIs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = rootstream_db::fuzzing::redis_command(text);
});
