//! S3 XML responses (error bodies, ListObjectsV2 pages).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rootstream_db::fuzzing;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = fuzzing::s3_xml(&text);
    let _ = fuzzing::s3_list(&text);
});
