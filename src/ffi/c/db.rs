//! C functions for `DatabaseManager`, transactions and migrations.

use super::config::rsdb_config;
use super::{arg_ref, arg_str, guard, hand_out, opt_str, out_ptr, release_with, set_out_string};
use crate::db::{migrations, DatabaseManager, Transaction};
use crate::error::Error;
use crate::runtime::block_on;
use std::ffi::{c_char, c_int};
use std::sync::Mutex;

/// A pool of PostgreSQL connections. Thread-safe: one handle may be shared by all threads.
pub struct rsdb_db(pub(crate) DatabaseManager);

/// A transaction holding one pooled connection. Use it from one thread at a time.
pub struct rsdb_tx(Mutex<Transaction>);

/// Pool counters, filled by `rsdb_db_pool_stats`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct rsdb_pool_stats {
    /// Configured maximum number of connections.
    pub max_size: usize,
    /// Open connections (idle and in use).
    pub size: usize,
    /// Idle connections.
    pub available: usize,
    /// Connections handed out.
    pub in_use: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// Opens a pool for `cfg`'s `database_url` and checks one round trip. `*out` receives a
/// handle to release with `rsdb_db_close`. The configuration is copied; it may be freed after.
#[no_mangle]
pub unsafe extern "C" fn rsdb_db_open(cfg: *const rsdb_config, out: *mut *mut rsdb_db) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let slot = out_ptr(out, "out")?;
        let db = block_on(DatabaseManager::connect(&cfg.0))?;
        hand_out(slot, rsdb_db(db));
        Ok(())
    })
}

/// Closes the pool and releases the handle. Transactions still open keep their connection
/// until they are freed. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_db_close(db: *mut rsdb_db) {
    release_with(db, |db| db.0.close())
}

/// Applies the embedded schema migrations (serialized across processes by an advisory lock).
/// `current_version` (may be NULL) receives the schema version afterwards.
#[no_mangle]
pub unsafe extern "C" fn rsdb_db_migrate(db: *const rsdb_db, current_version: *mut c_int) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        let report = block_on(migrations::migrate(&db.0))?;
        if let Some(v) = current_version.as_mut() {
            *v = report.current_version;
        }
        Ok(())
    })
}

/// Executes one statement. `params_json` (may be NULL, or "" for none) is a JSON array bound
/// to `$1, $2, ...`; values are never spliced into the SQL text. `affected` (may be NULL) receives
/// the number of rows affected.
#[no_mangle]
pub unsafe extern "C" fn rsdb_db_execute(
    db: *const rsdb_db,
    sql: *const c_char,
    params_json: *const c_char,
    affected: *mut u64,
) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        let sql = arg_str(sql, "sql")?;
        let params = opt_str(params_json, "params_json")?;
        let n = block_on(db.0.execute_json(sql, params))?;
        if let Some(a) = affected.as_mut() {
            *a = n;
        }
        Ok(())
    })
}

/// Runs a query; `params_json` (may be NULL) is bound as in `rsdb_db_execute`. `*rows_json` receives a JSON array of row objects keyed by column name;
/// release it with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_db_query(
    db: *const rsdb_db,
    sql: *const c_char,
    params_json: *const c_char,
    rows_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        let sql = arg_str(sql, "sql")?;
        let params = opt_str(params_json, "params_json")?;
        out_ptr(rows_json, "rows_json")?;
        let rows = block_on(db.0.query_json(sql, params))?;
        set_out_string(rows_json, Some(&rows.to_string()))
    })
}

/// Fills `*stats` with the pool counters.
#[no_mangle]
pub unsafe extern "C" fn rsdb_db_pool_stats(db: *const rsdb_db, stats: *mut rsdb_pool_stats) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        let out = out_ptr(stats, "stats")?;
        let s = db.0.stats();
        *out = rsdb_pool_stats {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            in_use: s.in_use,
            waiting: s.waiting,
        };
        Ok(())
    })
}

/// Checks the server: `*health_json` receives `{"latency_ms":..,"server_version":..,
/// "in_recovery":..,"database":..,"pool":{..}}`; release it with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_db_health(db: *const rsdb_db, health_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        out_ptr(health_json, "health_json")?;
        let h = block_on(db.0.health_check())?;
        set_out_string(health_json, Some(&serde_json::to_string(&h)?))
    })
}

/// Begins a transaction on a connection of its own (waiting at most the acquire timeout).
/// `*out` receives a handle; `rsdb_tx_free` rolls back unless it was committed.
#[no_mangle]
pub unsafe extern "C" fn rsdb_db_begin(db: *const rsdb_db, out: *mut *mut rsdb_tx) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        let slot = out_ptr(out, "out")?;
        let tx = block_on(db.0.begin())?;
        hand_out(slot, rsdb_tx(Mutex::new(tx)));
        Ok(())
    })
}

fn lock(tx: &rsdb_tx) -> crate::Result<std::sync::MutexGuard<'_, Transaction>> {
    tx.0.lock().map_err(|_| Error::State("the transaction was poisoned by a panic".into()))
}

/// Executes a statement inside the transaction (see `rsdb_db_execute`); `params_json` and
/// `affected` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_tx_execute(
    tx: *const rsdb_tx,
    sql: *const c_char,
    params_json: *const c_char,
    affected: *mut u64,
) -> c_int {
    guard(|| {
        let tx = arg_ref(tx, "tx")?;
        let sql = arg_str(sql, "sql")?;
        let params = opt_str(params_json, "params_json")?;
        let guard = lock(tx)?;
        let n = block_on(guard.execute_json(sql, params))?;
        if let Some(a) = affected.as_mut() {
            *a = n;
        }
        Ok(())
    })
}

/// Runs a query inside the transaction (see `rsdb_db_query`); `params_json` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_tx_query(
    tx: *const rsdb_tx,
    sql: *const c_char,
    params_json: *const c_char,
    rows_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let tx = arg_ref(tx, "tx")?;
        let sql = arg_str(sql, "sql")?;
        let params = opt_str(params_json, "params_json")?;
        out_ptr(rows_json, "rows_json")?;
        let guard = lock(tx)?;
        let rows = block_on(guard.query_json(sql, params))?;
        set_out_string(rows_json, Some(&rows.to_string()))
    })
}

/// Commits. Fails with `RSDB_ERR_STATE` when a statement of the transaction failed (it was
/// rolled back) or when it was already finished.
#[no_mangle]
pub unsafe extern "C" fn rsdb_tx_commit(tx: *const rsdb_tx) -> c_int {
    guard(|| {
        let tx = arg_ref(tx, "tx")?;
        let mut guard = lock(tx)?;
        block_on(guard.commit())
    })
}

/// Rolls back. A no-op on a finished transaction.
#[no_mangle]
pub unsafe extern "C" fn rsdb_tx_rollback(tx: *const rsdb_tx) -> c_int {
    guard(|| {
        let tx = arg_ref(tx, "tx")?;
        let mut guard = lock(tx)?;
        block_on(guard.rollback())
    })
}

/// Releases a transaction, rolling it back if it is still open. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_tx_free(tx: *mut rsdb_tx) {
    release_with(tx, |tx| {
        if let Ok(mut t) = tx.0.into_inner() {
            if t.is_open() {
                let _ = block_on(t.rollback());
            }
        }
    })
}
