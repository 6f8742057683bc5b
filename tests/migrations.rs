//! Migrations against a real PostgreSQL: idempotence, concurrency, tamper detection.

mod support;

use rootstream_db::db::migrations::{self, migrate_with, Migration, MIGRATIONS};
use rootstream_db::{DatabaseManager, Error};
use serde_json::json;
use support::*;

const FOUNDATION_TABLES: &[&str] = &[
    "users",
    "sessions",
    "streams",
    "stream_sessions",
    "recordings",
    "usage_logs",
    "billing_accounts",
    "event_log",
    "snapshots",
];

async fn tables(db: &DatabaseManager) -> Vec<String> {
    let rows =
        db.query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_applies_each_migration_once() {
    let db = DatabaseManager::connect(&fresh_config().await).await.unwrap();
    let first = migrations::migrate(&db).await.unwrap();
    assert_eq!(first.applied, (1..=MIGRATIONS.len() as i32).collect::<Vec<_>>());
    let second = migrations::migrate(&db).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.current_version, MIGRATIONS.len() as i32);
    assert_eq!(migrations::current_version(&db).await.unwrap(), MIGRATIONS.len() as i32);
    let t = tables(&db).await;
    for want in FOUNDATION_TABLES {
        assert!(t.iter().any(|x| x == want), "missing table {want} in {t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_updated_at_trigger_moves_on_update() {
    let db = DatabaseManager::connect(&fresh_config().await).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    db.execute_json("INSERT INTO users (username, email, password_hash) VALUES ('a','a@x.io','h')", None)
        .await
        .unwrap();
    db.execute_json("UPDATE users SET updated_at = now() - interval '1 day', display_name = 'old'", None)
        .await
        .unwrap();
    db.execute_json("UPDATE users SET display_name = 'new'", None).await.unwrap();
    let r = db.query_json("SELECT updated_at > now() - interval '1 minute' AS fresh FROM users", None).await.unwrap();
    assert_eq!(r, json!([{"fresh": true}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_migrating_one_empty_database_at_once_end_with_one_schema() {
    let cfg = fresh_config().await;
    let url = cfg.database_url.clone().unwrap();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rsdb"))
            .arg("migrate")
            .env("ROOTSTREAM_DATABASE_URL", &url)
            .env_remove("ROOTSTREAM_REDIS_URL")
            .output()
    };
    let (a, b, c) = tokio::join!(spawn(), spawn(), spawn());
    for out in [a.unwrap(), b.unwrap(), c.unwrap()] {
        assert!(out.status.success(), "rsdb migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    let rows = db
        .query_json(
            "SELECT version, count(*)::int AS n FROM rsdb_schema_migrations GROUP BY version ORDER BY version",
            None,
        )
        .await
        .unwrap();
    let want: Vec<_> = (1..=MIGRATIONS.len() as i32).map(|v| json!({"version": v, "n": 1})).collect();
    assert_eq!(rows, json!(want));
    assert!(tables(&db).await.iter().any(|t| t == "event_log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_managers_in_one_process_migrate_once() {
    let cfg = fresh_config().await;
    let dbs: Vec<_> = (0..4).map(|_| DatabaseManager::new(&cfg).unwrap()).collect();
    let results = futures_util::future::join_all(dbs.iter().map(migrations::migrate)).await;
    let applied: usize = results.into_iter().map(|r| r.unwrap().applied.len()).sum();
    assert_eq!(applied, MIGRATIONS.len(), "each migration applied by exactly one caller");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_migration_that_changed_stops_start_up() {
    let db = DatabaseManager::connect(&fresh_config().await).await.unwrap();
    let v1 = [Migration { version: 1, name: "one", sql: "CREATE TABLE one (id INT)" }];
    migrate_with(&db, &v1).await.unwrap();
    let edited = [Migration { version: 1, name: "one", sql: "CREATE TABLE one (id BIGINT)" }];
    let err = migrate_with(&db, &edited).await.unwrap_err();
    match err {
        Error::Migration(m) => assert!(m.contains("001") && m.contains("changed"), "{m}"),
        other => panic!("expected a migration error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_newer_than_the_library_is_refused() {
    let db = DatabaseManager::connect(&fresh_config().await).await.unwrap();
    let two = [
        Migration { version: 1, name: "one", sql: "CREATE TABLE one (id INT)" },
        Migration { version: 2, name: "two", sql: "CREATE TABLE two (id INT)" },
    ];
    migrate_with(&db, &two).await.unwrap();
    let err = migrate_with(&db, &two[..1]).await.unwrap_err();
    assert!(matches!(err, Error::Migration(ref m) if m.contains("002")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_is_rolled_back_whole() {
    let db = DatabaseManager::connect(&fresh_config().await).await.unwrap();
    let bad = [Migration { version: 1, name: "bad", sql: "CREATE TABLE half (id INT); SELECT * FROM missing_table;" }];
    let err = migrate_with(&db, &bad).await.unwrap_err();
    assert!(matches!(err, Error::Migration(ref m) if m.contains("rolled back")), "{err}");
    assert!(!tables(&db).await.iter().any(|t| t == "half"), "no half-applied migration");
    assert_eq!(migrations::current_version(&db).await.unwrap(), 0);
}
