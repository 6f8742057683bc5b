//! TOTP MFA against real PostgreSQL and Redis, checked with codes from an independent TOTP
//! implementation (oathtool).

mod support;

use rootstream_db::auth::mfa::MfaManager;
use rootstream_db::db::migrations;
use rootstream_db::models::session::{DeviceInfo, SessionModel, SessionSettings};
use rootstream_db::models::{NewUser, UserModel};
use rootstream_db::{Config, DatabaseManager, Error, RedisClient};
use std::time::Duration;
use support::*;

struct Env {
    cfg: Config,
    db: DatabaseManager,
    redis: RedisClient,
    mfa: MfaManager,
    user_id: i64,
}

async fn env_with(tune: impl FnOnce(&mut Config)) -> Env {
    let mut cfg = secure_config().await;
    tune(&mut cfg);
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    let redis = RedisClient::connect(&cfg).await.unwrap();
    let users = UserModel::new(db.clone());
    let u = users
        .create(NewUser {
            username: "ada",
            email: "ada@example.com",
            password: "correct horse battery",
            display_name: None,
        })
        .await
        .unwrap();
    let mfa = MfaManager::new(db.clone(), Some(redis.clone()), &cfg).unwrap();
    Env { cfg, db, redis, mfa, user_id: u.id }
}

/// Enrolls and confirms with the code of the previous step, so the current and next steps are
/// still unused; returns the base32 secret, the backup codes and the time used.
async fn enrolled(e: &Env) -> (String, Vec<String>, u64) {
    let t = fresh_totp_time();
    let en = e.mfa.begin_enrollment(e.user_id, "ada@example.com").await.unwrap();
    let codes = e
        .mfa
        .confirm_enrollment(e.user_id, &oathtool_code(&en.secret_base32, t - 30), Some("198.51.100.1"))
        .await
        .unwrap();
    (en.secret_base32, codes, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_gives_uri_qr_codes_and_is_confirmed_by_a_first_code() {
    let e = env_with(|_| {}).await;
    let en = e.mfa.begin_enrollment(e.user_id, "ada@example.com").await.unwrap();
    assert_eq!(en.secret_base32.len(), 32, "160-bit secret");
    assert!(en.otpauth_uri.starts_with("otpauth://totp/RootStream:ada%40example.com?secret="), "{}", en.otpauth_uri);
    assert!(en.otpauth_uri.contains("issuer=RootStream"));
    assert_eq!(&en.qr_png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(en.qr_svg.contains("<svg"));
    assert!(!e.mfa.status(e.user_id).await.unwrap().enabled, "not enabled before the first code");
    let t = fresh_totp_time();
    let wrong = e.mfa.confirm_enrollment(e.user_id, "000000", None).await;
    assert!(wrong.is_err() || oathtool_code(&en.secret_base32, t) == "000000");
    let codes = e.mfa.confirm_enrollment(e.user_id, &oathtool_code(&en.secret_base32, t), None).await.unwrap();
    assert_eq!(codes.len(), 10);
    let st = e.mfa.status(e.user_id).await.unwrap();
    assert!(st.enabled && st.confirmed_at.is_some());
    assert_eq!(st.backup_codes_remaining, 10);
    assert_eq!(st.key_id.as_deref(), Some("test-k1"));
    assert!(
        matches!(e.mfa.begin_enrollment(e.user_id, "x").await, Err(Error::State(_))),
        "re-enrolling needs unenroll"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_codes_are_accepted_once_within_one_step_of_skew() {
    let e = env_with(|_| {}).await;
    let (secret, _, t) = enrolled(&e).await;
    let now = oathtool_code(&secret, t);
    assert!(e.mfa.verify(e.user_id, &now, Some("198.51.100.1"), None).await.unwrap(), "current step accepted");
    assert!(!e.mfa.verify(e.user_id, &now, None, None).await.unwrap(), "the same code twice is a replay");
    let prev = oathtool_code(&secret, t - 30);
    assert!(!e.mfa.verify(e.user_id, &prev, None, None).await.unwrap(), "an older step after a newer one is refused");
    let next = oathtool_code(&secret, t + 30);
    assert!(e.mfa.verify(e.user_id, &next, None, None).await.unwrap(), "one step ahead (clock skew) accepted");
    let far = oathtool_code(&secret, t + 90);
    if ![now.as_str(), next.as_str()].contains(&far.as_str()) {
        assert!(!e.mfa.verify(e.user_id, &far, None, None).await.unwrap(), "three steps ahead is outside the window");
    }
    // Every attempt is in the log with its outcome and address.
    let rows = e
        .db
        .query("SELECT success, reason, ip_address FROM mfa_attempts WHERE user_id = $1 ORDER BY id", &[&e.user_id])
        .await
        .unwrap();
    let log: Vec<(bool, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(log[0], (true, "ok".to_string()), "the enrollment code");
    assert_eq!(log[1], (true, "ok".to_string()));
    assert_eq!(log[2], (false, "code already used".to_string()));
    assert_eq!(log[3], (false, "code already used".to_string()));
    assert_eq!(rows[1].get::<_, Option<String>>(2).as_deref(), Some("198.51.100.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_lock_the_user_out_until_the_window_passes() {
    let e = env_with(|c| {
        c.set("mfa_lockout_window_s", "3").unwrap();
    })
    .await;
    let (secret, _, t) = enrolled(&e).await;
    let right = oathtool_code(&secret, t);
    let wrong = if right == "123456" { "654321" } else { "123456" };
    for _ in 0..5 {
        assert!(!e.mfa.verify(e.user_id, wrong, Some("192.0.2.9"), None).await.unwrap());
    }
    let locked = e.mfa.verify(e.user_id, &right, None, None).await.unwrap_err();
    assert!(matches!(locked, Error::Locked(_)), "even the right code is refused while locked: {locked}");
    assert!(matches!(e.mfa.verify_backup_code(e.user_id, "AAAAA-AAAAA", None, None).await, Err(Error::Locked(_))));
    assert!(e.mfa.status(e.user_id).await.unwrap().locked_until.is_some());
    let refused: i64 =
        e.db.query("SELECT count(*) FROM mfa_attempts WHERE user_id = $1 AND reason = 'locked out'", &[&e.user_id])
            .await
            .unwrap()[0]
            .get(0);
    assert_eq!(refused, 2, "attempts refused by the lock are logged too");
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let t2 = fresh_totp_time();
    let code = oathtool_code(&secret, t2 + 30);
    assert!(e.mfa.verify(e.user_id, &code, None, None).await.unwrap(), "the lock lifts after the window");
    assert!(e.mfa.status(e.user_id).await.unwrap().locked_until.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_codes_work_once_and_regenerating_invalidates_the_old_set() {
    let e = env_with(|_| {}).await;
    let (_, codes, _) = enrolled(&e).await;
    assert!(e.mfa.verify_backup_code(e.user_id, &codes[0], None, None).await.unwrap());
    assert!(!e.mfa.verify_backup_code(e.user_id, &codes[0], None, None).await.unwrap(), "single use");
    assert!(
        e.mfa.verify_backup_code(e.user_id, &codes[1].to_lowercase().replace('-', " "), None, None).await.unwrap(),
        "case and separators do not matter"
    );
    assert_eq!(e.mfa.status(e.user_id).await.unwrap().backup_codes_remaining, 8);
    let fresh = e.mfa.regenerate_backup_codes(e.user_id).await.unwrap();
    assert!(!e.mfa.verify_backup_code(e.user_id, &codes[2], None, None).await.unwrap(), "the old set is gone");
    assert!(e.mfa.verify_backup_code(e.user_id, &fresh[0], None, None).await.unwrap());
    let stored: Vec<String> =
        e.db.query("SELECT code_hash FROM mfa_backup_codes", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for c in &fresh {
        assert!(!stored.iter().any(|h| h.contains(&c.replace('-', ""))), "codes are stored hashed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_encrypted_at_rest_and_a_wrong_key_is_a_clear_error() {
    let e = env_with(|_| {}).await;
    let (secret, _, t) = enrolled(&e).await;
    let row =
        e.db.query("SELECT secret_encrypted, key_id FROM user_mfa WHERE user_id = $1", &[&e.user_id]).await.unwrap();
    let sealed: Vec<u8> = row[0].get(0);
    let raw = rootstream_db::auth::totp::base32_decode(&secret).unwrap();
    assert!(!sealed.windows(raw.len()).any(|w| w == raw.as_slice()), "no raw secret in the row");
    assert!(!String::from_utf8_lossy(&sealed).contains(&secret[..16]), "no base32 secret in the row");
    let dump: String = e.db.query("SELECT row_to_json(m)::text FROM user_mfa m", &[]).await.unwrap()[0].get(0);
    assert!(!dump.contains(&secret));

    let mut other = e.cfg.clone();
    other.set("master_key", &"11".repeat(32)).unwrap();
    let wrong = MfaManager::new(e.db.clone(), None, &other).unwrap();
    let err = wrong.verify(e.user_id, &oathtool_code(&secret, t), None, None).await.unwrap_err();
    assert!(matches!(err, Error::Config(ref m) if m.contains("test-k1")), "{err}");
    assert!(!err.to_string().contains(&secret), "errors never carry the secret");

    // Rotation: a new current key, the old one kept for reading; afterwards the old one can go.
    let mut rotated = e.cfg.clone();
    rotated.set("master_key", &"22".repeat(32)).unwrap();
    rotated.set("master_key_id", "test-k2").unwrap();
    rotated.set("master_keys_old", &format!("test-k1:{}", e.cfg.master_key.clone().unwrap())).unwrap();
    let m2 = MfaManager::new(e.db.clone(), None, &rotated).unwrap();
    assert_eq!(m2.rotate_keys().await.unwrap(), 1);
    assert_eq!(m2.status(e.user_id).await.unwrap().key_id.as_deref(), Some("test-k2"));
    let mut only_new = rotated.clone();
    only_new.set("master_keys_old", "").unwrap();
    let m3 = MfaManager::new(e.db.clone(), None, &only_new).unwrap();
    assert!(m3.verify(e.user_id, &oathtool_code(&secret, t), None, None).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_session_then_second_factor_then_access() {
    let e = env_with(|_| {}).await;
    let (secret, codes, t) = enrolled(&e).await;
    let users = UserModel::new(e.db.clone());
    let sessions = SessionModel::new(e.db.clone(), e.redis.clone(), SessionSettings::from_config(&e.cfg));
    let device =
        DeviceInfo { fingerprint: "fp-1".into(), ip_address: Some("203.0.113.5".into()), ..Default::default() };

    let user = users.authenticate("ada", "correct horse battery").await.unwrap();
    let needs_mfa = e.mfa.status(user.id).await.unwrap().enabled;
    let login = sessions.create(user.id, &device, false, needs_mfa).await.unwrap();
    let token = login.token.expose().to_string();
    let pending = sessions.validate(&token, "fp-1", true).await.unwrap_err();
    assert!(matches!(pending, Error::MfaRequired(_)), "{pending}");
    assert!(sessions.validate(&token, "fp-1", false).await.is_ok(), "the session itself exists");
    let bad = e.mfa.complete_login(&sessions, &token, "fp-1", "999999", Some("203.0.113.5")).await;
    assert!(bad.is_err() || oathtool_code(&secret, t) == "999999");
    let s =
        e.mfa.complete_login(&sessions, &token, "fp-1", &oathtool_code(&secret, t), Some("203.0.113.5")).await.unwrap();
    assert!(s.mfa_verified_at.is_some());
    assert!(sessions.validate(&token, "fp-1", true).await.unwrap().mfa_satisfied());

    // A second login recovers with a backup code instead (lost phone).
    let second = sessions.create(user.id, &device, false, true).await.unwrap();
    e.mfa.complete_login(&sessions, second.token.expose(), "fp-1", &codes[3], None).await.unwrap();
    assert!(sessions.validate(second.token.expose(), "fp-1", true).await.is_ok());
    let attempts: i64 =
        e.db.query("SELECT count(*) FROM mfa_attempts WHERE user_id = $1 AND session_id IS NOT NULL", &[&user.id])
            .await
            .unwrap()[0]
            .get(0);
    assert!(attempts >= 2, "login attempts are logged with their session");

    // Unenrolling turns the second factor off.
    e.mfa.unenroll(user.id).await.unwrap();
    assert!(!e.mfa.status(user.id).await.unwrap().enrolled);
    assert!(matches!(e.mfa.verify(user.id, "123456", None, None).await, Err(Error::State(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_reset_removes_mfa_and_revokes_every_session_of_the_user() {
    let e = env_with(|_| {}).await;
    enrolled(&e).await;
    let sessions = SessionModel::new(e.db.clone(), e.redis.clone(), SessionSettings::from_config(&e.cfg));
    let device = DeviceInfo { fingerprint: "fp-1".into(), ..Default::default() };
    let full = sessions.create(e.user_id, &device, false, false).await.unwrap();
    let half = sessions.create(e.user_id, &device, false, true).await.unwrap();
    let done = e.mfa.admin_reset(&sessions, e.user_id, None).await.unwrap();
    assert_eq!((done.user_id, done.sessions_revoked), (e.user_id, 2));
    assert!(!e.mfa.status(e.user_id).await.unwrap().enrolled);
    for c in [&full, &half] {
        assert!(matches!(sessions.validate(c.token.expose(), "fp-1", false).await, Err(Error::Auth(_))));
        let s = sessions.get(c.session.id).await.unwrap();
        assert_eq!(s.revoke_reason.as_deref(), Some(rootstream_db::auth::mfa::RESET_REVOKE_REASON));
    }
    // Nothing left to reset: NotFound, and a session created since is not touched.
    let later = sessions.create(e.user_id, &device, false, false).await.unwrap();
    assert!(matches!(e.mfa.admin_reset(&sessions, e.user_id, Some("again")).await, Err(Error::NotFound(_))));
    assert!(sessions.validate(later.token.expose(), "fp-1", false).await.is_ok());
    // A given reason is recorded.
    enrolled(&e).await;
    assert_eq!(e.mfa.admin_reset(&sessions, e.user_id, Some("phone stolen")).await.unwrap().sessions_revoked, 1);
    assert_eq!(sessions.get(later.session.id).await.unwrap().revoke_reason.as_deref(), Some("phone stolen"));
}
