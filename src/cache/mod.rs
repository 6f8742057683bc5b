//! Redis: the `RedisClient`, its reconnecting pattern subscriptions, and Sentinel support.

pub mod client;
pub mod pubsub;
pub mod sentinel;
pub mod value;

pub use client::{PubSubStats, RedisClient};
pub use pubsub::{Message, SubscriptionId};
pub use sentinel::{FailoverEvent, NodeAddr, NodeInfo, RedisSentinelManager, SentinelEvent, SentinelStatus};
