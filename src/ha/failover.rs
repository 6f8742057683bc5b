//! `FailoverManager`: automatic failover, manual failover and planned switchover of a
//! PostgreSQL cluster of one primary and streaming standbys, coordinated through a leader lease
//! in etcd.
//!
//! Every instance of the program may run one; only the instance holding the leader lease
//! ([`LeaderLease`]) acts. The leader probes every node each loop and writes the primary's
//! position to etcd (guarded by "the leader key still names me"). When the primary fails
//! `failure_threshold` consecutive checks, the leader:
//!
//! 1. refuses if the primary still answers as a primary, or if another node already is one
//!    (it then adopts that node instead of promoting a second);
//! 2. chooses the most advanced reachable standby (max of received and replayed WAL), and
//!    refuses if it lags the last known primary position by more than
//!    `maximum_lag_on_failover` or if no standby answers ([`Error::NoCandidate`], with an alert
//!    saying why);
//! 3. fences the old primary: stopped (`pg_ctl stop -m immediate`) when its data directory is
//!    local, otherwise made read-only over SQL with its client sessions terminated; either way
//!    `default_transaction_read_only` is set so a restart does not bring back a writable
//!    primary (a `target_session_attrs=read-write` pool refuses it), and it is marked fenced in
//!    etcd until it is rejoined;
//! 4. checks the lease once more, promotes, points the other standbys at the new primary,
//!    sets its synchronous standby list, moves the attached pools, and records the change (etcd
//!    primary key and history, a `failover_history` row, callbacks, a `cluster.failover` event).
//!
//! Instances that do not hold the lease read the primary key each loop and move their attached
//! pools when it changes. Callbacks run on the thread that made the change: the manager's loop
//! thread (`rsdb-failover`) for automatic failovers and for changes seen in etcd, the caller's
//! thread for [`FailoverManager::switchover`] and [`FailoverManager::failover`].

use super::etcd::{parse_endpoints, EtcdClient};
use super::lease::{LeaderLease, MIN_TTL};
use super::node::{self, execute_each, probe, probe_all, Lsn, NodeSet, NodeState, PgNode};
use crate::config::Config;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use crate::sync::StateSyncManager;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The event type published through an attached [`StateSyncManager`] on every role change.
pub const FAILOVER_EVENT: &str = "cluster.failover";

/// What an acknowledged commit is guaranteed to survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaMode {
    /// Quorum commit on any one standby: every acknowledged commit is on a standby that can be
    /// promoted. A failover loses no acknowledged write.
    Sync,
    /// No synchronous standby: commits do not wait, and a failover may lose what the chosen
    /// standby had not received (reported as bytes lost).
    Async,
}

impl HaMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sync" => Ok(HaMode::Sync),
            "async" => Ok(HaMode::Async),
            other => Err(Error::Config(format!("ha mode must be sync or async, got {other:?}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HaMode::Sync => "sync",
            HaMode::Async => "async",
        }
    }
}

/// How the old primary is fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceMode {
    /// Stop it when its data directory is on this machine, else make it read-only over SQL.
    Stop,
    /// Only make it read-only over SQL (never stop it).
    ReadOnly,
}

/// Settings of a [`FailoverManager`]. Durations are milliseconds in JSON (`lease_ttl_ms`, …).
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// The cluster's name; its keys live under `/rootstream/ha/<cluster>/`.
    pub cluster: String,
    /// This instance's name in the leader key (default: the configuration's `instance_id`).
    pub member: String,
    pub etcd_endpoints: Vec<String>,
    /// The leader lease's TTL (default 5 s, at least 2 s). An instance that dies while holding
    /// it delays the next failover by at most this long.
    pub lease_ttl: Duration,
    /// How long before etcd's expiry the lease stops counting as held (default 2 s, at most
    /// half the TTL).
    pub safety_margin: Duration,
    /// Time between two loops (default 500 ms).
    pub loop_interval: Duration,
    /// Consecutive failed checks of the primary before a failover (default 3).
    pub failure_threshold: u32,
    /// Time limit of one probe of one node (default 1 s).
    pub check_timeout: Duration,
    /// Time limit of one etcd request on one endpoint (default 1 s).
    pub etcd_timeout: Duration,
    /// A standby further behind the last known primary position than this many bytes is never
    /// promoted automatically (default 1 MiB).
    pub maximum_lag_on_failover: u64,
    pub mode: HaMode,
    pub fence: FenceMode,
    /// How long a promotion may take (default 30 s).
    pub promote_timeout: Duration,
    /// How long a switchover waits for the target to catch up (default 30 s).
    pub switchover_timeout: Duration,
    /// When false the loop watches and records but never promotes on its own (default true).
    pub auto_failover: bool,
}

impl FailoverOptions {
    /// Options from the configuration: `ha_cluster`, `instance_id`, `etcd_endpoints`, `ha_mode`.
    pub fn from_config(cfg: &Config) -> Result<Self> {
        Ok(FailoverOptions {
            cluster: cfg.ha_cluster.clone(),
            member: cfg.instance_id.clone(),
            etcd_endpoints: cfg.etcd_endpoints.clone(),
            lease_ttl: Duration::from_secs(5),
            safety_margin: LeaderLease::default_margin(Duration::from_secs(5)),
            loop_interval: Duration::from_millis(500),
            failure_threshold: 3,
            check_timeout: Duration::from_secs(1),
            etcd_timeout: Duration::from_secs(1),
            maximum_lag_on_failover: 1 << 20,
            mode: HaMode::parse(&cfg.ha_mode)?,
            fence: FenceMode::Stop,
            promote_timeout: Duration::from_secs(30),
            switchover_timeout: Duration::from_secs(30),
            auto_failover: true,
        })
    }

    /// Applies a JSON object of overrides: `cluster`, `member`, `etcd_endpoints` (array or
    /// comma list), `lease_ttl_ms`, `safety_margin_ms`, `loop_interval_ms`, `failure_threshold`,
    /// `check_timeout_ms`, `etcd_timeout_ms`, `maximum_lag_on_failover` (bytes), `mode`
    /// (`sync`|`async`), `fence` (`stop`|`read_only`), `promote_timeout_ms`,
    /// `switchover_timeout_ms`, `auto_failover`. Unknown keys are refused.
    pub fn apply_json(&mut self, text: &str) -> Result<()> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Json(format!("failover options: {e}")))?;
        let obj = v.as_object().ok_or_else(|| Error::Json("failover options must be a JSON object".into()))?;
        let mut margin_set = false;
        for (k, val) in obj {
            let ms = || -> Result<Duration> {
                val.as_u64()
                    .filter(|n| *n > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| Error::InvalidArgument(format!("{k} must be a positive number of milliseconds")))
            };
            let text = || -> Result<String> {
                val.as_str().map(str::to_string).ok_or_else(|| Error::InvalidArgument(format!("{k} must be a string")))
            };
            match k.as_str() {
                "cluster" => self.cluster = text()?,
                "member" => self.member = text()?,
                "etcd_endpoints" => {
                    self.etcd_endpoints = match val {
                        Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                        Value::String(s) => parse_endpoints(s)?,
                        _ => return Err(Error::InvalidArgument("etcd_endpoints must be an array or a string".into())),
                    }
                }
                "lease_ttl_ms" => self.lease_ttl = ms()?,
                "safety_margin_ms" => {
                    self.safety_margin = ms()?;
                    margin_set = true;
                }
                "loop_interval_ms" => self.loop_interval = ms()?,
                "failure_threshold" => {
                    self.failure_threshold = val
                        .as_u64()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| Error::InvalidArgument("failure_threshold must be 1 to 1000".into()))?
                        as u32
                }
                "check_timeout_ms" => self.check_timeout = ms()?,
                "etcd_timeout_ms" => self.etcd_timeout = ms()?,
                "maximum_lag_on_failover" => {
                    self.maximum_lag_on_failover = val.as_u64().ok_or_else(|| {
                        Error::InvalidArgument("maximum_lag_on_failover must be a number of bytes".into())
                    })?
                }
                "mode" => self.mode = HaMode::parse(&text()?).map_err(|e| Error::InvalidArgument(e.to_string()))?,
                "fence" => {
                    self.fence = match text()?.as_str() {
                        "stop" => FenceMode::Stop,
                        "read_only" => FenceMode::ReadOnly,
                        other => {
                            return Err(Error::InvalidArgument(format!(
                                "fence must be stop or read_only, got {other:?}"
                            )))
                        }
                    }
                }
                "promote_timeout_ms" => self.promote_timeout = ms()?,
                "switchover_timeout_ms" => self.switchover_timeout = ms()?,
                "auto_failover" => {
                    self.auto_failover = val
                        .as_bool()
                        .ok_or_else(|| Error::InvalidArgument("auto_failover must be true or false".into()))?
                }
                other => return Err(Error::InvalidArgument(format!("unknown failover option {other:?}"))),
            }
        }
        if !margin_set {
            self.safety_margin = LeaderLease::default_margin(self.lease_ttl);
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if self.cluster.is_empty() || !self.cluster.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Err(Error::Config(format!(
                "the cluster name {:?} must be letters, digits, '_', '-' or '.'",
                self.cluster
            )));
        }
        if self.member.is_empty() {
            return Err(Error::Config("the member name must not be empty".into()));
        }
        if self.etcd_endpoints.is_empty() {
            return Err(Error::Config("etcd_endpoints is not set (ROOTSTREAM_ETCD_ENDPOINTS)".into()));
        }
        if self.lease_ttl < MIN_TTL {
            return Err(Error::Config(format!("lease_ttl must be at least {MIN_TTL:?}")));
        }
        if self.safety_margin >= self.lease_ttl {
            return Err(Error::Config("safety_margin must be shorter than lease_ttl".into()));
        }
        // A renewal must fit inside the claim: the loop renews every interval and each etcd
        // request may take its timeout.
        if self.loop_interval + self.etcd_timeout >= self.lease_ttl - self.safety_margin {
            return Err(Error::Config(format!(
                "loop_interval ({:?}) + etcd_timeout ({:?}) must be shorter than lease_ttl - safety_margin ({:?})",
                self.loop_interval,
                self.etcd_timeout,
                self.lease_ttl - self.safety_margin
            )));
        }
        Ok(())
    }
}

/// What the leader last wrote about the primary (`/rootstream/ha/<cluster>/primary`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrimaryRecord {
    pub node: String,
    pub lsn: String,
    pub lsn_bytes: u64,
    pub timeline: Option<u32>,
    pub updated_at: String,
    #[serde(default)]
    pub by: String,
}

/// A problem the manager wants someone to know about.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `no_candidate`, `etcd_unavailable`, `lease_lost`, `fence_incomplete`, `split_brain`,
    /// `failover_failed`, `promotion_recorded_late`, `refence`.
    pub kind: String,
    /// `warning` or `critical`.
    pub severity: String,
    pub message: String,
    pub at: String,
}

/// A change of primary.
#[derive(Debug, Clone, Serialize)]
pub struct RoleChange {
    pub cluster: String,
    /// `automatic`, `manual`, `switchover`, or `observed` (another instance made the change).
    pub kind: String,
    pub old_primary: Option<String>,
    pub new_primary: String,
    /// The member that made the change.
    pub by: String,
    pub timeline: Option<u32>,
    pub old_primary_lsn: Option<String>,
    pub new_primary_lsn: Option<String>,
    pub bytes_lost_estimate: u64,
    pub mode: String,
    pub reason: String,
    pub detected_at: Option<String>,
    pub decided_at: Option<String>,
    pub promoted_at: String,
    /// Milliseconds from detection to promotion.
    pub detection_to_promotion_ms: Option<u64>,
}

type RoleCallback = Arc<dyn Fn(&RoleChange) + Send + Sync>;
type AlertCallback = Arc<dyn Fn(&Alert) + Send + Sync>;

#[derive(Debug, Default, Clone, Serialize)]
struct Runtime {
    primary: Option<String>,
    primary_lsn: Option<String>,
    failures: u32,
    #[serde(skip)]
    first_failure: Option<(Instant, DateTime<Utc>)>,
    last_error: Option<String>,
    nodes: Vec<NodeState>,
    fenced: Vec<String>,
    failovers: u64,
    last_change: Option<RoleChange>,
    /// The alert kinds raised in the current episode (raised once until the cause clears).
    #[serde(skip)]
    raised: Vec<String>,
}

struct Shared {
    cfg: Config,
    opts: FailoverOptions,
    nodes: NodeSet,
    etcd: Arc<EtcdClient>,
    lease: LeaderLease,
    rt: Mutex<Runtime>,
    alerts: Mutex<VecDeque<Alert>>,
    /// The attached pools and the node they were last moved to (None before the first move).
    pools: Mutex<(Vec<DatabaseManager>, Option<PgNode>)>,
    sync: Mutex<Option<StateSyncManager>>,
    role_cbs: Mutex<Vec<(u64, RoleCallback)>>,
    alert_cbs: Mutex<Vec<(u64, AlertCallback)>>,
    next_cb: AtomicU64,
    /// Serializes the loop's actions and the manual operations of this process.
    op: Mutex<()>,
    stop: AtomicBool,
    wake: (Mutex<bool>, Condvar),
    running: AtomicBool,
}

/// The failover coordinator. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct FailoverManager {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for FailoverManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverManager")
            .field("cluster", &self.shared.opts.cluster)
            .field("member", &self.shared.opts.member)
            .finish()
    }
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which kind of operation made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Automatic,
    Manual,
    Switchover,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Automatic => "automatic",
            Kind::Manual => "manual",
            Kind::Switchover => "switchover",
        }
    }
}

impl FailoverManager {
    /// A manager for the nodes in `ha_nodes`/`ha_data_dirs` of `cfg`, with `opts`. Nothing runs
    /// until [`start`](Self::start); manual operations work without it.
    pub fn new(cfg: &Config, nodes: NodeSet, opts: FailoverOptions) -> Result<Self> {
        opts.validate()?;
        if nodes.nodes.len() < 2 {
            return Err(Error::Config("a failover needs at least two nodes in ha_nodes".into()));
        }
        let etcd = Arc::new(EtcdClient::new(opts.etcd_endpoints.clone(), opts.etcd_timeout)?);
        let key = format!("/rootstream/ha/{}/leader", opts.cluster);
        let lease = LeaderLease::new(etcd.clone(), &key, &opts.member, opts.lease_ttl, opts.safety_margin)?;
        Ok(FailoverManager {
            shared: Arc::new(Shared {
                cfg: cfg.clone(),
                opts,
                nodes,
                etcd,
                lease,
                rt: Mutex::new(Runtime::default()),
                alerts: Mutex::new(VecDeque::new()),
                pools: Mutex::new((Vec::new(), None)),
                sync: Mutex::new(None),
                role_cbs: Mutex::new(Vec::new()),
                alert_cbs: Mutex::new(Vec::new()),
                next_cb: AtomicU64::new(1),
                op: Mutex::new(()),
                stop: AtomicBool::new(false),
                wake: (Mutex::new(false), Condvar::new()),
                running: AtomicBool::new(false),
            }),
            threads: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// A manager from the configuration alone (`ha_nodes`, `ha_data_dirs`, `etcd_endpoints`,
    /// `ha_cluster`, `ha_mode`, `instance_id`), with `options_json` overrides (may be empty).
    pub fn open(cfg: &Config, options_json: Option<&str>) -> Result<Self> {
        let nodes = cfg.ha_node_set()?;
        let mut opts = FailoverOptions::from_config(cfg)?;
        if let Some(j) = options_json.filter(|s| !s.trim().is_empty()) {
            opts.apply_json(j)?;
        }
        Self::new(cfg, nodes, opts)
    }

    pub fn options(&self) -> &FailoverOptions {
        &self.shared.opts
    }

    pub fn nodes(&self) -> &NodeSet {
        &self.shared.nodes
    }

    /// The leader lease of this member.
    pub fn lease(&self) -> &LeaderLease {
        &self.shared.lease
    }

    /// Moves `db` to every new primary from now on, and at once to the primary this manager
    /// knows (when it knows none yet, to the one its next loop finds).
    pub fn attach_database(&self, db: DatabaseManager) {
        // Under the same lock as `retarget_all`: a move that runs at the same time either sees
        // this pool or has already recorded the node this pool is moved to here.
        let failed = {
            let mut pools = lock(&self.shared.pools);
            let moved =
                pools.1.as_ref().and_then(|node| db.retarget_host(&node.url).err().map(|e| (node.name.clone(), e)));
            pools.0.push(db);
            moved
        };
        if let Some((name, e)) = failed {
            self.shared.alert("retarget_failed", "warning", format!("moving a pool to {name} failed: {e}"));
        }
    }

    /// Publishes a [`FAILOVER_EVENT`] through `sync` on every role change this member makes.
    pub fn attach_sync(&self, sync: StateSyncManager) {
        *lock(&self.shared.sync) = Some(sync);
    }

    /// Calls `f` on every change of primary (see the module documentation for the thread).
    pub fn on_role_change<F: Fn(&RoleChange) + Send + Sync + 'static>(&self, f: F) -> u64 {
        let id = self.shared.next_cb.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.role_cbs).push((id, Arc::new(f)));
        id
    }

    /// Calls `f` on every alert.
    pub fn on_alert<F: Fn(&Alert) + Send + Sync + 'static>(&self, f: F) -> u64 {
        let id = self.shared.next_cb.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.alert_cbs).push((id, Arc::new(f)));
        id
    }

    /// Removes a callback registered by `on_role_change` or `on_alert`.
    pub fn remove_callback(&self, id: u64) -> bool {
        let mut found = false;
        lock(&self.shared.role_cbs).retain(|(i, _)| {
            found |= *i == id;
            *i != id
        });
        lock(&self.shared.alert_cbs).retain(|(i, _)| {
            found |= *i == id;
            *i != id
        });
        found
    }

    /// The most recent alerts, oldest first (at most 100).
    pub fn recent_alerts(&self) -> Vec<Alert> {
        lock(&self.shared.alerts).iter().cloned().collect()
    }

    /// Starts the loop (thread `rsdb-failover`) and the lease renewal (thread
    /// `rsdb-failover-lease`). Starting twice is an error.
    pub fn start(&self) -> Result<()> {
        if self.shared.running.swap(true, Ordering::SeqCst) {
            return Err(Error::State("the failover manager is already running".into()));
        }
        self.shared.stop.store(false, Ordering::SeqCst);
        let s = self.shared.clone();
        let main = std::thread::Builder::new()
            .name("rsdb-failover".into())
            .spawn(move || {
                while !s.stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    s.tick();
                    s.sleep(s.opts.loop_interval.saturating_sub(started.elapsed()));
                }
            })
            .map_err(|e| Error::Io(format!("cannot start the failover thread: {e}")))?;
        let s = self.shared.clone();
        let renew = std::thread::Builder::new()
            .name("rsdb-failover-lease".into())
            .spawn(move || {
                let every = (s.opts.lease_ttl - s.opts.safety_margin).min(s.opts.loop_interval * 2) / 2;
                while !s.stop.load(Ordering::SeqCst) {
                    if s.lease_is_ours() {
                        let _ = s.lease.renew();
                    }
                    s.sleep(every);
                }
            })
            .map_err(|e| Error::Io(format!("cannot start the lease thread: {e}")))?;
        let mut t = lock(&self.threads);
        t.push(main);
        t.push(renew);
        Ok(())
    }

    /// Stops the loop and gives up the lease (so another instance can take over at once).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let (m, c) = &self.shared.wake;
            *lock(m) = true;
            c.notify_all();
        }
        let handles: Vec<_> = lock(&self.threads).drain(..).collect();
        let me = std::thread::current().id();
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
        *lock(&self.shared.wake.0) = false;
        let _ = self.shared.lease.release();
        self.shared.running.store(false, Ordering::SeqCst);
    }

    /// Runs one loop now, on the calling thread (tests and the CLI).
    pub fn tick(&self) {
        self.shared.tick();
    }

    /// The manager's view as JSON: leader, whether this member holds the lease, the primary
    /// and its last known position, failed checks, each node's state, fenced nodes, the last
    /// change and recent alerts.
    pub fn status(&self) -> Value {
        self.shared.status()
    }

    /// A manual failover: promotes `target` (or the most advanced standby) although the
    /// primary has not failed its checks. Refused while the primary still answers as a primary
    /// (use [`switchover`](Self::switchover)). Blocks until done.
    pub fn failover(&self, target: Option<&str>) -> Result<RoleChange> {
        self.shared.manual(Kind::Manual, target)
    }

    /// A planned switchover to `target` with no data loss: the primary stops taking writes,
    /// the target catches up to its final position and is promoted, and the old primary rejoins
    /// as a standby of the target. Blocks until done.
    pub fn switchover(&self, target: &str) -> Result<RoleChange> {
        self.shared.manual(Kind::Switchover, Some(target))
    }

    /// Turns `name` (a former primary, fenced) into a standby of the current primary with
    /// `pg_rewind` and clears its fence. Needs its data directory on this machine.
    pub fn rejoin(&self, name: &str) -> Result<()> {
        let s = &self.shared;
        let node = s.nodes.get(name)?.clone();
        let primary_name = s.current_primary()?;
        if primary_name == name {
            return Err(Error::State(format!("node {name} is the current primary; it cannot rejoin as a standby")));
        }
        let primary = s.nodes.get(&primary_name)?.clone();
        let _g = lock(&s.op);
        crate::runtime::block_on(rejoin_node(&s.cfg, &node, &primary, Duration::from_secs(60)))?;
        let _ = s.etcd.delete(&s.key(&format!("fenced/{name}")));
        lock(&s.rt).fenced.retain(|n| n != name);
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.lease.release();
    }
}

impl Shared {
    fn key(&self, s: &str) -> String {
        format!("/rootstream/ha/{}/{s}", self.opts.cluster)
    }

    fn sleep(&self, d: Duration) {
        let (m, c) = &self.wake;
        let g = lock(m);
        if *g {
            return;
        }
        let _ = c.wait_timeout(g, d);
    }

    fn lease_is_ours(&self) -> bool {
        self.lease.has_lease()
    }

    fn alert(&self, kind: &str, severity: &str, message: String) {
        {
            let mut rt = lock(&self.rt);
            rt.last_error = Some(message.clone());
            if rt.raised.iter().any(|k| k == kind) {
                return;
            }
            rt.raised.push(kind.to_string());
        }
        let a = Alert { kind: kind.into(), severity: severity.into(), message, at: now_text() };
        {
            let mut q = lock(&self.alerts);
            if q.len() >= 100 {
                q.pop_front();
            }
            q.push_back(a.clone());
        }
        let cbs: Vec<AlertCallback> = lock(&self.alert_cbs).iter().map(|(_, f)| f.clone()).collect();
        for f in cbs {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&a)));
        }
    }

    fn clear_alert(&self, kind: &str) {
        lock(&self.rt).raised.retain(|k| k != kind);
    }

    fn read_primary(&self) -> Result<Option<PrimaryRecord>> {
        match self.etcd.get(&self.key("primary"))? {
            Some(kv) => Ok(serde_json::from_str(&kv.value).ok()),
            None => Ok(None),
        }
    }

    fn read_fenced(&self) -> Result<Vec<String>> {
        let prefix = self.key("fenced/");
        Ok(self.etcd.get_prefix(&prefix)?.into_iter().map(|kv| kv.key[prefix.len()..].to_string()).collect())
    }

    /// The primary as etcd names it, else the single node answering as a primary.
    fn current_primary(&self) -> Result<String> {
        if let Some(r) = self.read_primary()? {
            return Ok(r.node);
        }
        let states = crate::runtime::block_on(probe_all(&self.nodes, self.opts.check_timeout));
        let fenced = self.read_fenced().unwrap_or_default();
        let prim: Vec<&NodeState> = states.iter().filter(|s| s.is_primary() && !fenced.contains(&s.name)).collect();
        match prim.as_slice() {
            [one] => Ok(one.name.clone()),
            [] => Err(Error::State("no node answers as a primary and etcd names none".into())),
            many => Err(Error::State(format!(
                "several nodes answer as primaries ({}); fix that by hand first",
                many.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    fn record_for(&self, st: &NodeState) -> PrimaryRecord {
        let lsn = st.lsn.unwrap_or_default();
        PrimaryRecord {
            node: st.name.clone(),
            lsn: lsn.to_string(),
            lsn_bytes: lsn.0,
            timeline: st.timeline,
            updated_at: now_text(),
            by: self.opts.member.clone(),
        }
    }

    /// Writes keys only while the leader key still names this member.
    fn guarded_put(&self, puts: &[(&str, &str)]) -> Result<()> {
        if self.etcd.put_many_if_equal(self.lease.key(), &self.opts.member, puts)? {
            Ok(())
        } else {
            Err(Error::Fenced(format!("the leader key no longer names member {}", self.opts.member)))
        }
    }

    fn retarget_all(&self, node: &PgNode) {
        let errors: Vec<Error> = {
            let mut pools = lock(&self.pools);
            pools.1 = Some(node.clone());
            pools.0.iter().filter_map(|db| db.retarget_host(&node.url).err()).collect()
        };
        for e in errors {
            self.alert("retarget_failed", "warning", format!("moving a pool to {} failed: {e}", node.name));
        }
    }

    fn fire_role_change(&self, change: &RoleChange) {
        let cbs: Vec<RoleCallback> = lock(&self.role_cbs).iter().map(|(_, f)| f.clone()).collect();
        for f in cbs {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(change)));
        }
    }

    fn status(&self) -> Value {
        let rt = lock(&self.rt).clone();
        let leader = self.lease.current_leader().ok().flatten();
        json!({
            "cluster": self.opts.cluster,
            "member": self.opts.member,
            "mode": self.opts.mode.as_str(),
            "leader": leader,
            "is_leader": self.lease.holds(),
            "lease_remaining_ms": self.lease.remaining().as_millis() as u64,
            "lease_error": self.lease.last_error(),
            "running": self.running.load(Ordering::SeqCst),
            "primary": rt.primary,
            "primary_lsn": rt.primary_lsn,
            "failed_checks": rt.failures,
            "failure_threshold": self.opts.failure_threshold,
            "nodes": rt.nodes,
            "fenced": rt.fenced,
            "failovers": rt.failovers,
            "last_change": rt.last_change,
            "last_error": rt.last_error,
            "alerts": lock(&self.alerts).iter().rev().take(10).cloned().collect::<Vec<_>>(),
        })
    }

    // ------------------------------------------------------------------ the loop

    fn tick(&self) {
        let _g = lock(&self.op);
        let leader = if self.lease.holds() {
            true
        } else {
            match self.lease.acquire() {
                Ok(b) => {
                    self.clear_alert("etcd_unavailable");
                    b
                }
                Err(e) => {
                    self.alert(
                        "etcd_unavailable",
                        "critical",
                        format!("etcd cannot decide who leads (no failover will happen until it can): {e}"),
                    );
                    false
                }
            }
        };
        if leader {
            if let Err(e) = self.lead() {
                lock(&self.rt).last_error = Some(e.to_string());
            }
        } else {
            self.follow();
        }
    }

    /// Not the leader: follow the primary etcd names.
    fn follow(&self) {
        lock(&self.rt).failures = 0;
        let rec = match self.read_primary() {
            Ok(r) => r,
            Err(_) => return,
        };
        let Some(rec) = rec else { return };
        let previous = {
            let mut rt = lock(&self.rt);
            let prev = rt.primary.clone();
            rt.primary = Some(rec.node.clone());
            rt.primary_lsn = Some(rec.lsn.clone());
            prev
        };
        if previous.as_deref() != Some(rec.node.as_str()) {
            if let Ok(node) = self.nodes.get(&rec.node) {
                self.retarget_all(node);
            }
            if previous.is_some() {
                let change = RoleChange {
                    cluster: self.opts.cluster.clone(),
                    kind: "observed".into(),
                    old_primary: previous,
                    new_primary: rec.node.clone(),
                    by: rec.by.clone(),
                    timeline: rec.timeline,
                    old_primary_lsn: None,
                    new_primary_lsn: Some(rec.lsn.clone()),
                    bytes_lost_estimate: 0,
                    mode: self.opts.mode.as_str().into(),
                    reason: "the primary named in etcd changed".into(),
                    detected_at: None,
                    decided_at: None,
                    promoted_at: rec.updated_at.clone(),
                    detection_to_promotion_ms: None,
                };
                lock(&self.rt).last_change = Some(change.clone());
                self.fire_role_change(&change);
            }
        }
    }

    fn lead(&self) -> Result<()> {
        let rec = self.read_primary()?;
        let fenced = self.read_fenced()?;
        let states = crate::runtime::block_on(probe_all(&self.nodes, self.opts.check_timeout));
        {
            let mut rt = lock(&self.rt);
            rt.nodes = states.clone();
            rt.fenced = fenced.clone();
        }
        // A pending request from an instance without the lease (CLI).
        if let Some(kv) = self.etcd.get(&self.key("request"))? {
            self.serve_request(&kv.value);
            return Ok(());
        }
        // Fenced nodes must never be writable primaries again.
        for st in states.iter().filter(|s| fenced.contains(&s.name) && s.is_primary()) {
            if let Ok(n) = self.nodes.get(&st.name) {
                let n = n.clone();
                let r = crate::runtime::block_on(fence_sql(&n, self.opts.check_timeout.max(Duration::from_secs(2))));
                self.alert(
                    "refence",
                    "critical",
                    format!("fenced node {} answered as a primary again; made it read-only: {:?}", st.name, r.err()),
                );
            }
        }
        let primary_name = match &rec {
            Some(r) => r.node.clone(),
            None => {
                let prim: Vec<&NodeState> =
                    states.iter().filter(|s| s.is_primary() && !fenced.contains(&s.name)).collect();
                match prim.as_slice() {
                    [one] => {
                        let r = self.record_for(one);
                        self.guarded_put(&[(&self.key("primary"), &serde_json::to_string(&r).unwrap_or_default())])?;
                        one.name.clone()
                    }
                    [] => return Err(Error::State("no node answers as a primary and etcd names none".into())),
                    many => {
                        self.alert(
                            "split_brain",
                            "critical",
                            format!(
                                "several nodes answer as primaries ({}); not acting",
                                many.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        );
                        return Ok(());
                    }
                }
            }
        };
        let st = states.iter().find(|s| s.name == primary_name).cloned();
        let healthy = st.as_ref().is_some_and(|s| s.is_primary());
        let previous = {
            let mut rt = lock(&self.rt);
            let prev = rt.primary.replace(primary_name.clone());
            if healthy {
                rt.failures = 0;
                rt.first_failure = None;
            }
            prev
        };
        if previous.as_deref() != Some(primary_name.as_str()) {
            if let Ok(n) = self.nodes.get(&primary_name) {
                self.retarget_all(n);
            }
        }
        if healthy {
            let st = st.expect("checked");
            let r = self.record_for(&st);
            lock(&self.rt).primary_lsn = Some(r.lsn.clone());
            self.guarded_put(&[(&self.key("primary"), &serde_json::to_string(&r).unwrap_or_default())])?;
            self.clear_alert("no_candidate");
            self.clear_alert("failover_failed");
            return Ok(());
        }
        let (failures, first) = {
            let mut rt = lock(&self.rt);
            rt.failures += 1;
            if rt.first_failure.is_none() {
                rt.first_failure = Some((Instant::now(), Utc::now()));
            }
            (rt.failures, rt.first_failure.expect("set"))
        };
        if failures < self.opts.failure_threshold || !self.opts.auto_failover {
            return Ok(());
        }
        let why = st.and_then(|s| s.error.clone()).unwrap_or_else(|| "it answers as a standby".into());
        let reason = format!("primary {primary_name} failed {failures} consecutive checks: {why}");
        match self.run_failover(Kind::Automatic, &primary_name, None, &reason, Some(first), rec.as_ref()) {
            Ok(_) => Ok(()),
            Err(e) => {
                let kind = if matches!(e, Error::NoCandidate(_)) { "no_candidate" } else { "failover_failed" };
                self.alert(kind, "critical", format!("no failover from {primary_name}: {e}"));
                Err(e)
            }
        }
    }

    // ------------------------------------------------------------------ requests

    fn manual(&self, kind: Kind, target: Option<&str>) -> Result<RoleChange> {
        if let Some(t) = target {
            self.nodes.get(t)?;
        }
        let held = {
            let _g = lock(&self.op);
            self.lease.holds() || self.lease.acquire()?
        };
        if !held {
            return self.request_from_leader(kind, target);
        }
        let _g = lock(&self.op);
        let rec = self.read_primary()?;
        let primary = match &rec {
            Some(r) => r.node.clone(),
            None => self.current_primary()?,
        };
        match kind {
            Kind::Switchover => self.run_switchover(&primary, target.expect("switchover has a target"), rec.as_ref()),
            _ => self.run_failover(kind, &primary, target, "manual failover requested", None, rec.as_ref()),
        }
    }

    /// Another member holds the lease: leave a request for it and wait for the outcome.
    fn request_from_leader(&self, kind: Kind, target: Option<&str>) -> Result<RoleChange> {
        let id = format!("{}-{}", self.opts.member, Utc::now().timestamp_nanos_opt().unwrap_or_default());
        let body = json!({ "id": id, "kind": kind.as_str(), "to": target, "by": self.opts.member }).to_string();
        if !self.etcd.create_if_absent(&self.key("request"), &body, 0)? {
            return Err(Error::State("another switchover or failover request is pending".into()));
        }
        let deadline =
            Instant::now() + self.opts.switchover_timeout + self.opts.promote_timeout + Duration::from_secs(60);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if let Ok(Some(kv)) = self.etcd.get(&self.key("request_result")) {
                let v: Value = serde_json::from_str(&kv.value).unwrap_or(Value::Null);
                if v["id"] == json!(id) {
                    if let Some(err) = v["error"].as_str() {
                        let code = v["code"].as_i64().unwrap_or(-13);
                        return Err(match code {
                            -22 => Error::NoCandidate(err.to_string()),
                            -21 => Error::Fenced(err.to_string()),
                            -6 => Error::Timeout(err.to_string()),
                            _ => Error::State(err.to_string()),
                        });
                    }
                    return serde_json::from_value::<Value>(v["change"].clone())
                        .ok()
                        .and_then(|c| role_change_from_json(&c))
                        .ok_or_else(|| Error::Internal("the leader sent an unreadable result".into()));
                }
            }
        }
        let _ = self.etcd.delete_if_equal(&self.key("request"), &body);
        Err(Error::Timeout("the member holding the lease did not carry out the request in time".into()))
    }

    fn serve_request(&self, body: &str) {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let id = v["id"].clone();
        let to = v["to"].as_str().map(str::to_string);
        let kind = if v["kind"] == "switchover" { Kind::Switchover } else { Kind::Manual };
        let rec = self.read_primary().ok().flatten();
        let result = match (
            kind,
            rec.as_ref().map(|r| r.node.clone()).ok_or_else(|| Error::State("etcd names no primary".into())),
        ) {
            (_, Err(e)) => Err(e),
            (Kind::Switchover, Ok(p)) => match &to {
                Some(t) => self.run_switchover(&p, t, rec.as_ref()),
                None => Err(Error::InvalidArgument("a switchover needs a target".into())),
            },
            (_, Ok(p)) => {
                self.run_failover(Kind::Manual, &p, to.as_deref(), "manual failover requested", None, rec.as_ref())
            }
        };
        let out = match result {
            Ok(c) => json!({ "id": id, "change": c }),
            Err(e) => json!({ "id": id, "error": e.to_string(), "code": e.code().as_i32() }),
        };
        let _ = self.etcd.put(&self.key("request_result"), &out.to_string(), 0);
        let _ = self.etcd.delete_if_equal(&self.key("request"), body);
    }

    // ------------------------------------------------------------------ failover

    /// Chooses the standby to promote, or says why none is safe.
    fn choose(
        &self,
        states: &[NodeState],
        old: &str,
        target: Option<&str>,
        last_known: Option<Lsn>,
        fenced: &[String],
    ) -> Result<NodeState> {
        let reps: Vec<&NodeState> =
            states.iter().filter(|s| s.name != old && s.is_standby() && !fenced.contains(&s.name)).collect();
        if reps.is_empty() {
            let why: Vec<String> = states
                .iter()
                .filter(|s| s.name != old)
                .map(|s| {
                    if fenced.contains(&s.name) {
                        format!("{}: fenced", s.name)
                    } else {
                        format!("{}: {}", s.name, s.error.clone().unwrap_or_else(|| "not a standby".into()))
                    }
                })
                .collect();
            return Err(Error::NoCandidate(format!("no standby is reachable ({})", why.join("; "))));
        }
        let best = reps.iter().max_by_key(|s| s.lsn.unwrap_or_default()).expect("not empty");
        let chosen = match target {
            Some(t) => {
                let c = reps.iter().find(|s| s.name == t).ok_or_else(|| {
                    Error::NoCandidate(format!("the requested target {t} is not a reachable, unfenced standby"))
                })?;
                if c.lsn.unwrap_or_default() < best.lsn.unwrap_or_default() {
                    return Err(Error::NoCandidate(format!(
                        "the requested target {t} ({}) is behind {} ({}); promoting it would lose data",
                        c.lsn.unwrap_or_default(),
                        best.name,
                        best.lsn.unwrap_or_default()
                    )));
                }
                c
            }
            None => best,
        };
        if let Some(known) = last_known {
            let lag = known.0.saturating_sub(chosen.lsn.unwrap_or_default().0);
            if lag > self.opts.maximum_lag_on_failover {
                return Err(Error::NoCandidate(format!(
                    "the most advanced standby {} is at {}, {lag} bytes behind the last known primary position {known} \
                     (maximum_lag_on_failover is {} bytes)",
                    chosen.name,
                    chosen.lsn.unwrap_or_default(),
                    self.opts.maximum_lag_on_failover
                )));
            }
        }
        Ok((*chosen).clone())
    }

    fn check_lease(&self, step: &str) -> Result<()> {
        let _ = self.lease.renew();
        if !self.lease.holds() {
            self.alert("lease_lost", "critical", format!("lost the leader lease {step}; not acting"));
            return Err(Error::Fenced(format!("this member lost the leader lease {step}")));
        }
        Ok(())
    }

    fn run_failover(
        &self,
        kind: Kind,
        old: &str,
        target: Option<&str>,
        reason: &str,
        detected: Option<(Instant, DateTime<Utc>)>,
        rec: Option<&PrimaryRecord>,
    ) -> Result<RoleChange> {
        let detected = detected.unwrap_or_else(|| (Instant::now(), Utc::now()));
        let fenced = self.read_fenced()?;
        let t = self.opts.check_timeout;
        let states = crate::runtime::block_on(probe_all(&self.nodes, t));
        if let Some(o) = states.iter().find(|s| s.name == old) {
            if o.is_primary() {
                return Err(Error::NoCandidate(format!(
                    "the primary {old} still answers as a primary; {}",
                    if kind == Kind::Automatic { "not failing over" } else { "use a switchover instead" }
                )));
            }
        }
        // Another node is already a primary (a promotion whose record was lost): adopt it.
        if let Some(p) = states.iter().find(|s| s.name != old && s.is_primary() && !fenced.contains(&s.name)) {
            let p = p.clone();
            let r = self.record_for(&p);
            self.guarded_put(&[(&self.key("primary"), &serde_json::to_string(&r).unwrap_or_default())])?;
            let node = self.nodes.get(&p.name)?.clone();
            self.retarget_all(&node);
            self.alert(
                "promotion_recorded_late",
                "warning",
                format!("node {} already answers as the primary; recorded it instead of promoting another", p.name),
            );
            lock(&self.rt).primary = Some(p.name.clone());
            return Err(Error::State(format!("node {} was already the primary; adopted it", p.name)));
        }
        let last_known = rec.filter(|r| r.node == old).map(|r| Lsn(r.lsn_bytes));
        self.choose(&states, old, target, last_known, &fenced)?;
        // Fence first, then look again: the old primary's last WAL may still reach a standby.
        let old_node = self.nodes.get(old)?.clone();
        let fence_actions = self.fence(&old_node, reason);
        let states = crate::runtime::block_on(probe_all(&self.nodes, t));
        let cand = self.choose(&states, old, target, last_known, &fenced)?;
        let decided_at = Utc::now();
        self.check_lease("before promoting")?;
        let new_node = self.nodes.get(&cand.name)?.clone();
        crate::runtime::block_on(node::promote(&new_node, self.opts.promote_timeout))?;
        let promoted = Instant::now();
        let promoted_at = Utc::now();
        let lost = match self.opts.mode {
            HaMode::Sync => 0,
            HaMode::Async => last_known.map(|k| k.0.saturating_sub(cand.lsn.unwrap_or_default().0)).unwrap_or(0),
        };
        let change = RoleChange {
            cluster: self.opts.cluster.clone(),
            kind: kind.as_str().into(),
            old_primary: Some(old.to_string()),
            new_primary: cand.name.clone(),
            by: self.opts.member.clone(),
            timeline: None,
            old_primary_lsn: last_known.map(|l| l.to_string()),
            new_primary_lsn: cand.lsn.map(|l| l.to_string()),
            bytes_lost_estimate: lost,
            mode: self.opts.mode.as_str().into(),
            reason: reason.to_string(),
            detected_at: Some(detected.1.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            decided_at: Some(decided_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            promoted_at: promoted_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            detection_to_promotion_ms: Some(promoted.duration_since(detected.0).as_millis() as u64),
        };
        self.finish_promotion(&new_node, Some(&old_node), change, detected.1, decided_at, promoted_at, fence_actions)
    }

    /// Fences `node` as far as it can and records it in etcd. Returns what was done.
    fn fence(&self, node: &PgNode, reason: &str) -> Vec<String> {
        let mut actions = Vec::new();
        let local = node.data_dir.is_some() && self.opts.fence == FenceMode::Stop;
        if local {
            match node::local_server_running(node) {
                Ok(true) => match node::pg_ctl_stop(&self.cfg, node, "immediate", Duration::from_secs(2)) {
                    Ok(()) => actions.push("stopped (pg_ctl stop -m immediate)".to_string()),
                    Err(e) => actions.push(format!("stop failed ({e}); the stop signal stays pending")),
                },
                Ok(false) => actions.push("not running".to_string()),
                Err(e) => actions.push(format!("cannot check the server process: {e}")),
            }
            match set_local_read_only(node) {
                Ok(()) => actions.push("default_transaction_read_only = on for its next start".to_string()),
                Err(e) => actions.push(format!("could not mark it read-only on disk: {e}")),
            }
        } else {
            match crate::runtime::block_on(fence_sql(node, self.opts.check_timeout.max(Duration::from_secs(2)))) {
                Ok(()) => actions.push("made read-only over SQL and its client sessions terminated".to_string()),
                Err(e) => {
                    actions.push(format!("unreachable, not fenced on the server: {e}"));
                    self.alert(
                        "fence_incomplete",
                        "warning",
                        format!(
                            "old primary {} could not be reached to fence it; it is marked fenced in etcd and no pool \
                             of this library will use it, but stop it before it comes back: {e}",
                            node.name
                        ),
                    );
                }
            }
        }
        let body = json!({ "node": node.name, "at": now_text(), "by": self.opts.member, "reason": reason, "actions": actions });
        if let Err(e) = self.guarded_put(&[(&self.key(&format!("fenced/{}", node.name)), &body.to_string())]) {
            actions.push(format!("not recorded in etcd: {e}"));
        }
        lock(&self.rt).fenced.push(node.name.clone());
        actions
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_promotion(
        &self,
        new: &PgNode,
        old: Option<&PgNode>,
        mut change: RoleChange,
        detected_at: DateTime<Utc>,
        decided_at: DateTime<Utc>,
        promoted_at: DateTime<Utc>,
        fence_actions: Vec<String>,
    ) -> Result<RoleChange> {
        let t = Duration::from_secs(5);
        let others: Vec<String> = self.nodes.others(&new.name);
        let mut notes: Vec<String> = Vec::new();
        let new_state = crate::runtime::block_on(async {
            let client = node::connect(new, t).await?;
            let mut stmts = vec!["ALTER SYSTEM RESET default_transaction_read_only".to_string()];
            let value =
                if self.opts.mode == HaMode::Sync { node::synchronous_standby_names(&others) } else { String::new() };
            stmts.push(format!("ALTER SYSTEM SET synchronous_standby_names = {}", node::sql_literal(&value)));
            stmts.push("SELECT pg_reload_conf()".into());
            execute_each(&client, new, t, &stmts).await?;
            // Point every other standby at the new primary, through a slot of its own.
            for name in &others {
                if Some(name.as_str()) == old.map(|o| o.name.as_str()) {
                    let _ = node::create_slot(&client, new, name).await;
                    continue;
                }
                let s = self.nodes.get(name)?;
                let r: Result<()> = async {
                    node::create_slot(&client, new, name).await?;
                    let sc = node::connect(s, t).await?;
                    node::set_primary_conninfo(&sc, s, new, Some(name)).await
                }
                .await;
                if let Err(e) = r {
                    notes.push(format!("could not re-point standby {name}: {e}"));
                }
            }
            Ok::<NodeState, Error>(probe(new, t).await)
        });
        let new_state = match new_state {
            Ok(s) => s,
            Err(e) => {
                notes.push(format!("configuring the new primary: {e}"));
                crate::runtime::block_on(probe(new, t))
            }
        };
        change.timeline = new_state.timeline;
        self.retarget_all(new);
        // Record it in etcd; keep trying while the lease holds (etcd may be electing a leader).
        let rec = self.record_for(&new_state);
        let hist_key = self.key(&format!("history/{:020}", Utc::now().timestamp_micros()));
        let change_text = serde_json::to_string(&change).unwrap_or_default();
        let rec_text = serde_json::to_string(&rec).unwrap_or_default();
        // The promotion happened and the record must say so: keep trying for a while (etcd
        // may be electing a leader). The guard refuses if another member leads by then; that
        // member adopts the new primary on its next loop.
        let mut recorded = false;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match self.guarded_put(&[(&self.key("primary"), &rec_text), (&hist_key, &change_text)]) {
                Ok(()) => {
                    recorded = true;
                    break;
                }
                Err(Error::Fenced(_)) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        if !recorded {
            notes.push("the new primary could not be recorded in etcd".into());
            self.alert(
                "promotion_recorded_late",
                "warning",
                format!("promoted {} but could not record it in etcd yet; the next leader adopts it", new.name),
            );
        }
        // The history row, on the new primary. Waiting for a synchronous standby is not needed
        // for a record of the event, and one may not be streaming yet.
        let details = json!({ "fence": fence_actions, "notes": notes, "recorded_in_etcd": recorded });
        let row = crate::runtime::block_on(insert_history(
            new,
            &self.opts.cluster,
            &change,
            detected_at,
            decided_at,
            promoted_at,
            &details,
        ));
        if let Err(e) = row {
            notes.push(format!("failover_history row not written: {e}"));
        }
        {
            let mut rt = lock(&self.rt);
            rt.primary = Some(new.name.clone());
            rt.primary_lsn = Some(rec.lsn.clone());
            rt.failures = 0;
            rt.first_failure = None;
            rt.failovers += 1;
            rt.last_change = Some(change.clone());
            rt.raised.clear();
        }
        if let Some(sync) = lock(&self.sync).clone() {
            let mut payload = serde_json::to_value(&change).unwrap_or(Value::Null);
            payload["id"] = json!(self.opts.cluster);
            let _ = sync.publish(FAILOVER_EVENT, payload);
        }
        self.fire_role_change(&change);
        Ok(change)
    }

    // ------------------------------------------------------------------ switchover

    fn run_switchover(&self, old: &str, target: &str, rec: Option<&PrimaryRecord>) -> Result<RoleChange> {
        let _ = rec;
        if old == target {
            return Err(Error::InvalidArgument(format!("{target} is already the primary")));
        }
        let started = (Instant::now(), Utc::now());
        let t = self.opts.check_timeout.max(Duration::from_secs(2));
        let old_node = self.nodes.get(old)?.clone();
        let new_node = self.nodes.get(target)?.clone();
        let fenced = self.read_fenced()?;
        let states = crate::runtime::block_on(probe_all(&self.nodes, t));
        let o = states.iter().find(|s| s.name == old).cloned().expect("node listed");
        let n = states.iter().find(|s| s.name == target).cloned().expect("node listed");
        if !o.is_primary() {
            return Err(Error::State(format!("the primary {old} does not answer as a primary; use a failover")));
        }
        if !n.is_standby() || fenced.contains(&n.name) {
            return Err(Error::NoCandidate(format!("the target {target} is not a reachable, unfenced standby")));
        }
        if n.streaming != Some(true) {
            return Err(Error::NoCandidate(format!("the target {target} is not streaming from the primary")));
        }
        self.check_lease("before the switchover")?;
        // 1. No more writes on the old primary, then its final position.
        crate::runtime::block_on(fence_sql(&old_node, t))?;
        let mut final_lsn = crate::runtime::block_on(async {
            let c = node::connect(&old_node, t).await?;
            let rows = node::query_timed(&c, &old_node, t, "SELECT pg_current_wal_lsn()::text").await?;
            rows[0].get::<_, String>(0).parse::<Lsn>()
        })?;
        let local = old_node.data_dir.is_some();
        if local {
            // A clean shutdown sends every WAL record, the shutdown checkpoint included, to the
            // connected standbys before it ends.
            node::pg_ctl_stop(&self.cfg, &old_node, "fast", Duration::from_secs(30))?;
            if let Ok(c) = checkpoint_lsn(&self.cfg, &old_node) {
                final_lsn = final_lsn.max(Lsn(c.0 + 1));
            }
        }
        // 2. Wait for the target to have it all.
        let deadline = Instant::now() + self.opts.switchover_timeout;
        let caught_up = loop {
            let s = crate::runtime::block_on(probe(&new_node, t));
            if s.lsn.unwrap_or_default() >= final_lsn {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(cand) = caught_up else {
            // Undo: the old primary goes back to taking writes.
            if local {
                let _ = node::pg_ctl_start(&self.cfg, &old_node, None, Duration::from_secs(30));
            }
            let _ = crate::runtime::block_on(unfence_sql(&old_node, t));
            return Err(Error::Timeout(format!(
                "switchover to {target} abandoned: it did not reach the primary's final position {final_lsn} within {:?}; \
                 {old} takes writes again",
                self.opts.switchover_timeout
            )));
        };
        let decided_at = Utc::now();
        if let Err(e) = self.check_lease("before promoting") {
            if local {
                let _ = node::pg_ctl_start(&self.cfg, &old_node, None, Duration::from_secs(30));
            }
            let _ = crate::runtime::block_on(unfence_sql(&old_node, t));
            return Err(e);
        }
        let fence_body = json!({ "node": old, "at": now_text(), "by": self.opts.member, "reason": "switchover" });
        let _ = self.guarded_put(&[(&self.key(&format!("fenced/{old}")), &fence_body.to_string())]);
        crate::runtime::block_on(node::promote(&new_node, self.opts.promote_timeout))?;
        let promoted = Instant::now();
        let promoted_at = Utc::now();
        let change = RoleChange {
            cluster: self.opts.cluster.clone(),
            kind: Kind::Switchover.as_str().into(),
            old_primary: Some(old.to_string()),
            new_primary: target.to_string(),
            by: self.opts.member.clone(),
            timeline: None,
            old_primary_lsn: Some(final_lsn.to_string()),
            new_primary_lsn: cand.lsn.map(|l| l.to_string()),
            bytes_lost_estimate: 0,
            mode: self.opts.mode.as_str().into(),
            reason: format!("planned switchover from {old} to {target}"),
            detected_at: Some(started.1.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            decided_at: Some(decided_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            promoted_at: promoted_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            detection_to_promotion_ms: Some(promoted.duration_since(started.0).as_millis() as u64),
        };
        let change = self.finish_promotion(
            &new_node,
            Some(&old_node),
            change,
            started.1,
            decided_at,
            promoted_at,
            vec!["read-only, then a clean stop".into()],
        )?;
        // 3. The old primary comes back as a standby of the new one.
        if local {
            match crate::runtime::block_on(rejoin_node(&self.cfg, &old_node, &new_node, Duration::from_secs(60))) {
                Ok(()) => {
                    let _ = self.etcd.delete(&self.key(&format!("fenced/{old}")));
                    lock(&self.rt).fenced.retain(|n| n != old);
                }
                Err(e) => {
                    self.alert("rejoin_failed", "warning", format!("switchover done, but {old} did not rejoin: {e}"));
                    return Err(Error::State(format!(
                        "switchover to {target} done, but the old primary {old} did not rejoin as a standby: {e}"
                    )));
                }
            }
        }
        Ok(change)
    }
}

fn role_change_from_json(v: &Value) -> Option<RoleChange> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(RoleChange {
        cluster: s("cluster")?,
        kind: s("kind")?,
        old_primary: s("old_primary"),
        new_primary: s("new_primary")?,
        by: s("by").unwrap_or_default(),
        timeline: v.get("timeline").and_then(Value::as_u64).map(|t| t as u32),
        old_primary_lsn: s("old_primary_lsn"),
        new_primary_lsn: s("new_primary_lsn"),
        bytes_lost_estimate: v.get("bytes_lost_estimate").and_then(Value::as_u64).unwrap_or(0),
        mode: s("mode").unwrap_or_default(),
        reason: s("reason").unwrap_or_default(),
        detected_at: s("detected_at"),
        decided_at: s("decided_at"),
        promoted_at: s("promoted_at").unwrap_or_default(),
        detection_to_promotion_ms: v.get("detection_to_promotion_ms").and_then(Value::as_u64),
    })
}

/// Makes a running server read-only for every new transaction (persisted, so it survives a
/// restart) and ends its client sessions, so nothing writes to it any more.
pub async fn fence_sql(node: &PgNode, timeout: Duration) -> Result<()> {
    let c = node::connect(node, timeout).await?;
    execute_each(
        &c,
        node,
        timeout,
        &[
            "ALTER SYSTEM SET default_transaction_read_only = on".into(),
            "SELECT pg_reload_conf()".into(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                .into(),
        ],
    )
    .await
}

/// Undoes [`fence_sql`].
pub async fn unfence_sql(node: &PgNode, timeout: Duration) -> Result<()> {
    let c = node::connect(node, timeout).await?;
    execute_each(
        &c,
        node,
        timeout,
        &["ALTER SYSTEM RESET default_transaction_read_only".into(), "SELECT pg_reload_conf()".into()],
    )
    .await
}

const AUTO_CONF: &str = "postgresql.auto.conf";

/// Writes `default_transaction_read_only = on` into a local node's `postgresql.auto.conf`, so a
/// restart (by an operator or a supervisor) cannot bring it back as a writable primary.
fn set_local_read_only(node: &PgNode) -> Result<()> {
    let dir = node.require_data_dir("fencing")?;
    let path = dir.join(AUTO_CONF);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut out: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("default_transaction_read_only"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("default_transaction_read_only = 'on'\n");
    write_owned(&path, &out)
}

/// Writes a file in a data directory, owned by `postgres` when this process is root.
fn write_owned(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    if let Some((uid, gid)) = crate::backup::cluster::postgres_ids() {
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    }
    Ok(())
}

/// The "Latest checkpoint location" of a stopped local node (`pg_controldata`).
fn checkpoint_lsn(cfg: &Config, node: &PgNode) -> Result<Lsn> {
    let dir = node.require_data_dir("reading the control file")?;
    let out = crate::backup::cluster::pg_command(cfg, "pg_controldata")
        .arg("-D")
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::Io(format!("cannot run pg_controldata: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .ok_or_else(|| Error::Io(format!("pg_controldata of {} printed no checkpoint location", node.name)))?
        .trim()
        .parse()
}

/// Turns a former primary into a standby of `primary` with the replication manager's rejoin
/// path ([`super::replication::rewind_as_standby`]: stop, slot, `pg_rewind`, own configuration
/// kept, fencing dropped, start) unless it already streams from `primary`, and waits until it
/// streams. Needs the node's data directory on this machine and a cluster initialised with
/// data checksums or `wal_log_hints = on` (pg_rewind refuses otherwise, and its message is
/// returned).
pub async fn rejoin_node(cfg: &Config, node: &PgNode, primary: &PgNode, wait: Duration) -> Result<()> {
    node.require_data_dir("rejoining")?;
    let t = Duration::from_secs(5);
    let st = probe(node, Duration::from_secs(2)).await;
    if st.is_standby() && st.streaming == Some(true) && st.upstream.as_deref() == primary.address().ok().as_deref() {
        return Ok(());
    }
    let pc = node::connect(primary, t).await?;
    super::replication::rewind_as_standby(cfg, node, primary, &pc).await?;
    let deadline = Instant::now() + wait;
    loop {
        let st = probe(node, Duration::from_secs(2)).await;
        if st.is_standby() && st.streaming == Some(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "node {} started as a standby but is not streaming from {} after {wait:?}: {:?}",
                node.name, primary.name, st.error
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `failover_history` row on the new primary (the table is created if the schema
/// migrations have not run in that database).
async fn insert_history(
    new: &PgNode,
    cluster: &str,
    c: &RoleChange,
    detected_at: DateTime<Utc>,
    decided_at: DateTime<Utc>,
    promoted_at: DateTime<Utc>,
    details: &Value,
) -> Result<()> {
    let t = Duration::from_secs(5);
    let client = node::connect(new, t).await?;
    execute_each(
        &client,
        new,
        t,
        &["SET synchronous_commit = local".into(), include_str!("../../migrations/006_failover_history.sql").into()],
    )
    .await?;
    let old_primary = c.old_primary.clone().unwrap_or_default();
    let lost = c.bytes_lost_estimate as i64;
    let timeline = c.timeline.map(|t| t as i32);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 15] = [
        &cluster,
        &c.kind,
        &c.mode,
        &old_primary,
        &c.new_primary,
        &c.by,
        &detected_at,
        &decided_at,
        &promoted_at,
        &c.old_primary_lsn,
        &c.new_primary_lsn,
        &lost,
        &timeline,
        &c.reason,
        details,
    ];
    let fut = client.execute(
        "INSERT INTO failover_history (cluster, kind, mode, old_primary, new_primary, decided_by, detected_at, \
         decided_at, promoted_at, old_primary_lsn, new_primary_lsn, bytes_lost_estimate, timeline, reason, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &params,
    );
    match tokio::time::timeout(t, fut).await {
        Ok(r) => r.map(|_| ()).map_err(Error::from),
        Err(_) => Err(Error::Timeout("writing the failover_history row".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FailoverOptions {
        let cfg = Config { etcd_endpoints: vec!["http://127.0.0.1:1".into()], ..Default::default() };
        FailoverOptions::from_config(&cfg).unwrap()
    }

    #[test]
    fn options_take_json_overrides_and_refuse_bad_ones() {
        let mut o = opts();
        o.apply_json(r#"{"lease_ttl_ms": 3000, "loop_interval_ms": 200, "mode": "async", "fence": "read_only"}"#)
            .unwrap();
        assert_eq!(o.lease_ttl, Duration::from_secs(3));
        assert_eq!(o.safety_margin, Duration::from_millis(1500));
        assert_eq!(o.mode, HaMode::Async);
        assert_eq!(o.fence, FenceMode::ReadOnly);
        o.validate().unwrap();
        assert!(opts().apply_json(r#"{"nope": 1}"#).is_err());
        assert!(opts().apply_json(r#"{"mode": "maybe"}"#).is_err());
        assert!(opts().apply_json("[]").is_err());
        let mut o = opts();
        o.apply_json(r#"{"lease_ttl_ms": 1000}"#).unwrap();
        assert!(o.validate().is_err());
        let mut o = opts();
        o.etcd_endpoints.clear();
        assert!(o.validate().unwrap_err().to_string().contains("etcd_endpoints"));
    }

    fn st(name: &str, standby: bool, lsn: u64) -> NodeState {
        NodeState {
            name: name.into(),
            reachable: true,
            in_recovery: Some(standby),
            lsn: Some(Lsn(lsn)),
            receive_lsn: Some(Lsn(lsn)),
            replay_lsn: Some(Lsn(lsn)),
            timeline: Some(1),
            streaming: Some(true),
            upstream: None,
            replay_delay_s: None,
            latency_ms: Some(1.0),
            error: None,
        }
    }

    #[test]
    fn the_most_advanced_standby_within_the_lag_limit_is_chosen() {
        let nodes = NodeSet::parse(
            "p1=postgres://u@127.0.0.1:1/d,p2=postgres://u@127.0.0.1:2/d,p3=postgres://u@127.0.0.1:3/d",
            None,
        )
        .unwrap();
        let m = FailoverManager::new(&Config::default(), nodes, opts()).unwrap();
        let s = &m.shared;
        let mut down = st("p1", false, 0);
        down.reachable = false;
        let states = vec![down.clone(), st("p2", true, 100), st("p3", true, 200)];
        assert_eq!(s.choose(&states, "p1", None, Some(Lsn(300)), &[]).unwrap().name, "p3");
        // A named target behind another standby is refused.
        assert!(matches!(s.choose(&states, "p1", Some("p2"), None, &[]), Err(Error::NoCandidate(_))));
        // A fenced standby is never chosen.
        assert_eq!(s.choose(&states, "p1", None, None, &["p3".into()]).unwrap().name, "p2");
        // Every standby beyond the lag limit: nothing.
        let e = s.choose(&states, "p1", None, Some(Lsn(200 + (1 << 20) + 1)), &[]).unwrap_err();
        assert!(e.to_string().contains("maximum_lag_on_failover"), "{e}");
        // No standby reachable.
        let mut p2 = st("p2", true, 0);
        p2.reachable = false;
        p2.error = Some("refused".into());
        let e = s.choose(&[down, p2], "p1", None, None, &[]).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }
}
