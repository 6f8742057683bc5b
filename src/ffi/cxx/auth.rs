//! Login sessions and MFA behind `rootstream::database::models::SessionModel` and
//! `rootstream::auth::MFAManager`.

use super::{nonempty, R};
use crate::auth::mfa::MfaManager;
use crate::models::session::{DeviceInfo, Session, SessionModel, SessionSettings, SessionStats};
use crate::runtime::block_on;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("rootstream-db/src/ffi/cxx/config.rs.h");
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        include!("rootstream-db/src/ffi/cxx/cache.rs.h");
        type ConfigBox = crate::ffi::cxx::config::ConfigBox;
        type DbBox = crate::ffi::cxx::db::DbBox;
        type RedisBox = crate::ffi::cxx::cache::RedisBox;
        include!("rootstream-db/src/ffi/cxx/sync.rs.h");
        type SyncLink = crate::ffi::cxx::sync::SyncLink;
    }

    /// Where a login comes from. Each optional text has a `has_` flag; without it the text
    /// is ignored.
    struct Device {
        fingerprint: String,
        ip_address: String,
        has_ip_address: bool,
        user_agent: String,
        has_user_agent: bool,
        geo_location: String,
        has_geo_location: bool,
    }

    /// A session as stored (never its token). Timestamps are RFC 3339 in UTC, empty when
    /// unset; each optional text counts only with its `has_` flag.
    struct SessionRecord {
        id: i64,
        user_id: i64,
        device_fingerprint: String,
        ip_address: String,
        has_ip_address: bool,
        user_agent: String,
        has_user_agent: bool,
        geo_location: String,
        has_geo_location: bool,
        remember_me: bool,
        mfa_required: bool,
        mfa_verified_at: String,
        created_at: String,
        expires_at: String,
        last_activity_at: String,
        idle_timeout_seconds: i32,
        is_active: bool,
        revoked_at: String,
        revoke_reason: String,
        has_revoke_reason: bool,
    }

    /// A session handed out by create or refresh: its token (empty when refresh kept the old
    /// one) and the session record.
    struct IssuedSession {
        token: String,
        session: SessionRecord,
    }

    /// What a cleanup did: sessions it ended now, ended sessions it deleted.
    struct SessionCleanupReport {
        ended: u64,
        deleted: u64,
    }

    /// Counters of the session layer.
    struct SessionCounters {
        cache_hits: u64,
        cache_misses: u64,
        cache_errors: u64,
    }

    /// What an authenticator app needs, from begin_enrollment.
    struct MfaEnrollment {
        secret_base32: String,
        otpauth_uri: String,
        qr_svg: String,
        qr_png: Vec<u8>,
    }

    /// A user's MFA state. Timestamps are RFC 3339 in UTC, empty when unset; key_id counts
    /// only with has_key_id.
    struct MfaStatus {
        enrolled: bool,
        enabled: bool,
        confirmed_at: String,
        backup_codes_remaining: i64,
        locked_until: String,
        key_id: String,
        has_key_id: bool,
    }

    extern "Rust" {
        type SessionsBox;
        fn sessions_new(cfg: &ConfigBox, db: &DbBox, redis: &RedisBox) -> Box<SessionsBox>;
        fn create(
            self: &SessionsBox,
            user_id: i64,
            device: &Device,
            remember_me: bool,
            mfa_required: bool,
        ) -> Result<IssuedSession>;
        fn validate(self: &SessionsBox, token: &str, fingerprint: &str, require_mfa: bool) -> Result<SessionRecord>;
        fn refresh(self: &SessionsBox, token: &str, fingerprint: &str, rotate: bool) -> Result<IssuedSession>;
        fn revoke(self: &SessionsBox, session_id: i64, reason: &str) -> Result<()>;
        fn revoke_token(self: &SessionsBox, token: &str) -> Result<()>;
        fn revoke_all(self: &SessionsBox, user_id: i64, keep_session_id: i64, reason: &str) -> Result<u64>;
        fn list(self: &SessionsBox, user_id: i64) -> Result<Vec<SessionRecord>>;
        fn cleanup(self: &SessionsBox) -> Result<SessionCleanupReport>;
        fn set_sync(self: &SessionsBox, link: &SyncLink);
        fn stats(self: &SessionsBox) -> SessionCounters;

        type MfaBox;
        fn mfa_new(cfg: &ConfigBox, db: &DbBox, redis: &RedisBox) -> Result<Box<MfaBox>>;
        fn mfa_new_without_redis(cfg: &ConfigBox, db: &DbBox) -> Result<Box<MfaBox>>;
        fn totp_code(secret_base32: &str, unix_time: u64) -> Result<String>;
        fn begin_enrollment(self: &MfaBox, user_id: i64, account_name: &str) -> Result<MfaEnrollment>;
        fn confirm_enrollment(self: &MfaBox, user_id: i64, code: &str, ip: &str) -> Result<Vec<String>>;
        fn verify(self: &MfaBox, user_id: i64, code: &str, ip: &str) -> Result<bool>;
        fn verify_backup_code(self: &MfaBox, user_id: i64, code: &str, ip: &str) -> Result<bool>;
        fn complete_login(
            self: &MfaBox,
            sessions: &SessionsBox,
            token: &str,
            fingerprint: &str,
            code: &str,
            ip: &str,
        ) -> Result<SessionRecord>;
        fn regenerate_backup_codes(self: &MfaBox, user_id: i64) -> Result<Vec<String>>;
        fn unenroll(self: &MfaBox, user_id: i64) -> Result<()>;
        fn admin_reset(self: &MfaBox, sessions: &SessionsBox, user_id: i64, reason: &str) -> Result<u64>;
        fn status(self: &MfaBox, user_id: i64) -> Result<MfaStatus>;
        fn rotate_keys(self: &MfaBox) -> Result<u64>;
    }
}

use super::cache::RedisBox;
use super::config::ConfigBox;
use super::db::DbBox;

/// Sessions behind `rootstream::database::models::SessionModel`.
pub struct SessionsBox(pub(crate) SessionModel);

// SAFETY: the id names the C++ declaration cxx generates for `SessionsBox` in auth.rs.h.
unsafe impl cxx::ExternType for SessionsBox {
    type Id = cxx::type_id!("rootstream::ffi::SessionsBox");
    type Kind = cxx::kind::Opaque;
}

fn sessions_new(cfg: &ConfigBox, db: &DbBox, redis: &RedisBox) -> Box<SessionsBox> {
    Box::new(SessionsBox(SessionModel::new(db.0.clone(), redis.0.clone(), SessionSettings::from_config(&cfg.0))))
}

impl SessionsBox {
    fn set_sync(&self, link: &super::sync::SyncLink) {
        self.0.set_sync(link.0.clone());
    }

    fn create(
        &self,
        user_id: i64,
        device: &bridge::Device,
        remember_me: bool,
        mfa_required: bool,
    ) -> R<bridge::IssuedSession> {
        let text = |v: &String, present: bool| present.then(|| v.clone());
        let device = DeviceInfo {
            fingerprint: device.fingerprint.clone(),
            ip_address: text(&device.ip_address, device.has_ip_address),
            user_agent: text(&device.user_agent, device.has_user_agent),
            geo_location: text(&device.geo_location, device.has_geo_location),
        };
        let c = block_on(self.0.create(user_id, &device, remember_me, mfa_required))?;
        Ok(bridge::IssuedSession { token: c.token.expose().to_string(), session: session_record(c.session) })
    }
    fn validate(&self, token: &str, fingerprint: &str, require_mfa: bool) -> R<bridge::SessionRecord> {
        Ok(session_record(block_on(self.0.validate(token, fingerprint, require_mfa))?))
    }
    fn refresh(&self, token: &str, fingerprint: &str, rotate: bool) -> R<bridge::IssuedSession> {
        let (t, s) = block_on(self.0.refresh(token, fingerprint, rotate))?;
        let token = t.as_ref().map(|t| t.expose().to_string()).unwrap_or_default();
        Ok(bridge::IssuedSession { token, session: session_record(s) })
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
    fn list(&self, user_id: i64) -> R<Vec<bridge::SessionRecord>> {
        Ok(block_on(self.0.list(user_id))?.into_iter().map(session_record).collect())
    }
    fn cleanup(&self) -> R<bridge::SessionCleanupReport> {
        let (ended, deleted) = block_on(self.0.cleanup())?;
        Ok(bridge::SessionCleanupReport { ended, deleted })
    }
    fn stats(&self) -> bridge::SessionCounters {
        let SessionStats { cache_hits, cache_misses, cache_errors } = self.0.stats();
        bridge::SessionCounters { cache_hits, cache_misses, cache_errors }
    }
}

/// A session as it crosses the bridge.
fn session_record(s: Session) -> bridge::SessionRecord {
    let (has_ip_address, has_user_agent, has_geo_location, has_revoke_reason) =
        (s.ip_address.is_some(), s.user_agent.is_some(), s.geo_location.is_some(), s.revoke_reason.is_some());
    bridge::SessionRecord {
        id: s.id,
        user_id: s.user_id,
        device_fingerprint: s.device_fingerprint,
        ip_address: s.ip_address.unwrap_or_default(),
        has_ip_address,
        user_agent: s.user_agent.unwrap_or_default(),
        has_user_agent,
        geo_location: s.geo_location.unwrap_or_default(),
        has_geo_location,
        remember_me: s.remember_me,
        mfa_required: s.mfa_required,
        mfa_verified_at: rfc3339(s.mfa_verified_at.as_ref()),
        created_at: rfc3339(Some(&s.created_at)),
        expires_at: rfc3339(Some(&s.expires_at)),
        last_activity_at: rfc3339(Some(&s.last_activity_at)),
        idle_timeout_seconds: s.idle_timeout_seconds,
        is_active: s.is_active,
        revoked_at: rfc3339(s.revoked_at.as_ref()),
        revoke_reason: s.revoke_reason.unwrap_or_default(),
        has_revoke_reason,
    }
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

/// A timestamp as it crosses the bridge: RFC 3339 in UTC, empty for none.
fn rfc3339(t: Option<&chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).unwrap_or_default()
}

impl MfaBox {
    fn begin_enrollment(&self, user_id: i64, account_name: &str) -> R<bridge::MfaEnrollment> {
        let e = block_on(self.0.begin_enrollment(user_id, account_name))?;
        Ok(bridge::MfaEnrollment {
            secret_base32: e.secret_base32,
            otpauth_uri: e.otpauth_uri,
            qr_svg: e.qr_svg,
            qr_png: e.qr_png,
        })
    }
    fn confirm_enrollment(&self, user_id: i64, code: &str, ip: &str) -> R<Vec<String>> {
        Ok(block_on(self.0.confirm_enrollment(user_id, code, nonempty(ip)))?)
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
    ) -> R<bridge::SessionRecord> {
        Ok(session_record(block_on(self.0.complete_login(&sessions.0, token, fingerprint, code, nonempty(ip)))?))
    }
    fn regenerate_backup_codes(&self, user_id: i64) -> R<Vec<String>> {
        Ok(block_on(self.0.regenerate_backup_codes(user_id))?)
    }
    fn unenroll(&self, user_id: i64) -> R<()> {
        Ok(block_on(self.0.unenroll(user_id))?)
    }
    fn admin_reset(&self, sessions: &SessionsBox, user_id: i64, reason: &str) -> R<u64> {
        Ok(block_on(self.0.admin_reset(&sessions.0, user_id, nonempty(reason)))?.sessions_revoked)
    }
    fn status(&self, user_id: i64) -> R<bridge::MfaStatus> {
        let st = block_on(self.0.status(user_id))?;
        Ok(bridge::MfaStatus {
            enrolled: st.enrolled,
            enabled: st.enabled,
            confirmed_at: rfc3339(st.confirmed_at.as_ref()),
            backup_codes_remaining: st.backup_codes_remaining,
            locked_until: rfc3339(st.locked_until.as_ref()),
            has_key_id: st.key_id.is_some(),
            key_id: st.key_id.unwrap_or_default(),
        })
    }
    fn rotate_keys(&self) -> R<u64> {
        Ok(block_on(self.0.rotate_keys())?)
    }
}
