//! `StateSyncManager`: events and entity changes between RootStream instances over Redis.
//!
//! Every outgoing message gets the origin's next sequence number. A Lua script writes the
//! queued messages a batch at a time: it appends the batch to a capped Redis stream (the
//! durable, ordered log) as one entry and publishes the same batch, with the log id, on the bus
//! channel — one round trip, one atomic step, so the pub/sub order is the log order. The log key
//! and the bus channel share a hash tag, so the script also runs on Redis Cluster.
//!
//! Outgoing messages wait in an outbox, in order, until the log has them: while Redis is down
//! changes are still applied locally and queued, and they go out in order when it returns
//! (`flush` waits for that). A receiver applies each origin's messages in sequence order and at
//! most once. When it sees a gap in an origin's numbers, or its subscriber connection came back,
//! or the log holds entries it has not applied, it reads the log from the last id it applied;
//! when the log was trimmed past that id it reports a resynchronization (counter and callback).
//!
//! Callbacks (subscriptions, conflicts, resyncs) run on the Redis client's dispatcher thread
//! (`rsdb-pubsub`) or a library worker thread, one at a time; after `unsubscribe` returns, the
//! callback never runs again.

use super::envelope::{self, Envelope, DELTA_SUFFIX, MAX_PAYLOAD_BYTES};
use super::hlc::{HybridClock, PhysicalClock, SystemClock, DEFAULT_MAX_SKEW_MS};
use super::log::{self, Batch, LogId, LogKeys, LogPosition, READ_BATCH};
use super::receive::{self, Receiver};
use super::send::{self, Outgoing};
use super::snapshot::Capture;
use super::state::{BodyRef, Conflict, EntityStore, MergeFn, Outcome, Strategy};
use super::vv::VersionVector;
use crate::cache::{Message, RedisClient, SubscriptionId};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How a manager is set up.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// This instance's id (default: the configuration's `instance_id`). A per-run suffix is
    /// added to form the origin.
    pub instance: String,
    /// Names the log and the bus; instances with the same namespace share state.
    pub namespace: String,
    /// Messages the log keeps at least; older whole batches are trimmed once it holds an
    /// eighth more (see [`log`](super::log)).
    pub log_max_len: u64,
    /// Messages that may wait in the outbox before `apply_delta` and `publish` refuse more.
    pub max_outbox: usize,
    /// Peers' clocks may run this far ahead of ours; messages from further ahead are refused.
    pub max_skew_ms: u64,
    /// How often the log's end is compared with what was applied.
    pub check_interval: Duration,
    /// Added to this instance's wall clock (tests play an instance whose clock is wrong).
    pub clock_offset_ms: i64,
}

impl SyncOptions {
    /// Defaults for an instance id.
    pub fn new(instance: &str) -> Self {
        SyncOptions {
            instance: instance.to_string(),
            namespace: "rootstream".into(),
            log_max_len: 100_000,
            max_outbox: 100_000,
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
            check_interval: Duration::from_millis(250),
            clock_offset_ms: 0,
        }
    }

    /// Defaults for the configuration's `instance_id`.
    pub fn from_config(config: &crate::Config) -> Self {
        Self::new(&config.instance_id)
    }

    /// Overrides options from a JSON object with any of the keys `instance`, `namespace`,
    /// `log_max_len`, `max_outbox`, `max_skew_ms`, `check_interval_ms`, `clock_offset_ms`.
    /// Unknown keys and wrong types are errors.
    pub fn apply_json(&mut self, text: &str) -> Result<()> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Json(format!("sync options: {e}")))?;
        let obj = v.as_object().ok_or_else(|| Error::Json("sync options must be a JSON object".into()))?;
        const KNOWN: [&str; 7] = [
            "instance",
            "namespace",
            "log_max_len",
            "max_outbox",
            "max_skew_ms",
            "check_interval_ms",
            "clock_offset_ms",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(Error::InvalidArgument(format!("unknown sync option {k:?}; known: {}", KNOWN.join(", "))));
        }
        let text = |k: &str| -> Result<Option<String>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::InvalidArgument(format!("{k} must be a string"))),
            }
        };
        let count = |k: &str| -> Result<Option<u64>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(n) => {
                    n.as_u64().map(Some).ok_or_else(|| Error::InvalidArgument(format!("{k} must be a whole number")))
                }
            }
        };
        if let Some(v) = text("instance")? {
            self.instance = v;
        }
        if let Some(v) = text("namespace")? {
            self.namespace = v;
        }
        if let Some(v) = count("log_max_len")? {
            self.log_max_len = v;
        }
        if let Some(v) = count("max_outbox")? {
            self.max_outbox = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(v) = count("max_skew_ms")? {
            self.max_skew_ms = v;
        }
        if let Some(v) = count("check_interval_ms")? {
            self.check_interval = Duration::from_millis(v.max(1));
        }
        match obj.get("clock_offset_ms") {
            None | Some(Value::Null) => {}
            Some(n) => {
                self.clock_offset_ms =
                    n.as_i64().ok_or_else(|| Error::InvalidArgument("clock_offset_ms must be a whole number".into()))?
            }
        }
        self.check()
    }

    fn check(&self) -> Result<()> {
        if self.instance.is_empty() || self.instance.contains(char::is_whitespace) {
            return Err(Error::InvalidArgument("the sync instance id must be non-empty, without spaces".into()));
        }
        let bad = |c: char| "*?[]\\{}".contains(c) || c.is_whitespace() || c.is_control();
        if self.namespace.is_empty() || self.namespace.len() > 128 || self.namespace.chars().any(bad) {
            return Err(Error::InvalidArgument(
                "the sync namespace must be 1 to 128 characters without spaces, braces or glob characters".into(),
            ));
        }
        if self.log_max_len == 0 || self.max_outbox == 0 {
            return Err(Error::InvalidArgument("log_max_len and max_outbox must be positive".into()));
        }
        Ok(())
    }
}

/// Counters and positions of a manager, for status pages and `rsdb sync status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    pub origin: String,
    pub namespace: String,
    pub subscriptions: usize,
    /// Messages written to the log by this instance.
    pub sent: u64,
    /// Messages waiting in the outbox.
    pub outbox: usize,
    /// Messages from other instances applied or delivered.
    pub received: u64,
    /// Messages seen again (pub/sub and log both) and skipped.
    pub duplicates: u64,
    /// Times the log was read to fill a gap or after a reconnect, and messages it gave.
    pub catch_ups: u64,
    pub caught_up_messages: u64,
    /// Times part of the history was no longer in the log.
    pub resyncs: u64,
    /// Concurrent changes no merge function resolved.
    pub conflicts: u64,
    /// Messages refused (malformed, unknown entity type, clock too far ahead).
    pub rejected: u64,
    /// Conflicts that could not be written to `sync_conflicts` (still in `recent_conflicts`).
    pub conflict_write_failures: u64,
    /// The last log entry taken ("ms-seq"), and the messages the log holds after it.
    pub last_log_id: String,
    pub lag: u64,
}

/// Why a resynchronization happened and how much was missing.
#[derive(Debug, Clone, Serialize)]
pub struct Resync {
    /// The origin whose messages are missing, or empty when the log was trimmed past the
    /// position this instance had reached.
    pub origin: String,
    /// The sequence number expected, and the one found instead (0 when unknown).
    pub expected_seq: u64,
    pub found_seq: u64,
    pub reason: String,
    /// The snapshot restored to fill the gap, if one was.
    pub snapshot_version: Option<i64>,
}

type EnvelopeCallback = Arc<dyn Fn(&Envelope) + Send + Sync>;
type ConflictCallback = Arc<dyn Fn(&Conflict) + Send + Sync>;
type ResyncCallback = Arc<dyn Fn(&Resync) + Send + Sync>;

pub(crate) struct LocalSub {
    pattern: String,
    callback: EnvelopeCallback,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) catch_ups: AtomicU64,
    pub(crate) caught_up_messages: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) redis: RedisClient,
    pub(crate) opts: SyncOptions,
    pub(crate) origin: String,
    pub(crate) keys: LogKeys,
    pub(crate) clock: HybridClock,
    pub(crate) store: Mutex<EntityStore>,
    // Held while a message is numbered and queued, so sequence order is outbox order.
    pub(crate) outbox: Mutex<(u64, VecDeque<Outgoing>)>,
    pub(crate) outbox_notify: Notify,
    pub(crate) logged: watch::Sender<u64>,
    pub(crate) rx: Mutex<Receiver>,
    pub(crate) subs: Mutex<HashMap<u64, LocalSub>>,
    pub(crate) next_sub: AtomicU64,
    // Held while callbacks run, so unsubscribe can wait for one in flight.
    pub(crate) dispatch: Mutex<()>,
    pub(crate) on_conflict: Mutex<Vec<ConflictCallback>>,
    pub(crate) on_resync: Mutex<Vec<ResyncCallback>>,
    pub(crate) recent_conflicts: Mutex<VecDeque<Conflict>>,
    pub(crate) recent_resyncs: Mutex<VecDeque<Resync>>,
    pub(crate) counters: Counters,
    pub(crate) check_now: Notify,
    pub(crate) closed: AtomicBool,
    // Where snapshots and conflicts are stored, once a SnapshotManager is attached.
    pub(crate) db: Mutex<Option<crate::db::DatabaseManager>>,
    pub(crate) conflict_write_failures: Arc<AtomicU64>,
}

/// Events and entity state shared between instances. Thread-safe; cheap to clone (clones
/// share everything). Dropping the last clone stops the background tasks.
#[derive(Clone)]
pub struct StateSyncManager {
    inner: Arc<Inner>,
    _guard: Arc<TaskGuard>,
}

struct TaskGuard {
    inner: Arc<Inner>,
    bus_sub: Mutex<Option<SubscriptionId>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TaskGuard {
    fn stop(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(id) = lock(&self.bus_sub).take() {
            let redis = self.inner.redis.clone();
            crate::runtime::runtime().spawn(async move {
                let _ = redis.unsubscribe(id).await;
            });
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for StateSyncManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSyncManager").field("origin", &self.inner.origin).finish()
    }
}

/// The entity types the models broadcast, with last-writer-wins.
pub const BUILT_IN_TYPES: [&str; 3] = ["stream", "user", "session"];

impl StateSyncManager {
    /// Starts a manager on `redis`: subscribes to the bus, reads the log it has not applied,
    /// and starts the sender and the log check. The built-in entity types (`stream`, `user`,
    /// `session`) are registered with last-writer-wins.
    pub async fn start(redis: RedisClient, opts: SyncOptions) -> Result<Self> {
        Self::start_with_database(redis, opts, None).await
    }

    /// Like [`start`](Self::start), with a database (migrated to version 4 or later) from the
    /// first moment: conflicts are stored in `sync_conflicts`, and a log trimmed past this
    /// instance's position — also on its first read — is repaired from the latest snapshot.
    pub async fn start_with_database(
        redis: RedisClient,
        opts: SyncOptions,
        db: Option<crate::db::DatabaseManager>,
    ) -> Result<Self> {
        opts.check()?;
        let run = crate::crypto::random::token_hex(8)?;
        let origin = format!("{}/{run}", opts.instance);
        let physical: Arc<dyn PhysicalClock> = Arc::new(SystemClock { offset_ms: opts.clock_offset_ms });
        let clock = HybridClock::with_physical(&origin, physical, opts.max_skew_ms);
        let mut store = EntityStore::new();
        for t in BUILT_IN_TYPES {
            store.register_type(t, Strategy::LastWriterWins)?;
        }
        let inner = Arc::new(Inner {
            keys: LogKeys::new(&opts.namespace),
            redis: redis.clone(),
            origin,
            clock,
            store: Mutex::new(store),
            outbox: Mutex::new((0, VecDeque::new())),
            outbox_notify: Notify::new(),
            logged: watch::channel(0).0,
            rx: Mutex::new(Receiver::default()),
            subs: Mutex::new(HashMap::new()),
            next_sub: AtomicU64::new(1),
            dispatch: Mutex::new(()),
            on_conflict: Mutex::new(Vec::new()),
            on_resync: Mutex::new(Vec::new()),
            recent_conflicts: Mutex::new(VecDeque::new()),
            recent_resyncs: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
            check_now: Notify::new(),
            closed: AtomicBool::new(false),
            db: Mutex::new(db),
            conflict_write_failures: Arc::new(AtomicU64::new(0)),
            opts,
        });
        let weak = Arc::downgrade(&inner);
        let bus_sub = redis
            .subscribe(&inner.keys.bus, move |m: &Message| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_bus_message(m);
                }
            })
            .await?;
        // Read whatever the log holds that this instance has not applied (all of it, on a
        // fresh start) before the background check takes over.
        inner.catch_up().await?;
        let rt = crate::runtime::runtime();
        let tasks = vec![rt.spawn(send::sender(inner.clone())), rt.spawn(receive::checker(inner.clone()))];
        let guard = Arc::new(TaskGuard { inner: inner.clone(), bus_sub: Mutex::new(Some(bus_sub)), tasks });
        Ok(StateSyncManager { inner, _guard: guard })
    }

    /// The origin id this instance stamps on its messages.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The namespace this instance shares state in.
    pub fn namespace(&self) -> &str {
        &self.inner.opts.namespace
    }

    /// The state and log position, taken together (for snapshots).
    pub fn capture(&self) -> Capture {
        let rx = lock(&self.inner.rx);
        let image = self.inner.store().image().clone();
        Capture { image, origin_seqs: rx.last_seq.clone(), position: rx.pos.clone() }
    }

    /// From now on, conflicts are also stored in `sync_conflicts` and a trimmed log is
    /// repaired from the latest snapshot in `db`.
    pub(crate) fn attach_snapshots(&self, db: crate::db::DatabaseManager) {
        *lock(&self.inner.db) = Some(db);
    }

    /// A store with this manager's entity types and merge functions and no state.
    pub fn empty_store(&self) -> EntityStore {
        self.inner.store().empty_like()
    }

    /// The messages in the log after the entry `after` (all of it when None), in order;
    /// entries and messages that do not parse are skipped.
    pub async fn read_log_after(&self, after: Option<LogId>) -> Result<Vec<Envelope>> {
        let mut out = Vec::new();
        let mut from = after;
        loop {
            let entries = log::read_after(&self.inner.redis, &self.inner.keys, from, READ_BATCH).await?;
            let n = entries.len();
            for e in entries {
                from = Some(e.id);
                let Some(batch) = Batch::parse(&e.body) else { continue };
                out.extend(batch.records.iter().filter_map(|(_, json)| Envelope::parse(json).ok()));
            }
            if n < READ_BATCH {
                return Ok(out);
            }
        }
    }

    /// Declares an entity type and its conflict strategy (see [`Strategy`]).
    pub fn register_entity_type(&self, entity_type: &str, strategy: Strategy) -> Result<()> {
        self.inner.store().register_type(entity_type, strategy)
    }

    /// Sets (None removes) the merge function of a version-vector entity type.
    pub fn set_merge(&self, entity_type: &str, merge: Option<MergeFn>) -> Result<()> {
        self.inner.store().set_merge(entity_type, merge)
    }

    /// Publishes an event to every instance (this one included). `kind` is the channel, e.g.
    /// [`envelope::events::STREAM_STARTED`]; the payload's `id` field, if any, names the
    /// entity. Returns once the message is queued; [`flush`](Self::flush) waits for the log.
    pub fn publish(&self, kind: &str, payload: Value) -> Result<u64> {
        envelope::check_event_type(kind)?;
        let id = envelope::id_of(&payload);
        let inner = &self.inner;
        let entity = envelope::entity_of(kind);
        inner.enqueue(kind, |seq| {
            let hlc = inner.clock.now();
            envelope::to_text(kind, entity, &id, &inner.origin, seq, &hlc, &payload)
        })
    }

    /// [`publish`](Self::publish) for a payload given as JSON text (the C and C++ faces): at
    /// most [`MAX_PAYLOAD_BYTES`], any JSON value.
    pub fn publish_text(&self, kind: &str, payload_json: &str) -> Result<u64> {
        if payload_json.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::InvalidArgument(format!("the payload is larger than {MAX_PAYLOAD_BYTES} bytes")));
        }
        let payload: Value = serde_json::from_str(payload_json).map_err(|e| Error::Json(format!("payload: {e}")))?;
        self.publish(kind, payload)
    }

    /// Applies a change to an entity here and sends it to every other instance. The delta is
    /// a JSON object of changed fields; null deletes a field. Returns what it did here. The
    /// change is queued for the log; [`flush`](Self::flush) waits until the log has it.
    pub fn apply_delta(&self, entity_type: &str, id: &str, delta: &Map<String, Value>) -> Result<Outcome> {
        let inner = &self.inner;
        let text_len = envelope::json_len(delta).unwrap_or(usize::MAX);
        if text_len > super::state::MAX_DELTA_BYTES {
            return Err(Error::InvalidArgument(format!(
                "a delta is {text_len} bytes; the limit is {}",
                super::state::MAX_DELTA_BYTES
            )));
        }
        let kind = format!("{entity_type}{DELTA_SUFFIX}");
        let mut outcome = None;
        inner.enqueue(&kind, |seq| {
            let mut store = inner.store();
            if store.strategy(entity_type)? == Strategy::LastWriterWins {
                // The delta is applied and sent as it is, without a copy.
                let (hlc, out) = store.local_fields(&inner.clock, entity_type, id, delta)?;
                drop(store);
                outcome = Some(out);
                let body = FieldsRef { strategy: "lww", delta };
                return envelope::to_text(&kind, entity_type, id, &inner.origin, seq, &hlc, &body);
            }
            let (change, out) = store.local_change(&inner.clock, entity_type, id, delta)?;
            drop(store);
            outcome = Some(out);
            envelope::to_text(&kind, &change.entity_type, &change.id, &inner.origin, seq, &change.hlc, &change.body)
        })?;
        Ok(outcome.unwrap_or(Outcome::Unchanged))
    }

    /// The entity's visible state here, or None when no change to it has been seen.
    pub fn get_snapshot(&self, entity_type: &str, id: &str) -> Result<Option<Map<String, Value>>> {
        self.inner.store().snapshot(entity_type, id)
    }

    /// Waits until every message queued so far is in the log, or the timeout passes.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        let target = self.inner.outbox_lock().0;
        let mut rx = self.inner.logged.subscribe();
        let waited =
            tokio::time::timeout(timeout, rx.wait_for(|&logged| logged >= target)).await.map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::State("the state sync manager was stopped".into())),
            Err(_) => Err(Error::Timeout(format!(
                "{} message(s) were not yet in the log after {timeout:?}; they stay queued",
                self.inner.outbox_lock().1.len()
            ))),
        }
    }

    /// Subscribes to events whose type matches the glob `pattern` (`stream.*`, `*.delta`).
    /// State changes are delivered after they were applied here.
    pub fn subscribe<F>(&self, pattern: &str, callback: F) -> Result<u64>
    where
        F: Fn(&Envelope) + Send + Sync + 'static,
    {
        if pattern.is_empty() || pattern.len() > envelope::MAX_TYPE_BYTES {
            return Err(Error::InvalidArgument("a subscription pattern must be 1 to 256 bytes".into()));
        }
        let id = self.inner.next_sub.fetch_add(1, Ordering::SeqCst);
        let sub = LocalSub { pattern: pattern.to_string(), callback: Arc::new(callback) };
        lock(&self.inner.subs).insert(id, sub);
        Ok(id)
    }

    /// Ends a subscription. Once this returns the callback does not run again (unless called
    /// from inside a callback, where the running one finishes).
    pub fn unsubscribe(&self, id: u64) -> Result<()> {
        if lock(&self.inner.subs).remove(&id).is_none() {
            return Err(Error::NotFound(format!("subscription {id}")));
        }
        if !IN_CALLBACK.with(|c| c.get()) {
            drop(lock(&self.inner.dispatch));
        }
        Ok(())
    }

    /// Calls `callback` for every conflict no merge function resolved.
    pub fn on_conflict<F: Fn(&Conflict) + Send + Sync + 'static>(&self, callback: F) {
        lock(&self.inner.on_conflict).push(Arc::new(callback));
    }

    /// Calls `callback` whenever part of the history was missing from the log.
    pub fn on_resync<F: Fn(&Resync) + Send + Sync + 'static>(&self, callback: F) {
        lock(&self.inner.on_resync).push(Arc::new(callback));
    }

    /// The most recent conflicts (at most 1,000), oldest first.
    pub fn recent_conflicts(&self) -> Vec<Conflict> {
        lock(&self.inner.recent_conflicts).iter().cloned().collect()
    }

    /// The most recent resynchronizations (at most 100), oldest first — including one that
    /// happened while the manager started, before any callback could be registered.
    pub fn recent_resyncs(&self) -> Vec<Resync> {
        lock(&self.inner.recent_resyncs).iter().cloned().collect()
    }

    /// Ends the manager for good: no subscription, conflict or resync callback runs after
    /// this returns (unless called from inside one, where the running one finishes), the
    /// background tasks stop, and later calls that send are refused. Messages still in the
    /// outbox are dropped; call [`flush`](Self::flush) first to keep them.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        lock(&inner.subs).clear();
        lock(&inner.on_conflict).clear();
        lock(&inner.on_resync).clear();
        if !IN_CALLBACK.with(|c| c.get()) {
            drop(lock(&inner.dispatch));
        }
        self._guard.stop();
    }

    /// [`status`](Self::status) with the recent conflicts and resyncs, as one JSON document
    /// (what the C and C++ faces and `rsdb sync status --json` hand out).
    pub async fn status_report(&self) -> Result<Value> {
        let mut v = serde_json::to_value(self.status().await?)?;
        v["recent_conflicts"] = serde_json::to_value(self.recent_conflicts())?;
        v["recent_resyncs"] = serde_json::to_value(self.recent_resyncs())?;
        Ok(v)
    }

    /// Reads the log now (normally the background check does, every `check_interval`).
    pub async fn catch_up(&self) -> Result<()> {
        self.inner.catch_up().await
    }

    /// Counters and positions; `lag` costs one read of the log's counter.
    pub async fn status(&self) -> Result<SyncStatus> {
        let inner = &self.inner;
        let c = &inner.counters;
        let pos = lock(&inner.rx).pos.clone();
        let lag = match (log::end(&inner.redis, &inner.keys).await?, &pos) {
            (Some((epoch, n)), Some(p)) if epoch == p.epoch => n.saturating_sub(p.n),
            (Some((_, n)), _) => n,
            (None, _) => 0,
        };
        Ok(SyncStatus {
            origin: inner.origin.clone(),
            namespace: inner.opts.namespace.clone(),
            subscriptions: lock(&inner.subs).len(),
            sent: c.sent.load(Ordering::Relaxed),
            outbox: inner.outbox_lock().1.len(),
            received: c.received.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            catch_ups: c.catch_ups.load(Ordering::Relaxed),
            caught_up_messages: c.caught_up_messages.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            conflict_write_failures: inner.conflict_write_failures.load(Ordering::Relaxed),
            last_log_id: pos.as_ref().map(LogPosition::id_text).unwrap_or_default(),
            lag,
        })
    }
}

impl Inner {
    pub(crate) fn store(&self) -> MutexGuard<'_, EntityStore> {
        lock(&self.store)
    }

    pub(crate) fn outbox_lock(&self) -> MutexGuard<'_, (u64, VecDeque<Outgoing>)> {
        lock(&self.outbox)
    }

    // Numbers and queues one message of type `kind`; `make` builds its envelope's JSON text
    // from its sequence number and may apply it locally. Nothing is applied or numbered when
    // the outbox is full or `make` fails.
    pub(crate) fn enqueue(&self, kind: &str, make: impl FnOnce(u64) -> Result<String>) -> Result<u64> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::State("the state sync manager is closed".into()));
        }
        let mut outbox = self.outbox_lock();
        if outbox.1.len() >= self.opts.max_outbox {
            return Err(Error::State(format!(
                "{} messages are waiting for Redis (the outbox limit); nothing was applied",
                outbox.1.len()
            )));
        }
        let seq = outbox.0 + 1;
        let text = make(seq)?;
        if text.len() > MAX_PAYLOAD_BYTES + 1024 {
            return Err(Error::InvalidArgument(format!(
                "the message is {} bytes; the payload limit is {MAX_PAYLOAD_BYTES}",
                text.len()
            )));
        }
        outbox.0 = seq;
        outbox.1.push_back(Outgoing { seq, kind: kind.to_string(), json: text });
        drop(outbox);
        self.outbox_notify.notify_one();
        Ok(seq)
    }

    // Applies another instance's change; false when it was refused.
    pub(crate) fn apply_remote(&self, env: &Envelope) -> bool {
        // The change is read in place from the payload (what `ChangeBody` would deserialize),
        // so only what the store keeps is copied.
        let p = &env.payload;
        let vv: Option<VersionVector> = match p.get("strategy").and_then(Value::as_str) {
            Some("vv") => p.get("vv").and_then(|v| VersionVector::deserialize(v).ok()),
            _ => None,
        };
        let body = match (p.get("strategy").and_then(Value::as_str), &vv) {
            (Some("lww"), _) => p.get("delta").and_then(Value::as_object).map(BodyRef::Fields),
            (Some("vv"), Some(vv)) => p.get("state").and_then(Value::as_object).map(|s| BodyRef::State(s, vv)),
            _ => None,
        };
        let Some(body) = body else {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let outcome = self.store().apply_ref(&env.entity, &env.id, &env.hlc, body);
        match outcome {
            Ok(Outcome::Conflict(c)) => {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                {
                    let mut recent = lock(&self.recent_conflicts);
                    if recent.len() >= 1000 {
                        recent.pop_front();
                    }
                    recent.push_back((*c).clone());
                }
                self.store_conflict(&c);
                let callbacks: Vec<ConflictCallback> = lock(&self.on_conflict).clone();
                self.run_callbacks(|| callbacks.iter().for_each(|cb| cb(&c)));
                true
            }
            Ok(_) => true,
            Err(_) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    // Writes a conflict to sync_conflicts when a database is attached (in the background: the
    // receiving thread does not wait for PostgreSQL). A failed write is counted.
    pub(crate) fn store_conflict(&self, c: &Conflict) {
        let Some(db) = lock(&self.db).clone() else { return };
        let (ns, by) = (self.opts.namespace.clone(), self.origin.clone());
        let c = c.clone();
        let failures = self.conflict_write_failures.clone();
        crate::runtime::runtime().spawn(async move {
            let kept = serde_json::json!({"state": c.kept, "hlc": c.kept_hlc, "vv": c.kept_vv});
            let lost = serde_json::to_value(&c.lost).unwrap_or_default();
            let r = db
                .execute(
                    "INSERT INTO sync_conflicts (namespace, entity_type, entity_id, kept, lost, reason, detected_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&ns, &c.entity_type, &c.id, &kept, &lost, &c.reason, &by],
                )
                .await;
            if r.is_err() {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    pub(crate) fn deliver(&self, env: &Envelope) {
        // The list is taken under the dispatch lock, so a subscription removed before it was
        // taken is not called, and unsubscribe waits for one taken before the removal.
        self.run_callbacks(|| {
            let callbacks: Vec<EnvelopeCallback> = lock(&self.subs)
                .values()
                .filter(|s| envelope::glob_match(&s.pattern, &env.kind))
                .map(|s| s.callback.clone())
                .collect();
            callbacks.iter().for_each(|cb| cb(env));
        });
    }

    // True when a subscription's pattern matches the event type.
    pub(crate) fn has_subscriber(&self, kind: &str) -> bool {
        lock(&self.subs).values().any(|s| envelope::glob_match(&s.pattern, kind))
    }

    pub(crate) fn run_callbacks(&self, f: impl FnOnce()) {
        let _running = lock(&self.dispatch);
        IN_CALLBACK.with(|c| c.set(true));
        f();
        IN_CALLBACK.with(|c| c.set(false));
    }

    pub(crate) fn report_resync(&self, r: Resync) {
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        {
            let mut recent = lock(&self.recent_resyncs);
            if recent.len() >= 100 {
                recent.pop_front();
            }
            recent.push_back(r.clone());
        }
        let callbacks: Vec<ResyncCallback> = lock(&self.on_resync).clone();
        self.run_callbacks(|| callbacks.iter().for_each(|cb| cb(&r)));
    }
}

// `ChangeBody::Fields` as it is written, with the delta borrowed.
#[derive(Serialize)]
struct FieldsRef<'a> {
    strategy: &'static str,
    delta: &'a Map<String, Value>,
}

thread_local! {
    // True on a thread while it runs this module's callbacks.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
