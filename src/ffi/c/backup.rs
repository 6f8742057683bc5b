//! C functions for backups (`rsdb_backup_*`).

use super::config::rsdb_config;
use super::db::rsdb_db;
use super::{arg_ref, arg_str, guard, hand_out, out_ptr, release, set_out_string};
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
        hand_out(slot, rsdb_backup(BackupManager::new(db.0.clone(), &cfg.0)?));
        Ok(())
    })
}

/// Releases a backup handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_free(h: *mut rsdb_backup) {
    release(h)
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

/// Verifies a backup, restores it into the database at `target_url` (created when missing; an
/// existing one should be empty), and checks
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
/// `differential_days` per type (0 = that type's period in the core's default policy),
/// keeping the newest `keep_last` of each type whatever their age (the newest full backup is
/// always kept). `*report_json` (may be NULL) receives `{"deleted": [...], "kept": n, "bytes_freed": n}`.
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

/// Runs full logical backups on a 5-field cron schedule (UTC) in the background, as
/// `rsdb_backup_schedule_start_kind` with kind `"logical"`. Failures and runs missed while
/// nothing was running are reported to `callback`. `*out` receives the schedule, to stop and
/// release with `rsdb_backup_schedule_stop`; `user_data` is the caller's and must stay valid
/// until then.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_schedule_start(
    backup: *const rsdb_backup,
    cron: *const c_char,
    callback: rsdb_schedule_cb,
    user_data: *mut std::ffi::c_void,
    out: *mut *mut rsdb_backup_schedule,
) -> c_int {
    rsdb_backup_schedule_start_kind(backup, cron, c"logical".as_ptr(), callback, user_data, out)
}

/// Passes a value to a C callback as JSON text, valid during the call.
fn json_callback<T: serde::Serialize>(
    cb: unsafe extern "C" fn(*mut std::ffi::c_void, *const c_char),
    user_data: *mut std::ffi::c_void,
) -> impl Fn(&T) + Send + Sync {
    let data = CallbackData(user_data);
    move |v: &T| {
        let data = &data;
        let text = std::ffi::CString::new(serde_json::to_string(v).unwrap_or_default()).unwrap_or_default();
        // SAFETY: the caller registered a function with this signature.
        unsafe { cb(data.0, text.as_ptr()) };
    }
}

/// Stops a schedule and releases it. When this returns (outside the callback) the callback is
/// not running and will not run again. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_schedule_stop(schedule: *mut rsdb_backup_schedule) {
    release(schedule)
}

/// Takes a backup of `kind`: `"logical"` (full pg_dump backup of the database, as
/// `rsdb_backup_create_full`), or the physical `"full"` (pg_basebackup of the cluster),
/// `"incremental"` (the WAL since the last physical backup) or `"differential"` (the WAL since
/// the last physical full backup). Incremental and differential backups need continuous
/// archiving into the same repository (`archive_command = 'rsdb --config FILE wal-push %p'`);
/// without a full physical backup to build on they fail with `RSDB_ERR_STATE`.
/// `*manifest_json` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_create(
    backup: *const rsdb_backup,
    kind: *const c_char,
    manifest_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let kind = arg_str(kind, "kind")?;
        let m = block_on(b.0.create(kind))?;
        if !manifest_json.is_null() {
            json_out(manifest_json, &m)?;
        }
        Ok(())
    })
}

/// Deletes one backup (its files, and its history row becomes `deleted`).
/// `RSDB_ERR_CONFLICT` while another backup builds on it; `RSDB_ERR_NOT_FOUND` for an unknown
/// one. `*freed_bytes` (may be NULL) receives the bytes removed.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_delete(
    backup: *const rsdb_backup,
    backup_id: *const c_char,
    freed_bytes: *mut u64,
) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let id = arg_str(backup_id, "backup_id")?;
        let freed = block_on(b.0.delete(id))?;
        if !freed_bytes.is_null() {
            *freed_bytes = freed;
        }
        Ok(())
    })
}

/// Like `rsdb_backup_schedule_start`, for backups of `kind` (`"logical"`, `"full"`,
/// `"incremental"` or `"differential"`, as in `rsdb_backup_create`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_schedule_start_kind(
    backup: *const rsdb_backup,
    cron: *const c_char,
    kind: *const c_char,
    callback: rsdb_schedule_cb,
    user_data: *mut std::ffi::c_void,
    out: *mut *mut rsdb_backup_schedule,
) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let cron = arg_str(cron, "cron")?;
        let what = crate::backup::BackupKind::parse(arg_str(kind, "kind")?)?;
        let cb = callback.ok_or(crate::Error::Null("callback"))?;
        let slot = out_ptr(out, "out")?;
        let sched = crate::backup::BackupScheduler::start_with(
            b.0.clone(),
            cron,
            what,
            std::sync::Arc::new(json_callback(cb, user_data)),
        )?;
        hand_out(slot, rsdb_backup_schedule { _running: sched });
        Ok(())
    })
}

/// Receives progress as JSON (`{"backup_id","phase","bytes_done","bytes_total","message"}`) on
/// the thread doing the work; `progress_json` is valid only during the call. It must return
/// quickly.
pub type rsdb_progress_cb =
    Option<unsafe extern "C" fn(user_data: *mut std::ffi::c_void, progress_json: *const c_char)>;

fn progress_fn(callback: rsdb_progress_cb, user_data: *mut std::ffi::c_void) -> Option<crate::backup::ProgressFn> {
    Some(std::sync::Arc::new(json_callback::<crate::backup::Progress>(callback?, user_data)))
}

/// Reports progress of this handle's backups, verifies and restores to `callback` (NULL stops
/// reporting). Set it before sharing the handle between threads.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_set_progress(
    backup: *mut rsdb_backup,
    callback: rsdb_progress_cb,
    user_data: *mut std::ffi::c_void,
) -> c_int {
    guard(|| {
        let b = super::arg_mut(backup, "backup")?;
        b.0.set_progress(progress_fn(callback, user_data));
        Ok(())
    })
}

/// Restores backups: logical ones into a database, physical ones into a new data directory up
/// to a point in time. Thread-safe.
pub struct rsdb_recovery(crate::backup::RecoveryManager);

/// Creates a recovery handle. With `db` NULL it works from the repository and keys alone
/// (disaster recovery: the database is gone); then test restores of logical backups are
/// refused. Release with `rsdb_recovery_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_recovery_new(
    cfg: *const rsdb_config,
    db: *const rsdb_db,
    out: *mut *mut rsdb_recovery,
) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let slot = out_ptr(out, "out")?;
        let rm = if db.is_null() {
            crate::backup::RecoveryManager::from_config(&cfg.0)?
        } else {
            crate::backup::RecoveryManager::new(BackupManager::new((*db).0.clone(), &cfg.0)?)
        };
        hand_out(slot, rsdb_recovery(rm));
        Ok(())
    })
}

/// Releases a recovery handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_recovery_free(h: *mut rsdb_recovery) {
    release(h)
}

/// Reports restore progress to `callback` (NULL stops reporting); see `rsdb_progress_cb`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_recovery_set_progress(
    recovery: *mut rsdb_recovery,
    callback: rsdb_progress_cb,
    user_data: *mut std::ffi::c_void,
) -> c_int {
    guard(|| {
        let r = super::arg_mut(recovery, "recovery")?;
        r.0.set_progress(progress_fn(callback, user_data));
        Ok(())
    })
}

/// Restores a logical backup into the database at `target_url` (created when missing), as
/// `rsdb_backup_restore`; `report_json` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_recovery_restore_database(
    recovery: *const rsdb_recovery,
    backup_id: *const c_char,
    target_url: *const c_char,
    report_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(recovery, "recovery")?;
        let id = arg_str(backup_id, "backup_id")?;
        let url = arg_str(target_url, "target_url")?;
        let rep = block_on(r.0.restore_database(id, url))?;
        if !report_json.is_null() {
            json_out(report_json, &rep)?;
        }
        Ok(())
    })
}

/// Restores a physical backup (with the backups it builds on) into a new data directory,
/// replays WAL to the target, starts the server on 127.0.0.1, waits until recovery has
/// finished, and counts every table's rows. `options_json`:
/// `{"data_dir": "/new/dir", "backup_id": "...", "port": 0, "target_time": "RFC 3339",
/// "latest": false, "keep_running": false, "timeout_s": 3600}` (only `data_dir` is required;
/// without `backup_id` the newest fitting backup is used; without a target, the end of the
/// backup). `*report_json` (may be NULL) receives `{"backup_id","chain","data_dir","port",
/// "target","recovery_log","databases":{db:{table:rows}},"running","seconds"}`.
/// `RSDB_ERR_INTEGRITY` when a backup file fails authentication (nothing is left behind).
#[no_mangle]
pub unsafe extern "C" fn rsdb_recovery_restore_cluster(
    recovery: *const rsdb_recovery,
    options_json: *const c_char,
    report_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(recovery, "recovery")?;
        let opts = crate::backup::ClusterRestoreOptions::from_json(arg_str(options_json, "options_json")?)?;
        let rep = block_on(r.0.restore_cluster(&opts))?;
        if !report_json.is_null() {
            json_out(report_json, &rep)?;
        }
        Ok(())
    })
}

/// Restores a backup into scratch space (a new database, or a temporary data directory on a
/// free port), checks it and drops the scratch space. `*report_json` (may be NULL) receives
/// `{"backup_id","kind","tables_checked","rows","seconds"}`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_recovery_test_restore(
    recovery: *const rsdb_recovery,
    backup_id: *const c_char,
    report_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(recovery, "recovery")?;
        let id = arg_str(backup_id, "backup_id")?;
        let rep = block_on(r.0.test_restore(id))?;
        if !report_json.is_null() {
            json_out(report_json, &rep)?;
        }
        Ok(())
    })
}

/// Every backup in the repository, read from the signed manifests (no database needed),
/// oldest first, as a JSON array of manifests.
#[no_mangle]
pub unsafe extern "C" fn rsdb_recovery_list_repository(
    recovery: *const rsdb_recovery,
    backups_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(recovery, "recovery")?;
        out_ptr(backups_json, "backups_json")?;
        json_out(backups_json, &r.0.list_repository()?)
    })
}

/// Stops the server a restore left running in `data_dir` (fast shutdown).
#[no_mangle]
pub unsafe extern "C" fn rsdb_recovery_stop_cluster(recovery: *const rsdb_recovery, data_dir: *const c_char) -> c_int {
    guard(|| {
        let r = arg_ref(recovery, "recovery")?;
        let dir = arg_str(data_dir, "data_dir")?;
        r.0.stop_cluster(std::path::Path::new(dir))
    })
}

/// Archives one WAL file into `cfg`'s repository (PostgreSQL's archive_command; the CLI's
/// `rsdb wal-push`), with the configuration's `wal_push_parallel` and `wal_queue_max` as
/// `rsdb_wal_push_report` applies them. Idempotent: `*already_archived` (may be NULL) is 1 when
/// an identical copy was there already (or an earlier push stored it ahead); a different file
/// of that name gives `RSDB_ERR_CONFLICT`. A segment dropped by the queue limit returns
/// `RSDB_OK` with `*already_archived` 0: use `rsdb_wal_push_report` to tell.
#[no_mangle]
pub unsafe extern "C" fn rsdb_wal_push(
    cfg: *const rsdb_config,
    path: *const c_char,
    already_archived: *mut c_int,
) -> c_int {
    guard(|| {
        let report = push_report(cfg, path)?;
        if !already_archived.is_null() {
            *already_archived = matches!(
                report.outcome,
                crate::backup::PushOutcome::AlreadyArchived | crate::backup::PushOutcome::PushedAhead
            ) as c_int;
        }
        Ok(())
    })
}

unsafe fn push_report(cfg: *const rsdb_config, path: *const c_char) -> crate::error::Result<crate::backup::PushReport> {
    let cfg = arg_ref(cfg, "cfg")?;
    let path = arg_str(path, "path")?;
    let settings = crate::backup::ArchiveSettings::from_config(&cfg.0);
    crate::backup::WalArchive::from_config(&cfg.0)?.archive(std::path::Path::new(path), &settings)
}

/// As `rsdb_wal_push`, and says what happened in `*report_json` (may be NULL; free with
/// `rsdb_string_free`): `{"file", "outcome": "stored"|"already_archived"|"pushed_ahead"|"dropped",
/// "pushed_ahead": [names], "ahead_failed": [names], "queue_bytes", "gap": null or the WAL gap
/// opened or extended}`. `path` is PostgreSQL's `%p` (`pg_wal/NAME`, from the data directory):
/// the ready files beside it are what `wal_push_parallel` pushes ahead and what
/// `wal_queue_max` counts. Past the limit the segment is reported archived without being stored
/// ("dropped") and a gap recorded; with the limit set, a failing repository is retried for up to
/// 30 s while the queue is watched.
#[no_mangle]
pub unsafe extern "C" fn rsdb_wal_push_report(
    cfg: *const rsdb_config,
    path: *const c_char,
    report_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let report = push_report(cfg, path)?;
        if !report_json.is_null() {
            json_out(report_json, &report)?;
        }
        Ok(())
    })
}

/// Every known WAL gap (WAL that `wal-push` dropped past `wal_queue_max`) as a JSON array in
/// `*gaps_json` (free with `rsdb_string_free`), oldest first: each `{"timeline",
/// "first_segment", "last_segment", "segments", "bytes", "complete_before" (recovery can reach
/// moments before it, or null), "first_dropped_at", "last_dropped_at", "queue_bytes",
/// "limit_bytes", "closed_by" (the full backup after which recovery works again, or null),
/// "affected_backups" (the backups whose recovery stops at it)}`. Read from the repository and
/// the database's `wal_gaps` table.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_wal_gaps(backup: *const rsdb_backup, gaps_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        out_ptr(gaps_json, "gaps_json")?;
        let gaps = block_on(b.0.wal_gaps())?;
        json_out(gaps_json, &gaps)
    })
}

/// A running WAL gap watch. Stop it with `rsdb_wal_gap_watch_stop`.
pub struct rsdb_wal_gap_watch {
    // Kept only to be dropped: dropping it stops the watch.
    _running: crate::backup::WalGapWatch,
}

/// Receives each WAL gap that is new or has grown, as JSON (the objects of
/// `rsdb_backup_wal_gaps`), on a library thread; `gap_json` is valid only during the call.
pub type rsdb_wal_gap_cb = Option<unsafe extern "C" fn(user_data: *mut std::ffi::c_void, gap_json: *const c_char)>;

/// Looks for WAL gaps every `interval_ms` (at least 100) and calls `callback` for each one that
/// is new or has grown; the first look reports every gap no full backup has closed yet. The
/// database's rows alert while the repository is still unreachable. `*out` receives the watch,
/// to stop and release with `rsdb_wal_gap_watch_stop`; `user_data` must stay valid until then.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_watch_wal_gaps(
    backup: *const rsdb_backup,
    interval_ms: u64,
    callback: rsdb_wal_gap_cb,
    user_data: *mut std::ffi::c_void,
    out: *mut *mut rsdb_wal_gap_watch,
) -> c_int {
    guard(|| {
        let b = arg_ref(backup, "backup")?;
        let slot = out_ptr(out, "out")?;
        let cb = callback.ok_or(crate::error::Error::Null("callback"))?;
        let notify = json_callback::<crate::backup::WalGap>(cb, user_data);
        let watch = b.0.watch_wal_gaps(std::time::Duration::from_millis(interval_ms), std::sync::Arc::new(notify));
        hand_out(slot, rsdb_wal_gap_watch { _running: watch });
        Ok(())
    })
}

/// Stops a gap watch and releases it. When this returns (outside the callback) the callback is
/// not running and will not run again. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_wal_gap_watch_stop(watch: *mut rsdb_wal_gap_watch) {
    release(watch)
}

/// Restores archived WAL file `name` to `path` (PostgreSQL's restore_command; the CLI's
/// `rsdb wal-fetch`). `RSDB_ERR_NOT_FOUND` when it was never archived.
#[no_mangle]
pub unsafe extern "C" fn rsdb_wal_fetch(cfg: *const rsdb_config, name: *const c_char, path: *const c_char) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let name = arg_str(name, "name")?;
        let path = arg_str(path, "path")?;
        crate::backup::WalArchive::from_config(&cfg.0)?.fetch(name, std::path::Path::new(path))?;
        Ok(())
    })
}

/// Prepares the repository: creates `backup_dir`, or the S3 bucket of `backup_s3_url` when it
/// does not exist. Idempotent.
#[no_mangle]
pub unsafe extern "C" fn rsdb_backup_init_repository(backup: *const rsdb_backup) -> c_int {
    guard(|| arg_ref(backup, "backup")?.0.init_repository())
}
