//! C functions for `Config`.

use super::{arg_str, guard, hand_out, out_ptr, release};
use crate::config::Config;
use std::ffi::{c_char, c_int};

/// Library configuration. Create with `rsdb_config_new` or `rsdb_config_from_env`.
pub struct rsdb_config(pub(crate) Config);

/// Creates a configuration with defaults (pool of 20, 5 s acquire timeout, ...).
/// `*out` receives a handle to release with `rsdb_config_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_config_new(out: *mut *mut rsdb_config) -> c_int {
    guard(|| {
        let slot = out_ptr(out, "out")?;
        hand_out(slot, rsdb_config(Config::default()));
        Ok(())
    })
}

/// Creates a configuration from defaults and the `ROOTSTREAM_*` environment variables
/// (`ROOTSTREAM_DATABASE_URL`, `ROOTSTREAM_REDIS_URL`, `ROOTSTREAM_POOL_SIZE`, ...).
/// `*out` receives a handle to release with `rsdb_config_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_config_from_env(out: *mut *mut rsdb_config) -> c_int {
    guard(|| {
        let slot = out_ptr(out, "out")?;
        let cfg = Config::from_env()?;
        hand_out(slot, rsdb_config(cfg));
        Ok(())
    })
}

/// Sets one key: `database_url`, `pool_size`, `acquire_timeout_ms`, `connect_timeout_ms`,
/// `query_timeout_ms`, `redis_url`, `redis_sentinels` (comma-separated host:port),
/// `redis_master_name`, `redis_sentinel_password`, `redis_master_password` (with sentinels and
/// a master name set, `rsdb_redis_open` goes through Sentinel and follows failovers),
/// `redis_timeout_ms`, `influx_url`, `influx_database`, `influx_org`,
/// `influx_bucket`, `influx_token`, `master_key` (64 hex digits), `master_key_id`,
/// `master_keys_old`, `backup_dir`, `backup_s3_url` (`s3://bucket/prefix`),
/// `backup_s3_endpoint`, `backup_s3_region`, `backup_s3_access_key_id`,
/// `backup_s3_secret_access_key`, `rsdb_path`, `pg_bin_dir`, `instance_id`, and the
/// `session_*` and `mfa_*` keys (the README lists them all). An empty value clears an
/// optional key.
#[no_mangle]
pub unsafe extern "C" fn rsdb_config_set(cfg: *mut rsdb_config, key: *const c_char, value: *const c_char) -> c_int {
    guard(|| {
        let cfg = out_ptr(cfg, "cfg")?;
        let key = arg_str(key, "key")?;
        let value = arg_str(value, "value")?;
        cfg.0.set(key, value)
    })
}

/// Applies a configuration file of `key = value` lines (keys as for `rsdb_config_set`, or their
/// `ROOTSTREAM_*` names; `#` comments) — the file `rsdb --config` reads, e.g. the one
/// PostgreSQL's archive_command uses. `RSDB_ERR_CONFIG` names the file and line at fault.
#[no_mangle]
pub unsafe extern "C" fn rsdb_config_load_file(cfg: *mut rsdb_config, path: *const c_char) -> c_int {
    guard(|| {
        let cfg = out_ptr(cfg, "cfg")?;
        let path = arg_str(path, "path")?;
        cfg.0.apply_file(std::path::Path::new(path))
    })
}

/// Releases a configuration. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_config_free(cfg: *mut rsdb_config) {
    release(cfg)
}
