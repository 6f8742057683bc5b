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
    for k in [
        "ROOTSTREAM_DATABASE_URL",
        "ROOTSTREAM_REDIS_URL",
        "ROOTSTREAM_MASTER_KEY",
        "ROOTSTREAM_MASTER_KEY_ID",
        "ROOTSTREAM_BACKUP_DIR",
        "ROOTSTREAM_BACKUP_S3_URL",
        "ROOTSTREAM_REDIS_SENTINELS",
        "ROOTSTREAM_REDIS_MASTER_NAME",
        "ROOTSTREAM_REDIS_SENTINEL_PASSWORD",
        "ROOTSTREAM_REDIS_MASTER_PASSWORD",
    ] {
        cmd.env_remove(k);
    }
    if let Some(d) = &cfg.backup_dir {
        cmd.env("ROOTSTREAM_BACKUP_DIR", d);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_command_is_accepted_and_help_lists_them() {
    let out = rsdb(&Config::default(), &["--help"]);
    assert!(out.status.success(), "{}", text(&out));
    for cmd in ["migrate", "health", "sessions", "backup", "restore", "wal-push", "wal-fetch", "mfa"] {
        assert!(text(&out).contains(cmd), "rsdb --help lists {cmd}: {}", text(&out));
    }
    let out = rsdb(&Config::default(), &["backup", "--help"]);
    for cmd in ["init", "create", "list", "verify", "delete", "test-restore", "cleanup"] {
        assert!(text(&out).contains(cmd), "rsdb backup --help lists {cmd}: {}", text(&out));
    }
    let out = rsdb(&Config::default(), &["backup", "create", "--help"]);
    for kind in ["logical", "full", "incremental", "differential", "--physical"] {
        assert!(text(&out).contains(kind), "backup create --help names {kind}: {}", text(&out));
    }
    let out = rsdb(&Config::default(), &["backup", "create", "--type", "weekly"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("logical") && text(&out).contains("differential"), "{}", text(&out));

    let cfg = secure_config().await;
    let out = rsdb(&cfg, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = rsdb(&cfg, &["health", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(v["postgres"].is_object(), "{v}");
    let out = rsdb(&cfg, &["sessions", "revoke-all", "--user", "1"]);
    assert!(out.status.success() && text(&out).contains("revoked 0 sessions of user 1"), "{}", text(&out));
    let out = rsdb(&cfg, &["mfa", "rotate-keys"]);
    assert!(out.status.success() && text(&out).contains("re-encrypted 0 MFA secrets"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_commands_from_init_to_cleanup() {
    let mut cfg = secure_config().await;
    let repo = std::env::temp_dir().join(format!("rsdb-cli-{}-{}", std::process::id(), rand::random::<u32>()));
    cfg.set("backup_dir", repo.to_str().unwrap()).unwrap();

    // `backup init` is documented in the README; it must be a registered command.
    let out = rsdb(&cfg, &["backup", "init"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is ready") && repo.is_dir(), "{}", text(&out));

    let out = rsdb(&cfg, &["backup", "create"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = text(&out).split_whitespace().nth(1).unwrap().to_string();

    // The listing says logical, the kind, and a human-readable size.
    let out = rsdb(&cfg, &["backup", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with(&id)).unwrap().to_string();
    assert!(line.contains("completed") && line.contains("logical"), "{line}");
    assert!(line.contains(" KiB") || line.contains(" MiB") || line.contains(" B "), "human size: {line}");
    assert!(!line.contains("bytes"), "{line}");
    let out = rsdb(&cfg, &["backup", "list", "--bytes"]);
    let line = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with(&id)).unwrap().to_string();
    assert!(line.contains(" bytes"), "{line}");
    let out = rsdb(&cfg, &["backup", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = v.as_array().unwrap().iter().find(|b| b["backup_id"] == id.as_str()).unwrap().clone();
    assert_eq!(row["method"], "logical", "{row}");
    assert_eq!(row["kind"], "logical", "{row}");
    assert!(row["compressed_size_bytes"].as_i64().unwrap() > 0, "{row}");
    let out = rsdb(&cfg, &["backup", "list", "--repository", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|b| b["backup_id"] == id.as_str()), "{v}");
    let out = rsdb(&cfg, &["backup", "list", "--repository"]);
    assert!(text(&out).contains(&id) && text(&out).contains("logical"), "{}", text(&out));

    let out = rsdb(&cfg, &["backup", "verify", &id]);
    assert!(out.status.success() && text(&out).contains("verified"), "{}", text(&out));
    let out = rsdb(&cfg, &["backup", "test-restore", &id]);
    assert!(out.status.success() && text(&out).contains("scratch space dropped"), "{}", text(&out));
    let target = stack().url_for(&format!("restored_{}", rand::random::<u32>()));
    let out = rsdb(&cfg, &["restore", &id, "--target-url", &target]);
    assert!(out.status.success() && text(&out).contains("all counts match"), "{}", text(&out));
    // Cleanup without options applies the core's default policy: the only full backup stays.
    let out = rsdb(&cfg, &["backup", "cleanup"]);
    assert!(out.status.success() && text(&out).contains("deleted 0 backups"), "{}", text(&out));
    let out = rsdb(&cfg, &["backup", "delete", &id]);
    assert!(out.status.success() && text(&out).contains(&format!("deleted backup {id}")), "{}", text(&out));
    let out = rsdb(&cfg, &["backup", "verify", &id]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // WAL: a push of a file that is not there fails; a fetch of a segment never archived is 4.
    let out = rsdb(&cfg, &["wal-push", repo.join("no-such/000000010000000000000001").to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let dest = repo.join("fetched");
    let out = rsdb(&cfg, &["wal-fetch", "000000010000000000000001", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    std::fs::remove_dir_all(&repo).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_prints_the_counters_and_sync_tail_prints_each_envelope_as_a_json_line() {
    use rootstream_db::sync::{events, StateSyncManager, SyncOptions};
    use std::io::{BufRead, BufReader};
    let cfg = redis_config();
    let ns = unique("cli-sync");
    let mut opts = SyncOptions::new("cli-test");
    opts.namespace = ns.clone();
    let a = StateSyncManager::start(RedisClient::connect(&cfg).await.unwrap(), opts).await.unwrap();
    a.apply_delta("stream", "1", serde_json::json!({"title": "x"}).as_object().unwrap()).unwrap();
    a.flush(std::time::Duration::from_secs(5)).await.unwrap();

    let out = rsdb(&cfg, &["sync", "status", "--namespace", &ns]);
    assert!(out.status.success(), "{}", text(&out));
    for field in ["subscriptions:", "sent:", "received:", "lag:", "catch-ups:", "resyncs:", "conflicts:", "rejected:"] {
        assert!(text(&out).contains(field), "status prints {field}: {}", text(&out));
    }
    let out = rsdb(&cfg, &["sync", "status", "--namespace", &ns, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["namespace"], ns.as_str(), "{v}");
    // The new manager read the one change from the log at start and is not behind it.
    assert_eq!(
        (v["received"].as_u64(), v["catch_ups"].as_u64(), v["lag"].as_u64()),
        (Some(1), Some(1), Some(0)),
        "{v}"
    );
    for field in ["subscriptions", "sent", "resyncs", "conflicts", "rejected"] {
        assert_eq!(v[field], 0, "{field}: {v}");
    }
    let out = rsdb(&cfg, &["sync", "status", "--namespace", "has space"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_rsdb"))
        .args(["sync", "tail", "stream.*", "--namespace", &ns, "--count", "2"])
        .env("ROOTSTREAM_REDIS_URL", cfg.redis_url.as_deref().unwrap())
        .env_remove("ROOTSTREAM_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Publish once the tail has subscribed (it says so on stderr).
    let mut ready = String::new();
    let mut stderr = BufReader::new(tail.stderr.take().unwrap());
    stderr.read_line(&mut ready).unwrap();
    assert!(ready.contains("tailing"), "{ready}");
    a.publish(events::VIEWER_JOINED, serde_json::json!({"id": 9})).unwrap();
    a.publish(events::STREAM_STARTED, serde_json::json!({"id": 7, "title": "live"})).unwrap();
    a.publish(events::STREAM_STOPPED, serde_json::json!({"id": 7})).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tail.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            tail.kill().unwrap();
            panic!("rsdb sync tail --count 2 did not stop after two events");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = tail.wait_with_output().unwrap();
    drop(stderr);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (lines[0]["type"].as_str(), lines[1]["type"].as_str()),
        (Some("stream.started"), Some("stream.stopped"))
    );
    assert_eq!(lines[0]["origin"], a.origin());
    assert_eq!(lines[0]["payload"]["title"], "live");
    assert_eq!(lines[1]["seq"].as_u64(), Some(lines[0]["seq"].as_u64().unwrap() + 1));
}
