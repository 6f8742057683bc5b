//! `ReplicationManager`: the streaming replication of a PostgreSQL cluster as one object.
//!
//! - [`status`](ReplicationManager::status): every node's role and position, the primary's view
//!   of its standbys (`pg_stat_replication`: state, sync state, lag in bytes and seconds), the
//!   replication slots and how much WAL each one holds back, and whether more than one node
//!   answers as a primary (`split_brain`).
//! - read routing ([`read_pool`](ReplicationManager::read_pool),
//!   [`query_read`](ReplicationManager::query_read)): read-only queries go to a standby whose lag
//!   is within the limits, round robin or least lag first; stale and unreachable standbys are
//!   skipped; with none left the query goes to the primary, or is refused when the options say so.
//! - the operations an operator or the failover logic needs: [`add_replica`](ReplicationManager::add_replica)
//!   (slot, base backup, start, wait for streaming, synchronous list),
//!   [`remove_replica`](ReplicationManager::remove_replica), [`promote`](ReplicationManager::promote)
//!   and [`rejoin`](ReplicationManager::rejoin) (a former primary back as a standby with `pg_rewind`).
//!
//! Status and operations use short-lived connections of their own (see [`super::node`]); only
//! read routing keeps pools, one per node, so a query never pays for a connect.

use super::node::{self, query_timed, sql_literal, Lsn, NodeSet, NodeState, PgNode, ReplicaStat};
use crate::backup::cluster::{chown_tree, pg_command, postgres_ids};
use crate::config::Config;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How a standby is chosen for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadRouting {
    /// Take the qualifying standbys in turn.
    #[default]
    RoundRobin,
    /// Take the qualifying standby with the fewest bytes to replay.
    LeastLag,
}

/// Options of a [`ReplicationManager`]. As JSON (C and C++ APIs) every field is optional and
/// durations are in milliseconds or seconds as the names say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationOptions {
    /// Time limit of one node probe (connect + query), in ms.
    pub probe_timeout_ms: u64,
    /// A standby further behind the primary than this many bytes is not used for reads.
    pub max_lag_bytes: u64,
    /// A standby further behind than this many seconds is not used for reads.
    pub max_lag_seconds: f64,
    /// Connections per node in the read pools.
    pub read_pool_size: usize,
    /// Round robin or least lag.
    pub routing: ReadRouting,
    /// When no standby qualifies: send the read to the primary (true) or refuse it (false).
    pub fallback_to_primary: bool,
    /// How long a routing decision's view of the cluster is reused before it is probed again, in ms.
    pub refresh_interval_ms: u64,
    /// Synchronous replication for added and rejoined standbys: `Some(true)` adds them to the
    /// primary's `synchronous_standby_names`, `Some(false)` leaves the list alone, `None` (the
    /// default) follows the primary: a non-empty list (synchronous mode) gets the new standby.
    pub synchronous: Option<bool>,
    /// How long to wait for a started standby to stream, in seconds.
    pub stream_wait_s: u64,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            probe_timeout_ms: 3000,
            max_lag_bytes: 16 << 20,
            max_lag_seconds: 5.0,
            read_pool_size: 4,
            routing: ReadRouting::RoundRobin,
            fallback_to_primary: true,
            refresh_interval_ms: 1000,
            synchronous: None,
            stream_wait_s: 120,
        }
    }
}

impl ReplicationOptions {
    /// Parses options from JSON; NULL/empty gives the defaults.
    pub fn from_json(text: Option<&str>) -> Result<Self> {
        match text.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Self::default()),
            Some(t) => {
                let o: Self = serde_json::from_str(t).map_err(|e| Error::Json(format!("replication options: {e}")))?;
                o.validate()?;
                Ok(o)
            }
        }
    }

    fn validate(&self) -> Result<()> {
        if self.probe_timeout_ms == 0 {
            return Err(Error::InvalidArgument("probe_timeout_ms must be positive".into()));
        }
        if self.read_pool_size == 0 {
            return Err(Error::InvalidArgument("read_pool_size must be at least 1".into()));
        }
        if self.max_lag_seconds.is_nan() || self.max_lag_seconds < 0.0 {
            return Err(Error::InvalidArgument("max_lag_seconds must be a number >= 0".into()));
        }
        Ok(())
    }

    fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
}

/// One replication slot on the primary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlotStatus {
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// A WAL sender uses it right now.
    pub active: bool,
    pub restart_lsn: Option<Lsn>,
    /// WAL the slot keeps on the primary: current position minus `restart_lsn`.
    pub retained_bytes: Option<u64>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL's `wal_status`).
    pub wal_status: Option<String>,
}

/// One standby of the cluster: the node's own view and the primary's view of it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicaStatus {
    pub name: String,
    /// The standby answered its probe.
    pub reachable: bool,
    /// The standby answered and is in recovery.
    pub in_recovery: Option<bool>,
    /// Its WAL receiver streams (the standby's view).
    pub streaming: Option<bool>,
    /// `pg_stat_replication.state` on the primary (`streaming`, `catchup`, …); absent when the
    /// primary has no WAL sender for it.
    pub state: Option<String>,
    /// `sync`, `quorum`, `potential` or `async`.
    pub sync_state: Option<String>,
    pub sent_lsn: Option<Lsn>,
    pub write_lsn: Option<Lsn>,
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// The primary's position minus what the standby replayed.
    pub lag_bytes: Option<u64>,
    /// How far behind in time: the primary's `replay_lag`, or 0 when PostgreSQL cleared it
    /// (it does once an idle standby has caught up).
    pub lag_seconds: Option<f64>,
    pub write_lag_s: Option<f64>,
    pub flush_lag_s: Option<f64>,
    pub replay_lag_s: Option<f64>,
    /// Its slot on the primary (named after the node), when there is one.
    pub slot: Option<SlotStatus>,
    /// Whether read routing would use it now.
    pub readable: bool,
    /// Why it is not used for reads.
    pub not_readable_because: Option<String>,
    /// The probe's error.
    pub error: Option<String>,
}

/// The state of the whole cluster at one moment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicationStatus {
    /// The one reachable node that is not in recovery; absent when there is none or more than one.
    pub primary: Option<String>,
    /// Every reachable node that answers as a primary (more than one is a split brain).
    pub primaries: Vec<String>,
    /// True when two or more nodes accept writes at once. Nothing should write until it is fixed.
    pub split_brain: bool,
    /// The primary's `synchronous_standby_names` (empty: asynchronous replication).
    pub synchronous_standby_names: Option<String>,
    /// The primary's `synchronous_commit`.
    pub synchronous_commit: Option<String>,
    /// The primary's current WAL position.
    pub primary_lsn: Option<Lsn>,
    /// Every node's probe, in the node set's order.
    pub nodes: Vec<NodeState>,
    /// Every node except the primary.
    pub replicas: Vec<ReplicaStatus>,
    /// Every replication slot on the primary.
    pub slots: Vec<SlotStatus>,
    /// Why the primary's view is missing, when it is.
    pub error: Option<String>,
    pub checked_at: DateTime<Utc>,
}

impl ReplicationStatus {
    /// The standby called `name`.
    pub fn replica(&self, name: &str) -> Option<&ReplicaStatus> {
        self.replicas.iter().find(|r| r.name == name)
    }
}

/// The node chosen for a read.
#[derive(Clone, Debug)]
pub struct ReadTarget {
    /// The node's name.
    pub node: String,
    /// True when no standby qualified and the read goes to the primary.
    pub primary: bool,
    /// The node's read pool.
    pub db: DatabaseManager,
}

/// The result of [`ReplicationManager::query_read`].
#[derive(Debug, Clone, Serialize)]
pub struct ReadResult {
    /// The node that served the query.
    pub node: String,
    /// True when the primary served it (no standby qualified).
    pub primary: bool,
    /// The rows, as an array of objects.
    pub rows: Value,
}

/// What [`ReplicationManager::add_replica`] did.
#[derive(Debug, Clone, Serialize)]
pub struct AddReport {
    pub name: String,
    pub primary: String,
    pub data_dir: PathBuf,
    pub port: u16,
    /// Seconds spent in `pg_basebackup`.
    pub basebackup_s: f64,
    /// Seconds from the start until the primary saw the standby streaming.
    pub total_s: f64,
    /// The primary's `synchronous_standby_names` afterwards.
    pub synchronous_standby_names: String,
}

/// What [`ReplicationManager::remove_replica`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveReport {
    pub name: String,
    /// The server was running here and was stopped.
    pub stopped: bool,
    /// Its slot on the primary was dropped.
    pub slot_dropped: bool,
    /// The primary's `synchronous_standby_names` afterwards (empty: asynchronous; this is what
    /// happens when the last synchronous standby is removed, so commits do not wait forever).
    pub synchronous_standby_names: Option<String>,
    /// Set when removing the standby left the primary without any synchronous standby.
    pub warning: Option<String>,
}

/// What [`ReplicationManager::rejoin`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RejoinReport {
    pub name: String,
    pub primary: String,
    /// False when `pg_rewind` found the node's timeline already contained in the new primary's.
    pub rewound: bool,
    /// `pg_rewind`'s own summary.
    pub rewind_output: String,
    pub rewind_s: f64,
    pub total_s: f64,
}

#[derive(Default)]
struct RouteCache {
    at: Option<Instant>,
    status: Option<ReplicationStatus>,
}

/// Streaming replication of one cluster: status, read routing and the replica operations.
/// Thread-safe; share it behind an `Arc`.
pub struct ReplicationManager {
    nodes: RwLock<NodeSet>,
    config: Config,
    options: ReplicationOptions,
    pools: Mutex<HashMap<String, DatabaseManager>>,
    route: Mutex<RouteCache>,
    next: AtomicUsize,
}

impl std::fmt::Debug for ReplicationManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.node_set().nodes.iter().map(|n| n.name.clone()).collect();
        f.debug_struct("ReplicationManager").field("nodes", &names).field("options", &self.options).finish()
    }
}

const SLOTS_SQL: &str = "SELECT slot_name::text, slot_type, active, restart_lsn::text, \
     CASE WHEN restart_lsn IS NULL THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 END, \
     wal_status FROM pg_replication_slots ORDER BY slot_name";

const SETTINGS_SQL: &str = "SELECT current_setting('synchronous_standby_names'), \
     current_setting('synchronous_commit'), pg_current_wal_lsn()::text";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))?
}

fn valid_node_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Error::InvalidArgument(format!(
            "node name {name:?} must be 1-63 lower-case letters, digits or '_' (it names a replication slot)"
        )));
    }
    Ok(())
}

/// Whether a data directory can receive a base backup: absent, or an empty directory.
fn check_empty_dir(dir: &Path) -> Result<()> {
    if !dir.is_absolute() {
        return Err(Error::InvalidArgument(format!("the data directory {} must be an absolute path", dir.display())));
    }
    match std::fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "the data directory {} is not empty; refusing to overwrite it",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory || dir.is_file() => {
            Err(Error::InvalidArgument(format!("{} is a file, not a directory", dir.display())))
        }
        Err(e) => Err(Error::Io(format!("cannot read {}: {e}", dir.display()))),
    }
}

/// The two settings `pg_rewind` needs, read from `pg_controldata` output: data page checksums
/// (version > 0) or `wal_log_hints`.
pub(crate) fn controldata_allows_rewind(text: &str) -> Option<bool> {
    let mut checksums = None;
    let mut hints = None;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            match k.trim() {
                "Data page checksum version" => checksums = v.parse::<u32>().ok().map(|n| n > 0),
                "wal_log_hints setting" => hints = Some(v == "on"),
                _ => {}
            }
        }
    }
    match (checksums, hints) {
        (None, None) => None,
        (c, h) => Some(c.unwrap_or(false) || h.unwrap_or(false)),
    }
}

/// Appends `key = 'value'` lines to `postgresql.auto.conf` (later lines win) and keeps the
/// file owned by the server's user.
fn append_auto_conf(dir: &Path, settings: &[(&str, String)]) -> Result<()> {
    use std::io::Write;
    let path = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
    let mut text = String::from("\n# set by rootstream-db ReplicationManager\n");
    for (k, v) in settings {
        text.push_str(&format!("{k} = {}\n", sql_literal(v)));
    }
    f.write_all(text.as_bytes()).map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    if let Some((uid, gid)) = postgres_ids() {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| Error::Io(e.to_string()))?;
    }
    Ok(())
}

fn touch_standby_signal(dir: &Path) -> Result<()> {
    let path = dir.join("standby.signal");
    std::fs::write(&path, b"").map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    if let Some((uid, gid)) = postgres_ids() {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| Error::Io(e.to_string()))?;
    }
    Ok(())
}

/// The node's own configuration, which `pg_rewind` would replace with the source's copies:
/// every `*.conf` file at the top of the data directory (`postgresql.conf`,
/// `postgresql.auto.conf`, `pg_hba.conf`, `pg_ident.conf` and any file they include from there,
/// where a deployment keeps the node's port and name).
fn saved_config_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::Io(format!("cannot list {}: {e}", dir.display())))? {
        let e = e.map_err(|e| Error::Io(e.to_string()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".conf") && e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            let bytes = std::fs::read(e.path()).map_err(|e| Error::Io(format!("cannot read {name}: {e}")))?;
            out.push((name, bytes));
        }
    }
    Ok(out)
}

/// Turns the former primary `node` into a standby of `primary` (`client` is connected to it):
/// stops the node if it runs (pg_rewind needs it shut down, and it must not take writes),
/// gives it a slot on the primary, rewinds it with `pg_rewind` while keeping its own
/// configuration files, points it at the primary with its slot and `application_name`, drops a
/// fencing `default_transaction_read_only` and starts it. Returns whether anything was
/// rewound, pg_rewind's output and its time. The one path behind
/// [`ReplicationManager::rejoin`] and the failover manager's rejoin after a switchover.
pub(crate) async fn rewind_as_standby(
    cfg: &Config,
    node: &PgNode,
    primary: &PgNode,
    client: &Client,
) -> Result<(bool, String, f64)> {
    let dir = node.require_data_dir("rejoining with pg_rewind")?.to_path_buf();
    let name = node.name.clone();
    let (c, n2) = (cfg.clone(), node.clone());
    blocking(move || node::pg_ctl_stop(&c, &n2, "fast", Duration::from_secs(60))).await?;
    node::create_slot(client, primary, &name).await?;
    // A just-promoted primary writes its new timeline into pg_control only at the end of its
    // first checkpoint; until then pg_rewind reads the old timeline there, finds "the same
    // timeline" and rewinds nothing. A checkpoint now makes the fork visible.
    query_timed(client, primary, Duration::from_secs(120), "CHECKPOINT").await?;

    let source = primary.conninfo()?;
    let c = cfg.clone();
    let dir2 = dir.clone();
    let t0 = Instant::now();
    let (rewound, output) = blocking(move || {
        // pg_rewind copies the source's configuration files; the node keeps its own.
        let saved = saved_config_files(&dir2)?;
        let out = pg_command(&c, "pg_rewind")
            .arg("--target-pgdata")
            .arg(&dir2)
            .arg("--source-server")
            .arg(&source)
            .current_dir(&dir2)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| Error::Io(format!("cannot run pg_rewind: {e}")))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for (f, bytes) in &saved {
            let p = dir2.join(f);
            std::fs::write(&p, bytes).map_err(|e| Error::Io(format!("cannot restore {}: {e}", p.display())))?;
            if let Some((uid, gid)) = postgres_ids() {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| Error::Io(e.to_string()))?;
            }
        }
        if !out.status.success() {
            let hint = if text.contains("wal_log_hints") || text.contains("checksums") {
                " (the cluster needs data checksums or wal_log_hints = on; rebuild this node with a base backup)"
            } else {
                ""
            };
            return Err(Error::Io(format!("pg_rewind of {} failed{hint}: {}", dir2.display(), text.trim())));
        }
        Ok((!text.contains("no rewind required"), text.trim().to_string()))
    })
    .await?;
    let rewind_s = t0.elapsed().as_secs_f64();
    let conninfo = format!("{} application_name={}", primary.conninfo()?, name);
    let c = cfg.clone();
    let n2 = node.clone();
    blocking(move || {
        point_at_primary(&dir, conninfo, &n2.name)?;
        touch_standby_signal(&dir)?;
        node::pg_ctl_start(&c, &n2, None, Duration::from_secs(120))
    })
    .await?;
    Ok((rewound, output, rewind_s))
}

/// Rewrites the node's `postgresql.auto.conf` so it follows the primary at `conninfo` through
/// the slot `slot`: earlier upstream settings and a fencing `default_transaction_read_only`
/// are dropped (a standby promoted later must take writes), the rest is kept.
fn point_at_primary(dir: &Path, conninfo: String, slot: &str) -> Result<()> {
    let path = dir.join("postgresql.auto.conf");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !["primary_conninfo", "primary_slot_name", "default_transaction_read_only"].iter().any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, kept).map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    append_auto_conf(dir, &[("primary_conninfo", conninfo), ("primary_slot_name", slot.to_string())])
}

impl ReplicationManager {
    /// A manager for `nodes`. `config` supplies the PostgreSQL tools' directory (`pg_bin_dir`)
    /// and the pool settings of the read pools (time limits); its `database_url` is not used.
    pub fn new(nodes: NodeSet, config: &Config, options: ReplicationOptions) -> Result<Self> {
        options.validate()?;
        if nodes.nodes.is_empty() {
            return Err(Error::Config("the replication manager needs at least one node".into()));
        }
        Ok(ReplicationManager {
            nodes: RwLock::new(nodes),
            config: config.clone(),
            options,
            pools: Mutex::new(HashMap::new()),
            route: Mutex::new(RouteCache::default()),
            next: AtomicUsize::new(0),
        })
    }

    /// A manager for the nodes of `ROOTSTREAM_HA_PG_NODES` / `ROOTSTREAM_HA_PG_DATA`.
    pub fn from_env(config: &Config, options: ReplicationOptions) -> Result<Self> {
        Self::new(NodeSet::from_env()?, config, options)
    }

    /// The options in use.
    pub fn options(&self) -> &ReplicationOptions {
        &self.options
    }

    /// A copy of the current node set (it changes with `add_replica` / `remove_replica`).
    pub fn node_set(&self) -> NodeSet {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn node(&self, name: &str) -> Result<PgNode> {
        self.node_set().get(name).cloned()
    }

    fn invalidate_routes(&self) {
        *self.route.lock().unwrap_or_else(|e| e.into_inner()) = RouteCache::default();
    }

    /// Probes every node and asks the primary about its standbys and slots.
    pub async fn status(&self) -> Result<ReplicationStatus> {
        let set = self.node_set();
        let timeout = self.options.probe_timeout();
        let nodes = node::probe_all(&set, timeout).await;
        let primaries: Vec<String> = nodes.iter().filter(|n| n.is_primary()).map(|n| n.name.clone()).collect();
        let split_brain = primaries.len() > 1;
        let primary = if primaries.len() == 1 { Some(primaries[0].clone()) } else { None };
        let mut st = ReplicationStatus {
            primary: primary.clone(),
            primaries: primaries.clone(),
            split_brain,
            synchronous_standby_names: None,
            synchronous_commit: None,
            primary_lsn: None,
            nodes: nodes.clone(),
            replicas: Vec::new(),
            slots: Vec::new(),
            error: None,
            checked_at: Utc::now(),
        };
        let mut stats: Vec<ReplicaStat> = Vec::new();
        if split_brain {
            st.error = Some(format!(
                "split brain: {} all accept writes; stop all but one before anything writes",
                primaries.join(", ")
            ));
        } else if let Some(p) = &primary {
            let pnode = set.get(p)?.clone();
            match self.primary_view(&pnode, timeout).await {
                Ok((s, slots, ssn, sc, lsn)) => {
                    stats = s;
                    st.slots = slots;
                    st.synchronous_standby_names = Some(ssn);
                    st.synchronous_commit = Some(sc);
                    st.primary_lsn = lsn;
                }
                Err(e) => st.error = Some(format!("primary {p}: {e}")),
            }
        } else {
            st.error = Some("no node answers as a primary".into());
        }
        for n in &nodes {
            if Some(&n.name) == primary.as_ref() || primaries.contains(&n.name) {
                continue;
            }
            let stat = stats.iter().find(|s| s.name == n.name);
            let slot = st.slots.iter().find(|s| s.name == n.name).cloned();
            st.replicas.push(self.replica_status(n, stat, slot, primary.is_some()));
        }
        Ok(st)
    }

    async fn primary_view(
        &self,
        p: &PgNode,
        timeout: Duration,
    ) -> Result<(Vec<ReplicaStat>, Vec<SlotStatus>, String, String, Option<Lsn>)> {
        let client = node::connect(p, timeout).await?;
        let stats = node::stat_replication(&client, p, timeout).await?;
        let slots = slots(&client, p, timeout).await?;
        let rows = query_timed(&client, p, timeout, SETTINGS_SQL).await?;
        let lsn = rows[0].get::<_, Option<String>>(2).and_then(|s| s.parse().ok());
        Ok((stats, slots, rows[0].get(0), rows[0].get(1), lsn))
    }

    fn replica_status(
        &self,
        n: &NodeState,
        stat: Option<&ReplicaStat>,
        slot: Option<SlotStatus>,
        have_primary: bool,
    ) -> ReplicaStatus {
        let lag_bytes = stat.and_then(|s| s.lag_bytes);
        // PostgreSQL clears the lag columns a moment after a standby has caught up and the
        // primary went idle: no value means nothing measurable is pending (the byte limit
        // still applies).
        let lag_seconds = stat.map(|s| s.replay_lag_s.unwrap_or(0.0));
        let reason = if !n.reachable {
            Some(format!("unreachable: {}", n.error.as_deref().unwrap_or("no answer")))
        } else if n.in_recovery != Some(true) {
            Some("not in recovery".to_string())
        } else if !have_primary {
            Some("no primary to measure its lag against".to_string())
        } else if stat.is_none() {
            Some("the primary has no WAL sender for it (not streaming)".to_string())
        } else if stat.map(|s| s.state.as_str()) != Some("streaming") {
            Some(format!("state {} (not streaming)", stat.map(|s| s.state.as_str()).unwrap_or("?")))
        } else if lag_bytes.is_none_or(|b| b > self.options.max_lag_bytes) {
            Some(format!(
                "{} bytes behind (limit {})",
                lag_bytes.map(|b| b.to_string()).unwrap_or_else(|| "unknown".into()),
                self.options.max_lag_bytes
            ))
        } else if lag_seconds.is_some_and(|s| s > self.options.max_lag_seconds) {
            Some(format!("{:.3} s behind (limit {} s)", lag_seconds.unwrap_or(0.0), self.options.max_lag_seconds))
        } else {
            None
        };
        ReplicaStatus {
            name: n.name.clone(),
            reachable: n.reachable,
            in_recovery: n.in_recovery,
            streaming: n.streaming,
            state: stat.map(|s| s.state.clone()),
            sync_state: stat.map(|s| s.sync_state.clone()),
            sent_lsn: stat.and_then(|s| s.sent_lsn),
            write_lsn: stat.and_then(|s| s.write_lsn),
            flush_lsn: stat.and_then(|s| s.flush_lsn),
            replay_lsn: stat.and_then(|s| s.replay_lsn).or(n.replay_lsn),
            lag_bytes,
            lag_seconds,
            write_lag_s: stat.and_then(|s| s.write_lag_s),
            flush_lag_s: stat.and_then(|s| s.flush_lag_s),
            replay_lag_s: stat.and_then(|s| s.replay_lag_s),
            slot,
            readable: reason.is_none(),
            not_readable_because: reason,
            error: n.error.clone(),
        }
    }

    /// Writes one `replication_status` row per standby (needs migration 005 on `db`). Returns
    /// the number of rows written.
    pub async fn record_status(&self, db: &DatabaseManager) -> Result<u64> {
        let st = self.status().await?;
        record(db, &st).await
    }

    // ---- read routing ----

    fn pool_for(&self, node: &PgNode) -> Result<DatabaseManager> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = pools.get(&node.name) {
            return Ok(db.clone());
        }
        let mut cfg = self.config.clone();
        cfg.database_url = Some(node.url.clone());
        cfg.pool_size = self.options.read_pool_size;
        cfg.connect_timeout = cfg.connect_timeout.min(self.options.probe_timeout());
        cfg.acquire_timeout = cfg.acquire_timeout.min(self.options.probe_timeout().max(Duration::from_secs(1)));
        let db = DatabaseManager::new(&cfg)?;
        pools.insert(node.name.clone(), db.clone());
        Ok(db)
    }

    fn drop_pool(&self, name: &str) {
        if let Some(db) = self.pools.lock().unwrap_or_else(|e| e.into_inner()).remove(name) {
            db.close();
        }
    }

    async fn routing_status(&self, force: bool) -> Result<ReplicationStatus> {
        {
            let c = self.route.lock().unwrap_or_else(|e| e.into_inner());
            if let (false, Some(at), Some(st)) = (force, c.at, &c.status) {
                if at.elapsed() < Duration::from_millis(self.options.refresh_interval_ms) {
                    return Ok(st.clone());
                }
            }
        }
        let st = self.status().await?;
        let mut c = self.route.lock().unwrap_or_else(|e| e.into_inner());
        c.at = Some(Instant::now());
        c.status = Some(st.clone());
        Ok(st)
    }

    /// Forgets the cached view of the cluster, so the next read probes the nodes again.
    pub fn refresh(&self) {
        self.invalidate_routes();
    }

    /// The candidates for a read, best first: qualifying standbys (in routing order), then the
    /// primary when falling back is allowed.
    fn candidates(&self, st: &ReplicationStatus) -> Vec<(String, bool)> {
        let mut ok: Vec<&ReplicaStatus> = st.replicas.iter().filter(|r| r.readable).collect();
        match self.options.routing {
            ReadRouting::LeastLag => ok.sort_by_key(|r| r.lag_bytes.unwrap_or(u64::MAX)),
            ReadRouting::RoundRobin => {
                if !ok.is_empty() {
                    let k = self.next.fetch_add(1, Ordering::Relaxed) % ok.len();
                    ok.rotate_left(k);
                }
            }
        }
        let mut out: Vec<(String, bool)> = ok.into_iter().map(|r| (r.name.clone(), false)).collect();
        if self.options.fallback_to_primary && !st.split_brain {
            if let Some(p) = &st.primary {
                out.push((p.clone(), true));
            }
        }
        out
    }

    fn no_reader(&self, st: &ReplicationStatus) -> Error {
        let why: Vec<String> = st
            .replicas
            .iter()
            .map(|r| format!("{}: {}", r.name, r.not_readable_because.as_deref().unwrap_or("failed")))
            .collect();
        let tail = if st.split_brain {
            " (split brain: the primary is not used)".to_string()
        } else if self.options.fallback_to_primary {
            format!(" and no primary ({})", st.error.as_deref().unwrap_or("none"))
        } else {
            " (falling back to the primary is off)".to_string()
        };
        Error::Connection(format!(
            "no node can serve a read: {}{tail}",
            if why.is_empty() { "no standby".into() } else { why.join("; ") }
        ))
    }

    /// The node a read would go to now, with its pool.
    pub async fn read_pool(&self) -> Result<ReadTarget> {
        let st = self.routing_status(false).await?;
        let set = self.node_set();
        match self.candidates(&st).into_iter().next() {
            Some((name, primary)) => Ok(ReadTarget { db: self.pool_for(set.get(&name)?)?, node: name, primary }),
            None => Err(self.no_reader(&st)),
        }
    }

    /// Runs a read-only query (parameters as a JSON array) on a standby within the lag limits,
    /// or on the primary when none qualifies and falling back is allowed. The statement runs in
    /// a `READ ONLY` transaction on every node, so a write is refused on the primary too. When
    /// the chosen node fails to answer, the next candidate is tried and the view is refreshed.
    pub async fn query_read(&self, sql: &str, params_json: Option<&str>) -> Result<ReadResult> {
        let mut st = self.routing_status(false).await?;
        let mut last_err = None;
        for attempt in 0..2 {
            let set = self.node_set();
            for (name, primary) in self.candidates(&st) {
                let db = self.pool_for(set.get(&name)?)?;
                match read_only(&db, sql, params_json).await {
                    Ok(rows) => return Ok(ReadResult { node: name, primary, rows }),
                    Err(e @ (Error::Connection(_) | Error::Timeout(_))) => {
                        last_err = Some(Error::Connection(format!("node {name}: {e}")));
                        // A connection to a node that stopped answering is not reused.
                        self.drop_pool(&name);
                        self.invalidate_routes();
                    }
                    Err(e) => return Err(e),
                }
            }
            if attempt == 0 {
                st = self.routing_status(true).await?;
            }
        }
        Err(last_err.unwrap_or_else(|| self.no_reader(&st)))
    }

    // ---- operations ----

    async fn current_primary(&self, exclude: Option<&str>) -> Result<PgNode> {
        let set = self.node_set();
        let states = node::probe_all(&set, self.options.probe_timeout()).await;
        let prim: Vec<&NodeState> =
            states.iter().filter(|s| s.is_primary() && Some(s.name.as_str()) != exclude).collect();
        match prim.as_slice() {
            [one] => set.get(&one.name).cloned(),
            [] => Err(Error::State("no node answers as a primary".into())),
            many => Err(Error::State(format!(
                "split brain: {} all answer as primaries; refusing to act",
                many.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    async fn wait_streaming(&self, primary: &PgNode, name: &str, wait: Duration) -> Result<()> {
        let started = Instant::now();
        let timeout = self.options.probe_timeout();
        let mut last = String::from("no WAL sender yet");
        loop {
            match node::connect(primary, timeout).await {
                Ok(c) => match node::stat_replication(&c, primary, timeout).await {
                    Ok(rows) => match rows.iter().find(|r| r.name == name) {
                        Some(r) if r.state == "streaming" => return Ok(()),
                        Some(r) => last = format!("state {}", r.state),
                        None => {}
                    },
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() > wait {
                return Err(Error::Timeout(format!(
                    "{name} did not stream from {} within {wait:?} (last seen: {last})",
                    primary.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Puts `name` into the primary's synchronous list when the options (or the primary's
    /// current mode) say so. Returns the list afterwards.
    async fn sync_list_after_change(&self, client: &Client, primary: &PgNode) -> Result<String> {
        self.sync_list_for(client, primary, &self.node_set()).await
    }

    async fn sync_list_for(&self, client: &Client, primary: &PgNode, set: &NodeSet) -> Result<String> {
        let timeout = self.options.probe_timeout();
        let cur: String = query_timed(client, primary, timeout, "SELECT current_setting('synchronous_standby_names')")
            .await?[0]
            .get(0);
        let want_sync = self.options.synchronous.unwrap_or(!cur.trim().is_empty());
        if want_sync {
            let names = set.others(&primary.name);
            node::set_synchronous_standbys(client, primary, &names, true).await?;
            Ok(node::synchronous_standby_names(&names))
        } else {
            Ok(cur)
        }
    }

    /// Sets up a new standby on this machine: a slot on the primary, `pg_basebackup` into
    /// `data_dir` (absent or empty), `port` in its configuration, `application_name` = `name`,
    /// start, wait until it streams, then the synchronous list. `url` is how clients reach it
    /// (`postgres://user@127.0.0.1:<port>/db`). Refuses an existing name, a non-empty data
    /// directory, and a URL that already answers (above all one that is a primary).
    pub async fn add_replica(&self, name: &str, url: &str, data_dir: &Path, port: u16) -> Result<AddReport> {
        let started = Instant::now();
        valid_node_name(name)?;
        if port == 0 {
            return Err(Error::InvalidArgument("port must be 1-65535".into()));
        }
        if self.node_set().get(name).is_ok() {
            return Err(Error::Conflict(format!("a node called {name} already exists in this cluster")));
        }
        let candidate = NodeSet::parse(&format!("{name}={url}"), None)?.nodes.remove(0);
        let addr = candidate.address()?;
        if !addr.ends_with(&format!(":{port}")) {
            return Err(Error::InvalidArgument(format!("the URL's port ({addr}) is not the port {port}")));
        }
        let probe = node::probe(&candidate, self.options.probe_timeout()).await;
        if probe.is_primary() {
            return Err(Error::State(format!(
                "{} answers as a primary (not in recovery); a replica URL must not point at a primary",
                candidate.display_url()
            )));
        }
        if let Some(other) = self.node_set().nodes.iter().find(|n| n.address().ok().as_deref() == Some(addr.as_str())) {
            return Err(Error::Conflict(format!("node {} already uses {addr}", other.name)));
        }
        if probe.reachable {
            return Err(Error::Conflict(format!(
                "a server already answers at {} (a standby); refusing to set up another one there",
                candidate.display_url()
            )));
        }
        check_empty_dir(data_dir)?;
        let primary = self.current_primary(None).await?;
        let timeout = self.options.probe_timeout();
        let client = node::connect(&primary, timeout).await?;
        let slot_created = node::create_slot(&client, &primary, name).await?;

        let node = PgNode { name: name.to_string(), url: url.to_string(), data_dir: Some(data_dir.to_path_buf()) };
        let res = async {
            let s = self.build_replica(&primary, &node, port).await?;
            // The synchronous list is computed with the new node in the set.
            let mut with_new = self.node_set();
            with_new.nodes.push(node.clone());
            let c = node::connect(&primary, timeout).await?;
            let ssn = self.sync_list_for(&c, &primary, &with_new).await?;
            Ok::<_, Error>((s, ssn))
        }
        .await;
        let (basebackup_s, ssn) = match res {
            Ok(s) => s,
            Err(e) => {
                let n2 = node.clone();
                let cfg = self.config.clone();
                let _ = blocking(move || node::pg_ctl_stop(&cfg, &n2, "immediate", Duration::from_secs(30))).await;
                if slot_created {
                    if let Ok(c) = node::connect(&primary, timeout).await {
                        let _ = node::drop_slot(&c, &primary, name).await;
                    }
                }
                // The directory was empty or absent before: clear what the attempt left.
                if let Ok(entries) = std::fs::read_dir(data_dir) {
                    for e in entries.flatten() {
                        let p = e.path();
                        let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                    }
                }
                return Err(e);
            }
        };
        self.nodes.write().unwrap_or_else(|e| e.into_inner()).nodes.push(node);
        self.invalidate_routes();
        Ok(AddReport {
            name: name.to_string(),
            primary: primary.name.clone(),
            data_dir: data_dir.to_path_buf(),
            port,
            basebackup_s,
            total_s: started.elapsed().as_secs_f64(),
            synchronous_standby_names: ssn,
        })
    }

    async fn build_replica(&self, primary: &PgNode, node: &PgNode, port: u16) -> Result<f64> {
        let dir = node.require_data_dir("adding a replica")?.to_path_buf();
        let conninfo = format!("{} application_name={}", primary.conninfo()?, node.name);
        // The copy carries the primary's cluster_name (it titles the server's processes);
        // the standby gets its own: the primary's with the node name swapped, or the name.
        let client = node::connect(primary, self.options.probe_timeout()).await?;
        let pcn: String =
            query_timed(&client, primary, self.options.probe_timeout(), "SELECT current_setting('cluster_name')")
                .await?[0]
                .get(0);
        drop(client);
        let cluster_name = match pcn.strip_suffix(&primary.name) {
            Some(prefix) if !pcn.is_empty() => format!("{prefix}{}", node.name),
            _ => node.name.clone(),
        };
        let cfg = self.config.clone();
        let name = node.name.clone();
        let t0 = Instant::now();
        let dir2 = dir.clone();
        let conninfo2 = conninfo.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir2).map_err(|e| Error::Io(format!("cannot create {}: {e}", dir2.display())))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir2, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::Io(e.to_string()))?;
            if let Some((uid, gid)) = postgres_ids() {
                chown_tree(&dir2, uid, gid)?;
            }
            let out = pg_command(&cfg, "pg_basebackup")
                .arg("-D")
                .arg(&dir2)
                .args(["-R", "-S", &name, "-X", "stream", "-c", "fast", "-d", &conninfo2])
                .output()
                .map_err(|e| Error::Io(format!("cannot run pg_basebackup: {e}")))?;
            if !out.status.success() {
                return Err(Error::Io(format!(
                    "pg_basebackup for {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            // The copy may carry the primary's own log, pid and socket settings; the standby
            // gets its port, its conninfo and its slot.
            let _ = std::fs::remove_file(dir2.join("postmaster.pid"));
            append_auto_conf(
                &dir2,
                &[
                    ("port", port.to_string()),
                    ("cluster_name", cluster_name),
                    ("primary_conninfo", conninfo2),
                    ("primary_slot_name", name.clone()),
                    ("hot_standby", "on".into()),
                ],
            )?;
            touch_standby_signal(&dir2)?;
            Ok(())
        })
        .await?;
        let basebackup_s = t0.elapsed().as_secs_f64();
        let cfg = self.config.clone();
        let n2 = node.clone();
        blocking(move || node::pg_ctl_start(&cfg, &n2, None, Duration::from_secs(120))).await?;
        self.wait_streaming(primary, &node.name, Duration::from_secs(self.options.stream_wait_s)).await?;
        Ok(basebackup_s)
    }

    /// Takes the standby `name` out of the cluster: first out of the primary's synchronous
    /// list (so no commit waits for it), then stopped (when its data directory is here), then
    /// its slot dropped. Removing the last synchronous standby switches the primary to
    /// asynchronous replication and says so in the report's `warning`.
    pub async fn remove_replica(&self, name: &str) -> Result<RemoveReport> {
        let node = self.node(name)?;
        let timeout = self.options.probe_timeout();
        let state = node::probe(&node, timeout).await;
        if state.is_primary() {
            return Err(Error::State(format!("{name} is a primary; only a standby can be removed")));
        }
        let primary = self.current_primary(Some(name)).await?;
        let client = node::connect(&primary, timeout).await?;
        let cur: String =
            query_timed(&client, &primary, timeout, "SELECT current_setting('synchronous_standby_names')").await?[0]
                .get(0);
        let remaining: Vec<String> = self.node_set().others(&primary.name).into_iter().filter(|n| n != name).collect();
        let mut warning = None;
        let mut ssn = Some(cur.clone());
        if !cur.trim().is_empty() {
            node::set_synchronous_standbys(&client, &primary, &remaining, !remaining.is_empty()).await?;
            let v = if remaining.is_empty() { String::new() } else { node::synchronous_standby_names(&remaining) };
            if remaining.is_empty() {
                warning = Some(format!(
                    "{name} was the last standby: {} now replicates asynchronously (synchronous_standby_names is empty), \
                     so commits no longer wait for a standby",
                    primary.name
                ));
            }
            ssn = Some(v);
        }
        let mut stopped = false;
        if node.data_dir.is_some() && node::local_server_running(&node)? {
            let cfg = self.config.clone();
            let n2 = node.clone();
            blocking(move || node::pg_ctl_stop(&cfg, &n2, "fast", Duration::from_secs(60))).await?;
            stopped = true;
        }
        // The WAL sender of a stopped standby takes a moment to go away.
        let mut slot_dropped = false;
        let started = Instant::now();
        loop {
            if node::drop_slot(&client, &primary, name).await? {
                slot_dropped = true;
                break;
            }
            let exists = !query_timed(
                &client,
                &primary,
                timeout,
                &format!("SELECT 1 FROM pg_replication_slots WHERE slot_name = {}", sql_literal(name)),
            )
            .await?
            .is_empty();
            if !exists {
                break;
            }
            if started.elapsed() > Duration::from_secs(15) {
                return Err(Error::State(format!(
                    "the slot {name} on {} is still in use (is {name} still running elsewhere? stop it first)",
                    primary.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.nodes.write().unwrap_or_else(|e| e.into_inner()).nodes.retain(|n| n.name != name);
        self.drop_pool(name);
        self.invalidate_routes();
        Ok(RemoveReport { name: name.to_string(), stopped, slot_dropped, synchronous_standby_names: ssn, warning })
    }

    /// Promotes the standby `name` and waits until it accepts writes. Refuses a node that is
    /// already a primary or does not answer. (When to promote is the failover logic's call.)
    pub async fn promote(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        let st = node::probe(&node, self.options.probe_timeout()).await;
        if !st.reachable {
            return Err(Error::Connection(format!(
                "cannot promote {name}: {}",
                st.error.unwrap_or_else(|| "no answer".into())
            )));
        }
        if st.is_primary() {
            return Err(Error::State(format!("{name} is already a primary, not a standby; nothing to promote")));
        }
        let r = node::promote(&node, Duration::from_secs(60)).await;
        self.invalidate_routes();
        r
    }

    /// Makes the former primary `name` a standby of `new_primary` (default: the node that
    /// answers as the primary): stopped if running, rewound with `pg_rewind` from the new
    /// primary, pointed at it with its own slot and `application_name`, started, and waited for
    /// until it streams. Refuses when the cluster has neither data checksums nor
    /// `wal_log_hints` (pg_rewind cannot work then), before anything is changed.
    pub async fn rejoin(&self, name: &str, new_primary: Option<&str>) -> Result<RejoinReport> {
        let started = Instant::now();
        let node = self.node(name)?;
        let dir = node.require_data_dir("rejoining with pg_rewind")?.to_path_buf();
        if new_primary == Some(name) {
            return Err(Error::InvalidArgument(format!("{name} cannot rejoin itself")));
        }
        let timeout = self.options.probe_timeout();
        let primary = match new_primary {
            Some(p) => {
                let pn = self.node(p)?;
                let st = node::probe(&pn, timeout).await;
                if !st.is_primary() {
                    return Err(Error::State(format!(
                        "{p} is not a primary ({}); rejoin needs the new primary as the source",
                        if st.reachable { "it is in recovery".to_string() } else { st.error.unwrap_or_default() }
                    )));
                }
                pn
            }
            None => self.current_primary(Some(name)).await?,
        };
        let client = node::connect(&primary, timeout).await?;
        // pg_rewind needs hint-bit changes in the WAL: data checksums or wal_log_hints, on the
        // source and above all on the target.
        let rows = query_timed(
            &client,
            &primary,
            timeout,
            "SELECT current_setting('data_checksums'), current_setting('wal_log_hints')",
        )
        .await?;
        let (sc, sh): (String, String) = (rows[0].get(0), rows[0].get(1));
        if sc != "on" && sh != "on" {
            return Err(Error::Config(format!(
                "cannot rejoin {name} with pg_rewind: the source {} has neither data checksums nor wal_log_hints=on \
                 (initdb --data-checksums, or set wal_log_hints=on and restart); rebuild {name} with a base backup instead",
                primary.name
            )));
        }
        let cfg = self.config.clone();
        let dir2 = dir.clone();
        let cd = blocking(move || {
            let out = pg_command(&cfg, "pg_controldata")
                .arg("-D")
                .arg(&dir2)
                .env("LC_ALL", "C")
                .output()
                .map_err(|e| Error::Io(format!("cannot run pg_controldata: {e}")))?;
            if !out.status.success() {
                return Err(Error::Io(format!(
                    "pg_controldata {} failed: {}",
                    dir2.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await?;
        if controldata_allows_rewind(&cd) != Some(true) {
            return Err(Error::Config(format!(
                "cannot rejoin {name} with pg_rewind: its cluster ({}) has neither data checksums nor wal_log_hints=on \
                 (pg_controldata: checksum version 0, wal_log_hints off); rebuild it with a base backup instead",
                dir.display()
            )));
        }
        let (rewound, output, rewind_s) = rewind_as_standby(&self.config, &node, &primary, &client).await?;
        self.wait_streaming(&primary, name, Duration::from_secs(self.options.stream_wait_s)).await?;
        let client = node::connect(&primary, timeout).await?;
        self.sync_list_after_change(&client, &primary).await?;
        self.drop_pool(name);
        self.invalidate_routes();
        Ok(RejoinReport {
            name: name.to_string(),
            primary: primary.name.clone(),
            rewound,
            rewind_output: output,
            rewind_s,
            total_s: started.elapsed().as_secs_f64(),
        })
    }

    /// Closes the read pools.
    pub fn close(&self) {
        for (_, db) in self.pools.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            db.close();
        }
    }
}

impl Drop for ReplicationManager {
    fn drop(&mut self) {
        self.close();
    }
}

async fn slots(client: &Client, node: &PgNode, timeout: Duration) -> Result<Vec<SlotStatus>> {
    let rows = query_timed(client, node, timeout, SLOTS_SQL).await?;
    Ok(rows
        .iter()
        .map(|r| SlotStatus {
            name: r.get::<_, Option<String>>(0).unwrap_or_default(),
            slot_type: r.get::<_, Option<String>>(1).unwrap_or_default(),
            active: r.get::<_, Option<bool>>(2).unwrap_or(false),
            restart_lsn: r.get::<_, Option<String>>(3).and_then(|s| s.parse().ok()),
            retained_bytes: r.get::<_, Option<f64>>(4).map(|b| b.max(0.0) as u64),
            wal_status: r.get(5),
        })
        .collect())
}

/// Runs `sql` in a read-only transaction on `db` and returns the rows as JSON.
async fn read_only(db: &DatabaseManager, sql: &str, params_json: Option<&str>) -> Result<Value> {
    let mut tx = db.begin().await?;
    tx.batch_execute("SET TRANSACTION READ ONLY").await?;
    let rows = tx.query_json(sql, params_json).await;
    let _ = tx.rollback().await;
    rows
}

const INSERT_STATUS_SQL: &str = "INSERT INTO replication_status \
     (checked_at, primary_node, replica_node, reachable, in_recovery, streaming, state, sync_state, \
      replay_lsn, lag_bytes, lag_seconds, slot_active, slot_retained_bytes, split_brain, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// Writes one `replication_status` row per standby of `st`.
pub async fn record(db: &DatabaseManager, st: &ReplicationStatus) -> Result<u64> {
    let mut n = 0;
    for r in &st.replicas {
        let lag_bytes = r.lag_bytes.map(|b| b.min(i64::MAX as u64) as i64);
        let retained = r.slot.as_ref().and_then(|s| s.retained_bytes).map(|b| b.min(i64::MAX as u64) as i64);
        let slot_active = r.slot.as_ref().map(|s| s.active);
        let replay = r.replay_lsn.map(|l| l.to_string());
        let err = r.error.clone().or_else(|| r.not_readable_because.clone());
        n += db
            .execute(
                INSERT_STATUS_SQL,
                &[
                    &st.checked_at,
                    &st.primary,
                    &r.name,
                    &r.reachable,
                    &r.in_recovery,
                    &r.streaming,
                    &r.state,
                    &r.sync_state,
                    &replay,
                    &lag_bytes,
                    &r.lag_seconds,
                    &slot_active,
                    &retained,
                    &st.split_brain,
                    &err,
                ],
            )
            .await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_defaults_and_refuse_unknown_fields() {
        let o = ReplicationOptions::from_json(None).unwrap();
        assert_eq!(o, ReplicationOptions::default());
        let o = ReplicationOptions::from_json(Some(
            r#"{"max_lag_bytes": 10, "routing": "least_lag", "fallback_to_primary": false}"#,
        ))
        .unwrap();
        assert_eq!(o.max_lag_bytes, 10);
        assert_eq!(o.routing, ReadRouting::LeastLag);
        assert!(!o.fallback_to_primary);
        assert!(matches!(ReplicationOptions::from_json(Some(r#"{"nope": 1}"#)), Err(Error::Json(_))));
        assert!(matches!(ReplicationOptions::from_json(Some("{")), Err(Error::Json(_))));
        assert!(ReplicationOptions::from_json(Some(r#"{"read_pool_size": 0}"#)).is_err());
        assert!(ReplicationOptions::from_json(Some(r#"{"probe_timeout_ms": 0}"#)).is_err());
        assert!(ReplicationOptions::from_json(Some(r#"{"max_lag_seconds": -1}"#)).is_err());
    }

    #[test]
    fn controldata_decides_whether_rewind_can_work() {
        let none = "Data page checksum version:           0\nwal_log_hints setting:                off\n";
        let sums = "Data page checksum version:           1\nwal_log_hints setting:                off\n";
        let hints = "Data page checksum version:           0\nwal_log_hints setting:                on\n";
        assert_eq!(controldata_allows_rewind(none), Some(false));
        assert_eq!(controldata_allows_rewind(sums), Some(true));
        assert_eq!(controldata_allows_rewind(hints), Some(true));
        assert_eq!(controldata_allows_rewind("garbage"), None);
    }

    #[test]
    fn names_and_data_dirs_are_checked() {
        assert!(valid_node_name("p4").is_ok());
        assert!(valid_node_name("P4").is_err());
        assert!(valid_node_name("p-4").is_err());
        assert!(valid_node_name("").is_err());
        let tmp = std::env::temp_dir().join(format!("rsdb-repl-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(check_empty_dir(&tmp).is_ok());
        std::fs::create_dir_all(&tmp).unwrap();
        assert!(check_empty_dir(&tmp).is_ok());
        std::fs::write(tmp.join("PG_VERSION"), "15").unwrap();
        let e = check_empty_dir(&tmp).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        assert!(check_empty_dir(&tmp.join("PG_VERSION")).is_err());
        assert!(check_empty_dir(Path::new("relative/dir")).is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    fn manager(opts: ReplicationOptions) -> ReplicationManager {
        let set = NodeSet::parse(
            "p1=postgres://postgres@127.0.0.1:1/x,p2=postgres://postgres@127.0.0.1:2/x,p3=postgres://postgres@127.0.0.1:3/x",
            None,
        )
        .unwrap();
        ReplicationManager::new(set, &Config::default(), opts).unwrap()
    }

    fn state(name: &str, primary: bool) -> NodeState {
        NodeState {
            name: name.into(),
            reachable: true,
            in_recovery: Some(!primary),
            lsn: Some(Lsn(100)),
            receive_lsn: None,
            replay_lsn: Some(Lsn(90)),
            timeline: Some(1),
            streaming: if primary { None } else { Some(true) },
            upstream: None,
            replay_delay_s: Some(30.0),
            latency_ms: Some(1.0),
            error: None,
        }
    }

    fn stat(name: &str, lag: u64, replay_lag: Option<f64>) -> ReplicaStat {
        ReplicaStat {
            name: name.into(),
            client_addr: None,
            state: "streaming".into(),
            sync_state: "quorum".into(),
            sent_lsn: None,
            write_lsn: None,
            flush_lsn: None,
            replay_lsn: None,
            lag_bytes: Some(lag),
            write_lag_s: None,
            flush_lag_s: None,
            replay_lag_s: replay_lag,
        }
    }

    #[test]
    fn stale_and_down_replicas_are_not_readable() {
        let m = manager(ReplicationOptions { max_lag_bytes: 1000, max_lag_seconds: 1.0, ..Default::default() });
        let ok = m.replica_status(&state("p2", false), Some(&stat("p2", 10, None)), None, true);
        assert!(ok.readable, "{ok:?}");
        // Idle and caught up: replay_lag is NULL and lag 0 means 0 s, not the time since the last commit.
        let idle = m.replica_status(&state("p2", false), Some(&stat("p2", 0, None)), None, true);
        assert_eq!(idle.lag_seconds, Some(0.0));
        let far = m.replica_status(&state("p2", false), Some(&stat("p2", 5000, None)), None, true);
        assert!(!far.readable && far.not_readable_because.as_deref().unwrap().contains("bytes"));
        let slow = m.replica_status(&state("p2", false), Some(&stat("p2", 10, Some(3.0))), None, true);
        assert!(!slow.readable && slow.not_readable_because.as_deref().unwrap().contains(" s behind"));
        let none = m.replica_status(&state("p2", false), None, None, true);
        assert!(!none.readable);
        let mut down = state("p3", false);
        down.reachable = false;
        down.error = Some("refused".into());
        let d = m.replica_status(&down, None, None, true);
        assert!(!d.readable && d.not_readable_because.as_deref().unwrap().contains("refused"));
        let orphan = m.replica_status(&state("p2", false), Some(&stat("p2", 0, None)), None, false);
        assert!(!orphan.readable);
    }

    fn status_with(m: &ReplicationManager, replicas: Vec<ReplicaStatus>, split: bool) -> ReplicationStatus {
        let _ = m;
        ReplicationStatus {
            primary: if split { None } else { Some("p1".into()) },
            primaries: if split { vec!["p1".into(), "p2".into()] } else { vec!["p1".into()] },
            split_brain: split,
            synchronous_standby_names: None,
            synchronous_commit: None,
            primary_lsn: None,
            nodes: vec![],
            replicas,
            slots: vec![],
            error: None,
            checked_at: Utc::now(),
        }
    }

    #[test]
    fn routing_rotates_prefers_least_lag_and_falls_back_or_refuses() {
        let m = manager(ReplicationOptions::default());
        let r2 = m.replica_status(&state("p2", false), Some(&stat("p2", 500, None)), None, true);
        let r3 = m.replica_status(&state("p3", false), Some(&stat("p3", 10, None)), None, true);
        let st = status_with(&m, vec![r2.clone(), r3.clone()], false);
        let a = m.candidates(&st);
        let b = m.candidates(&st);
        assert_ne!(a[0].0, b[0].0, "round robin alternates");
        assert_eq!(a.last().unwrap(), &("p1".to_string(), true));

        let least = manager(ReplicationOptions { routing: ReadRouting::LeastLag, ..Default::default() });
        for _ in 0..3 {
            assert_eq!(least.candidates(&st)[0].0, "p3");
        }
        let mut down = state("p2", false);
        down.reachable = false;
        let only_primary = status_with(&m, vec![m.replica_status(&down, None, None, true)], false);
        assert_eq!(m.candidates(&only_primary), vec![("p1".to_string(), true)]);
        let strict = manager(ReplicationOptions { fallback_to_primary: false, ..Default::default() });
        assert!(strict.candidates(&only_primary).is_empty());
        assert!(strict.no_reader(&only_primary).to_string().contains("falling back"));
        // A split brain never sends reads to "the" primary.
        let split = status_with(&m, vec![], true);
        assert!(m.candidates(&split).is_empty());
    }
}
