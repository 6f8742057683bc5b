//! Cron expressions of backup schedules.
#![no_main]
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use rootstream_db::backup::CronSchedule;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(s) = text.parse::<CronSchedule>() {
        assert_eq!(s.as_str(), text);
        for t in [0i64, 951_782_400, 1_709_164_799, 4_102_444_800] {
            let _ = s.matches(Utc.timestamp_opt(t, 0).unwrap());
        }
    }
});
