//! The cxx bridge behind the C++ API in `cpp/`. Opaque Rust types behind `rust::Box`; errors
//! cross as exceptions whose message starts with `rsdb:<code>:` so the C++ wrappers can
//! rethrow them as `rootstream::Error` with the same numeric code as the C API.

use crate::auth::mfa::MfaManager;
use crate::backup::BackupManager;
use crate::cache::RedisClient;
use crate::config::Config;
use crate::db::{migrations, DatabaseManager, Transaction};
use crate::error::Error;
use crate::events::{EventStore, NewEvent};
use crate::models::session::{DeviceInfo, SessionModel, SessionSettings};
use crate::models::{NewUser, StreamModel, StreamSessionModel, StreamStats, UserModel};
use crate::runtime::block_on;
use std::fmt;
use std::time::Duration;

/// An error on its way to C++: displays as `rsdb:<code>:<message>`.
pub struct BridgeError(pub Error);

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rsdb:{}:{}", self.0.code().as_i32(), self.0)
    }
}

impl From<Error> for BridgeError {
    fn from(e: Error) -> Self {
        BridgeError(e)
    }
}

impl From<serde_json::Error> for BridgeError {
    fn from(e: serde_json::Error) -> Self {
        BridgeError(e.into())
    }
}

type R<T> = std::result::Result<T, BridgeError>;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("rootstream/cache/message_observer.h");
        /// Receives pub/sub messages; implemented in C++ around a std::function.
        type MessageObserver;
        fn on_message(self: &MessageObserver, channel: &str, payload: &[u8]);
    }

    extern "Rust" {
        type ConfigBox;
        fn config_new() -> Box<ConfigBox>;
        fn config_from_env() -> Result<Box<ConfigBox>>;
        fn set(self: &mut ConfigBox, key: &str, value: &str) -> Result<()>;
        fn load_file(self: &mut ConfigBox, path: &str) -> Result<()>;
        fn debug_string(self: &ConfigBox) -> String;

        type DbBox;
        fn db_open(cfg: &ConfigBox) -> Result<Box<DbBox>>;
        fn migrate(self: &DbBox) -> Result<i32>;
        fn execute(self: &DbBox, sql: &str, params_json: &str) -> Result<u64>;
        fn query(self: &DbBox, sql: &str, params_json: &str) -> Result<String>;
        fn begin(self: &DbBox) -> Result<Box<TxBox>>;
        fn pool_stats_json(self: &DbBox) -> String;
        fn health_json(self: &DbBox) -> Result<String>;
        fn close(self: &DbBox);

        type TxBox;
        fn execute(self: &TxBox, sql: &str, params_json: &str) -> Result<u64>;
        fn query(self: &TxBox, sql: &str, params_json: &str) -> Result<String>;
        fn commit(self: &mut TxBox) -> Result<()>;
        fn rollback(self: &mut TxBox) -> Result<()>;
        fn is_open(self: &TxBox) -> bool;

        type RedisBox;
        fn redis_open(cfg: &ConfigBox) -> Result<Box<RedisBox>>;
        fn ping_ms(self: &RedisBox) -> Result<f64>;
        fn set(self: &RedisBox, key: &str, value: &str, ttl_ms: u64) -> Result<()>;
        fn get(self: &RedisBox, key: &str, found: &mut bool) -> Result<String>;
        fn del(self: &RedisBox, key: &str) -> Result<bool>;
        fn exists(self: &RedisBox, key: &str) -> Result<bool>;
        fn expire(self: &RedisBox, key: &str, ttl_ms: u64) -> Result<bool>;
        fn ttl_ms(self: &RedisBox, key: &str) -> Result<i64>;
        fn incr(self: &RedisBox, key: &str, by: i64) -> Result<i64>;
        fn hset(self: &RedisBox, key: &str, field: &str, value: &str) -> Result<bool>;
        fn hget(self: &RedisBox, key: &str, field: &str, found: &mut bool) -> Result<String>;
        fn hgetall_json(self: &RedisBox, key: &str) -> Result<String>;
        fn hdel(self: &RedisBox, key: &str, field: &str) -> Result<bool>;
        fn push(self: &RedisBox, key: &str, value: &str, left: bool) -> Result<i64>;
        fn pop(self: &RedisBox, key: &str, left: bool, found: &mut bool) -> Result<String>;
        fn lrange_json(self: &RedisBox, key: &str, start: i64, stop: i64) -> Result<String>;
        fn publish(self: &RedisBox, channel: &str, message: &str) -> Result<i64>;
        fn subscribe(self: &RedisBox, pattern: &str, observer: UniquePtr<MessageObserver>) -> Result<u64>;
        fn unsubscribe(self: &RedisBox, id: u64) -> Result<()>;
        fn exec_atomic(self: &RedisBox, commands_json: &str) -> Result<String>;
        fn command(self: &RedisBox, args_json: &str) -> Result<String>;
        fn pubsub_stats_json(self: &RedisBox) -> String;

        // Models: records cross as JSON text; optional text uses a `has_` flag.
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

        fn events_append(
            db: &DbBox,
            aggregate_type: &str,
            aggregate_id: &str,
            expected_version: i64,
            events_json: &str,
        ) -> Result<i64>;
        fn events_load(db: &DbBox, aggregate_type: &str, aggregate_id: &str, after_version: i64) -> Result<String>;
        fn events_version(db: &DbBox, aggregate_type: &str, aggregate_id: &str) -> Result<i64>;
        fn events_by_user(db: &DbBox, user_id: i64, limit: i64) -> Result<String>;
        fn events_save_snapshot(
            db: &DbBox,
            aggregate_type: &str,
            aggregate_id: &str,
            version: i64,
            state_json: &str,
        ) -> Result<()>;
        fn events_load_from_snapshot(db: &DbBox, aggregate_type: &str, aggregate_id: &str) -> Result<String>;

        type SessionsBox;
        fn sessions_new(cfg: &ConfigBox, db: &DbBox, redis: &RedisBox) -> Box<SessionsBox>;
        fn create(
            self: &SessionsBox,
            user_id: i64,
            device_json: &str,
            remember_me: bool,
            mfa_required: bool,
        ) -> Result<String>;
        fn validate(self: &SessionsBox, token: &str, fingerprint: &str, require_mfa: bool) -> Result<String>;
        fn refresh(self: &SessionsBox, token: &str, fingerprint: &str, rotate: bool) -> Result<String>;
        fn revoke(self: &SessionsBox, session_id: i64, reason: &str) -> Result<()>;
        fn revoke_token(self: &SessionsBox, token: &str) -> Result<()>;
        fn revoke_all(self: &SessionsBox, user_id: i64, keep_session_id: i64, reason: &str) -> Result<u64>;
        fn list(self: &SessionsBox, user_id: i64) -> Result<String>;
        fn cleanup(self: &SessionsBox) -> Result<String>;
        fn stats_json(self: &SessionsBox) -> String;

        type BackupBox;
        fn backup_new(cfg: &ConfigBox, db: &DbBox) -> Result<Box<BackupBox>>;
        fn create_full(self: &BackupBox) -> Result<String>;
        fn verify(self: &BackupBox, backup_id: &str) -> Result<String>;
        fn restore(self: &BackupBox, backup_id: &str, target_url: &str) -> Result<String>;
        fn list(self: &BackupBox) -> Result<String>;
        fn cleanup(
            self: &BackupBox,
            full_days: u32,
            incremental_days: u32,
            differential_days: u32,
            keep_last: u32,
        ) -> Result<String>;
        fn schedule(self: &BackupBox, cron: &str, observer: UniquePtr<MessageObserver>) -> Result<Box<ScheduleBox>>;
        fn create(self: &BackupBox, kind: &str) -> Result<String>;
        fn delete_backup(self: &BackupBox, backup_id: &str) -> Result<u64>;
        fn init_repository(self: &BackupBox) -> Result<()>;
        fn schedule_kind(
            self: &BackupBox,
            cron: &str,
            kind: &str,
            observer: UniquePtr<MessageObserver>,
        ) -> Result<Box<ScheduleBox>>;
        fn set_progress(self: &mut BackupBox, observer: UniquePtr<MessageObserver>);

        type ScheduleBox;

        type RecoveryBox;
        fn recovery_from_backups(backups: &BackupBox) -> Box<RecoveryBox>;
        fn recovery_from_config(cfg: &ConfigBox) -> Result<Box<RecoveryBox>>;
        fn set_progress(self: &mut RecoveryBox, observer: UniquePtr<MessageObserver>);
        fn restore_database(self: &RecoveryBox, backup_id: &str, target_url: &str) -> Result<String>;
        fn restore_cluster(self: &RecoveryBox, options_json: &str) -> Result<String>;
        fn test_restore(self: &RecoveryBox, backup_id: &str) -> Result<String>;
        fn list_repository(self: &RecoveryBox) -> Result<String>;
        fn stop_cluster(self: &RecoveryBox, data_dir: &str) -> Result<()>;

        fn wal_push(cfg: &ConfigBox, path: &str) -> Result<bool>;
        fn wal_fetch(cfg: &ConfigBox, name: &str, path: &str) -> Result<u64>;

        type MfaBox;
        fn mfa_new(cfg: &ConfigBox, db: &DbBox, redis: &RedisBox) -> Result<Box<MfaBox>>;
        fn mfa_new_without_redis(cfg: &ConfigBox, db: &DbBox) -> Result<Box<MfaBox>>;
        fn base64_decode(text: &str) -> Result<Vec<u8>>;
        fn totp_code(secret_base32: &str, unix_time: u64) -> Result<String>;
        fn begin_enrollment(self: &MfaBox, user_id: i64, account_name: &str) -> Result<String>;
        fn confirm_enrollment(self: &MfaBox, user_id: i64, code: &str, ip: &str) -> Result<String>;
        fn verify(self: &MfaBox, user_id: i64, code: &str, ip: &str) -> Result<bool>;
        fn verify_backup_code(self: &MfaBox, user_id: i64, code: &str, ip: &str) -> Result<bool>;
        fn complete_login(
            self: &MfaBox,
            sessions: &SessionsBox,
            token: &str,
            fingerprint: &str,
            code: &str,
            ip: &str,
        ) -> Result<String>;
        fn regenerate_backup_codes(self: &MfaBox, user_id: i64) -> Result<String>;
        fn unenroll(self: &MfaBox, user_id: i64) -> Result<()>;
        fn admin_reset(self: &MfaBox, sessions: &SessionsBox, user_id: i64, reason: &str) -> Result<u64>;
        fn status(self: &MfaBox, user_id: i64) -> Result<String>;
        fn rotate_keys(self: &MfaBox) -> Result<u64>;
    }
}

/// Sessions behind `rootstream::database::models::SessionModel`.
pub struct SessionsBox(SessionModel);

fn sessions_new(cfg: &ConfigBox, db: &DbBox, redis: &RedisBox) -> Box<SessionsBox> {
    Box::new(SessionsBox(SessionModel::new(db.0.clone(), redis.0.clone(), SessionSettings::from_config(&cfg.0))))
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl SessionsBox {
    fn create(&self, user_id: i64, device_json: &str, remember_me: bool, mfa_required: bool) -> R<String> {
        let device: DeviceInfo =
            serde_json::from_str(device_json).map_err(|e| Error::Json(format!("device must be a JSON object: {e}")))?;
        let c = block_on(self.0.create(user_id, &device, remember_me, mfa_required))?;
        to_json(&serde_json::json!({"token": c.token.expose(), "session": c.session}))
    }
    fn validate(&self, token: &str, fingerprint: &str, require_mfa: bool) -> R<String> {
        to_json(&block_on(self.0.validate(token, fingerprint, require_mfa))?)
    }
    fn refresh(&self, token: &str, fingerprint: &str, rotate: bool) -> R<String> {
        let (t, s) = block_on(self.0.refresh(token, fingerprint, rotate))?;
        to_json(&serde_json::json!({"token": t.as_ref().map(|t| t.expose()), "session": s}))
    }
    fn revoke(&self, session_id: i64, reason: &str) -> R<()> {
        Ok(block_on(self.0.revoke(session_id, nonempty(reason)))?)
    }
    fn revoke_token(&self, token: &str) -> R<()> {
        Ok(block_on(self.0.revoke_token(token))?)
    }
    fn revoke_all(&self, user_id: i64, keep_session_id: i64, reason: &str) -> R<u64> {
        let keep = (keep_session_id != 0).then_some(keep_session_id);
        Ok(block_on(self.0.revoke_all(user_id, keep, nonempty(reason)))?)
    }
    fn list(&self, user_id: i64) -> R<String> {
        to_json(&block_on(self.0.list(user_id))?)
    }
    fn cleanup(&self) -> R<String> {
        let (ended, deleted) = block_on(self.0.cleanup())?;
        to_json(&serde_json::json!({"ended": ended, "deleted": deleted}))
    }
    fn stats_json(&self) -> String {
        serde_json::to_string(&self.0.stats()).unwrap_or_default()
    }
}

/// Backups behind `rootstream::database::BackupManager` and `RecoveryManager`.
pub struct BackupBox(BackupManager);

fn backup_new(cfg: &ConfigBox, db: &DbBox) -> R<Box<BackupBox>> {
    Ok(Box::new(BackupBox(BackupManager::new(db.0.clone(), &cfg.0)?)))
}

impl BackupBox {
    fn create_full(&self) -> R<String> {
        to_json(&block_on(self.0.create_full())?)
    }
    fn verify(&self, backup_id: &str) -> R<String> {
        to_json(&self.0.verify(backup_id)?)
    }
    fn restore(&self, backup_id: &str, target_url: &str) -> R<String> {
        to_json(&block_on(self.0.restore(backup_id, target_url))?)
    }
    fn list(&self) -> R<String> {
        to_json(&block_on(self.0.list())?)
    }
    fn cleanup(&self, full_days: u32, incremental_days: u32, differential_days: u32, keep_last: u32) -> R<String> {
        let policy = crate::backup::RetentionPolicy::from_days(
            full_days,
            incremental_days,
            differential_days,
            keep_last as usize,
        );
        to_json(&block_on(self.0.cleanup(&policy))?)
    }
    fn schedule(&self, cron: &str, observer: cxx::UniquePtr<bridge::MessageObserver>) -> R<Box<ScheduleBox>> {
        self.schedule_kind(cron, "logical", observer)
    }
}

fn schedule_observer(
    observer: cxx::UniquePtr<bridge::MessageObserver>,
) -> R<crate::backup::schedule::ScheduleCallback> {
    if observer.is_null() {
        return Err(Error::Null("observer").into());
    }
    let obs = Observer(observer);
    Ok(std::sync::Arc::new(move |e| {
        let obs = &obs;
        if let Some(o) = obs.0.as_ref() {
            o.on_message("backup.schedule", serde_json::to_string(e).unwrap_or_default().as_bytes());
        }
    }))
}

fn progress_observer(observer: cxx::UniquePtr<bridge::MessageObserver>) -> Option<crate::backup::ProgressFn> {
    if observer.is_null() {
        return None;
    }
    let obs = Observer(observer);
    Some(std::sync::Arc::new(move |p: &crate::backup::Progress| {
        let obs = &obs;
        if let Some(o) = obs.0.as_ref() {
            o.on_message("backup.progress", serde_json::to_string(p).unwrap_or_default().as_bytes());
        }
    }))
}

impl BackupBox {
    fn create(&self, kind: &str) -> R<String> {
        to_json(&block_on(self.0.create(kind))?)
    }
    fn init_repository(&self) -> R<()> {
        Ok(self.0.init_repository()?)
    }
    fn delete_backup(&self, backup_id: &str) -> R<u64> {
        Ok(block_on(self.0.delete(backup_id))?)
    }
    fn schedule_kind(
        &self,
        cron: &str,
        kind: &str,
        observer: cxx::UniquePtr<bridge::MessageObserver>,
    ) -> R<Box<ScheduleBox>> {
        let what = crate::backup::BackupKind::parse(kind)?;
        let cb = schedule_observer(observer)?;
        let sched = crate::backup::BackupScheduler::start_with(self.0.clone(), cron, what, cb)?;
        Ok(Box::new(ScheduleBox { _running: sched }))
    }
    fn set_progress(&mut self, observer: cxx::UniquePtr<bridge::MessageObserver>) {
        self.0.set_progress(progress_observer(observer));
    }
}

/// Restores behind `rootstream::database::RecoveryManager`.
pub struct RecoveryBox(crate::backup::RecoveryManager);

fn recovery_from_backups(backups: &BackupBox) -> Box<RecoveryBox> {
    Box::new(RecoveryBox(crate::backup::RecoveryManager::new(backups.0.clone())))
}

fn recovery_from_config(cfg: &ConfigBox) -> R<Box<RecoveryBox>> {
    Ok(Box::new(RecoveryBox(crate::backup::RecoveryManager::from_config(&cfg.0)?)))
}

impl RecoveryBox {
    fn set_progress(&mut self, observer: cxx::UniquePtr<bridge::MessageObserver>) {
        self.0.set_progress(progress_observer(observer));
    }
    fn restore_database(&self, backup_id: &str, target_url: &str) -> R<String> {
        to_json(&block_on(self.0.restore_database(backup_id, target_url))?)
    }
    fn restore_cluster(&self, options_json: &str) -> R<String> {
        let opts = crate::backup::ClusterRestoreOptions::from_json(options_json)?;
        to_json(&block_on(self.0.restore_cluster(&opts))?)
    }
    fn test_restore(&self, backup_id: &str) -> R<String> {
        to_json(&block_on(self.0.test_restore(backup_id))?)
    }
    fn list_repository(&self) -> R<String> {
        to_json(&self.0.list_repository()?)
    }
    fn stop_cluster(&self, data_dir: &str) -> R<()> {
        Ok(self.0.stop_cluster(std::path::Path::new(data_dir))?)
    }
}

fn wal_push(cfg: &ConfigBox, path: &str) -> R<bool> {
    let outcome = crate::backup::WalArchive::from_config(&cfg.0)?.push(std::path::Path::new(path))?;
    Ok(outcome == crate::backup::PushOutcome::Stored)
}

fn wal_fetch(cfg: &ConfigBox, name: &str, path: &str) -> R<u64> {
    Ok(crate::backup::WalArchive::from_config(&cfg.0)?.fetch(name, std::path::Path::new(path))?)
}

/// A running schedule behind `rootstream::database::BackupScheduler`; stops when dropped.
pub struct ScheduleBox {
    _running: crate::backup::BackupScheduler,
}

/// The manager behind `rootstream::auth::MFAManager`.
pub struct MfaBox(MfaManager);

fn mfa_new(cfg: &ConfigBox, db: &DbBox, redis: &RedisBox) -> R<Box<MfaBox>> {
    Ok(Box::new(MfaBox(MfaManager::new(db.0.clone(), Some(redis.0.clone()), &cfg.0)?)))
}

fn mfa_new_without_redis(cfg: &ConfigBox, db: &DbBox) -> R<Box<MfaBox>> {
    Ok(Box::new(MfaBox(MfaManager::new(db.0.clone(), None, &cfg.0)?)))
}

fn totp_code(secret_base32: &str, unix_time: u64) -> R<String> {
    Ok(crate::auth::totp::code_for_base32(secret_base32, unix_time)?)
}

fn base64_decode(text: &str) -> R<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| Error::invalid(format!("base64: {e}")))?)
}

impl MfaBox {
    fn begin_enrollment(&self, user_id: i64, account_name: &str) -> R<String> {
        to_json(&block_on(self.0.begin_enrollment(user_id, account_name))?)
    }
    fn confirm_enrollment(&self, user_id: i64, code: &str, ip: &str) -> R<String> {
        to_json(&block_on(self.0.confirm_enrollment(user_id, code, nonempty(ip)))?)
    }
    fn verify(&self, user_id: i64, code: &str, ip: &str) -> R<bool> {
        Ok(block_on(self.0.verify(user_id, code, nonempty(ip), None))?)
    }
    fn verify_backup_code(&self, user_id: i64, code: &str, ip: &str) -> R<bool> {
        Ok(block_on(self.0.verify_backup_code(user_id, code, nonempty(ip), None))?)
    }
    fn complete_login(
        &self,
        sessions: &SessionsBox,
        token: &str,
        fingerprint: &str,
        code: &str,
        ip: &str,
    ) -> R<String> {
        to_json(&block_on(self.0.complete_login(&sessions.0, token, fingerprint, code, nonempty(ip)))?)
    }
    fn regenerate_backup_codes(&self, user_id: i64) -> R<String> {
        to_json(&block_on(self.0.regenerate_backup_codes(user_id))?)
    }
    fn unenroll(&self, user_id: i64) -> R<()> {
        Ok(block_on(self.0.unenroll(user_id))?)
    }
    fn admin_reset(&self, sessions: &SessionsBox, user_id: i64, reason: &str) -> R<u64> {
        Ok(block_on(self.0.admin_reset(&sessions.0, user_id, nonempty(reason)))?.sessions_revoked)
    }
    fn status(&self, user_id: i64) -> R<String> {
        to_json(&block_on(self.0.status(user_id))?)
    }
    fn rotate_keys(&self) -> R<u64> {
        Ok(block_on(self.0.rotate_keys())?)
    }
}

fn opt(value: &str, present: bool) -> Option<&str> {
    present.then_some(value)
}

fn to_json<T: serde::Serialize>(v: &T) -> R<String> {
    Ok(serde_json::to_string(v)?)
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

fn store(db: &DbBox) -> EventStore {
    EventStore::new(db.0.clone())
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

fn events_append(
    db: &DbBox,
    aggregate_type: &str,
    aggregate_id: &str,
    expected_version: i64,
    events_json: &str,
) -> R<i64> {
    let list: Vec<NewEvent> = serde_json::from_str(events_json)
        .map_err(|e| Error::Json(format!("events must be an array of events: {e}")))?;
    Ok(block_on(store(db).append(aggregate_type, aggregate_id, expected_version, &list))?)
}

fn events_load(db: &DbBox, aggregate_type: &str, aggregate_id: &str, after_version: i64) -> R<String> {
    to_json(&block_on(store(db).load(aggregate_type, aggregate_id, after_version))?)
}

fn events_version(db: &DbBox, aggregate_type: &str, aggregate_id: &str) -> R<i64> {
    Ok(block_on(store(db).current_version(aggregate_type, aggregate_id))?)
}

fn events_by_user(db: &DbBox, user_id: i64, limit: i64) -> R<String> {
    to_json(&block_on(store(db).by_user(user_id, limit))?)
}

fn events_save_snapshot(db: &DbBox, aggregate_type: &str, aggregate_id: &str, version: i64, state_json: &str) -> R<()> {
    let state: serde_json::Value = serde_json::from_str(state_json)?;
    Ok(block_on(store(db).save_snapshot(aggregate_type, aggregate_id, version, &state))?)
}

fn events_load_from_snapshot(db: &DbBox, aggregate_type: &str, aggregate_id: &str) -> R<String> {
    to_json(&block_on(store(db).load_from_snapshot(aggregate_type, aggregate_id))?)
}

fn params(p: &str) -> Option<&str> {
    Some(p)
}

/// Configuration behind `rootstream::Config`.
pub struct ConfigBox(Config);

fn config_new() -> Box<ConfigBox> {
    Box::new(ConfigBox(Config::default()))
}

fn config_from_env() -> R<Box<ConfigBox>> {
    Ok(Box::new(ConfigBox(Config::from_env()?)))
}

impl ConfigBox {
    fn set(&mut self, key: &str, value: &str) -> R<()> {
        Ok(self.0.set(key, value)?)
    }
    fn load_file(&mut self, path: &str) -> R<()> {
        Ok(self.0.apply_file(std::path::Path::new(path))?)
    }
    fn debug_string(&self) -> String {
        format!("{:?}", self.0)
    }
}

/// The pool behind `rootstream::database::DatabaseManager`.
pub struct DbBox(DatabaseManager);

fn db_open(cfg: &ConfigBox) -> R<Box<DbBox>> {
    Ok(Box::new(DbBox(block_on(DatabaseManager::connect(&cfg.0))?)))
}

impl DbBox {
    fn migrate(&self) -> R<i32> {
        Ok(block_on(migrations::migrate(&self.0))?.current_version)
    }
    fn execute(&self, sql: &str, params_json: &str) -> R<u64> {
        Ok(block_on(self.0.execute_json(sql, params(params_json)))?)
    }
    fn query(&self, sql: &str, params_json: &str) -> R<String> {
        Ok(block_on(self.0.query_json(sql, params(params_json)))?.to_string())
    }
    fn begin(&self) -> R<Box<TxBox>> {
        Ok(Box::new(TxBox(block_on(self.0.begin())?)))
    }
    fn pool_stats_json(&self) -> String {
        serde_json::to_string(&self.0.stats()).unwrap_or_default()
    }
    fn health_json(&self) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.health_check())?)?)
    }
    fn close(&self) {
        self.0.close()
    }
}

/// The transaction behind `rootstream::database::Transaction`.
pub struct TxBox(Transaction);

impl TxBox {
    fn execute(&self, sql: &str, params_json: &str) -> R<u64> {
        Ok(block_on(self.0.execute_json(sql, params(params_json)))?)
    }
    fn query(&self, sql: &str, params_json: &str) -> R<String> {
        Ok(block_on(self.0.query_json(sql, params(params_json)))?.to_string())
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

/// The client behind `rootstream::cache::RedisClient`.
pub struct RedisBox(RedisClient);

impl Drop for RedisBox {
    fn drop(&mut self) {
        // Other objects may share the client; the C++ object's handlers still end with it.
        self.0.close_subscriptions();
    }
}

struct Observer(cxx::UniquePtr<bridge::MessageObserver>);
// SAFETY: the C++ observer is immutable after construction (const on_message) and documented
// to run on the library's dispatcher thread, where it is also destroyed.
unsafe impl Send for Observer {}
unsafe impl Sync for Observer {}

fn redis_open(cfg: &ConfigBox) -> R<Box<RedisBox>> {
    Ok(Box::new(RedisBox(block_on(RedisClient::connect(&cfg.0))?)))
}

fn ms(ttl_ms: u64) -> Option<Duration> {
    (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms))
}

impl RedisBox {
    fn ping_ms(&self) -> R<f64> {
        Ok(block_on(self.0.ping())?.as_secs_f64() * 1000.0)
    }
    fn set(&self, key: &str, value: &str, ttl_ms: u64) -> R<()> {
        Ok(block_on(self.0.set(key, value, ms(ttl_ms)))?)
    }
    fn get(&self, key: &str, found: &mut bool) -> R<String> {
        let v = block_on(self.0.get(key))?;
        *found = v.is_some();
        Ok(v.unwrap_or_default())
    }
    fn del(&self, key: &str) -> R<bool> {
        Ok(block_on(self.0.del(key))?)
    }
    fn exists(&self, key: &str) -> R<bool> {
        Ok(block_on(self.0.exists(key))?)
    }
    fn expire(&self, key: &str, ttl_ms: u64) -> R<bool> {
        let d = ms(ttl_ms).ok_or_else(|| Error::invalid("ttl_ms must be greater than 0"))?;
        Ok(block_on(self.0.expire(key, d))?)
    }
    fn ttl_ms(&self, key: &str) -> R<i64> {
        Ok(block_on(self.0.pttl_ms(key))?)
    }
    fn incr(&self, key: &str, by: i64) -> R<i64> {
        Ok(block_on(self.0.incr(key, by))?)
    }
    fn hset(&self, key: &str, field: &str, value: &str) -> R<bool> {
        Ok(block_on(self.0.hset(key, field, value))?)
    }
    fn hget(&self, key: &str, field: &str, found: &mut bool) -> R<String> {
        let v = block_on(self.0.hget(key, field))?;
        *found = v.is_some();
        Ok(v.unwrap_or_default())
    }
    fn hgetall_json(&self, key: &str) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.hgetall(key))?)?)
    }
    fn hdel(&self, key: &str, field: &str) -> R<bool> {
        Ok(block_on(self.0.hdel(key, field))?)
    }
    fn push(&self, key: &str, value: &str, left: bool) -> R<i64> {
        Ok(if left { block_on(self.0.lpush(key, value))? } else { block_on(self.0.rpush(key, value))? })
    }
    fn pop(&self, key: &str, left: bool, found: &mut bool) -> R<String> {
        let v = if left { block_on(self.0.lpop(key))? } else { block_on(self.0.rpop(key))? };
        *found = v.is_some();
        Ok(v.unwrap_or_default())
    }
    fn lrange_json(&self, key: &str, start: i64, stop: i64) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.lrange(key, start as isize, stop as isize))?)?)
    }
    fn publish(&self, channel: &str, message: &str) -> R<i64> {
        Ok(block_on(self.0.publish(channel, message))?)
    }
    fn subscribe(&self, pattern: &str, observer: cxx::UniquePtr<bridge::MessageObserver>) -> R<u64> {
        if observer.is_null() {
            return Err(Error::Null("observer").into());
        }
        let obs = Observer(observer);
        Ok(block_on(self.0.subscribe(pattern, move |m| {
            let obs = &obs;
            if let Some(o) = obs.0.as_ref() {
                o.on_message(&m.channel, &m.payload);
            }
        }))?)
    }
    fn unsubscribe(&self, id: u64) -> R<()> {
        Ok(block_on(self.0.unsubscribe(id))?)
    }
    fn exec_atomic(&self, commands_json: &str) -> R<String> {
        let cmds = crate::cache::client::parse_commands(commands_json)?;
        Ok(serde_json::to_string(&block_on(self.0.exec_atomic(&cmds))?)?)
    }
    fn command(&self, args_json: &str) -> R<String> {
        let args = crate::cache::client::parse_args(args_json)?;
        Ok(block_on(self.0.command(&args))?.to_string())
    }
    fn pubsub_stats_json(&self) -> String {
        serde_json::to_string(&self.0.pubsub_stats()).unwrap_or_default()
    }
}
