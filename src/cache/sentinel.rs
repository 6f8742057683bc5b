//! Redis Sentinel: finding the master of a name, watching failovers.
//!
//! [`RedisSentinelManager`] asks the configured sentinels in turn for the master of
//! `redis_master_name` (`SENTINEL get-master-addr-by-name`) and confirms with `ROLE` that the
//! address it got really is a master. One background task per sentinel keeps a subscription to
//! `+switch-master`, `+sdown` and `+odown` on that sentinel; after every (re)subscription it asks
//! again for the master, so a switch missed while a subscription was down is still noticed.
//! Failover and event callbacks run on one dispatcher thread per manager (named
//! `rsdb-sentinel`), one at a time and in arrival order.
//!
//! A [`crate::cache::RedisClient`] configured with sentinels uses a manager to follow the master;
//! see its documentation.

use crate::config::Config;
use crate::error::{Error, Result};
use futures_util::StreamExt;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `host:port` address of a Redis server or sentinel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl NodeAddr {
    /// Parses `host:port`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| Error::Config(format!("a sentinel address must be host:port, got {s:?}")))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::Config(format!("a sentinel address must be host:port, got {s:?}")))?;
        if host.is_empty() {
            return Err(Error::Config(format!("a sentinel address must be host:port, got {s:?}")));
        }
        Ok(NodeAddr { host: host.trim_matches(['[', ']']).to_string(), port })
    }
}

/// A replica or sentinel as the sentinels list it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub host: String,
    pub port: u16,
    /// Sentinel's flags for the node (`slave`, `s_down,slave`, `sentinel`, ...).
    pub flags: String,
    /// For replicas: `master-link-status` (`ok` or `err`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_status: Option<String>,
}

/// Whether one configured sentinel answers, and what it says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SentinelStatus {
    /// The configured address.
    pub address: String,
    /// True when it answered `SENTINEL get-master-addr-by-name`.
    pub answers: bool,
    /// The master it names (`host:port`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// True while this manager's event subscription on it is up.
    pub subscribed: bool,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A completed failover as announced by `+switch-master`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverEvent {
    /// The master name.
    pub master_name: String,
    /// The address that was master.
    pub old: NodeAddr,
    /// The promoted replica, master from now on.
    pub new: NodeAddr,
    /// From the first `+sdown` of the old master seen on any sentinel to `+switch-master`;
    /// zero when no `+sdown` was seen (a manual failover, or the manager started afterwards).
    pub took_ms: u64,
    /// The sentinel whose announcement was delivered (the others' are duplicates).
    pub sentinel: String,
}

/// A `+sdown` or `+odown` event published by a sentinel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SentinelEvent {
    /// `+sdown` or `+odown`.
    pub kind: String,
    /// `master`, `slave` or `sentinel`.
    pub instance_type: String,
    /// The instance's name as Sentinel reports it.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The master name the instance belongs to.
    pub master_name: String,
    /// The sentinel that published it.
    pub sentinel: String,
}

/// Called after a failover, on the `rsdb-sentinel` thread.
pub type FailoverCallback = Arc<dyn Fn(&FailoverEvent) + Send + Sync>;
/// Called for `+sdown`/`+odown`, on the `rsdb-sentinel` thread.
pub type EventCallback = Arc<dyn Fn(&SentinelEvent) + Send + Sync>;

/// What a manager needs, taken from [`Config`].
#[derive(Clone)]
pub struct SentinelSettings {
    pub sentinels: Vec<NodeAddr>,
    pub master_name: String,
    pub sentinel_password: Option<String>,
    pub master_password: Option<String>,
    /// Connect and answer timeout for each sentinel and node.
    pub timeout: Duration,
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("sentinel_password", &self.sentinel_password.as_ref().map(|_| "<set>"))
            .field("master_password", &self.master_password.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SentinelSettings {
    /// Reads `redis_sentinels`, `redis_master_name`, `redis_sentinel_password`,
    /// `redis_master_password` and `redis_timeout_ms`.
    pub fn from_config(config: &Config) -> Result<Self> {
        if config.redis_sentinels.is_empty() {
            return Err(Error::Config("redis_sentinels is not set (ROOTSTREAM_REDIS_SENTINELS)".into()));
        }
        let master_name = config
            .redis_master_name
            .clone()
            .ok_or_else(|| Error::Config("redis_master_name is not set (ROOTSTREAM_REDIS_MASTER_NAME)".into()))?;
        let sentinels = config.redis_sentinels.iter().map(|s| NodeAddr::parse(s)).collect::<Result<Vec<_>>>()?;
        Ok(SentinelSettings {
            sentinels,
            master_name,
            sentinel_password: config.redis_sentinel_password.clone(),
            master_password: config.redis_master_password.clone(),
            timeout: config.redis_timeout,
        })
    }
}

/// A `redis::Client` for one node, with a password when given.
pub(crate) fn node_client(addr: &NodeAddr, password: Option<&str>) -> Result<redis::Client> {
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    let info = ConnectionAddr::Tcp(addr.host.clone(), addr.port)
        .into_connection_info()
        .map_err(Error::from)?
        .set_redis_settings(settings);
    redis::Client::open(info).map_err(|e| Error::Config(format!("redis node {addr}: {e}")))
}

fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
}

enum Notice {
    Failover(FailoverEvent),
    Event(SentinelEvent),
}

struct Shared {
    settings: SentinelSettings,
    master: Mutex<Option<NodeAddr>>,
    master_tx: tokio::sync::watch::Sender<Option<NodeAddr>>,
    // The current master's first `+sdown` seen, for `took_ms`.
    down_since: Mutex<Option<(NodeAddr, Instant)>>,
    failover_cbs: Mutex<Vec<(u64, FailoverCallback)>>,
    event_cbs: Mutex<Vec<(u64, EventCallback)>>,
    next_id: AtomicU64,
    subscribed: Vec<AtomicBool>,
    notices: Mutex<Option<std::sync::mpsc::Sender<Notice>>>,
    dispatch_lock: Mutex<()>,
    dispatcher_thread: Mutex<Option<std::thread::ThreadId>>,
    closed: AtomicBool,
    failovers: AtomicU64,
}

struct Tasks {
    handles: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        shutdown(&self.shared, &self.handles);
    }
}

fn shutdown(shared: &Shared, handles: &Mutex<Vec<tokio::task::JoinHandle<()>>>) {
    for h in handles.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        h.abort();
    }
    shared.closed.store(true, Ordering::Release);
    for s in &shared.subscribed {
        s.store(false, Ordering::Release);
    }
    shared.notices.lock().unwrap_or_else(|p| p.into_inner()).take();
    let f: Vec<_> = shared.failover_cbs.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
    let e: Vec<_> = shared.event_cbs.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
    let on_dispatcher =
        *shared.dispatcher_thread.lock().unwrap_or_else(|p| p.into_inner()) == Some(std::thread::current().id());
    if !on_dispatcher {
        drop(shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner()));
    }
    drop((f, e));
}

/// Finds the Redis master through Sentinel and watches failovers. Cheap to clone; clones share
/// the subscriptions and callbacks, which end when the last clone is dropped or on
/// [`close`](Self::close).
#[derive(Clone)]
pub struct RedisSentinelManager {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

impl fmt::Debug for RedisSentinelManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSentinelManager")
            .field("master_name", &self.shared.settings.master_name)
            .field("master", &self.shared.master.lock().unwrap().as_ref().map(|a| a.to_string()))
            .finish()
    }
}

impl RedisSentinelManager {
    /// Resolves the master once (failing with a clear error when no sentinel can name a
    /// master that answers `ROLE` as one), then subscribes to the events of every sentinel.
    pub async fn open(config: &Config) -> Result<Self> {
        Self::open_with(SentinelSettings::from_config(config)?).await
    }

    /// As [`open`](Self::open), from explicit settings.
    pub async fn open_with(settings: SentinelSettings) -> Result<Self> {
        let (master_tx, _) = tokio::sync::watch::channel(None);
        let n = settings.sentinels.len();
        let shared = Arc::new(Shared {
            settings,
            master: Mutex::new(None),
            master_tx,
            down_since: Mutex::new(None),
            failover_cbs: Mutex::new(Vec::new()),
            event_cbs: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            subscribed: (0..n).map(|_| AtomicBool::new(false)).collect(),
            notices: Mutex::new(None),
            dispatch_lock: Mutex::new(()),
            dispatcher_thread: Mutex::new(None),
            closed: AtomicBool::new(false),
            failovers: AtomicU64::new(0),
        });
        let first = resolve(&shared).await?;
        *shared.master.lock().unwrap() = Some(first.clone());
        shared.master_tx.send_replace(Some(first));

        let (tx, rx) = std::sync::mpsc::channel::<Notice>();
        *shared.notices.lock().unwrap() = Some(tx);
        let dispatch_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("rsdb-sentinel".into())
            .spawn(move || dispatch_loop(dispatch_shared, rx))
            .map_err(|e| Error::Internal(format!("could not start the sentinel dispatcher thread: {e}")))?;
        *shared.dispatcher_thread.lock().unwrap() = Some(handle.thread().id());
        let handles = (0..n).map(|i| crate::runtime::runtime().spawn(watch_sentinel(shared.clone(), i))).collect();
        let tasks = Arc::new(Tasks { handles: Mutex::new(handles), shared: shared.clone() });
        Ok(RedisSentinelManager { shared, tasks })
    }

    /// The settings in use.
    pub fn settings(&self) -> &SentinelSettings {
        &self.shared.settings
    }

    /// The master name.
    pub fn master_name(&self) -> &str {
        &self.shared.settings.master_name
    }

    /// The master as last resolved or announced, without asking anyone.
    pub fn current_master(&self) -> Option<NodeAddr> {
        self.shared.master.lock().unwrap().clone()
    }

    /// Asks the sentinels in turn for the master and confirms it with `ROLE`. Bounded by
    /// `redis_timeout` per sentinel. Updates [`current_master`](Self::current_master) (and tells
    /// followers) when the answer differs.
    pub async fn master_addr(&self) -> Result<NodeAddr> {
        let addr = resolve(&self.shared).await?;
        note_master(&self.shared, addr.clone(), None);
        Ok(addr)
    }

    /// The replicas of the master, as the first answering sentinel lists them.
    pub async fn replicas(&self) -> Result<Vec<NodeInfo>> {
        self.list("replicas").await
    }

    /// The other sentinels that monitor the master, as the first answering sentinel lists them.
    pub async fn sentinels(&self) -> Result<Vec<NodeInfo>> {
        self.list("sentinels").await
    }

    async fn list(&self, what: &str) -> Result<Vec<NodeInfo>> {
        let s = &self.shared.settings;
        let mut errors = Vec::new();
        for addr in &s.sentinels {
            let ask = async {
                let mut c = sentinel_conn(s, addr).await?;
                let rows: Vec<HashMap<String, String>> =
                    redis::cmd("SENTINEL").arg(what).arg(&s.master_name).query_async(&mut c).await?;
                Ok::<_, redis::RedisError>(rows)
            };
            match tokio::time::timeout(s.timeout, ask).await {
                Ok(Ok(rows)) => {
                    return Ok(rows
                        .into_iter()
                        .map(|r| NodeInfo {
                            host: r.get("ip").cloned().unwrap_or_default(),
                            port: r.get("port").and_then(|p| p.parse().ok()).unwrap_or(0),
                            flags: r.get("flags").cloned().unwrap_or_default(),
                            link_status: r.get("master-link-status").cloned(),
                        })
                        .collect())
                }
                Ok(Err(e)) => errors.push(describe_sentinel_error(addr, &e, &s.master_name)),
                Err(_) => errors.push(format!("{addr}: no answer within {:?}", s.timeout)),
            }
        }
        Err(all_failed(s, errors))
    }

    /// Asks every configured sentinel (at the same time) for the master; for `rsdb health`.
    pub async fn sentinel_status(&self) -> Vec<SentinelStatus> {
        let s = &self.shared.settings;
        let asks = s.sentinels.iter().enumerate().map(|(i, addr)| async move {
            let r = tokio::time::timeout(s.timeout, ask_master(s, addr)).await;
            let subscribed = self.shared.subscribed[i].load(Ordering::Acquire);
            let (answers, master, error) = match r {
                Ok(Ok(Some(m))) => (true, Some(m.to_string()), None),
                Ok(Ok(None)) => (true, None, Some(format!("does not monitor a master named {:?}", s.master_name))),
                Ok(Err(e)) => (false, None, Some(describe_sentinel_error(addr, &e, &s.master_name))),
                Err(_) => (false, None, Some(format!("no answer within {:?}", s.timeout))),
            };
            SentinelStatus { address: addr.to_string(), answers, master, subscribed, error }
        });
        futures_util::future::join_all(asks).await
    }

    /// How many sentinels this manager currently has an event subscription on.
    pub fn subscribed_count(&self) -> usize {
        self.shared.subscribed.iter().filter(|s| s.load(Ordering::Acquire)).count()
    }

    /// Failovers seen since the manager was opened.
    pub fn failovers(&self) -> u64 {
        self.shared.failovers.load(Ordering::Relaxed)
    }

    /// Calls `callback` after every failover of the master (once per failover, however many
    /// sentinels announce it), on the `rsdb-sentinel` thread. Returns an id for
    /// [`remove_callback`](Self::remove_callback).
    pub fn on_failover<F>(&self, callback: F) -> u64
    where
        F: Fn(&FailoverEvent) + Send + Sync + 'static,
    {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if !self.shared.closed.load(Ordering::Acquire) {
            self.shared.failover_cbs.lock().unwrap().push((id, Arc::new(callback)));
        }
        id
    }

    /// Calls `callback` for every `+sdown`/`+odown` of the master, its replicas or sentinels,
    /// as each sentinel publishes it, on the `rsdb-sentinel` thread.
    pub fn on_event<F>(&self, callback: F) -> u64
    where
        F: Fn(&SentinelEvent) + Send + Sync + 'static,
    {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if !self.shared.closed.load(Ordering::Acquire) {
            self.shared.event_cbs.lock().unwrap().push((id, Arc::new(callback)));
        }
        id
    }

    /// Removes a callback. When it returns the callback is not running and will not run again
    /// (unless called from inside a callback). False when the id is unknown.
    pub fn remove_callback(&self, id: u64) -> bool {
        let mut removed = false;
        self.shared.failover_cbs.lock().unwrap().retain(|(i, _)| {
            let keep = *i != id;
            removed |= !keep;
            keep
        });
        self.shared.event_cbs.lock().unwrap().retain(|(i, _)| {
            let keep = *i != id;
            removed |= !keep;
            keep
        });
        let on_dispatcher = *self.shared.dispatcher_thread.lock().unwrap() == Some(std::thread::current().id());
        if removed && !on_dispatcher {
            drop(self.shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner()));
        }
        removed
    }

    /// Ends the subscriptions and callbacks of this manager and its clones: no callback starts
    /// after this returns and none is still running (unless called from inside one). Resolving
    /// with [`master_addr`](Self::master_addr) keeps working. Idempotent.
    pub fn close(&self) {
        shutdown(&self.shared, &self.tasks.handles);
    }

    /// A receiver that sees every change of the master (used by `RedisClient`).
    pub(crate) fn watch_master(&self) -> tokio::sync::watch::Receiver<Option<NodeAddr>> {
        self.shared.master_tx.subscribe()
    }
}

async fn sentinel_conn(s: &SentinelSettings, addr: &NodeAddr) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = node_client(addr, s.sentinel_password.as_deref())
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad address", e.to_string())))?;
    client.get_multiplexed_async_connection().await
}

async fn ask_master(s: &SentinelSettings, addr: &NodeAddr) -> redis::RedisResult<Option<NodeAddr>> {
    let mut c = sentinel_conn(s, addr).await?;
    let reply: Option<(String, String)> =
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&s.master_name).query_async(&mut c).await?;
    Ok(reply.and_then(|(host, port)| port.parse().ok().map(|port| NodeAddr { host, port })))
}

/// `ROLE` of a node: `master`, `slave` or `sentinel`.
pub(crate) async fn node_role(addr: &NodeAddr, password: Option<&str>) -> redis::RedisResult<String> {
    let client = node_client(addr, password)
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad address", e.to_string())))?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let v: redis::Value = redis::cmd("ROLE").query_async(&mut c).await?;
    let first = match v {
        redis::Value::Array(items) => items.into_iter().next(),
        _ => None,
    };
    Ok(match first {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s,
        _ => String::new(),
    })
}

fn describe_sentinel_error(addr: &NodeAddr, e: &redis::RedisError, _name: &str) -> String {
    if is_auth_error(e) {
        format!("{addr}: refused the sentinel password (redis_sentinel_password)")
    } else {
        format!("{addr}: {e}")
    }
}

fn all_failed(s: &SentinelSettings, errors: Vec<String>) -> Error {
    Error::Connection(format!(
        "no sentinel of {} answered for master {:?}: {}",
        s.sentinels.len(),
        s.master_name,
        errors.join("; ")
    ))
}

async fn resolve(shared: &Shared) -> Result<NodeAddr> {
    let s = &shared.settings;
    let mut errors = Vec::new();
    let (mut answered, mut unknown, mut auth) = (0usize, 0usize, 0usize);
    for addr in &s.sentinels {
        match tokio::time::timeout(s.timeout, ask_master(s, addr)).await {
            Ok(Ok(Some(master))) => {
                answered += 1;
                match tokio::time::timeout(s.timeout, node_role(&master, s.master_password.as_deref())).await {
                    Ok(Ok(role)) if role == "master" => return Ok(master),
                    Ok(Ok(role)) => {
                        errors.push(format!("{addr} names {master}, which answers ROLE as {role:?}"));
                    }
                    Ok(Err(e)) if is_auth_error(&e) => {
                        return Err(Error::Auth(format!(
                            "the Redis master {master} refused the master password (redis_master_password)"
                        )))
                    }
                    Ok(Err(e)) => errors.push(format!("{addr} names {master}, which does not answer: {e}")),
                    Err(_) => {
                        errors.push(format!("{addr} names {master}, which does not answer within {:?}", s.timeout))
                    }
                }
            }
            Ok(Ok(None)) => {
                answered += 1;
                unknown += 1;
                errors.push(format!("{addr} does not monitor a master named {:?}", s.master_name));
            }
            Ok(Err(e)) => {
                if is_auth_error(&e) {
                    auth += 1;
                }
                errors.push(describe_sentinel_error(addr, &e, &s.master_name));
            }
            Err(_) => errors.push(format!("{addr}: no answer within {:?}", s.timeout)),
        }
    }
    if answered > 0 && unknown == answered {
        return Err(Error::NotFound(format!(
            "no sentinel monitors a Redis master named {:?} (redis_master_name): {}",
            s.master_name,
            errors.join("; ")
        )));
    }
    if auth > 0 && answered == 0 && auth == errors.len() {
        return Err(Error::Auth(format!(
            "every sentinel refused the sentinel password (redis_sentinel_password): {}",
            errors.join("; ")
        )));
    }
    if answered == 0 {
        return Err(all_failed(s, errors));
    }
    Err(Error::Connection(format!("no sentinel named a reachable Redis master: {}", errors.join("; "))))
}

/// Records `addr` as the master. When it differs from the known one, followers are told and
/// (when `from` names the announcing sentinel, or the change was found by re-asking) the
/// failover callbacks run.
fn note_master(shared: &Shared, addr: NodeAddr, from: Option<&NodeAddr>) {
    let old = {
        let mut m = shared.master.lock().unwrap();
        if m.as_ref() == Some(&addr) {
            return;
        }
        m.replace(addr.clone())
    };
    shared.master_tx.send_replace(Some(addr.clone()));
    let Some(old) = old else { return };
    shared.failovers.fetch_add(1, Ordering::Relaxed);
    let took = {
        let mut d = shared.down_since.lock().unwrap();
        let took = match d.as_ref() {
            Some((a, t)) if *a == old => t.elapsed(),
            _ => Duration::ZERO,
        };
        *d = None;
        took
    };
    let ev = FailoverEvent {
        master_name: shared.settings.master_name.clone(),
        old,
        new: addr,
        took_ms: took.as_millis() as u64,
        sentinel: from.map(|a| a.to_string()).unwrap_or_else(|| "(re-resolved)".into()),
    };
    if let Some(tx) = shared.notices.lock().unwrap().as_ref() {
        let _ = tx.send(Notice::Failover(ev));
    }
}

const EVENT_CHANNELS: [&str; 3] = ["+switch-master", "+sdown", "+odown"];

async fn watch_sentinel(shared: Arc<Shared>, index: usize) {
    let s = shared.settings.clone();
    let addr = s.sentinels[index].clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        let connect = async {
            let client = node_client(&addr, s.sentinel_password.as_deref()).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad address", e.to_string()))
            })?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&EVENT_CHANNELS[..]).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = match tokio::time::timeout(s.timeout, connect).await {
            Ok(Ok(p)) => p,
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        shared.subscribed[index].store(true, Ordering::Release);
        // A switch announced while this subscription was down would otherwise be missed.
        if let Ok(Ok(Some(m))) = tokio::time::timeout(s.timeout, ask_master(&s, &addr)).await {
            let known = shared.master.lock().unwrap().clone();
            if known.as_ref() != Some(&m)
                && matches!(
                    tokio::time::timeout(s.timeout, node_role(&m, s.master_password.as_deref())).await,
                    Ok(Ok(ref r)) if r == "master"
                )
            {
                note_master(&shared, m, None);
            }
        }
        let mut stream = ps.into_on_message();
        while let Some(msg) = stream.next().await {
            let channel = msg.get_channel_name().to_string();
            let text = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
            handle_event(&shared, &addr, &channel, &text);
        }
        shared.subscribed[index].store(false, Ordering::Release);
        tokio::time::sleep(backoff).await;
    }
}

fn handle_event(shared: &Shared, from: &NodeAddr, channel: &str, text: &str) {
    let words: Vec<&str> = text.split_whitespace().collect();
    let name = &shared.settings.master_name;
    if channel == "+switch-master" {
        // <name> <old-ip> <old-port> <new-ip> <new-port>
        if words.len() >= 5 && words[0] == name {
            if let Ok(port) = words[4].parse() {
                note_master(shared, NodeAddr { host: words[3].to_string(), port }, Some(from));
            }
        }
        return;
    }
    // <instance-type> <name> <ip> <port> [@ <master-name> <master-ip> <master-port>]
    if words.len() < 4 {
        return;
    }
    let Ok(port) = words[3].parse::<u16>() else { return };
    let master_name = match words.iter().position(|w| *w == "@") {
        Some(at) => words.get(at + 1).copied().unwrap_or_default(),
        None => words[1],
    };
    if master_name != name {
        return;
    }
    let ev = SentinelEvent {
        kind: channel.to_string(),
        instance_type: words[0].to_string(),
        name: words[1].to_string(),
        host: words[2].to_string(),
        port,
        master_name: master_name.to_string(),
        sentinel: from.to_string(),
    };
    if ev.instance_type == "master" && channel == "+sdown" {
        let addr = NodeAddr { host: ev.host.clone(), port };
        let mut d = shared.down_since.lock().unwrap();
        if d.as_ref().is_none_or(|(a, _)| *a != addr) {
            *d = Some((addr, Instant::now()));
        }
    }
    if let Some(tx) = shared.notices.lock().unwrap().as_ref() {
        let _ = tx.send(Notice::Event(ev));
    }
}

fn dispatch_loop(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<Notice>) {
    while let Ok(n) = rx.recv() {
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        match n {
            Notice::Failover(ev) => {
                let cbs: Vec<(u64, FailoverCallback)> = shared.failover_cbs.lock().unwrap().clone();
                for (id, cb) in cbs {
                    let _g = shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner());
                    if !shared.failover_cbs.lock().unwrap().iter().any(|(i, _)| *i == id) {
                        continue;
                    }
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&ev)));
                }
            }
            Notice::Event(ev) => {
                let cbs: Vec<(u64, EventCallback)> = shared.event_cbs.lock().unwrap().clone();
                for (id, cb) in cbs {
                    let _g = shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner());
                    if !shared.event_cbs.lock().unwrap().iter().any(|(i, _)| *i == id) {
                        continue;
                    }
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&ev)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(NodeAddr::parse("127.0.0.1:26379").unwrap().to_string(), "127.0.0.1:26379");
        assert!(NodeAddr::parse("nohost").is_err());
        assert!(NodeAddr::parse("h:0").is_err());
        assert!(NodeAddr::parse(":1").is_err());
    }

    #[test]
    fn settings_need_sentinels_and_a_name_and_hide_passwords() {
        let mut c = Config::default();
        assert!(matches!(SentinelSettings::from_config(&c), Err(Error::Config(_))));
        c.set("redis_sentinels", "127.0.0.1:1").unwrap();
        assert!(matches!(SentinelSettings::from_config(&c), Err(Error::Config(_))));
        c.set("redis_master_name", "m").unwrap();
        c.set("redis_master_password", "pw-secret").unwrap();
        let s = SentinelSettings::from_config(&c).unwrap();
        assert!(!format!("{s:?}").contains("pw-secret"));
    }
}
