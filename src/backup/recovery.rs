//! Recovery: restore a logical backup into a database, restore a physical backup (plus WAL) into
//! a new data directory up to a point in time and start it, verify what was restored, and
//! test-restore into a scratch database or cluster that is dropped afterwards.

use super::cluster::{chown_tree, free_port, log_tail, postgres_ids, server_alive, start_cluster, stop_cluster};
use super::logical::RestoreReport;
use super::manager::{BackupManager, ProgressFn};
use super::manifest::Manifest;
use super::physical::{BASE_FILE, WAL_FILE};
use super::rowcount::{count_every_table, Counter};
use crate::config::Config;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How far a physical restore replays WAL.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryTarget {
    /// To the moment the backup (the last of its chain) ended; needs no WAL archive.
    EndOfBackup,
    /// To this moment: transactions committed at or before it are kept, later ones are not.
    /// Needs the WAL archive from the backup's end to the moment.
    Time(DateTime<Utc>),
    /// Through all archived WAL, following the newest timeline.
    Latest,
}

impl RecoveryTarget {
    /// The rules every face shares: a target time (RFC 3339) or `latest`, not both; neither is
    /// the end of the backup. `time_name` and `latest_name` are what the caller calls the two
    /// (`--target-time`, `target_time`), so the error speaks the caller's words.
    pub fn parse(time: Option<&str>, latest: bool, time_name: &str, latest_name: &str) -> Result<Self> {
        match (time, latest) {
            (Some(_), true) => Err(Error::invalid(format!("{time_name} and {latest_name} exclude each other"))),
            (Some(t), false) => Ok(RecoveryTarget::Time(
                DateTime::parse_from_rfc3339(t)
                    .map_err(|e| Error::invalid(format!("{time_name} {t:?}: {e} (use RFC 3339)")))?
                    .with_timezone(&Utc),
            )),
            (None, true) => Ok(RecoveryTarget::Latest),
            (None, false) => Ok(RecoveryTarget::EndOfBackup),
        }
    }
}

/// The longest a physical restore may be given to recover (a week).
const MAX_TIMEOUT_S: u64 = 7 * 86400;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct ClusterRestoreOptions {
    /// The physical backup to start from; `None` picks the newest one that ended before the
    /// target time (or the newest one).
    pub backup_id: Option<String>,
    /// A new data directory (must not exist, or be empty).
    pub data_dir: PathBuf,
    /// The port the restored server listens on (127.0.0.1); 0 picks a free one.
    pub port: u16,
    pub target: RecoveryTarget,
    /// Leave the server running after the checks (else it is stopped cleanly).
    pub keep_running: bool,
    /// How long recovery may take before it is abandoned.
    pub timeout: Duration,
    /// Restore into an existing data directory of a stopped server, writing only the blocks of
    /// files whose content differs from the backup and removing what the backup lacks (see
    /// [`DeltaReport`]); without it the directory must be new or empty.
    pub delta: bool,
}

impl ClusterRestoreOptions {
    pub fn new(data_dir: impl Into<PathBuf>, target: RecoveryTarget) -> Self {
        ClusterRestoreOptions {
            backup_id: None,
            data_dir: data_dir.into(),
            port: 0,
            target,
            keep_running: false,
            timeout: Duration::from_secs(3600),
            delta: false,
        }
    }
}

impl ClusterRestoreOptions {
    /// Options from JSON, as the C and C++ APIs pass them:
    /// `{"data_dir": "/path", "backup_id": "...", "port": 0, "target_time": "RFC 3339",
    /// "latest": false, "keep_running": false, "timeout_s": 3600, "delta": false}`; only
    /// `data_dir` is required, and `target_time` and `latest` exclude each other (neither: the
    /// end of the backup).
    pub fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let obj = v.as_object().ok_or_else(|| Error::invalid("restore options must be a JSON object"))?;
        let known = ["data_dir", "backup_id", "port", "target_time", "latest", "keep_running", "timeout_s", "delta"];
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Error::invalid(format!("unknown restore option {k:?}; known: {}", known.join(", "))));
        }
        let text_of = |k: &str| -> Result<Option<String>> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::invalid(format!("{k} must be a string"))),
            }
        };
        let flag = |k: &str| -> Result<bool> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(false),
                Some(serde_json::Value::Bool(b)) => Ok(*b),
                Some(_) => Err(Error::invalid(format!("{k} must be true or false"))),
            }
        };
        let number = |k: &str, max: u64| -> Result<Option<u64>> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(n) => n
                    .as_u64()
                    .filter(|n| *n <= max)
                    .map(Some)
                    .ok_or_else(|| Error::invalid(format!("{k} must be a whole number up to {max}"))),
            }
        };
        let mut opts = ClusterRestoreOptions::from_parts(
            text_of("data_dir")?.as_deref().unwrap_or_default(),
            text_of("backup_id")?.as_deref(),
            number("port", u16::MAX as u64)?.unwrap_or(0),
            text_of("target_time")?.as_deref(),
            flag("latest")?,
            flag("keep_running")?,
            number("timeout_s", MAX_TIMEOUT_S)?,
        )?;
        opts.delta = flag("delta")?;
        Ok(opts)
    }

    /// Options from their parts, with the checks every face shares: `data_dir` is required,
    /// `port` is at most 65535, `target_time` (RFC 3339) and `latest` exclude each other, and
    /// `timeout_s` (none: an hour) is at most a week.
    pub fn from_parts(
        data_dir: &str,
        backup_id: Option<&str>,
        port: u64,
        target_time: Option<&str>,
        latest: bool,
        keep_running: bool,
        timeout_s: Option<u64>,
    ) -> Result<Self> {
        if data_dir.is_empty() {
            return Err(Error::invalid("data_dir is required"));
        }
        let port = u16::try_from(port)
            .map_err(|_| Error::invalid(format!("port must be a whole number up to {}", u16::MAX)))?;
        let target = RecoveryTarget::parse(target_time, latest, "target_time", "latest")?;
        let mut opts = ClusterRestoreOptions::new(data_dir, target);
        opts.backup_id = backup_id.map(str::to_owned);
        opts.port = port;
        opts.keep_running = keep_running;
        if let Some(t) = timeout_s {
            if t > MAX_TIMEOUT_S {
                return Err(Error::invalid(format!("timeout_s must be a whole number up to {MAX_TIMEOUT_S}")));
            }
            opts.timeout = Duration::from_secs(t.max(1));
        }
        Ok(opts)
    }
}

/// The outcome of a physical restore.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub backup_id: String,
    /// The backups used, full backup first.
    pub chain: Vec<String>,
    pub data_dir: String,
    pub port: u16,
    pub target: String,
    /// What the server said about where recovery stopped.
    pub recovery_log: Vec<String>,
    /// Rows per table, per database, counted after recovery.
    pub databases: BTreeMap<String, BTreeMap<String, i64>>,
    pub running: bool,
    pub seconds: f64,
    /// What a delta restore changed; none for a restore into a new directory.
    pub delta: Option<DeltaReport>,
}

/// What a delta restore did to the existing data directory.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeltaReport {
    /// Files whose content already equalled the backup's: read and compared, not written.
    pub files_unchanged: u64,
    /// Files that existed with other content: only their differing blocks were written.
    pub files_changed: u64,
    /// Files the directory lacked (or held as something else), written whole.
    pub files_created: u64,
    /// Files, links and directories the backup does not hold, removed.
    pub paths_removed: u64,
    /// Bytes written into the data directory.
    pub bytes_written: u64,
    /// Bytes of the backup's files compared against the directory.
    pub bytes_compared: u64,
}
#[derive(Debug, Clone, Serialize)]
pub struct TestRestoreReport {
    pub backup_id: String,
    pub kind: String,
    pub tables_checked: usize,
    pub rows: i64,
    pub seconds: f64,
}

/// Restores backups. Works from the repository alone when the database is gone
/// ([`RecoveryManager::from_config`]).
#[derive(Debug, Clone)]
pub struct RecoveryManager {
    backups: BackupManager,
}

fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

fn conn_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Unpacks a tar stream into `dest` as `tar::Archive::unpack` does (directories last, so their
/// permissions cannot stop the files inside), handing each regular file to `flusher`.
fn unpack_flushing<R: std::io::Read>(ar: &mut tar::Archive<R>, dest: &Path, flusher: &Flusher) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut directories = Vec::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => directories.push(entry),
            kind => {
                let path = entry.path()?.into_owned();
                if entry.unpack_in(dest)? && kind.is_file() {
                    flusher.add(dest.join(path));
                }
            }
        }
    }
    for mut d in directories {
        d.unpack_in(dest)?;
    }
    Ok(())
}

/// Starts the write-back of unpacked files on a thread of its own while the unpack goes on
/// (`sync_file_range`, which neither waits nor commits the journal per file), then waits for all
/// of it with one `syncfs` of the data directory's filesystem: a backup of tens of thousands of
/// small files would spend seconds in per-file fsyncs.
struct Flusher {
    tx: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("rsdb-restore-flush".into())
            .spawn(move || {
                for path in rx {
                    // Only a head start: what fails here is flushed by the syncfs at the end.
                    if let Ok(f) = std::fs::File::open(&path) {
                        start_write_back(&f);
                    }
                }
            })
            .ok();
        Flusher { tx: Some(tx), thread }
    }

    fn add(&self, path: PathBuf) {
        if let (Some(tx), Some(_)) = (&self.tx, &self.thread) {
            let _ = tx.send(path);
        }
    }

    /// Waits until everything unpacked under `root` is on disk.
    fn finish(mut self, root: &Path) -> Result<()> {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if root.is_dir() {
            sync_filesystem(root).map_err(|e| Error::Io(format!("flushing {} to disk: {e}", root.display())))?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn start_write_back(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules write-back of its dirty pages.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_write_back(_: &std::fs::File) {}

/// Everything of the filesystem holding `dir` to disk (directories included).
#[cfg(target_os = "linux")]
fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir)?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    fn walk(d: &Path) -> std::io::Result<()> {
        for e in std::fs::read_dir(d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                walk(&e.path())?;
            } else if e.file_type()?.is_file() {
                std::fs::File::open(e.path())?.sync_all()?;
            }
        }
        std::fs::File::open(d)?.sync_all()
    }
    walk(dir)
}

/// What lays one tar stream of a backup into place: the archive, where it goes, and that place
/// relative to the data directory.
type StreamUnpack<'a> = dyn FnMut(&mut tar::Archive<super::pgtool::Metered<Box<dyn std::io::Read + Send>>>, &Path, &Path) -> std::io::Result<()>
    + 'a;

/// A delta restore rewrites only a PostgreSQL data directory whose server is stopped.
fn check_delta_target(dir: &Path) -> Result<()> {
    if !dir.join("PG_VERSION").is_file() {
        return Err(Error::invalid(format!(
            "{} is not a PostgreSQL data directory (no PG_VERSION): a delta restore only rewrites one",
            dir.display()
        )));
    }
    if server_alive(dir) {
        return Err(Error::State(format!("a server is running in {}: stop it before a delta restore", dir.display())));
    }
    Ok(())
}

/// Bytes compared (and, where they differ, written) at a time by a delta restore.
const DELTA_BLOCK: usize = 64 * 1024;

/// The relative path of a tar entry, refused unless it is plain names only (no root, no `..`).
fn entry_path(raw: &Path) -> std::io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("backup entry {} leaves the data directory", raw.display()),
                ))
            }
        }
    }
    Ok(out)
}

/// Removes whatever is at `path` (file, link or directory tree), without following links.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// Writes the regular-file entry `entry` over the existing file at `path`, block by block,
/// writing only the blocks that differ, then fixes the length and mode. Returns whether
/// anything was written.
fn rewrite_differing<R: std::io::Read>(
    entry: &mut tar::Entry<R>,
    path: &Path,
    report: &mut DeltaReport,
) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::PermissionsExt;
    let size = entry.header().size()?;
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let old_len = file.metadata()?.len();
    let mut theirs = vec![0u8; DELTA_BLOCK];
    let mut ours = vec![0u8; DELTA_BLOCK];
    let mut offset = 0u64;
    let mut wrote = false;
    while offset < size {
        let n = ((size - offset) as usize).min(DELTA_BLOCK);
        entry.read_exact(&mut theirs[..n])?;
        let have = if offset < old_len {
            let want = ((old_len - offset) as usize).min(n);
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut ours[..want])?;
            want
        } else {
            0
        };
        report.bytes_compared += n as u64;
        if have != n || ours[..n] != theirs[..n] {
            file.seek(SeekFrom::Start(offset))?;
            file.write_all(&theirs[..n])?;
            report.bytes_written += n as u64;
            wrote = true;
        }
        offset += n as u64;
    }
    if old_len != size {
        file.set_len(size)?;
        wrote = true;
    }
    let mode = entry.header().mode()? & 0o7777;
    if file.metadata()?.permissions().mode() & 0o7777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(wrote)
}

/// Lays a tar stream over `dest` as a delta: files equal to the backup's are left alone, files
/// that differ get only their differing blocks, missing ones are written; every path the stream
/// holds is added to `seen` (relative to `root`, under `prefix`).
fn unpack_delta<R: std::io::Read>(
    ar: &mut tar::Archive<R>,
    dest: &Path,
    prefix: &Path,
    seen: &mut std::collections::HashSet<PathBuf>,
    flusher: &Flusher,
    report: &mut DeltaReport,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut directories = Vec::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        let rel = entry_path(&entry.path()?)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        seen.insert(prefix.join(&rel));
        let path = dest.join(&rel);
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Directory {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
                remove_any(&path)?;
            }
            directories.push(entry);
            continue;
        }
        let existing = std::fs::symlink_metadata(&path).ok();
        if kind.is_file() && existing.as_ref().is_some_and(|m| m.is_file()) {
            if rewrite_differing(&mut entry, &path, report)? {
                report.files_changed += 1;
                flusher.add(path);
            } else {
                report.files_unchanged += 1;
            }
            continue;
        }
        if kind.is_symlink() && existing.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            let target = entry.link_name()?.map(|t| t.into_owned());
            if target.is_some() && std::fs::read_link(&path).ok() == target {
                report.files_unchanged += 1;
                continue;
            }
        }
        if existing.is_some() {
            remove_any(&path)?;
        }
        if entry.unpack_in(dest)? {
            report.files_created += 1;
            report.bytes_written += entry.header().size().unwrap_or(0);
            if kind.is_file() {
                flusher.add(path);
            }
        }
    }
    for mut d in directories {
        d.unpack_in(dest)?;
    }
    Ok(())
}

/// Removes every path under `root` that is not in `keep` (relative paths), without following
/// links; returns how many were removed (a removed directory counts once).
fn remove_unlisted(root: &Path, keep: &std::collections::HashSet<PathBuf>) -> std::io::Result<u64> {
    let mut removed = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel))? {
            let e = e?;
            let child = rel.join(e.file_name());
            if !keep.contains(&child) {
                remove_any(&e.path())?;
                removed += 1;
            } else if e.file_type()?.is_dir() {
                stack.push(child);
            }
        }
    }
    Ok(removed)
}

/// The `rsdb` executable a restored server calls as its restore_command.
fn rsdb_path(cfg: &Config) -> Result<PathBuf> {
    if let Some(p) = &cfg.rsdb_path {
        return Ok(p.clone());
    }
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_name().is_some_and(|n| n == "rsdb") {
            return Ok(exe);
        }
        if let Some(dir) = exe.parent() {
            if dir.join("rsdb").is_file() {
                return Ok(dir.join("rsdb"));
            }
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("rsdb").is_file() {
            return Ok(dir.join("rsdb"));
        }
    }
    Err(Error::Config("cannot find the rsdb executable for restore_command: set rsdb_path".into()))
}

impl RecoveryManager {
    pub fn new(backups: BackupManager) -> Self {
        RecoveryManager { backups }
    }

    /// From the repository and keys alone (no database needed), for disaster recovery.
    pub fn from_config(cfg: &Config) -> Result<Self> {
        Ok(RecoveryManager { backups: BackupManager::repository_only(cfg)? })
    }

    pub fn set_progress(&mut self, callback: Option<ProgressFn>) {
        self.backups.set_progress(callback);
    }

    /// Stops the server running in `data_dir` (fast shutdown); nothing when none runs there.
    pub fn stop_cluster(&self, data_dir: &Path) -> Result<()> {
        stop_cluster(&self.backups.cfg, data_dir)
    }

    pub fn backups(&self) -> &BackupManager {
        &self.backups
    }

    /// Every backup in the repository (read from the manifests, not from the database),
    /// oldest first. Manifests that do not authenticate are skipped.
    pub fn list_repository(&self) -> Result<Vec<Manifest>> {
        self.backups.repository_manifests()
    }

    /// Restores a logical backup into an existing database (see [`BackupManager::restore`]).
    pub async fn restore_database(&self, backup_id: &str, target_url: &str) -> Result<RestoreReport> {
        self.backups.restore(backup_id, target_url).await
    }

    fn pick_backup(&self, opts: &ClusterRestoreOptions) -> Result<String> {
        if let Some(id) = &opts.backup_id {
            return Ok(id.clone());
        }
        let physical: Vec<Manifest> = self.list_repository()?.into_iter().filter(Manifest::is_physical).collect();
        let pick = match &opts.target {
            RecoveryTarget::Time(t) => physical.iter().rev().find(|m| m.finished_at <= *t),
            _ => physical.last(),
        };
        pick.map(|m| m.backup_id.clone()).ok_or_else(|| {
            Error::NotFound(match &opts.target {
                RecoveryTarget::Time(t) => format!("no physical backup ended before {t}"),
                _ => "no physical backup in the repository".into(),
            })
        })
    }

    /// Restores a physical backup (its whole chain) into a new data directory, configures
    /// recovery to the target, starts the server, waits until recovery has finished and the
    /// server is promoted, then counts every table's rows in every database. A backup that
    /// fails authentication is refused and the data directory removed; a recovery that fails
    /// leaves the data directory and its `rsdb-recovery.log` for inspection.
    pub async fn restore_cluster(&self, opts: &ClusterRestoreOptions) -> Result<ClusterReport> {
        let t0 = Instant::now();
        let backup_id = self.pick_backup(opts)?;
        let chain = self.backups.chain(&backup_id)?;
        let last = chain.last().expect("non-empty").clone();
        let info = last.physical.clone().expect("chain members are physical");
        if let RecoveryTarget::Time(t) = &opts.target {
            if *t < last.finished_at {
                return Err(Error::invalid(format!(
                    "the target {t} is before backup {backup_id} ended ({}); pick an older backup",
                    last.finished_at
                )));
            }
        }
        self.backups.refuse_gap_for_restore(&last, &opts.target)?;
        let dir = opts.data_dir.clone();
        let non_empty = dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true);
        let delta = opts.delta && non_empty;
        if non_empty && !opts.delta {
            return Err(Error::invalid(format!(
                "{} exists and is not empty (a delta restore rewrites an existing data directory)",
                dir.display()
            )));
        }
        if delta {
            check_delta_target(&dir)?;
        }
        // Everything must be there before anything is written.
        for m in &chain {
            for f in &m.files {
                let key = format!("{}/{}", m.backup_id, f.name);
                if self.backups.storage().size(&key)? != Some(f.stored_bytes) {
                    return Err(Error::Integrity(format!(
                        "backup {}: {} is missing or has the wrong size",
                        m.backup_id, f.name
                    )));
                }
            }
        }
        let port = if opts.port == 0 { free_port()? } else { opts.port };
        let created = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
        let this = self.clone();
        let (chain2, dir2) = (chain.clone(), dir.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            if delta {
                this.unpack_chain_delta(&chain2, &dir2).map(Some)
            } else {
                this.unpack_chain(&chain2, &dir2).map(|_| None)
            }
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let delta_report = match unpacked {
            Ok(r) => r,
            // A delta restore that failed leaves a directory that is neither the old cluster nor
            // the backup: it is left for inspection (and a second delta restore), not removed.
            Err(e) if delta => return Err(e),
            Err(e) => {
                if created {
                    let _ = std::fs::remove_dir_all(&dir);
                } else if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        let _ = if e.path().is_dir() {
                            std::fs::remove_dir_all(e.path())
                        } else {
                            std::fs::remove_file(e.path())
                        };
                    }
                }
                return Err(e);
            }
        };
        let target_desc = self.configure_recovery(&dir, port, &opts.target, &last, &info)?;
        let result = self.start_and_check(&dir, port, opts.timeout, &backup_id).await;
        let _ = std::fs::remove_file(dir.join("rsdb-restore.conf"));
        let (recovery_log, databases) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = self.stop_cluster(&dir);
                return Err(e);
            }
        };
        let running = if opts.keep_running {
            true
        } else {
            self.stop_cluster(&dir)?;
            false
        };
        self.backups.report(&backup_id, "done", 0, None, format!("recovered to {target_desc}"));
        Ok(ClusterReport {
            backup_id,
            chain: chain.iter().map(|m| m.backup_id.clone()).collect(),
            data_dir: dir.display().to_string(),
            port,
            target: target_desc,
            recovery_log,
            databases,
            running,
            seconds: t0.elapsed().as_secs_f64(),
            delta: delta_report,
        })
    }

    fn unpack_chain(&self, chain: &[Manifest], dir: &Path) -> Result<()> {
        // Every unpacked file is flushed to disk on a thread of its own while the unpack goes
        // on, so the disk writes behind the unpack instead of after it (the restored server's
        // start would otherwise wait for the whole data directory's write-back), and a restore
        // that reports success has its files on disk.
        let flusher = Flusher::start();
        let unpacked = self.unpack_chain_into(chain, dir, &flusher);
        let flushed = flusher.finish(dir);
        unpacked?;
        flushed
    }

    /// The delta form of [`RecoveryManager::unpack_chain`]: every member of the chain is laid
    /// over the existing directory, then whatever none of them holds is removed.
    fn unpack_chain_delta(&self, chain: &[Manifest], dir: &Path) -> Result<DeltaReport> {
        let flusher = Flusher::start();
        let mut seen = std::collections::HashSet::new();
        let mut report = DeltaReport::default();
        let laid = self.each_stream(chain, dir, &mut |ar, dest, prefix| {
            unpack_delta(ar, dest, prefix, &mut seen, &flusher, &mut report)
        });
        let removed = laid.and_then(|_| {
            remove_unlisted(dir, &seen).map_err(|e| Error::Io(format!("cleaning {}: {e}", dir.display())))
        });
        let flushed = flusher.finish(dir);
        report.paths_removed = removed?;
        flushed?;
        Ok(report)
    }

    fn unpack_chain_into(&self, chain: &[Manifest], dir: &Path, flusher: &Flusher) -> Result<()> {
        self.each_stream(chain, dir, &mut |ar, dest, _| unpack_flushing(ar, dest, flusher))
    }

    /// Opens each file of each backup of the chain as a tar stream and hands it to `unpack`
    /// with where it goes (the data directory, or its `pg_wal`) and that place relative to
    /// `dir`; reports progress, and checks that the rest of each file authenticates too.
    fn each_stream(&self, chain: &[Manifest], dir: &Path, unpack: &mut StreamUnpack<'_>) -> Result<()> {
        let total = chain.iter().flat_map(|m| m.files.iter()).fold(0u64, |t, f| t.saturating_add(f.plain_bytes));
        let mut done = 0u64;
        for m in chain {
            let key = self.backups.data_key(m)?;
            for f in &m.files {
                let dest = if f.name == BASE_FILE {
                    dir.to_path_buf()
                } else if f.name == WAL_FILE {
                    dir.join("pg_wal")
                } else {
                    return Err(Error::Integrity(format!("backup {}: unexpected file {}", m.backup_id, f.name)));
                };
                let (report_to, id, base) = (self.backups.clone(), m.backup_id.clone(), done);
                let reader = super::pgtool::Metered {
                    inner: self.backups.open_file_staged(m, &key, &f.name)?,
                    done: 0,
                    last: 0,
                    report: Box::new(move |n| {
                        report_to.report(&id, "restore", base + n, Some(total), "unpacking".into())
                    }),
                };
                let verdict = |e: std::io::Error| {
                    // The chunk reader's verdict sits below tar's own message.
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(inner) = src {
                        msg = format!("{msg}: {inner}");
                        src = inner.source();
                    }
                    if msg.contains("chunk") || msg.contains("truncated") {
                        Error::Integrity(format!("backup {}: {msg}", m.backup_id))
                    } else {
                        Error::Io(format!("unpacking backup {} into {}: {msg}", m.backup_id, dest.display()))
                    }
                };
                let mut ar = tar::Archive::new(reader);
                ar.set_preserve_permissions(true);
                ar.set_overwrite(true);
                let prefix = if f.name == WAL_FILE { Path::new("pg_wal") } else { Path::new("") };
                unpack(&mut ar, &dest, prefix).map_err(verdict)?;
                // tar stops at its end marker; the rest of the file (padding, the last chunk
                // and its end mark) must authenticate too before the backup counts as restored.
                std::io::copy(&mut ar.into_inner(), &mut std::io::sink()).map_err(verdict)?;
                done = done.saturating_add(f.plain_bytes);
                self.backups.report(&m.backup_id, "restore", done, Some(total), format!("{} unpacked", f.name));
            }
        }
        Ok(())
    }

    fn configure_recovery(
        &self,
        dir: &Path,
        port: u16,
        target: &RecoveryTarget,
        last: &Manifest,
        info: &super::manifest::PhysicalInfo,
    ) -> Result<String> {
        let cfg = &self.backups.cfg;
        for stale in ["postmaster.pid", "postmaster.opts", "standby.signal"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| Error::Io(format!("cannot write {name}: {e}")))
        };
        // A cluster whose configuration lived outside its data directory (Debian's layout)
        // gets a minimal one.
        if !dir.join("postgresql.conf").exists() {
            write("postgresql.conf", "# written by rsdb restore: the original lived outside the data directory\n")?;
        }
        if !dir.join("pg_hba.conf").exists() {
            write(
                "pg_hba.conf",
                "# written by rsdb restore\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
            )?;
        }
        // The restore command reads the repository with this configuration; it holds the
        // master key, is readable by the server's user only and is removed after recovery.
        let mut conf = String::from("# rsdb restore: read by restore_command, removed after recovery\n");
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                conf.push_str(&format!("{k} = {v}\n"));
            }
        };
        add("backup_dir", cfg.backup_dir.as_ref().map(|p| p.display().to_string()));
        add("backup_s3_url", cfg.backup_s3_url.clone());
        add("backup_s3_endpoint", cfg.backup_s3_endpoint.clone());
        add("backup_s3_region", Some(cfg.backup_s3_region.clone()));
        add("backup_s3_access_key_id", cfg.backup_s3_access_key_id.clone());
        add("backup_s3_secret_access_key", cfg.backup_s3_secret_access_key.clone());
        add("master_key", cfg.master_key.clone());
        add("master_key_id", cfg.master_key_id.clone());
        if !cfg.master_keys_old.is_empty() {
            add("master_keys_old", Some(cfg.master_keys_old.join(",")));
        }
        let conf_path = dir.join("rsdb-restore.conf");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&conf_path)
                .map_err(|e| Error::Io(format!("cannot write {}: {e}", conf_path.display())))?;
            std::io::Write::write_all(&mut f, conf.as_bytes())?;
        }
        let rsdb = rsdb_path(cfg)?;
        let restore_command = format!(
            "{} --config {} wal-fetch %f %p",
            shell_quote(&rsdb.display().to_string()),
            shell_quote(&conf_path.display().to_string())
        );
        let (target_lines, desc) = match target {
            RecoveryTarget::EndOfBackup if last.backup_type == "full" => (
                "recovery_target = 'immediate'\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'current'\n"
                    .to_string(),
                format!("the end of backup {}", last.backup_id),
            ),
            RecoveryTarget::EndOfBackup => (
                format!(
                    "recovery_target_lsn = '{}'\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'current'\n",
                    info.stop_lsn
                ),
                format!("the end of backup {} (LSN {})", last.backup_id, info.stop_lsn),
            ),
            RecoveryTarget::Time(t) => {
                let ts = t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
                (
                    format!(
                        "recovery_target_time = '{ts}'\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\n"
                    ),
                    format!("time {ts}"),
                )
            }
            RecoveryTarget::Latest => {
                ("recovery_target_timeline = 'latest'\n".to_string(), "the end of the archived WAL".to_string())
            }
        };
        let settings = format!(
            "\n# rsdb restore of {} ({})\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
             archive_mode = off\nhot_standby = on\nrestore_command = {}\n{sync}{target_lines}",
            last.backup_id,
            desc,
            conf_quote(&restore_command),
            // The unpack already flushed the directory (one syncfs): the server's start-up need
            // not fsync its files one by one again.
            sync = if cfg!(target_os = "linux") { "recovery_init_sync_method = syncfs\n" } else { "" },
        );
        let auto = dir.join("postgresql.auto.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&auto)
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", auto.display())))?;
        std::io::Write::write_all(&mut f, settings.as_bytes())?;
        write("recovery.signal", "")?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = postgres_ids() {
            chown_tree(dir, uid, gid)?;
        }
        Ok(desc)
    }

    /// The connection string for a database of the restored server: the configured user and
    /// password, on 127.0.0.1 and the restored port.
    fn restored_conn(&self, port: u16, dbname: &str) -> String {
        let parsed: Option<tokio_postgres::Config> =
            self.backups.cfg.database_url.as_deref().and_then(|u| u.parse().ok());
        let user = parsed.as_ref().and_then(|c| c.get_user().map(str::to_string)).unwrap_or_else(|| "postgres".into());
        let mut s = format!("host=127.0.0.1 port={port} dbname={} user={}", conn_quote(dbname), conn_quote(&user));
        if let Some(pw) = parsed.as_ref().and_then(|c| c.get_password()) {
            s.push_str(&format!(" password={}", conn_quote(&String::from_utf8_lossy(pw))));
        }
        s
    }

    async fn connect_restored(&self, port: u16, dbname: &str) -> Result<DatabaseManager> {
        let mut cfg = self.backups.cfg.clone();
        cfg.set("database_url", &self.restored_conn(port, dbname))?;
        cfg.set("pool_size", "1")?;
        DatabaseManager::connect(&cfg).await
    }

    /// How often a restored server is asked whether recovery has finished.
    pub const RECOVERY_POLL_MS: u64 = 50;

    async fn start_and_check(
        &self,
        dir: &Path,
        port: u16,
        timeout: Duration,
        backup_id: &str,
    ) -> Result<(Vec<String>, BTreeMap<String, BTreeMap<String, i64>>)> {
        let cfg = &self.backups.cfg;
        let log = dir.join("rsdb-recovery.log");
        start_cluster(cfg, dir, &log)?;
        let deadline = Instant::now() + timeout;
        let started = Instant::now();
        let mut seen_alive = false;
        let mut last_report = Instant::now();
        let bid = backup_id.to_string();
        loop {
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "recovery did not finish within {timeout:?}\n{}",
                    log_tail(&log, 20)
                )));
            }
            let alive = server_alive(dir);
            seen_alive |= alive;
            if (seen_alive && !alive) || (!seen_alive && started.elapsed() > Duration::from_secs(60)) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Err(Error::State(format!(
                    "recovery failed, the restored server stopped:\n{}",
                    log_tail(&log, 20)
                )));
            }
            if let Ok(db) = self.connect_restored(port, "postgres").await {
                let row =
                    db.query("SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, '')", &[]).await;
                db.close();
                if let Ok(row) = row {
                    let (in_recovery, lsn): (bool, String) = (row[0].get(0), row[0].get(1));
                    if !in_recovery {
                        break;
                    }
                    if last_report.elapsed() > Duration::from_secs(1) {
                        last_report = Instant::now();
                        self.backups.report(&bid, "recovery", 0, None, format!("replayed up to {lsn}"));
                    }
                }
            }
            // A short recovery ends within a few hundred milliseconds of the start: a coarse
            // poll would add most of a period to every restore.
            tokio::time::sleep(Duration::from_millis(Self::RECOVERY_POLL_MS)).await;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let keys = [
            "consistent recovery state reached",
            "recovery stopping",
            "redo done at",
            "last completed transaction",
            "selected new timeline",
            "archive recovery complete",
        ];
        let recovery_log: Vec<String> = text
            .lines()
            .filter(|l| keys.iter().any(|k| l.contains(k)))
            .map(|l| l.split_once("LOG:  ").map(|(_, m)| m).unwrap_or(l).trim().to_string())
            .collect();
        // Count every table of every database: reads every heap page.
        let admin = self.connect_restored(port, "postgres").await?;
        let dbs = admin
            .query("SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1", &[])
            .await?;
        admin.close();
        let mut databases = BTreeMap::new();
        for d in &dbs {
            let name: String = d.get(0);
            self.backups.report(&bid, "check", 0, None, format!("counting rows in {name}"));
            let db = self.connect_restored(port, &name).await?;
            let counts = count_every_table(Counter::Db(&db)).await;
            db.close();
            databases.insert(name, counts?);
        }
        Ok((recovery_log, databases))
    }

    /// Restores a backup into scratch space and checks it, then drops the scratch space:
    /// a logical backup into a new database on the configured server (row counts compared with
    /// the backup's), a physical one into a temporary data directory started on a free port.
    pub async fn test_restore(&self, backup_id: &str) -> Result<TestRestoreReport> {
        let t0 = Instant::now();
        let m = self.backups.manifest(backup_id)?;
        if !m.is_physical() {
            let db = self.backups.db()?;
            let scratch = format!("rsdb_check_{}", hex::encode(crate::crypto::random::bytes(6)?));
            db.execute(&format!("CREATE DATABASE {scratch}"), &[]).await?;
            let url = self.backups.cfg.require_database_url()?;
            let target = scratch_url(url, &scratch)?;
            let result = self.backups.restore(backup_id, &target).await;
            let dropped = db.execute(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"), &[]).await;
            let r = result?;
            dropped?;
            return Ok(TestRestoreReport {
                backup_id: backup_id.into(),
                kind: "logical".into(),
                tables_checked: r.tables_checked,
                rows: r.rows_restored,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        let dir = std::env::temp_dir().join(format!("rsdb-check-{}", hex::encode(crate::crypto::random::bytes(6)?)));
        let mut opts = ClusterRestoreOptions::new(&dir, RecoveryTarget::EndOfBackup);
        opts.backup_id = Some(backup_id.into());
        let result = self.restore_cluster(&opts).await;
        let _ = self.stop_cluster(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let r = result?;
        let tables = r.databases.values().map(|t| t.len()).sum();
        let rows = r.databases.values().flat_map(|t| t.values()).sum();
        Ok(TestRestoreReport {
            backup_id: backup_id.into(),
            kind: "physical".into(),
            tables_checked: tables,
            rows,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// `url` with its database replaced by `dbname` (URL or key/value form).
fn scratch_url(url: &str, dbname: &str) -> Result<String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (head, query) = match url.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (url, None),
        };
        let scheme_end = head.find("://").expect("checked") + 3;
        let base = match head[scheme_end..].find('/') {
            Some(i) => &head[..scheme_end + i],
            None => head,
        };
        Ok(match query {
            Some(q) => format!("{base}/{dbname}?{q}"),
            None => format!("{base}/{dbname}"),
        })
    } else {
        Ok(format!("{url} dbname={}", conn_quote(dbname)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flushing_unpack_lays_out_files_links_and_directories_as_tar_does() {
        use std::os::unix::fs::PermissionsExt;
        let mut b = tar::Builder::new(Vec::new());
        let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_size(0);
            h.set_cksum();
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        };
        // A read-only directory listed before its file: its mode is applied after the file.
        dir(&mut b, "base/", 0o700);
        dir(&mut b, "base/ro/", 0o500);
        let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o600);
            h.set_size(body.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, path, body).unwrap();
        };
        file(&mut b, "base/ro/16384", b"heap page");
        file(&mut b, "PG_VERSION", b"15\n");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "pg_tblspc_link", "base/ro").unwrap();
        let bytes = b.into_inner().unwrap();

        let root = std::env::temp_dir().join(format!("rsdb-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let flusher = Flusher::start();
        unpack_flushing(&mut tar::Archive::new(&bytes[..]), &root, &flusher).unwrap();
        flusher.finish(&root).unwrap();
        assert_eq!(std::fs::read(root.join("base/ro/16384")).unwrap(), b"heap page");
        assert_eq!(std::fs::read(root.join("PG_VERSION")).unwrap(), b"15\n");
        assert_eq!(std::fs::read_link(root.join("pg_tblspc_link")).unwrap(), Path::new("base/ro"));
        let mode = std::fs::metadata(root.join("base/ro")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o500);
        std::fs::set_permissions(root.join("base/ro"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Every path under `root` with its kind and content, for comparing two trees.
    fn tree(root: &Path) -> BTreeMap<String, String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                let what = if m.file_type().is_symlink() {
                    format!("link {}", std::fs::read_link(e.path()).unwrap().display())
                } else if m.is_dir() {
                    stack.push(e.path());
                    format!("dir {:o}", m.permissions().mode() & 0o777)
                } else {
                    let body = std::fs::read(e.path()).unwrap();
                    format!("file {:o} {} {:x}", m.permissions().mode() & 0o777, body.len(), md5_like(&body))
                };
                out.insert(rel, what);
            }
        }
        out
    }

    fn md5_like(b: &[u8]) -> u64 {
        b.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ *x as u64).wrapping_mul(0x100000001b3))
    }

    #[test]
    fn a_delta_unpack_writes_only_differing_blocks_and_leaves_the_tree_a_full_unpack_leaves() {
        let big: Vec<u8> = (0..(5 * DELTA_BLOCK + 123)).map(|i| (i % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, body: &[u8], mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(body.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, path, body).unwrap();
        };
        add("PG_VERSION", tar::EntryType::Regular, b"15\n", 0o600);
        add("base/", tar::EntryType::Directory, b"", 0o700);
        add("base/1/", tar::EntryType::Directory, b"", 0o700);
        add("base/1/big", tar::EntryType::Regular, &big, 0o600);
        add("base/1/same", tar::EntryType::Regular, b"unchanged", 0o600);
        add("base/1/new", tar::EntryType::Regular, b"the directory lacks it", 0o600);
        add("base/1/was_a_dir", tar::EntryType::Regular, b"a file again", 0o600);
        add("base/1/shrunk", tar::EntryType::Regular, b"short", 0o600);
        add("pg_wal/", tar::EntryType::Directory, b"", 0o700);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "link", "base/1").unwrap();
        let bytes = b.into_inner().unwrap();

        let root = std::env::temp_dir().join(format!("rsdb-delta-{}-{}", std::process::id(), rand::random::<u32>()));
        let (full, drifted) = (root.join("full"), root.join("drifted"));
        let flusher = Flusher::start();
        unpack_flushing(&mut tar::Archive::new(&bytes[..]), &full, &flusher).unwrap();
        unpack_flushing(&mut tar::Archive::new(&bytes[..]), &drifted, &flusher).unwrap();
        flusher.finish(&root).unwrap();
        // Drift: one block of the big file changed, a file grew, another replaced by a
        // directory, one removed, files and a directory added, the link pointed elsewhere.
        let mut changed = big.clone();
        changed[2 * DELTA_BLOCK + 7] ^= 0xff;
        std::fs::write(drifted.join("base/1/big"), &changed).unwrap();
        std::fs::write(drifted.join("base/1/shrunk"), b"much longer than the backup's").unwrap();
        std::fs::remove_file(drifted.join("base/1/was_a_dir")).unwrap();
        std::fs::create_dir_all(drifted.join("base/1/was_a_dir/inner")).unwrap();
        std::fs::remove_file(drifted.join("base/1/new")).unwrap();
        std::fs::write(drifted.join("base/1/stray"), b"not in the backup").unwrap();
        std::fs::create_dir_all(drifted.join("stray_dir/x")).unwrap();
        std::fs::write(drifted.join("pg_wal/000000010000000000000009"), b"old wal").unwrap();
        std::fs::remove_file(drifted.join("link")).unwrap();
        std::os::unix::fs::symlink("elsewhere", drifted.join("link")).unwrap();
        assert_ne!(tree(&full), tree(&drifted));

        let flusher = Flusher::start();
        let mut seen = std::collections::HashSet::new();
        let mut report = DeltaReport::default();
        unpack_delta(&mut tar::Archive::new(&bytes[..]), &drifted, Path::new(""), &mut seen, &flusher, &mut report)
            .unwrap();
        report.paths_removed = remove_unlisted(&drifted, &seen).unwrap();
        flusher.finish(&drifted).unwrap();
        assert_eq!(tree(&full), tree(&drifted), "the same tree as a full unpack");
        assert_eq!(report.files_unchanged, 2, "PG_VERSION and same: {report:?}");
        assert_eq!(report.files_changed, 2, "big and shrunk: {report:?}");
        assert_eq!(report.files_created, 3, "new, was_a_dir and the link: {report:?}");
        assert_eq!(report.paths_removed, 3, "stray, stray_dir and the old WAL: {report:?}");
        // One block of the big file, the shrunk file's block, and the three created.
        let created = b"the directory lacks it".len() + b"a file again".len();
        assert_eq!(report.bytes_written, (DELTA_BLOCK + 5 + created) as u64, "{report:?}");
        assert_eq!(report.bytes_compared, (big.len() + 3 + 9 + 5) as u64);
        // A second delta over the restored tree writes nothing.
        let flusher = Flusher::start();
        let mut again = DeltaReport::default();
        let mut seen = std::collections::HashSet::new();
        unpack_delta(&mut tar::Archive::new(&bytes[..]), &drifted, Path::new(""), &mut seen, &flusher, &mut again)
            .unwrap();
        flusher.finish(&drifted).unwrap();
        assert_eq!((again.bytes_written, again.files_changed, again.files_created), (0, 0, 0), "{again:?}");
        // Entries that leave the directory are refused.
        assert!(entry_path(Path::new("../etc/passwd")).is_err());
        assert!(entry_path(Path::new("/etc/passwd")).is_err());
        assert_eq!(entry_path(Path::new("./base/1")).unwrap(), Path::new("base/1"));
        // Only a stopped PostgreSQL data directory is rewritten.
        let err = check_delta_target(&root).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("PG_VERSION")), "{err}");
        check_delta_target(&drifted).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn one_target_rule_for_every_face() {
        assert_eq!(RecoveryTarget::parse(None, false, "t", "l").unwrap(), RecoveryTarget::EndOfBackup);
        assert_eq!(RecoveryTarget::parse(None, true, "t", "l").unwrap(), RecoveryTarget::Latest);
        assert!(matches!(
            RecoveryTarget::parse(Some("2026-11-25T10:15:00Z"), false, "t", "l").unwrap(),
            RecoveryTarget::Time(_)
        ));
        let both = RecoveryTarget::parse(Some("2026-11-25T10:15:00Z"), true, "--target-time", "--latest");
        assert!(both.unwrap_err().to_string().contains("--target-time and --latest exclude each other"));
        let bad = RecoveryTarget::parse(Some("yesterday"), false, "--target-time", "--latest").unwrap_err();
        assert!(bad.to_string().contains("--target-time \"yesterday\""), "{bad}");
    }

    #[test]
    fn options_from_json() {
        let o = ClusterRestoreOptions::from_json(
            r#"{"data_dir":"/x","backup_id":"base-1","port":5999,"target_time":"2026-11-25T10:00:00Z","keep_running":true}"#,
        )
        .unwrap();
        assert_eq!(o.data_dir, PathBuf::from("/x"));
        assert_eq!(o.port, 5999);
        assert!(o.keep_running);
        assert!(matches!(o.target, RecoveryTarget::Time(_)));
        assert_eq!(
            ClusterRestoreOptions::from_json(r#"{"data_dir":"/x","latest":true}"#).unwrap().target,
            RecoveryTarget::Latest
        );
        for bad in [
            "[]",
            "{}",
            r#"{"data_dir":""}"#,
            r#"{"data_dir":"/x","port":70000}"#,
            r#"{"data_dir":"/x","latest":true,"target_time":"2026-11-25T10:00:00Z"}"#,
            r#"{"data_dir":"/x","target_time":"yesterday"}"#,
            r#"{"data_dir":"/x","colour":"blue"}"#,
            "not json",
        ] {
            assert!(ClusterRestoreOptions::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restore_options_refuse_unknown_keys_wrong_types_and_bad_targets_naming_the_option() {
        let d = r#""data_dir":"/x""#;
        for (text, needle) in [
            ("{}".to_owned(), "data_dir"),
            (r#"{"backup_id":"base-x"}"#.to_owned(), "data_dir"),
            (r#"{"data_dir":7}"#.to_owned(), "data_dir must be a string"),
            (format!(r#"{{{d},"colour":"blue"}}"#), "unknown restore option \"colour\""),
            (format!(r#"{{{d},"target_time":"yesterday"}}"#), "target_time"),
            (format!(r#"{{{d},"target_time":"2026-11-25 10:00"}}"#), "target_time"),
            (format!(r#"{{{d},"latest":true,"target_time":"2026-11-25T10:00:00+01:00"}}"#), "exclude"),
            (format!(r#"{{{d},"latest":"yes"}}"#), "latest must be true or false"),
            (format!(r#"{{{d},"keep_running":1}}"#), "keep_running must be true or false"),
            (format!(r#"{{{d},"timeout_s":-1}}"#), "timeout_s"),
            (format!(r#"{{{d},"timeout_s":700000}}"#), "timeout_s"),
            (format!(r#"{{{d},"port":70000}}"#), "port"),
            (format!(r#"{{{d},"port":"5432"}}"#), "port"),
            (format!(r#"{{{d},"backup_id":1}}"#), "backup_id must be a string"),
            ("[\"/x\"]".to_owned(), "object"),
        ] {
            let err = ClusterRestoreOptions::from_json(&text).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{text}: {err:?}");
            assert!(err.to_string().contains(needle), "{text}: {err} should mention {needle}");
        }
        assert!(matches!(ClusterRestoreOptions::from_json("not json"), Err(Error::Json(_))));
    }

    #[test]
    fn restore_options_from_parts_apply_the_same_checks_as_from_json() {
        let t = "2026-11-25T10:15:00+05:30";
        let o = ClusterRestoreOptions::from_parts("/x", Some("base-1"), 5999, Some(t), false, true, Some(0)).unwrap();
        assert_eq!((o.data_dir.as_path(), o.backup_id.as_deref(), o.port), (Path::new("/x"), Some("base-1"), 5999));
        assert!(o.keep_running);
        assert_eq!(o.timeout, Duration::from_secs(1), "a zero timeout is one second");
        let want: DateTime<Utc> = "2026-11-25T04:45:00Z".parse().unwrap();
        assert_eq!(o.target, RecoveryTarget::Time(want), "an offset is honoured");
        let d = ClusterRestoreOptions::from_parts("/x", None, 0, None, false, false, None).unwrap();
        assert_eq!((d.target, d.timeout, d.backup_id), (RecoveryTarget::EndOfBackup, Duration::from_secs(3600), None));
        for (err, needle) in [
            (ClusterRestoreOptions::from_parts("", None, 0, None, false, false, None), "data_dir"),
            (ClusterRestoreOptions::from_parts("/x", None, 65536, None, false, false, None), "port"),
            (ClusterRestoreOptions::from_parts("/x", None, 0, Some(t), true, false, None), "exclude"),
            (
                ClusterRestoreOptions::from_parts("/x", None, 0, None, false, false, Some(MAX_TIMEOUT_S + 1)),
                "timeout_s",
            ),
        ] {
            let err = err.unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn quoting_and_urls() {
        assert_eq!(conf_quote("a'b"), "'a''b'");
        assert_eq!(shell_quote("/x y/it's"), "'/x y/it'\\''s'");
        assert_eq!(
            scratch_url("postgresql://u@h:5/db?sslmode=disable", "s").unwrap(),
            "postgresql://u@h:5/s?sslmode=disable"
        );
        assert_eq!(scratch_url("postgresql://u@h:5", "s").unwrap(), "postgresql://u@h:5/s");
        assert_eq!(scratch_url("host=h user=u", "s").unwrap(), "host=h user=u dbname='s'");
    }
}
