//! Backups, restores, schedules and the WAL archive behind `rootstream::database::BackupManager`,
//! `RecoveryManager` and `BackupScheduler`.

use super::{to_json, Observer, R};
use crate::backup::{BackupManager, RecoveryManager};
use crate::error::Error;
use crate::runtime::block_on;
use std::path::Path;
use std::sync::Arc;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("message_observer.h");
        include!("rootstream-db/src/ffi/cxx/config.rs.h");
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        type MessageObserver = crate::ffi::cxx::cache::MessageObserver;
        type ConfigBox = crate::ffi::cxx::config::ConfigBox;
        type DbBox = crate::ffi::cxx::db::DbBox;
    }

    extern "Rust" {
        type BackupBox;
        fn backup_new(cfg: &ConfigBox, db: &DbBox) -> Result<Box<BackupBox>>;
        fn init_repository(self: &BackupBox) -> Result<()>;
        fn create_full(self: &BackupBox) -> Result<String>;
        fn create(self: &BackupBox, kind: &str) -> Result<String>;
        fn verify(self: &BackupBox, backup_id: &str) -> Result<String>;
        fn restore(self: &BackupBox, backup_id: &str, target_url: &str) -> Result<String>;
        fn list(self: &BackupBox) -> Result<String>;
        fn delete_backup(self: &BackupBox, backup_id: &str) -> Result<u64>;
        fn cleanup(
            self: &BackupBox,
            full_days: u32,
            incremental_days: u32,
            differential_days: u32,
            keep_last: u32,
        ) -> Result<String>;
        fn schedule(self: &BackupBox, cron: &str, observer: UniquePtr<MessageObserver>) -> Result<Box<ScheduleBox>>;
        fn schedule_kind(
            self: &BackupBox,
            cron: &str,
            kind: &str,
            observer: UniquePtr<MessageObserver>,
        ) -> Result<Box<ScheduleBox>>;
        fn set_progress(self: &mut BackupBox, observer: UniquePtr<MessageObserver>);

        type ScheduleBox;

        type RecoveryBox;
        fn recovery_from_backups(backups: &BackupBox) -> Box<RecoveryBox>;
        fn recovery_from_config(cfg: &ConfigBox) -> Result<Box<RecoveryBox>>;
        fn set_progress(self: &mut RecoveryBox, observer: UniquePtr<MessageObserver>);
        fn restore_database(self: &RecoveryBox, backup_id: &str, target_url: &str) -> Result<String>;
        fn restore_cluster(self: &RecoveryBox, options_json: &str) -> Result<String>;
        fn test_restore(self: &RecoveryBox, backup_id: &str) -> Result<String>;
        fn list_repository(self: &RecoveryBox) -> Result<String>;
        fn stop_cluster(self: &RecoveryBox, data_dir: &str) -> Result<()>;

        fn wal_push(cfg: &ConfigBox, path: &str) -> Result<bool>;
        fn wal_fetch(cfg: &ConfigBox, name: &str, path: &str) -> Result<u64>;
    }
}

use super::cache::MessageObserver;
use super::config::ConfigBox;
use super::db::DbBox;

/// Backups behind `rootstream::database::BackupManager`.
pub struct BackupBox(BackupManager);

fn backup_new(cfg: &ConfigBox, db: &DbBox) -> R<Box<BackupBox>> {
    Ok(Box::new(BackupBox(BackupManager::new(db.0.clone(), &cfg.0)?)))
}

impl BackupBox {
    fn init_repository(&self) -> R<()> {
        Ok(self.0.init_repository()?)
    }
    fn create_full(&self) -> R<String> {
        to_json(&block_on(self.0.create_full())?)
    }
    fn create(&self, kind: &str) -> R<String> {
        to_json(&block_on(self.0.create(kind))?)
    }
    fn verify(&self, backup_id: &str) -> R<String> {
        to_json(&self.0.verify(backup_id)?)
    }
    fn restore(&self, backup_id: &str, target_url: &str) -> R<String> {
        to_json(&block_on(self.0.restore(backup_id, target_url))?)
    }
    fn list(&self) -> R<String> {
        to_json(&block_on(self.0.list())?)
    }
    fn delete_backup(&self, backup_id: &str) -> R<u64> {
        Ok(block_on(self.0.delete(backup_id))?)
    }
    fn cleanup(&self, full_days: u32, incremental_days: u32, differential_days: u32, keep_last: u32) -> R<String> {
        let policy = crate::backup::RetentionPolicy::from_days(
            full_days,
            incremental_days,
            differential_days,
            keep_last as usize,
        );
        to_json(&block_on(self.0.cleanup(&policy))?)
    }
    fn schedule(&self, cron: &str, observer: cxx::UniquePtr<MessageObserver>) -> R<Box<ScheduleBox>> {
        self.schedule_kind(cron, "logical", observer)
    }
    fn schedule_kind(&self, cron: &str, kind: &str, observer: cxx::UniquePtr<MessageObserver>) -> R<Box<ScheduleBox>> {
        let what = crate::backup::BackupKind::parse(kind)?;
        let cb = schedule_observer(observer)?;
        let sched = crate::backup::BackupScheduler::start_with(self.0.clone(), cron, what, cb)?;
        Ok(Box::new(ScheduleBox { _running: sched }))
    }
    fn set_progress(&mut self, observer: cxx::UniquePtr<MessageObserver>) {
        self.0.set_progress(progress_observer(observer));
    }
}

/// Schedule events reach the observer on the scheduler's thread as JSON on "backup.schedule".
fn schedule_observer(observer: cxx::UniquePtr<MessageObserver>) -> R<crate::backup::schedule::ScheduleCallback> {
    if observer.is_null() {
        return Err(Error::Null("observer").into());
    }
    let obs = Observer(observer);
    Ok(Arc::new(move |e| obs.notify("backup.schedule", serde_json::to_string(e).unwrap_or_default().as_bytes())))
}

/// Progress reaches the observer on the working thread as JSON on "backup.progress"; a null
/// observer turns reporting off.
fn progress_observer(observer: cxx::UniquePtr<MessageObserver>) -> Option<crate::backup::ProgressFn> {
    if observer.is_null() {
        return None;
    }
    let obs = Observer(observer);
    Some(Arc::new(move |p: &crate::backup::Progress| {
        obs.notify("backup.progress", serde_json::to_string(p).unwrap_or_default().as_bytes())
    }))
}

/// A running schedule behind `rootstream::database::BackupScheduler`; stops when dropped.
pub struct ScheduleBox {
    _running: crate::backup::BackupScheduler,
}

/// Restores behind `rootstream::database::RecoveryManager`.
pub struct RecoveryBox(RecoveryManager);

fn recovery_from_backups(backups: &BackupBox) -> Box<RecoveryBox> {
    Box::new(RecoveryBox(RecoveryManager::new(backups.0.clone())))
}

fn recovery_from_config(cfg: &ConfigBox) -> R<Box<RecoveryBox>> {
    Ok(Box::new(RecoveryBox(RecoveryManager::from_config(&cfg.0)?)))
}

impl RecoveryBox {
    fn set_progress(&mut self, observer: cxx::UniquePtr<MessageObserver>) {
        self.0.set_progress(progress_observer(observer));
    }
    fn restore_database(&self, backup_id: &str, target_url: &str) -> R<String> {
        to_json(&block_on(self.0.restore_database(backup_id, target_url))?)
    }
    fn restore_cluster(&self, options_json: &str) -> R<String> {
        let opts = crate::backup::ClusterRestoreOptions::from_json(options_json)?;
        to_json(&block_on(self.0.restore_cluster(&opts))?)
    }
    fn test_restore(&self, backup_id: &str) -> R<String> {
        to_json(&block_on(self.0.test_restore(backup_id))?)
    }
    fn list_repository(&self) -> R<String> {
        to_json(&self.0.list_repository()?)
    }
    fn stop_cluster(&self, data_dir: &str) -> R<()> {
        Ok(self.0.stop_cluster(Path::new(data_dir))?)
    }
}

fn wal_push(cfg: &ConfigBox, path: &str) -> R<bool> {
    let outcome = crate::backup::WalArchive::from_config(&cfg.0)?.push(Path::new(path))?;
    Ok(outcome == crate::backup::PushOutcome::Stored)
}

fn wal_fetch(cfg: &ConfigBox, name: &str, path: &str) -> R<u64> {
    Ok(crate::backup::WalArchive::from_config(&cfg.0)?.fetch(name, Path::new(path))?)
}
