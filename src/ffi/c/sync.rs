//! C functions for `StateSyncManager` and `SnapshotManager`.

use super::config::rsdb_config;
use super::db::rsdb_db;
use super::redis::rsdb_redis;
use super::{arg_ref, arg_str, guard, hand_out, opt_str, out_ptr, release_with, set_out_string};
use crate::error::Error;
use crate::runtime::block_on;
use crate::sync::state::{parse_delta, MergeFn, Strategy};
use crate::sync::{SnapshotManager, StateSyncManager, SyncOptions};
use serde_json::{Map, Value};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Arc;
use std::time::Duration;

/// State shared with other RootStream instances over Redis. Thread-safe.
pub struct rsdb_sync(pub(crate) StateSyncManager);

/// Snapshots of an `rsdb_sync`'s state in PostgreSQL. Thread-safe.
pub struct rsdb_snapshots(pub(crate) SnapshotManager);

/// Called for each event whose type matches a subscription, after a state change it carries
/// was applied here. `event_type` and `envelope_json` (the whole envelope, see
/// docs/state-sync.md) are valid only during the call. Runs on a library thread, one call at
/// a time; after `rsdb_sync_unsubscribe` or `rsdb_sync_close` returns it is not called again.
pub type rsdb_sync_event_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event_type: *const c_char, envelope_json: *const c_char)>;

/// Called with a JSON document (a conflict or a resynchronization, see docs/state-sync.md),
/// on a library thread, one call at a time, until `rsdb_sync_close` returns.
pub type rsdb_sync_report_cb = Option<unsafe extern "C" fn(user_data: *mut c_void, report_json: *const c_char)>;

/// Merges two concurrent states of a version-vector entity (JSON objects; `older_json` has
/// the earlier timestamp). Returns the merged JSON object as a string allocated with
/// `malloc` (the library frees it), or NULL when it cannot merge (the pair is then recorded
/// as a conflict). Must give the same result for the same arguments on every instance. Runs
/// on a library thread.
pub type rsdb_sync_merge_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        entity_type: *const c_char,
        id: *const c_char,
        older_json: *const c_char,
        newer_json: *const c_char,
    ) -> *mut c_char,
>;

struct UserData(*mut c_void);
// SAFETY: the caller promises user_data may be used from library threads until the callback
// is removed; the library only passes it back.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\\u0000")).unwrap_or_default()
}

/// Starts a manager on `redis`: it subscribes to the namespace's bus, reads what the log
/// holds and starts sending and checking in the background. `db` may be NULL; with it,
/// conflicts are stored in `sync_conflicts` and a trimmed log is repaired from the latest
/// snapshot (the database must be migrated). `options_json` may be NULL or a JSON object with
/// any of `instance` (default: the configuration's `instance_id`), `namespace` (default
/// `rootstream`), `log_max_len`, `max_outbox`, `max_skew_ms`, `check_interval_ms`,
/// `clock_offset_ms`. `*out` receives a handle to release with `rsdb_sync_close`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_open(
    cfg: *const rsdb_config,
    redis: *const rsdb_redis,
    db: *const rsdb_db,
    options_json: *const c_char,
    out: *mut *mut rsdb_sync,
) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let redis = arg_ref(redis, "redis")?;
        let options = opt_str(options_json, "options_json")?;
        let slot = out_ptr(out, "out")?;
        let mut opts = SyncOptions::from_config(&cfg.0);
        if let Some(text) = options {
            opts.apply_json(text)?;
        }
        let db = db.as_ref().map(|d| d.0.clone());
        let m = block_on(StateSyncManager::start_with_database(redis.0.clone(), opts, db))?;
        hand_out(slot, rsdb_sync(m));
        Ok(())
    })
}

/// Closes the manager: no callback runs after this returns, and messages still queued for
/// Redis are dropped (call `rsdb_sync_flush` first to keep them). NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_close(s: *mut rsdb_sync) {
    release_with(s, |s| s.0.close())
}

/// The origin id this instance stamps on its messages; `*out` receives a string to release
/// with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_origin(s: *const rsdb_sync, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        set_out_string(out, Some(s.0.origin()))
    })
}

/// Declares an entity type and its conflict strategy: `lww` (per-field last writer wins on
/// hybrid logical clocks) or `version_vectors` (concurrent changes go to the merge function,
/// or are recorded as conflicts). `stream`, `user` and `session` are declared `lww`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_register_type(
    s: *const rsdb_sync,
    entity_type: *const c_char,
    strategy: *const c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        let t = arg_str(entity_type, "entity_type")?;
        let strategy = Strategy::parse(arg_str(strategy, "strategy")?)?;
        s.0.register_entity_type(t, strategy)
    })
}

/// Sets the merge function of a `version_vectors` type. `merge` may be NULL, which removes it.
/// `user_data` must stay valid until the function is replaced or the manager is closed.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_set_merge(
    s: *const rsdb_sync,
    entity_type: *const c_char,
    merge: rsdb_sync_merge_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        let t = arg_str(entity_type, "entity_type")?;
        let Some(cb) = merge else { return s.0.set_merge(t, None) };
        let ud = UserData(user_data);
        let f: MergeFn = Arc::new(move |r| {
            let ud = &ud;
            let (older, newer) = (Value::Object(r.older.clone()), Value::Object(r.newer.clone()));
            let (t, id) = (cstring(r.entity_type), cstring(r.id));
            let (o, n) = (cstring(&older.to_string()), cstring(&newer.to_string()));
            // SAFETY: the caller registered `cb` for these arguments; the strings live for the call.
            let p = unsafe { cb(ud.0, t.as_ptr(), id.as_ptr(), o.as_ptr(), n.as_ptr()) };
            if p.is_null() {
                return Err(Error::InvalidArgument("the C merge function returned NULL".into()));
            }
            // SAFETY: the callback hands over a malloc'ed, NUL-terminated string.
            let text = unsafe { CStr::from_ptr(p) }.to_str().map(str::to_owned);
            unsafe { libc::free(p as *mut c_void) };
            let text = text.map_err(|_| Error::InvalidUtf8("merged state"))?;
            parse_delta(&text)
        });
        s.0.set_merge(t, Some(f))
    })
}

/// Publishes an event to every instance (this one included): `event_type` is one of the types
/// the models use — `stream.started`, `stream.stopped`, `viewer.joined`, `viewer.left`,
/// `user.updated`, `session.created`, `session.revoked` — or a name of yours (types ending in
/// `.delta` are reserved for state changes); `payload_json` any JSON value
/// up to 64 KiB (its `id` field, if any, names the entity). Returns once it is queued for
/// Redis; `*seq` (may be NULL) receives its sequence number.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_publish(
    s: *const rsdb_sync,
    event_type: *const c_char,
    payload_json: *const c_char,
    seq: *mut u64,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        let kind = arg_str(event_type, "event_type")?;
        let text = arg_str(payload_json, "payload_json")?;
        let n = s.0.publish_text(kind, text)?;
        if let Some(x) = seq.as_mut() {
            *x = n;
        }
        Ok(())
    })
}

/// Applies a change to an entity here and sends it to every other instance. `delta_json` is
/// a JSON object of changed fields, null deleting a field, up to 64 KiB. `*outcome_json` (may
/// be NULL) receives what it did here, e.g. `{"outcome":"applied","fields":["title"]}`, to
/// release with `rsdb_string_free`. Nothing is applied when an error is returned.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_apply_delta(
    s: *const rsdb_sync,
    entity_type: *const c_char,
    id: *const c_char,
    delta_json: *const c_char,
    outcome_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        let t = arg_str(entity_type, "entity_type")?;
        let id = arg_str(id, "id")?;
        let delta: Map<String, Value> = parse_delta(arg_str(delta_json, "delta_json")?)?;
        let outcome = s.0.apply_delta(t, id, &delta)?;
        if !outcome_json.is_null() {
            set_out_string(outcome_json, Some(&outcome.to_json().to_string()))?;
        }
        Ok(())
    })
}

/// The entity's state here as a JSON object; `*out` receives it (release with
/// `rsdb_string_free`), or NULL when no change to the entity has been seen.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_get_snapshot(
    s: *const rsdb_sync,
    entity_type: *const c_char,
    id: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        let t = arg_str(entity_type, "entity_type")?;
        let id = arg_str(id, "id")?;
        out_ptr(out, "out")?;
        let state = s.0.get_snapshot(t, id)?.map(|m| Value::Object(m).to_string());
        set_out_string(out, state.as_deref())
    })
}

/// Waits until every message queued so far is in the log; `RSDB_ERR_TIMEOUT` after
/// `timeout_ms` (the messages stay queued and go out when Redis answers).
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_flush(s: *const rsdb_sync, timeout_ms: u32) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        block_on(s.0.flush(Duration::from_millis(u64::from(timeout_ms))))
    })
}

/// Subscribes `callback` to events whose type matches the glob `pattern` (`stream.*`,
/// `*.delta`). `*subscription_id` receives the id for `rsdb_sync_unsubscribe`. `user_data`
/// must stay valid until then.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_subscribe(
    s: *const rsdb_sync,
    pattern: *const c_char,
    callback: rsdb_sync_event_cb,
    user_data: *mut c_void,
    subscription_id: *mut u64,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        let pattern = arg_str(pattern, "pattern")?;
        let cb = callback.ok_or(Error::Null("callback"))?;
        let out = out_ptr(subscription_id, "subscription_id")?;
        let ud = UserData(user_data);
        *out = s.0.subscribe(pattern, move |env| {
            let ud = &ud;
            let kind = cstring(&env.kind);
            let text = cstring(&serde_json::to_string(env).unwrap_or_default());
            // SAFETY: the caller registered `cb`; the strings live for the call.
            unsafe { cb(ud.0, kind.as_ptr(), text.as_ptr()) };
        })?;
        Ok(())
    })
}

/// Ends a subscription; once this returns its callback is not called again (unless called
/// from inside that callback, where the running call finishes). `RSDB_ERR_NOT_FOUND` for an
/// unknown id.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_unsubscribe(s: *const rsdb_sync, subscription_id: u64) -> c_int {
    guard(|| arg_ref(s, "sync")?.0.unsubscribe(subscription_id))
}

fn report_callback(cb: unsafe extern "C" fn(*mut c_void, *const c_char), ud: UserData) -> impl Fn(String) {
    move |json: String| {
        let ud = &ud;
        let text = cstring(&json);
        // SAFETY: the caller registered `cb`; the string lives for the call.
        unsafe { cb(ud.0, text.as_ptr()) };
    }
}

/// Calls `callback` with each conflict no merge function resolved, as JSON
/// (`entity_type`, `id`, `kept`, `kept_hlc`, `kept_vv`, `lost`, `reason`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_on_conflict(
    s: *const rsdb_sync,
    callback: rsdb_sync_report_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        let f = report_callback(callback.ok_or(Error::Null("callback"))?, UserData(user_data));
        s.0.on_conflict(move |c| f(serde_json::to_string(c).unwrap_or_default()));
        Ok(())
    })
}

/// Calls `callback` whenever part of the history was missing from the log, as JSON
/// (`origin`, `expected_seq`, `found_seq`, `reason`, `snapshot_version`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_on_resync(
    s: *const rsdb_sync,
    callback: rsdb_sync_report_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        let f = report_callback(callback.ok_or(Error::Null("callback"))?, UserData(user_data));
        s.0.on_resync(move |r| f(serde_json::to_string(r).unwrap_or_default()));
        Ok(())
    })
}

/// Counters and positions as JSON (`origin`, `namespace`, `subscriptions`, `sent`, `outbox`,
/// `received`, `duplicates`, `catch_ups`, `caught_up_messages`, `resyncs`, `conflicts`,
/// `rejected`, `conflict_write_failures`, `last_log_id`, `lag`) plus the recent conflicts and
/// resyncs (`recent_conflicts`, `recent_resyncs`); release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_status(s: *const rsdb_sync, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sync")?;
        out_ptr(out, "out")?;
        set_out_string(out, Some(&block_on(s.0.status_report())?.to_string()))
    })
}

/// Reads the log now instead of waiting for the background check.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sync_catch_up(s: *const rsdb_sync) -> c_int {
    guard(|| block_on(arg_ref(s, "sync")?.0.catch_up()))
}

/// Snapshots of `sync`'s state stored through `db` (migrated); from now on `sync` also
/// repairs a trimmed log from them. `*out` receives a handle to release with
/// `rsdb_snapshots_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_snapshots_new(
    db: *const rsdb_db,
    sync: *const rsdb_sync,
    out: *mut *mut rsdb_snapshots,
) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        let sync = arg_ref(sync, "sync")?;
        let slot = out_ptr(out, "out")?;
        hand_out(slot, rsdb_snapshots(SnapshotManager::new(db.0.clone(), sync.0.clone())));
        Ok(())
    })
}

/// Stops the periodic snapshots and releases the handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_snapshots_free(s: *mut rsdb_snapshots) {
    release_with(s, |s| s.0.stop_periodic())
}

/// Stores the current state as the next version; `*info_json` (may be NULL) receives the
/// snapshot's description (`version`, `log_id`, `entity_count`, `raw_bytes`, `stored_bytes`,
/// `taken_by`, `created_at`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_snapshots_take(s: *const rsdb_snapshots, info_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(s, "snapshots")?;
        let info = block_on(s.0.take())?;
        if !info_json.is_null() {
            set_out_string(info_json, Some(&serde_json::to_string(&info)?))?;
        }
        Ok(())
    })
}

/// Every snapshot of the namespace, newest first, as a JSON array of descriptions.
#[no_mangle]
pub unsafe extern "C" fn rsdb_snapshots_list(s: *const rsdb_snapshots, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(s, "snapshots")?;
        out_ptr(out, "out")?;
        let list = block_on(s.0.list())?;
        set_out_string(out, Some(&serde_json::to_string(&list)?))
    })
}

/// Deletes all but the newest `keep` snapshots (at least one stays); `*deleted` (may be
/// NULL) receives how many went.
#[no_mangle]
pub unsafe extern "C" fn rsdb_snapshots_cleanup(s: *const rsdb_snapshots, keep: u32, deleted: *mut u64) -> c_int {
    guard(|| {
        let s = arg_ref(s, "snapshots")?;
        let n = block_on(s.0.cleanup(keep as usize))?;
        if let Some(d) = deleted.as_mut() {
            *d = n;
        }
        Ok(())
    })
}

/// The state rebuilt from the latest snapshot and the later log, as JSON
/// `{"<type>": {"<id>": {…}}}`; release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_snapshots_reconstruct(s: *const rsdb_snapshots, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(s, "snapshots")?;
        out_ptr(out, "out")?;
        let store = block_on(s.0.reconstruct())?;
        set_out_string(out, Some(&serde_json::to_string(&store.image().visible())?))
    })
}

/// Takes a snapshot every `interval_ms` and keeps the newest `keep`, until
/// `rsdb_snapshots_stop_periodic` or `rsdb_snapshots_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_snapshots_start_periodic(s: *const rsdb_snapshots, interval_ms: u32, keep: u32) -> c_int {
    guard(|| {
        let s = arg_ref(s, "snapshots")?;
        s.0.start_periodic(Duration::from_millis(u64::from(interval_ms)), keep as usize)
    })
}

/// Stops the periodic snapshots (none running is fine).
#[no_mangle]
pub unsafe extern "C" fn rsdb_snapshots_stop_periodic(s: *const rsdb_snapshots) -> c_int {
    guard(|| {
        arg_ref(s, "snapshots")?.0.stop_periodic();
        Ok(())
    })
}
