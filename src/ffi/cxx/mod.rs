//! The cxx bridges behind the C++ API in `cpp/`, one module per area like `src/ffi/c/`.
//! Opaque Rust types cross behind `rust::Box`; errors cross as exceptions whose message starts
//! with `rsdb:<code>:` so the C++ wrappers can rethrow them as the matching `rootstream::Error`
//! subclass with the same numeric code as the C API.
//!
//! A type defined in one bridge and used by another (`ConfigBox`, `DbBox`, `RedisBox`,
//! `SessionsBox`, `BackupBox`, `MessageObserver`) carries a `cxx::ExternType` impl beside its
//! definition and is re-declared in the using bridge as `type X = crate::ffi::cxx::<area>::X;`
//! with an `include!` of the defining bridge's header.

pub mod auth;
pub mod backup;
pub mod cache;
pub mod config;
pub mod db;
pub mod events;
pub mod failover;
pub mod ha_replication;
pub mod health;
pub mod metrics;
pub mod models;
pub mod sync;

use crate::error::Error;
use std::fmt;

/// An error on its way to C++: displays as `rsdb:<code>:<message>`.
pub struct BridgeError(pub Error);

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rsdb:{}:{}", self.0.code().as_i32(), self.0)
    }
}

impl From<Error> for BridgeError {
    fn from(e: Error) -> Self {
        BridgeError(e)
    }
}

impl From<serde_json::Error> for BridgeError {
    fn from(e: serde_json::Error) -> Self {
        BridgeError(e.into())
    }
}

pub(crate) type R<T> = std::result::Result<T, BridgeError>;

/// A C++ observer kept by a Rust closure that runs on a library thread.
pub(crate) struct Observer(pub(crate) cxx::UniquePtr<cache::MessageObserver>);
// SAFETY: the C++ observer is immutable after construction (const on_message) and documented
// to run on the library's dispatcher thread, where it is also destroyed.
unsafe impl Send for Observer {}
unsafe impl Sync for Observer {}

impl Observer {
    /// Hands one message to the observer.
    pub(crate) fn notify(&self, channel: &str, payload: &[u8]) {
        if let Some(o) = self.0.as_ref() {
            o.on_message(channel, payload);
        }
    }
}

/// An empty string means "none".
pub(crate) fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Optional text with a `has_` flag.
pub(crate) fn opt(value: &str, present: bool) -> Option<&str> {
    present.then_some(value)
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> R<String> {
    Ok(serde_json::to_string(v)?)
}
