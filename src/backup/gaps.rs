//! WAL gaps: where they are kept, which backups they limit, and the refusals they cause.
//!
//! A gap (see [`super::archiving`]) is kept three ways: in the spool of the cluster that dropped
//! it, as a signed object `wal-gaps/<timeline>-<first segment>` in the repository (the record
//! restores and `verify` trust), and as a row of the database's `wal_gaps` table (what
//! `rsdb backup list` and the gap watch read, written on a best-effort basis).
//!
//! A gap *limits* a physical backup when the backup's own WAL ends at or before the gap's last
//! segment: recovery from it can go no further than the gap's `complete_before`. The first full
//! backup whose WAL ends after the gap *closes* it: recovery to any later moment starts there.

use super::archiving::WalGap;
use super::manager::BackupManager;
use super::manifest::Manifest;
use super::recovery::RecoveryTarget;
use super::wal::WalArchive;
use crate::config::Config;
use crate::crypto::envelope::constant_time_eq;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the repository keeps gap records.
pub const PREFIX: &str = "wal-gaps/";
const MAC_LABEL: &str = "wal-gap";

/// Stores (or replaces) the repository's signed record of `gap`.
pub(crate) fn store_in_repository(archive: &WalArchive, gap: &WalGap) -> Result<()> {
    let record = WalGap { closed_by: None, affected_backups: Vec::new(), ..gap.clone() };
    let body = serde_json::to_vec_pretty(&record)?;
    let mac = hex::encode(archive.keyring().mac(MAC_LABEL, &body)?);
    let mut object = mac.into_bytes();
    object.push(b'\n');
    object.extend_from_slice(&body);
    archive.storage().put(&format!("{PREFIX}{}", gap.id()), &object)
}

/// Every gap recorded in the repository, authenticated, oldest first. A record that fails
/// authentication is an [`Error::Integrity`] naming it.
pub fn in_repository(archive: &WalArchive) -> Result<Vec<WalGap>> {
    let mut out = Vec::new();
    for (key, _) in archive.storage().list(PREFIX)? {
        let Some(id) = key.strip_prefix(PREFIX) else { continue };
        let object = archive.storage().get(&key)?;
        let bad =
            || Error::Integrity(format!("WAL gap record {}: altered or corrupt", archive.storage().location(&key)));
        let nl = object.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
        let mac = hex::decode(&object[..nl]).map_err(|_| bad())?;
        let body = &object[nl + 1..];
        let ok = archive.keyring().mac_all(MAC_LABEL, body)?.iter().any(|(_, m)| constant_time_eq(m, &mac));
        if !ok {
            return Err(bad());
        }
        let gap: WalGap = serde_json::from_slice(body).map_err(|_| bad())?;
        if gap.id() != id || gap.first_segment.len() != 24 || gap.last_segment.len() != 24 {
            return Err(bad());
        }
        out.push(gap);
    }
    out.sort_by(|a, b| a.positions().0.cmp(b.positions().0));
    Ok(out)
}

/// Deletes the repository's records of gaps that end before segment `oldest_needed` (the
/// oldest WAL a kept backup needs): they limit no kept backup. Returns how many.
pub(crate) fn expire_before(archive: &WalArchive, oldest_needed: &str) -> Result<usize> {
    let Some(limit) = oldest_needed.get(8..24) else { return Ok(0) };
    let mut removed = 0;
    for g in in_repository(archive)? {
        if g.positions().1 < limit {
            archive.storage().delete(&format!("{PREFIX}{}", g.id()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Writes or extends the gap's row in `wal_gaps`, giving up after `wait`.
pub(crate) fn record_in_database(cfg: &Config, gap: &WalGap, wait: Duration) -> Result<()> {
    let mut cfg = cfg.clone();
    cfg.pool_size = 1;
    cfg.connect_timeout = wait;
    cfg.acquire_timeout = wait;
    cfg.query_timeout = wait;
    let gap = gap.clone();
    crate::runtime::block_on(async move {
        let db = crate::db::DatabaseManager::new(&cfg)?;
        let (id, timeline, segments, bytes) = (gap.id(), gap.timeline as i32, gap.segments as i64, gap.bytes as i64);
        let (queue, limit) = (gap.queue_bytes as i64, gap.limit_bytes as i64);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
            &id,
            &timeline,
            &gap.first_segment,
            &gap.last_segment,
            &segments,
            &bytes,
            &gap.complete_before,
            &gap.first_dropped_at,
            &gap.last_dropped_at,
            &queue,
            &limit,
        ];
        let work = db.execute(
            "INSERT INTO wal_gaps (gap_id, timeline, first_segment, last_segment, segments, bytes, complete_before,
                                   first_dropped_at, last_dropped_at, queue_bytes, limit_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (gap_id) DO UPDATE SET last_segment = EXCLUDED.last_segment, segments = EXCLUDED.segments,
                 bytes = EXCLUDED.bytes, last_dropped_at = EXCLUDED.last_dropped_at,
                 queue_bytes = EXCLUDED.queue_bytes, limit_bytes = EXCLUDED.limit_bytes",
            &params,
        );
        let r = tokio::time::timeout(wait, work)
            .await
            .map_err(|_| Error::Timeout(format!("the database did not take the gap's row within {wait:?}")))?;
        db.close();
        r.map(|_| ())
    })
}

fn stop_position(m: &Manifest) -> Option<&str> {
    m.physical.as_ref().and_then(|p| p.stop_wal.get(8..))
}

/// The first gap at or after the end of `m`'s own WAL: how far recovery from `m` can go.
fn first_gap_after<'a>(gaps: &'a [WalGap], m: &Manifest) -> Option<&'a WalGap> {
    let stop = stop_position(m)?;
    gaps.iter().filter(|g| g.positions().1 >= stop).min_by(|a, b| a.positions().0.cmp(b.positions().0))
}

/// Fills in each gap's `closed_by` and `affected_backups` from the repository's backups
/// (`manifests`, oldest first).
fn annotate(gaps: &mut [WalGap], manifests: &[Manifest]) {
    let physical: Vec<&Manifest> = manifests.iter().filter(|m| m.is_physical()).collect();
    let firsts: Vec<Option<String>> = physical.iter().map(|m| first_gap_after(gaps, m).map(|g| g.id())).collect();
    for g in gaps.iter_mut() {
        let last = g.last_segment[8..].to_string();
        g.closed_by = physical
            .iter()
            .find(|m| m.backup_type == "full" && stop_position(m).is_some_and(|s| s > last.as_str()))
            .map(|m| m.backup_id.clone());
        g.affected_backups = physical
            .iter()
            .zip(&firsts)
            .filter(|(_, f)| f.as_deref() == Some(g.id().as_str()))
            .map(|(m, _)| m.backup_id.clone())
            .collect();
    }
}

/// Called from the gap watch's task on the library runtime, once for each gap that is new or
/// has grown since the watch last looked.
pub type WalGapCallback = std::sync::Arc<dyn Fn(&WalGap) + Send + Sync>;

/// Watches for WAL gaps until dropped (see [`BackupManager::watch_wal_gaps`]). When the drop
/// returns (outside the callback) the callback is not running and will not run again.
pub struct WalGapWatch {
    _task: super::schedule::CallbackTask,
}

impl BackupManager {
    /// Looks for WAL gaps every `every` (at least 100 ms) and calls `callback` for each one that
    /// is new or has grown since the last look; the first look reports every gap no full backup
    /// has closed yet. A look that fails (the database is away) is retried at the next one.
    /// Gaps are read as [`BackupManager::wal_gaps`] reads them, so the database's rows alert at
    /// once, while the repository is still unreachable.
    pub fn watch_wal_gaps(&self, every: Duration, callback: WalGapCallback) -> WalGapWatch {
        let this = self.clone();
        let every = every.max(Duration::from_millis(100));
        let task = super::schedule::CallbackTask::spawn(callback, move |callback| async move {
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut first = true;
            loop {
                if let Ok(gaps) = this.wal_gaps().await {
                    for g in gaps {
                        let grew = seen.get(&g.id()).is_none_or(|n| *n < g.segments);
                        seen.insert(g.id(), g.segments);
                        if grew && !(first && g.closed_by.is_some()) {
                            callback(&g);
                        }
                    }
                    first = false;
                }
                tokio::time::sleep(every).await;
            }
        });
        WalGapWatch { _task: task }
    }

    /// Every WAL gap the repository records, with the backup that closed each (if any) and the
    /// backups each limits. Works without the database.
    pub fn wal_gaps_in_repository(&self) -> Result<Vec<WalGap>> {
        let mut gaps = in_repository(&self.wal_archive())?;
        annotate(&mut gaps, &self.repository_manifests()?);
        Ok(gaps)
    }

    /// Every known WAL gap: the repository's records and the database's rows (a gap the
    /// repository has not been told of yet, while it is unreachable, comes from the database
    /// alone, without the backups it limits).
    pub async fn wal_gaps(&self) -> Result<Vec<WalGap>> {
        let mut by_id: BTreeMap<String, WalGap> = BTreeMap::new();
        let repository = self.wal_gaps_in_repository();
        if let Ok(gaps) = &repository {
            for g in gaps {
                by_id.insert(g.id(), g.clone());
            }
        }
        if let Some(db) = &self.db {
            let rows = db
                .query(
                    "SELECT timeline, first_segment, last_segment, segments, bytes, complete_before, first_dropped_at,
                            last_dropped_at, queue_bytes, limit_bytes, closed_by_backup_id
                     FROM wal_gaps ORDER BY first_segment",
                    &[],
                )
                .await?;
            for r in rows {
                let g = WalGap {
                    timeline: r.get::<_, i32>(0) as u32,
                    first_segment: r.get(1),
                    last_segment: r.get(2),
                    segments: r.get::<_, i64>(3) as u64,
                    bytes: r.get::<_, i64>(4) as u64,
                    complete_before: r.get(5),
                    first_dropped_at: r.get(6),
                    last_dropped_at: r.get(7),
                    queue_bytes: r.get::<_, i64>(8) as u64,
                    limit_bytes: r.get::<_, i64>(9) as u64,
                    closed_by: r.get(10),
                    affected_backups: Vec::new(),
                };
                match by_id.get_mut(&g.id()) {
                    // The row may have grown after the repository's record was written.
                    Some(known) if g.segments > known.segments => {
                        known.last_segment = g.last_segment;
                        known.segments = g.segments;
                        known.bytes = g.bytes;
                        known.last_dropped_at = g.last_dropped_at;
                    }
                    Some(_) => {}
                    None => {
                        by_id.insert(g.id(), g);
                    }
                }
            }
        } else {
            repository?;
        }
        let mut gaps: Vec<WalGap> = by_id.into_values().collect();
        gaps.sort_by(|a, b| a.positions().0.cmp(b.positions().0));
        Ok(gaps)
    }

    /// Marks the database's open gaps that `full` (a full backup just taken) closes.
    pub(crate) async fn close_wal_gaps(&self, full: &Manifest) -> Result<u64> {
        let Some(stop) = stop_position(full) else { return Ok(0) };
        self.db()?
            .execute(
                "UPDATE wal_gaps SET closed_by_backup_id = $1, closed_at = now()
                 WHERE closed_by_backup_id IS NULL AND substr(last_segment, 9) < $2",
                &[&full.backup_id, &stop],
            )
            .await
    }

    /// Refuses a WAL backup over segments `first`..=`last` (positions) when a gap lies among them.
    pub(crate) async fn refuse_gap_within(&self, first: &str, last: &str) -> Result<()> {
        let gaps = self.wal_gaps().await?;
        if let Some(g) = gaps.iter().find(|g| g.positions().0 <= last && g.positions().1 >= first) {
            return Err(Error::State(format!(
                "an incremental or differential backup cannot cross a WAL gap: {}; take a full backup",
                g.describe()
            )));
        }
        Ok(())
    }

    /// Refuses a restore of the chain ending in `last` to `target` when the WAL it needs crosses
    /// a gap.
    pub(crate) fn refuse_gap_for_restore(&self, last: &Manifest, target: &RecoveryTarget) -> Result<()> {
        if matches!(target, RecoveryTarget::EndOfBackup) {
            return Ok(());
        }
        let mut gaps = in_repository(&self.wal_archive())?;
        if gaps.is_empty() {
            return Ok(());
        }
        annotate(&mut gaps, &self.repository_manifests()?);
        let Some(g) = first_gap_after(&gaps, last) else { return Ok(()) };
        let at_once = stop_position(last).is_some_and(|s| g.positions().0 <= s);
        let reachable = match (target, &g.complete_before) {
            (RecoveryTarget::Time(t), Some(before)) if !at_once => t < before,
            _ => false,
        };
        if reachable {
            return Ok(());
        }
        let mut msg = format!(
            "point-in-time recovery from backup {} to {} would cross a WAL gap: {}. ",
            last.backup_id,
            match target {
                RecoveryTarget::Time(t) => t.to_rfc3339(),
                _ => "the latest WAL".into(),
            },
            g.describe()
        );
        match (&g.complete_before, at_once) {
            (Some(t), false) => msg.push_str(&format!("Pick a target before {}", t.to_rfc3339())),
            _ => msg.push_str("Only the end of this backup can be restored"),
        }
        match &g.closed_by {
            Some(b) => msg.push_str(&format!(", or restore from backup {b}, taken after the gap.")),
            None => msg.push_str("; a full backup taken now closes the gap for later targets."),
        }
        Err(Error::State(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::PhysicalInfo;
    use chrono::{TimeZone, Utc};

    fn manifest(id: &str, kind: &str, start: &str, stop: &str) -> Manifest {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        Manifest {
            format: 1,
            backup_id: id.into(),
            backup_type: kind.into(),
            method: "m".into(),
            database: "d".into(),
            server_version: "15".into(),
            started_at: t,
            finished_at: t,
            compression: String::new(),
            encryption: String::new(),
            key_id: String::new(),
            wrapped_key: String::new(),
            files: Vec::new(),
            row_counts: Default::default(),
            physical: Some(PhysicalInfo {
                parent_backup_id: None,
                base_backup_id: id.into(),
                timeline: 1,
                start_lsn: String::new(),
                stop_lsn: String::new(),
                start_wal: format!("000000010000000000000{start}"),
                stop_wal: format!("000000010000000000000{stop}"),
                wal_segment_size: 16 << 20,
                system_identifier: String::new(),
                wal_segments: Vec::new(),
            }),
        }
    }

    fn gap(first: &str, last: &str) -> WalGap {
        let t = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        WalGap {
            timeline: 1,
            first_segment: format!("000000010000000000000{first}"),
            last_segment: format!("000000010000000000000{last}"),
            segments: 1,
            bytes: 1,
            complete_before: Some(t),
            first_dropped_at: t,
            last_dropped_at: t,
            queue_bytes: 2,
            limit_bytes: 1,
            closed_by: None,
            affected_backups: Vec::new(),
        }
    }

    #[test]
    fn retention_drops_only_the_records_of_gaps_before_the_oldest_needed_wal() {
        use crate::backup::storage::{LocalStorage, Storage};
        use crate::crypto::envelope::{Key, Keyring};
        let dir = std::env::temp_dir().join(format!("rsdb-gapexp-{}-{}", std::process::id(), rand::random::<u32>()));
        let storage: std::sync::Arc<dyn Storage> = std::sync::Arc::new(LocalStorage::new(dir.clone()));
        let archive = WalArchive::new(storage, Keyring::new("k1", Key::generate().unwrap()).unwrap());
        for (a, b) in [("003", "004"), ("006", "008"), ("00A", "00A")] {
            store_in_repository(&archive, &gap(a, b)).unwrap();
        }
        assert_eq!(expire_before(&archive, "000000010000000000000008").unwrap(), 1);
        let left: Vec<String> = in_repository(&archive).unwrap().into_iter().map(|g| g.first_segment).collect();
        assert_eq!(
            left,
            vec!["000000010000000000000006", "00000001000000000000000A"],
            "a gap reaching the limit stays"
        );
        assert_eq!(expire_before(&archive, "x").unwrap(), 0);
        // A record altered in the repository is refused, naming it.
        let key = format!("{PREFIX}{}", gap("006", "008").id());
        let mut bytes = archive.storage().get(&key).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 1;
        archive.storage().put(&key, &bytes).unwrap();
        let err = in_repository(&archive).unwrap_err();
        assert!(matches!(err, Error::Integrity(ref m) if m.contains("wal-gaps")), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_gap_limits_the_backups_before_it_and_the_next_full_backup_closes_it() {
        let backups = [
            manifest("base-a", "full", "002", "003"),
            manifest("incr-b", "incremental", "003", "005"),
            manifest("base-c", "full", "008", "009"),
            manifest("base-d", "full", "00C", "00D"),
            manifest("incr-e", "incremental", "00D", "00E"),
        ];
        let mut gaps = vec![gap("006", "007"), gap("009", "00A"), gap("00F", "010")];
        annotate(&mut gaps, &backups);
        // incr-b's WAL ends at 005: recovery past it stops at the gap 006..007; base-a is limited
        // by incr-b's gap only through its own end (003), so by the same first gap.
        assert_eq!(gaps[0].affected_backups, vec!["base-a", "incr-b"]);
        // base-c ends in 009, inside the second gap: nothing after its end can be replayed.
        assert_eq!(gaps[0].closed_by.as_deref(), Some("base-c"));
        assert_eq!(gaps[1].affected_backups, vec!["base-c"]);
        assert_eq!(gaps[1].closed_by.as_deref(), Some("base-d"));
        assert_eq!(gaps[2].affected_backups, vec!["base-d", "incr-e"]);
        assert_eq!(gaps[2].closed_by, None);
        assert_eq!(first_gap_after(&gaps, &backups[3]).map(|g| g.id()), Some(gaps[2].id()));
    }
}
