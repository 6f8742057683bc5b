//! State sync behind `rootstream::sync::StateSyncManager` and `SnapshotManager`. Deltas,
//! payloads, envelopes and state are free-form JSON; snapshot descriptions are typed.

use super::{Observer, R};
use crate::error::Error;
use crate::runtime::block_on;
use crate::sync::state::{parse_delta, MergeFn, Strategy};
use crate::sync::{SnapshotInfo, SnapshotManager, StateSyncManager, SyncOptions};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("message_observer.h");
        include!("sync_observer.h");
        include!("rootstream-db/src/ffi/cxx/config.rs.h");
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        include!("rootstream-db/src/ffi/cxx/cache.rs.h");
        type ConfigBox = crate::ffi::cxx::config::ConfigBox;
        type DbBox = crate::ffi::cxx::db::DbBox;
        type RedisBox = crate::ffi::cxx::cache::RedisBox;
        type MessageObserver = crate::ffi::cxx::cache::MessageObserver;

        /// A merge function implemented in C++ around a std::function.
        type MergeObserver;
        fn merge(
            self: &MergeObserver,
            entity_type: &str,
            id: &str,
            older_json: &str,
            newer_json: &str,
            merged_json: &mut String,
        ) -> bool;
    }

    /// One stored snapshot. `created_at` is RFC 3339 in UTC.
    struct SyncSnapshotInfo {
        version: i64,
        log_id: String,
        entity_count: i64,
        raw_bytes: i64,
        stored_bytes: i64,
        taken_by: String,
        created_at: String,
    }

    extern "Rust" {
        type SyncBox;
        fn sync_start(cfg: &ConfigBox, redis: &RedisBox, options_json: &str) -> Result<Box<SyncBox>>;
        fn sync_start_with_db(
            cfg: &ConfigBox,
            redis: &RedisBox,
            db: &DbBox,
            options_json: &str,
        ) -> Result<Box<SyncBox>>;
        fn origin(self: &SyncBox) -> String;
        fn register_type(self: &SyncBox, entity_type: &str, strategy: &str) -> Result<()>;
        fn set_merge(self: &SyncBox, entity_type: &str, merge: UniquePtr<MergeObserver>) -> Result<()>;
        fn publish(self: &SyncBox, event_type: &str, payload_json: &str) -> Result<u64>;
        fn apply_delta(self: &SyncBox, entity_type: &str, id: &str, delta_json: &str) -> Result<String>;
        fn get_snapshot(self: &SyncBox, entity_type: &str, id: &str, found: &mut bool) -> Result<String>;
        fn flush(self: &SyncBox, timeout_ms: u64) -> Result<()>;
        fn subscribe(self: &SyncBox, pattern: &str, observer: UniquePtr<MessageObserver>) -> Result<u64>;
        fn unsubscribe(self: &SyncBox, id: u64) -> Result<()>;
        fn on_conflict(self: &SyncBox, observer: UniquePtr<MessageObserver>);
        fn on_resync(self: &SyncBox, observer: UniquePtr<MessageObserver>);
        fn status_json(self: &SyncBox) -> Result<String>;
        fn catch_up(self: &SyncBox) -> Result<()>;
        fn close(self: &SyncBox);

        /// An optional manager handed to the model bridges, whose changes it announces.
        type SyncLink;
        fn sync_link(sync: &SyncBox) -> Box<SyncLink>;
        fn sync_link_none() -> Box<SyncLink>;

        type SnapshotsBox;
        fn snapshots_new(db: &DbBox, sync: &SyncBox) -> Box<SnapshotsBox>;
        fn take(self: &SnapshotsBox) -> Result<SyncSnapshotInfo>;
        fn list(self: &SnapshotsBox) -> Result<Vec<SyncSnapshotInfo>>;
        fn cleanup(self: &SnapshotsBox, keep: u32) -> Result<u64>;
        fn reconstruct_json(self: &SnapshotsBox) -> Result<String>;
        fn start_periodic(self: &SnapshotsBox, interval_ms: u64, keep: u32) -> Result<()>;
        fn stop_periodic(self: &SnapshotsBox);
    }
}

use super::cache::{MessageObserver, RedisBox};
use super::config::ConfigBox;
use super::db::DbBox;
pub use bridge::{MergeObserver, SyncSnapshotInfo};

/// The manager a C++ `StateSyncManager` holds; closing it ends every callback.
pub struct SyncBox(pub(crate) StateSyncManager);

impl Drop for SyncBox {
    fn drop(&mut self) {
        self.0.close();
    }
}

// SAFETY: the id names the C++ declaration cxx generates for `SyncBox` in sync.rs.h.
unsafe impl cxx::ExternType for SyncBox {
    type Id = cxx::type_id!("rootstream::ffi::SyncBox");
    type Kind = cxx::kind::Opaque;
}

/// What the model bridges announce through: a manager, or none.
pub struct SyncLink(pub(crate) Option<StateSyncManager>);

// SAFETY: the id names the C++ declaration cxx generates for `SyncLink` in sync.rs.h.
unsafe impl cxx::ExternType for SyncLink {
    type Id = cxx::type_id!("rootstream::ffi::SyncLink");
    type Kind = cxx::kind::Opaque;
}

fn sync_link(sync: &SyncBox) -> Box<SyncLink> {
    Box::new(SyncLink(Some(sync.0.clone())))
}

fn sync_link_none() -> Box<SyncLink> {
    Box::new(SyncLink(None))
}

/// The snapshots a C++ `SnapshotManager` holds.
pub struct SnapshotsBox(SnapshotManager);

impl Drop for SnapshotsBox {
    fn drop(&mut self) {
        self.0.stop_periodic();
    }
}

// A C++ merge function kept by the core's merge closure.
struct Merger(cxx::UniquePtr<MergeObserver>);
// SAFETY: the C++ object is immutable after construction (const merge) and documented to run
// on library threads.
unsafe impl Send for Merger {}
unsafe impl Sync for Merger {}

impl Merger {
    fn merge(&self, entity_type: &str, id: &str, older: &str, newer: &str, out: &mut String) -> bool {
        self.0.as_ref().is_some_and(|o| o.merge(entity_type, id, older, newer, out))
    }
}

fn options(cfg: &ConfigBox, json: &str) -> R<SyncOptions> {
    let mut opts = SyncOptions::from_config(&cfg.0);
    if !json.is_empty() {
        opts.apply_json(json)?;
    }
    Ok(opts)
}

fn sync_start(cfg: &ConfigBox, redis: &RedisBox, options_json: &str) -> R<Box<SyncBox>> {
    let opts = options(cfg, options_json)?;
    Ok(Box::new(SyncBox(block_on(StateSyncManager::start(redis.0.clone(), opts))?)))
}

fn sync_start_with_db(cfg: &ConfigBox, redis: &RedisBox, db: &DbBox, options_json: &str) -> R<Box<SyncBox>> {
    let opts = options(cfg, options_json)?;
    let m = block_on(StateSyncManager::start_with_database(redis.0.clone(), opts, Some(db.0.clone())))?;
    Ok(Box::new(SyncBox(m)))
}

fn snapshots_new(db: &DbBox, sync: &SyncBox) -> Box<SnapshotsBox> {
    Box::new(SnapshotsBox(SnapshotManager::new(db.0.clone(), sync.0.clone())))
}

fn info(i: SnapshotInfo) -> SyncSnapshotInfo {
    SyncSnapshotInfo {
        version: i.version,
        log_id: i.log_id,
        entity_count: i.entity_count,
        raw_bytes: i.raw_bytes,
        stored_bytes: i.stored_bytes,
        taken_by: i.taken_by,
        created_at: i.created_at,
    }
}

impl SyncBox {
    fn origin(&self) -> String {
        self.0.origin().to_string()
    }

    fn register_type(&self, entity_type: &str, strategy: &str) -> R<()> {
        Ok(self.0.register_entity_type(entity_type, Strategy::parse(strategy)?)?)
    }

    fn set_merge(&self, entity_type: &str, merge: cxx::UniquePtr<MergeObserver>) -> R<()> {
        if merge.is_null() {
            return Ok(self.0.set_merge(entity_type, None)?);
        }
        let m = Merger(merge);
        let f: MergeFn = Arc::new(move |r| {
            let older = Value::Object(r.older.clone()).to_string();
            let newer = Value::Object(r.newer.clone()).to_string();
            let mut out = String::new();
            if !m.merge(r.entity_type, r.id, &older, &newer, &mut out) {
                return Err(Error::InvalidArgument("the C++ merge function did not merge".into()));
            }
            parse_delta(&out)
        });
        Ok(self.0.set_merge(entity_type, Some(f))?)
    }

    fn publish(&self, event_type: &str, payload_json: &str) -> R<u64> {
        Ok(self.0.publish_text(event_type, payload_json)?)
    }

    fn apply_delta(&self, entity_type: &str, id: &str, delta_json: &str) -> R<String> {
        let delta = parse_delta(delta_json)?;
        Ok(self.0.apply_delta(entity_type, id, &delta)?.to_json().to_string())
    }

    fn get_snapshot(&self, entity_type: &str, id: &str, found: &mut bool) -> R<String> {
        let state = self.0.get_snapshot(entity_type, id)?;
        *found = state.is_some();
        Ok(state.map(|m| Value::Object(m).to_string()).unwrap_or_default())
    }

    fn flush(&self, timeout_ms: u64) -> R<()> {
        Ok(block_on(self.0.flush(Duration::from_millis(timeout_ms)))?)
    }

    fn subscribe(&self, pattern: &str, observer: cxx::UniquePtr<MessageObserver>) -> R<u64> {
        let obs = Observer(observer);
        Ok(self.0.subscribe(pattern, move |env| {
            obs.notify(&env.kind, serde_json::to_string(env).unwrap_or_default().as_bytes())
        })?)
    }

    fn unsubscribe(&self, id: u64) -> R<()> {
        Ok(self.0.unsubscribe(id)?)
    }

    fn on_conflict(&self, observer: cxx::UniquePtr<MessageObserver>) {
        let obs = Observer(observer);
        self.0.on_conflict(move |c| obs.notify("conflict", serde_json::to_string(c).unwrap_or_default().as_bytes()));
    }

    fn on_resync(&self, observer: cxx::UniquePtr<MessageObserver>) {
        let obs = Observer(observer);
        self.0.on_resync(move |r| obs.notify("resync", serde_json::to_string(r).unwrap_or_default().as_bytes()));
    }

    fn status_json(&self) -> R<String> {
        Ok(block_on(self.0.status_report())?.to_string())
    }

    fn catch_up(&self) -> R<()> {
        Ok(block_on(self.0.catch_up())?)
    }

    fn close(&self) {
        self.0.close();
    }
}

impl SnapshotsBox {
    fn take(&self) -> R<SyncSnapshotInfo> {
        Ok(info(block_on(self.0.take())?))
    }

    fn list(&self) -> R<Vec<SyncSnapshotInfo>> {
        Ok(block_on(self.0.list())?.into_iter().map(info).collect())
    }

    fn cleanup(&self, keep: u32) -> R<u64> {
        Ok(block_on(self.0.cleanup(keep as usize))?)
    }

    fn reconstruct_json(&self) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.reconstruct())?.image().visible())?)
    }

    fn start_periodic(&self, interval_ms: u64, keep: u32) -> R<()> {
        Ok(self.0.start_periodic(Duration::from_millis(interval_ms), keep as usize)?)
    }

    fn stop_periodic(&self) {
        self.0.stop_periodic();
    }
}
