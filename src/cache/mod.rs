//! Redis: the `RedisClient` and its reconnecting pattern subscriptions.

pub mod client;
pub mod pubsub;
pub mod value;

pub use client::{PubSubStats, RedisClient};
pub use pubsub::{Message, SubscriptionId};
