//! Backups in an S3-compatible repository (the stack's moto server on 127.0.0.1): logical and
//! physical backups, verification, restore, and the WAL archive.

mod support;

use rootstream_db::backup::{BackupManager, ClusterRestoreOptions, PhysicalKind, RecoveryManager, RecoveryTarget};
use rootstream_db::db::migrations;
use rootstream_db::{Config, DatabaseManager, Error};
use std::path::PathBuf;
use support::*;

const RSDB: &str = env!("CARGO_BIN_EXE_rsdb");

async fn setup() -> (Config, DatabaseManager, BackupManager) {
    let bucket = format!("rsdb-{}", rand::random::<u32>());
    let mut cfg = fresh_config().await;
    let s3 = s3_config(&bucket, "cluster-a");
    cfg.backup_s3_url = s3.backup_s3_url;
    cfg.backup_s3_endpoint = s3.backup_s3_endpoint;
    cfg.backup_s3_region = s3.backup_s3_region;
    cfg.backup_s3_access_key_id = s3.backup_s3_access_key_id;
    cfg.backup_s3_secret_access_key = s3.backup_s3_secret_access_key;
    let key: [u8; 32] = rand::random();
    cfg.set("master_key", &hex_string(&key)).unwrap();
    cfg.set("rsdb_path", RSDB).unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    db.batch_execute(
        "CREATE TABLE items (id INT PRIMARY KEY, body TEXT);
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    )
    .await
    .unwrap();
    let bm = BackupManager::new(db.clone(), &cfg).unwrap();
    bm.init_repository().unwrap();
    bm.init_repository().unwrap();
    (cfg, db, bm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_backup_in_s3_verifies_restores_and_catches_a_flipped_byte() {
    let (cfg, _db, bm) = setup().await;
    let m = bm.create_full().await.unwrap();
    let list = bm.list().await.unwrap();
    assert_eq!(list[0].status, "completed");
    assert!(list[0].path.starts_with("s3://"), "{}", list[0].path);
    bm.verify(&m.backup_id).unwrap();
    let target = create_database().await;
    let r = bm.restore(&m.backup_id, &stack().url_for(&target)).await.unwrap();
    assert!(r.rows_restored >= 20000);

    // Flip one byte of the stored object.
    let key = format!("{}/dump.zst.enc", m.backup_id);
    let mut bytes = bm.storage().get(&key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    bm.storage().put(&key, &bytes).unwrap();
    let err = bm.verify(&m.backup_id).unwrap_err();
    assert!(matches!(err, Error::Integrity(ref msg) if msg.contains("dump.zst.enc: chunk")), "{err}");
    let again = create_database().await;
    assert!(matches!(bm.restore(&m.backup_id, &stack().url_for(&again)).await, Err(Error::Integrity(_))));
    // A missing object too.
    bm.storage().delete(&key).unwrap();
    let err = bm.verify(&m.backup_id).unwrap_err();
    assert!(matches!(err, Error::Integrity(ref msg) if msg.contains("missing")), "{err}");
    // The repository alone lists what it holds (no database needed).
    let rm = RecoveryManager::from_config(&cfg).unwrap();
    assert!(rm.list_repository().unwrap().iter().any(|b| b.backup_id == m.backup_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_physical_backup_in_s3_restores_into_a_new_data_directory() {
    let (cfg, db, bm) = setup().await;
    let m = bm.create_physical(PhysicalKind::Full).await.unwrap();
    db.execute("DELETE FROM items WHERE id > 10", &[]).await.unwrap();
    let rm = RecoveryManager::from_config(&cfg).unwrap();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("rsdb-s3-restore-{}-{}", std::process::id(), rand::random::<u32>()));
    let mut opts = ClusterRestoreOptions::new(&dir, RecoveryTarget::EndOfBackup);
    opts.backup_id = Some(m.backup_id.clone());
    let r = rm.restore_cluster(&opts).await.unwrap();
    let name = cfg.database_url.as_deref().unwrap().rsplit('/').next().unwrap().to_string();
    assert_eq!(r.databases[&name]["public.items"], 20000, "the restore holds the rows as of the backup");
    assert!(!r.running);
    assert!(!dir.join("rsdb-restore.conf").exists(), "the key-bearing restore configuration is removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_archive_works_in_s3_and_is_idempotent() {
    let (_cfg, _db, bm) = setup().await;
    let wal = bm.wal_archive();
    let dir = std::env::temp_dir().join(format!("rsdb-s3-wal-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let seg = dir.join("000000010000000000000007");
    let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 241) as u8).collect();
    std::fs::write(&seg, &data).unwrap();
    assert_eq!(wal.push(&seg).unwrap(), rootstream_db::backup::PushOutcome::Stored);
    assert_eq!(wal.push(&seg).unwrap(), rootstream_db::backup::PushOutcome::AlreadyArchived);
    std::fs::write(&seg, b"other").unwrap();
    assert!(matches!(wal.push(&seg), Err(Error::Conflict(_))));
    let out = dir.join("out");
    wal.fetch("000000010000000000000007", &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert!(matches!(wal.fetch("000000010000000000000008", &out), Err(Error::NotFound(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}
