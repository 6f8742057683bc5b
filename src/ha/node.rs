//! The PostgreSQL nodes of a replicated cluster and the few operations every HA component needs
//! on them: probing a node's role and WAL position, promoting a standby, pointing a standby at a
//! primary, managing replication slots and the synchronous standby list, and running `pg_ctl`
//! on a node whose data directory is on this machine.
//!
//! Every call opens its own short-lived connection with a time limit instead of using a pool:
//! a monitor must see a node that stopped answering as down within its own deadline, and must
//! never be handed a connection that was opened while another node was primary.

use crate::backup::cluster::{pg_command, server_alive};
use crate::config::{redact_url, Config};
use crate::error::{Error, Result};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// A WAL position (log sequence number), as a byte offset into the WAL stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = Error;
    /// Parses PostgreSQL's `X/Y` text form (two hexadecimal halves).
    fn from_str(s: &str) -> Result<Self> {
        let (hi, lo) = s.trim().split_once('/').ok_or_else(|| Error::InvalidArgument(format!("not an LSN: {s:?}")))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| Error::InvalidArgument(format!("not an LSN: {s:?}")))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| Error::InvalidArgument(format!("not an LSN: {s:?}")))?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One PostgreSQL server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgNode {
    /// The node's name: its `application_name` towards the primary and its slot's name.
    pub name: String,
    /// A single-host connection URL (`postgres://user@host:port/db`).
    pub url: String,
    /// The data directory, when the node runs on this machine (needed to stop, start and
    /// rewind it).
    pub data_dir: Option<PathBuf>,
}

impl PgNode {
    /// The URL with any password masked, for messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    fn pg_config(&self) -> Result<tokio_postgres::Config> {
        let cfg = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| Error::Config(format!("node {}: bad URL {}: {e}", self.name, self.display_url())))?;
        if cfg.get_hosts().len() != 1 {
            return Err(Error::Config(format!("node {}: the URL must name exactly one host", self.name)));
        }
        Ok(cfg)
    }

    /// The node as a libpq keyword/value connection string, for `primary_conninfo` and the
    /// PostgreSQL command-line tools.
    pub fn conninfo(&self) -> Result<String> {
        let cfg = self.pg_config()?;
        let mut parts = Vec::new();
        match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => parts.push(format!("host={}", quote_conninfo(h))),
            tokio_postgres::config::Host::Unix(p) => {
                parts.push(format!("host={}", quote_conninfo(&p.to_string_lossy())))
            }
        }
        if let Some(port) = cfg.get_ports().first() {
            parts.push(format!("port={port}"));
        }
        if let Some(user) = cfg.get_user() {
            parts.push(format!("user={}", quote_conninfo(user)));
        }
        if let Some(pw) = cfg.get_password() {
            parts.push(format!("password={}", quote_conninfo(&String::from_utf8_lossy(pw))));
        }
        if let Some(db) = cfg.get_dbname() {
            parts.push(format!("dbname={}", quote_conninfo(db)));
        }
        Ok(parts.join(" "))
    }

    /// `host:port` of the node, for messages and comparisons.
    pub fn address(&self) -> Result<String> {
        let cfg = self.pg_config()?;
        let host = match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.to_string_lossy().into_owned(),
        };
        Ok(format!("{host}:{}", cfg.get_ports().first().copied().unwrap_or(5432)))
    }

    /// The data directory, or an error saying why an operation needs it.
    pub fn require_data_dir(&self, what: &str) -> Result<&Path> {
        self.data_dir.as_deref().ok_or_else(|| {
            Error::Config(format!("{what} needs the data directory of node {} (ha_data_dirs)", self.name))
        })
    }
}

/// Quotes a value for a libpq connection string.
fn quote_conninfo(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c)) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Quotes a value as an SQL string literal.
pub(crate) fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The nodes of one cluster, in a fixed order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSet {
    pub nodes: Vec<PgNode>,
}

fn parse_pairs(text: &str, what: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("{what}: expected name=value, got {:?}", redact_url(item))))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::Config(format!(
                "{what}: node name {name:?} must be letters, digits or '_' (it names a replication slot)"
            )));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(Error::Config(format!("{what}: node {name} is listed twice")));
        }
        out.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(out)
}

impl NodeSet {
    /// Parses `name=url,name=url,…` and, optionally, `name=/data/dir,…` for the nodes that run on
    /// this machine.
    pub fn parse(nodes: &str, data_dirs: Option<&str>) -> Result<Self> {
        let mut set = NodeSet::default();
        for (name, url) in parse_pairs(nodes, "ha_nodes")? {
            let node = PgNode { name, url, data_dir: None };
            node.pg_config()?;
            set.nodes.push(node);
        }
        if set.nodes.is_empty() {
            return Err(Error::Config("ha_nodes lists no node".into()));
        }
        if let Some(dirs) = data_dirs {
            for (name, dir) in parse_pairs(dirs, "ha_data_dirs")? {
                let node = set.nodes.iter_mut().find(|n| n.name == name).ok_or_else(|| {
                    Error::Config(format!("ha_data_dirs names node {name}, which ha_nodes does not list"))
                })?;
                node.data_dir = Some(PathBuf::from(dir));
            }
        }
        Ok(set)
    }

    /// The nodes from `ROOTSTREAM_HA_PG_NODES` and `ROOTSTREAM_HA_PG_DATA`.
    pub fn from_env() -> Result<Self> {
        let nodes = std::env::var("ROOTSTREAM_HA_PG_NODES")
            .map_err(|_| Error::Config("ROOTSTREAM_HA_PG_NODES is not set".into()))?;
        let dirs = std::env::var("ROOTSTREAM_HA_PG_DATA").ok();
        Self::parse(&nodes, dirs.as_deref())
    }

    /// The node called `name`.
    pub fn get(&self, name: &str) -> Result<&PgNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::NotFound(format!("no node called {name:?} in this cluster")))
    }

    /// The names of every node except `name`.
    pub fn others(&self, name: &str) -> Vec<String> {
        self.nodes.iter().filter(|n| n.name != name).map(|n| n.name.clone()).collect()
    }
}

/// Opens one connection to `node`, with `timeout` covering the connect and the handshake.
pub async fn connect(node: &PgNode, timeout: Duration) -> Result<Client> {
    let mut cfg = node.pg_config()?;
    cfg.connect_timeout(timeout);
    cfg.application_name("rootstream-db-ha");
    let fut = cfg.connect(NoTls);
    let (client, conn) = match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(|e| {
            Error::Connection(format!("node {} ({}): {}", node.name, node.display_url(), Error::from(e)))
        })?,
        Err(_) => {
            return Err(Error::Timeout(format!(
                "node {} ({}) did not accept a connection within {timeout:?}",
                node.name,
                node.display_url()
            )))
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Runs one query with a time limit.
pub(crate) async fn query_timed(
    client: &Client,
    node: &PgNode,
    timeout: Duration,
    sql: &str,
) -> Result<Vec<tokio_postgres::Row>> {
    match tokio::time::timeout(timeout, client.query(sql, &[])).await {
        Ok(r) => r.map_err(|e| match Error::from(e) {
            Error::Query(m) => Error::Query(format!("node {}: {m}", node.name)),
            Error::Connection(m) => Error::Connection(format!("node {}: {m}", node.name)),
            other => other,
        }),
        Err(_) => Err(Error::Timeout(format!("node {}: query did not finish within {timeout:?}", node.name))),
    }
}

/// A node's role and position at one moment, as seen by [`probe`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeState {
    pub name: String,
    /// False when it did not answer within the time limit.
    pub reachable: bool,
    /// True for a standby, false for a primary; absent when unreachable.
    pub in_recovery: Option<bool>,
    /// The node's position: the current WAL insert position of a primary, and for a standby the
    /// furthest of what it received and what it replayed.
    pub lsn: Option<Lsn>,
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// The timeline the node writes (primary) or receives (standby).
    pub timeline: Option<u32>,
    /// Whether a standby's WAL receiver is streaming right now.
    pub streaming: Option<bool>,
    /// The primary a standby is configured to follow (`primary_conninfo` host and port).
    pub upstream: Option<String>,
    /// Seconds since the last replayed transaction's commit (standby; absent when it has not
    /// replayed one).
    pub replay_delay_s: Option<f64>,
    /// The round trip of the probe query in milliseconds.
    pub latency_ms: Option<f64>,
    /// Why the probe failed.
    pub error: Option<String>,
}

impl NodeState {
    fn down(name: &str, error: String) -> Self {
        NodeState {
            name: name.to_string(),
            reachable: false,
            in_recovery: None,
            lsn: None,
            receive_lsn: None,
            replay_lsn: None,
            timeline: None,
            streaming: None,
            upstream: None,
            replay_delay_s: None,
            latency_ms: None,
            error: Some(error),
        }
    }

    /// True when the node answered and is a primary.
    pub fn is_primary(&self) -> bool {
        self.reachable && self.in_recovery == Some(false)
    }

    /// True when the node answered and is a standby.
    pub fn is_standby(&self) -> bool {
        self.reachable && self.in_recovery == Some(true)
    }
}

const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
     pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
     CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver) \
          ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
     (SELECT status = 'streaming' FROM pg_stat_wal_receiver), \
     current_setting('primary_conninfo'), \
     extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8";

/// Asks `node` for its role and position. Never fails: an unreachable node comes back with
/// `reachable: false` and the reason.
pub async fn probe(node: &PgNode, timeout: Duration) -> NodeState {
    let started = Instant::now();
    let client = match connect(node, timeout).await {
        Ok(c) => c,
        Err(e) => return NodeState::down(&node.name, e.to_string()),
    };
    let q_started = Instant::now();
    let rows = match query_timed(
        &client,
        node,
        timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100)),
        PROBE_SQL,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return NodeState::down(&node.name, e.to_string()),
    };
    let latency_ms = q_started.elapsed().as_secs_f64() * 1000.0;
    let row = &rows[0];
    let lsn_at = |i: usize| row.get::<_, Option<String>>(i).and_then(|s| s.parse::<Lsn>().ok());
    let in_recovery: bool = row.get(0);
    let current = lsn_at(1);
    let receive = lsn_at(2);
    let replay = lsn_at(3);
    let lsn = if in_recovery { receive.max(replay) } else { current };
    let conninfo: Option<String> = row.get(6);
    NodeState {
        name: node.name.clone(),
        reachable: true,
        in_recovery: Some(in_recovery),
        lsn,
        receive_lsn: receive,
        replay_lsn: replay,
        timeline: row.get::<_, Option<i32>>(4).map(|t| t as u32),
        streaming: if in_recovery { Some(row.get::<_, Option<bool>>(5).unwrap_or(false)) } else { None },
        upstream: if in_recovery { conninfo.as_deref().and_then(conninfo_address) } else { None },
        replay_delay_s: if in_recovery { row.get(7) } else { None },
        latency_ms: Some(latency_ms),
        error: None,
    }
}

/// `host:port` out of a libpq keyword/value string.
fn conninfo_address(conninfo: &str) -> Option<String> {
    let mut host = None;
    let mut port = "5432".to_string();
    for part in conninfo.split_whitespace() {
        if let Some(v) = part.strip_prefix("host=") {
            host = Some(v.trim_matches('\'').to_string());
        } else if let Some(v) = part.strip_prefix("port=") {
            port = v.trim_matches('\'').to_string();
        }
    }
    host.map(|h| format!("{h}:{port}"))
}

/// Probes every node at once.
pub async fn probe_all(set: &NodeSet, timeout: Duration) -> Vec<NodeState> {
    let futs = set.nodes.iter().map(|n| probe(n, timeout));
    futures_util::future::join_all(futs).await
}

/// One row of a primary's `pg_stat_replication`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicaStat {
    /// The standby's `application_name` (our node name).
    pub name: String,
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, …
    pub state: String,
    /// `sync`, `quorum`, `potential` or `async`.
    pub sync_state: String,
    pub sent_lsn: Option<Lsn>,
    pub write_lsn: Option<Lsn>,
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// The primary's current position minus what the standby replayed.
    pub lag_bytes: Option<u64>,
    pub write_lag_s: Option<f64>,
    pub flush_lag_s: Option<f64>,
    pub replay_lag_s: Option<f64>,
}

const STAT_REPLICATION_SQL: &str = "SELECT application_name, client_addr::text, state, sync_state, \
     sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text, \
     pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8, \
     extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8, \
     extract(epoch FROM replay_lag)::float8 \
     FROM pg_stat_replication ORDER BY application_name";

/// The standbys streaming from the primary `node`, as the primary sees them.
pub async fn stat_replication(client: &Client, node: &PgNode, timeout: Duration) -> Result<Vec<ReplicaStat>> {
    let rows = query_timed(client, node, timeout, STAT_REPLICATION_SQL).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let lsn = |i: usize| r.get::<_, Option<String>>(i).and_then(|s| s.parse::<Lsn>().ok());
            ReplicaStat {
                name: r.get::<_, Option<String>>(0).unwrap_or_default(),
                client_addr: r.get(1),
                state: r.get::<_, Option<String>>(2).unwrap_or_default(),
                sync_state: r.get::<_, Option<String>>(3).unwrap_or_default(),
                sent_lsn: lsn(4),
                write_lsn: lsn(5),
                flush_lsn: lsn(6),
                replay_lsn: lsn(7),
                lag_bytes: r.get::<_, Option<f64>>(8).map(|b| b.max(0.0) as u64),
                write_lag_s: r.get(9),
                flush_lag_s: r.get(10),
                replay_lag_s: r.get(11),
            }
        })
        .collect())
}

/// Promotes the standby `node` and waits up to `wait` for it to accept writes. Refuses a node
/// that is already a primary.
pub async fn promote(node: &PgNode, wait: Duration) -> Result<()> {
    let timeout = wait + Duration::from_secs(5);
    let client = connect(node, Duration::from_secs(5)).await?;
    let rows = query_timed(&client, node, timeout, "SELECT pg_is_in_recovery()").await?;
    if !rows[0].get::<_, bool>(0) {
        return Err(Error::State(format!("node {} is already a primary", node.name)));
    }
    let secs = wait.as_secs().clamp(1, i32::MAX as u64);
    let sql = format!("SELECT pg_promote(true, {secs})");
    let rows = query_timed(&client, node, timeout, &sql).await?;
    if !rows[0].get::<_, bool>(0) {
        return Err(Error::Timeout(format!("node {} did not finish promotion within {secs} s", node.name)));
    }
    Ok(())
}

/// Creates the physical replication slot `slot` on the primary if it does not exist yet.
/// Returns true when it was created.
pub async fn create_slot(client: &Client, node: &PgNode, slot: &str) -> Result<bool> {
    let sql = format!(
        "SELECT pg_create_physical_replication_slot({}, true) \
         WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {})",
        sql_literal(slot),
        sql_literal(slot)
    );
    Ok(!query_timed(client, node, Duration::from_secs(10), &sql).await?.is_empty())
}

/// Drops the replication slot `slot` if it exists and is not in use. Returns true when it was
/// dropped.
pub async fn drop_slot(client: &Client, node: &PgNode, slot: &str) -> Result<bool> {
    let sql = format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE slot_name = {} AND NOT active",
        sql_literal(slot)
    );
    Ok(!query_timed(client, node, Duration::from_secs(10), &sql).await?.is_empty())
}

/// Points the standby behind `client` at `primary`, streaming through `slot` with
/// `application_name` = its own node name. Takes effect on reload (PostgreSQL 13+); the WAL
/// receiver restarts towards the new primary.
pub async fn set_primary_conninfo(
    client: &Client,
    standby: &PgNode,
    primary: &PgNode,
    slot: Option<&str>,
) -> Result<()> {
    let conninfo = format!("{} application_name={}", primary.conninfo()?, standby.name);
    let slot_sql = match slot {
        Some(s) => format!("ALTER SYSTEM SET primary_slot_name = {}", sql_literal(s)),
        None => "ALTER SYSTEM RESET primary_slot_name".to_string(),
    };
    let stmts = [
        format!("ALTER SYSTEM SET primary_conninfo = {}", sql_literal(&conninfo)),
        slot_sql,
        "SELECT pg_reload_conf()".into(),
    ];
    execute_each(client, standby, Duration::from_secs(10), &stmts).await
}

/// Runs statements one by one, each as its own simple query: `ALTER SYSTEM` refuses to run
/// inside the implicit transaction of a multi-statement query string.
pub async fn execute_each(client: &Client, node: &PgNode, timeout: Duration, stmts: &[String]) -> Result<()> {
    for sql in stmts {
        match tokio::time::timeout(timeout, client.batch_execute(sql)).await {
            Ok(r) => r.map_err(|e| match Error::from(e) {
                Error::Query(m) => Error::Query(format!("node {}: {m}", node.name)),
                Error::Connection(m) => Error::Connection(format!("node {}: {m}", node.name)),
                other => other,
            })?,
            Err(_) => {
                return Err(Error::Timeout(format!("node {}: {sql:?} did not finish within {timeout:?}", node.name)))
            }
        }
    }
    Ok(())
}

/// The `synchronous_standby_names` value for quorum commit on any one of `names`.
pub fn synchronous_standby_names(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("ANY 1 ({})", quoted.join(", "))
}

/// Sets the primary's synchronous standby list: quorum commit on any one of `names` when
/// `synchronous` is true, asynchronous replication otherwise.
pub async fn set_synchronous_standbys(
    client: &Client,
    node: &PgNode,
    names: &[String],
    synchronous: bool,
) -> Result<()> {
    let value = if synchronous { synchronous_standby_names(names) } else { String::new() };
    let stmts = [
        format!("ALTER SYSTEM SET synchronous_standby_names = {}", sql_literal(&value)),
        "SELECT pg_reload_conf()".into(),
    ];
    execute_each(client, node, Duration::from_secs(10), &stmts).await
}

/// Whether the postmaster of the node's local data directory is running.
pub fn local_server_running(node: &PgNode) -> Result<bool> {
    Ok(server_alive(node.require_data_dir("checking the server process")?))
}

/// Stops the node's server through `pg_ctl` (`mode`: `fast` or `immediate`), as `postgres`
/// when root. A server that is not running is not an error.
pub fn pg_ctl_stop(cfg: &Config, node: &PgNode, mode: &str, wait: Duration) -> Result<()> {
    if !matches!(mode, "smart" | "fast" | "immediate") {
        return Err(Error::InvalidArgument(format!("pg_ctl stop mode {mode:?}")));
    }
    let dir = node.require_data_dir("stopping the server")?;
    if !server_alive(dir) {
        return Ok(());
    }
    let out = pg_command(cfg, "pg_ctl")
        .current_dir(dir)
        .arg("-D")
        .arg(dir)
        .args(["-m", mode, "-w", "-t", &wait.as_secs().max(1).to_string(), "stop"])
        .output()
        .map_err(|e| Error::Io(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() && server_alive(dir) {
        return Err(Error::Io(format!(
            "pg_ctl stop of node {} failed: {}",
            node.name,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Starts the node's server through `pg_ctl` and waits until it accepts connections, logging
/// to `log` (default: `<data_dir>/../<name>.log`).
pub fn pg_ctl_start(cfg: &Config, node: &PgNode, log: Option<&Path>, wait: Duration) -> Result<()> {
    let dir = node.require_data_dir("starting the server")?;
    let default_log;
    let log = match log {
        Some(l) => l,
        None => {
            default_log = dir.parent().unwrap_or(dir).join(format!("{}.log", node.name));
            &default_log
        }
    };
    let out = pg_command(cfg, "pg_ctl")
        .current_dir(dir)
        .arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(log)
        .args(["-w", "-t", &wait.as_secs().max(1).to_string(), "start"])
        .output()
        .map_err(|e| Error::Io(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() {
        return Err(Error::Io(format!(
            "node {} did not start: {}\n{}",
            node.name,
            String::from_utf8_lossy(&out.stderr).trim(),
            crate::backup::cluster::log_tail(log, 20)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, (0x16u64 << 32) | 0xB374D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("nope".parse::<Lsn>().is_err());
        assert!("1/zz".parse::<Lsn>().is_err());
        assert!("1/2".parse::<Lsn>().unwrap() > "0/FFFFFFFF".parse::<Lsn>().unwrap());
    }

    #[test]
    fn node_sets_parse_and_refuse_bad_lists() {
        let s = NodeSet::parse(
            "p1=postgres://postgres@127.0.0.1:5001/db, p2=postgres://u:secret@127.0.0.1:5002/db",
            Some("p2=/tmp/p2"),
        )
        .unwrap();
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.get("p2").unwrap().data_dir.as_deref(), Some(Path::new("/tmp/p2")));
        assert_eq!(s.get("p1").unwrap().address().unwrap(), "127.0.0.1:5001");
        let ci = s.get("p2").unwrap().conninfo().unwrap();
        assert_eq!(ci, "host=127.0.0.1 port=5002 user=u password=secret dbname=db");
        assert_eq!(s.others("p1"), vec!["p2".to_string()]);
        assert!(s.get("p9").is_err());
        assert!(NodeSet::parse("", None).is_err());
        assert!(NodeSet::parse("p1", None).is_err());
        assert!(NodeSet::parse("p-1=postgres://h/db", None).is_err());
        assert!(NodeSet::parse("p1=postgres://a/db,p1=postgres://b/db", None).is_err());
        assert!(NodeSet::parse("p1=postgres://a,b/db", None).is_err());
        assert!(NodeSet::parse("p1=postgres://a/db", Some("p2=/x")).is_err());
        // Passwords never show in messages.
        let e = NodeSet::parse("p1=postgres://u:hunter2@a:1,b:2/db", None).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn synchronous_standby_lists_are_quorum_of_one() {
        assert_eq!(synchronous_standby_names(&["p2".into(), "p3".into()]), "ANY 1 (\"p2\", \"p3\")");
        assert_eq!(synchronous_standby_names(&[]), "");
        assert_eq!(quote_conninfo("it's"), "'it\\'s'");
        assert_eq!(
            conninfo_address("user=x host=127.0.0.1 port=5433 application_name=p2").as_deref(),
            Some("127.0.0.1:5433")
        );
    }
}
