//! Users, streams and stream sessions behind `rootstream::database::models`. Records cross as
//! shared structs: timestamps are RFC 3339 UTC text (empty = none) and each optional value has
//! a `has_` flag.

use super::{opt, R};
use crate::error::Error;
use crate::models::{self, NewUser, StreamModel, StreamSessionModel, UserModel};
use crate::runtime::block_on;
use chrono::{DateTime, Utc};

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        include!("rootstream-db/src/ffi/cxx/cache.rs.h");
        type DbBox = crate::ffi::cxx::db::DbBox;
        type RedisBox = crate::ffi::cxx::cache::RedisBox;
        include!("rootstream-db/src/ffi/cxx/sync.rs.h");
        type SyncLink = crate::ffi::cxx::sync::SyncLink;
    }

    /// A user as stored, without the password hash.
    struct UserRecord {
        id: i64,
        username: String,
        email: String,
        display_name: String,
        has_display_name: bool,
        avatar_url: String,
        has_avatar_url: bool,
        is_verified: bool,
        is_active: bool,
        last_login_at: String,
        created_at: String,
        updated_at: String,
    }

    /// A stream as stored, with its stream key.
    struct StreamRecord {
        id: i64,
        user_id: i64,
        name: String,
        description: String,
        has_description: bool,
        stream_key: String,
        is_live: bool,
        viewer_count: i32,
        stats: StreamStats,
        started_at: String,
        ended_at: String,
        created_at: String,
        updated_at: String,
    }

    /// Encoder statistics; a value without its `has_` flag is unset (left as it is on update).
    struct StreamStats {
        bitrate_kbps: i32,
        has_bitrate_kbps: bool,
        fps: i32,
        has_fps: bool,
        resolution: String,
        has_resolution: bool,
        codec: String,
        has_codec: bool,
    }

    /// One broadcast of a stream; duration_seconds counts only with has_duration_seconds.
    struct StreamSessionRecord {
        id: i64,
        stream_id: i64,
        started_at: String,
        ended_at: String,
        duration_seconds: i64,
        has_duration_seconds: bool,
        total_viewers: i32,
        peak_viewers: i32,
        bytes_transferred: i64,
    }

    extern "Rust" {
        fn user_create(
            db: &DbBox,
            username: &str,
            email: &str,
            password: &str,
            display_name: &str,
            has_display_name: bool,
        ) -> Result<UserRecord>;
        fn user_authenticate(db: &DbBox, login: &str, password: &str) -> Result<UserRecord>;
        fn user_verify_password(db: &DbBox, id: i64, password: &str) -> Result<bool>;
        fn user_get(db: &DbBox, by: &str, key: &str) -> Result<UserRecord>;
        fn user_update_profile(
            db: &DbBox,
            link: &SyncLink,
            id: i64,
            display_name: &str,
            has_display_name: bool,
            avatar_url: &str,
            has_avatar_url: bool,
        ) -> Result<UserRecord>;
        fn user_set_flag(db: &DbBox, link: &SyncLink, id: i64, flag: &str, value: bool) -> Result<UserRecord>;
        fn user_change_password(db: &DbBox, id: i64, new_password: &str) -> Result<()>;

        fn stream_create(
            db: &DbBox,
            redis: &RedisBox,
            user_id: i64,
            name: &str,
            description: &str,
            has_description: bool,
        ) -> Result<StreamRecord>;
        fn stream_get(db: &DbBox, redis: &RedisBox, id: i64) -> Result<StreamRecord>;
        fn stream_get_by_key(db: &DbBox, redis: &RedisBox, key: &str) -> Result<StreamRecord>;
        fn stream_start(db: &DbBox, redis: &RedisBox, link: &SyncLink, id: i64) -> Result<StreamSessionRecord>;
        fn stream_stop(db: &DbBox, redis: &RedisBox, link: &SyncLink, id: i64) -> Result<StreamSessionRecord>;
        fn stream_viewer(db: &DbBox, redis: &RedisBox, link: &SyncLink, id: i64, change: i32) -> Result<i64>;
        fn stream_update_stats(db: &DbBox, redis: &RedisBox, id: i64, stats: &StreamStats) -> Result<StreamRecord>;
        fn stream_regenerate_key(db: &DbBox, redis: &RedisBox, id: i64) -> Result<StreamRecord>;
        fn stream_list_live(db: &DbBox, redis: &RedisBox) -> Result<Vec<StreamRecord>>;

        fn session_create(db: &DbBox, stream_id: i64) -> Result<StreamSessionRecord>;
        fn session_get(db: &DbBox, id: i64) -> Result<StreamSessionRecord>;
        fn session_record_viewer(db: &DbBox, id: i64, current_viewers: i32) -> Result<StreamSessionRecord>;
        fn session_add_bytes(db: &DbBox, id: i64, bytes: i64) -> Result<StreamSessionRecord>;
        fn session_end(db: &DbBox, id: i64) -> Result<StreamSessionRecord>;
        fn session_list(db: &DbBox, stream_id: i64) -> Result<Vec<StreamSessionRecord>>;
    }
}

use super::cache::RedisBox;
use super::db::DbBox;
use super::sync::SyncLink;
pub use bridge::{StreamRecord, StreamSessionRecord, StreamStats, UserRecord};

fn rec<T, U: From<T>>(value: T) -> R<U> {
    Ok(U::from(value))
}

fn recs<T, U: From<T>>(values: Vec<T>) -> R<Vec<U>> {
    Ok(values.into_iter().map(U::from).collect())
}

fn text(value: Option<String>) -> (String, bool) {
    match value {
        Some(v) => (v, true),
        None => (String::new(), false),
    }
}

fn number<T: Default>(value: Option<T>) -> (T, bool) {
    match value {
        Some(v) => (v, true),
        None => (T::default(), false),
    }
}

fn time(t: &DateTime<Utc>) -> String {
    models::ts(t)
}

fn time_or_empty(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(models::ts).unwrap_or_default()
}

impl From<models::User> for UserRecord {
    fn from(u: models::User) -> Self {
        let (display_name, has_display_name) = text(u.display_name);
        let (avatar_url, has_avatar_url) = text(u.avatar_url);
        UserRecord {
            id: u.id,
            username: u.username,
            email: u.email,
            display_name,
            has_display_name,
            avatar_url,
            has_avatar_url,
            is_verified: u.is_verified,
            is_active: u.is_active,
            last_login_at: time_or_empty(&u.last_login_at),
            created_at: time(&u.created_at),
            updated_at: time(&u.updated_at),
        }
    }
}

impl From<models::Stream> for StreamRecord {
    fn from(s: models::Stream) -> Self {
        let (description, has_description) = text(s.description);
        let (bitrate_kbps, has_bitrate_kbps) = number(s.bitrate_kbps);
        let (fps, has_fps) = number(s.fps);
        let (resolution, has_resolution) = text(s.resolution);
        let (codec, has_codec) = text(s.codec);
        StreamRecord {
            id: s.id,
            user_id: s.user_id,
            name: s.name,
            description,
            has_description,
            stream_key: s.stream_key,
            is_live: s.is_live,
            viewer_count: s.viewer_count,
            stats: StreamStats {
                bitrate_kbps,
                has_bitrate_kbps,
                fps,
                has_fps,
                resolution,
                has_resolution,
                codec,
                has_codec,
            },
            started_at: time_or_empty(&s.started_at),
            ended_at: time_or_empty(&s.ended_at),
            created_at: time(&s.created_at),
            updated_at: time(&s.updated_at),
        }
    }
}

impl From<&StreamStats> for models::StreamStats {
    fn from(s: &StreamStats) -> Self {
        models::StreamStats {
            bitrate_kbps: s.has_bitrate_kbps.then_some(s.bitrate_kbps),
            fps: s.has_fps.then_some(s.fps),
            resolution: opt(&s.resolution, s.has_resolution).map(str::to_string),
            codec: opt(&s.codec, s.has_codec).map(str::to_string),
        }
    }
}

impl From<models::StreamSession> for StreamSessionRecord {
    fn from(s: models::StreamSession) -> Self {
        let (duration_seconds, has_duration_seconds) = number(s.duration_seconds);
        StreamSessionRecord {
            id: s.id,
            stream_id: s.stream_id,
            started_at: time(&s.started_at),
            ended_at: time_or_empty(&s.ended_at),
            duration_seconds,
            has_duration_seconds,
            total_viewers: s.total_viewers,
            peak_viewers: s.peak_viewers,
            bytes_transferred: s.bytes_transferred,
        }
    }
}

fn users(db: &DbBox) -> UserModel {
    UserModel::new(db.0.clone())
}

fn streams(db: &DbBox, redis: &RedisBox) -> StreamModel {
    StreamModel::new(db.0.clone(), redis.0.clone())
}

fn sessions(db: &DbBox) -> StreamSessionModel {
    StreamSessionModel::new(db.0.clone())
}

fn user_create(
    db: &DbBox,
    username: &str,
    email: &str,
    password: &str,
    display_name: &str,
    has_display_name: bool,
) -> R<UserRecord> {
    let new = NewUser { username, email, password, display_name: opt(display_name, has_display_name) };
    rec(block_on(users(db).create(new))?)
}

fn user_authenticate(db: &DbBox, login: &str, password: &str) -> R<UserRecord> {
    rec(block_on(users(db).authenticate(login, password))?)
}

fn user_verify_password(db: &DbBox, id: i64, password: &str) -> R<bool> {
    Ok(block_on(users(db).verify_password(id, password))?)
}

fn user_get(db: &DbBox, by: &str, key: &str) -> R<UserRecord> {
    let u = users(db);
    let user = match by {
        "id" => block_on(u.find_by_id(key.parse().map_err(|_| Error::invalid("user id must be a number"))?))?,
        "username" => block_on(u.find_by_username(key))?,
        "email" => block_on(u.find_by_email(key))?,
        other => return Err(Error::invalid(format!("unknown lookup {other:?}")).into()),
    };
    rec(user)
}

fn user_update_profile(
    db: &DbBox,
    link: &SyncLink,
    id: i64,
    display_name: &str,
    has_display_name: bool,
    avatar_url: &str,
    has_avatar_url: bool,
) -> R<UserRecord> {
    let u = users(db);
    u.set_sync(link.0.clone());
    rec(block_on(u.update_profile(id, opt(display_name, has_display_name), opt(avatar_url, has_avatar_url)))?)
}

fn user_set_flag(db: &DbBox, link: &SyncLink, id: i64, flag: &str, value: bool) -> R<UserRecord> {
    let u = users(db);
    u.set_sync(link.0.clone());
    let user = match flag {
        "verified" => block_on(u.mark_verified(id))?,
        "active" => block_on(u.set_active(id, value))?,
        "login" => block_on(u.record_login(id))?,
        other => return Err(Error::invalid(format!("unknown flag {other:?}")).into()),
    };
    rec(user)
}

fn user_change_password(db: &DbBox, id: i64, new_password: &str) -> R<()> {
    Ok(block_on(users(db).change_password(id, new_password))?)
}

fn stream_create(
    db: &DbBox,
    redis: &RedisBox,
    user_id: i64,
    name: &str,
    description: &str,
    has_description: bool,
) -> R<StreamRecord> {
    rec(block_on(streams(db, redis).create(user_id, name, opt(description, has_description)))?)
}

fn stream_get(db: &DbBox, redis: &RedisBox, id: i64) -> R<StreamRecord> {
    rec(block_on(streams(db, redis).find_by_id(id))?)
}

fn stream_get_by_key(db: &DbBox, redis: &RedisBox, key: &str) -> R<StreamRecord> {
    rec(block_on(streams(db, redis).find_by_key(key))?)
}

// A stream model that announces through `link`'s manager, if it has one.
fn announcing_streams(db: &DbBox, redis: &RedisBox, link: &SyncLink) -> StreamModel {
    let s = streams(db, redis);
    s.set_sync(link.0.clone());
    s
}

fn stream_start(db: &DbBox, redis: &RedisBox, link: &SyncLink, id: i64) -> R<StreamSessionRecord> {
    rec(block_on(announcing_streams(db, redis, link).start(id))?)
}

fn stream_stop(db: &DbBox, redis: &RedisBox, link: &SyncLink, id: i64) -> R<StreamSessionRecord> {
    rec(block_on(announcing_streams(db, redis, link).stop(id))?)
}

fn stream_viewer(db: &DbBox, redis: &RedisBox, link: &SyncLink, id: i64, change: i32) -> R<i64> {
    let s = announcing_streams(db, redis, link);
    Ok(match change.signum() {
        1 => block_on(s.viewer_joined(id))?,
        -1 => block_on(s.viewer_left(id))?,
        _ => block_on(s.viewer_count(id))?,
    })
}

fn stream_update_stats(db: &DbBox, redis: &RedisBox, id: i64, stats: &StreamStats) -> R<StreamRecord> {
    rec(block_on(streams(db, redis).update_stats(id, &stats.into()))?)
}

fn stream_regenerate_key(db: &DbBox, redis: &RedisBox, id: i64) -> R<StreamRecord> {
    rec(block_on(streams(db, redis).regenerate_key(id))?)
}

fn stream_list_live(db: &DbBox, redis: &RedisBox) -> R<Vec<StreamRecord>> {
    recs(block_on(streams(db, redis).list_live())?)
}

fn session_create(db: &DbBox, stream_id: i64) -> R<StreamSessionRecord> {
    rec(block_on(sessions(db).create(stream_id))?)
}

fn session_get(db: &DbBox, id: i64) -> R<StreamSessionRecord> {
    rec(block_on(sessions(db).get(id))?)
}

fn session_record_viewer(db: &DbBox, id: i64, current_viewers: i32) -> R<StreamSessionRecord> {
    rec(block_on(sessions(db).record_viewer_join(id, current_viewers))?)
}

fn session_add_bytes(db: &DbBox, id: i64, bytes: i64) -> R<StreamSessionRecord> {
    rec(block_on(sessions(db).add_bytes(id, bytes))?)
}

fn session_end(db: &DbBox, id: i64) -> R<StreamSessionRecord> {
    rec(block_on(sessions(db).end(id))?)
}

fn session_list(db: &DbBox, stream_id: i64) -> R<Vec<StreamSessionRecord>> {
    recs(block_on(sessions(db).list_for_stream(stream_id))?)
}
