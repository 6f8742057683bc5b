//! `SnapshotManager`: versioned, zstd-compressed snapshots of the shared entity state in
//! PostgreSQL (`sync_snapshots`, migration 4).
//!
//! A snapshot holds the entity store as this instance has it (field timestamps, tombstones and
//! version-vector heads included), the last log entry it includes and each origin's last
//! sequence number. Reconstructing the state is the latest snapshot plus the log entries after
//! it. A manager that finds the log trimmed past its position restores the latest snapshot and
//! reads on from there. Any instance may take snapshots; versions count up per namespace.

use super::envelope::Envelope;
use super::log::{LogId, LogPosition};
use super::manager::StateSyncManager;
use super::state::{Change, ChangeBody, EntityStore, StoreImage};
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::Row;

const FORMAT: i16 = 1;
const ZSTD_LEVEL: i32 = 3;
/// Snapshots kept by the periodic task unless told otherwise.
pub const DEFAULT_KEEP: usize = 10;

/// One stored snapshot, without its state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotInfo {
    pub version: i64,
    /// The last log entry included ("" when the log was empty).
    pub log_id: String,
    pub entity_count: i64,
    /// Size of the state as JSON, and as stored.
    pub raw_bytes: i64,
    pub stored_bytes: i64,
    pub taken_by: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A snapshot with its state.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    pub info: SnapshotInfo,
    /// The last log entry the state includes.
    pub position: Option<LogPosition>,
    pub origin_seqs: HashMap<String, u64>,
    pub image: StoreImage,
}

/// What a manager hands to a snapshot: its state and how far into the log it is.
#[derive(Debug, Clone)]
pub struct Capture {
    pub image: StoreImage,
    pub origin_seqs: HashMap<String, u64>,
    pub position: Option<LogPosition>,
}

/// Takes, lists, loads and prunes the snapshots of one manager's namespace.
#[derive(Clone)]
pub struct SnapshotManager {
    db: DatabaseManager,
    sync: StateSyncManager,
    periodic: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for SnapshotManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotManager").field("namespace", &self.sync.namespace()).finish()
    }
}

impl SnapshotManager {
    /// Snapshots of `sync`'s state, stored through `db` (migrated to version 4 or later). The
    /// manager also restores from them when its log was trimmed past its position.
    pub fn new(db: DatabaseManager, sync: StateSyncManager) -> Self {
        sync.attach_snapshots(db.clone());
        SnapshotManager { db, sync, periodic: Arc::new(Mutex::new(None)) }
    }

    /// Stores the manager's current state as the next version.
    pub async fn take(&self) -> Result<SnapshotInfo> {
        let cap = self.sync.capture();
        let json = serde_json::to_vec(&cap.image)?;
        // With the frame's checksum, any changed byte fails decompression instead of giving
        // other, valid-looking state.
        let mut z = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
        z.include_checksum(true)?;
        let state = z.compress(&json)?;
        let seqs = serde_json::to_value(&cap.origin_seqs)?;
        let log_id = cap.position.as_ref().map(LogPosition::id_text).unwrap_or_default();
        let epoch = cap.position.as_ref().map(|p| p.epoch.clone()).unwrap_or_default();
        let log_n = cap.position.as_ref().map(|p| p.n as i64).unwrap_or(0);
        let count = cap.image.entity_count() as i32;
        // Two instances may take one at the same moment: the unique version decides, and the
        // loser takes the next number.
        let mut last_err = None;
        for _ in 0..5 {
            let row = self
                .db
                .query_opt(
                    "INSERT INTO sync_snapshots
                         (namespace, version, log_id, log_epoch, log_n, origin_seqs, entity_count, format, state,
                          raw_bytes, taken_by)
                     SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $9, $10, $3, $4, $5, $6, $7, $8
                       FROM sync_snapshots WHERE namespace = $1
                     RETURNING version, log_id, entity_count, raw_bytes, length(state)::bigint AS stored_bytes,
                               taken_by, created_at",
                    &[
                        &self.sync.namespace(),
                        &log_id,
                        &seqs,
                        &count,
                        &FORMAT,
                        &state,
                        &(json.len() as i64),
                        &self.sync.origin(),
                        &epoch,
                        &log_n,
                    ],
                )
                .await;
            match row {
                Ok(Some(r)) => return Ok(info(&r)),
                Ok(None) => return Err(Error::Internal("INSERT … RETURNING gave no row".into())),
                Err(Error::Conflict(m)) => last_err = Some(Error::Conflict(m)),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Internal("snapshot not stored".into())))
    }

    /// Every snapshot of the namespace, newest first.
    pub async fn list(&self) -> Result<Vec<SnapshotInfo>> {
        let rows = self
            .db
            .query(
                "SELECT version, log_id, entity_count, raw_bytes, length(state)::bigint AS stored_bytes, taken_by, created_at
                   FROM sync_snapshots WHERE namespace = $1 ORDER BY version DESC",
                &[&self.sync.namespace()],
            )
            .await?;
        Ok(rows.iter().map(info).collect())
    }

    /// The newest snapshot, with its state.
    pub async fn latest(&self) -> Result<Option<StoredSnapshot>> {
        load_latest(&self.db, self.sync.namespace()).await
    }

    /// One version, with its state.
    pub async fn load(&self, version: i64) -> Result<StoredSnapshot> {
        let row = self
            .db
            .query_opt(
                &format!("{SELECT_FULL} WHERE namespace = $1 AND version = $2"),
                &[&self.sync.namespace(), &version],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("snapshot version {version} of {:?}", self.sync.namespace())))?;
        decode(&row)
    }

    /// Deletes all but the newest `keep` snapshots (at least one is always kept); returns how
    /// many were deleted.
    pub async fn cleanup(&self, keep: usize) -> Result<u64> {
        let keep = keep.max(1) as i64;
        self.db
            .execute(
                "DELETE FROM sync_snapshots WHERE namespace = $1 AND version <= (
                     SELECT COALESCE(MAX(version), 0) - $2 FROM sync_snapshots WHERE namespace = $1)",
                &[&self.sync.namespace(), &keep],
            )
            .await
    }

    /// The state changes in the log after a snapshot (all of the log when `version` is None),
    /// in log order.
    pub async fn deltas_since(&self, version: Option<i64>) -> Result<Vec<Envelope>> {
        let after = match version {
            Some(v) => parse_id(&self.load(v).await?.info.log_id),
            None => None,
        };
        let mut out = self.sync.read_log_after(after).await?;
        out.retain(Envelope::is_delta);
        Ok(out)
    }

    /// The state rebuilt from the latest snapshot and the log entries after it (from the whole
    /// log when there is no snapshot), using the manager's entity types and merge functions.
    pub async fn reconstruct(&self) -> Result<EntityStore> {
        let mut store = self.sync.empty_store();
        let latest = self.latest().await?;
        let after = match &latest {
            Some(s) => {
                store.absorb(&s.image)?;
                parse_id(&s.info.log_id)
            }
            None => None,
        };
        for env in self.sync.read_log_after(after).await? {
            if !env.is_delta() {
                continue;
            }
            let body: ChangeBody = serde_json::from_value(env.payload)?;
            store.apply(&Change { entity_type: env.entity, id: env.id, hlc: env.hlc, body })?;
        }
        Ok(store)
    }

    /// Takes a snapshot every `interval` and keeps the newest `keep`, until
    /// [`stop_periodic`](Self::stop_periodic) or the last clone is dropped. Failures are
    /// retried at the next interval.
    pub fn start_periodic(&self, interval: Duration, keep: usize) -> Result<()> {
        if interval.is_zero() {
            return Err(Error::InvalidArgument("the snapshot interval must be positive".into()));
        }
        let me = self.clone();
        let task = crate::runtime::runtime().spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                if me.take().await.is_ok() {
                    let _ = me.cleanup(keep).await;
                }
            }
        });
        if let Some(old) = self.periodic.lock().unwrap_or_else(|e| e.into_inner()).replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// Stops the periodic snapshots.
    pub fn stop_periodic(&self) {
        if let Some(t) = self.periodic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

const SELECT_FULL: &str = "SELECT version, log_id, entity_count, raw_bytes, length(state)::bigint AS stored_bytes,
        taken_by, created_at, origin_seqs, format, state, log_epoch, log_n FROM sync_snapshots";

/// The newest snapshot of a namespace.
pub(crate) async fn load_latest(db: &DatabaseManager, namespace: &str) -> Result<Option<StoredSnapshot>> {
    let row = db
        .query_opt(&format!("{SELECT_FULL} WHERE namespace = $1 ORDER BY version DESC LIMIT 1"), &[&namespace])
        .await?;
    row.as_ref().map(decode).transpose()
}

fn info(r: &Row) -> SnapshotInfo {
    SnapshotInfo {
        version: r.get("version"),
        log_id: r.get("log_id"),
        entity_count: i64::from(r.get::<_, i32>("entity_count")),
        raw_bytes: r.get("raw_bytes"),
        stored_bytes: r.get("stored_bytes"),
        taken_by: r.get("taken_by"),
        created_at: r
            .get::<_, chrono::DateTime<chrono::Utc>>("created_at")
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

fn decode(r: &Row) -> Result<StoredSnapshot> {
    let format: i16 = r.get("format");
    if format != FORMAT {
        return Err(Error::Integrity(format!("snapshot format {format} is not supported")));
    }
    let state: Vec<u8> = r.get("state");
    let raw = zstd::stream::decode_all(state.as_slice())
        .map_err(|e| Error::Integrity(format!("snapshot state does not decompress: {e}")))?;
    let image: StoreImage =
        serde_json::from_slice(&raw).map_err(|e| Error::Integrity(format!("snapshot state is not readable: {e}")))?;
    let origin_seqs: HashMap<String, u64> = serde_json::from_value(r.get("origin_seqs"))
        .map_err(|e| Error::Integrity(format!("snapshot sequence numbers are not readable: {e}")))?;
    let log_id: String = r.get("log_id");
    let position =
        parse_id(&log_id).map(|id| LogPosition { epoch: r.get("log_epoch"), n: r.get::<_, i64>("log_n") as u64, id });
    Ok(StoredSnapshot { info: info(r), position, origin_seqs, image })
}

fn parse_id(id: &str) -> Option<LogId> {
    super::log::parse_id(id)
}
