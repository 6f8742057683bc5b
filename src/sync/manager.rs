//! `StateSyncManager`: events and entity changes between RootStream instances over Redis.
//!
//! Every outgoing message gets the origin's next sequence number and is written by one Lua
//! script that appends it to a capped Redis stream (the durable, ordered log) and publishes it,
//! with the log id, on the bus channel — one round trip, one atomic step, so the pub/sub order
//! is the log order. The log key and the bus channel share a hash tag, so the script also runs
//! on Redis Cluster.
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

use super::envelope::{self, Envelope, DELTA_SUFFIX, ENVELOPE_VERSION, MAX_PAYLOAD_BYTES};
use super::hlc::{HybridClock, PhysicalClock, SystemClock, DEFAULT_MAX_SKEW_MS};
use super::state::{Change, ChangeBody, Conflict, EntityStore, MergeFn, Outcome, Strategy};
use crate::cache::{Message, RedisClient, SubscriptionId};
use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

// Appends the message to the log and publishes "<log id> <message>" on the bus.
const SEND_SCRIPT: &str = r#"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[3])
redis.call('PUBLISH', ARGV[2], id .. ' ' .. ARGV[3])
return id
"#;

/// Messages sent per pipelined round trip.
const SEND_BATCH: usize = 512;
/// Log entries read per round trip when catching up.
const READ_BATCH: usize = 1000;

/// How a manager is set up.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// This instance's id (default: the configuration's `instance_id`). A per-run suffix is
    /// added to form the origin.
    pub instance: String,
    /// Names the log and the bus; instances with the same namespace share state.
    pub namespace: String,
    /// Entries the log keeps at least (`XADD MAXLEN ~`).
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
    /// The last log id applied, and log entries after it (at most 10,000 counted).
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
}

type EnvelopeCallback = Arc<dyn Fn(&Envelope) + Send + Sync>;
type ConflictCallback = Arc<dyn Fn(&Conflict) + Send + Sync>;
type ResyncCallback = Arc<dyn Fn(&Resync) + Send + Sync>;

struct LocalSub {
    pattern: String,
    callback: EnvelopeCallback,
}

struct Outgoing {
    seq: u64,
    text: String,
}

#[derive(Default)]
struct Receiver {
    last_seq: HashMap<String, u64>,
    last_id: Option<(u64, u64)>,
    catching_up: bool,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    catch_ups: AtomicU64,
    caught_up_messages: AtomicU64,
    resyncs: AtomicU64,
    conflicts: AtomicU64,
    rejected: AtomicU64,
}

struct Inner {
    redis: RedisClient,
    opts: SyncOptions,
    origin: String,
    log_key: String,
    bus: String,
    clock: HybridClock,
    store: Mutex<EntityStore>,
    // Held while a message is numbered and queued, so sequence order is outbox order.
    outbox: Mutex<(u64, VecDeque<Outgoing>)>,
    outbox_notify: Notify,
    logged: watch::Sender<u64>,
    rx: Mutex<Receiver>,
    subs: Mutex<HashMap<u64, LocalSub>>,
    next_sub: AtomicU64,
    // Held while callbacks run, so unsubscribe can wait for one in flight.
    dispatch: Mutex<()>,
    on_conflict: Mutex<Vec<ConflictCallback>>,
    on_resync: Mutex<Vec<ResyncCallback>>,
    recent_conflicts: Mutex<VecDeque<Conflict>>,
    counters: Counters,
    check_now: Notify,
    closed: AtomicBool,
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
    bus_sub: Option<SubscriptionId>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(id) = self.bus_sub {
            let redis = self.inner.redis.clone();
            crate::runtime::runtime().spawn(async move {
                let _ = redis.unsubscribe(id).await;
            });
        }
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
        opts.check()?;
        let run = crate::crypto::random::token_hex(8)?;
        let origin = format!("{}/{run}", opts.instance);
        let physical: Arc<dyn PhysicalClock> = Arc::new(SystemClock { offset_ms: opts.clock_offset_ms });
        let clock = HybridClock::with_physical(&origin, physical, opts.max_skew_ms);
        let mut store = EntityStore::new();
        for t in BUILT_IN_TYPES {
            store.register_type(t, Strategy::LastWriterWins)?;
        }
        let tag = format!("{{{}:sync}}", opts.namespace);
        let inner = Arc::new(Inner {
            log_key: format!("{tag}:log"),
            bus: format!("{tag}:bus"),
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
            counters: Counters::default(),
            check_now: Notify::new(),
            closed: AtomicBool::new(false),
            opts,
        });
        let weak = Arc::downgrade(&inner);
        let bus_sub = redis
            .subscribe(&inner.bus, move |m: &Message| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_bus_message(m);
                }
            })
            .await?;
        // Read whatever the log holds that this instance has not applied (all of it, on a
        // fresh start) before the background check takes over.
        inner.catch_up().await?;
        let rt = crate::runtime::runtime();
        let tasks = vec![rt.spawn(sender(inner.clone())), rt.spawn(checker(inner.clone()))];
        let guard = Arc::new(TaskGuard { inner: inner.clone(), bus_sub: Some(bus_sub), tasks });
        Ok(StateSyncManager { inner, _guard: guard })
    }

    /// The origin id this instance stamps on its messages.
    pub fn origin(&self) -> &str {
        &self.inner.origin
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
        inner.enqueue(|seq| {
            Ok(Envelope {
                v: ENVELOPE_VERSION,
                kind: kind.to_string(),
                entity: envelope::entity_of(kind).to_string(),
                id,
                origin: inner.origin.clone(),
                seq,
                hlc: inner.clock.now(),
                payload,
            })
        })
    }

    /// Applies a change to an entity here and sends it to every other instance. The delta is
    /// a JSON object of changed fields; null deletes a field. Returns what it did here. The
    /// change is queued for the log; [`flush`](Self::flush) waits until the log has it.
    pub fn apply_delta(&self, entity_type: &str, id: &str, delta: &Map<String, Value>) -> Result<Outcome> {
        let inner = &self.inner;
        let text_len = serde_json::to_string(delta).map(|t| t.len()).unwrap_or(usize::MAX);
        if text_len > super::state::MAX_DELTA_BYTES {
            return Err(Error::InvalidArgument(format!(
                "a delta is {text_len} bytes; the limit is {}",
                super::state::MAX_DELTA_BYTES
            )));
        }
        let mut outcome = None;
        inner.enqueue(|seq| {
            let (change, out) = inner.store().local_change(&inner.clock, entity_type, id, delta)?;
            outcome = Some(out);
            Ok(Envelope {
                v: ENVELOPE_VERSION,
                kind: format!("{entity_type}{DELTA_SUFFIX}"),
                entity: change.entity_type.clone(),
                id: change.id.clone(),
                origin: inner.origin.clone(),
                seq,
                hlc: change.hlc.clone(),
                payload: serde_json::to_value(&change.body)?,
            })
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

    /// Reads the log now (normally the background check does, every `check_interval`).
    pub async fn catch_up(&self) -> Result<()> {
        self.inner.catch_up().await
    }

    /// Counters and positions; `lag` costs one read of the log.
    pub async fn status(&self) -> Result<SyncStatus> {
        let inner = &self.inner;
        let c = &inner.counters;
        let last = lock(&inner.rx).last_id;
        let start = match last {
            Some((ms, n)) => format!("({ms}-{n}"),
            None => "-".to_string(),
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&inner.log_key).arg(&start).arg("+").arg("COUNT").arg(10_000);
        let behind: Vec<redis::Value> = inner.redis.query(&cmd, true).await?;
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
            last_log_id: last.map(|(ms, n)| format!("{ms}-{n}")).unwrap_or_default(),
            lag: behind.len() as u64,
        })
    }
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, EntityStore> {
        lock(&self.store)
    }

    fn outbox_lock(&self) -> MutexGuard<'_, (u64, VecDeque<Outgoing>)> {
        lock(&self.outbox)
    }

    // Numbers and queues one message; `make` builds it from its sequence number and may
    // apply it locally. Nothing is applied or numbered when the outbox is full or `make` fails.
    fn enqueue(&self, make: impl FnOnce(u64) -> Result<Envelope>) -> Result<u64> {
        let mut outbox = self.outbox_lock();
        if outbox.1.len() >= self.opts.max_outbox {
            return Err(Error::State(format!(
                "{} messages are waiting for Redis (the outbox limit); nothing was applied",
                outbox.1.len()
            )));
        }
        let seq = outbox.0 + 1;
        let env = make(seq)?;
        let text = serde_json::to_string(&env)?;
        if text.len() > MAX_PAYLOAD_BYTES + 1024 {
            return Err(Error::InvalidArgument(format!(
                "the message is {} bytes; the payload limit is {MAX_PAYLOAD_BYTES}",
                text.len()
            )));
        }
        outbox.0 = seq;
        outbox.1.push_back(Outgoing { seq, text });
        drop(outbox);
        self.outbox_notify.notify_one();
        Ok(seq)
    }

    fn on_bus_message(&self, m: &Message) {
        let text = m.payload_str();
        let Some((id, body)) = text.split_once(' ') else {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(log_id) = parse_log_id(id) else {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut rx = lock(&self.rx);
        if rx.catching_up {
            // The log read in progress delivers this message in order.
            return;
        }
        if !self.take(&mut rx, log_id, body, false) {
            // A gap: leave this message to the log read, which starts before it.
            rx.catching_up = true;
            drop(rx);
            self.check_now.notify_one();
        }
    }

    // Handles one log entry in order. Returns false (doing nothing) when the entry comes after
    // a gap in its origin's numbers and `accept_gap` is false.
    fn take(&self, rx: &mut Receiver, log_id: (u64, u64), body: &str, accept_gap: bool) -> bool {
        if rx.last_id.is_some_and(|last| log_id <= last) {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let env = match Envelope::parse(body) {
            Ok(e) => e,
            Err(_) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                rx.last_id = Some(log_id);
                return true;
            }
        };
        let last_seq = rx.last_seq.get(&env.origin).copied().unwrap_or(0);
        if env.seq <= last_seq {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            rx.last_id = Some(log_id);
            return true;
        }
        if env.seq != last_seq + 1 {
            if !accept_gap {
                return false;
            }
            self.report_resync(Resync {
                origin: env.origin.clone(),
                expected_seq: last_seq + 1,
                found_seq: env.seq,
                reason: "messages of this origin are no longer in the log".into(),
            });
        }
        rx.last_seq.insert(env.origin.clone(), env.seq);
        rx.last_id = Some(log_id);
        let own = env.origin == self.origin;
        if !own {
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            if self.clock.observe(&env.hlc).is_err() {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            if env.is_delta() && !self.apply_remote(&env) {
                return true;
            }
        }
        self.deliver(&env);
        true
    }

    // Applies another instance's change; false when it was refused.
    fn apply_remote(&self, env: &Envelope) -> bool {
        let body: ChangeBody = match serde_json::from_value(env.payload.clone()) {
            Ok(b) => b,
            Err(_) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let change = Change { entity_type: env.entity.clone(), id: env.id.clone(), hlc: env.hlc.clone(), body };
        let outcome = self.store().apply(&change);
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

    fn deliver(&self, env: &Envelope) {
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

    fn run_callbacks(&self, f: impl FnOnce()) {
        let _running = lock(&self.dispatch);
        IN_CALLBACK.with(|c| c.set(true));
        f();
        IN_CALLBACK.with(|c| c.set(false));
    }

    fn report_resync(&self, r: Resync) {
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        let callbacks: Vec<ResyncCallback> = lock(&self.on_resync).clone();
        self.run_callbacks(|| callbacks.iter().for_each(|cb| cb(&r)));
    }

    // Reads the log from the last id applied to its end.
    async fn catch_up(&self) -> Result<()> {
        {
            lock(&self.rx).catching_up = true;
        }
        let result = self.read_log().await;
        lock(&self.rx).catching_up = false;
        result
    }

    async fn read_log(&self) -> Result<()> {
        let start = lock(&self.rx).last_id;
        if let Some(last) = start {
            if let Some(trimmed) = self.max_deleted_id().await? {
                if trimmed > last {
                    self.report_resync(Resync {
                        origin: String::new(),
                        expected_seq: 0,
                        found_seq: 0,
                        reason: format!(
                            "the log was trimmed up to {}-{}, past the last applied entry {}-{}",
                            trimmed.0, trimmed.1, last.0, last.1
                        ),
                    });
                }
            }
        }
        let mut counted = false;
        loop {
            let from = match lock(&self.rx).last_id {
                Some((ms, n)) => format!("({ms}-{n}"),
                None => "-".to_string(),
            };
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&self.log_key).arg(&from).arg("+").arg("COUNT").arg(READ_BATCH);
            let entries: Vec<(String, HashMap<String, String>)> = self.redis.query(&cmd, true).await?;
            if entries.is_empty() {
                return Ok(());
            }
            if !counted {
                self.counters.catch_ups.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
            let mut rx = lock(&self.rx);
            for (id, fields) in &entries {
                let Some(log_id) = parse_log_id(id) else { continue };
                let body = fields.get("m").map(String::as_str).unwrap_or("");
                let before = rx.last_id;
                self.take(&mut rx, log_id, body, true);
                if rx.last_id != before {
                    self.counters.caught_up_messages.fetch_add(1, Ordering::Relaxed);
                }
            }
            if entries.len() < READ_BATCH {
                return Ok(());
            }
        }
    }

    async fn max_deleted_id(&self) -> Result<Option<(u64, u64)>> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("STREAM").arg(&self.log_key);
        let info: redis::Value = match self.redis.query(&cmd, true).await {
            Ok(v) => v,
            Err(Error::Redis(m)) if m.contains("no such key") => return Ok(None),
            Err(e) => return Err(e),
        };
        let pairs: Vec<redis::Value> = match info {
            redis::Value::Array(v) => v,
            redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => return Ok(None),
        };
        for kv in pairs.chunks(2) {
            if let [k, v] = kv {
                let key: String = redis::from_redis_value(k.clone()).unwrap_or_default();
                if key == "max-deleted-entry-id" {
                    let id: String = redis::from_redis_value(v.clone()).unwrap_or_default();
                    return Ok(parse_log_id(&id).filter(|&i| i != (0, 0)));
                }
            }
        }
        Ok(None)
    }

    async fn send_batch(&self, hash: &str) -> std::result::Result<usize, redis::RedisError> {
        let batch: Vec<(u64, String)> =
            self.outbox_lock().1.iter().take(SEND_BATCH).map(|o| (o.seq, o.text.clone())).collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for (_, text) in &batch {
            pipe.cmd("EVALSHA")
                .arg(hash)
                .arg(1)
                .arg(&self.log_key)
                .arg(self.opts.log_max_len)
                .arg(&self.bus)
                .arg(text)
                .ignore();
        }
        let mut conn = self.redis.connection();
        tokio::time::timeout(self.redis.timeout(), pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))??;
        let last = batch.last().map(|b| b.0).unwrap_or(0);
        {
            let mut outbox = self.outbox_lock();
            while outbox.1.front().is_some_and(|o| o.seq <= last) {
                outbox.1.pop_front();
            }
        }
        self.counters.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.logged.send_replace(last);
        Ok(batch.len())
    }
}

// Drains the outbox into the log, in order, retrying with backoff while Redis is away.
async fn sender(inner: Arc<Inner>) {
    let script = redis::Script::new(SEND_SCRIPT);
    let hash = script.get_hash().to_string();
    let mut loaded = false;
    let mut backoff = Duration::from_millis(20);
    while !inner.closed.load(Ordering::SeqCst) {
        if !loaded {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(SEND_SCRIPT);
            if inner.redis.query::<String>(&cmd, true).await.is_err() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            loaded = true;
        }
        let idle = inner.outbox_lock().1.is_empty();
        if idle {
            let notified = inner.outbox_notify.notified();
            if inner.outbox_lock().1.is_empty() {
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
            continue;
        }
        match inner.send_batch(&hash).await {
            Ok(_) => backoff = Duration::from_millis(20),
            Err(e) => {
                // A restarted server has lost its scripts.
                if e.code() == Some("NOSCRIPT") {
                    loaded = false;
                    continue;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

// Reads the log when a gap was seen, after the subscriber reconnected, or when the log's end
// is past what was applied.
async fn checker(inner: Arc<Inner>) {
    let mut reconnects = inner.redis.pubsub_stats().reconnects;
    let mut last_run = Instant::now();
    while !inner.closed.load(Ordering::SeqCst) {
        let _ = tokio::time::timeout(inner.opts.check_interval, inner.check_now.notified()).await;
        let now_reconnects = inner.redis.pubsub_stats().reconnects;
        let gap = lock(&inner.rx).catching_up;
        let due = last_run.elapsed() >= inner.opts.check_interval;
        if !(gap || now_reconnects != reconnects || due) {
            continue;
        }
        last_run = Instant::now();
        let needed = gap || now_reconnects != reconnects || inner.log_is_ahead().await.unwrap_or(false);
        if needed && inner.catch_up().await.is_ok() {
            reconnects = now_reconnects;
        }
    }
}

impl Inner {
    async fn log_is_ahead(&self) -> Result<bool> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&self.log_key).arg("+").arg("-").arg("COUNT").arg(1);
        let last: Vec<(String, HashMap<String, String>)> = self.redis.query(&cmd, true).await?;
        let end = last.first().and_then(|(id, _)| parse_log_id(id));
        Ok(match (end, lock(&self.rx).last_id) {
            (Some(end), Some(applied)) => end > applied,
            (Some(_), None) => true,
            (None, _) => false,
        })
    }
}

fn parse_log_id(id: &str) -> Option<(u64, u64)> {
    let (ms, n) = id.split_once('-')?;
    Some((ms.parse().ok()?, n.parse().ok()?))
}

thread_local! {
    // True on a thread while it runs this module's callbacks.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
