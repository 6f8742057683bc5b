//! `BackupManager`: the entry point of the backup area. It holds the database, the keys and the
//! repository; takes backups of any [`BackupKind`] (dispatching to the logical or physical
//! code), records every attempt in `backup_history`, lists and deletes backups, and reports
//! progress. Also the shared plumbing of the backup kinds: streaming into the repository
//! through zstd and the chunk sealer, and running a PostgreSQL tool.

use super::archive::{ChunkReader, ChunkWriter};
use super::kind::BackupKind;
use super::manifest::{check_id, FileEntry, Manifest};
use super::repository;
use super::storage::Storage;
use super::wal::WalArchive;
use crate::config::Config;
use crate::crypto::envelope::{Key, Keyring};
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::io::{Read, Write};
use std::sync::Arc;

pub(crate) const ZSTD_LEVEL: i32 = 3;
/// Bytes per block handed from the decompressing stage of a restore to the one that unpacks.
const STAGE_BLOCK: usize = 1 << 20;

/// A backup as listed from `backup_history`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub backup_id: String,
    /// As recorded in the history: `full` for both a logical and a physical full backup.
    pub backup_type: String,
    /// `logical` or `physical`.
    pub method: Option<&'static str>,
    /// The kind in the vocabulary every face uses (`logical`, `full`, `incremental`,
    /// `differential`); none for a row this version does not know.
    pub kind: Option<BackupKind>,
    pub status: String,
    pub path: String,
    pub database: Option<String>,
    pub size_bytes: Option<i64>,
    pub compressed_size_bytes: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
}

/// Where a long operation is; reported to a progress callback.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub backup_id: String,
    /// `backup`, `verify`, `restore`, `wal`, `recovery`, `check` or `done`.
    pub phase: String,
    pub bytes_done: u64,
    /// Known for verify and restore (the stored size), not while a backup is being taken.
    pub bytes_total: Option<u64>,
    pub message: String,
}

/// A progress callback; it runs on the thread doing the work and must return quickly.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Backups of the configured database into the configured repository (`backup_dir` or
/// `backup_s3_url`).
#[derive(Clone)]
pub struct BackupManager {
    pub(crate) db: Option<DatabaseManager>,
    pub(crate) cfg: Config,
    pub(crate) keyring: Keyring,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) progress: Option<ProgressFn>,
}

impl std::fmt::Debug for BackupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupManager").field("storage", &self.storage).field("keyring", &self.keyring).finish()
    }
}

impl BackupManager {
    /// Needs `database_url`, `master_key` and a repository (`backup_dir` or `backup_s3_url`).
    pub fn new(db: DatabaseManager, cfg: &Config) -> Result<Self> {
        cfg.require_database_url()?;
        let keyring = Keyring::from_config(cfg)?;
        Ok(BackupManager {
            db: Some(db),
            keyring,
            cfg: cfg.clone(),
            storage: repository::from_config(cfg)?,
            progress: None,
        })
    }

    /// A manager of the repository alone, for when the database is gone (disaster recovery):
    /// it reads, verifies and restores backups, and refuses what needs the database (taking
    /// backups, the history, cleanup). Needs `master_key` and a repository.
    pub fn repository_only(cfg: &Config) -> Result<Self> {
        let keyring = Keyring::from_config(cfg)?;
        Ok(BackupManager {
            db: None,
            keyring,
            cfg: cfg.clone(),
            storage: repository::from_config(cfg)?,
            progress: None,
        })
    }

    pub(crate) fn db(&self) -> Result<&DatabaseManager> {
        self.db.as_ref().ok_or_else(|| Error::Config("this needs the database: database_url is not set".into()))
    }

    /// Reports progress of backups, verifies and restores to `callback`.
    pub fn set_progress(&mut self, callback: Option<ProgressFn>) {
        self.progress = callback;
    }

    pub(crate) fn report(&self, backup_id: &str, phase: &str, done: u64, total: Option<u64>, message: String) {
        if let Some(cb) = &self.progress {
            cb(&Progress {
                backup_id: backup_id.into(),
                phase: phase.into(),
                bytes_done: done,
                bytes_total: total,
                message,
            });
        }
    }

    /// The repository.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Prepares the repository (creates the directory, or the S3 bucket when missing).
    /// Idempotent.
    pub fn init_repository(&self) -> Result<()> {
        self.storage.init()
    }

    /// The WAL archive of the repository.
    pub fn wal_archive(&self) -> WalArchive {
        WalArchive::new(self.storage.clone(), self.keyring.clone())
    }

    /// Where one backup lives (a directory, or an `s3://` prefix).
    pub fn location_of(&self, backup_id: &str) -> Result<String> {
        check_id(backup_id)?;
        Ok(self.storage.location(backup_id))
    }

    pub(crate) fn new_id(kind: &str) -> Result<String> {
        Ok(format!("{kind}-{}-{}", Utc::now().format("%Y%m%dT%H%M%SZ"), hex::encode(crate::crypto::random::bytes(3)?)))
    }

    /// Records a new attempt in `backup_history`.
    pub(crate) async fn history_start(
        &self,
        backup_id: &str,
        kind: &str,
        method: &str,
        parent: Option<&str>,
    ) -> Result<()> {
        self.db()?
            .execute(
                "INSERT INTO backup_history (backup_id, backup_type, method, status, storage, path, database_name,
                                             encryption, key_id, parent_backup_id)
                 VALUES ($1, $2, $3, 'in_progress', $4, $5, current_database(), 'aes-256-gcm', $6, $7)",
                &[
                    &backup_id,
                    &kind,
                    &method,
                    &self.storage.kind(),
                    &self.storage.location(backup_id),
                    &self.keyring.current_id(),
                    &parent,
                ],
            )
            .await?;
        Ok(())
    }

    /// Closes an attempt: `completed` with sizes and metadata, or `failed` with the error (and
    /// whatever was written removed).
    pub(crate) async fn history_finish(&self, backup_id: &str, result: &Result<Manifest>) -> Result<()> {
        match result {
            Ok(m) => {
                let plain: u64 = m.files.iter().map(|f| f.plain_bytes).sum();
                let stored: u64 = m.files.iter().map(|f| f.stored_bytes).sum();
                let files: Vec<_> =
                    m.files.iter().map(|f| serde_json::json!({"name": f.name, "sha256": f.sha256})).collect();
                let mut meta = serde_json::json!({"files": files, "method": m.method});
                if !m.row_counts.is_empty() {
                    meta["row_counts"] = serde_json::to_value(&m.row_counts)?;
                }
                if let Some(p) = &m.physical {
                    meta["timeline"] = p.timeline.into();
                    meta["start_wal"] = p.start_wal.clone().into();
                    meta["stop_wal"] = p.stop_wal.clone().into();
                    meta["base_backup_id"] = p.base_backup_id.clone().into();
                }
                let (start, stop) = match &m.physical {
                    Some(p) => (Some(p.start_lsn.clone()), Some(p.stop_lsn.clone())),
                    None => (None, None),
                };
                self.db()?
                    .execute(
                        "UPDATE backup_history SET status = 'completed', finished_at = now(), size_bytes = $2,
                                compressed_size_bytes = $3, metadata = $4, start_lsn = $5, stop_lsn = $6
                         WHERE backup_id = $1",
                        &[&backup_id, &(plain as i64), &(stored as i64), &meta, &start, &stop],
                    )
                    .await?;
            }
            Err(e) => {
                let _ = self.storage.delete_prefix(&format!("{backup_id}/"));
                self.db()?
                    .execute(
                        "UPDATE backup_history SET status = 'failed', finished_at = now(), error_message = $2
                         WHERE backup_id = $1",
                        &[&backup_id, &e.to_string()],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Streams `source` through zstd and the chunk sealer into object `<backup_id>/<name>`.
    pub(crate) fn store_stream(
        &self,
        backup_id: &str,
        name: &str,
        key: &Key,
        source: &mut dyn Read,
    ) -> Result<FileEntry> {
        self.store_with(backup_id, name, key, &mut |w| std::io::copy(source, w))
    }

    /// Stores what `fill` writes (returning the plaintext byte count) as object
    /// `<backup_id>/<name>`, compressed and sealed. Nothing appears unless it all succeeds.
    pub(crate) fn store_with(
        &self,
        backup_id: &str,
        name: &str,
        key: &Key,
        fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<u64>,
    ) -> Result<FileEntry> {
        let object = format!("{backup_id}/{name}");
        let loc = self.storage.location(&object);
        let io = |e: std::io::Error| Error::Io(format!("writing {loc}: {e}"));
        let mut out = self.storage.create(&object)?;
        let sealer = ChunkWriter::new(&mut out, key.clone(), backup_id, name)?;
        let mut z = zstd::stream::write::Encoder::new(sealer, ZSTD_LEVEL)?;
        let plain = fill(&mut z).map_err(io)?;
        let sealer = z.finish().map_err(io)?;
        let (chunks, _compressed, stored, sha, _) = sealer.finish().map_err(io)?;
        out.commit()?;
        Ok(FileEntry { name: name.into(), chunks, plain_bytes: plain, stored_bytes: stored, sha256: sha })
    }

    /// Opens a stored file of a backup as plaintext.
    pub(crate) fn open_file(&self, m: &Manifest, key: &Key, name: &str) -> Result<Box<dyn Read + Send>> {
        let r = self.storage.open(&format!("{}/{name}", m.backup_id))?;
        Ok(Box::new(zstd::stream::read::Decoder::new(ChunkReader::new(r, key.clone(), &m.backup_id, name))?))
    }

    /// Opens a stored file of a backup as plaintext, read in stages on threads of their own:
    /// one reads and authenticates the chunks, one decompresses, while the caller consumes.
    pub(crate) fn open_file_staged(&self, m: &Manifest, key: &Key, name: &str) -> Result<Box<dyn Read + Send>> {
        let r = self.storage.open(&format!("{}/{name}", m.backup_id))?;
        let chunks = ChunkReader::new(r, key.clone(), &m.backup_id, name);
        let sealed = super::pipeline::stage("rsdb-chunks", chunks, super::archive::CHUNK, 4)?;
        let plain = zstd::stream::read::Decoder::new(sealed)?;
        Ok(Box::new(super::pipeline::stage("rsdb-unzstd", plain, STAGE_BLOCK, 8)?))
    }

    /// Takes a backup of `kind`: a full logical backup of the database, or a physical one of
    /// the cluster.
    pub async fn create_kind(&self, kind: BackupKind) -> Result<Manifest> {
        match kind {
            BackupKind::Logical => self.create_full().await,
            BackupKind::Physical(k) => self.create_physical(k).await,
        }
    }

    /// Takes a backup named by kind (see [`BackupKind::parse`]): `logical`, or the physical
    /// `full`, `incremental` or `differential`.
    pub async fn create(&self, kind: &str) -> Result<Manifest> {
        self.create_kind(BackupKind::parse(kind)?).await
    }

    /// Deletes one backup (files and history). Refused while another backup that is not
    /// deleted builds on it.
    pub async fn delete(&self, backup_id: &str) -> Result<u64> {
        check_id(backup_id)?;
        let row = self.db()?.query_opt("SELECT status FROM backup_history WHERE backup_id = $1", &[&backup_id]).await?;
        let live = row.is_some_and(|r| r.get::<_, String>(0) != "deleted");
        if !live && self.storage.list(&format!("{backup_id}/"))?.is_empty() {
            return Err(Error::NotFound(format!("no backup {backup_id}")));
        }
        let dependents = self
            .db()?
            .query(
                "SELECT backup_id FROM backup_history WHERE parent_backup_id = $1 AND status IN ('completed', 'in_progress')",
                &[&backup_id],
            )
            .await?;
        if !dependents.is_empty() {
            let ids: Vec<String> = dependents.iter().map(|r| r.get(0)).collect();
            return Err(Error::Conflict(format!(
                "backup {backup_id} is needed by {}; delete those first",
                ids.join(", ")
            )));
        }
        let freed = self.storage.delete_prefix(&format!("{backup_id}/"))?;
        self.db()?
            .execute(
                "UPDATE backup_history SET status = 'deleted', deleted_at = now() WHERE backup_id = $1",
                &[&backup_id],
            )
            .await?;
        Ok(freed)
    }

    /// When the newest completed backup of a type finished.
    pub async fn last_completed(&self, backup_type: &str) -> Result<Option<DateTime<Utc>>> {
        self.last_completed_by(backup_type, None).await
    }

    /// When the newest completed backup of a type (and method: `pg_dump`, `pg_basebackup`,
    /// `wal`) finished.
    pub async fn last_completed_by(&self, backup_type: &str, method: Option<&str>) -> Result<Option<DateTime<Utc>>> {
        let row = self
            .db()?
            .query_opt(
                "SELECT max(finished_at) FROM backup_history
                 WHERE status = 'completed' AND backup_type = $1 AND ($2::text IS NULL OR method = $2)",
                &[&backup_type, &method],
            )
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Backups recorded in `backup_history`, newest first.
    pub async fn list(&self) -> Result<Vec<BackupInfo>> {
        let rows = self
            .db()?
            .query(
                "SELECT backup_id, backup_type, status, path, database_name, size_bytes, compressed_size_bytes,
                        started_at, finished_at, error_message, method
                 FROM backup_history ORDER BY started_at DESC, id DESC",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let backup_type: String = r.get(1);
                let kind = BackupKind::from_history(&backup_type, r.get::<_, Option<&str>>(10)).ok();
                BackupInfo {
                    backup_id: r.get(0),
                    method: kind.map(BackupKind::method),
                    kind,
                    backup_type,
                    status: r.get(2),
                    path: r.get(3),
                    database: r.get(4),
                    size_bytes: r.get(5),
                    compressed_size_bytes: r.get(6),
                    started_at: r.get(7),
                    finished_at: r.get(8),
                    error_message: r.get(9),
                }
            })
            .collect())
    }
}
