//! The client behind `rootstream::cache::RedisClient`, and the C++ observer that pub/sub
//! messages (and backup schedule and progress events) are delivered to.

use super::{Observer, R};
use crate::cache::RedisClient;
use crate::error::Error;
use crate::runtime::block_on;
use std::time::Duration;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("message_observer.h");
        /// Receives pub/sub messages; implemented in C++ around a std::function.
        type MessageObserver;
        fn on_message(self: &MessageObserver, channel: &str, payload: &[u8]);
    }

    unsafe extern "C++" {
        include!("rootstream-db/src/ffi/cxx/config.rs.h");
        type ConfigBox = crate::ffi::cxx::config::ConfigBox;
    }

    /// Counters of the client's pub/sub side.
    struct PubSubStats {
        connected: bool,
        reconnects: u64,
        received: u64,
        subscriptions: u64,
    }

    extern "Rust" {
        type RedisBox;
        fn redis_open(cfg: &ConfigBox) -> Result<Box<RedisBox>>;
        fn ping_ms(self: &RedisBox) -> Result<f64>;
        fn set(self: &RedisBox, key: &str, value: &str, ttl_ms: u64) -> Result<()>;
        fn get(self: &RedisBox, key: &str, found: &mut bool) -> Result<String>;
        fn del(self: &RedisBox, key: &str) -> Result<bool>;
        fn exists(self: &RedisBox, key: &str) -> Result<bool>;
        fn expire(self: &RedisBox, key: &str, ttl_ms: u64) -> Result<bool>;
        fn ttl_ms(self: &RedisBox, key: &str) -> Result<i64>;
        fn incr(self: &RedisBox, key: &str, by: i64) -> Result<i64>;
        fn hset(self: &RedisBox, key: &str, field: &str, value: &str) -> Result<bool>;
        fn hget(self: &RedisBox, key: &str, field: &str, found: &mut bool) -> Result<String>;
        fn hgetall_json(self: &RedisBox, key: &str) -> Result<String>;
        fn hdel(self: &RedisBox, key: &str, field: &str) -> Result<bool>;
        fn push(self: &RedisBox, key: &str, value: &str, left: bool) -> Result<i64>;
        fn pop(self: &RedisBox, key: &str, left: bool, found: &mut bool) -> Result<String>;
        fn lrange_json(self: &RedisBox, key: &str, start: i64, stop: i64) -> Result<String>;
        fn publish(self: &RedisBox, channel: &str, message: &str) -> Result<i64>;
        fn subscribe(self: &RedisBox, pattern: &str, observer: UniquePtr<MessageObserver>) -> Result<u64>;
        fn unsubscribe(self: &RedisBox, id: u64) -> Result<()>;
        fn exec_atomic(self: &RedisBox, commands_json: &str) -> Result<String>;
        fn command(self: &RedisBox, args_json: &str) -> Result<String>;
        fn pubsub_stats(self: &RedisBox) -> PubSubStats;

        /// The manager behind `rootstream::cache::RedisSentinelManager`.
        type SentinelBox;
        fn sentinel_open(cfg: &ConfigBox) -> Result<Box<SentinelBox>>;
        fn sentinel_master_addr(self: &SentinelBox) -> Result<String>;
        fn sentinel_replicas_json(self: &SentinelBox) -> Result<String>;
        fn sentinel_status_json(self: &SentinelBox) -> String;
        fn sentinel_on_failover(self: &SentinelBox, observer: UniquePtr<MessageObserver>) -> Result<()>;
        fn sentinel_close(self: &SentinelBox);
    }
}

use super::config::ConfigBox;
pub use bridge::MessageObserver;
use bridge::PubSubStats;

impl From<crate::cache::client::PubSubStats> for PubSubStats {
    fn from(s: crate::cache::client::PubSubStats) -> Self {
        PubSubStats {
            connected: s.connected,
            reconnects: s.reconnects,
            received: s.received,
            subscriptions: s.subscriptions as u64,
        }
    }
}

/// The client the stream, session and MFA bridges borrow.
pub struct RedisBox(pub(crate) RedisClient);

// SAFETY: the id names the C++ declaration cxx generates for `RedisBox` in cache.rs.h.
unsafe impl cxx::ExternType for RedisBox {
    type Id = cxx::type_id!("rootstream::ffi::RedisBox");
    type Kind = cxx::kind::Opaque;
}

impl Drop for RedisBox {
    fn drop(&mut self) {
        // Other objects may share the client; the C++ object's handlers still end with it.
        self.0.close_subscriptions();
    }
}

fn redis_open(cfg: &ConfigBox) -> R<Box<RedisBox>> {
    Ok(Box::new(RedisBox(block_on(RedisClient::connect(&cfg.0))?)))
}

fn ms(ttl_ms: u64) -> Option<Duration> {
    (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms))
}

impl RedisBox {
    fn ping_ms(&self) -> R<f64> {
        Ok(block_on(self.0.ping())?.as_secs_f64() * 1000.0)
    }
    fn set(&self, key: &str, value: &str, ttl_ms: u64) -> R<()> {
        Ok(block_on(self.0.set(key, value, ms(ttl_ms)))?)
    }
    fn get(&self, key: &str, found: &mut bool) -> R<String> {
        let v = block_on(self.0.get(key))?;
        *found = v.is_some();
        Ok(v.unwrap_or_default())
    }
    fn del(&self, key: &str) -> R<bool> {
        Ok(block_on(self.0.del(key))?)
    }
    fn exists(&self, key: &str) -> R<bool> {
        Ok(block_on(self.0.exists(key))?)
    }
    fn expire(&self, key: &str, ttl_ms: u64) -> R<bool> {
        let d = ms(ttl_ms).ok_or_else(|| Error::invalid("ttl_ms must be greater than 0"))?;
        Ok(block_on(self.0.expire(key, d))?)
    }
    fn ttl_ms(&self, key: &str) -> R<i64> {
        Ok(block_on(self.0.pttl_ms(key))?)
    }
    fn incr(&self, key: &str, by: i64) -> R<i64> {
        Ok(block_on(self.0.incr(key, by))?)
    }
    fn hset(&self, key: &str, field: &str, value: &str) -> R<bool> {
        Ok(block_on(self.0.hset(key, field, value))?)
    }
    fn hget(&self, key: &str, field: &str, found: &mut bool) -> R<String> {
        let v = block_on(self.0.hget(key, field))?;
        *found = v.is_some();
        Ok(v.unwrap_or_default())
    }
    fn hgetall_json(&self, key: &str) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.hgetall(key))?)?)
    }
    fn hdel(&self, key: &str, field: &str) -> R<bool> {
        Ok(block_on(self.0.hdel(key, field))?)
    }
    fn push(&self, key: &str, value: &str, left: bool) -> R<i64> {
        Ok(if left { block_on(self.0.lpush(key, value))? } else { block_on(self.0.rpush(key, value))? })
    }
    fn pop(&self, key: &str, left: bool, found: &mut bool) -> R<String> {
        let v = if left { block_on(self.0.lpop(key))? } else { block_on(self.0.rpop(key))? };
        *found = v.is_some();
        Ok(v.unwrap_or_default())
    }
    fn lrange_json(&self, key: &str, start: i64, stop: i64) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.lrange(key, start as isize, stop as isize))?)?)
    }
    fn publish(&self, channel: &str, message: &str) -> R<i64> {
        Ok(block_on(self.0.publish(channel, message))?)
    }
    fn subscribe(&self, pattern: &str, observer: cxx::UniquePtr<MessageObserver>) -> R<u64> {
        if observer.is_null() {
            return Err(Error::Null("observer").into());
        }
        let obs = Observer(observer);
        Ok(block_on(self.0.subscribe(pattern, move |m| obs.notify(&m.channel, &m.payload)))?)
    }
    fn unsubscribe(&self, id: u64) -> R<()> {
        Ok(block_on(self.0.unsubscribe(id))?)
    }
    fn exec_atomic(&self, commands_json: &str) -> R<String> {
        let cmds = crate::cache::client::parse_commands(commands_json)?;
        Ok(serde_json::to_string(&block_on(self.0.exec_atomic(&cmds))?)?)
    }
    fn command(&self, args_json: &str) -> R<String> {
        let args = crate::cache::client::parse_args(args_json)?;
        Ok(block_on(self.0.command(&args))?.to_string())
    }
    fn pubsub_stats(&self) -> PubSubStats {
        self.0.pubsub_stats().into()
    }
}

/// The Sentinel manager a C++ `RedisSentinelManager` holds; dropping it ends every callback.
pub struct SentinelBox(crate::cache::RedisSentinelManager);

impl Drop for SentinelBox {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn sentinel_open(cfg: &ConfigBox) -> R<Box<SentinelBox>> {
    Ok(Box::new(SentinelBox(block_on(crate::cache::RedisSentinelManager::open(&cfg.0))?)))
}

impl SentinelBox {
    fn sentinel_master_addr(&self) -> R<String> {
        Ok(block_on(self.0.master_addr())?.to_string())
    }

    fn sentinel_replicas_json(&self) -> R<String> {
        super::to_json(&block_on(self.0.replicas())?)
    }

    fn sentinel_status_json(&self) -> String {
        serde_json::to_string(&block_on(self.0.sentinel_status())).unwrap_or_default()
    }

    fn sentinel_on_failover(&self, observer: cxx::UniquePtr<MessageObserver>) -> R<()> {
        if observer.is_null() {
            return Err(Error::Null("observer").into());
        }
        let obs = Observer(observer);
        self.0.on_failover(move |ev| obs.notify("failover", serde_json::to_string(ev).unwrap_or_default().as_bytes()));
        Ok(())
    }

    fn sentinel_close(&self) {
        self.0.close();
    }
}
