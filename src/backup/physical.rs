//! Physical backups of a whole PostgreSQL cluster: base backups taken over the replication
//! protocol (`pg_basebackup`), and incremental and differential backups made of the WAL the
//! cluster wrote since.
//!
//! - **full** (`base-…`): `pg_basebackup --format=tar --wal-method=fetch` streamed through zstd
//!   and the chunk sealer into `base.tar.zst.enc`. It holds every file of the cluster plus the WAL
//!   written while it was taken, so it restores on its own to the moment it ended.
//! - **incremental** (`incr-…`): every WAL segment from where the previous physical backup (of
//!   any type) stopped up to now, taken from the WAL archive into `wal.tar.zst.enc`. Restoring it
//!   needs the full backup and every backup between the two.
//! - **differential** (`diff-…`): every WAL segment from where the last full backup stopped up
//!   to now. Restoring it needs the full backup and this one only.
//!
//! Incremental and differential backups are made of WAL, not of changed data files: their size
//! follows the volume written, and a restore replays it. They make a restore independent of the
//! WAL archive (which retention may have trimmed), up to the moment they were taken.

use super::kind::PhysicalKind;
use super::manager::{BackupManager, ZSTD_LEVEL};
use super::manifest::{manifest_context, FileEntry, Manifest, PhysicalInfo};
use super::pgtool::{pg_tool, pipe_into_store};
use super::wal::{format_lsn, parse_lsn, segment_name};
use crate::crypto::envelope::Key;
use crate::error::{Error, Result};
use chrono::Utc;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) const BASE_FILE: &str = "base.tar.zst.enc";
pub(crate) const WAL_FILE: &str = "wal.tar.zst.enc";
/// How long an incremental or differential backup waits for the archiver.
const ARCHIVE_WAIT: Duration = Duration::from_secs(120);

/// Watches a tar stream go by: keeps `backup_label` and the names of the WAL segments under
/// `pg_wal/`.
struct TarWatch<R> {
    inner: R,
    header: Vec<u8>,
    /// Bytes of the current member's data (padded to 512) still to pass.
    remaining: u64,
    capture: Option<Vec<u8>>,
    capture_left: u64,
    backup_label: Option<String>,
    segments: Vec<String>,
}

impl<R: Read> TarWatch<R> {
    fn new(inner: R) -> Self {
        TarWatch {
            inner,
            header: Vec::with_capacity(512),
            remaining: 0,
            capture: None,
            capture_left: 0,
            backup_label: None,
            segments: Vec::new(),
        }
    }

    fn on_header(&mut self) {
        let h = &self.header;
        let field = |a: usize, b: usize| {
            let f = &h[a..b];
            let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).to_string()
        };
        let mut name = field(0, 100);
        if &h[257..262] == b"ustar" {
            let prefix = field(345, 500);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let size = u64::from_str_radix(field(124, 136).trim(), 8).unwrap_or(0);
        let regular = h[156] == b'0' || h[156] == 0;
        let name = name.trim_start_matches("./").to_string();
        self.remaining = size.div_ceil(512) * 512;
        if regular && name == "backup_label" {
            self.capture = Some(Vec::with_capacity(size as usize));
            self.capture_left = size;
        }
        if regular {
            if let Some(seg) = name.strip_prefix("pg_wal/") {
                if super::wal::check_name(seg).is_ok() && !seg.contains('.') {
                    self.segments.push(seg.to_string());
                }
            }
        }
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining == 0 {
                let n = (512 - self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.header.len() == 512 {
                    if self.header.iter().any(|&b| b != 0) {
                        self.on_header();
                    }
                    self.header.clear();
                }
            } else {
                let n = (self.remaining as usize).min(data.len());
                if let Some(buf) = &mut self.capture {
                    let k = (self.capture_left as usize).min(n);
                    buf.extend_from_slice(&data[..k]);
                    self.capture_left -= k as u64;
                    if self.capture_left == 0 {
                        self.backup_label = Some(String::from_utf8_lossy(buf).to_string());
                        self.capture = None;
                    }
                }
                self.remaining -= n as u64;
                data = &data[n..];
            }
        }
    }
}

impl<R: Read> Read for TarWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

/// Counts what is written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The value after `label` on the line of `text` that holds it.
fn after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim()))
}

impl BackupManager {
    /// Takes a physical backup of the cluster the configured database lives on.
    ///
    /// Needs a role with the REPLICATION attribute (or a superuser) and a `pg_hba.conf` entry
    /// for replication connections. Incremental and differential backups also need continuous
    /// archiving into this repository (`archive_command = 'rsdb --config FILE wal-push %p'`),
    /// and a full physical backup to build on; they refuse to cross a timeline change.
    pub async fn create_physical(&self, kind: PhysicalKind) -> Result<Manifest> {
        let r = self.create_physical_counted(kind).await;
        crate::metrics::library::backup_outcome(r.is_ok());
        r
    }

    async fn create_physical_counted(&self, kind: PhysicalKind) -> Result<Manifest> {
        let started = Utc::now();
        let backup_id = Self::new_id(kind.id_prefix())?;
        let parent = match kind {
            PhysicalKind::Full => None,
            PhysicalKind::Incremental => Some(self.last_physical(false).await?),
            PhysicalKind::Differential => Some(self.last_physical(true).await?),
        };
        let method = if kind == PhysicalKind::Full { "pg_basebackup" } else { "wal" };
        self.history_start(&backup_id, kind.as_str(), method, parent.as_ref().map(|p| p.backup_id.as_str())).await?;
        let result = match &parent {
            None => self.create_base(&backup_id, started).await,
            Some(p) => self.create_wal_backup(&backup_id, kind, p, started).await,
        };
        self.history_finish(&backup_id, &result).await?;
        if let Ok(m) = &result {
            if kind == PhysicalKind::Full {
                // The gap history says which backup ended each gap; the repository's own
                // record is read against its backups whenever it is listed.
                if let Err(e) = self.close_wal_gaps(m).await {
                    eprintln!("rsdb: WARNING: could not mark the WAL gaps backup {} closes: {e}", m.backup_id);
                }
            }
        }
        result
    }

    /// The newest completed physical backup (of any type, or full only), read from the
    /// repository and authenticated.
    async fn last_physical(&self, full_only: bool) -> Result<Manifest> {
        let row = self
            .db()?
            .query_opt(
                "SELECT backup_id FROM backup_history
                 WHERE status = 'completed' AND method IN ('pg_basebackup', 'wal')
                   AND ($1 = false OR backup_type = 'full')
                 ORDER BY finished_at DESC, id DESC LIMIT 1",
                &[&full_only],
            )
            .await?;
        let id: String = row.map(|r| r.get(0)).ok_or_else(|| {
            Error::State("no completed physical full backup to build on: take a full physical backup first".into())
        })?;
        self.manifest(&id)
    }

    async fn cluster_facts(&self) -> Result<(String, String, u64, String)> {
        let rows = self
            .db()?
            .query(
                "SELECT current_database()::text, current_setting('server_version'),
                        (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
                        (SELECT system_identifier::text FROM pg_control_system())",
                &[],
            )
            .await?;
        Ok((rows[0].get(0), rows[0].get(1), rows[0].get::<_, i64>(2) as u64, rows[0].get(3)))
    }

    #[allow(clippy::too_many_arguments)]
    fn new_manifest(
        &self,
        backup_id: &str,
        kind: PhysicalKind,
        method: &str,
        facts: &(String, String, u64, String),
        started: chrono::DateTime<Utc>,
        key_id: String,
        wrapped: Vec<u8>,
        files: Vec<FileEntry>,
        physical: PhysicalInfo,
    ) -> Manifest {
        Manifest {
            format: 1,
            backup_id: backup_id.into(),
            backup_type: kind.as_str().into(),
            method: method.into(),
            database: facts.0.clone(),
            server_version: facts.1.clone(),
            started_at: started,
            finished_at: Utc::now(),
            compression: format!("zstd level {ZSTD_LEVEL}"),
            encryption: "aes-256-gcm, 1 MiB authenticated chunks".into(),
            key_id,
            wrapped_key: hex::encode(wrapped),
            files,
            row_counts: Default::default(),
            physical: Some(physical),
        }
    }

    async fn create_base(&self, backup_id: &str, started: chrono::DateTime<Utc>) -> Result<Manifest> {
        let facts = self.cluster_facts().await?;
        let key = Key::generate()?;
        let (key_id, wrapped) = self.keyring.seal(&manifest_context(backup_id), key.as_bytes())?;
        let url = self.cfg.require_database_url()?.to_string();
        let tool = pg_tool(&self.cfg, "pg_basebackup");
        let (bid, this) = (backup_id.to_string(), self.clone());
        let (entry, label, segments, stderr) =
            tokio::task::spawn_blocking(move || -> Result<(FileEntry, String, Vec<String>, String)> {
                let mut cmd = Command::new(&tool);
                cmd.args([
                    "--pgdata=-",
                    "--format=tar",
                    "--wal-method=fetch",
                    "--checkpoint=fast",
                    "--verbose",
                    "--no-password",
                    "--label",
                    &bid,
                    "--dbname",
                    &url,
                ]);
                let ((entry, watch), err) = pipe_into_store(cmd, |stdout| {
                    let mut watch = TarWatch::new(stdout);
                    let report_to = this.clone();
                    let id2 = bid.clone();
                    let mut done = 0u64;
                    let mut last = 0u64;
                    let entry = this.store_with(&bid, BASE_FILE, &key, &mut |w| {
                        let mut buf = vec![0u8; 256 * 1024];
                        loop {
                            let n = watch.read(&mut buf)?;
                            if n == 0 {
                                return Ok(done);
                            }
                            w.write_all(&buf[..n])?;
                            done += n as u64;
                            if done - last >= 64 << 20 {
                                last = done;
                                report_to.report(&id2, "backup", done, None, "pg_basebackup".into());
                            }
                        }
                    })?;
                    Ok((entry, watch))
                })?;
                let label = watch
                    .backup_label
                    .ok_or_else(|| Error::Io("pg_basebackup's output holds no backup_label".into()))?;
                Ok((entry, label, watch.segments, err))
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;

        // "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)" and
        // "write-ahead log end point: 0/2000100".
        let start_lsn = after(&label, "START WAL LOCATION:")
            .and_then(|v| v.split_whitespace().next())
            .ok_or_else(|| Error::Io("backup_label has no START WAL LOCATION".into()))?
            .to_string();
        let timeline: u32 = after(&label, "START TIMELINE:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Io("backup_label has no START TIMELINE".into()))?;
        let stop_lsn = after(&stderr, "write-ahead log end point:")
            .map(str::to_string)
            .ok_or_else(|| Error::Io(format!("pg_basebackup did not report its end point: {}", stderr.trim())))?;
        let seg_size = facts.2;
        let physical = PhysicalInfo {
            parent_backup_id: None,
            base_backup_id: backup_id.into(),
            timeline,
            start_wal: segment_name(timeline, parse_lsn(&start_lsn)?, seg_size),
            stop_wal: segment_name(timeline, parse_lsn(&stop_lsn)?, seg_size),
            start_lsn,
            stop_lsn,
            wal_segment_size: seg_size,
            system_identifier: facts.3.clone(),
            wal_segments: segments,
        };
        let m = self.new_manifest(
            backup_id,
            PhysicalKind::Full,
            "pg_basebackup tar with the WAL needed for consistency",
            &facts,
            started,
            key_id,
            wrapped,
            vec![entry],
            physical,
        );
        self.write_manifest(&m)?;
        self.report(backup_id, "done", m.files[0].plain_bytes, None, "backup completed".into());
        Ok(m)
    }

    async fn create_wal_backup(
        &self,
        backup_id: &str,
        kind: PhysicalKind,
        parent: &Manifest,
        started: chrono::DateTime<Utc>,
    ) -> Result<Manifest> {
        let facts = self.cluster_facts().await?;
        let p = parent.physical.as_ref().ok_or_else(|| Error::Internal("parent is not physical".into()))?;
        if p.system_identifier != facts.3 {
            return Err(Error::State(format!(
                "backup {} is of another cluster (system identifier {}, this one is {})",
                parent.backup_id, p.system_identifier, facts.3
            )));
        }
        let mode: String = self.db()?.query("SHOW archive_mode", &[]).await?[0].get(0);
        if mode == "off" {
            return Err(Error::State(
                "archive_mode is off: incremental and differential backups need continuous WAL archiving \
                 (archive_mode = on, archive_command = 'rsdb --config FILE wal-push %p')"
                    .into(),
            ));
        }
        // The backup ends where WAL insertion stood just before the switch: every record that
        // started before it is complete, and the switch record (which a restore replays to
        // stop there) starts at or after it. The switch then sends the segment to the archive.
        let insert: String = self.db()?.query("SELECT pg_current_wal_insert_lsn()::text", &[]).await?[0].get(0);
        let row = self
            .db()?
            .query("SELECT pg_switch_wal()::text, (SELECT timeline_id FROM pg_control_checkpoint())", &[])
            .await?;
        let switched: String = row[0].get(0);
        let timeline = row[0].get::<_, i32>(1) as u32;
        if timeline != p.timeline {
            return Err(Error::State(format!(
                "the cluster moved from timeline {} to {timeline} since backup {} (a promotion): take a full backup",
                p.timeline, parent.backup_id
            )));
        }
        let seg_size = p.wal_segment_size;
        let (from, stop, to) = (parse_lsn(&p.stop_lsn)?, parse_lsn(&insert)?, parse_lsn(&switched)?);
        if stop <= from {
            return Err(Error::State(format!("no WAL was written since backup {}", parent.backup_id)));
        }
        let first = from / seg_size;
        let last = (to.max(stop + 1) - 1) / seg_size;
        let names: Vec<String> = (first..=last).map(|s| segment_name(timeline, s * seg_size, seg_size)).collect();
        let wal = self.wal_archive();
        self.refuse_gap_within(&names[0][8..], &names[names.len() - 1][8..]).await?;
        // Wait until the archiver has stored the last segment in this repository.
        let newest = names.last().expect("at least one segment").clone();
        let deadline = Instant::now() + ARCHIVE_WAIT;
        while wal.storage().size(&format!("{}{newest}", super::wal::PREFIX))?.is_none() {
            if Instant::now() > deadline {
                let row = self
                    .db()?
                    .query(
                        "SELECT coalesce(last_archived_wal, '-'), coalesce(last_failed_wal, '-') FROM pg_stat_archiver",
                        &[],
                    )
                    .await?;
                let (ok, failed): (String, String) = (row[0].get(0), row[0].get(1));
                return Err(Error::Timeout(format!(
                    "WAL segment {newest} did not reach the archive {} within {} s \
                     (last archived {ok}, last failed {failed}): is archive_command set to rsdb wal-push with this repository?",
                    wal.storage().location(super::wal::PREFIX),
                    ARCHIVE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let key = Key::generate()?;
        let (key_id, wrapped) = self.keyring.seal(&manifest_context(backup_id), key.as_bytes())?;
        let (bid, this, names2) = (backup_id.to_string(), self.clone(), names.clone());
        let entry = tokio::task::spawn_blocking(move || -> Result<FileEntry> {
            let mut failure = None;
            let entry = this.store_with(&bid, WAL_FILE, &key, &mut |w| {
                let mut tar = tar::Builder::new(Counting { inner: w, bytes: 0 });
                let mut total = 0u64;
                for (i, name) in names2.iter().enumerate() {
                    let data = match wal.read(name) {
                        Ok(d) => d,
                        Err(e) => {
                            let msg = format!("archived WAL {name}: {e}");
                            failure = Some(e);
                            return Err(std::io::Error::other(msg));
                        }
                    };
                    let mut h = tar::Header::new_ustar();
                    h.set_size(data.len() as u64);
                    h.set_mode(0o600);
                    h.set_mtime(Utc::now().timestamp() as u64);
                    h.set_cksum();
                    tar.append_data(&mut h, name, &data[..])?;
                    total += data.len() as u64;
                    this.report(&bid, "wal", total, None, format!("{name} ({}/{})", i + 1, names2.len()));
                }
                Ok(tar.into_inner()?.bytes)
            });
            match (entry, failure) {
                (Err(_), Some(e)) => Err(e),
                (r, _) => r,
            }
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let physical = PhysicalInfo {
            parent_backup_id: Some(parent.backup_id.clone()),
            base_backup_id: p.base_backup_id.clone(),
            timeline,
            start_lsn: p.stop_lsn.clone(),
            stop_lsn: format_lsn(stop),
            start_wal: names[0].clone(),
            stop_wal: newest,
            wal_segment_size: seg_size,
            system_identifier: facts.3.clone(),
            wal_segments: names,
        };
        let m = self.new_manifest(
            backup_id,
            kind,
            "WAL segments from the archive",
            &facts,
            started,
            key_id,
            wrapped,
            vec![entry],
            physical,
        );
        self.write_manifest(&m)?;
        self.report(backup_id, "done", m.files[0].plain_bytes, None, "backup completed".into());
        Ok(m)
    }

    /// The backups a restore of `backup_id` needs, oldest (the full backup) first, each
    /// authenticated.
    pub fn chain(&self, backup_id: &str) -> Result<Vec<Manifest>> {
        let mut chain = vec![self.manifest(backup_id)?];
        loop {
            let m = chain.last().expect("non-empty");
            let p = m.physical.as_ref().ok_or_else(|| {
                Error::invalid(format!("backup {} is a logical backup, not part of a physical chain", m.backup_id))
            })?;
            match &p.parent_backup_id {
                None => break,
                Some(parent) => {
                    if chain.len() > 10_000 {
                        return Err(Error::Integrity("backup chain loops".into()));
                    }
                    let pm = self.manifest(parent).map_err(|e| match e {
                        Error::NotFound(msg) => {
                            Error::Integrity(format!("backup {} needs {parent}, which is missing: {msg}", m.backup_id))
                        }
                        other => other,
                    })?;
                    chain.push(pm);
                }
            }
        }
        chain.reverse();
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_watch_finds_the_label_and_segments() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        add("PG_VERSION", b"15\n");
        add("backup_label", b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n");
        add("pg_wal/000000010000000000000002", &vec![7u8; 5000]);
        add("pg_wal/archive_status/000000010000000000000002.done", b"");
        let bytes = b.into_inner().unwrap();
        let mut w = TarWatch::new(&bytes[..]);
        let mut sink = Vec::new();
        // Small reads cross every boundary.
        let mut buf = [0u8; 37];
        loop {
            let n = w.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sink.extend_from_slice(&buf[..n]);
        }
        assert_eq!(sink, bytes);
        let label = w.backup_label.unwrap();
        assert_eq!(after(&label, "START WAL LOCATION:").unwrap().split_whitespace().next(), Some("0/2000028"));
        assert_eq!(w.segments, vec!["000000010000000000000002".to_string()]);
    }
}
