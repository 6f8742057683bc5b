//! C functions for `ReplicationManager`.

use super::config::rsdb_config;
use super::db::rsdb_db;
use super::{arg_ref, arg_str, guard, hand_out, opt_str, out_ptr, release, set_out_string};
use crate::error::Error;
use crate::ha::{NodeSet, ReplicationManager, ReplicationOptions};
use crate::runtime::block_on;
use std::ffi::{c_char, c_int};
use std::path::Path;

/// The streaming replication of one PostgreSQL cluster: status, read routing, replicas,
/// promote and rejoin. Thread-safe.
pub struct rsdb_replication(pub(crate) ReplicationManager);

/// Opens a manager. `cfg` supplies the PostgreSQL tools' directory (`pg_bin_dir`) and the read
/// pools' time limits. `nodes` is `name=url,...` (one host per URL) and `data_dirs` is
/// `name=/dir,...` for the nodes on this machine. `nodes` and `data_dirs` may be NULL: with
/// `nodes` NULL both come from `ROOTSTREAM_HA_PG_NODES` and `ROOTSTREAM_HA_PG_DATA`.
/// `options_json` may be NULL (defaults) or
/// an object with any of `probe_timeout_ms`, `max_lag_bytes`, `max_lag_seconds`,
/// `read_pool_size`, `routing` (`"round_robin"`|`"least_lag"`), `fallback_to_primary`,
/// `refresh_interval_ms`, `synchronous` (true|false|null), `stream_wait_s`. Nothing is
/// contacted yet. `*out` receives a handle to release with `rsdb_replication_close`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_open(
    cfg: *const rsdb_config,
    nodes: *const c_char,
    data_dirs: *const c_char,
    options_json: *const c_char,
    out: *mut *mut rsdb_replication,
) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let nodes = opt_str(nodes, "nodes")?;
        let dirs = opt_str(data_dirs, "data_dirs")?;
        let opts = ReplicationOptions::from_json(opt_str(options_json, "options_json")?)?;
        let slot = out_ptr(out, "out")?;
        let set = match nodes {
            Some(n) => NodeSet::parse(n, dirs)?,
            None if dirs.is_some() => {
                return Err(Error::InvalidArgument("data_dirs given without nodes".into()));
            }
            None => NodeSet::from_env()?,
        };
        hand_out(slot, rsdb_replication(ReplicationManager::new(set, &cfg.0, opts)?));
        Ok(())
    })
}

/// Closes the manager and its read pools. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_close(r: *mut rsdb_replication) {
    release(r)
}

/// Probes every node and the primary's standbys and slots; `*out` receives the status as JSON
/// (`primary`, `primaries`, `split_brain`, `synchronous_standby_names`, `nodes`, `replicas`
/// with `state`, `sync_state`, `lag_bytes`, `lag_seconds`, `readable`, `slots`, ...), to
/// release with `rsdb_string_free`. Unreachable nodes are reported in the document, not as a
/// failure.
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_status_json(r: *const rsdb_replication, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let r = arg_ref(r, "replication")?;
        out_ptr(out, "out")?;
        let st = block_on(r.0.status())?;
        set_out_string(out, Some(&serde_json::to_string(&st)?))
    })
}

/// Writes one `replication_status` row per standby through `db` (migrated to version 5 or
/// later); `*rows_out` (may be NULL) receives the number of rows written.
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_record_status(
    r: *const rsdb_replication,
    db: *const rsdb_db,
    rows_out: *mut u64,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "replication")?;
        let db = arg_ref(db, "db")?;
        let n = block_on(r.0.record_status(&db.0))?;
        if let Some(slot) = rows_out.as_mut() {
            *slot = n;
        }
        Ok(())
    })
}

/// Runs a read-only query (`params_json` may be NULL, else a JSON array) on a standby within the lag
/// limits, else on the primary (unless `fallback_to_primary` is false: then
/// `RSDB_ERR_CONNECTION`). `*out` receives `{"node": NAME, "primary": BOOL, "rows": [...]}`, to
/// release with `rsdb_string_free`. A write is refused (`RSDB_ERR_QUERY`) on every node.
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_query_read_json(
    r: *const rsdb_replication,
    sql: *const c_char,
    params_json: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "replication")?;
        let sql = arg_str(sql, "sql")?;
        let params = opt_str(params_json, "params_json")?;
        out_ptr(out, "out")?;
        let res = block_on(r.0.query_read(sql, params))?;
        set_out_string(out, Some(&serde_json::to_string(&res)?))
    })
}

/// Sets up a new standby `name` on this machine: slot, `pg_basebackup` into `data_dir` (absent
/// or empty), `port`, start, wait until it streams, synchronous list. `url` is how to reach it
/// (`postgres://user@127.0.0.1:PORT/db`). `RSDB_ERR_STATE` when `url` answers as a primary,
/// `RSDB_ERR_CONFLICT` for a name in use or a server already there, `RSDB_ERR_INVALID_ARGUMENT`
/// for a non-empty directory. `*report_out` (may be NULL) receives a JSON report.
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_add_replica(
    r: *const rsdb_replication,
    name: *const c_char,
    url: *const c_char,
    data_dir: *const c_char,
    port: c_int,
    report_out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "replication")?;
        let name = arg_str(name, "name")?;
        let url = arg_str(url, "url")?;
        let dir = arg_str(data_dir, "data_dir")?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::InvalidArgument(format!("port {port} is not 1-65535")))?;
        let rep = block_on(r.0.add_replica(name, url, Path::new(dir), port))?;
        if !report_out.is_null() {
            set_out_string(report_out, Some(&serde_json::to_string(&rep)?))?;
        }
        Ok(())
    })
}

/// Removes the standby `name`: out of the synchronous list (the last one leaves the primary
/// asynchronous), stopped when local, its slot dropped. `*report_out` (may be NULL) receives a
/// JSON report (`stopped`, `slot_dropped`, `synchronous_standby_names`, `warning`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_remove_replica(
    r: *const rsdb_replication,
    name: *const c_char,
    report_out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "replication")?;
        let name = arg_str(name, "name")?;
        let rep = block_on(r.0.remove_replica(name))?;
        if !report_out.is_null() {
            set_out_string(report_out, Some(&serde_json::to_string(&rep)?))?;
        }
        Ok(())
    })
}

/// Promotes the standby `name` and waits until it accepts writes; `RSDB_ERR_STATE` when it is
/// already a primary, `RSDB_ERR_CONNECTION` when it does not answer.
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_promote(r: *const rsdb_replication, name: *const c_char) -> c_int {
    guard(|| {
        let r = arg_ref(r, "replication")?;
        let name = arg_str(name, "name")?;
        block_on(r.0.promote(name))
    })
}

/// Makes the former primary `name` (its data directory on this machine) a standby of
/// `new_primary` (may be NULL: then the node that answers as primary) with `pg_rewind`. `RSDB_ERR_CONFIG`
/// when the cluster has neither data checksums nor `wal_log_hints` (nothing is changed then).
/// `*report_out` (may be NULL) receives a JSON report (`rewound`, `rewind_output`, timings).
#[no_mangle]
pub unsafe extern "C" fn rsdb_replication_rejoin(
    r: *const rsdb_replication,
    name: *const c_char,
    new_primary: *const c_char,
    report_out: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "replication")?;
        let name = arg_str(name, "name")?;
        let p = opt_str(new_primary, "new_primary")?;
        let rep = block_on(r.0.rejoin(name, p))?;
        if !report_out.is_null() {
            set_out_string(report_out, Some(&serde_json::to_string(&rep)?))?;
        }
        Ok(())
    })
}
