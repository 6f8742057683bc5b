//! Users, streams and stream sessions behind `rootstream::database::models`.

use super::{opt, to_json, R};
use crate::error::Error;
use crate::models::{NewUser, StreamModel, StreamSessionModel, StreamStats, UserModel};
use crate::runtime::block_on;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        include!("rootstream-db/src/ffi/cxx/cache.rs.h");
        type DbBox = crate::ffi::cxx::db::DbBox;
        type RedisBox = crate::ffi::cxx::cache::RedisBox;
    }

    extern "Rust" {
        // Records cross as JSON text; optional text uses a `has_` flag.
        fn user_create(
            db: &DbBox,
            username: &str,
            email: &str,
            password: &str,
            display_name: &str,
            has_display_name: bool,
        ) -> Result<String>;
        fn user_authenticate(db: &DbBox, login: &str, password: &str) -> Result<String>;
        fn user_verify_password(db: &DbBox, id: i64, password: &str) -> Result<bool>;
        fn user_get(db: &DbBox, by: &str, key: &str) -> Result<String>;
        fn user_update_profile(
            db: &DbBox,
            id: i64,
            display_name: &str,
            has_display_name: bool,
            avatar_url: &str,
            has_avatar_url: bool,
        ) -> Result<String>;
        fn user_set_flag(db: &DbBox, id: i64, flag: &str, value: bool) -> Result<String>;
        fn user_change_password(db: &DbBox, id: i64, new_password: &str) -> Result<()>;

        fn stream_create(
            db: &DbBox,
            redis: &RedisBox,
            user_id: i64,
            name: &str,
            description: &str,
            has_description: bool,
        ) -> Result<String>;
        fn stream_get(db: &DbBox, redis: &RedisBox, id: i64) -> Result<String>;
        fn stream_get_by_key(db: &DbBox, redis: &RedisBox, key: &str) -> Result<String>;
        fn stream_start(db: &DbBox, redis: &RedisBox, id: i64) -> Result<String>;
        fn stream_stop(db: &DbBox, redis: &RedisBox, id: i64) -> Result<String>;
        fn stream_viewer(db: &DbBox, redis: &RedisBox, id: i64, change: i32) -> Result<i64>;
        fn stream_update_stats(db: &DbBox, redis: &RedisBox, id: i64, stats_json: &str) -> Result<String>;
        fn stream_regenerate_key(db: &DbBox, redis: &RedisBox, id: i64) -> Result<String>;
        fn stream_list_live(db: &DbBox, redis: &RedisBox) -> Result<String>;

        fn session_create(db: &DbBox, stream_id: i64) -> Result<String>;
        fn session_get(db: &DbBox, id: i64) -> Result<String>;
        fn session_record_viewer(db: &DbBox, id: i64, current_viewers: i32) -> Result<String>;
        fn session_add_bytes(db: &DbBox, id: i64, bytes: i64) -> Result<String>;
        fn session_end(db: &DbBox, id: i64) -> Result<String>;
        fn session_list(db: &DbBox, stream_id: i64) -> Result<String>;
    }
}

use super::cache::RedisBox;
use super::db::DbBox;

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
) -> R<String> {
    let new = NewUser { username, email, password, display_name: opt(display_name, has_display_name) };
    to_json(&block_on(users(db).create(new))?)
}

fn user_authenticate(db: &DbBox, login: &str, password: &str) -> R<String> {
    to_json(&block_on(users(db).authenticate(login, password))?)
}

fn user_verify_password(db: &DbBox, id: i64, password: &str) -> R<bool> {
    Ok(block_on(users(db).verify_password(id, password))?)
}

fn user_get(db: &DbBox, by: &str, key: &str) -> R<String> {
    let u = users(db);
    let user = match by {
        "id" => block_on(u.find_by_id(key.parse().map_err(|_| Error::invalid("user id must be a number"))?))?,
        "username" => block_on(u.find_by_username(key))?,
        "email" => block_on(u.find_by_email(key))?,
        other => return Err(Error::invalid(format!("unknown lookup {other:?}")).into()),
    };
    to_json(&user)
}

fn user_update_profile(
    db: &DbBox,
    id: i64,
    display_name: &str,
    has_display_name: bool,
    avatar_url: &str,
    has_avatar_url: bool,
) -> R<String> {
    to_json(&block_on(users(db).update_profile(
        id,
        opt(display_name, has_display_name),
        opt(avatar_url, has_avatar_url),
    ))?)
}

fn user_set_flag(db: &DbBox, id: i64, flag: &str, value: bool) -> R<String> {
    let u = users(db);
    let user = match flag {
        "verified" => block_on(u.mark_verified(id))?,
        "active" => block_on(u.set_active(id, value))?,
        "login" => block_on(u.record_login(id))?,
        other => return Err(Error::invalid(format!("unknown flag {other:?}")).into()),
    };
    to_json(&user)
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
) -> R<String> {
    to_json(&block_on(streams(db, redis).create(user_id, name, opt(description, has_description)))?)
}

fn stream_get(db: &DbBox, redis: &RedisBox, id: i64) -> R<String> {
    to_json(&block_on(streams(db, redis).find_by_id(id))?)
}

fn stream_get_by_key(db: &DbBox, redis: &RedisBox, key: &str) -> R<String> {
    to_json(&block_on(streams(db, redis).find_by_key(key))?)
}

fn stream_start(db: &DbBox, redis: &RedisBox, id: i64) -> R<String> {
    to_json(&block_on(streams(db, redis).start(id))?)
}

fn stream_stop(db: &DbBox, redis: &RedisBox, id: i64) -> R<String> {
    to_json(&block_on(streams(db, redis).stop(id))?)
}

fn stream_viewer(db: &DbBox, redis: &RedisBox, id: i64, change: i32) -> R<i64> {
    let s = streams(db, redis);
    Ok(match change.signum() {
        1 => block_on(s.viewer_joined(id))?,
        -1 => block_on(s.viewer_left(id))?,
        _ => block_on(s.viewer_count(id))?,
    })
}

fn stream_update_stats(db: &DbBox, redis: &RedisBox, id: i64, stats_json: &str) -> R<String> {
    let v: serde_json::Value = serde_json::from_str(stats_json)?;
    let int = |k: &str| v.get(k).and_then(|x| x.as_i64()).and_then(|x| i32::try_from(x).ok());
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let stats = StreamStats {
        bitrate_kbps: int("bitrate_kbps"),
        fps: int("fps"),
        resolution: text("resolution"),
        codec: text("codec"),
    };
    to_json(&block_on(streams(db, redis).update_stats(id, &stats))?)
}

fn stream_regenerate_key(db: &DbBox, redis: &RedisBox, id: i64) -> R<String> {
    to_json(&block_on(streams(db, redis).regenerate_key(id))?)
}

fn stream_list_live(db: &DbBox, redis: &RedisBox) -> R<String> {
    to_json(&block_on(streams(db, redis).list_live())?)
}

fn session_create(db: &DbBox, stream_id: i64) -> R<String> {
    to_json(&block_on(sessions(db).create(stream_id))?)
}

fn session_get(db: &DbBox, id: i64) -> R<String> {
    to_json(&block_on(sessions(db).get(id))?)
}

fn session_record_viewer(db: &DbBox, id: i64, current_viewers: i32) -> R<String> {
    to_json(&block_on(sessions(db).record_viewer_join(id, current_viewers))?)
}

fn session_add_bytes(db: &DbBox, id: i64, bytes: i64) -> R<String> {
    to_json(&block_on(sessions(db).add_bytes(id, bytes))?)
}

fn session_end(db: &DbBox, id: i64) -> R<String> {
    to_json(&block_on(sessions(db).end(id))?)
}

fn session_list(db: &DbBox, stream_id: i64) -> R<String> {
    to_json(&block_on(sessions(db).list_for_stream(stream_id))?)
}
