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

impl Env {
    async fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        self.db.query(sql, params).await.unwrap()[0].get(0)
    }

    /// (method, success, reason, ip address, session id) of every attempt of the user, in order.
    async fn attempts(&self, user_id: i64) -> Vec<(String, bool, String, Option<String>, Option<i64>)> {
        self.db
            .query(
                "SELECT method, success, reason, ip_address, session_id FROM mfa_attempts WHERE user_id = $1 ORDER BY id",
                &[&user_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    }

    async fn text(&self, sql: &str) -> String {
        self.db.query(sql, &[]).await.unwrap()[0].get::<_, Option<String>>(0).unwrap_or_default()
    }
}

/// Six digits that are none of the codes from one step before to one step after `t`.
fn wrong_code(secret: &str, t: u64) -> String {
    let window: Vec<String> = [t - 30, t, t + 30].iter().map(|&at| oathtool_code(secret, at)).collect();
    (0..).map(|i: u32| format!("{:06}", (123456 + i * 7919) % 1_000_000)).find(|c| !window.contains(c)).unwrap()
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
    let first = e.mfa.begin_enrollment(e.user_id, "ada@example.com").await.unwrap();
    let st = e.mfa.status(e.user_id).await.unwrap();
    assert!(st.enrolled && !st.enabled, "not enabled before the first code");
    assert!(st.confirmed_at.is_none());
    assert_eq!(st.key_id.as_deref(), Some("test-k1"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(
        matches!(
            e.mfa.verify(e.user_id, &oathtool_code(&first.secret_base32, now), None, None).await,
            Err(Error::State(_))
        ),
        "codes are not checked before enrollment is confirmed"
    );
    // Beginning again replaces the secret.
    let en = e.mfa.begin_enrollment(e.user_id, "ada@example.com").await.unwrap();
    assert_ne!(en.secret_base32, first.secret_base32);
    assert!(matches!(e.mfa.begin_enrollment(e.user_id + 1000, "ghost").await, Err(Error::NotFound(_))));
    assert_eq!(en.secret_base32.len(), 32, "160-bit secret");
    assert_eq!(rootstream_db::auth::totp::base32_decode(&en.secret_base32).unwrap().len(), 20);
    assert!(en.otpauth_uri.starts_with("otpauth://totp/RootStream:ada%40example.com?secret="), "{}", en.otpauth_uri);
    assert!(en.otpauth_uri.contains(&format!("secret={}", en.secret_base32)));
    assert!(en.otpauth_uri.contains("issuer=RootStream"));
    assert_eq!(&en.qr_png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(en.qr_svg.contains("<svg") && en.qr_svg.contains("</svg>"));
    assert!(!e.mfa.status(e.user_id).await.unwrap().enabled, "not enabled before the first code");
    let t = fresh_totp_time();
    let wrong = e.mfa.confirm_enrollment(e.user_id, &wrong_code(&en.secret_base32, t), None).await;
    assert!(matches!(wrong, Err(Error::Auth(_))), "{wrong:?}");
    assert!(!e.mfa.status(e.user_id).await.unwrap().enabled, "a wrong code does not enable MFA");
    let codes = e.mfa.confirm_enrollment(e.user_id, &oathtool_code(&en.secret_base32, t), None).await.unwrap();
    assert_eq!(codes.len(), 10);
    for c in &codes {
        assert!(c.len() == 11 && c.as_bytes()[5] == b'-', "XXXXX-XXXXX: {c}");
    }
    assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), 10, "distinct");
    let st = e.mfa.status(e.user_id).await.unwrap();
    assert!(st.enrolled && st.enabled && st.confirmed_at.is_some());
    assert_eq!(st.backup_codes_remaining, 10);
    assert!(st.locked_until.is_none());
    assert_eq!(st.key_id.as_deref(), Some("test-k1"));
    assert!(
        matches!(
            e.mfa.confirm_enrollment(e.user_id, &oathtool_code(&en.secret_base32, t + 30), None).await,
            Err(Error::State(_))
        ),
        "confirmed once"
    );
    assert!(
        matches!(e.mfa.begin_enrollment(e.user_id, "x").await, Err(Error::State(_))),
        "re-enrolling needs unenroll"
    );
    let enrolled_events = e
        .count(
            "SELECT count(*) FROM event_log WHERE aggregate_type = 'mfa' AND aggregate_id = $1 AND event_type = 'mfa.enrolled'",
            &[&e.user_id.to_string()],
        )
        .await;
    assert_eq!(enrolled_events, 1);
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
    // Every attempt is in the log with its outcome and address.
    let rows = e
        .db
        .query("SELECT success, reason, ip_address FROM mfa_attempts WHERE user_id = $1 ORDER BY id", &[&e.user_id])
        .await
        .unwrap();
    let log: Vec<(bool, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(log.len(), 5);
    assert_eq!(log[0], (true, "ok".to_string()), "the enrollment code");
    assert_eq!(e.attempts(e.user_id).await[0].0, "enroll");
    assert_eq!(log[1], (true, "ok".to_string()));
    assert_eq!(log[2], (false, "code already used".to_string()));
    assert_eq!(log[3], (false, "code already used".to_string()));
    assert!(log[4].0, "one step ahead");
    assert_eq!(rows[1].get::<_, Option<String>>(2).as_deref(), Some("198.51.100.1"));
    // Three steps away, on either side, is outside the window: "wrong code", not "already used".
    let window: Vec<String> = [t - 30, t, t + 30].iter().map(|&at| oathtool_code(&secret, at)).collect();
    for far in [oathtool_code(&secret, t + 90), oathtool_code(&secret, t - 90)] {
        if !window.contains(&far) {
            assert!(
                !e.mfa.verify(e.user_id, &far, None, None).await.unwrap(),
                "three steps away is outside the window"
            );
            assert_eq!(e.attempts(e.user_id).await.last().unwrap().2, "wrong code");
        }
    }
    assert!(!e.mfa.verify(e.user_id, &wrong_code(&secret, t), None, None).await.unwrap());
    assert!(!e.mfa.verify(e.user_id, "12345", None, None).await.unwrap(), "too short");
    assert!(!e.mfa.verify(e.user_id, "abcdef", None, None).await.unwrap(), "not digits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_logged_with_its_method_outcome_reason_and_address() {
    let e = env_with(|_| {}).await;
    let (secret, codes, t) = enrolled(&e).await;
    assert!(e.mfa.verify(e.user_id, &oathtool_code(&secret, t), Some("203.0.113.10"), None).await.unwrap());
    assert!(!e.mfa.verify(e.user_id, &wrong_code(&secret, t), Some("203.0.113.11"), None).await.unwrap());
    assert!(!e.mfa.verify(e.user_id, &oathtool_code(&secret, t), None, None).await.unwrap());
    assert!(e.mfa.verify_backup_code(e.user_id, &codes[0], Some("203.0.113.12"), None).await.unwrap());
    assert!(!e.mfa.verify_backup_code(e.user_id, "ZZZZZ-ZZZZZ", Some("203.0.113.13"), None).await.unwrap());
    let row = |m: &str, ok: bool, reason: &str, ip: Option<&str>| {
        (m.to_string(), ok, reason.to_string(), ip.map(str::to_string), None::<i64>)
    };
    assert_eq!(
        e.attempts(e.user_id).await,
        [
            row("enroll", true, "ok", Some("198.51.100.1")),
            row("totp", true, "ok", Some("203.0.113.10")),
            row("totp", false, "wrong code", Some("203.0.113.11")),
            row("totp", false, "code already used", None),
            row("backup_code", true, "ok", Some("203.0.113.12")),
            row("backup_code", false, "wrong or used backup code", Some("203.0.113.13")),
        ]
    );
    let dump = e.text("SELECT string_agg(row_to_json(a)::text, ',') FROM mfa_attempts a").await;
    assert!(!dump.contains(&codes[0]), "codes are not logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_lock_the_user_out_until_the_window_passes() {
    let e = env_with(|c| {
        c.set("mfa_lockout_window_s", "3").unwrap();
    })
    .await;
    let (secret, backup, t) = enrolled(&e).await;
    let right = oathtool_code(&secret, t);
    let wrong = wrong_code(&secret, t);
    for _ in 0..5 {
        assert!(!e.mfa.verify(e.user_id, &wrong, Some("192.0.2.9"), None).await.unwrap());
    }
    let wrong_logged = e
        .count(
            "SELECT count(*) FROM mfa_attempts WHERE user_id = $1 AND NOT success AND ip_address = '192.0.2.9'
             AND reason = 'wrong code'",
            &[&e.user_id],
        )
        .await;
    assert_eq!(wrong_logged, 5, "the five failures are logged with their address");
    let locked = e.mfa.verify(e.user_id, &right, Some("192.0.2.9"), None).await.unwrap_err();
    assert!(
        matches!(locked, Error::Locked(ref m) if m.contains("try again")),
        "even the right code is refused while locked: {locked}"
    );
    assert!(matches!(e.mfa.verify_backup_code(e.user_id, &backup[0], None, None).await, Err(Error::Locked(_))));
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
    assert!(e.mfa.status(e.user_id).await.unwrap().locked_until.is_none());
    assert!(e.mfa.verify(e.user_id, &code, None, None).await.unwrap(), "the lock lifts after the window");
    assert!(e.mfa.status(e.user_id).await.unwrap().locked_until.is_none());
    assert!(
        e.mfa.verify_backup_code(e.user_id, &backup[0], None, None).await.unwrap(),
        "the backup code refused by the lock was not spent"
    );
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
    let bare = format!(" {} ", codes[2].replace('-', ""));
    assert!(e.mfa.verify_backup_code(e.user_id, &bare, None, None).await.unwrap(), "no separator: {bare}");
    assert!(
        !e.mfa.verify_backup_code(e.user_id, &codes[2], None, None).await.unwrap(),
        "the same code, written differently, is still used up"
    );
    assert_eq!(e.mfa.status(e.user_id).await.unwrap().backup_codes_remaining, 7);
    let fresh = e.mfa.regenerate_backup_codes(e.user_id).await.unwrap();
    assert_eq!(fresh.len(), 10);
    assert_eq!(e.mfa.status(e.user_id).await.unwrap().backup_codes_remaining, 10);
    assert!(fresh.iter().all(|c| !codes.contains(c)), "a new set");
    assert!(!e.mfa.verify_backup_code(e.user_id, &codes[3], None, None).await.unwrap(), "the old set is gone");
    assert!(e.mfa.verify_backup_code(e.user_id, &fresh[0], None, None).await.unwrap());
    assert_eq!(e.mfa.status(e.user_id).await.unwrap().backup_codes_remaining, 9);
    let stored: Vec<String> =
        e.db.query("SELECT code_hash FROM mfa_backup_codes", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for c in &fresh {
        assert!(!stored.iter().any(|h| h.contains(&c.replace('-', ""))), "codes are stored hashed");
    }
    // As keyed hashes only: no column holds a code, with or without separator, or its plain SHA-256.
    let dump = e.text("SELECT string_agg(row_to_json(b)::text, ',') FROM mfa_backup_codes b").await;
    for c in &fresh {
        let bare = c.replace('-', "");
        use sha2::Digest;
        let plain_sha = hex::encode(sha2::Sha256::digest(bare.as_bytes()));
        assert!(!dump.contains(c.as_str()) && !dump.contains(&bare) && !dump.contains(&plain_sha), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_encrypted_at_rest_and_a_wrong_key_is_a_clear_error() {
    let e = env_with(|_| {}).await;
    let (secret, _, t) = enrolled(&e).await;
    let row =
        e.db.query("SELECT secret_encrypted, key_id FROM user_mfa WHERE user_id = $1", &[&e.user_id]).await.unwrap();
    let sealed: Vec<u8> = row[0].get(0);
    assert_eq!(row[0].get::<_, Option<String>>(1).as_deref(), Some("test-k1"));
    let raw = rootstream_db::auth::totp::base32_decode(&secret).unwrap();
    assert_eq!(raw.len(), 20);
    assert!(sealed.len() > raw.len());
    let holds = |needle: &[u8]| sealed.windows(needle.len()).any(|w| w == needle);
    assert!(!holds(&raw), "no raw secret in the row");
    assert!(!holds(secret.as_bytes()) && !holds(&secret.as_bytes()[..8]), "not even a part of the base32 text");
    assert!(!String::from_utf8_lossy(&sealed).contains(&secret[..16]), "no base32 secret in the row");
    let dump: String = e.db.query("SELECT row_to_json(m)::text FROM user_mfa m", &[]).await.unwrap()[0].get(0);
    assert!(!dump.contains(&secret));
    let master_key = e.cfg.master_key.clone().unwrap();
    for sql in [
        "SELECT row_to_json(m)::text FROM user_mfa m",
        "SELECT string_agg(row_to_json(v)::text, ',') FROM event_log v",
        "SELECT string_agg(row_to_json(a)::text, ',') FROM mfa_attempts a",
    ] {
        let dump = e.text(sql).await;
        assert!(!dump.contains(&secret) && !dump.contains(&hex_string(&raw)) && !dump.contains(&master_key), "{sql}");
    }

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
    let row =
        e.db.query("SELECT secret_encrypted, key_id FROM user_mfa WHERE user_id = $1", &[&e.user_id]).await.unwrap();
    assert_ne!(row[0].get::<_, Vec<u8>>(0), sealed, "re-encrypted");
    assert_eq!(row[0].get::<_, Option<String>>(1).as_deref(), Some("test-k2"));
    assert_eq!(m2.rotate_keys().await.unwrap(), 0, "nothing left under an old key");
    // The manager with only the old key can no longer open it, and says which key it lacks.
    let err = e.mfa.verify(e.user_id, &oathtool_code(&secret, t + 30), None, None).await.unwrap_err();
    assert!(matches!(err, Error::Config(ref m) if m.contains("test-k2")), "{err}");
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
    assert!(login.session.mfa_required && login.session.mfa_verified_at.is_none());
    let token = login.token.expose().to_string();
    let pending = sessions.validate(&token, "fp-1", true).await.unwrap_err();
    assert!(matches!(pending, Error::MfaRequired(_)), "{pending}");
    assert_eq!(
        sessions.validate(&token, "fp-1", false).await.unwrap().id,
        login.session.id,
        "the session itself exists"
    );
    let bad = e.mfa.complete_login(&sessions, &token, "fp-1", &wrong_code(&secret, t), Some("203.0.113.5")).await;
    assert!(matches!(bad, Err(Error::Auth(_))), "{bad:?}");
    assert!(
        matches!(sessions.validate(&token, "fp-1", true).await, Err(Error::MfaRequired(_))),
        "a wrong code does not pass"
    );
    let s =
        e.mfa.complete_login(&sessions, &token, "fp-1", &oathtool_code(&secret, t), Some("203.0.113.5")).await.unwrap();
    assert_eq!(s.id, login.session.id);
    assert!(s.mfa_verified_at.is_some());
    assert!(sessions.validate(&token, "fp-1", true).await.unwrap().mfa_satisfied());
    assert!(sessions.get(login.session.id).await.unwrap().mfa_verified_at.is_some(), "stored");

    // A second login recovers with a backup code instead (lost phone).
    let second = sessions.create(user.id, &device, false, true).await.unwrap();
    assert!(matches!(sessions.validate(second.token.expose(), "fp-1", true).await, Err(Error::MfaRequired(_))));
    e.mfa.complete_login(&sessions, second.token.expose(), "fp-1", &codes[3], None).await.unwrap();
    assert!(sessions.validate(second.token.expose(), "fp-1", true).await.is_ok());
    assert_eq!(e.mfa.status(user.id).await.unwrap().backup_codes_remaining, 9);
    // The backup code is spent: a third login cannot use it.
    let third = sessions.create(user.id, &device, false, true).await.unwrap();
    let spent = e.mfa.complete_login(&sessions, third.token.expose(), "fp-1", &codes[3], None).await;
    assert!(matches!(spent, Err(Error::Auth(_))), "{spent:?}");
    assert!(matches!(sessions.validate(third.token.expose(), "fp-1", true).await, Err(Error::MfaRequired(_))));
    // complete_login checks the device too, before it spends a code.
    let elsewhere = e.mfa.complete_login(&sessions, third.token.expose(), "fp-elsewhere", &codes[4], None).await;
    assert!(matches!(elsewhere, Err(Error::Auth(_))), "{elsewhere:?}");
    assert_eq!(e.mfa.status(user.id).await.unwrap().backup_codes_remaining, 9, "no code spent on a hijacked session");
    let of_session = |id: i64, extra: &'static str| {
        let sql = format!("SELECT count(*) FROM mfa_attempts WHERE session_id = $1{extra}");
        let db = e.db.clone();
        async move { db.query(&sql, &[&id]).await.unwrap()[0].get::<_, i64>(0) }
    };
    assert_eq!(of_session(login.session.id, "").await, 2);
    assert_eq!(
        of_session(login.session.id, " AND success AND ip_address = '203.0.113.5' AND method = 'totp'").await,
        1
    );
    assert_eq!(of_session(second.session.id, " AND success AND method = 'backup_code'").await, 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unenrolling_removes_the_secret_and_the_backup_codes_but_leaves_the_sessions() {
    let e = env_with(|_| {}).await;
    let (secret, codes, t) = enrolled(&e).await;
    let sessions = SessionModel::new(e.db.clone(), e.redis.clone(), SessionSettings::from_config(&e.cfg));
    let device = DeviceInfo { fingerprint: "fp-1".into(), ..Default::default() };
    let c = sessions.create(e.user_id, &device, false, false).await.unwrap();
    e.mfa.unenroll(e.user_id).await.unwrap();
    let st = e.mfa.status(e.user_id).await.unwrap();
    assert!(!st.enrolled && !st.enabled);
    assert_eq!(st.backup_codes_remaining, 0);
    assert!(st.key_id.is_none());
    assert_eq!(e.count("SELECT count(*) FROM user_mfa", &[]).await, 0);
    assert_eq!(e.count("SELECT count(*) FROM mfa_backup_codes", &[]).await, 0);
    assert!(matches!(e.mfa.verify(e.user_id, &oathtool_code(&secret, t), None, None).await, Err(Error::State(_))));
    assert!(
        !e.mfa.verify_backup_code(e.user_id, &codes[0], None, None).await.unwrap(),
        "the backup codes went with it"
    );
    assert!(matches!(e.mfa.unenroll(e.user_id).await, Err(Error::NotFound(_))));
    assert!(sessions.validate(c.token.expose(), "fp-1", false).await.is_ok(), "the sessions stay");
    // Enrolling again starts from a new secret.
    assert_ne!(e.mfa.begin_enrollment(e.user_id, "ada@example.com").await.unwrap().secret_base32, secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_codes_agree_with_oathtool() {
    let e = env_with(|_| {}).await;
    let secret = e.mfa.begin_enrollment(e.user_id, "ada@example.com").await.unwrap().secret_base32;
    for t in [59u64, 1111111109, 1700000000, 2000000000] {
        assert_eq!(rootstream_db::auth::totp::code_for_base32(&secret, t).unwrap(), oathtool_code(&secret, t), "t={t}");
    }
    assert!(matches!(rootstream_db::auth::totp::code_for_base32("not base32!", 59), Err(Error::InvalidArgument(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_account_name_stores_no_secret() {
    // Authenticator URIs cannot carry a ':' in the account name. A refused enrollment must not
    // leave a secret behind that nobody was shown.
    let e = env_with(|_| {}).await;
    for name in ["player:one", ""] {
        let err = e.mfa.begin_enrollment(e.user_id, name).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{name:?}: {err}");
        assert_eq!(e.count("SELECT count(*) FROM user_mfa", &[]).await, 0);
    }
    assert!(!e.mfa.status(e.user_id).await.unwrap().enrolled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_account_name_is_percent_encoded_in_the_uri() {
    let e = env_with(|_| {}).await;
    let en = e.mfa.begin_enrollment(e.user_id, "'; DROP TABLE sessions; --").await.unwrap();
    assert!(!en.otpauth_uri.contains(' ') && !en.otpauth_uri.contains('"'), "{}", en.otpauth_uri);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_codes_and_account_names_fail_cleanly() {
    let e = env_with(|_| {}).await;
    let (secret, _, t) = enrolled(&e).await;
    let mib = "A".repeat(1 << 20);
    assert!(matches!(e.mfa.begin_enrollment(e.user_id + 1, &mib).await, Err(Error::InvalidArgument(_))));
    for r in
        [e.mfa.verify(e.user_id, &mib, None, None).await, e.mfa.verify_backup_code(e.user_id, &mib, None, None).await]
    {
        assert!(matches!(r, Ok(false) | Err(Error::InvalidArgument(_))), "a 1 MiB code is never right: {r:?}");
    }
    let sessions = SessionModel::new(e.db.clone(), e.redis.clone(), SessionSettings::from_config(&e.cfg));
    let device = DeviceInfo { fingerprint: "fp-mfa".into(), ..Default::default() };
    let pending = sessions.create(e.user_id, &device, false, true).await.unwrap();
    for r in [
        e.mfa.complete_login(&sessions, pending.token.expose(), "fp-mfa", &mib, None).await,
        e.mfa.complete_login(&sessions, &mib, "fp-mfa", "123456", None).await,
    ] {
        assert!(matches!(r, Err(Error::Auth(_) | Error::InvalidArgument(_))), "{r:?}");
    }
    // Still healthy: the real code and the pending session work.
    assert!(e.mfa.verify(e.user_id, &oathtool_code(&secret, t), None, None).await.unwrap());
    assert!(sessions.validate(pending.token.expose(), "fp-mfa", false).await.is_ok());
}

/// The value of the sample whose line starts with `series` (name and labels) in Prometheus text.
fn sample_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_mfa_failures_move_the_library_counters_in_the_prometheus_export() {
    use rootstream_db::metrics::{LibraryMetrics, MetricsReporter};
    let e = env_with(|_| {}).await;
    let rep = MetricsReporter::new(None);
    let text = || rep.prometheus_text(&LibraryMetrics::default()).unwrap();
    let before = text();
    let sessions = SessionModel::new(e.db.clone(), e.redis.clone(), SessionSettings::from_config(&e.cfg));
    let device = DeviceInfo { fingerprint: "fp-counters".into(), ..Default::default() };
    let login = sessions.create(e.user_id, &device, false, false).await.unwrap();
    sessions.validate(login.token.expose(), "fp-counters", false).await.unwrap();
    sessions.revoke(login.session.id, None).await.unwrap();
    let (secret, _, t) = enrolled(&e).await;
    assert!(!e.mfa.verify(e.user_id, &wrong_code(&secret, t), None, None).await.unwrap());
    let after = text();
    // Counters are process-wide and other tests run beside this one: at least our own events.
    for (series, least) in [
        ("rootstream_sessions_total{event=\"created\"}", 1.0),
        ("rootstream_sessions_total{event=\"validated\"}", 1.0),
        ("rootstream_sessions_total{event=\"revoked\"}", 1.0),
        ("rootstream_mfa_failures_total", 1.0),
    ] {
        assert!(sample_of(&after, series) - sample_of(&before, series) >= least, "{series}:\n{before}\n{after}");
    }
    for series in ["rootstream_backups_total{outcome=\"taken\"}", "rootstream_cache_gets_total{result=\"hit\"}"] {
        sample_of(&after, series);
    }
    // The text with the new families still passes promtool.
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian prometheus; scripts/install-deps.sh installs it)");
    child.stdin.take().unwrap().write_all(after.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{after}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
