//! C functions for `FailoverManager`.

use super::config::rsdb_config;
use super::db::rsdb_db;
use super::sync::rsdb_sync;
use super::{arg_ref, arg_str, guard, hand_out, opt_str, out_ptr, release_with, set_out_string};
use crate::error::Error;
use crate::ha::FailoverManager;
use std::ffi::{c_char, c_int, c_void, CString};

/// Automatic failover, manual failover and switchover of the PostgreSQL cluster in `ha_nodes`,
/// coordinated through a leader lease in etcd. Thread-safe.
pub struct rsdb_failover(pub(crate) FailoverManager);

/// Called on every change of primary with a JSON document (`cluster`, `kind` = `automatic`,
/// `manual`, `switchover` or `observed`, `old_primary`, `new_primary`, `by`, `timeline`,
/// `old_primary_lsn`, `new_primary_lsn`, `bytes_lost_estimate`, `mode`, `reason`,
/// `detected_at`, `decided_at`, `promoted_at`, `detection_to_promotion_ms`), valid only during
/// the call. Runs on the thread that made the change: the library thread `rsdb-failover` for
/// automatic failovers and for changes read from etcd, the calling thread for
/// `rsdb_failover_switchover` and `rsdb_failover_failover`. Do not call `rsdb_failover_stop` or
/// `rsdb_failover_close` from inside it.
pub type rsdb_failover_role_cb = Option<unsafe extern "C" fn(user_data: *mut c_void, change_json: *const c_char)>;

struct UserData(*mut c_void);
// SAFETY: the caller promises user_data may be used from the library threads until the
// manager is closed; the library only passes it back.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Opens a manager for `cfg`'s `ha_nodes`, `ha_data_dirs`, `etcd_endpoints`, `ha_cluster`,
/// `ha_mode` and `instance_id` (the member name). `options_json` (may be NULL) overrides:
/// `{"lease_ttl_ms", "safety_margin_ms", "loop_interval_ms", "failure_threshold",
/// "check_timeout_ms", "etcd_timeout_ms", "maximum_lag_on_failover", "mode", "fence",
/// "promote_timeout_ms", "switchover_timeout_ms", "auto_failover", "cluster", "member",
/// "etcd_endpoints"}`. Nothing runs until `rsdb_failover_start`. `*out` receives a handle to
/// release with `rsdb_failover_close`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_open(
    cfg: *const rsdb_config,
    options_json: *const c_char,
    out: *mut *mut rsdb_failover,
) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let opts = opt_str(options_json, "options_json")?;
        let slot = out_ptr(out, "out")?;
        let m = FailoverManager::open(&cfg.0, opts)?;
        hand_out(slot, rsdb_failover(m));
        Ok(())
    })
}

/// Starts the loop (library threads `rsdb-failover` and `rsdb-failover-lease`).
/// `RSDB_ERR_STATE` when it already runs.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_start(m: *const rsdb_failover) -> c_int {
    guard(|| arg_ref(m, "failover")?.0.start())
}

/// Stops the loop and releases the leader lease (another instance takes over at once).
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_stop(m: *const rsdb_failover) -> c_int {
    guard(|| {
        arg_ref(m, "failover")?.0.stop();
        Ok(())
    })
}

/// Moves `db`'s pool to the primary the manager knows, at once, and to every new primary
/// after it (connections to the old one are closed, never reused). The pool handle may be
/// closed independently.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_attach_db(m: *const rsdb_failover, db: *const rsdb_db) -> c_int {
    guard(|| {
        let m = arg_ref(m, "failover")?;
        let db = arg_ref(db, "db")?;
        m.0.attach_database(db.0.clone());
        Ok(())
    })
}

/// Publishes a `cluster.failover` event through `sync` on every role change this instance makes.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_attach_sync(m: *const rsdb_failover, sync: *const rsdb_sync) -> c_int {
    guard(|| {
        let m = arg_ref(m, "failover")?;
        let s = arg_ref(sync, "sync")?;
        m.0.attach_sync(s.0.clone());
        Ok(())
    })
}

fn change_out(out: *mut *mut c_char, c: &crate::ha::failover::RoleChange) -> crate::Result<()> {
    if out.is_null() {
        return Ok(());
    }
    set_out_string(out, Some(&serde_json::to_string(c)?))
}

/// A planned switchover to the node `target` with no data loss; blocks until the target is
/// primary and the old primary streams from it. `*out` (may be NULL) receives the change as
/// JSON (see `rsdb_failover_role_cb`), to release with `rsdb_string_free`.
/// `RSDB_ERR_NO_CANDIDATE` when the target is not a streaming standby, `RSDB_ERR_TIMEOUT` when
/// it did not catch up (the old primary then takes writes again), `RSDB_ERR_FENCED` when the
/// lease was lost.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_switchover(
    m: *const rsdb_failover,
    target: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let m = arg_ref(m, "failover")?;
        let target = arg_str(target, "target")?;
        let c = m.0.switchover(target)?;
        change_out(out, &c)
    })
}

/// A manual failover to `target` (NULL for the most advanced standby), refused with
/// `RSDB_ERR_NO_CANDIDATE` while the primary still answers as a primary or when no standby is
/// safe. `*out` (may be NULL) receives the change as for `rsdb_failover_switchover`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_failover(
    m: *const rsdb_failover,
    target: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let m = arg_ref(m, "failover")?;
        let target = opt_str(target, "target")?;
        let c = m.0.failover(target)?;
        change_out(out, &c)
    })
}

/// Rejoins the fenced former primary `node` as a standby of the current primary (pg_rewind;
/// needs its data directory in `ha_data_dirs`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_rejoin(m: *const rsdb_failover, node: *const c_char) -> c_int {
    guard(|| {
        let m = arg_ref(m, "failover")?;
        let node = arg_str(node, "node")?;
        m.0.rejoin(node)
    })
}

/// Runs one loop now on the calling thread (useful without `rsdb_failover_start`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_tick(m: *const rsdb_failover) -> c_int {
    guard(|| {
        arg_ref(m, "failover")?.0.tick();
        Ok(())
    })
}

/// The manager's view as JSON (`cluster`, `member`, `leader`, `is_leader`,
/// `lease_remaining_ms`, `primary`, `primary_lsn`, `failed_checks`, `nodes`, `fenced`,
/// `failovers`, `last_change`, `last_error`, `alerts`, …); release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_status_json(m: *const rsdb_failover, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let m = arg_ref(m, "failover")?;
        out_ptr(out, "out")?;
        set_out_string(out, Some(&m.0.status().to_string()))
    })
}

/// Calls `callback` on every change of primary (see `rsdb_failover_role_cb` for the thread and
/// the document). `user_data` may be NULL; it must stay valid until `rsdb_failover_close`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_on_role_change(
    m: *const rsdb_failover,
    callback: rsdb_failover_role_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let m = arg_ref(m, "failover")?;
        let cb = callback.ok_or(Error::Null("callback"))?;
        let ud = UserData(user_data);
        m.0.on_role_change(move |c| {
            let ud = &ud;
            let text = CString::new(serde_json::to_string(c).unwrap_or_default()).unwrap_or_default();
            // SAFETY: the caller registered `cb`; the string lives for the call.
            unsafe { cb(ud.0, text.as_ptr()) };
        });
        Ok(())
    })
}

/// Stops the manager (as `rsdb_failover_stop`) and releases the handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_failover_close(m: *mut rsdb_failover) {
    release_with(m, |m| m.0.stop())
}
