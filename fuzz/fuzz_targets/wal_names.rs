//! WAL file names (PostgreSQL's `%f`, `rsdb wal expire --before`) and LSNs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rootstream_db::backup::wal;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if wal::check_name(text).is_ok() {
        assert!(wal::segment_timeline(text).is_some(), "{text:?}");
    }
    let _ = wal::segment_position(text);
    let _ = wal::segment_timeline(text);
    if let Ok(lsn) = wal::parse_lsn(text) {
        assert_eq!(wal::parse_lsn(&wal::format_lsn(lsn)).unwrap(), lsn);
    }
});
