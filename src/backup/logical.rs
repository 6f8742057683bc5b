//! Logical full backups (pg_dump custom format) into local storage, and their verification and
//! restore.
//!
//! A backup is a directory `<backup_dir>/<backup_id>/` holding `dump.zst.enc` (the dump,
//! zstd-compressed, sealed in authenticated chunks under a fresh data key — see
//! [`archive`](super::archive)), `manifest.json` (sizes, SHA-256 of the stored file, the data
//! key sealed under the master key, row counts at the moment of the dump) and `manifest.mac`
//! (an HMAC of the manifest under the master key). Every attempt is a `backup_history` row that
//! goes from `in_progress` to `completed` or `failed`.

use super::archive::{sha256_of, ChunkReader, ChunkWriter};
use super::storage::{self, Storage};
use super::wal::WalArchive;
use crate::config::{redact_url, Config};
use crate::crypto::envelope::{constant_time_eq, Key, Keyring};
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

pub(crate) const DUMP_FILE: &str = "dump.zst.enc";
pub(crate) const ZSTD_LEVEL: i32 = 3;

/// One stored file of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub chunks: u64,
    /// Bytes before compression and encryption.
    pub plain_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// SHA-256 of the stored file.
    pub sha256: String,
}

/// What a backup contains and how to open it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup_id: String,
    pub backup_type: String,
    pub method: String,
    pub database: String,
    pub server_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub compression: String,
    pub encryption: String,
    pub key_id: String,
    /// The data key, sealed under the master key `key_id` (hex).
    pub wrapped_key: String,
    pub files: Vec<FileEntry>,
    /// Rows per table in the snapshot the dump was taken from (logical backups).
    #[serde(default)]
    pub row_counts: BTreeMap<String, i64>,
    /// Physical backups: where WAL replay starts and stops, and what the backup builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<PhysicalInfo>,
}

/// The WAL range of a physical backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhysicalInfo {
    /// The backup this one needs (none for a full backup).
    pub parent_backup_id: Option<String>,
    /// The full backup at the root of the chain (itself for a full backup).
    pub base_backup_id: String,
    pub timeline: u32,
    /// Full: the checkpoint the base backup starts from. Incremental/differential: where the
    /// parent (incremental) or the full backup (differential) stopped.
    pub start_lsn: String,
    /// A restore of this backup replays WAL up to here.
    pub stop_lsn: String,
    /// The first WAL segment this backup holds or needs.
    pub start_wal: String,
    /// The last WAL segment this backup holds.
    pub stop_wal: String,
    pub wal_segment_size: u64,
    pub system_identifier: String,
    /// Every WAL segment stored in this backup.
    pub wal_segments: Vec<String>,
}

/// A backup as listed from `backup_history`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub backup_id: String,
    pub backup_type: String,
    pub status: String,
    pub path: String,
    pub database: Option<String>,
    pub size_bytes: Option<i64>,
    pub compressed_size_bytes: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
}

/// The outcome of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub target: String,
    /// Tables whose row count matches the backup's.
    pub tables_checked: usize,
    pub rows_restored: i64,
}

/// How long backups are kept, per type, and how many are kept whatever their age.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionPolicy {
    pub full: std::time::Duration,
    pub incremental: std::time::Duration,
    pub differential: std::time::Duration,
    /// Completed backups of each type kept regardless of age (at least 1 full is always kept).
    pub keep_last: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        let day = std::time::Duration::from_secs(86400);
        RetentionPolicy { full: day * 30, incremental: day * 7, differential: day * 3, keep_last: 1 }
    }
}

impl RetentionPolicy {
    /// A policy from days per type (0 keeps the default of that type).
    pub fn from_days(full: u32, incremental: u32, differential: u32, keep_last: usize) -> Self {
        let d = RetentionPolicy::default();
        let days = |n: u32, default: std::time::Duration| {
            if n == 0 {
                default
            } else {
                std::time::Duration::from_secs(86400 * n as u64)
            }
        };
        RetentionPolicy {
            full: days(full, d.full),
            incremental: days(incremental, d.incremental),
            differential: days(differential, d.differential),
            keep_last: keep_last.max(1),
        }
    }
}

/// What `cleanup` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    pub deleted: Vec<String>,
    pub kept: usize,
    /// Archived WAL files removed.
    pub wal_deleted: usize,
    pub bytes_freed: u64,
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

/// Counts bytes on their way through, and reports progress every 16 MiB.
pub(crate) struct Metered<R> {
    pub inner: R,
    pub done: u64,
    pub last: u64,
    pub report: Box<dyn FnMut(u64) + Send>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.last >= 16 << 20 {
            self.last = self.done;
            (self.report)(self.done);
        }
        Ok(n)
    }
}

pub(crate) fn pg_tool(cfg: &Config, name: &str) -> PathBuf {
    let dir = cfg.pg_bin_dir.clone().or_else(|| {
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
        debian.is_dir().then_some(debian)
    });
    match dir {
        Some(d) => d.join(name),
        None => PathBuf::from(name),
    }
}

pub(crate) fn manifest_context(backup_id: &str) -> Vec<u8> {
    format!("backup:{backup_id}:data-key").into_bytes()
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
            storage: storage::from_config(cfg)?,
            progress: None,
        })
    }

    /// A manager of the repository alone, for when the database is gone (disaster recovery):
    /// it reads, verifies and restores backups, and refuses what needs the database (taking
    /// backups, the history, cleanup). Needs `master_key` and a repository.
    pub fn repository_only(cfg: &Config) -> Result<Self> {
        let keyring = Keyring::from_config(cfg)?;
        Ok(BackupManager { db: None, keyring, cfg: cfg.clone(), storage: storage::from_config(cfg)?, progress: None })
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

    /// Takes a full logical backup. The row counts recorded in the manifest come from the same
    /// snapshot as the dump. Returns the manifest; on failure the history row says why and the
    /// partial files are removed.
    pub async fn create_full(&self) -> Result<Manifest> {
        let started = Utc::now();
        let backup_id = Self::new_id("full")?;
        self.history_start(&backup_id, "full", "pg_dump", None).await?;
        let result = self.create_full_inner(&backup_id, started).await;
        self.history_finish(&backup_id, &result).await?;
        result
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

    /// Signs and stores a manifest (the manifest last: a backup without one is incomplete).
    pub(crate) fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let text = serde_json::to_vec_pretty(m)?;
        let mac = hex::encode(self.keyring.mac("backup-manifest", &text)?);
        self.storage.put(&format!("{}/manifest.mac", m.backup_id), mac.as_bytes())?;
        self.storage.put(&format!("{}/manifest.json", m.backup_id), &text)?;
        Ok(())
    }

    async fn create_full_inner(&self, backup_id: &str, started: DateTime<Utc>) -> Result<Manifest> {
        // A repeatable-read transaction exports its snapshot: pg_dump reads exactly what the
        // row counts below read.
        let mut tx = self.db()?.begin().await?;
        tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
        let snap: String = tx.query("SELECT pg_export_snapshot()", &[]).await?[0].get(0);
        let meta = tx.query("SELECT current_database()::text, current_setting('server_version')", &[]).await?;
        let (database, server_version): (String, String) = (meta[0].get(0), meta[0].get(1));
        let tables = tx
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                &[],
            )
            .await?;
        let mut row_counts = BTreeMap::new();
        for t in &tables {
            let name: String = t.get(0);
            // The name comes from the catalog, quoted by format('%I'); values are never spliced.
            let n: i64 = tx.query(&format!("SELECT count(*) FROM {name}"), &[]).await?[0].get(0);
            row_counts.insert(name, n);
        }
        let key = Key::generate()?;
        let (key_id, wrapped) = self.keyring.seal(&manifest_context(backup_id), key.as_bytes())?;
        let url = self.cfg.require_database_url()?.to_string();
        let pg_dump = pg_tool(&self.cfg, "pg_dump");
        let (bid, this) = (backup_id.to_string(), self.clone());
        let entry = tokio::task::spawn_blocking(move || -> Result<FileEntry> {
            let mut child = Command::new(&pg_dump)
                .args(["--format=custom", "--compress=0", "--no-password", "--snapshot", &snap, "--dbname", &url])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error::Io(format!("cannot run {}: {e}", pg_dump.display())))?;
            let stderr = drain(child.stderr.take().expect("piped"));
            let report_to = this.clone();
            let id2 = bid.clone();
            let mut src = Metered {
                inner: child.stdout.take().expect("piped"),
                done: 0,
                last: 0,
                report: Box::new(move |n| report_to.report(&id2, "backup", n, None, "pg_dump".into())),
            };
            let stored = this.store_stream(&bid, DUMP_FILE, &key, &mut src);
            if let Err(e) = stored {
                // The write failed (disk full, unwritable target): that is the error to report.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            let status = child.wait()?;
            let err = stderr.join().unwrap_or_default();
            if !status.success() {
                return Err(Error::Io(format!("pg_dump failed ({status}): {}", err.trim())));
            }
            stored
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        tx.rollback().await?;

        let manifest = Manifest {
            format: 1,
            backup_id: backup_id.to_string(),
            backup_type: "full".into(),
            method: "pg_dump custom format".into(),
            database,
            server_version,
            started_at: started,
            finished_at: Utc::now(),
            compression: format!("zstd level {ZSTD_LEVEL}"),
            encryption: "aes-256-gcm, 1 MiB authenticated chunks".into(),
            key_id,
            wrapped_key: hex::encode(wrapped),
            files: vec![entry],
            row_counts,
            physical: None,
        };
        self.write_manifest(&manifest)?;
        self.report(backup_id, "done", manifest.files[0].plain_bytes, None, "backup completed".into());
        Ok(manifest)
    }

    /// Reads and authenticates a backup's manifest.
    pub fn manifest(&self, backup_id: &str) -> Result<Manifest> {
        check_id(backup_id)?;
        let get = |name: &str| match self.storage.get(&format!("{backup_id}/{name}")) {
            Err(Error::NotFound(e)) => Err(Error::NotFound(format!("backup {backup_id}: {name}: {e}"))),
            other => other,
        };
        let text = get("manifest.json")?;
        let mac = get("manifest.mac")?;
        let mac = hex::decode(String::from_utf8_lossy(&mac).trim())
            .map_err(|_| Error::Integrity(format!("backup {backup_id}: manifest.mac is corrupt")))?;
        let ok = self.keyring.mac_all("backup-manifest", &text)?.iter().any(|(_, m)| constant_time_eq(m, &mac));
        if !ok {
            return Err(Error::Integrity(format!(
                "backup {backup_id}: manifest.json was altered, or the master key that signed it is not loaded"
            )));
        }
        let m: Manifest = serde_json::from_slice(&text)?;
        if m.backup_id != backup_id {
            return Err(Error::Integrity(format!("backup {backup_id}: the manifest belongs to {}", m.backup_id)));
        }
        Ok(m)
    }

    pub(crate) fn data_key(&self, m: &Manifest) -> Result<Key> {
        let wrapped = hex::decode(&m.wrapped_key).map_err(|_| Error::Integrity("wrapped key is corrupt".into()))?;
        let raw = self.keyring.open(&m.key_id, &manifest_context(&m.backup_id), &wrapped)?;
        Key::from_hex(&hex::encode(raw))
    }

    /// Reads the whole backup back: the manifest's MAC, every file's size and SHA-256, and every
    /// chunk's authentication tag. The error names the file and chunk at fault.
    pub fn verify(&self, backup_id: &str) -> Result<Manifest> {
        let m = self.manifest(backup_id)?;
        let key = self.data_key(&m)?;
        let total: u64 = m.files.iter().map(|f| f.stored_bytes).sum();
        let mut done = 0;
        for f in &m.files {
            let object = format!("{backup_id}/{}", f.name);
            let open = || match self.storage.open(&object) {
                Err(Error::NotFound(e)) => {
                    Err(Error::Integrity(format!("backup {backup_id}: {} is missing: {e}", f.name)))
                }
                other => other,
            };
            let (sha, size) = sha256_of(open()?)?;
            if size != f.stored_bytes || sha != f.sha256 {
                // Find the chunk: decrypting names it.
                let mut r = ChunkReader::new(open()?, key.clone(), backup_id, &f.name);
                let detail = match std::io::copy(&mut r, &mut std::io::sink()) {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("{}: size or checksum differs from the manifest", f.name),
                };
                return Err(Error::Integrity(format!("backup {backup_id}: {detail}")));
            }
            let r = ChunkReader::new(open()?, key.clone(), backup_id, &f.name);
            let mut z = zstd::stream::read::Decoder::new(r)?;
            let n = std::io::copy(&mut z, &mut std::io::sink())
                .map_err(|e| Error::Integrity(format!("backup {backup_id}: {e}")))?;
            if n != f.plain_bytes {
                return Err(Error::Integrity(format!(
                    "backup {backup_id}: {} holds {n} bytes, the manifest says {}",
                    f.name, f.plain_bytes
                )));
            }
            done += f.stored_bytes;
            self.report(backup_id, "verify", done, Some(total), format!("{} verified", f.name));
        }
        Ok(m)
    }

    /// Restores a logical backup into the database at `target_url`, after verifying it; then
    /// checks every table's row count against the backup. The database is created when it
    /// does not exist; an existing one should be empty.
    pub async fn restore(&self, backup_id: &str, target_url: &str) -> Result<RestoreReport> {
        let m = self.verify(backup_id)?;
        if m.physical.is_some() {
            return Err(Error::invalid(format!(
                "backup {backup_id} is a physical backup: restore it into a data directory (RecoveryManager::restore_cluster)"
            )));
        }
        create_database_if_missing(target_url, self.cfg.connect_timeout).await?;
        let key = self.data_key(&m)?;
        let pg_restore = pg_tool(&self.cfg, "pg_restore");
        let (url, this, m2) = (target_url.to_string(), self.clone(), m.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut child = Command::new(&pg_restore)
                .args(["--no-owner", "--no-password", "--exit-on-error", "--dbname", &url])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error::Io(format!("cannot run {}: {e}", pg_restore.display())))?;
            let stderr = drain(child.stderr.take().expect("piped"));
            let total = m2.files[0].plain_bytes;
            let (report_to, id) = (this.clone(), m2.backup_id.clone());
            let mut src = Metered {
                inner: this.open_file(&m2, &key, DUMP_FILE)?,
                done: 0,
                last: 0,
                report: Box::new(move |n| report_to.report(&id, "restore", n, Some(total), "pg_restore".into())),
            };
            let mut stdin = child.stdin.take().expect("piped");
            let fed = std::io::copy(&mut src, &mut stdin);
            drop(stdin);
            let status = child.wait()?;
            let err = stderr.join().unwrap_or_default();
            fed.map_err(|e| Error::Integrity(format!("backup {}: {e}", m2.backup_id)))?;
            if !status.success() {
                return Err(Error::Io(format!("pg_restore failed ({status}): {}", err.trim())));
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;

        let mut target_cfg = self.cfg.clone();
        target_cfg.set("database_url", target_url)?;
        target_cfg.set("pool_size", "1")?;
        let target = DatabaseManager::connect(&target_cfg).await?;
        let mut rows = 0;
        for (table, want) in &m.row_counts {
            let got: i64 = target.query(&format!("SELECT count(*) FROM {table}"), &[]).await?[0].get(0);
            if got != *want {
                target.close();
                return Err(Error::Integrity(format!("restored {table} has {got} rows, the backup recorded {want}")));
            }
            rows += got;
        }
        target.close();
        self.report(backup_id, "done", rows as u64, None, format!("{} tables checked", m.row_counts.len()));
        Ok(RestoreReport {
            backup_id: backup_id.into(),
            target: redact_url(target_url),
            tables_checked: m.row_counts.len(),
            rows_restored: rows,
        })
    }

    /// Applies the retention policy:
    /// - a completed backup older than its type's period is deleted, except the newest
    ///   `keep_last` of its type (so the newest full backup, the one every restore needs, is
    ///   never deleted, however old), and except a backup that a kept incremental or
    ///   differential builds on;
    /// - archived WAL positioned before the oldest kept physical full backup's start is deleted
    ///   (never the WAL a kept backup needs; nothing when no physical backup is kept);
    /// - failed attempts older than the full-backup period leave the history.
    ///
    /// Deleted backups stay in the history as `deleted`.
    pub async fn cleanup(&self, policy: &RetentionPolicy) -> Result<CleanupReport> {
        let rows = self
            .db()?
            .query(
                "SELECT backup_id, backup_type, finished_at, parent_backup_id, metadata->>'start_wal',
                        row_number() OVER (PARTITION BY backup_type ORDER BY finished_at DESC, id DESC)
                 FROM backup_history WHERE status = 'completed' ORDER BY finished_at",
                &[],
            )
            .await?;
        let now = Utc::now();
        let mut report = CleanupReport::default();
        let mut keep = std::collections::HashSet::new();
        let mut parents = std::collections::HashMap::new();
        for r in &rows {
            let (id, kind): (String, String) = (r.get(0), r.get(1));
            let finished: Option<DateTime<Utc>> = r.get(2);
            let parent: Option<String> = r.get(3);
            let rank: i64 = r.get(5);
            let keep_for = match kind.as_str() {
                "full" => policy.full,
                "incremental" => policy.incremental,
                _ => policy.differential,
            };
            let age = finished.map(|f| (now - f).to_std().unwrap_or_default()).unwrap_or_default();
            let protected = rank as usize <= policy.keep_last.max(if kind == "full" { 1 } else { 0 });
            if protected || age <= keep_for {
                keep.insert(id.clone());
            }
            if let Some(p) = parent {
                parents.insert(id, p);
            }
        }
        // What a kept backup builds on is kept too.
        let kept_now: Vec<String> = keep.iter().cloned().collect();
        for id in kept_now {
            let mut cur = id;
            while let Some(p) = parents.get(&cur) {
                keep.insert(p.clone());
                cur = p.clone();
            }
        }
        let mut oldest_wal: Option<String> = None;
        for r in &rows {
            let (id, kind): (String, String) = (r.get(0), r.get(1));
            let start_wal: Option<String> = r.get(4);
            if keep.contains(&id) {
                report.kept += 1;
                if kind == "full" {
                    if let Some(w) = start_wal {
                        let older = match &oldest_wal {
                            Some(o) => super::wal::segment_position(&w) < super::wal::segment_position(o),
                            None => true,
                        };
                        if older {
                            oldest_wal = Some(w.to_string());
                        }
                    }
                }
                continue;
            }
            report.bytes_freed += self.storage.delete_prefix(&format!("{id}/"))?;
            self.db()?
                .execute(
                    "UPDATE backup_history SET status = 'deleted', deleted_at = now() WHERE backup_id = $1",
                    &[&id],
                )
                .await?;
            report.deleted.push(id);
        }
        if let Some(oldest) = oldest_wal {
            let (removed, bytes) = self.wal_archive().expire_before(&oldest)?;
            report.wal_deleted = removed.len();
            report.bytes_freed += bytes;
        }
        self.db()?
            .execute(
                "DELETE FROM backup_history WHERE status = 'failed' AND started_at < now() - make_interval(secs => $1)",
                &[&policy.full.as_secs_f64()],
            )
            .await?;
        Ok(report)
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
                        started_at, finished_at, error_message
                 FROM backup_history ORDER BY started_at DESC, id DESC",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| BackupInfo {
                backup_id: r.get(0),
                backup_type: r.get(1),
                status: r.get(2),
                path: r.get(3),
                database: r.get(4),
                size_bytes: r.get(5),
                compressed_size_bytes: r.get(6),
                started_at: r.get(7),
                finished_at: r.get(8),
                error_message: r.get(9),
            })
            .collect())
    }
}

/// Creates the database `url` names when the server says it does not exist.
async fn create_database_if_missing(url: &str, timeout: std::time::Duration) -> Result<()> {
    let parsed: tokio_postgres::Config =
        url.parse().map_err(|e| Error::invalid(format!("target URL {}: {e}", redact_url(url))))?;
    let connect = |cfg: tokio_postgres::Config| async move {
        tokio::time::timeout(timeout, cfg.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {} took over {timeout:?}", redact_url(url))))
    };
    match connect(parsed.clone()).await? {
        Ok((client, conn)) => {
            drop(client);
            let _ = conn.await;
            Ok(())
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            let name = parsed.get_dbname().unwrap_or_default().to_string();
            let mut admin = parsed.clone();
            admin.dbname("postgres");
            let (client, conn) =
                connect(admin).await?.map_err(|e| Error::Connection(format!("{}: {e}", redact_url(url))))?;
            let task = tokio::spawn(conn);
            // The name is quoted as an identifier; it is never spliced unquoted.
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let created = client.batch_execute(&format!("CREATE DATABASE {quoted}")).await;
            drop(client);
            let _ = task.await;
            created.map_err(|e| Error::Query(format!("cannot create database {quoted}: {e}")))
        }
        Err(e) => Err(Error::Connection(format!("{}: {e}", redact_url(url)))),
    }
}

/// Checks that a backup id is a single safe name.
pub fn check_id(backup_id: &str) -> Result<()> {
    if backup_id.is_empty()
        || backup_id.len() > 128
        || !backup_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || backup_id == "wal"
    {
        return Err(Error::invalid(format!("{backup_id:?} is not a backup id")));
    }
    Ok(())
}

/// Reads a child's standard error on its own thread, so a chatty child never blocks.
pub(crate) fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}
