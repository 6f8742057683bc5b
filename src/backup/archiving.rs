//! What `wal-push` does around storing one file: it pushes the next ready files at the same time
//! (`wal_push_parallel`), and it protects the primary's disk with a bounded queue
//! (`wal_queue_max`).
//!
//! PostgreSQL's archiver hands over one file at a time and waits for each. With
//! `wal_push_parallel = N`, the push of the file it names also stores up to N − 1 other files
//! waiting in `pg_wal/archive_status` (`*.ready`), on threads of their own, and leaves a note for
//! each in the spool directory. When PostgreSQL then names one of them, the push finds the note,
//! checks that the file is still the one stored (its SHA-256), and answers at once. A file is
//! never reported archived before it is stored, so the archive holds every acknowledged file,
//! and restores fetch files by name, so the order they were stored in does not matter.
//!
//! With `wal_queue_max` set, a push first adds up the WAL waiting to be archived (every `.ready`
//! file). Past the limit, it reports the named segment archived *without storing it*, so
//! PostgreSQL can recycle it, and records a WAL gap: in the spool at once, in the database's
//! `wal_gaps` table when it answers within a few seconds, and in the repository (`wal-gaps/`)
//! before any later WAL is stored there. Point-in-time recovery across a gap is impossible;
//! restores refuse targets past it, incremental backups refuse to cross it, and the next full
//! backup closes it (see [`super::gaps`]). Timeline history files and backup labels are never
//! dropped.

use super::wal::{check_name, file_name_of, next_segment, PushOutcome, WalArchive};
use crate::config::Config;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The spool directory's name under `pg_wal` when `wal_spool_dir` is not set. PostgreSQL and
/// `pg_basebackup` leave unknown entries of `pg_wal` alone.
pub const DEFAULT_SPOOL: &str = "rsdb_spool";
/// How long a push waits for the database to take a gap's row, and how long after a failure it
/// does not try again.
const DB_WAIT: Duration = Duration::from_secs(3);
const DB_RETRY: Duration = Duration::from_secs(60);
/// With a queue limit, how long a failing push keeps retrying and watching the queue before it
/// gives the failure to PostgreSQL, and how often it looks at the queue meanwhile.
const WATCH_FOR: Duration = Duration::from_secs(30);
const WATCH_POLL: Duration = Duration::from_millis(50);

/// How `wal-push` archives: from the configuration (`wal_queue_max`, `wal_push_parallel`,
/// `wal_spool_dir`, and `database_url` for the gap history).
#[derive(Debug, Clone, Default)]
pub struct ArchiveSettings {
    /// Bytes of WAL that may wait to be archived before segments are dropped; 0: never drop.
    pub queue_max: u64,
    /// Files stored at once (the named one and the next ready ones); 1: only the named one.
    pub parallel: usize,
    /// The spool directory; `None`: `pg_wal/rsdb_spool`.
    pub spool_dir: Option<PathBuf>,
    /// Where a gap's history row goes (best effort); `None`: the spool and the repository only.
    pub database: Option<Config>,
    /// With a limit, how long a failing push retries and watches the queue before it fails;
    /// `None`: 30 s.
    pub watch: Option<Duration>,
}

impl ArchiveSettings {
    pub fn from_config(cfg: &Config) -> Self {
        ArchiveSettings {
            queue_max: cfg.wal_queue_max,
            parallel: cfg.wal_push_parallel.max(1),
            spool_dir: cfg.wal_spool_dir.clone(),
            database: cfg.database_url.as_ref().map(|_| cfg.clone()),
            watch: None,
        }
    }

    fn watch_for(&self) -> Duration {
        self.watch.unwrap_or(WATCH_FOR)
    }
}

/// A run of consecutive WAL segments that were reported archived without being stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalGap {
    pub timeline: u32,
    pub first_segment: String,
    pub last_segment: String,
    pub segments: u64,
    pub bytes: u64,
    /// WAL written before about this moment is archived (the last segment stored before the
    /// gap was last written then, less a second); none when that segment is not known. A
    /// point-in-time restore can reach targets before it, not after.
    pub complete_before: Option<DateTime<Utc>>,
    pub first_dropped_at: DateTime<Utc>,
    pub last_dropped_at: DateTime<Utc>,
    /// The WAL waiting to be archived when the last segment was dropped, and the limit.
    pub queue_bytes: u64,
    pub limit_bytes: u64,
    /// In listings: the first full backup taken after the gap, from which recovery past the
    /// gap works.
    #[serde(default)]
    pub closed_by: Option<String>,
    /// In listings: the physical backups whose point-in-time recovery stops at this gap.
    #[serde(default)]
    pub affected_backups: Vec<String>,
}

impl WalGap {
    /// The name the gap is kept under: timeline and first segment.
    pub fn id(&self) -> String {
        format!("{:08X}-{}", self.timeline, self.first_segment)
    }

    /// The position (log and segment) of its first and last segment, for comparing with
    /// backups regardless of timeline.
    pub(crate) fn positions(&self) -> (&str, &str) {
        (&self.first_segment[8..], &self.last_segment[8..])
    }

    /// The message every refusal caused by this gap carries.
    pub fn describe(&self) -> String {
        format!(
            "WAL {}..{} ({} segments) was dropped on {} because the WAL waiting to be archived passed \
             wal_queue_max ({} bytes){}",
            self.first_segment,
            self.last_segment,
            self.segments,
            self.first_dropped_at.to_rfc3339(),
            self.limit_bytes,
            match &self.complete_before {
                Some(t) => format!("; WAL is complete up to about {}", t.to_rfc3339()),
                None => String::new(),
            }
        )
    }
}

/// What one `wal-push` did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The file PostgreSQL named.
    pub file: String,
    pub outcome: PushOutcome,
    /// Other ready files stored by this push, for PostgreSQL to find stored when it names them.
    pub pushed_ahead: Vec<String>,
    /// Other ready files whose push failed (they are pushed again when PostgreSQL names them).
    pub ahead_failed: Vec<String>,
    /// The WAL waiting to be archived when the push began (bytes of `.ready` files).
    pub queue_bytes: u64,
    /// The gap this push opened or extended (outcome `dropped`).
    pub gap: Option<WalGap>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AheadNote {
    sha256: String,
    bytes: u64,
    repository: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct LastStored {
    segment: String,
    written_at: DateTime<Utc>,
}

/// The spool directory, locked for one push at a time.
struct Spool {
    dir: PathBuf,
    _lock: std::fs::File,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("{what} {}: {e}", path.display()))
}

/// Writes `data` to `path` through a temporary file, so a reader sees all of it or none.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot write", path, e))
}

impl Spool {
    fn open(dir: PathBuf) -> Result<Self> {
        for sub in ["ahead", "gaps"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| io("cannot create", &dir.join(sub), e))?;
        }
        let path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("cannot open", &path, e))?;
        // PostgreSQL runs one archiver, but a push by hand (or through the C API) may meet it.
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor this function owns; it is released when closed.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(io("cannot lock", &path, std::io::Error::last_os_error()));
            }
        }
        Ok(Spool { dir, _lock: lock })
    }

    fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Takes the note left for `name` by a push ahead, if any (it is used once).
    fn take_ahead(&self, name: &str) -> Option<AheadNote> {
        let path = self.dir.join("ahead").join(name);
        let note = Self::read(&path);
        let _ = std::fs::remove_file(&path);
        note
    }

    fn has_ahead(&self, name: &str) -> bool {
        self.dir.join("ahead").join(name).exists()
    }

    /// Whether a file positioned after segment `name` was pushed ahead and not yet asked for.
    fn has_ahead_after(&self, name: &str) -> bool {
        std::fs::read_dir(self.dir.join("ahead")).into_iter().flatten().flatten().any(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.len() >= 24 && !n.ends_with(".tmp") && n.get(8..24) > name.get(8..24)
        })
    }

    fn note_ahead(&self, name: &str, note: &AheadNote) -> Result<()> {
        write_atomic(&self.dir.join("ahead").join(name), &serde_json::to_vec(note)?)
    }

    /// Removes notes of files that are no longer waiting (PostgreSQL archived or removed them).
    fn prune_ahead(&self, ready: &[(String, u64)]) {
        if let Ok(entries) = std::fs::read_dir(self.dir.join("ahead")) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if !ready.iter().any(|(r, _)| *r == n) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    fn last_stored(&self) -> Option<LastStored> {
        Self::read(&self.dir.join("last-stored"))
    }

    fn note_stored(&self, segment: &str, path: &Path) {
        let written_at = std::fs::metadata(path).and_then(|m| m.modified()).map(DateTime::<Utc>::from);
        if let Ok(written_at) = written_at {
            let newer = self.last_stored().map(|l| l.segment[8..] < segment[8..]).unwrap_or(true);
            if newer {
                let note = LastStored { segment: segment.into(), written_at };
                if let Ok(bytes) = serde_json::to_vec(&note) {
                    let _ = write_atomic(&self.dir.join("last-stored"), &bytes);
                }
            }
        }
    }

    fn gaps(&self) -> Vec<(PathBuf, WalGap)> {
        let mut out: Vec<(PathBuf, WalGap)> = std::fs::read_dir(self.dir.join("gaps"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| Self::read(&e.path()).map(|g| (e.path(), g)))
            .collect();
        out.sort_by(|a, b| a.1.first_segment.cmp(&b.1.first_segment));
        out
    }

    /// Records that `segment` (of `bytes`) was dropped: extends the gap that ends just before
    /// it, or opens one.
    fn record_drop(&self, segment: &str, bytes: u64, queue: u64, limit: u64) -> Result<WalGap> {
        let now = Utc::now();
        let timeline = u32::from_str_radix(&segment[..8], 16).unwrap_or(0);
        let extends =
            self.gaps().into_iter().find(|(_, g)| next_segment(&g.last_segment, bytes).as_deref() == Some(segment));
        let gap = match extends {
            Some((_, mut g)) => {
                g.last_segment = segment.into();
                g.segments += 1;
                g.bytes += bytes;
                g.last_dropped_at = now;
                g.queue_bytes = queue;
                g.limit_bytes = limit;
                g
            }
            None => {
                let complete_before = self
                    .last_stored()
                    .filter(|l| next_segment(&l.segment, bytes).as_deref() == Some(segment))
                    .map(|l| l.written_at - chrono::Duration::seconds(1));
                WalGap {
                    timeline,
                    first_segment: segment.into(),
                    last_segment: segment.into(),
                    segments: 1,
                    bytes,
                    complete_before,
                    first_dropped_at: now,
                    last_dropped_at: now,
                    queue_bytes: queue,
                    limit_bytes: limit,
                    closed_by: None,
                    affected_backups: Vec::new(),
                }
            }
        };
        write_atomic(&self.dir.join("gaps").join(format!("{}.json", gap.id())), &serde_json::to_vec_pretty(&gap)?)?;
        Ok(gap)
    }
}

/// The files waiting to be archived (a `.ready` status) and their sizes, sorted by name.
fn ready_files(pg_wal: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(pg_wal.join("archive_status"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let name = n.strip_suffix(".ready")?.to_string();
            check_name(&name).ok()?;
            let size = std::fs::metadata(pg_wal.join(&name)).ok()?.len();
            Some((name, size))
        })
        .collect();
    out.sort();
    out
}

/// Whether `name` is a WAL segment (not a history file, backup label or partial segment), the
/// only kind a full queue drops.
fn is_segment(name: &str) -> bool {
    name.len() == 24
}

impl WalArchive {
    fn drop_segment(
        &self,
        spool: &Spool,
        name: &str,
        size: u64,
        queue: u64,
        settings: &ArchiveSettings,
        report: &mut PushReport,
    ) -> Result<()> {
        let gap = spool.record_drop(name, size, queue, settings.queue_max)?;
        // Files after this one that were pushed ahead are already in the repository: it must
        // hear of the gap now, not at the next push that reaches it (it answered moments ago).
        if spool.has_ahead_after(name) {
            if let Err(e) = super::gaps::store_in_repository(self, &gap) {
                eprintln!("rsdb: the repository holds WAL after the gap but could not take its record yet: {e}");
            }
        }
        if let Some(cfg) = &settings.database {
            // A database that just failed to answer is not waited for again on every drop: the
            // drops must keep up with the WAL. The row catches up at a later drop, and the
            // repository's record (written before any later WAL) is complete regardless.
            let failed = spool.dir.join("database-failed");
            let recent = std::fs::metadata(&failed)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < DB_RETRY);
            if !recent {
                match super::gaps::record_in_database(cfg, &gap, DB_WAIT) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&failed);
                    }
                    Err(e) => {
                        eprintln!("rsdb: WARNING: the WAL gap could not be recorded in the database: {e}");
                        let _ = std::fs::write(&failed, e.to_string());
                    }
                }
            }
        }
        report.outcome = PushOutcome::Dropped;
        report.queue_bytes = queue;
        report.gap = Some(gap);
        Ok(())
    }

    /// Tells the repository of the spool's gaps, then stores `path` and, at the same time, the
    /// `ahead` files beside it, noting each one stored.
    fn store_with_ahead(
        &self,
        spool: &Spool,
        path: &Path,
        pg_wal: &Path,
        ahead: &[String],
        repository: &str,
        report: &mut PushReport,
    ) -> Result<PushOutcome> {
        let name = file_name_of(path)?;
        // The repository learns of every gap before it holds any WAL written after one.
        for (local, gap) in spool.gaps() {
            super::gaps::store_in_repository(self, &gap)?;
            // A gap that PostgreSQL has moved past is complete: the spool's copy is done with.
            if is_segment(&name) && gap.last_segment[8..] < name[8..] {
                let _ = std::fs::remove_file(local);
            }
        }
        let (own, others) = std::thread::scope(|s| {
            let handles: Vec<_> = ahead
                .iter()
                .map(|n| {
                    let p = pg_wal.join(n);
                    s.spawn(move || self.push_file(&p))
                })
                .collect();
            let own = self.push_file(path);
            let others: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a push thread panicked".into()))))
                .collect();
            (own, others)
        });
        for (n, r) in ahead.iter().zip(others) {
            match r {
                Ok((_, sha256, bytes)) => {
                    let note = AheadNote { sha256, bytes, repository: repository.to_string() };
                    if spool.note_ahead(n, &note).is_ok() {
                        report.pushed_ahead.push(n.clone());
                        if is_segment(n) {
                            spool.note_stored(n, &pg_wal.join(n));
                        }
                    }
                }
                Err(e) => {
                    eprintln!("rsdb: could not push {n} ahead (it is pushed again when PostgreSQL asks): {e}");
                    report.ahead_failed.push(n.clone());
                }
            }
        }
        Ok(own?.0)
    }

    /// Archives the file at `path` (PostgreSQL's `%p`) as `wal-push` does: with the ready files
    /// after it when `settings.parallel` > 1, and dropping it when the queue is past
    /// `settings.queue_max` (see the module documentation). Errors leave the file for PostgreSQL
    /// to retry; an error storing one of the files pushed ahead only shows in the report.
    pub fn archive(&self, path: &Path, settings: &ArchiveSettings) -> Result<PushReport> {
        let name = file_name_of(path)?;
        let pg_wal = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let spool = Spool::open(settings.spool_dir.clone().unwrap_or_else(|| pg_wal.join(DEFAULT_SPOOL)))?;
        let repository = self.storage().location("");
        let mut report = PushReport {
            file: name.clone(),
            outcome: PushOutcome::Stored,
            pushed_ahead: Vec::new(),
            ahead_failed: Vec::new(),
            queue_bytes: 0,
            gap: None,
        };
        if let Some(note) = spool.take_ahead(&name) {
            if note.repository == repository {
                let data = std::fs::read(path).map_err(|e| io("cannot read", path, e))?;
                let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
                if sha == note.sha256 && data.len() as u64 == note.bytes {
                    report.outcome = PushOutcome::PushedAhead;
                    if is_segment(&name) {
                        spool.note_stored(&name, path);
                    }
                    return Ok(report);
                }
            }
        }
        let ready = ready_files(&pg_wal);
        spool.prune_ahead(&ready);
        let own_size = std::fs::metadata(path).map_err(|e| io("cannot read", path, e))?.len();
        let queue_of = |ready: &[(String, u64)]| {
            ready.iter().map(|(_, s)| s).sum::<u64>() + if ready.iter().any(|(n, _)| *n == name) { 0 } else { own_size }
        };
        report.queue_bytes = queue_of(&ready);
        let limited = settings.queue_max > 0 && is_segment(&name);
        if limited && report.queue_bytes > settings.queue_max {
            self.drop_segment(&spool, &name, own_size, report.queue_bytes, settings, &mut report)?;
            return Ok(report);
        }
        let ahead: Vec<String> = if settings.parallel > 1 {
            ready
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| *n != name && !spool.has_ahead(n))
                .take(settings.parallel - 1)
                .collect()
        } else {
            Vec::new()
        };
        let mut own = self.store_with_ahead(&spool, path, &pg_wal, &ahead, &repository, &mut report);
        // With a limit, a failing repository is watched rather than given up on at once: while
        // PostgreSQL waits to retry, WAL would pile up unseen. The push retries every second and
        // drops the segment as soon as the queue passes the limit.
        if limited && own.is_err() {
            let started = std::time::Instant::now();
            let mut last_try = started;
            while own.is_err() && started.elapsed() < settings.watch_for() {
                std::thread::sleep(WATCH_POLL);
                let queue = queue_of(&ready_files(&pg_wal));
                if queue > settings.queue_max {
                    report.queue_bytes = queue;
                    if let Err(e) = &own {
                        eprintln!("rsdb: pushing {name} failed ({e}) and the queue is past wal_queue_max");
                    }
                    self.drop_segment(&spool, &name, own_size, queue, settings, &mut report)?;
                    return Ok(report);
                }
                if last_try.elapsed() >= Duration::from_secs(1) {
                    last_try = std::time::Instant::now();
                    own = self.store_with_ahead(&spool, path, &pg_wal, &[], &repository, &mut report);
                }
            }
        }
        report.outcome = own?;
        if is_segment(&name) {
            spool.note_stored(&name, path);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::storage::{LocalStorage, Storage};
    use crate::crypto::envelope::{Key, Keyring};
    use std::sync::Arc;

    struct Cluster {
        dir: PathBuf,
        archive: WalArchive,
        seg: u64,
    }

    impl Cluster {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("rsdb-arch-{}-{}", std::process::id(), rand::random::<u32>()));
            std::fs::create_dir_all(dir.join("pg_wal/archive_status")).unwrap();
            let keyring = Keyring::new("k1", Key::generate().unwrap()).unwrap();
            let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.join("repo")));
            Cluster { archive: WalArchive::new(storage, keyring), dir, seg: 4096 }
        }

        fn name(&self, n: u64) -> String {
            crate::backup::wal::segment_name(1, n * self.seg, self.seg)
        }

        /// Writes segment `n` and marks it ready, as PostgreSQL does when it switches.
        fn ready(&self, n: u64) -> PathBuf {
            let name = self.name(n);
            let path = self.dir.join("pg_wal").join(&name);
            std::fs::write(&path, vec![n as u8; self.seg as usize]).unwrap();
            std::fs::write(self.dir.join("pg_wal/archive_status").join(format!("{name}.ready")), b"").unwrap();
            path
        }

        /// What PostgreSQL does after a push succeeded.
        fn done(&self, n: u64) {
            let s = self.dir.join("pg_wal/archive_status");
            let name = self.name(n);
            std::fs::rename(s.join(format!("{name}.ready")), s.join(format!("{name}.done"))).unwrap();
        }

        fn stored(&self, n: u64) -> bool {
            self.dir.join("repo/wal").join(self.name(n)).exists()
        }

        fn break_repository(&self) {
            std::fs::create_dir_all(self.dir.join("repo")).unwrap();
            std::fs::rename(self.dir.join("repo"), self.dir.join("repo-away")).unwrap();
            // A file where the repository's directory was: every store fails.
            std::fs::write(self.dir.join("repo"), b"not a directory").unwrap();
        }

        fn mend_repository(&self) {
            std::fs::remove_file(self.dir.join("repo")).unwrap();
            std::fs::rename(self.dir.join("repo-away"), self.dir.join("repo")).unwrap();
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn pushes_ahead_answer_later_pushes_without_storing_again() {
        let c = Cluster::new();
        let paths: Vec<PathBuf> = (1..=5).map(|n| c.ready(n)).collect();
        let settings = ArchiveSettings { parallel: 3, ..Default::default() };
        let r = c.archive.archive(&paths[0], &settings).unwrap();
        assert_eq!(r.outcome, PushOutcome::Stored);
        assert_eq!(r.pushed_ahead, vec![c.name(2), c.name(3)]);
        assert_eq!(r.queue_bytes, 5 * c.seg);
        assert!(c.stored(1) && c.stored(2) && c.stored(3) && !c.stored(4));
        c.done(1);
        assert_eq!(c.archive.archive(&paths[1], &settings).unwrap().outcome, PushOutcome::PushedAhead);
        c.done(2);
        // A file changed since it was pushed ahead is not taken for stored: the push compares
        // it with the archive, which refuses the different contents.
        std::fs::write(&paths[2], b"rewritten").unwrap();
        let err = c.archive.archive(&paths[2], &settings).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        std::fs::write(&paths[2], vec![3u8; c.seg as usize]).unwrap();
        assert_eq!(c.archive.archive(&paths[2], &settings).unwrap().outcome, PushOutcome::AlreadyArchived);
        c.done(3);
        // The push that failed on 3 still stored 4 and 5 ahead.
        assert_eq!(c.archive.archive(&paths[3], &settings).unwrap().outcome, PushOutcome::PushedAhead);
        c.done(4);
        // Every file reads back as it was.
        for n in 1..=5u64 {
            assert_eq!(c.archive.read(&c.name(n)).unwrap(), vec![n as u8; c.seg as usize]);
        }
        // A note left for another repository is not trusted.
        let other = WalArchive::new(
            Arc::new(LocalStorage::new(c.dir.join("repo2"))),
            Keyring::new("k1", Key::generate().unwrap()).unwrap(),
        );
        assert_eq!(other.archive(&paths[4], &settings).unwrap().outcome, PushOutcome::Stored);
        assert!(c.dir.join("repo2/wal").join(c.name(5)).exists());
    }

    #[test]
    fn a_full_queue_drops_segments_records_one_gap_and_tells_the_repository_first() {
        let c = Cluster::new();
        let watch = Some(Duration::from_millis(200));
        let settings = ArchiveSettings { queue_max: 3 * c.seg, watch, ..Default::default() };
        let p1 = c.ready(1);
        assert_eq!(c.archive.archive(&p1, &settings).unwrap().outcome, PushOutcome::Stored);
        c.done(1);
        c.break_repository();
        // Under the limit a failing repository fails the push: PostgreSQL keeps the segment.
        let paths: Vec<PathBuf> = (2..=4).map(|n| c.ready(n)).collect();
        assert!(c.archive.archive(&paths[0], &settings).is_err());
        // Past it the oldest segments are dropped, one gap growing, until the queue is back
        // under the limit.
        c.ready(5);
        c.ready(6);
        let r = c.archive.archive(&paths[0], &settings).unwrap();
        assert_eq!((r.outcome, r.queue_bytes), (PushOutcome::Dropped, 5 * c.seg));
        c.done(2);
        let r = c.archive.archive(&paths[1], &settings).unwrap();
        assert_eq!(r.outcome, PushOutcome::Dropped);
        c.done(3);
        let gap = r.gap.unwrap();
        assert_eq!((gap.first_segment.as_str(), gap.last_segment.as_str()), (c.name(2).as_str(), c.name(3).as_str()));
        assert_eq!((gap.segments, gap.bytes, gap.limit_bytes), (2, 2 * c.seg, 3 * c.seg));
        let before = gap.complete_before.expect("segment 1 was stored just before");
        assert!(before <= gap.first_dropped_at);
        assert!(c.archive.archive(&paths[2], &settings).is_err(), "at the limit again: kept");
        // History files are never dropped, whatever the queue.
        let history = c.dir.join("pg_wal/00000002.history");
        std::fs::write(&history, b"1\t0/5000000\tno recovery target specified\n").unwrap();
        assert!(c.archive.archive(&history, &ArchiveSettings { queue_max: 1, watch, ..Default::default() }).is_err());
        c.mend_repository();
        // The first push after the repository returns stores the gap before the segment.
        assert_eq!(c.archive.archive(&paths[2], &settings).unwrap().outcome, PushOutcome::Stored);
        let gaps = crate::backup::gaps::in_repository(&c.archive).unwrap();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].first_segment, c.name(2));
        assert_eq!(gaps[0].last_segment, c.name(3));
        assert!(!c.stored(2) && !c.stored(3) && c.stored(4));
        assert!(
            std::fs::read_dir(c.dir.join("pg_wal/rsdb_spool/gaps")).unwrap().next().is_none(),
            "spool copy done with"
        );
        // A later drop after stored WAL opens a second gap.
        c.done(4);
        let paths: Vec<PathBuf> = (7..=9).map(|n| c.ready(n)).collect();
        let r = c.archive.archive(&c.dir.join("pg_wal").join(c.name(5)), &settings).unwrap();
        assert_eq!(r.outcome, PushOutcome::Dropped);
        assert!(r.gap.unwrap().complete_before.is_some(), "segment 4 was stored just before 5");
        c.done(5);
        assert_eq!(
            c.archive.archive(&c.dir.join("pg_wal").join(c.name(6)), &settings).unwrap().outcome,
            PushOutcome::Dropped
        );
        c.done(6);
        assert_eq!(c.archive.archive(&paths[0], &settings).unwrap().outcome, PushOutcome::Stored);
        let gaps = crate::backup::gaps::in_repository(&c.archive).unwrap();
        assert_eq!(
            gaps.iter().map(|g| (g.first_segment.clone(), g.segments)).collect::<Vec<_>>(),
            vec![(c.name(2), 2), (c.name(5), 2)]
        );
    }

    #[test]
    fn a_drop_behind_files_pushed_ahead_tells_the_repository_at_once() {
        let c = Cluster::new();
        // Segment 2 is archived with other contents, so its own push fails (a conflict) while
        // the push of 3 and 4 ahead of it succeeds.
        let p2 = c.ready(2);
        c.archive.push(&p2).unwrap();
        std::fs::write(&p2, b"different contents").unwrap();
        c.ready(3);
        c.ready(4);
        let ahead = ArchiveSettings { parallel: 3, ..Default::default() };
        assert!(matches!(c.archive.archive(&p2, &ahead), Err(Error::Conflict(_))));
        assert!(c.stored(3) && c.stored(4));
        let limited = ArchiveSettings { queue_max: 1, parallel: 3, ..ahead };
        assert_eq!(c.archive.archive(&p2, &limited).unwrap().outcome, PushOutcome::Dropped);
        let gaps = crate::backup::gaps::in_repository(&c.archive).unwrap();
        assert_eq!(gaps.iter().map(|g| g.first_segment.as_str()).collect::<Vec<_>>(), vec![c.name(2).as_str()]);
    }

    #[test]
    fn a_database_that_fails_is_not_waited_for_on_every_drop() {
        let c = Cluster::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cfg = Config::default();
        cfg.set("database_url", &format!("postgresql://postgres@127.0.0.1:{port}/nothing")).unwrap();
        let settings = ArchiveSettings { queue_max: c.seg, database: Some(cfg), ..Default::default() };
        let paths: Vec<PathBuf> = (1..=4).map(|n| c.ready(n)).collect();
        assert_eq!(c.archive.archive(&paths[0], &settings).unwrap().outcome, PushOutcome::Dropped);
        let failed = c.dir.join("pg_wal/rsdb_spool/database-failed");
        let first = std::fs::metadata(&failed).expect("the failure is noted").modified().unwrap();
        c.done(1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.archive.archive(&paths[1], &settings).unwrap().outcome, PushOutcome::Dropped);
        assert_eq!(std::fs::metadata(&failed).unwrap().modified().unwrap(), first, "not tried again at once");
        let gap = c.archive.archive(&paths[2], &settings).unwrap().gap.unwrap();
        assert_eq!(gap.segments, 3, "the spool's record grows all the same");
    }

    #[test]
    fn a_failing_push_watches_the_queue_and_drops_once_it_passes_the_limit() {
        let c = Cluster::new();
        let settings =
            ArchiveSettings { queue_max: 2 * c.seg, watch: Some(Duration::from_secs(20)), ..Default::default() };
        c.break_repository();
        let p1 = c.ready(1);
        c.ready(2);
        let t0 = std::time::Instant::now();
        let r = std::thread::scope(|s| {
            let push = s.spawn(|| c.archive.archive(&p1, &settings));
            std::thread::sleep(Duration::from_millis(300));
            assert!(!push.is_finished(), "under the limit the push waits for the repository");
            c.ready(3);
            push.join().unwrap().unwrap()
        });
        assert_eq!((r.outcome, r.queue_bytes), (PushOutcome::Dropped, 3 * c.seg));
        assert!(t0.elapsed() < Duration::from_secs(10), "dropped once the queue grew, not at the end of the watch");
        // And a repository that comes back during the watch takes the segment.
        c.done(1);
        let p2 = c.dir.join("pg_wal").join(c.name(2));
        let r = std::thread::scope(|s| {
            let push = s.spawn(|| c.archive.archive(&p2, &settings));
            std::thread::sleep(Duration::from_millis(300));
            c.mend_repository();
            push.join().unwrap().unwrap()
        });
        assert_eq!(r.outcome, PushOutcome::Stored);
        assert!(c.stored(2));
        assert_eq!(crate::backup::gaps::in_repository(&c.archive).unwrap().len(), 1);
    }
}
