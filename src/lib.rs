//! rootstream-db: the data layer of RootStream.
//!
//! One Rust core (async, on tokio) with three faces: this Rust API, a C ABI (`rsdb_*`, header
//! `include/rootstream_db.h`) and a C++ API (`rootstream::…` classes in `cpp/`).

pub mod auth;
pub mod backup;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod events;
pub mod ffi;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod ha;
pub mod metrics;
pub mod models;
pub mod runtime;
pub mod sync;

pub use cache::RedisClient;
pub use config::Config;
pub use db::{DatabaseManager, Transaction};
pub use error::{Error, ErrorCode, Result};

/// The library version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
