//! Backups, restores, schedules and the WAL archive behind `rootstream::database::BackupManager`,
//! `RecoveryManager` and `BackupScheduler`.

use super::{opt, Observer, R};
use crate::backup::{BackupManager, RecoveryManager};
use crate::error::Error;
use crate::runtime::block_on;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    /// One stored file of a backup.
    struct BackupFile {
        name: String,
        chunks: u64,
        plain_bytes: u64,
        stored_bytes: u64,
        sha256: String,
    }

    /// Rows counted in one table.
    struct TableRows {
        table: String,
        rows: i64,
    }

    /// The WAL range of a physical backup.
    struct PhysicalRange {
        parent_backup_id: String,
        has_parent_backup_id: bool,
        base_backup_id: String,
        timeline: u32,
        start_lsn: String,
        stop_lsn: String,
        start_wal: String,
        stop_wal: String,
        wal_segment_size: u64,
        system_identifier: String,
        wal_segments: Vec<String>,
    }

    /// A backup's signed manifest.
    struct Manifest {
        format: u32,
        backup_id: String,
        backup_type: String,
        method: String,
        database: String,
        server_version: String,
        started_at: String,
        finished_at: String,
        compression: String,
        encryption: String,
        key_id: String,
        wrapped_key: String,
        files: Vec<BackupFile>,
        row_counts: Vec<TableRows>,
        has_physical: bool,
        physical: PhysicalRange,
    }

    /// A row of the backup history.
    struct BackupInfo {
        backup_id: String,
        backup_type: String,
        method: String,
        has_method: bool,
        kind: String,
        has_kind: bool,
        status: String,
        path: String,
        database: String,
        has_database: bool,
        size_bytes: i64,
        has_size_bytes: bool,
        compressed_size_bytes: i64,
        has_compressed_size_bytes: bool,
        started_at: String,
        finished_at: String,
        error_message: String,
        has_error_message: bool,
    }

    /// What a retention cleanup removed.
    struct CleanupReport {
        deleted: Vec<String>,
        kept: u64,
        wal_deleted: u64,
        bytes_freed: u64,
    }

    /// The outcome of a logical restore.
    struct RestoreReport {
        backup_id: String,
        target: String,
        tables_checked: u64,
        rows_restored: i64,
    }

    /// Rows per table of one database of a restored cluster.
    struct DatabaseRows {
        database: String,
        tables: Vec<TableRows>,
    }

    /// The outcome of a physical restore.
    struct ClusterReport {
        backup_id: String,
        chain: Vec<String>,
        data_dir: String,
        port: u16,
        target: String,
        recovery_log: Vec<String>,
        databases: Vec<DatabaseRows>,
        running: bool,
        seconds: f64,
        /// A delta restore's counts (all 0 with `delta` false).
        delta: bool,
        delta_files_unchanged: u64,
        delta_files_changed: u64,
        delta_files_created: u64,
        delta_paths_removed: u64,
        delta_bytes_written: u64,
        delta_bytes_compared: u64,
    }

    /// The outcome of a test restore.
    struct TestRestoreReport {
        backup_id: String,
        kind: String,
        tables_checked: u64,
        rows: i64,
        seconds: f64,
    }

    /// What a physical restore restores and where; checked by the core as the C API's JSON is.
    struct ClusterRestoreOptions {
        data_dir: String,
        backup_id: String,
        has_backup_id: bool,
        port: u16,
        target_time: String,
        has_target_time: bool,
        latest: bool,
        keep_running: bool,
        timeout_s: u64,
        has_timeout_s: bool,
        delta: bool,
    }

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
        fn create_full(self: &BackupBox) -> Result<Manifest>;
        fn create(self: &BackupBox, kind: &str) -> Result<Manifest>;
        fn verify(self: &BackupBox, backup_id: &str) -> Result<Manifest>;
        fn list(self: &BackupBox) -> Result<Vec<BackupInfo>>;
        fn delete_backup(self: &BackupBox, backup_id: &str) -> Result<u64>;
        fn cleanup(
            self: &BackupBox,
            full_days: u32,
            incremental_days: u32,
            differential_days: u32,
            keep_last: u32,
        ) -> Result<CleanupReport>;
        fn schedule(self: &BackupBox, cron: &str, observer: UniquePtr<MessageObserver>) -> Result<Box<ScheduleBox>>;
        fn schedule_kind(
            self: &BackupBox,
            cron: &str,
            kind: &str,
            observer: UniquePtr<MessageObserver>,
        ) -> Result<Box<ScheduleBox>>;
        fn set_progress(self: &mut BackupBox, observer: UniquePtr<MessageObserver>);
        fn wal_gaps_json(self: &BackupBox) -> Result<String>;
        fn watch_wal_gaps(
            self: &BackupBox,
            interval_ms: u64,
            observer: UniquePtr<MessageObserver>,
        ) -> Result<Box<GapWatchBox>>;

        type ScheduleBox;
        type GapWatchBox;

        type RecoveryBox;
        fn recovery_from_backups(backups: &BackupBox) -> Box<RecoveryBox>;
        fn recovery_from_config(cfg: &ConfigBox) -> Result<Box<RecoveryBox>>;
        fn set_progress(self: &mut RecoveryBox, observer: UniquePtr<MessageObserver>);
        fn restore_database(self: &RecoveryBox, backup_id: &str, target_url: &str) -> Result<RestoreReport>;
        fn restore_cluster(self: &RecoveryBox, options: &ClusterRestoreOptions) -> Result<ClusterReport>;
        fn test_restore(self: &RecoveryBox, backup_id: &str) -> Result<TestRestoreReport>;
        fn list_repository(self: &RecoveryBox) -> Result<Vec<Manifest>>;
        fn stop_cluster(self: &RecoveryBox, data_dir: &str) -> Result<()>;

        fn wal_push(cfg: &ConfigBox, path: &str) -> Result<bool>;
        fn wal_push_report_json(cfg: &ConfigBox, path: &str) -> Result<String>;
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
    fn create_full(&self) -> R<bridge::Manifest> {
        Ok(manifest(block_on(self.0.create_full())?))
    }
    fn create(&self, kind: &str) -> R<bridge::Manifest> {
        Ok(manifest(block_on(self.0.create(kind))?))
    }
    fn verify(&self, backup_id: &str) -> R<bridge::Manifest> {
        Ok(manifest(self.0.verify(backup_id)?))
    }
    fn list(&self) -> R<Vec<bridge::BackupInfo>> {
        Ok(block_on(self.0.list())?.into_iter().map(backup_info).collect())
    }
    fn delete_backup(&self, backup_id: &str) -> R<u64> {
        Ok(block_on(self.0.delete(backup_id))?)
    }
    fn cleanup(
        &self,
        full_days: u32,
        incremental_days: u32,
        differential_days: u32,
        keep_last: u32,
    ) -> R<bridge::CleanupReport> {
        let policy = crate::backup::RetentionPolicy::from_days(
            full_days,
            incremental_days,
            differential_days,
            keep_last as usize,
        );
        let r = block_on(self.0.cleanup(&policy))?;
        Ok(bridge::CleanupReport {
            deleted: r.deleted,
            kept: r.kept as u64,
            wal_deleted: r.wal_deleted as u64,
            bytes_freed: r.bytes_freed,
        })
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
    fn wal_gaps_json(&self) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.wal_gaps())?).map_err(Error::from)?)
    }
    /// Gaps reach the observer on the watch's thread as JSON on "backup.wal_gap".
    fn watch_wal_gaps(&self, interval_ms: u64, observer: cxx::UniquePtr<MessageObserver>) -> R<Box<GapWatchBox>> {
        if observer.is_null() {
            return Err(Error::Null("observer").into());
        }
        let obs = Observer(observer);
        let cb: crate::backup::WalGapCallback = Arc::new(move |g: &crate::backup::WalGap| {
            obs.notify("backup.wal_gap", serde_json::to_string(g).unwrap_or_default().as_bytes())
        });
        let watch = self.0.watch_wal_gaps(std::time::Duration::from_millis(interval_ms), cb);
        Ok(Box::new(GapWatchBox { _running: watch }))
    }
}

/// A running gap watch behind `rootstream::database::WalGapWatch`; stops when dropped.
pub struct GapWatchBox {
    _running: crate::backup::WalGapWatch,
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
    fn restore_database(&self, backup_id: &str, target_url: &str) -> R<bridge::RestoreReport> {
        let r = block_on(self.0.restore_database(backup_id, target_url))?;
        Ok(bridge::RestoreReport {
            backup_id: r.backup_id,
            target: r.target,
            tables_checked: r.tables_checked as u64,
            rows_restored: r.rows_restored,
        })
    }
    fn restore_cluster(&self, o: &bridge::ClusterRestoreOptions) -> R<bridge::ClusterReport> {
        let opts = crate::backup::ClusterRestoreOptions::from_parts(
            &o.data_dir,
            opt(&o.backup_id, o.has_backup_id),
            o.port as u64,
            opt(&o.target_time, o.has_target_time),
            o.latest,
            o.keep_running,
            o.has_timeout_s.then_some(o.timeout_s),
        )?;
        let opts = crate::backup::ClusterRestoreOptions { delta: o.delta, ..opts };
        Ok(cluster_report(block_on(self.0.restore_cluster(&opts))?))
    }
    fn test_restore(&self, backup_id: &str) -> R<bridge::TestRestoreReport> {
        let r = block_on(self.0.test_restore(backup_id))?;
        Ok(bridge::TestRestoreReport {
            backup_id: r.backup_id,
            kind: r.kind,
            tables_checked: r.tables_checked as u64,
            rows: r.rows,
            seconds: r.seconds,
        })
    }
    fn list_repository(&self) -> R<Vec<bridge::Manifest>> {
        Ok(self.0.list_repository()?.into_iter().map(manifest).collect())
    }
    fn stop_cluster(&self, data_dir: &str) -> R<()> {
        Ok(self.0.stop_cluster(Path::new(data_dir))?)
    }
}

fn push_report(cfg: &ConfigBox, path: &str) -> crate::error::Result<crate::backup::PushReport> {
    let settings = crate::backup::ArchiveSettings::from_config(&cfg.0);
    crate::backup::WalArchive::from_config(&cfg.0)?.archive(Path::new(path), &settings)
}

fn wal_push(cfg: &ConfigBox, path: &str) -> R<bool> {
    Ok(push_report(cfg, path)?.outcome == crate::backup::PushOutcome::Stored)
}

fn wal_push_report_json(cfg: &ConfigBox, path: &str) -> R<String> {
    Ok(serde_json::to_string(&push_report(cfg, path)?).map_err(Error::from)?)
}

fn wal_fetch(cfg: &ConfigBox, name: &str, path: &str) -> R<u64> {
    Ok(crate::backup::WalArchive::from_config(&cfg.0)?.fetch(name, Path::new(path))?)
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn table_rows(counts: BTreeMap<String, i64>) -> Vec<bridge::TableRows> {
    counts.into_iter().map(|(table, rows)| bridge::TableRows { table, rows }).collect()
}

fn manifest(m: crate::backup::Manifest) -> bridge::Manifest {
    let files = m
        .files
        .into_iter()
        .map(|f| bridge::BackupFile {
            name: f.name,
            chunks: f.chunks,
            plain_bytes: f.plain_bytes,
            stored_bytes: f.stored_bytes,
            sha256: f.sha256,
        })
        .collect();
    let has_physical = m.physical.is_some();
    let p = m.physical.unwrap_or_else(|| crate::backup::PhysicalInfo {
        parent_backup_id: None,
        base_backup_id: String::new(),
        timeline: 0,
        start_lsn: String::new(),
        stop_lsn: String::new(),
        start_wal: String::new(),
        stop_wal: String::new(),
        wal_segment_size: 0,
        system_identifier: String::new(),
        wal_segments: Vec::new(),
    });
    bridge::Manifest {
        format: m.format,
        backup_id: m.backup_id,
        backup_type: m.backup_type,
        method: m.method,
        database: m.database,
        server_version: m.server_version,
        started_at: rfc3339(&m.started_at),
        finished_at: rfc3339(&m.finished_at),
        compression: m.compression,
        encryption: m.encryption,
        key_id: m.key_id,
        wrapped_key: m.wrapped_key,
        files,
        row_counts: table_rows(m.row_counts),
        has_physical,
        physical: bridge::PhysicalRange {
            has_parent_backup_id: p.parent_backup_id.is_some(),
            parent_backup_id: p.parent_backup_id.unwrap_or_default(),
            base_backup_id: p.base_backup_id,
            timeline: p.timeline,
            start_lsn: p.start_lsn,
            stop_lsn: p.stop_lsn,
            start_wal: p.start_wal,
            stop_wal: p.stop_wal,
            wal_segment_size: p.wal_segment_size,
            system_identifier: p.system_identifier,
            wal_segments: p.wal_segments,
        },
    }
}

fn backup_info(b: crate::backup::BackupInfo) -> bridge::BackupInfo {
    bridge::BackupInfo {
        backup_id: b.backup_id,
        backup_type: b.backup_type,
        has_method: b.method.is_some(),
        method: b.method.unwrap_or_default().to_owned(),
        has_kind: b.kind.is_some(),
        kind: b.kind.map(|k| k.as_str()).unwrap_or_default().to_owned(),
        status: b.status,
        path: b.path,
        has_database: b.database.is_some(),
        database: b.database.unwrap_or_default(),
        has_size_bytes: b.size_bytes.is_some(),
        size_bytes: b.size_bytes.unwrap_or_default(),
        has_compressed_size_bytes: b.compressed_size_bytes.is_some(),
        compressed_size_bytes: b.compressed_size_bytes.unwrap_or_default(),
        started_at: rfc3339(&b.started_at),
        finished_at: b.finished_at.as_ref().map(rfc3339).unwrap_or_default(),
        has_error_message: b.error_message.is_some(),
        error_message: b.error_message.unwrap_or_default(),
    }
}

fn cluster_report(r: crate::backup::ClusterReport) -> bridge::ClusterReport {
    let d = r.delta.clone().unwrap_or_default();
    bridge::ClusterReport {
        delta: r.delta.is_some(),
        delta_files_unchanged: d.files_unchanged,
        delta_files_changed: d.files_changed,
        delta_files_created: d.files_created,
        delta_paths_removed: d.paths_removed,
        delta_bytes_written: d.bytes_written,
        delta_bytes_compared: d.bytes_compared,
        backup_id: r.backup_id,
        chain: r.chain,
        data_dir: r.data_dir,
        port: r.port,
        target: r.target,
        recovery_log: r.recovery_log,
        databases: r
            .databases
            .into_iter()
            .map(|(database, tables)| bridge::DatabaseRows { database, tables: table_rows(tables) })
            .collect(),
        running: r.running,
        seconds: r.seconds,
    }
}
