//! C functions for `RedisSentinelManager`.

use super::config::rsdb_config;
use super::{arg_ref, guard, hand_out, out_ptr, release_with, set_out_string};
use crate::cache::RedisSentinelManager;
use crate::error::Error;
use crate::runtime::block_on;
use std::ffi::{c_char, c_int, c_void, CString};

/// Finds the Redis master through Sentinel and watches failovers. Thread-safe.
pub struct rsdb_sentinel(pub(crate) RedisSentinelManager);

/// Called after a failover of the master with a JSON document (`master_name`, `old` and `new`
/// as `{"host","port"}`, `took_ms` from the first `+sdown` seen to `+switch-master`, and
/// `sentinel`), valid only during the call. Runs on the library thread `rsdb-sentinel`, one
/// call at a time, once per failover; after `rsdb_sentinel_close` returns it is not called again.
pub type rsdb_sentinel_failover_cb = Option<unsafe extern "C" fn(user_data: *mut c_void, event_json: *const c_char)>;

struct UserData(*mut c_void);
// SAFETY: the caller promises user_data may be used from the library thread until the
// manager is closed; the library only passes it back.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Opens a manager from `cfg`'s `redis_sentinels`, `redis_master_name`,
/// `redis_sentinel_password`, `redis_master_password` and `redis_timeout_ms`: it resolves the
/// master once (`RSDB_ERR_CONNECTION` when no sentinel answers, within about `redis_timeout_ms`
/// per sentinel; `RSDB_ERR_NOT_FOUND` for an unknown master name; `RSDB_ERR_AUTH` for a wrong
/// password) and subscribes to every sentinel's events. `*out` receives a handle to release with
/// `rsdb_sentinel_close`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sentinel_open(cfg: *const rsdb_config, out: *mut *mut rsdb_sentinel) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let slot = out_ptr(out, "out")?;
        let m = block_on(RedisSentinelManager::open(&cfg.0))?;
        hand_out(slot, rsdb_sentinel(m));
        Ok(())
    })
}

/// Closes the manager: its subscriptions end and no callback runs after this returns (unless
/// called from inside the callback). NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sentinel_close(s: *mut rsdb_sentinel) {
    release_with(s, |s| s.0.close())
}

/// Asks the sentinels for the master now (confirmed with `ROLE`); `*out` receives `host:port`,
/// to release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sentinel_master_addr(s: *const rsdb_sentinel, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sentinel")?;
        out_ptr(out, "out")?;
        let addr = block_on(s.0.master_addr())?;
        set_out_string(out, Some(&addr.to_string()))
    })
}

/// The replicas of the master as a JSON array of `{"host","port","flags","link_status"}`;
/// release with `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sentinel_replicas(s: *const rsdb_sentinel, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sentinel")?;
        out_ptr(out, "out")?;
        let list = block_on(s.0.replicas())?;
        set_out_string(out, Some(&serde_json::to_string(&list)?))
    })
}

/// Every configured sentinel and whether it answers, as a JSON array of `{"address",
/// "answers","master","subscribed","error"}` (the last three only when known); release with
/// `rsdb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sentinel_sentinels(s: *const rsdb_sentinel, out: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sentinel")?;
        out_ptr(out, "out")?;
        let list = block_on(s.0.sentinel_status());
        set_out_string(out, Some(&serde_json::to_string(&list)?))
    })
}

/// Calls `callback` after every failover of the master (see `rsdb_sentinel_failover_cb` for
/// the thread and the document). `user_data` may be NULL; it must stay valid until
/// `rsdb_sentinel_close`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sentinel_on_failover(
    s: *const rsdb_sentinel,
    callback: rsdb_sentinel_failover_cb,
    user_data: *mut c_void,
) -> c_int {
    guard(|| {
        let s = arg_ref(s, "sentinel")?;
        let cb = callback.ok_or(Error::Null("callback"))?;
        let ud = UserData(user_data);
        s.0.on_failover(move |ev| {
            let ud = &ud;
            let text = CString::new(serde_json::to_string(ev).unwrap_or_default()).unwrap_or_default();
            // SAFETY: the caller registered `cb`; the string lives for the call.
            unsafe { cb(ud.0, text.as_ptr()) };
        });
        Ok(())
    })
}
