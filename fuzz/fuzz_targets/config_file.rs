//! The `key = value` configuration file (`rsdb --config FILE`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = rootstream_db::fuzzing::config_text(&text) {
        let _ = format!("{cfg:?}");
        let _ = cfg.ha_node_set();
    }
});
