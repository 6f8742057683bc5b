//! The pool behind `rootstream::database::DatabaseManager` and its `Transaction`.

use super::R;
use crate::db::{migrations, DatabaseManager, Transaction};
use crate::runtime::block_on;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("rootstream-db/src/ffi/cxx/config.rs.h");
        type ConfigBox = crate::ffi::cxx::config::ConfigBox;
    }

    /// Pool counters at one moment.
    struct PoolStats {
        max_size: u64,
        size: u64,
        available: u64,
        in_use: u64,
        waiting: u64,
    }

    /// The result of a health check: round trip, server, standby flag, database, pool.
    struct Health {
        latency_ms: f64,
        server_version: String,
        in_recovery: bool,
        database: String,
        pool: PoolStats,
    }

    extern "Rust" {
        type DbBox;
        fn db_open(cfg: &ConfigBox) -> Result<Box<DbBox>>;
        fn migrate(self: &DbBox) -> Result<i32>;
        fn execute(self: &DbBox, sql: &str, params_json: &str) -> Result<u64>;
        fn query(self: &DbBox, sql: &str, params_json: &str) -> Result<String>;
        fn begin(self: &DbBox) -> Result<Box<TxBox>>;
        fn pool_stats(self: &DbBox) -> PoolStats;
        fn health(self: &DbBox) -> Result<Health>;
        fn close(self: &DbBox);

        type TxBox;
        fn execute(self: &TxBox, sql: &str, params_json: &str) -> Result<u64>;
        fn query(self: &TxBox, sql: &str, params_json: &str) -> Result<String>;
        fn commit(self: &mut TxBox) -> Result<()>;
        fn rollback(self: &mut TxBox) -> Result<()>;
        fn is_open(self: &TxBox) -> bool;
    }
}

use super::config::ConfigBox;
use bridge::{Health, PoolStats};

impl From<crate::db::Health> for Health {
    fn from(h: crate::db::Health) -> Self {
        Health {
            latency_ms: h.latency_ms,
            server_version: h.server_version,
            in_recovery: h.in_recovery,
            database: h.database,
            pool: h.pool.into(),
        }
    }
}

impl From<crate::db::PoolStats> for PoolStats {
    fn from(s: crate::db::PoolStats) -> Self {
        let n = |v: usize| v as u64;
        PoolStats {
            max_size: n(s.max_size),
            size: n(s.size),
            available: n(s.available),
            in_use: n(s.in_use),
            waiting: n(s.waiting),
        }
    }
}

/// The pool the model, event, session, MFA and backup bridges borrow.
pub struct DbBox(pub(crate) DatabaseManager);

// SAFETY: the id names the C++ declaration cxx generates for `DbBox` in db.rs.h.
unsafe impl cxx::ExternType for DbBox {
    type Id = cxx::type_id!("rootstream::ffi::DbBox");
    type Kind = cxx::kind::Opaque;
}

fn db_open(cfg: &ConfigBox) -> R<Box<DbBox>> {
    Ok(Box::new(DbBox(block_on(DatabaseManager::connect(&cfg.0))?)))
}

impl DbBox {
    fn migrate(&self) -> R<i32> {
        Ok(block_on(migrations::migrate(&self.0))?.current_version)
    }
    fn execute(&self, sql: &str, params_json: &str) -> R<u64> {
        Ok(block_on(self.0.execute_json(sql, Some(params_json)))?)
    }
    fn query(&self, sql: &str, params_json: &str) -> R<String> {
        Ok(block_on(self.0.query_json(sql, Some(params_json)))?.to_string())
    }
    fn begin(&self) -> R<Box<TxBox>> {
        Ok(Box::new(TxBox(block_on(self.0.begin())?)))
    }
    fn pool_stats(&self) -> PoolStats {
        self.0.stats().into()
    }
    fn health(&self) -> R<Health> {
        Ok(block_on(self.0.health_check())?.into())
    }
    fn close(&self) {
        self.0.close()
    }
}

/// The transaction behind `rootstream::database::Transaction`.
pub struct TxBox(Transaction);

impl TxBox {
    fn execute(&self, sql: &str, params_json: &str) -> R<u64> {
        Ok(block_on(self.0.execute_json(sql, Some(params_json)))?)
    }
    fn query(&self, sql: &str, params_json: &str) -> R<String> {
        Ok(block_on(self.0.query_json(sql, Some(params_json)))?.to_string())
    }
    fn commit(&mut self) -> R<()> {
        Ok(block_on(self.0.commit())?)
    }
    fn rollback(&mut self) -> R<()> {
        Ok(block_on(self.0.rollback())?)
    }
    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}
