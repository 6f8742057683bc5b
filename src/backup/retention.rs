//! Retention: how long backups are kept ([`RetentionPolicy`], whose `Default` is the one
//! policy every face starts from) and the cleanup that applies it to backups and archived WAL.

use super::manager::BackupManager;
use crate::error::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

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

impl BackupManager {
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
            // A gap wholly before the oldest WAL any kept backup needs limits nothing any more.
            super::gaps::expire_before(&self.wal_archive(), &oldest)?;
        }
        self.db()?
            .execute(
                "DELETE FROM backup_history WHERE status = 'failed' AND started_at < now() - make_interval(secs => $1)",
                &[&policy.full.as_secs_f64()],
            )
            .await?;
        Ok(report)
    }
}
