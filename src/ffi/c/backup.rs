//! C functions for backups (`rsdb_backup_*`).

use super::config::rsdb_config;
use super::db::rsdb_db;
use super::{arg_ref, arg_str, guard, guard_void, out_ptr, set_out_string};
use crate::backup::BackupManager;
use crate::runtime::block_on;
use std::ffi::{c_char, c_int};

/// Backups of `cfg`'s database into its `backup_dir`. Thread-safe.
pub struct rsdb_backup(BackupManager);

fn json_out<T: serde::Serialize>(out: *mut *mut c_char, v: &T) -> crate::Result<()> {
    set_out_string(out, Some(&serde_json::to_string(v)?))
}

/// Creates a backup handle. Needs `database_url`, `backup_dir` and `master_key` in `cfg`
/// (`RSDB_ERR_CONFIG` otherwise). Release with `rsdb_backup_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_new(
    cfg: *const rsdb_config,
    db: *const rsdb_db,
    out: *mut *mut rsdb_backup,
) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let db = arg_ref(db, "db")?;
        let slot = out_ptr(out, "out")?;
        *slot = Box::into_raw(Box::new(rsdb_backup(BackupManager::new(db.0.clone(), &cfg.0)?)));
        Ok(())
    })
}

/// Releases a backup handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_free(h: *mut rsdb_backup) {
    guard_void(|| {
        if !h.is_null() {
            drop(Box::from_raw(h));
        }
    })
}

/// Takes a full logical backup; `*manifest_json` (may be NULL) receives its manifest
/// (`backup_id`, sizes, checksum, row counts, ...). On failure the history row is `failed`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_create_full(backup: *const rsdb_backup, manifest_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let m = block_on(b.0.create_full())?;
        if !manifest_json.is_null() {
            json_out(manifest_json, &m)?;
        }
        Ok(())
    })
}

/// Reads a backup back completely. `RSDB_ERR_INTEGRITY` names the file and chunk at fault;
/// `RSDB_ERR_NOT_FOUND` for an unknown backup. `*manifest_json` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_verify(
    backup: *const rsdb_backup,
    backup_id: *const c_char,
    manifest_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let id = arg_str(backup_id, "backup_id")?;
        let m = b.0.verify(id)?;
        if !manifest_json.is_null() {
            json_out(manifest_json, &m)?;
        }
        Ok(())
    })
}

/// Verifies a backup, restores it into the existing (empty) database at `target_url`, and checks
/// every table's row count. `*report_json` (may be NULL) receives
/// `{"backup_id","target","tables_checked","rows_restored"}`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_restore(
    backup: *const rsdb_backup,
    backup_id: *const c_char,
    target_url: *const c_char,
    report_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let id = arg_str(backup_id, "backup_id")?;
        let url = arg_str(target_url, "target_url")?;
        let r = block_on(b.0.restore(id, url))?;
        if !report_json.is_null() {
            json_out(report_json, &r)?;
        }
        Ok(())
    })
}

/// The backup history, newest first, as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_list(backup: *const rsdb_backup, backups_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        out_ptr(backups_json, "backups_json")?;
        json_out(backups_json, &block_on(b.0.list())?)
    })
}

/// Deletes backups past their retention: `full_days`, `incremental_days` and
/// `differential_days` per type (0 = the defaults 30/7/3), keeping the newest `keep_last` of each
/// type whatever their age (the newest full backup is always kept). `*report_json` (may be
/// NULL) receives `{"deleted": [...], "kept": n, "bytes_freed": n}`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_cleanup(
    backup: *const rsdb_backup,
    full_days: u32,
    incremental_days: u32,
    differential_days: u32,
    keep_last: u32,
    report_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let policy = crate::backup::RetentionPolicy::from_days(
            full_days,
            incremental_days,
            differential_days,
            keep_last as usize,
        );
        let r = block_on(b.0.cleanup(&policy))?;
        if !report_json.is_null() {
            json_out(report_json, &r)?;
        }
        Ok(())
    })
}

/// A running backup schedule. Stop it with `rsdb_backup_schedule_stop`.
pub struct rsdb_backup_schedule {
    // Kept only to be dropped: dropping it stops the schedule.
    _running: crate::backup::BackupScheduler,
}

/// Receives schedule events as JSON (`{"event":"completed"|"failed"|"missed", ...}`) on a
/// library thread; `event_json` is valid only during the call.
pub type rsdb_schedule_cb = Option<unsafe extern "C" fn(user_data: *mut std::ffi::c_void, event_json: *const c_char)>;

struct CallbackData(*mut std::ffi::c_void);
// SAFETY: the caller of rsdb_backup_schedule_start promises user_data may be used from a
// library thread; the library only passes it back.
unsafe impl Send for CallbackData {}
unsafe impl Sync for CallbackData {}

/// Runs full backups on a 5-field cron schedule (UTC) in the background. Failures and runs
/// missed while nothing was running are reported to `callback`. `*out` receives the schedule.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_schedule_start(
    backup: *const rsdb_backup,
    cron: *const c_char,
    callback: rsdb_schedule_cb,
    user_data: *mut std::ffi::c_void,
    out: *mut *mut rsdb_backup_schedule,
) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let cron = arg_str(cron, "cron")?;
        let cb = callback.ok_or(crate::Error::Null("callback"))?;
        let slot = out_ptr(out, "out")?;
        let data = CallbackData(user_data);
        let sched = crate::backup::BackupScheduler::start(
            b.0.clone(),
            cron,
            std::sync::Arc::new(move |e| {
                let data = &data;
                let text = std::ffi::CString::new(serde_json::to_string(e).unwrap_or_default()).unwrap_or_default();
                // SAFETY: the caller registered a function with this signature.
                unsafe { cb(data.0, text.as_ptr()) };
            }),
        )?;
        *slot = Box::into_raw(Box::new(rsdb_backup_schedule { _running: sched }));
        Ok(())
    })
}

/// Stops a schedule and releases it. When this returns (outside the callback) the callback is
/// not running and will not run again. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_schedule_stop(schedule: *mut rsdb_backup_schedule) {
    guard_void(|| {
        if !schedule.is_null() {
            drop(Box::from_raw(schedule));
        }
    })
}
