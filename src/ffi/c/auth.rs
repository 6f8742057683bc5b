//! C functions for sessions (`rsdb_sessions_*`) and MFA (`rsdb_mfa_*`).

use super::config::rsdb_config;
use super::db::rsdb_db;
use super::redis::rsdb_redis;
use super::{arg_ref, arg_str, guard, hand_out, opt_str, out_ptr, release, set_out_string};
use crate::auth::mfa::MfaManager;
use crate::models::session::{CleanupTask, DeviceInfo, SessionModel, SessionSettings};
use crate::runtime::block_on;
use serde::Serialize;
use std::ffi::{c_char, c_int};
use std::sync::Mutex;
use std::time::Duration;

/// Sessions. Thread-safe.
pub struct rsdb_sessions {
    model: SessionModel,
    cleanup: Mutex<Option<CleanupTask>>,
}

/// The MFA manager. Thread-safe.
pub struct rsdb_mfa(MfaManager);

fn json_out<T: Serialize>(out: *mut *mut c_char, v: &T) -> crate::Result<()> {
    set_out_string(out, Some(&serde_json::to_string(v)?))
}

/// Creates a session handle with the lifetimes and limits of `cfg` (`session_*` keys) on `db`
/// and `redis` (which it keeps alive). Release with `rsdb_sessions_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_new(
    cfg: *const rsdb_config,
    db: *const rsdb_db,
    redis: *const rsdb_redis,
    out: *mut *mut rsdb_sessions,
) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let db = arg_ref(db, "db")?;
        let redis = arg_ref(redis, "redis")?;
        let model = SessionModel::new(db.0.clone(), redis.0.clone(), SessionSettings::from_config(&cfg.0));
        hand_out(out_ptr(out, "out")?, rsdb_sessions { model, cleanup: Mutex::new(None) });
        Ok(())
    })
}

/// Releases a session handle (and stops its background cleanup). NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_free(h: *mut rsdb_sessions) {
    release(h)
}

/// Creates a session for a user logging in from a device. `fingerprint` is required;
/// `ip_address`, `user_agent` and `geo_location` may be NULL. With `mfa_required` != 0 the
/// session grants access only after `rsdb_mfa_complete_login`. `*token` receives the session
/// token — shown this once, never stored — and `*session_json` (may be NULL) the session.
/// Over the per-user limit with policy `refuse`: `RSDB_ERR_CONFLICT`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_create(
    sessions: *const rsdb_sessions,
    user_id: i64,
    fingerprint: *const c_char,
    ip_address: *const c_char,
    user_agent: *const c_char,
    geo_location: *const c_char,
    remember_me: c_int,
    mfa_required: c_int,
    token: *mut *mut c_char,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        let device = DeviceInfo {
            fingerprint: arg_str(fingerprint, "fingerprint")?.to_string(),
            ip_address: opt_str(ip_address, "ip_address")?.map(str::to_string),
            user_agent: opt_str(user_agent, "user_agent")?.map(str::to_string),
            geo_location: opt_str(geo_location, "geo_location")?.map(str::to_string),
        };
        out_ptr(token, "token")?;
        let created = block_on(s.model.create(user_id, &device, remember_me != 0, mfa_required != 0))?;
        set_out_string(token, Some(created.token.expose()))?;
        if !session_json.is_null() {
            set_out_string(session_json, Some(&created.session.to_json()))?;
        }
        Ok(())
    })
}

/// Validates a token presented from a device. `RSDB_ERR_AUTH` for an unknown, revoked or
/// expired session — and for a different fingerprint, which also revokes the session and
/// records `session.hijack_suspected`. With `require_mfa` != 0, `RSDB_ERR_MFA_REQUIRED` while
/// the second factor is pending. `*session_json` (may be NULL) receives the session.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_validate(
    sessions: *const rsdb_sessions,
    token: *const c_char,
    fingerprint: *const c_char,
    require_mfa: c_int,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        let token = arg_str(token, "token")?;
        let fingerprint = arg_str(fingerprint, "fingerprint")?;
        let session = block_on(s.model.validate(token, fingerprint, require_mfa != 0))?;
        if !session_json.is_null() {
            set_out_string(session_json, Some(&session.to_json()))?;
        }
        Ok(())
    })
}

/// Extends a valid session by its full lifetime. With `rotate` != 0 the old token stops
/// working and `*new_token` receives the new one (else NULL). `*session_json` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_refresh(
    sessions: *const rsdb_sessions,
    token: *const c_char,
    fingerprint: *const c_char,
    rotate: c_int,
    new_token: *mut *mut c_char,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        let token = arg_str(token, "token")?;
        let fingerprint = arg_str(fingerprint, "fingerprint")?;
        out_ptr(new_token, "new_token")?;
        let (t, session) = block_on(s.model.refresh(token, fingerprint, rotate != 0))?;
        set_out_string(new_token, t.as_ref().map(|t| t.expose()))?;
        if !session_json.is_null() {
            set_out_string(session_json, Some(&session.to_json()))?;
        }
        Ok(())
    })
}

/// Revokes one session. `reason` may be NULL: the session then records the library's default
/// reason (`revoked`).
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_revoke(
    sessions: *const rsdb_sessions,
    session_id: i64,
    reason: *const c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        let reason = opt_str(reason, "reason")?;
        block_on(s.model.revoke(session_id, reason))
    })
}

/// Revokes the session of a token (logout).
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_revoke_token(sessions: *const rsdb_sessions, token: *const c_char) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        block_on(s.model.revoke_token(arg_str(token, "token")?))
    })
}

/// Revokes all of a user's sessions except `keep_session_id` (0 keeps none). `reason` may be
/// NULL: the sessions then record the library's default reason (`revoked`). `revoked` (may be
/// NULL) receives how many.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_revoke_all(
    sessions: *const rsdb_sessions,
    user_id: i64,
    keep_session_id: i64,
    reason: *const c_char,
    revoked: *mut u64,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        let reason = opt_str(reason, "reason")?;
        let keep = (keep_session_id != 0).then_some(keep_session_id);
        let n = block_on(s.model.revoke_all(user_id, keep, reason))?;
        if let Some(r) = revoked.as_mut() {
            *r = n;
        }
        Ok(())
    })
}

/// A user's active sessions, newest first, as a JSON array (the "your devices" page).
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_list(
    sessions: *const rsdb_sessions,
    user_id: i64,
    sessions_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        out_ptr(sessions_json, "sessions_json")?;
        json_out(sessions_json, &block_on(s.model.list(user_id))?)
    })
}

/// Ends expired and idle sessions and deletes sessions ended longer ago than the configured
/// retention (`session_retention_days`, default 30). `ended` and `deleted` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_cleanup(
    sessions: *const rsdb_sessions,
    ended: *mut u64,
    deleted: *mut u64,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        let (e, d) = block_on(s.model.cleanup())?;
        if let Some(x) = ended.as_mut() {
            *x = e;
        }
        if let Some(x) = deleted.as_mut() {
            *x = d;
        }
        Ok(())
    })
}

/// Runs `rsdb_sessions_cleanup` every `interval_ms` in the background (0 stops it).
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_schedule_cleanup(sessions: *const rsdb_sessions, interval_ms: u64) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        let task = (interval_ms > 0).then(|| s.model.start_cleanup(Duration::from_millis(interval_ms)));
        *s.cleanup.lock().map_err(|_| crate::Error::State("poisoned".into()))? = task;
        Ok(())
    })
}

/// Cache counters: `{"cache_hits":..,"cache_misses":..,"cache_errors":..}`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_stats(sessions: *const rsdb_sessions, stats_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        out_ptr(stats_json, "stats_json")?;
        json_out(stats_json, &s.model.stats())
    })
}

/// Creates an MFA handle. Needs `master_key` in `cfg` (`RSDB_ERR_CONFIG` otherwise); `redis`
/// may be NULL (then no `mfa.*` events are published). Release with `rsdb_mfa_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_new(
    cfg: *const rsdb_config,
    db: *const rsdb_db,
    redis: *const rsdb_redis,
    out: *mut *mut rsdb_mfa,
) -> c_int {
    guard(|| {
        let cfg = arg_ref(cfg, "cfg")?;
        let db = arg_ref(db, "db")?;
        let redis = redis.as_ref().map(|r| r.0.clone());
        let slot = out_ptr(out, "out")?;
        hand_out(slot, rsdb_mfa(MfaManager::new(db.0.clone(), redis, &cfg.0)?));
        Ok(())
    })
}

/// Releases an MFA handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_free(h: *mut rsdb_mfa) {
    release(h)
}

/// Starts enrollment: `*enrollment_json` receives `{"secret_base32","otpauth_uri","qr_svg",
/// "qr_png"}` (PNG in base64) — show it once. Not active until confirmed with a first code.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_begin_enrollment(
    mfa: *const rsdb_mfa,
    user_id: i64,
    account_name: *const c_char,
    enrollment_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        let account = arg_str(account_name, "account_name")?;
        out_ptr(enrollment_json, "enrollment_json")?;
        json_out(enrollment_json, &block_on(m.0.begin_enrollment(user_id, account))?)
    })
}

/// Confirms enrollment with a first valid code (`RSDB_ERR_AUTH` if it is not); `*backup_codes_json`
/// receives the 10 backup codes as a JSON array — show them once. `ip_address` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_confirm_enrollment(
    mfa: *const rsdb_mfa,
    user_id: i64,
    code: *const c_char,
    ip_address: *const c_char,
    backup_codes_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        let code = arg_str(code, "code")?;
        let ip = opt_str(ip_address, "ip_address")?;
        out_ptr(backup_codes_json, "backup_codes_json")?;
        json_out(backup_codes_json, &block_on(m.0.confirm_enrollment(user_id, code, ip))?)
    })
}

/// Checks a TOTP code: `*accepted` is 1, or 0 for a wrong or already used code.
/// `RSDB_ERR_LOCKED` while the user is locked out. Every attempt is logged, with `ip_address`
/// (may be NULL).
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_verify(
    mfa: *const rsdb_mfa,
    user_id: i64,
    code: *const c_char,
    ip_address: *const c_char,
    accepted: *mut c_int,
) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        let code = arg_str(code, "code")?;
        let ip = opt_str(ip_address, "ip_address")?;
        let out = out_ptr(accepted, "accepted")?;
        *out = block_on(m.0.verify(user_id, code, ip, None))? as c_int;
        Ok(())
    })
}

/// Checks a backup code (each works once): `*accepted` is 1 or 0. `ip_address` (may be NULL)
/// is logged with the attempt.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_verify_backup_code(
    mfa: *const rsdb_mfa,
    user_id: i64,
    code: *const c_char,
    ip_address: *const c_char,
    accepted: *mut c_int,
) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        let code = arg_str(code, "code")?;
        let ip = opt_str(ip_address, "ip_address")?;
        let out = out_ptr(accepted, "accepted")?;
        *out = block_on(m.0.verify_backup_code(user_id, code, ip, None))? as c_int;
        Ok(())
    })
}

/// The second step of a login: checks a TOTP code (or a backup code) for the session's user
/// and marks the session MFA-verified. `RSDB_ERR_AUTH` when the code is not accepted.
/// `ip_address` and `session_json` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_complete_login(
    mfa: *const rsdb_mfa,
    sessions: *const rsdb_sessions,
    token: *const c_char,
    fingerprint: *const c_char,
    code: *const c_char,
    ip_address: *const c_char,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        let s = arg_ref(sessions, "sessions")?;
        let token = arg_str(token, "token")?;
        let fingerprint = arg_str(fingerprint, "fingerprint")?;
        let code = arg_str(code, "code")?;
        let ip = opt_str(ip_address, "ip_address")?;
        let session = block_on(m.0.complete_login(&s.model, token, fingerprint, code, ip))?;
        if !session_json.is_null() {
            set_out_string(session_json, Some(&session.to_json()))?;
        }
        Ok(())
    })
}

/// Replaces the backup codes; `*backup_codes_json` receives the new set.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_regenerate_backup_codes(
    mfa: *const rsdb_mfa,
    user_id: i64,
    backup_codes_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        out_ptr(backup_codes_json, "backup_codes_json")?;
        json_out(backup_codes_json, &block_on(m.0.regenerate_backup_codes(user_id))?)
    })
}

/// Removes MFA (secret and backup codes) from a user; the user's sessions stay as they are.
/// `RSDB_ERR_NOT_FOUND` when the user has no enrollment. For a lost device use
/// `rsdb_mfa_admin_reset`, which also revokes the sessions.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_unenroll(mfa: *const rsdb_mfa, user_id: i64) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        block_on(m.0.unenroll(user_id))
    })
}

/// The administrator's reset for a lost device: removes the user's MFA and revokes every
/// active session of the user, recording `reason` (may be NULL: `mfa reset`). `revoked` (may
/// be NULL) receives how many sessions were revoked. `RSDB_ERR_NOT_FOUND`, with nothing
/// revoked, when the user has no enrollment.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_admin_reset(
    mfa: *const rsdb_mfa,
    sessions: *const rsdb_sessions,
    user_id: i64,
    reason: *const c_char,
    revoked: *mut u64,
) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        let s = arg_ref(sessions, "sessions")?;
        let reason = opt_str(reason, "reason")?;
        let done = block_on(m.0.admin_reset(&s.model, user_id, reason))?;
        if let Some(r) = revoked.as_mut() {
            *r = done.sessions_revoked;
        }
        Ok(())
    })
}

/// `*status_json` receives `{"enrolled","enabled","confirmed_at","backup_codes_remaining",
/// "locked_until","key_id"}`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_status(mfa: *const rsdb_mfa, user_id: i64, status_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        out_ptr(status_json, "status_json")?;
        json_out(status_json, &block_on(m.0.status(user_id))?)
    })
}

/// Re-encrypts every MFA secret not under the current master key; `rotated` (may be NULL)
/// receives how many.
#[no_mangle]
pub unsafe extern "C" fn rsdb_mfa_rotate_keys(mfa: *const rsdb_mfa, rotated: *mut u64) -> c_int {
    guard(|| {
        let m = arg_ref(mfa, "mfa")?;
        let n = block_on(m.0.rotate_keys())?;
        if let Some(r) = rotated.as_mut() {
            *r = n;
        }
        Ok(())
    })
}

/// The TOTP code (SHA-1, 6 digits, 30 s) of a base32 secret at `unix_time` (0 = now) — what an
/// authenticator app shows. For tests, tools and demos; `*code` receives it.
#[no_mangle]
pub unsafe extern "C" fn rsdb_totp_code(secret_base32: *const c_char, unix_time: u64, code: *mut *mut c_char) -> c_int {
    guard(|| {
        let secret = arg_str(secret_base32, "secret_base32")?;
        out_ptr(code, "code")?;
        let c = crate::auth::totp::code_for_base32(secret, unix_time)?;
        set_out_string(code, Some(&c))
    })
}

/// Announces created and revoked sessions through `sync` from now on (events `session.created`
/// and `session.revoked`, and the shared `session` entity's `user_id` and `active`; never a
/// token). `sync` may be NULL, which stops it.
#[no_mangle]
pub unsafe extern "C" fn rsdb_sessions_set_sync(h: *const rsdb_sessions, sync: *const super::sync::rsdb_sync) -> c_int {
    guard(|| {
        let h = arg_ref(h, "sessions")?;
        h.model.set_sync(sync.as_ref().map(|s| s.0.clone()));
        Ok(())
    })
}
