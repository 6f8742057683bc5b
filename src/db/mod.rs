//! PostgreSQL: the pooled `DatabaseManager`, transactions, JSON conversions and migrations.

pub mod manager;
pub mod migrations;
pub mod transaction;
pub mod value;

pub use manager::{DatabaseManager, Health, PoolStats, PooledClient};
pub use migrations::{migrate, MigrationReport};
pub use transaction::Transaction;
