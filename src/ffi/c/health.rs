//! C functions for `HealthMonitor`.

use super::db::rsdb_db;
use super::{arg_ref, arg_str, guard, hand_out, out_ptr, release_with, set_out_string};
use crate::error::Error;
use crate::ha::HealthMonitor;
use crate::runtime::block_on;
use std::ffi::{c_char, c_int, c_void, CString};

/// Periodic health checks of a database (and optionally the nodes of an HA cluster).
/// Thread-safe: one handle may be used from any thread.
pub struct rsdb_health(pub(crate) HealthMonitor);

/// Called for each alert with a JSON document (`check`, `severity` (`info`, `warning` or
/// `critical`), `state`, `resolved`, `repeat`, `message`, `value`, `threshold`, `at`, `since`),
/// valid only during the call. Alerts of the periodic checks run on the library thread
/// `rsdb-health`; those of `rsdb_health_check_now` on the thread that called it. One call at a
/// time, in order; after `rsdb_health_close` returns it is not called again. It must not call
/// `rsdb_health_check_now` (that fails with `RSDB_ERR_STATE`).
pub type rsdb_health_alert_cb = Option<unsafe extern "C" fn(user_data: *mut c_void, alert_json: *const c_char)>;

struct UserData(*mut c_void);
// SAFETY: the caller promises user_data may be used from the library thread until the
// monitor is closed; the library only passes it back.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Makes a monitor of `db`'s pool with the options in `options_json` (a JSON object, `"{}"`
/// for the defaults; keys in docs/ha-health.md: `interval_ms`, `check_timeout_ms`,
/// `repeat_interval_ms`, thresholds such as `latency_warning_ms`, `disk_path`, `nodes`, ...).
/// No check runs until `rsdb_health_start` or `rsdb_health_check_now`. `RSDB_ERR_JSON` for text
/// that is not a JSON object, `RSDB_ERR_INVALID_ARGUMENT` for an unknown key or thresholds out
/// of order. `*out` receives a handle to release with `rsdb_health_close`. The monitor shares
/// `db`'s pool and keeps one connection of its own taken from it; `db` may be closed first.
#[no_mangle]
pub unsafe extern "C" fn rsdb_health_open(
    db: *const rsdb_db,
    options_json: *const c_char,
    out: *mut *mut rsdb_health,
) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        let options = arg_str(options_json, "options_json")?;
        let slot = out_ptr(out, "out")?;
        let m = HealthMonitor::from_json(db.0.clone(), options)?;
        hand_out(slot, rsdb_health(m));
        Ok(())
    })
}

/// Starts the periodic checks on the thread `rsdb-health` (the first round right away).
/// Does nothing when already running.
#[no_mangle]
pub unsafe extern "C" fn rsdb_health_start(h: *const rsdb_health) -> c_int {
    guard(|| arg_ref(h, "health")?.0.start())
}

/// Stops the periodic checks, waiting up to the `stop_timeout_ms` option for the thread to
/// end (`RSDB_ERR_TIMEOUT` when a callback still runs then). From inside a callback it only
/// asks the thread to stop. Idempotent.
#[no_mangle]
pub unsafe extern "C" fn rsdb_health_stop(h: *const rsdb_health) -> c_int {
    guard(|| arg_ref(h, "health")?.0.stop())
}

/// Runs one round of checks now on this thread (alerts go to the callbacks on this thread)
/// and stores the status, as `rsdb_health_status` gives it, in `*status_json`, to release
/// with `rsdb_string_free`. A server that is down is reported in the status, not as an error.
#[no_mangle]
pub unsafe extern "C" fn rsdb_health_check_now(h: *const rsdb_health, status_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let h = arg_ref(h, "health")?;
        out_ptr(status_json, "status_json")?;
        let status = block_on(h.0.check_now())?;
        set_out_string(status_json, Some(&status.to_string()))
    })
}

/// The status as JSON: `{"overall","running","rounds","last_round_at","last_round_ms",
/// "callback_panics","checks":{"<check>":{"state","value","unit","message","warning",
/// "critical","checked_at","since","alerting","alerts","details"}}}`, without running a
/// check; release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_health_status(h: *const rsdb_health, status_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let h = arg_ref(h, "health")?;
        out_ptr(status_json, "status_json")?;
        set_out_string(status_json, Some(&h.0.status().to_string()))
    })
}

/// Calls `callback` for every alert (see `rsdb_health_alert_cb` for the thread and the
/// document). `user_data` may be NULL; it must stay valid until `rsdb_health_close`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_health_on_alert(
    h: *const rsdb_health,
    callback: rsdb_health_alert_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let h = arg_ref(h, "health")?;
        let cb = callback.ok_or(Error::Null("callback"))?;
        let ud = UserData(user_data);
        h.0.on_alert(move |alert| {
            let ud = &ud;
            let text = CString::new(serde_json::to_string(alert).unwrap_or_default()).unwrap_or_default();
            // SAFETY: the caller registered `cb`; the string lives for the call.
            unsafe { cb(ud.0, text.as_ptr()) };
        });
        Ok(())
    })
}

/// Stops the checks and releases the monitor: no callback runs after this returns (unless
/// called from inside one). NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_health_close(h: *mut rsdb_health) {
    release_with(h, |h| {
        let _ = h.0.close();
    })
}
