//! The `rsdb` operator CLI against real servers: exit codes and the admin commands.

mod support;

use rootstream_db::auth::mfa::MfaManager;
use rootstream_db::db::migrations;
use rootstream_db::models::session::{DeviceInfo, SessionModel, SessionSettings};
use rootstream_db::{Config, DatabaseManager, RedisClient};
use std::process::Output;
use support::*;

fn rsdb(cfg: &Config, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rsdb"));
    cmd.args(args);
    for k in ["ROOTSTREAM_DATABASE_URL", "ROOTSTREAM_REDIS_URL", "ROOTSTREAM_MASTER_KEY", "ROOTSTREAM_MASTER_KEY_ID"] {
        cmd.env_remove(k);
    }
    if let Some(u) = &cfg.database_url {
        cmd.env("ROOTSTREAM_DATABASE_URL", u);
    }
    if let Some(u) = &cfg.redis_url {
        cmd.env("ROOTSTREAM_REDIS_URL", u);
    }
    if let Some(k) = &cfg.master_key {
        cmd.env("ROOTSTREAM_MASTER_KEY", k);
    }
    if let Some(k) = &cfg.master_key_id {
        cmd.env("ROOTSTREAM_MASTER_KEY_ID", k);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_health_and_the_mfa_reset_of_a_lost_device() {
    let cfg = secure_config().await;
    let out = rsdb(&cfg, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("applied 001, 002, 003"), "{}", text(&out));
    let out = rsdb(&cfg, &["health"]);
    assert!(
        out.status.success() && text(&out).contains("postgres: ok") && text(&out).contains("redis: ok"),
        "{}",
        text(&out)
    );

    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    let redis = RedisClient::connect(&cfg).await.unwrap();
    let uid: i64 = db
        .query("INSERT INTO users (username, email, password_hash) VALUES ('op', 'op@x.io', 'x') RETURNING id", &[])
        .await
        .unwrap()[0]
        .get(0);
    let mfa = MfaManager::new(db.clone(), None, &cfg).unwrap();
    let en = mfa.begin_enrollment(uid, "op").await.unwrap();
    let t = fresh_totp_time();
    mfa.confirm_enrollment(uid, &oathtool_code(&en.secret_base32, t), None).await.unwrap();
    let sessions = SessionModel::new(db.clone(), redis, SessionSettings::from_config(&cfg));
    let s = sessions
        .create(uid, &DeviceInfo { fingerprint: "fp".into(), ..Default::default() }, false, true)
        .await
        .unwrap();

    let out = rsdb(&cfg, &["mfa", "status", "--user", &uid.to_string()]);
    assert!(out.status.success() && text(&out).contains("\"enabled\": true"), "{}", text(&out));
    let out = rsdb(&cfg, &["mfa", "reset", "--user", &uid.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("revoked 1 sessions"), "{}", text(&out));
    assert!(!mfa.status(uid).await.unwrap().enrolled);
    assert!(sessions.validate(s.token.expose(), "fp", false).await.is_err(), "the half-logged-in session is gone");
    let out = rsdb(&cfg, &["mfa", "reset", "--user", &uid.to_string()]);
    assert_eq!(out.status.code(), Some(4), "nothing left to reset: {}", text(&out));
    let out = rsdb(&cfg, &["sessions", "cleanup"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_usage_errors_from_unreachable_servers() {
    let mut down = Config::default();
    down.set("database_url", &format!("postgresql://postgres@127.0.0.1:{}/x", closed_port())).unwrap();
    let out = rsdb(&down, &["health"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("127.0.0.1"), "{}", text(&out));
    let out = rsdb(&Config::default(), &["migrate"]);
    assert_eq!(out.status.code(), Some(2), "no database URL: {}", text(&out));
    assert!(text(&out).contains("ROOTSTREAM_DATABASE_URL"), "{}", text(&out));
    let out = rsdb(&Config::default(), &["mfa", "rotate-keys", "--database-url", "postgresql://x@127.0.0.1:1/x"]);
    assert_eq!(out.status.code(), Some(2), "no master key: {}", text(&out));
    let out = rsdb(&Config::default(), &["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let cfg = secure_config().await;
    let out = rsdb(&cfg, &["config"]);
    assert!(out.status.success());
    assert!(!text(&out).contains(cfg.master_key.as_deref().unwrap()), "config output masks the key");
}
