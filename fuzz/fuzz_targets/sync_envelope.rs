//! State-sync envelopes from other instances, deltas, event types and subscription globs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rootstream_db::sync::{envelope, state, Envelope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(env) = Envelope::parse(text) {
        let _ = env.is_delta();
        let _ = envelope::check_event_type(&env.kind);
        let _ = envelope::entity_of(&env.kind);
        let _ = envelope::id_of(&env.payload);
    }
    let _ = state::parse_delta(text);
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, ""));
    let _ = envelope::glob_match(pattern, subject);
    let _ = envelope::check_event_type(pattern);
    let _ = envelope::entity_of(pattern);
});
