//! C functions for `RedisClient`.

use super::config::rsdb_config;
use super::{arg_ref, arg_str, guard, hand_out, out_ptr, release_with, set_out_string};
use crate::cache::client::{parse_args, parse_commands};
use crate::cache::RedisClient;
use crate::error::Error;
use crate::runtime::block_on;
use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

/// A Redis client. Thread-safe: one handle may be shared by all threads.
pub struct rsdb_redis(pub(crate) RedisClient);

/// Called for each message on a subscribed pattern, on the client's dispatcher thread, one
/// call at a time. `channel` and `payload` are valid only during the call; `payload` is
/// NUL-terminated and `payload_len` bytes long (it may contain NUL bytes).
pub type rsdb_message_cb = Option<
    unsafe extern "C" fn(user_data: *mut c_void, channel: *const c_char, payload: *const c_char, payload_len: usize),
>;

struct UserData(*mut c_void);
// SAFETY: the caller of rsdb_redis_subscribe promises user_data may be used from the
// dispatcher thread; the library only passes it back.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Creates a client for `cfg`'s `redis_url` (or, with `redis_sentinels` and `redis_master_name`
/// set, for the master the sentinels name, followed across failovers; a command in flight
/// during a switch may fail with `RSDB_ERR_FAILOVER`, retryable) and checks that the server answers. `*out`
/// receives a handle to release with `rsdb_redis_close`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_open(cfg: *const rsdb_config, out: *mut *mut rsdb_redis) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let slot = out_ptr(out, "out")?;
        let c = block_on(RedisClient::connect(&cfg.0))?;
        hand_out(slot, rsdb_redis(c));
        Ok(())
    })
}

/// Closes the client: its subscriptions end and no callback runs after this returns.
/// NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_close(r: *mut rsdb_redis) {
    // Model handles may share this client; its callbacks still end here.
    release_with(r, |r| r.0.close_subscriptions())
}

/// PING; `latency_ms` (may be NULL) receives the round trip in milliseconds.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_ping(r: *const rsdb_redis, latency_ms: *mut f64) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let d = block_on(r.0.ping())?;
        if let Some(l) = latency_ms.as_mut() {
            *l = d.as_secs_f64() * 1000.0;
        }
        Ok(())
    })
}

/// SET `key` to `value`; with `ttl_ms` > 0 the key expires after that many milliseconds.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_set(
    r: *const rsdb_redis,
    key: *const c_char,
    value: *const c_char,
    ttl_ms: u64,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        let value = arg_str(value, "value")?;
        let ttl = (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms));
        block_on(r.0.set(key, value, ttl))
    })
}

/// GET: `*value` receives the value, or NULL when the key does not exist.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_get(r: *const rsdb_redis, key: *const c_char, value: *mut *mut c_char) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        out_ptr(value, "value")?;
        let v = block_on(r.0.get(key))?;
        set_out_string(value, v.as_deref())
    })
}

/// DEL; `existed` (may be NULL) receives 1 when the key existed.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_del(r: *const rsdb_redis, key: *const c_char, existed: *mut c_int) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        let e = block_on(r.0.del(key))?;
        if let Some(x) = existed.as_mut() {
            *x = e as c_int;
        }
        Ok(())
    })
}

/// Sets a key's expiry; `applied` (may be NULL) receives 1 when the key exists.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_expire(
    r: *const rsdb_redis,
    key: *const c_char,
    ttl_ms: u64,
    applied: *mut c_int,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        if ttl_ms == 0 {
            return Err(Error::invalid("ttl_ms must be greater than 0"));
        }
        let a = block_on(r.0.expire(key, Duration::from_millis(ttl_ms)))?;
        if let Some(x) = applied.as_mut() {
            *x = a as c_int;
        }
        Ok(())
    })
}

/// PTTL: `*ttl_ms` receives the remaining lifetime in milliseconds, -1 for a key without
/// expiry and -2 for a missing key (as Redis reports them).
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_ttl(r: *const rsdb_redis, key: *const c_char, ttl_ms: *mut i64) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        let out = out_ptr(ttl_ms, "ttl_ms")?;
        *out = block_on(r.0.pttl_ms(key))?;
        Ok(())
    })
}

/// INCRBY; `value` (may be NULL) receives the new value.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_incr(r: *const rsdb_redis, key: *const c_char, by: i64, value: *mut i64) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        let v = block_on(r.0.incr(key, by))?;
        if let Some(x) = value.as_mut() {
            *x = v;
        }
        Ok(())
    })
}

/// HSET of one field.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_hset(
    r: *const rsdb_redis,
    key: *const c_char,
    field: *const c_char,
    value: *const c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        let field = arg_str(field, "field")?;
        let value = arg_str(value, "value")?;
        block_on(r.0.hset(key, field, value)).map(|_| ())
    })
}

/// HGET: `*value` receives the value, or NULL when the key or field does not exist.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_hget(
    r: *const rsdb_redis,
    key: *const c_char,
    field: *const c_char,
    value: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        let field = arg_str(field, "field")?;
        out_ptr(value, "value")?;
        let v = block_on(r.0.hget(key, field))?;
        set_out_string(value, v.as_deref())
    })
}

/// HGETALL: `*json` receives a JSON object of field → value (`{}` for a missing key).
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_hgetall(r: *const rsdb_redis, key: *const c_char, json: *mut *mut c_char) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        out_ptr(json, "json")?;
        let m = block_on(r.0.hgetall(key))?;
        set_out_string(json, Some(&serde_json::to_string(&m)?))
    })
}

/// HDEL of one field; `existed` (may be NULL) receives 1 when it existed.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_hdel(
    r: *const rsdb_redis,
    key: *const c_char,
    field: *const c_char,
    existed: *mut c_int,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        let field = arg_str(field, "field")?;
        let e = block_on(r.0.hdel(key, field))?;
        if let Some(x) = existed.as_mut() {
            *x = e as c_int;
        }
        Ok(())
    })
}

/// LPUSH (`left` != 0) or RPUSH; `length` (may be NULL) receives the new list length.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_push(
    r: *const rsdb_redis,
    key: *const c_char,
    value: *const c_char,
    left: c_int,
    length: *mut i64,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        let value = arg_str(value, "value")?;
        let n = if left != 0 { block_on(r.0.lpush(key, value))? } else { block_on(r.0.rpush(key, value))? };
        if let Some(x) = length.as_mut() {
            *x = n;
        }
        Ok(())
    })
}

/// LPOP (`left` != 0) or RPOP: `*value` receives the element, or NULL for an empty list.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_pop(
    r: *const rsdb_redis,
    key: *const c_char,
    left: c_int,
    value: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        out_ptr(value, "value")?;
        let v = if left != 0 { block_on(r.0.lpop(key))? } else { block_on(r.0.rpop(key))? };
        set_out_string(value, v.as_deref())
    })
}

/// LRANGE with inclusive indices (negative counts from the end): `*json` receives a JSON array.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_lrange(
    r: *const rsdb_redis,
    key: *const c_char,
    start: i64,
    stop: i64,
    json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let key = arg_str(key, "key")?;
        out_ptr(json, "json")?;
        let v = block_on(r.0.lrange(key, start as isize, stop as isize))?;
        set_out_string(json, Some(&serde_json::to_string(&v)?))
    })
}

/// PUBLISH; `receivers` (may be NULL) receives how many subscribers got the message.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_publish(
    r: *const rsdb_redis,
    channel: *const c_char,
    message: *const c_char,
    receivers: *mut i64,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let channel = arg_str(channel, "channel")?;
        let message = arg_str(message, "message")?;
        let n = block_on(r.0.publish(channel, message))?;
        if let Some(x) = receivers.as_mut() {
            *x = n;
        }
        Ok(())
    })
}

/// Subscribes `callback` to channels matching the glob `pattern` (e.g. `stream.*`). Returns
/// once Redis confirmed it; the subscription is renewed after reconnects. `user_data` is
/// passed back to every call. `*subscription_id` receives the id for `rsdb_redis_unsubscribe`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_subscribe(
    r: *const rsdb_redis,
    pattern: *const c_char,
    callback: rsdb_message_cb,
    user_data: *mut c_void,
    subscription_id: *mut u64,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let pattern = arg_str(pattern, "pattern")?;
        let cb = callback.ok_or(Error::Null("callback"))?;
        let out = out_ptr(subscription_id, "subscription_id")?;
        let ud = UserData(user_data);
        let id = block_on(r.0.subscribe(pattern, move |m| {
            let ud = &ud;
            let channel = CString::new(m.channel.replace('\0', "")).unwrap_or_default();
            let mut payload = m.payload.clone();
            let len = payload.len();
            payload.push(0);
            // SAFETY: the caller registered a function with this signature.
            unsafe { cb(ud.0, channel.as_ptr(), payload.as_ptr() as *const c_char, len) };
        }))?;
        *out = id;
        Ok(())
    })
}

/// Ends a subscription. When called outside the callback, the callback is not running when
/// this returns and will not run again, so `user_data` may be released.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_unsubscribe(r: *const rsdb_redis, subscription_id: u64) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        block_on(r.0.unsubscribe(subscription_id))
    })
}

/// Runs commands atomically (MULTI/EXEC). `commands_json` is a JSON array of commands, each
/// an array of arguments (`[["SET","k","v"],["INCR","n"]]`); `*replies_json` receives an
/// array with each command's reply.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_exec_atomic(
    r: *const rsdb_redis,
    commands_json: *const c_char,
    replies_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let cmds = parse_commands(arg_str(commands_json, "commands_json")?)?;
        out_ptr(replies_json, "replies_json")?;
        let replies = block_on(r.0.exec_atomic(&cmds))?;
        set_out_string(replies_json, Some(&serde_json::to_string(&replies)?))
    })
}

/// Runs one command given as a JSON array of arguments (`["ZADD","board","1","alice"]`);
/// `*reply_json` receives its reply as JSON.
#[no_mangle]
pub unsafe extern "C" fn rsdb_redis_command(
    r: *const rsdb_redis,
    args_json: *const c_char,
    reply_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let r = arg_ref(r, "redis")?;
        let args = parse_args(arg_str(args_json, "args_json")?)?;
        out_ptr(reply_json, "reply_json")?;
        let reply = block_on(r.0.command(&args))?;
        set_out_string(reply_json, Some(&reply.to_string()))
    })
}
