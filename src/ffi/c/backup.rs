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
