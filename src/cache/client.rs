//! `RedisClient`: strings with TTL, hashes, lists, pub/sub with patterns, MULTI/EXEC and
//! EXPIRE/TTL over one multiplexed connection that reconnects by itself.
//!
//! With `redis_sentinels` and `redis_master_name` configured, the client finds the master through
//! a [`RedisSentinelManager`] and follows it: on `+switch-master`, on a `READONLY` reply, or when
//! the node stops answering, it asks the sentinels again and moves its command connection and its
//! pattern subscriptions to the new master. A command that was in flight during the switch fails
//! with [`Error::Failover`] (retryable) unless it is idempotent, in which case it is sent once
//! more to the new master. Addresses only ever come from the sentinels, so a demoted master is
//! not used again until the sentinels name it master again.

use super::pubsub::{Callback, Message, NodeSource, PubSubWorker, SubscriptionId};
use super::sentinel::{node_client, NodeAddr, RedisSentinelManager, SentinelSettings};
use super::value::reply_to_json;
use crate::config::{redact_url, Config};
use crate::error::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Cmd, FromRedisValue};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

struct Inner {
    target: Target,
    timeout: Duration,
    url_for_messages: String,
    pubsub: PubSubWorker,
}

enum Target {
    Direct(ConnectionManager),
    Sentinel(Arc<Follower>),
}

impl Inner {
    /// The connection to use now and the generation it belongs to.
    fn current(&self) -> (u64, ConnectionManager) {
        match &self.target {
            Target::Direct(c) => (0, c.clone()),
            Target::Sentinel(f) => {
                let n = f.node.read().unwrap_or_else(|p| p.into_inner());
                (n.generation, n.conn.clone())
            }
        }
    }
}

struct FollowNode {
    addr: NodeAddr,
    client: redis::Client,
    conn: ConnectionManager,
    generation: u64,
}

/// The Sentinel side of a client: the master in use and how to move to a new one.
pub(crate) struct Follower {
    manager: RedisSentinelManager,
    password: Option<String>,
    timeout: Duration,
    node: RwLock<FollowNode>,
    refresh_lock: tokio::sync::Mutex<()>,
    // Set once the pub/sub worker exists; a switch makes it reconnect.
    pubsub: std::sync::OnceLock<Weak<Inner>>,
    switches: AtomicU64,
    // The generation in use, so commands waiting on the old node give up at once on a switch.
    generation_tx: tokio::sync::watch::Sender<u64>,
}

fn manager_conn(client: &redis::Client, timeout: Duration) -> Result<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    // The connection manager spawns its reconnect tasks on the current runtime.
    let _g = crate::runtime::runtime().enter();
    client.clone().get_connection_manager_lazy(cfg).map_err(Error::from)
}

impl Follower {
    fn node_for(&self, addr: &NodeAddr, generation: u64) -> Result<FollowNode> {
        let client = node_client(addr, self.password.as_deref())?;
        let conn = manager_conn(&client, self.timeout)?;
        Ok(FollowNode { addr: addr.clone(), client, conn, generation })
    }

    /// Moves to `addr` unless it is already the master in use. True when it moved.
    fn switch_to(&self, addr: &NodeAddr) -> bool {
        let generation = {
            let n = self.node.read().unwrap_or_else(|p| p.into_inner());
            if n.addr == *addr {
                return false;
            }
            n.generation + 1
        };
        let Ok(node) = self.node_for(addr, generation) else { return false };
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = node;
        self.generation_tx.send_replace(generation);
        self.switches.fetch_add(1, Ordering::Relaxed);
        if let Some(inner) = self.pubsub.get().and_then(Weak::upgrade) {
            inner.pubsub.reconnect_now();
        }
        true
    }

    fn generation(&self) -> u64 {
        self.node.read().unwrap_or_else(|p| p.into_inner()).generation
    }

    /// Asks the sentinels again after a failure seen on generation `seen`. True when the client
    /// now uses another master than it did in that generation.
    async fn refresh(&self, seen: u64) -> bool {
        let _g = self.refresh_lock.lock().await;
        if self.generation() != seen {
            return true;
        }
        match self.manager.master_addr().await {
            Ok(addr) => self.switch_to(&addr) || self.generation() != seen,
            Err(_) => false,
        }
    }
}

struct FollowSource(Weak<Follower>);

impl NodeSource for FollowSource {
    fn client(&self) -> redis::Client {
        match self.0.upgrade() {
            Some(f) => f.node.read().unwrap_or_else(|p| p.into_inner()).client.clone(),
            // The client is being dropped; any address will do, the task is about to end.
            None => redis::Client::open("redis://127.0.0.1:1/").expect("a static URL parses"),
        }
    }

    fn broken(&self) {
        if let Some(f) = self.0.upgrade() {
            let seen = f.generation();
            crate::runtime::runtime().spawn(async move {
                f.refresh(seen).await;
            });
        }
    }
}

/// A Redis client. Cheap to clone; clones share the connection and the subscriptions.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient").field("url", &self.inner.url_for_messages).finish()
    }
}

/// Counters of a client's pub/sub side.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PubSubStats {
    /// True while the subscriber connection is up.
    pub connected: bool,
    /// How often the subscriber connection was re-established; messages published while it
    /// was down were not delivered.
    pub reconnects: u64,
    /// Messages received since the client was created.
    pub received: u64,
    /// Registered subscriptions.
    pub subscriptions: usize,
}

impl RedisClient {
    /// Creates a client for `config.redis_url`. The connection opens lazily and reopens after
    /// failures; the pub/sub connection opens in the background.
    ///
    /// With `redis_sentinels` and `redis_master_name` set, the client goes through Sentinel
    /// instead (see the module documentation); it then asks the sentinels for the master here,
    /// waiting at most `redis_timeout` per sentinel, and fails when none can name one.
    pub fn new(config: &Config) -> Result<Self> {
        if config.uses_sentinel() {
            let settings = SentinelSettings::from_config(config)?;
            let manager = crate::runtime::block_on(RedisSentinelManager::open_with(settings))?;
            return Self::with_sentinel(manager);
        }
        let url = config.require_redis_url()?;
        Self::open(url, config.redis_timeout)
    }

    /// Creates a client that follows the master named by `manager`'s sentinels.
    pub fn with_sentinel(manager: RedisSentinelManager) -> Result<Self> {
        let timeout = manager.settings().timeout;
        let addr = match manager.current_master() {
            Some(a) => a,
            None => crate::runtime::block_on(manager.master_addr())?,
        };
        let mut watch = manager.watch_master();
        let password = manager.settings().master_password.clone();
        let name = manager.master_name().to_string();
        let client = node_client(&addr, password.as_deref())?;
        let conn = manager_conn(&client, timeout)?;
        let follower = Arc::new(Follower {
            manager,
            password,
            timeout,
            node: RwLock::new(FollowNode { addr, client, conn, generation: 1 }),
            refresh_lock: tokio::sync::Mutex::new(()),
            pubsub: std::sync::OnceLock::new(),
            switches: AtomicU64::new(0),
            generation_tx: tokio::sync::watch::channel(1).0,
        });
        let pubsub = PubSubWorker::start(Arc::new(FollowSource(Arc::downgrade(&follower))), timeout);
        let inner = Arc::new(Inner {
            target: Target::Sentinel(follower.clone()),
            timeout,
            url_for_messages: format!("sentinel master {name}"),
            pubsub,
        });
        let _ = follower.pubsub.set(Arc::downgrade(&inner));
        // Follows `+switch-master` as soon as a sentinel announces it.
        let weak = Arc::downgrade(&follower);
        watch.mark_unchanged();
        crate::runtime::runtime().spawn(async move {
            while watch.changed().await.is_ok() {
                let Some(addr) = watch.borrow_and_update().clone() else { continue };
                let Some(f) = weak.upgrade() else { return };
                f.switch_to(&addr);
            }
        });
        Ok(RedisClient { inner })
    }

    /// Creates a client for one URL with a connect/response timeout.
    pub fn open(url: &str, timeout: Duration) -> Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| Error::Config(format!("redis_url {}: {e}", redact_url(url))))?;
        let conn = manager_conn(&client, timeout)?;
        let pubsub = PubSubWorker::start(Arc::new(client), timeout);
        Ok(RedisClient {
            inner: Arc::new(Inner { target: Target::Direct(conn), timeout, url_for_messages: redact_url(url), pubsub }),
        })
    }

    /// The master in use when the client goes through Sentinel.
    pub fn sentinel_master(&self) -> Option<NodeAddr> {
        match &self.inner.target {
            Target::Direct(_) => None,
            Target::Sentinel(f) => Some(f.node.read().unwrap_or_else(|p| p.into_inner()).addr.clone()),
        }
    }

    /// The Sentinel manager of a Sentinel-configured client.
    pub fn sentinel_manager(&self) -> Option<&RedisSentinelManager> {
        match &self.inner.target {
            Target::Direct(_) => None,
            Target::Sentinel(f) => Some(&f.manager),
        }
    }

    /// How often a Sentinel-configured client moved to another master.
    pub fn master_switches(&self) -> u64 {
        match &self.inner.target {
            Target::Direct(_) => 0,
            Target::Sentinel(f) => f.switches.load(Ordering::Relaxed),
        }
    }

    /// Creates a client and checks that the server answers PING.
    pub async fn connect(config: &Config) -> Result<Self> {
        let c = Self::new(config)?;
        c.ping().await?;
        Ok(c)
    }

    async fn run<T, F, Fut>(&self, idempotent: bool, f: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempts = if idempotent { 2 } else { 1 };
        let mut last = None;
        for attempt in 0..attempts {
            let (generation, conn) = self.inner.current();
            let r = match &self.inner.target {
                Target::Direct(_) => tokio::time::timeout(self.inner.timeout, f(conn)).await,
                Target::Sentinel(follower) => {
                    // A command waiting on a node the client has just left (the old master, its
                    // connection still retrying) gives up at once instead of after its retries.
                    let mut rx = follower.generation_tx.subscribe();
                    let moved = async move {
                        let _ = rx.wait_for(|g| *g != generation).await;
                    };
                    tokio::select! {
                        r = tokio::time::timeout(self.inner.timeout, f(conn)) => r,
                        _ = moved => Ok(Err(redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the master changed while the command was waiting",
                        )))),
                    }
                }
            };
            if let Target::Sentinel(follower) = &self.inner.target {
                let readonly = matches!(&r, Ok(Err(e)) if e.code() == Some("READONLY"));
                let lost = match &r {
                    Ok(Err(e)) => e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal(),
                    Err(_) => true,
                    Ok(Ok(_)) => false,
                };
                if readonly || lost {
                    let switched = follower.refresh(generation).await;
                    if attempt + 1 < attempts && (switched || lost) {
                        // Idempotent: send it again, to the new master when there is one.
                        tokio::time::sleep(Duration::from_millis(if switched { 0 } else { 20 })).await;
                        last = Some(match r {
                            Ok(Err(e)) => self.describe(Error::from(e)),
                            _ => Error::Timeout(format!("redis ({}) did not answer", self.inner.url_for_messages)),
                        });
                        continue;
                    }
                    if switched || readonly {
                        let addr = follower.node.read().unwrap_or_else(|p| p.into_inner()).addr.to_string();
                        return Err(Error::Failover(format!(
                            "the Redis master of {:?} changed while the command was in flight; it may or may not \
                             have been applied (retry: the client now uses {addr})",
                            follower.manager.master_name()
                        )));
                    }
                }
            }
            match r {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let retry = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
                    last = Some(self.describe(Error::from(e)));
                    if !retry {
                        break;
                    }
                    // Give the manager a moment to reconnect before the single retry.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    last = Some(Error::Timeout(format!(
                        "redis at {} did not answer within {:?}",
                        self.inner.url_for_messages, self.inner.timeout
                    )));
                    break;
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("redis command was not attempted".into())))
    }

    fn describe(&self, e: Error) -> Error {
        match e {
            Error::Connection(m) => Error::Connection(format!("{} ({})", m, self.inner.url_for_messages)),
            other => other,
        }
    }

    /// Round trip time of a PING.
    pub async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        self.run(true, |mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await?;
        Ok(started.elapsed())
    }

    /// SET, with an expiry when `ttl` is given (millisecond precision).
    pub async fn set(&self, key: &str, value: impl AsRef<[u8]>, ttl: Option<Duration>) -> Result<()> {
        let value = value.as_ref();
        self.run(true, |mut c| async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value);
            if let Some(t) = ttl {
                cmd.arg("PX").arg(t.as_millis().max(1) as u64);
            }
            cmd.query_async::<()>(&mut c).await
        })
        .await
    }

    /// GET as UTF-8 text; `None` when the key does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        let bytes = self.get_bytes(key).await?;
        bytes.map(|b| String::from_utf8(b).map_err(|_| Error::InvalidUtf8("the stored value"))).transpose()
    }

    /// GET as raw bytes; `None` when the key does not exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let v = self.run(true, |mut c| async move { c.get::<_, Option<Vec<u8>>>(key).await }).await?;
        let c = crate::metrics::library::counters();
        crate::metrics::library::bump(if v.is_some() { &c.cache_hits } else { &c.cache_misses }, 1);
        Ok(v)
    }

    /// DEL; true when the key existed.
    pub async fn del(&self, key: &str) -> Result<bool> {
        self.run(true, |mut c| async move { c.del::<_, i64>(key).await }).await.map(|n| n > 0)
    }

    /// EXISTS.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        self.run(true, |mut c| async move { c.exists::<_, bool>(key).await }).await
    }

    /// PEXPIRE; true when the key exists and now expires after `ttl`.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        let ms = ttl.as_millis().max(1) as i64;
        self.run(true, |mut c| async move { c.pexpire::<_, bool>(key, ms).await }).await
    }

    /// PTTL as Redis reports it: remaining milliseconds, -1 for a key without an expiry, -2 for
    /// a missing key (the C and C++ APIs return this).
    pub async fn pttl_ms(&self, key: &str) -> Result<i64> {
        self.run(true, |mut c| async move { c.pttl::<_, i64>(key).await }).await
    }

    /// PTTL: `Some(remaining)` for a key with an expiry, `None` for a key without one,
    /// and a `NotFound` error for a missing key.
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        match self.pttl_ms(key).await? {
            -2 => Err(Error::NotFound(format!("redis key {key:?}"))),
            -1 => Ok(None),
            n => Ok(Some(Duration::from_millis(n.max(0) as u64))),
        }
    }

    /// INCRBY; returns the new value.
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64> {
        self.run(false, |mut c| async move { c.incr::<_, _, i64>(key, by).await }).await
    }

    /// HSET of one field; true when the field is new.
    pub async fn hset(&self, key: &str, field: &str, value: impl AsRef<[u8]>) -> Result<bool> {
        let value = value.as_ref();
        self.run(true, |mut c| async move { c.hset::<_, _, _, i64>(key, field, value).await }).await.map(|n| n > 0)
    }

    /// HGET; `None` when the key or field does not exist.
    pub async fn hget(&self, key: &str, field: &str) -> Result<Option<String>> {
        self.run(true, |mut c| async move { c.hget::<_, _, Option<String>>(key, field).await }).await
    }

    /// HGETALL.
    pub async fn hgetall(&self, key: &str) -> Result<HashMap<String, String>> {
        self.run(true, |mut c| async move { c.hgetall::<_, HashMap<String, String>>(key).await }).await
    }

    /// HDEL; true when the field existed.
    pub async fn hdel(&self, key: &str, field: &str) -> Result<bool> {
        self.run(true, |mut c| async move { c.hdel::<_, _, i64>(key, field).await }).await.map(|n| n > 0)
    }

    /// LPUSH; returns the new length.
    pub async fn lpush(&self, key: &str, value: impl AsRef<[u8]>) -> Result<i64> {
        let value = value.as_ref();
        self.run(false, |mut c| async move { c.lpush::<_, _, i64>(key, value).await }).await
    }

    /// RPUSH; returns the new length.
    pub async fn rpush(&self, key: &str, value: impl AsRef<[u8]>) -> Result<i64> {
        let value = value.as_ref();
        self.run(false, |mut c| async move { c.rpush::<_, _, i64>(key, value).await }).await
    }

    /// LPOP; `None` when the list is empty.
    pub async fn lpop(&self, key: &str) -> Result<Option<String>> {
        self.run(false, |mut c| async move { c.lpop::<_, Option<String>>(key, None).await }).await
    }

    /// RPOP; `None` when the list is empty.
    pub async fn rpop(&self, key: &str) -> Result<Option<String>> {
        self.run(false, |mut c| async move { c.rpop::<_, Option<String>>(key, None).await }).await
    }

    /// LRANGE with Redis's inclusive, negative-from-the-end indices.
    pub async fn lrange(&self, key: &str, start: isize, stop: isize) -> Result<Vec<String>> {
        self.run(true, |mut c| async move { c.lrange::<_, Vec<String>>(key, start, stop).await }).await
    }

    /// LLEN.
    pub async fn llen(&self, key: &str) -> Result<i64> {
        self.run(true, |mut c| async move { c.llen::<_, i64>(key).await }).await
    }

    /// PUBLISH; returns how many subscribers received it.
    pub async fn publish(&self, channel: &str, payload: impl AsRef<[u8]>) -> Result<i64> {
        let payload = payload.as_ref();
        self.run(false, |mut c| async move { c.publish::<_, _, i64>(channel, payload).await }).await
    }

    /// Subscribes `callback` to channels matching the glob `pattern` (`stream.*`). Returns once
    /// Redis has confirmed the subscription; it is renewed after every reconnect.
    pub async fn subscribe<F>(&self, pattern: &str, callback: F) -> Result<SubscriptionId>
    where
        F: Fn(&Message) + Send + Sync + 'static,
    {
        if pattern.is_empty() {
            return Err(Error::invalid("the subscription pattern must not be empty"));
        }
        let cb: Callback = Arc::new(callback);
        self.inner.pubsub.subscribe(pattern, cb).await
    }

    /// Ends a subscription; see [`PubSubStats`] for what a reconnect means for delivery.
    pub async fn unsubscribe(&self, id: SubscriptionId) -> Result<()> {
        self.inner.pubsub.unsubscribe(id).await
    }

    /// Ends every subscription of this client (and of its clones) for good: no callback starts
    /// after this returns and none is still running, unless called from inside a callback.
    /// Commands keep working; new subscriptions are refused.
    pub fn close_subscriptions(&self) {
        self.inner.pubsub.shutdown();
    }

    /// Pub/sub counters.
    pub fn pubsub_stats(&self) -> PubSubStats {
        let p = &self.inner.pubsub;
        PubSubStats {
            connected: p.is_connected(),
            reconnects: p.reconnects(),
            received: p.received(),
            subscriptions: p.subscription_count(),
        }
    }

    /// Runs commands atomically with MULTI/EXEC; returns each command's reply as JSON.
    /// Each command is a list of arguments, e.g. `[["SET","k","v"],["INCR","n"]]`.
    pub async fn exec_atomic(&self, commands: &[Vec<String>]) -> Result<Vec<Json>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for args in commands {
            pipe.add_command(build_cmd(args)?);
        }
        let replies: Vec<redis::Value> = self
            .run(false, |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async::<Vec<redis::Value>>(&mut c).await }
            })
            .await?;
        Ok(replies.iter().map(reply_to_json).collect())
    }

    /// Runs one arbitrary command (`["ZADD","board","1","alice"]`) and returns its reply as JSON.
    pub async fn command(&self, args: &[String]) -> Result<Json> {
        let cmd = build_cmd(args)?;
        let v: redis::Value = self
            .run(false, |mut c| {
                let cmd = cmd.clone();
                async move { cmd.query_async::<redis::Value>(&mut c).await }
            })
            .await?;
        if let redis::Value::ServerError(e) = &v {
            return Err(Error::Redis(format!("{e:?}")));
        }
        Ok(reply_to_json(&v))
    }

    /// Runs a typed command for callers inside the crate (models, sessions, sync).
    pub async fn query<T: FromRedisValue + Send>(&self, cmd: &Cmd, idempotent: bool) -> Result<T> {
        self.run(idempotent, |mut c| {
            let cmd = cmd.clone();
            async move { cmd.query_async::<T>(&mut c).await }
        })
        .await
    }

    /// The connection manager, for pipelines built by other modules of the crate (with Sentinel:
    /// the one to the master in use now).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.current().1
    }

    /// The configured connect/response timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }
}

fn build_cmd(args: &[String]) -> Result<Cmd> {
    let (name, rest) = args.split_first().ok_or_else(|| Error::invalid("a redis command needs at least its name"))?;
    if name.trim().is_empty() {
        return Err(Error::invalid("a redis command name must not be empty"));
    }
    let upper = name.to_ascii_uppercase();
    // These would turn the shared multiplexed connection into something else.
    if matches!(
        upper.as_str(),
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "MONITOR" | "MULTI" | "EXEC" | "QUIT" | "RESET" | "SELECT"
    ) {
        return Err(Error::invalid(format!("{upper} is not allowed here; use the dedicated API")));
    }
    let mut cmd = redis::cmd(name);
    for a in rest {
        cmd.arg(a.as_str());
    }
    Ok(cmd)
}

/// Parses the command list of [`RedisClient::exec_atomic`] from JSON.
pub fn parse_commands(json: &str) -> Result<Vec<Vec<String>>> {
    let v: Json = serde_json::from_str(json)?;
    let outer = v.as_array().ok_or_else(|| Error::Json("commands must be a JSON array of arrays of strings".into()))?;
    outer.iter().map(parse_args_value).collect()
}

/// Parses one command's argument list from JSON (`["SET","k","v"]`; numbers are accepted).
pub fn parse_args(json: &str) -> Result<Vec<String>> {
    let v: Json = serde_json::from_str(json)?;
    parse_args_value(&v)
}

fn parse_args_value(v: &Json) -> Result<Vec<String>> {
    let items = v.as_array().ok_or_else(|| Error::Json("a command must be a JSON array of strings".into()))?;
    items
        .iter()
        .map(|i| match i {
            Json::String(s) => Ok(s.clone()),
            Json::Number(n) => Ok(n.to_string()),
            other => Err(Error::Json(format!("command arguments must be strings or numbers, got {other}"))),
        })
        .collect()
}

#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_command(json: &str) -> Result<()> {
    for args in parse_commands(json).or_else(|_| parse_args(json).map(|a| vec![a]))? {
        build_cmd(&args)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_from_json() {
        let c = parse_commands(r#"[["SET","a","1"],["INCRBY","n",5]]"#).unwrap();
        assert_eq!(c, vec![vec!["SET", "a", "1"], vec!["INCRBY", "n", "5"]]);
        assert!(parse_commands(r#"{"a":1}"#).is_err());
        assert!(parse_commands(r#"[["SET",{"x":1}]]"#).is_err());
    }

    #[test]
    fn connection_changing_commands_are_refused() {
        assert!(build_cmd(&["subscribe".into(), "x".into()]).is_err());
        assert!(build_cmd(&["SELECT".into(), "2".into()]).is_err());
        assert!(build_cmd(&[]).is_err());
        assert!(build_cmd(&["GET".into(), "k".into()]).is_ok());
    }
}
