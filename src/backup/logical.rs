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
use crate::auth::crypto::{constant_time_eq, Key, Keyring};
use crate::config::{redact_url, Config};
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const DUMP_FILE: &str = "dump.zst.enc";
const ZSTD_LEVEL: i32 = 3;

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
    /// Rows per table in the snapshot the dump was taken from.
    pub row_counts: BTreeMap<String, i64>,
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
    pub bytes_freed: u64,
}

/// Backups of the configured database into `backup_dir`.
#[derive(Clone)]
pub struct BackupManager {
    db: DatabaseManager,
    cfg: Config,
    keyring: Keyring,
    dir: PathBuf,
}

impl std::fmt::Debug for BackupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupManager").field("dir", &self.dir).field("keyring", &self.keyring).finish()
    }
}

fn pg_tool(cfg: &Config, name: &str) -> PathBuf {
    let dir = cfg.pg_bin_dir.clone().or_else(|| {
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
        debian.is_dir().then_some(debian)
    });
    match dir {
        Some(d) => d.join(name),
        None => PathBuf::from(name),
    }
}

fn manifest_context(backup_id: &str) -> Vec<u8> {
    format!("backup:{backup_id}:data-key").into_bytes()
}

impl BackupManager {
    /// Needs `database_url`, `backup_dir` and `master_key`.
    pub fn new(db: DatabaseManager, cfg: &Config) -> Result<Self> {
        let dir = cfg
            .backup_dir
            .clone()
            .ok_or_else(|| Error::Config("backup_dir is not set (ROOTSTREAM_BACKUP_DIR)".into()))?;
        cfg.require_database_url()?;
        Ok(BackupManager { db, keyring: Keyring::from_config(cfg)?, cfg: cfg.clone(), dir })
    }

    /// The directory of one backup.
    pub fn path_of(&self, backup_id: &str) -> Result<PathBuf> {
        if backup_id.is_empty() || !backup_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::invalid(format!("{backup_id:?} is not a backup id")));
        }
        Ok(self.dir.join(backup_id))
    }

    /// Takes a full logical backup. The row counts recorded in the manifest come from the same
    /// snapshot as the dump. Returns the manifest; on failure the history row says why and the
    /// partial files are removed.
    pub async fn create_full(&self) -> Result<Manifest> {
        let started = Utc::now();
        let backup_id =
            format!("full-{}-{}", started.format("%Y%m%dT%H%M%SZ"), hex::encode(crate::auth::random::bytes(3)?));
        let path = self.path_of(&backup_id)?;
        self.db
            .execute(
                "INSERT INTO backup_history (backup_id, backup_type, method, status, storage, path, database_name, encryption, key_id)
                 VALUES ($1, 'full', 'pg_dump', 'in_progress', 'local', $2, current_database(), 'aes-256-gcm', $3)",
                &[&backup_id, &path.to_string_lossy().to_string(), &self.keyring.current_id()],
            )
            .await?;
        let result = self.create_full_inner(&backup_id, &path, started).await;
        match &result {
            Ok(m) => {
                let f = &m.files[0];
                self.db
                    .execute(
                        "UPDATE backup_history SET status = 'completed', finished_at = now(), size_bytes = $2,
                                compressed_size_bytes = $3, metadata = $4 WHERE backup_id = $1",
                        &[
                            &backup_id,
                            &(f.plain_bytes as i64),
                            &(f.stored_bytes as i64),
                            &serde_json::json!({"sha256": f.sha256, "row_counts": m.row_counts}),
                        ],
                    )
                    .await?;
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                let _ = self
                    .db
                    .execute(
                        "UPDATE backup_history SET status = 'failed', finished_at = now(), error_message = $2 WHERE backup_id = $1",
                        &[&backup_id, &e.to_string()],
                    )
                    .await;
            }
        }
        result
    }

    async fn create_full_inner(&self, backup_id: &str, path: &Path, started: DateTime<Utc>) -> Result<Manifest> {
        std::fs::create_dir_all(path).map_err(|e| Error::Io(format!("cannot create {}: {e}", path.display())))?;
        // A repeatable-read transaction exports its snapshot: pg_dump reads exactly what the
        // row counts below read.
        let mut tx = self.db.begin().await?;
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
        let file_path = path.join(DUMP_FILE);
        let (bid, fp) = (backup_id.to_string(), file_path.clone());
        let entry = tokio::task::spawn_blocking(move || -> Result<FileEntry> {
            let mut child = Command::new(&pg_dump)
                .args(["--format=custom", "--compress=0", "--no-password", "--snapshot", &snap, "--dbname", &url])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error::Io(format!("cannot run {}: {e}", pg_dump.display())))?;
            let file =
                std::fs::File::create(&fp).map_err(|e| Error::Io(format!("cannot create {}: {e}", fp.display())))?;
            let sealer = ChunkWriter::new(std::io::BufWriter::new(file), key, &bid, DUMP_FILE)?;
            let mut z = zstd::stream::write::Encoder::new(sealer, ZSTD_LEVEL)?;
            let mut out = child.stdout.take().expect("piped");
            let copied = std::io::copy(&mut out, &mut z);
            let status = child.wait()?;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            if !status.success() {
                return Err(Error::Io(format!("pg_dump failed ({status}): {}", err.trim())));
            }
            let plain = copied.map_err(|e| Error::Io(format!("writing {}: {e}", fp.display())))?;
            let sealer = z.finish()?;
            let (chunks, _compressed, stored, sha, writer) =
                sealer.finish().map_err(|e| Error::Io(format!("writing {}: {e}", fp.display())))?;
            let file = writer.into_inner().map_err(|e| Error::Io(e.to_string()))?;
            file.sync_all().map_err(|e| Error::Io(format!("syncing {}: {e}", fp.display())))?;
            Ok(FileEntry { name: DUMP_FILE.into(), chunks, plain_bytes: plain, stored_bytes: stored, sha256: sha })
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
        };
        let text = serde_json::to_vec_pretty(&manifest)?;
        let mac = hex::encode(self.keyring.mac("backup-manifest", &text)?);
        write_synced(&path.join("manifest.json"), &text)?;
        write_synced(&path.join("manifest.mac"), mac.as_bytes())?;
        Ok(manifest)
    }

    /// Reads and authenticates a backup's manifest.
    pub fn manifest(&self, backup_id: &str) -> Result<Manifest> {
        let path = self.path_of(backup_id)?;
        let text = std::fs::read(path.join("manifest.json"))
            .map_err(|e| Error::NotFound(format!("backup {backup_id}: manifest.json: {e}")))?;
        let mac = std::fs::read_to_string(path.join("manifest.mac"))
            .map_err(|e| Error::NotFound(format!("backup {backup_id}: manifest.mac: {e}")))?;
        let mac = hex::decode(mac.trim())
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

    fn data_key(&self, m: &Manifest) -> Result<Key> {
        let wrapped = hex::decode(&m.wrapped_key).map_err(|_| Error::Integrity("wrapped key is corrupt".into()))?;
        let raw = self.keyring.open(&m.key_id, &manifest_context(&m.backup_id), &wrapped)?;
        Key::from_hex(&hex::encode(raw))
    }

    /// Reads the whole backup back: the manifest's MAC, every file's size and SHA-256, and every
    /// chunk's authentication tag. The error names the file and chunk at fault.
    pub fn verify(&self, backup_id: &str) -> Result<Manifest> {
        let m = self.manifest(backup_id)?;
        let key = self.data_key(&m)?;
        let path = self.path_of(backup_id)?;
        for f in &m.files {
            let fp = path.join(&f.name);
            let file = std::fs::File::open(&fp)
                .map_err(|e| Error::Integrity(format!("backup {backup_id}: {} is missing: {e}", f.name)))?;
            let (sha, size) = sha256_of(std::io::BufReader::new(file))?;
            if size != f.stored_bytes || sha != f.sha256 {
                // Find the chunk: decrypting names it.
                let file = std::fs::File::open(&fp)?;
                let mut r = ChunkReader::new(std::io::BufReader::new(file), key.clone(), backup_id, &f.name);
                let detail = match std::io::copy(&mut r, &mut std::io::sink()) {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("{}: size or checksum differs from the manifest", f.name),
                };
                return Err(Error::Integrity(format!("backup {backup_id}: {detail}")));
            }
            let file = std::fs::File::open(&fp)?;
            let r = ChunkReader::new(std::io::BufReader::new(file), key.clone(), backup_id, &f.name);
            let mut z = zstd::stream::read::Decoder::new(r)?;
            let n = std::io::copy(&mut z, &mut std::io::sink())
                .map_err(|e| Error::Integrity(format!("backup {backup_id}: {e}")))?;
            if n != f.plain_bytes {
                return Err(Error::Integrity(format!(
                    "backup {backup_id}: {} holds {n} bytes, the manifest says {}",
                    f.name, f.plain_bytes
                )));
            }
        }
        Ok(m)
    }

    /// Restores a backup into the database at `target_url` (which must exist and should be
    /// empty), after verifying it; then checks every table's row count against the backup.
    pub async fn restore(&self, backup_id: &str, target_url: &str) -> Result<RestoreReport> {
        let m = self.verify(backup_id)?;
        let key = self.data_key(&m)?;
        let fp = self.path_of(backup_id)?.join(DUMP_FILE);
        let pg_restore = pg_tool(&self.cfg, "pg_restore");
        let (bid, url) = (backup_id.to_string(), target_url.to_string());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut child = Command::new(&pg_restore)
                .args(["--no-owner", "--no-password", "--exit-on-error", "--dbname", &url])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error::Io(format!("cannot run {}: {e}", pg_restore.display())))?;
            let file = std::fs::File::open(&fp)?;
            let r = ChunkReader::new(std::io::BufReader::new(file), key, &bid, DUMP_FILE);
            let mut z = zstd::stream::read::Decoder::new(r)?;
            let mut stdin = child.stdin.take().expect("piped");
            let fed = std::io::copy(&mut z, &mut stdin);
            drop(stdin);
            let status = child.wait()?;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            fed.map_err(|e| Error::Integrity(format!("backup {bid}: {e}")))?;
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
                return Err(Error::Integrity(format!("restored {table} has {got} rows, the backup recorded {want}")));
            }
            rows += got;
        }
        target.close();
        Ok(RestoreReport {
            backup_id: backup_id.into(),
            target: redact_url(target_url),
            tables_checked: m.row_counts.len(),
            rows_restored: rows,
        })
    }

    /// Deletes completed backups older than the policy allows for their type, except the newest
    /// `keep_last` of each type — so the newest full backup, the one every restore needs, is
    /// never deleted. Failed attempts older than the full-backup period are dropped from the
    /// history. Deleted backups stay in the history as `deleted`.
    pub async fn cleanup(&self, policy: &RetentionPolicy) -> Result<CleanupReport> {
        let rows = self
            .db
            .query(
                "SELECT backup_id, backup_type, path, finished_at,
                        row_number() OVER (PARTITION BY backup_type ORDER BY finished_at DESC, id DESC)
                 FROM backup_history WHERE status = 'completed' ORDER BY finished_at",
                &[],
            )
            .await?;
        let now = Utc::now();
        let mut report = CleanupReport::default();
        for r in &rows {
            let (id, kind, path): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let finished: Option<DateTime<Utc>> = r.get(3);
            let rank: i64 = r.get(4);
            let keep_for = match kind.as_str() {
                "full" => policy.full,
                "incremental" => policy.incremental,
                _ => policy.differential,
            };
            let age = finished.map(|f| (now - f).to_std().unwrap_or_default()).unwrap_or_default();
            let protected = rank as usize <= policy.keep_last.max(if kind == "full" { 1 } else { 0 });
            if protected || age <= keep_for {
                report.kept += 1;
                continue;
            }
            let dir = PathBuf::from(&path);
            // Only a directory that is this backup's own is removed.
            if dir.file_name().map(|n| n == id.as_str()).unwrap_or(false) && dir.exists() {
                report.bytes_freed += dir_size(&dir);
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| Error::Io(format!("cannot delete {}: {e}", dir.display())))?;
            }
            self.db
                .execute(
                    "UPDATE backup_history SET status = 'deleted', deleted_at = now() WHERE backup_id = $1",
                    &[&id],
                )
                .await?;
            report.deleted.push(id);
        }
        self.db
            .execute(
                "DELETE FROM backup_history WHERE status = 'failed' AND started_at < now() - make_interval(secs => $1)",
                &[&policy.full.as_secs_f64()],
            )
            .await?;
        Ok(report)
    }

    /// When the newest completed backup of a type finished.
    pub async fn last_completed(&self, backup_type: &str) -> Result<Option<DateTime<Utc>>> {
        let row = self
            .db
            .query_opt(
                "SELECT max(finished_at) FROM backup_history WHERE status = 'completed' AND backup_type = $1",
                &[&backup_type],
            )
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Backups recorded in `backup_history`, newest first.
    pub async fn list(&self) -> Result<Vec<BackupInfo>> {
        let rows = self
            .db
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

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::Io(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
