//! C functions for the event store. Events and snapshots cross as JSON.

use super::db::rsdb_db;
use super::{arg_ref, arg_str, guard, hand_out, out_ptr, release, set_out_string};
use crate::error::Error;
use crate::events::{EventStore, NewEvent};
use crate::runtime::block_on;
use std::ffi::{c_char, c_int};

/// The event store. Thread-safe.
pub struct rsdb_events(EventStore);

/// Creates an event-store handle on `db` (borrowed for the call; the handle keeps the pool
/// alive, so `db` may be closed first). `*out` receives a handle to release with
/// `rsdb_events_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_events_new(db: *const rsdb_db, out: *mut *mut rsdb_events) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        hand_out(out_ptr(out, "out")?, rsdb_events(EventStore::new(db.0.clone())));
        Ok(())
    })
}

/// Releases an event-store handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_events_free(h: *mut rsdb_events) {
    release(h)
}

/// Appends events to an aggregate expected to be at `expected_version` (0 for a new one).
/// `events_json` is an array of `{"event_type": "...", "payload": {...}, "metadata": {...},
/// "user_id": 1}` (payload, metadata and user_id optional). When the aggregate is at another
/// version — a concurrent writer won — nothing is written and `RSDB_ERR_CONFLICT` is returned.
/// `new_version` (may be NULL) receives the aggregate's version after the append.
#[no_mangle]
pub unsafe extern "C" fn rsdb_events_append(
    events: *const rsdb_events,
    aggregate_type: *const c_char,
    aggregate_id: *const c_char,
    expected_version: i64,
    events_json: *const c_char,
    new_version: *mut i64,
) -> c_int {
    guard(|| {
        let es = arg_ref(events, "events")?;
        let t = arg_str(aggregate_type, "aggregate_type")?;
        let id = arg_str(aggregate_id, "aggregate_id")?;
        let list: Vec<NewEvent> = serde_json::from_str(arg_str(events_json, "events_json")?)
            .map_err(|e| Error::Json(format!("events_json must be an array of events: {e}")))?;
        let v = block_on(es.0.append(t, id, expected_version, &list))?;
        if let Some(out) = new_version.as_mut() {
            *out = v;
        }
        Ok(())
    })
}

/// The aggregate's events with a version above `after_version`, in order, as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn rsdb_events_load(
    events: *const rsdb_events,
    aggregate_type: *const c_char,
    aggregate_id: *const c_char,
    after_version: i64,
    events_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let es = arg_ref(events, "events")?;
        let t = arg_str(aggregate_type, "aggregate_type")?;
        let id = arg_str(aggregate_id, "aggregate_id")?;
        out_ptr(events_json, "events_json")?;
        let list = block_on(es.0.load(t, id, after_version))?;
        set_out_string(events_json, Some(&serde_json::to_string(&list)?))
    })
}

/// The aggregate's current version (0 without events).
#[no_mangle]
pub unsafe extern "C" fn rsdb_events_version(
    events: *const rsdb_events,
    aggregate_type: *const c_char,
    aggregate_id: *const c_char,
    version: *mut i64,
) -> c_int {
    guard(|| {
        let es = arg_ref(events, "events")?;
        let t = arg_str(aggregate_type, "aggregate_type")?;
        let id = arg_str(aggregate_id, "aggregate_id")?;
        let out = out_ptr(version, "version")?;
        *out = block_on(es.0.current_version(t, id))?;
        Ok(())
    })
}

/// A user's events (audit trail), newest first, at most `limit`, as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn rsdb_events_by_user(
    events: *const rsdb_events,
    user_id: i64,
    limit: i64,
    events_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let es = arg_ref(events, "events")?;
        out_ptr(events_json, "events_json")?;
        let list = block_on(es.0.by_user(user_id, limit))?;
        set_out_string(events_json, Some(&serde_json::to_string(&list)?))
    })
}

/// Stores the aggregate's state (`state_json`, any JSON) at `version`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_events_save_snapshot(
    events: *const rsdb_events,
    aggregate_type: *const c_char,
    aggregate_id: *const c_char,
    version: i64,
    state_json: *const c_char,
) -> c_int {
    guard(|| {
        let es = arg_ref(events, "events")?;
        let t = arg_str(aggregate_type, "aggregate_type")?;
        let id = arg_str(aggregate_id, "aggregate_id")?;
        let state: serde_json::Value = serde_json::from_str(arg_str(state_json, "state_json")?)?;
        block_on(es.0.save_snapshot(t, id, version, &state))
    })
}

/// `*json` receives `{"snapshot": {...} or null, "events": [...]}`: the latest snapshot and
/// every event after it.
#[no_mangle]
pub unsafe extern "C" fn rsdb_events_load_from_snapshot(
    events: *const rsdb_events,
    aggregate_type: *const c_char,
    aggregate_id: *const c_char,
    json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let es = arg_ref(events, "events")?;
        let t = arg_str(aggregate_type, "aggregate_type")?;
        let id = arg_str(aggregate_id, "aggregate_id")?;
        out_ptr(json, "json")?;
        let r = block_on(es.0.load_from_snapshot(t, id))?;
        set_out_string(json, Some(&serde_json::to_string(&r)?))
    })
}
