//! C functions for the user, stream and stream-session models. Records cross as JSON objects.

use super::db::rsdb_db;
use super::redis::rsdb_redis;
use super::{arg_ref, arg_str, guard, hand_out, opt_str, out_ptr, release, set_out_string};
use crate::models::{NewUser, StreamModel, StreamSessionModel, StreamStats, UserModel};
use crate::runtime::block_on;
use serde::Serialize;
use std::ffi::{c_char, c_int};

/// User operations. Thread-safe.
pub struct rsdb_users(UserModel);
/// Stream operations (database + Redis). Thread-safe.
pub struct rsdb_streams(StreamModel);
/// Stream-session operations. Thread-safe.
pub struct rsdb_stream_sessions(StreamSessionModel);

fn json_out<T: Serialize>(out: *mut *mut c_char, v: &T) -> crate::Result<()> {
    set_out_string(out, Some(&serde_json::to_string(v)?))
}

/// Creates a user-model handle on `db` (which it keeps alive). Release with `rsdb_users_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_new(db: *const rsdb_db, out: *mut *mut rsdb_users) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        hand_out(out_ptr(out, "out")?, rsdb_users(UserModel::new(db.0.clone())));
        Ok(())
    })
}

/// Releases a user-model handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_free(h: *mut rsdb_users) {
    release(h)
}

/// Registers a user: the password is hashed with Argon2id (never stored), username and email
/// must be unique (`RSDB_ERR_CONFLICT`, message "username already exists" or "email already
/// exists"), the email must be valid and the password at least 8 characters
/// (`RSDB_ERR_INVALID_ARGUMENT`). `display_name` may be NULL. `*user_json` receives the user.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_create(
    users: *const rsdb_users,
    username: *const c_char,
    email: *const c_char,
    password: *const c_char,
    display_name: *const c_char,
    user_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        let new = NewUser {
            username: arg_str(username, "username")?,
            email: arg_str(email, "email")?,
            password: arg_str(password, "password")?,
            display_name: opt_str(display_name, "display_name")?,
        };
        out_ptr(user_json, "user_json")?;
        let u = block_on(users.0.create(new))?;
        json_out(user_json, &u)
    })
}

/// Logs in with a username or email and a password. Wrong password, unknown user and inactive
/// account all return `RSDB_ERR_AUTH`. On success records the login and fills `*user_json`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_authenticate(
    users: *const rsdb_users,
    login: *const c_char,
    password: *const c_char,
    user_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        let login = arg_str(login, "login")?;
        let password = arg_str(password, "password")?;
        out_ptr(user_json, "user_json")?;
        let u = block_on(users.0.authenticate(login, password))?;
        json_out(user_json, &u)
    })
}

/// Checks a user's password: `*matches` is 1 or 0.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_verify_password(
    users: *const rsdb_users,
    user_id: i64,
    password: *const c_char,
    matches: *mut c_int,
) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        let password = arg_str(password, "password")?;
        let out = out_ptr(matches, "matches")?;
        *out = block_on(users.0.verify_password(user_id, password))? as c_int;
        Ok(())
    })
}

/// Loads a user by id (`RSDB_ERR_NOT_FOUND` when there is none).
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_get(users: *const rsdb_users, user_id: i64, user_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        out_ptr(user_json, "user_json")?;
        json_out(user_json, &block_on(users.0.find_by_id(user_id))?)
    })
}

/// Loads a user by username, ignoring case.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_get_by_username(
    users: *const rsdb_users,
    username: *const c_char,
    user_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        let username = arg_str(username, "username")?;
        out_ptr(user_json, "user_json")?;
        json_out(user_json, &block_on(users.0.find_by_username(username))?)
    })
}

/// Loads a user by email, ignoring case.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_get_by_email(
    users: *const rsdb_users,
    email: *const c_char,
    user_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        let email = arg_str(email, "email")?;
        out_ptr(user_json, "user_json")?;
        json_out(user_json, &block_on(users.0.find_by_email(email))?)
    })
}

/// Updates the profile; `display_name` and `avatar_url` may be NULL (a NULL field stays as it
/// is). `*user_json` receives the updated user.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_update_profile(
    users: *const rsdb_users,
    user_id: i64,
    display_name: *const c_char,
    avatar_url: *const c_char,
    user_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        let display_name = opt_str(display_name, "display_name")?;
        let avatar_url = opt_str(avatar_url, "avatar_url")?;
        out_ptr(user_json, "user_json")?;
        json_out(user_json, &block_on(users.0.update_profile(user_id, display_name, avatar_url))?)
    })
}

/// Marks the user's email as verified.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_mark_verified(users: *const rsdb_users, user_id: i64) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        block_on(users.0.mark_verified(user_id)).map(|_| ())
    })
}

/// Activates (`active` != 0) or deactivates the account.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_set_active(users: *const rsdb_users, user_id: i64, active: c_int) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        block_on(users.0.set_active(user_id, active != 0)).map(|_| ())
    })
}

/// Records a login now.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_record_login(users: *const rsdb_users, user_id: i64) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        block_on(users.0.record_login(user_id)).map(|_| ())
    })
}

/// Replaces the password (at least 8 characters).
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_change_password(
    users: *const rsdb_users,
    user_id: i64,
    new_password: *const c_char,
) -> c_int {
    guard(|| {
        let users = arg_ref(users, "users")?;
        let pw = arg_str(new_password, "new_password")?;
        block_on(users.0.change_password(user_id, pw))
    })
}

/// Creates a stream-model handle on `db` and `redis` (borrowed for the call; the handle keeps
/// the pool and the client alive). `*out` receives a handle to release with
/// `rsdb_streams_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_new(
    db: *const rsdb_db,
    redis: *const rsdb_redis,
    out: *mut *mut rsdb_streams,
) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        let redis = arg_ref(redis, "redis")?;
        hand_out(out_ptr(out, "out")?, rsdb_streams(StreamModel::new(db.0.clone(), redis.0.clone())));
        Ok(())
    })
}

/// Releases a stream-model handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_free(h: *mut rsdb_streams) {
    release(h)
}

/// Creates a stream for a user with a fresh 256-bit stream key; `description` may be NULL.
/// `*stream_json` receives the stream, including `stream_key`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_create(
    streams: *const rsdb_streams,
    user_id: i64,
    name: *const c_char,
    description: *const c_char,
    stream_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        let name = arg_str(name, "name")?;
        let description = opt_str(description, "description")?;
        out_ptr(stream_json, "stream_json")?;
        json_out(stream_json, &block_on(s.0.create(user_id, name, description))?)
    })
}

/// Loads a stream by id.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_get(
    streams: *const rsdb_streams,
    stream_id: i64,
    stream_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        out_ptr(stream_json, "stream_json")?;
        json_out(stream_json, &block_on(s.0.find_by_id(stream_id))?)
    })
}

/// Loads a stream by its stream key.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_get_by_key(
    streams: *const rsdb_streams,
    stream_key: *const c_char,
    stream_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        let key = arg_str(stream_key, "stream_key")?;
        out_ptr(stream_json, "stream_json")?;
        json_out(stream_json, &block_on(s.0.find_by_key(key))?)
    })
}

/// Replaces the stream key; `*stream_json` receives the stream with the new key.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_regenerate_key(
    streams: *const rsdb_streams,
    stream_id: i64,
    stream_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        out_ptr(stream_json, "stream_json")?;
        json_out(stream_json, &block_on(s.0.regenerate_key(stream_id))?)
    })
}

/// Goes live (database row, session, event log, Redis live cache, `stream.started` on
/// pub/sub). `RSDB_ERR_STATE` when already live. `*session_json` receives the new session.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_start(
    streams: *const rsdb_streams,
    stream_id: i64,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        out_ptr(session_json, "session_json")?;
        json_out(session_json, &block_on(s.0.start(stream_id))?)
    })
}

/// Goes offline; `*session_json` receives the ended session with its duration and viewer
/// statistics. `RSDB_ERR_STATE` when not live.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_stop(
    streams: *const rsdb_streams,
    stream_id: i64,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        out_ptr(session_json, "session_json")?;
        json_out(session_json, &block_on(s.0.stop(stream_id))?)
    })
}

/// A viewer joined a live stream; `viewers` (may be NULL) receives the current count.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_viewer_joined(
    streams: *const rsdb_streams,
    stream_id: i64,
    viewers: *mut i64,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        let n = block_on(s.0.viewer_joined(stream_id))?;
        if let Some(v) = viewers.as_mut() {
            *v = n;
        }
        Ok(())
    })
}

/// A viewer left; `viewers` (may be NULL) receives the current count (never below zero).
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_viewer_left(
    streams: *const rsdb_streams,
    stream_id: i64,
    viewers: *mut i64,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        let n = block_on(s.0.viewer_left(stream_id))?;
        if let Some(v) = viewers.as_mut() {
            *v = n;
        }
        Ok(())
    })
}

/// The current viewer count from Redis.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_viewer_count(
    streams: *const rsdb_streams,
    stream_id: i64,
    viewers: *mut i64,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        let out = out_ptr(viewers, "viewers")?;
        *out = block_on(s.0.viewer_count(stream_id))?;
        Ok(())
    })
}

/// Records encoder statistics. A negative `bitrate_kbps` or `fps` leaves that value as it is;
/// `resolution` and `codec` may be NULL, which leaves them as they are.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_update_stats(
    streams: *const rsdb_streams,
    stream_id: i64,
    bitrate_kbps: i32,
    fps: i32,
    resolution: *const c_char,
    codec: *const c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        let stats = StreamStats {
            bitrate_kbps: (bitrate_kbps >= 0).then_some(bitrate_kbps),
            fps: (fps >= 0).then_some(fps),
            resolution: opt_str(resolution, "resolution")?.map(str::to_string),
            codec: opt_str(codec, "codec")?.map(str::to_string),
        };
        block_on(s.0.update_stats(stream_id, &stats)).map(|_| ())
    })
}

/// The live streams, as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_list_live(streams: *const rsdb_streams, streams_json: *mut *mut c_char) -> c_int {
    guard(|| {
        let s = arg_ref(streams, "streams")?;
        out_ptr(streams_json, "streams_json")?;
        json_out(streams_json, &block_on(s.0.list_live())?)
    })
}

/// Creates a stream-session handle on `db` (borrowed for the call; the handle keeps the pool
/// alive). `*out` receives a handle to release with `rsdb_stream_sessions_free`.
#[no_mangle]
pub unsafe extern "C" fn rsdb_stream_sessions_new(db: *const rsdb_db, out: *mut *mut rsdb_stream_sessions) -> c_int {
    guard(|| {
        let db = arg_ref(db, "db")?;
        hand_out(out_ptr(out, "out")?, rsdb_stream_sessions(StreamSessionModel::new(db.0.clone())));
        Ok(())
    })
}

/// Releases a stream-session handle. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_stream_sessions_free(h: *mut rsdb_stream_sessions) {
    release(h)
}

/// Opens a session for a stream.
#[no_mangle]
pub unsafe extern "C" fn rsdb_stream_sessions_create(
    sessions: *const rsdb_stream_sessions,
    stream_id: i64,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        out_ptr(session_json, "session_json")?;
        json_out(session_json, &block_on(s.0.create(stream_id))?)
    })
}

/// Loads a session.
#[no_mangle]
pub unsafe extern "C" fn rsdb_stream_sessions_get(
    sessions: *const rsdb_stream_sessions,
    session_id: i64,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        out_ptr(session_json, "session_json")?;
        json_out(session_json, &block_on(s.0.get(session_id))?)
    })
}

/// Counts one viewer joining while `current_viewers` are watching (updates total and peak).
#[no_mangle]
pub unsafe extern "C" fn rsdb_stream_sessions_record_viewer(
    sessions: *const rsdb_stream_sessions,
    session_id: i64,
    current_viewers: i32,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        block_on(s.0.record_viewer_join(session_id, current_viewers)).map(|_| ())
    })
}

/// Adds transferred bytes.
#[no_mangle]
pub unsafe extern "C" fn rsdb_stream_sessions_add_bytes(
    sessions: *const rsdb_stream_sessions,
    session_id: i64,
    bytes: i64,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        block_on(s.0.add_bytes(session_id, bytes)).map(|_| ())
    })
}

/// Ends a session and computes its duration; `RSDB_ERR_STATE` when already ended.
#[no_mangle]
pub unsafe extern "C" fn rsdb_stream_sessions_end(
    sessions: *const rsdb_stream_sessions,
    session_id: i64,
    session_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        out_ptr(session_json, "session_json")?;
        json_out(session_json, &block_on(s.0.end(session_id))?)
    })
}

/// A stream's sessions, newest first, as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn rsdb_stream_sessions_list(
    sessions: *const rsdb_stream_sessions,
    stream_id: i64,
    sessions_json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        let s = arg_ref(sessions, "sessions")?;
        out_ptr(sessions_json, "sessions_json")?;
        json_out(sessions_json, &block_on(s.0.list_for_stream(stream_id))?)
    })
}

/// Announces start, stop and viewer changes through `sync` from now on (events
/// `stream.started`, `stream.stopped`, `viewer.joined`, `viewer.left`, and the shared `stream`
/// entity's `live`, `session_id` and `viewers`). `sync` may be NULL, which stops it; the handle
/// keeps the manager alive until then.
#[no_mangle]
pub unsafe extern "C" fn rsdb_streams_set_sync(h: *const rsdb_streams, sync: *const super::sync::rsdb_sync) -> c_int {
    guard(|| {
        let h = arg_ref(h, "streams")?;
        h.0.set_sync(sync.as_ref().map(|s| s.0.clone()));
        Ok(())
    })
}

/// Announces profile, verification and activation changes through `sync` from now on (event
/// `user.updated` and the shared `user` entity). `sync` may be NULL, which stops it.
#[no_mangle]
pub unsafe extern "C" fn rsdb_users_set_sync(h: *const rsdb_users, sync: *const super::sync::rsdb_sync) -> c_int {
    guard(|| {
        let h = arg_ref(h, "users")?;
        h.0.set_sync(sync.as_ref().map(|s| s.0.clone()));
        Ok(())
    })
}
