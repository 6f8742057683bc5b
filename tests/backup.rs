//! Logical backups against a real PostgreSQL: full backup and restore, integrity checks,
//! encryption, failure handling.

mod support;

use rootstream_db::backup::BackupManager;
use rootstream_db::db::migrations;
use rootstream_db::{Config, DatabaseManager, Error};
use std::process::Command;
use support::*;

const MARKER: &str = "plaintext-marker-7f1c9e42";

async fn setup() -> (Config, DatabaseManager, BackupManager, tempdir::Dir) {
    let mut cfg = secure_config().await;
    let dir = tempdir::Dir::new();
    cfg.set("backup_dir", dir.path()).unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    db.batch_execute(&format!(
        "INSERT INTO users (username, email, password_hash, display_name)
         SELECT 'user' || g, 'user' || g || '@example.com', 'h', '{MARKER} ' || g FROM generate_series(1, 3000) g;
         CREATE TABLE big (id BIGSERIAL PRIMARY KEY, body TEXT);
         INSERT INTO big (body) SELECT md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 60000) g;"
    ))
    .await
    .unwrap();
    let bm = BackupManager::new(db.clone(), &cfg).unwrap();
    (cfg, db, bm, dir)
}

/// A plain-text dump, for comparing databases. The backup's own bookkeeping (its
/// `backup_history` row, written while it runs) is the one thing that must differ.
fn plain_dump(url: &str) -> String {
    let out = Command::new("/usr/lib/postgresql/15/bin/pg_dump")
        .args(["--no-owner", "--exclude-table-data=backup_history", "--dbname", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // `\restrict` lines carry a random key per dump (psql's script protection).
        .filter(|l| {
            !l.starts_with("-- Dumped")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.contains("backup_history_id_seq', ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p =
                std::env::temp_dir().join(format!("rsdb-backup-test-{}-{}", std::process::id(), rand::random::<u64>()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backup_restores_to_an_identical_database() {
    let (cfg, db, bm, _dir) = setup().await;
    let m = bm.create_full().await.unwrap();
    let original = plain_dump(cfg.database_url.as_deref().unwrap());
    assert_eq!(m.row_counts["public.users"], 3000);
    assert_eq!(m.row_counts["public.big"], 60000);
    assert!(m.files[0].stored_bytes < m.files[0].plain_bytes, "compressed: {:?}", m.files[0]);
    // The manifest describes the stored file exactly (checked here with an independent SHA-256).
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].name, "dump.zst.enc");
    assert!(m.files[0].chunks >= 2, "the dump spans several 1 MiB chunks: {:?}", m.files[0]);
    let stored = std::fs::read(std::path::Path::new(_dir.path()).join(&m.backup_id).join("dump.zst.enc")).unwrap();
    assert_eq!(stored.len() as u64, m.files[0].stored_bytes);
    assert_eq!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored)), m.files[0].sha256);
    assert_eq!(bm.verify(&m.backup_id).unwrap(), m, "verify returns the manifest create_full returned");
    let listed = bm.list().await.unwrap();
    assert_eq!((listed[0].backup_id.as_str(), listed[0].status.as_str()), (m.backup_id.as_str(), "completed"));
    assert_eq!(listed[0].compressed_size_bytes, Some(m.files[0].stored_bytes as i64));

    // The database is lost, then restored under its own name (restore creates it).
    let target_url = cfg.database_url.clone().unwrap();
    let name = target_url.rsplit('/').next().unwrap().to_string();
    db.close();
    let (admin, conn) = tokio_postgres::connect(stack().admin_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
    let report = bm.restore(&m.backup_id, &target_url).await.unwrap();
    assert_eq!(report.rows_restored, m.row_counts.values().sum::<i64>());
    assert_eq!(report.backup_id, m.backup_id);
    assert_eq!(report.tables_checked, m.row_counts.len());
    // The snapshot holds the backup's own history row as it was while the dump ran.
    let (restored_db, conn) = tokio_postgres::connect(&target_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows = restored_db.query("SELECT backup_id, status FROM backup_history", &[]).await.unwrap();
    let history: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(history, vec![(m.backup_id.clone(), "in_progress".to_owned())]);
    let restored = plain_dump(&target_url);
    assert!(original.contains("plaintext-marker-7f1c9e42 2999"), "the comparison covers the data");
    if original != restored {
        let o: Vec<&str> = original.lines().collect();
        let r: Vec<&str> = restored.lines().collect();
        let first = o.iter().zip(&r).position(|(a, b)| a != b).unwrap_or(o.len().min(r.len()));
        panic!(
            "dumps differ at line {first}: {:?} vs {:?} ({} vs {} lines)",
            o.get(first),
            r.get(first),
            o.len(),
            r.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_holds_no_plaintext_and_every_flipped_byte_or_missing_file_is_caught() {
    let (_cfg, _db, bm, dir) = setup().await;
    let m = bm.create_full().await.unwrap();
    let file = std::path::Path::new(dir.path()).join(&m.backup_id).join("dump.zst.enc");
    let bytes = std::fs::read(&file).unwrap();
    for plain in [MARKER, "user2999@example.com", "CREATE TABLE"] {
        assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()), "{plain:?} in plaintext in the backup");
    }
    let manifest_text = std::fs::read(file.with_file_name("manifest.json")).unwrap();
    assert!(!manifest_text.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "no plaintext in the manifest");
    bm.verify(&m.backup_id).unwrap();

    for pos in [9usize, bytes.len() / 2, bytes.len() - 3] {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x01;
        std::fs::write(&file, &bad).unwrap();
        let err = bm.verify(&m.backup_id).unwrap_err();
        assert!(
            matches!(err, Error::Integrity(ref msg) if msg.contains("dump.zst.enc: chunk")),
            "flip at {pos}: {err}"
        );
        let target = create_database().await;
        assert!(bm.restore(&m.backup_id, &stack().url_for(&target)).await.is_err(), "restore refuses a damaged backup");
    }
    std::fs::write(&file, &bytes).unwrap();
    bm.verify(&m.backup_id).unwrap();

    let manifest = file.with_file_name("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"format\": 1", "\"format\": 2")).unwrap();
    assert!(matches!(bm.verify(&m.backup_id), Err(Error::Integrity(ref msg)) if msg.contains("manifest")));
    std::fs::write(&manifest, text).unwrap();

    std::fs::remove_file(&file).unwrap();
    let err = bm.verify(&m.backup_id).unwrap_err();
    assert!(matches!(err, Error::Integrity(ref msg) if msg.contains("dump.zst.enc is missing")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_master_key_is_a_clear_error() {
    let (cfg, db, bm, _dir) = setup().await;
    let m = bm.create_full().await.unwrap();
    let mut other = cfg.clone();
    other.set("master_key", &"33".repeat(32)).unwrap();
    let wrong = BackupManager::new(db.clone(), &other).unwrap();
    let err = wrong.verify(&m.backup_id).unwrap_err();
    assert!(matches!(err, Error::Integrity(ref msg) if msg.contains("master key")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_target_fails_cleanly_and_is_recorded() {
    let (mut cfg, db, _bm, _dir) = setup().await;
    cfg.set("backup_dir", "/proc/rsdb-no-such-place").unwrap();
    let bm = BackupManager::new(db.clone(), &cfg).unwrap();
    let err = bm.create_full().await.unwrap_err();
    assert!(matches!(err, Error::Io(ref m) if m.contains("/proc/rsdb-no-such-place")), "{err}");
    let list = bm.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, "failed");
    let message = list[0].error_message.as_deref().unwrap_or("");
    assert!(message.contains("cannot create") && message.contains("/proc/rsdb-no-such-place"), "{message}");
    assert!(!std::path::Path::new("/proc/rsdb-no-such-place").exists());
    // The database is unharmed, and a backup into the right place works afterwards.
    assert_eq!(db.query("SELECT count(*) FROM users", &[]).await.unwrap()[0].get::<_, i64>(0), 3000);
    let m = _bm.create_full().await.unwrap();
    let list = bm.list().await.unwrap();
    assert_eq!((list[0].backup_id.as_str(), list[0].status.as_str()), (m.backup_id.as_str(), "completed"));
}

/// Tables outside the system schemas of the database `name`: 0 where nothing was restored.
async fn user_tables(name: &str) -> i64 {
    let (c, conn) = tokio_postgres::connect(&stack().url_for(name), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c.query_one("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_damaged_unknown_or_foreign_backup_before_it_writes_into_the_target() {
    let (cfg, db, bm, dir) = setup().await;
    let m = bm.create_full().await.unwrap();
    let id = m.backup_id.clone();
    let chunks = m.files[0].chunks;
    let file = std::path::Path::new(dir.path()).join(&id).join("dump.zst.enc");
    let original = std::fs::read(&file).unwrap();
    let target = create_database().await;
    let target_url = stack().url_for(&target);
    let integrity = |r: Result<(), Error>, needle: &str| match r {
        Err(Error::Integrity(msg)) => assert!(msg.contains(needle), "{msg} should mention {needle}"),
        other => panic!("{other:?} is not an integrity error about {needle}"),
    };

    // A flipped byte: the error names the chunk at fault, and restore refuses it too.
    for (pos, chunk) in [(20, Some(0)), (original.len() / 2, None), (original.len() - 3, Some(chunks - 1))] {
        let mut bad = original.clone();
        bad[pos] ^= 0x01;
        std::fs::write(&file, &bad).unwrap();
        let needle = chunk.map(|c| format!("dump.zst.enc: chunk {c}")).unwrap_or("dump.zst.enc: chunk".into());
        integrity(bm.verify(&id).map(|_| ()), &needle);
        integrity(bm.restore(&id, &target_url).await.map(|_| ()), "dump.zst.enc: chunk");
    }
    std::fs::write(&file, &original).unwrap();

    // An edited manifest (one row count changed) is about the manifest, for verify and restore.
    let manifest = file.with_file_name("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let from = format!("\"public.big\": {}", m.row_counts["public.big"]);
    assert!(text.contains(&from), "{text}");
    std::fs::write(&manifest, text.replace(&from, &format!("\"public.big\": {}", m.row_counts["public.big"] - 1)))
        .unwrap();
    integrity(bm.verify(&id).map(|_| ()), "manifest");
    integrity(bm.restore(&id, &target_url).await.map(|_| ()), "manifest");
    std::fs::write(&manifest, &text).unwrap();

    // A deleted dump is missing.
    std::fs::remove_file(&file).unwrap();
    integrity(bm.restore(&id, &target_url).await.map(|_| ()), "dump.zst.enc is missing");
    std::fs::write(&file, &original).unwrap();

    // An unknown id is not found; an id that is a path is refused before any file is read.
    let unknown = "full-20000101T000000Z-000000";
    assert!(matches!(bm.verify(unknown), Err(Error::NotFound(_))));
    assert!(matches!(bm.restore(unknown, &target_url).await, Err(Error::NotFound(_))));
    let dir_name = std::path::Path::new(dir.path()).file_name().unwrap().to_str().unwrap().to_owned();
    let traversal = format!("../{dir_name}/{id}");
    assert!(std::path::Path::new(dir.path()).join(&traversal).join("manifest.json").exists());
    for bad in [traversal.as_str(), "../etc", "", "wal"] {
        assert!(matches!(bm.verify(bad), Err(Error::InvalidArgument(_))), "{bad:?}");
        assert!(matches!(bm.restore(bad, &target_url).await, Err(Error::InvalidArgument(_))), "{bad:?}");
    }

    // Another master key, under the same key id or another one, says so.
    for key_id in ["test-k1", "other-key"] {
        let mut other = cfg.clone();
        other.set("master_key", &"33".repeat(32)).unwrap();
        other.set("master_key_id", key_id).unwrap();
        let wrong = BackupManager::new(db.clone(), &other).unwrap();
        integrity(wrong.verify(&id).map(|_| ()), "master key");
        integrity(wrong.restore(&id, &target_url).await.map(|_| ()), "master key");
    }

    assert_eq!(user_tables(&target).await, 0, "a refused restore wrote into the target");
    bm.verify(&id).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_backup_dir_or_master_key_is_a_config_error_naming_it() {
    let (cfg, db, bm, _dir) = setup().await;
    for key in ["backup_dir", "master_key"] {
        let mut c = cfg.clone();
        c.set(key, "").unwrap();
        match BackupManager::new(db.clone(), &c) {
            Err(Error::Config(msg)) => assert!(msg.contains(key), "{msg}"),
            Err(other) => panic!("{key}: {other:?}"),
            Ok(_) => panic!("{key}: accepted"),
        }
    }
    assert!(bm.list().await.unwrap().is_empty(), "no backup was attempted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_verifies_and_restores_with_clear_exit_codes() {
    let (cfg, _db, bm, dir) = setup().await;
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rsdb"))
            .args(args)
            .env("ROOTSTREAM_DATABASE_URL", cfg.database_url.as_deref().unwrap())
            .env("ROOTSTREAM_MASTER_KEY", cfg.master_key.as_deref().unwrap())
            .env("ROOTSTREAM_MASTER_KEY_ID", "test-k1")
            .env("ROOTSTREAM_BACKUP_DIR", dir.path())
            .output()
            .unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (code, text) = run(&["backup", "create"]);
    assert_eq!(code, Some(0), "{text}");
    let id = bm.list().await.unwrap()[0].backup_id.clone();
    assert!(text.contains(&id));
    let (code, text) = run(&["backup", "list"]);
    assert!(code == Some(0) && text.contains(&id) && text.contains("completed"), "{text}");
    let (code, text) = run(&["backup", "verify", &id]);
    assert!(code == Some(0) && text.contains("verified"), "{text}");
    let target = create_database().await;
    let (code, text) = run(&["restore", &id, "--target-url", &stack().url_for(&target)]);
    assert!(code == Some(0) && text.contains("all counts match"), "{text}");

    let file = std::path::Path::new(dir.path()).join(&id).join("dump.zst.enc");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    std::fs::write(&file, &bytes).unwrap();
    let (code, text) = run(&["backup", "verify", &id]);
    assert_eq!(code, Some(5), "{text}");
    assert!(text.contains("dump.zst.enc: chunk"), "{text}");
    let (code, _) = run(&["backup", "verify", "no-such-backup"]);
    assert_eq!(code, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_backup_cleanly_and_is_recorded() {
    let (cfg, db, bm, dir) = setup().await;
    // A file-size limit of 256 KiB stands in for a full disk: the backup's writes fail with
    // EFBIG part-way through, as they would with ENOSPC.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 256 && exec \"$0\" backup create")
        .arg(env!("CARGO_BIN_EXE_rsdb"))
        .env("ROOTSTREAM_DATABASE_URL", cfg.database_url.as_deref().unwrap())
        .env("ROOTSTREAM_MASTER_KEY", cfg.master_key.as_deref().unwrap())
        .env("ROOTSTREAM_MASTER_KEY_ID", "test-k1")
        .env("ROOTSTREAM_BACKUP_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("File too large"), "{text}");
    let list = bm.list().await.unwrap();
    assert_eq!(list[0].status, "failed");
    assert!(list[0].error_message.as_deref().unwrap_or("").contains("File too large"), "{:?}", list[0]);
    // Nothing half-written is left, and the database is unharmed.
    let leftovers: Vec<_> = walk(std::path::Path::new(dir.path()));
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(db.query("SELECT count(*) FROM big", &[]).await.unwrap()[0].get::<_, i64>(0), 60000);
    bm.create_full().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_backups_but_never_the_newest_full_one() {
    let (_cfg, db, bm, dir) = setup().await;
    let a = bm.create_full().await.unwrap().backup_id;
    let b = bm.create_full().await.unwrap().backup_id;
    let c = bm.create_full().await.unwrap().backup_id;
    // All three are older than the 30-day full-backup period.
    db.execute("UPDATE backup_history SET finished_at = now() - interval '40 days' + (id * interval '1 minute')", &[])
        .await
        .unwrap();
    let report = bm.cleanup(&rootstream_db::backup::RetentionPolicy::default()).await.unwrap();
    let mut deleted = report.deleted.clone();
    deleted.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(deleted, want, "the newest full backup stays even when it is old");
    assert!(report.bytes_freed > 0);
    assert!(!std::path::Path::new(dir.path()).join(&a).exists());
    assert!(std::path::Path::new(dir.path()).join(&c).exists());
    bm.verify(&c).unwrap();
    let statuses: Vec<(String, String)> =
        bm.list().await.unwrap().into_iter().map(|i| (i.backup_id, i.status)).collect();
    assert!(statuses.contains(&(a, "deleted".into())));
    assert!(statuses.contains(&(c, "completed".into())));
    // A second run finds nothing more to do.
    assert!(bm.cleanup(&rootstream_db::backup::RetentionPolicy::default()).await.unwrap().deleted.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_fires_every_minute_and_reports_a_missed_run() {
    use rootstream_db::backup::{BackupScheduler, ScheduleEvent};
    use std::sync::{Arc, Mutex};
    let (_cfg, db, bm, _dir) = setup().await;
    let events = Arc::new(Mutex::new(Vec::<ScheduleEvent>::new()));

    // The process was down over a nightly run: the last full backup is two days old.
    bm.create_full().await.unwrap();
    db.execute("UPDATE backup_history SET finished_at = now() - interval '2 days'", &[]).await.unwrap();
    let sink = events.clone();
    let nightly =
        BackupScheduler::start(bm.clone(), "0 3 * * *", Arc::new(move |e| sink.lock().unwrap().push(e.clone())))
            .unwrap();
    for _ in 0..100 {
        if !events.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        matches!(events.lock().unwrap().first(), Some(ScheduleEvent::Missed { .. })),
        "{:?}",
        events.lock().unwrap()
    );
    drop(nightly);

    events.lock().unwrap().clear();
    let sink = events.clone();
    let every =
        BackupScheduler::start(bm.clone(), "* * * * *", Arc::new(move |e| sink.lock().unwrap().push(e.clone())))
            .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let id = loop {
        if let Some(ScheduleEvent::Completed { backup_id, .. }) =
            events.lock().unwrap().iter().find(|e| matches!(e, ScheduleEvent::Completed { .. })).cloned()
        {
            break backup_id;
        }
        assert!(std::time::Instant::now() < deadline, "no scheduled backup within 90 s: {:?}", events.lock().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    drop(every);
    bm.verify(&id).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_by_kind_report_missed_runs_of_their_own_kind_and_refuse_a_bad_cron() {
    use rootstream_db::backup::{BackupKind, BackupScheduler, PhysicalKind, ScheduleEvent};
    use std::sync::{Arc, Mutex};
    let (_cfg, db, bm, _dir) = setup().await;
    let events = Arc::new(Mutex::new(Vec::<ScheduleEvent>::new()));
    let sink = events.clone();
    let cb: rootstream_db::backup::schedule::ScheduleCallback = Arc::new(move |e| sink.lock().unwrap().push(e.clone()));
    let bad = BackupScheduler::start_with(
        bm.clone(),
        "0 25 * * *",
        BackupKind::Physical(PhysicalKind::Differential),
        cb.clone(),
    );
    assert!(matches!(bad, Err(Error::InvalidArgument(_))));

    // Only a logical backup is in the history, two days old: the logical schedule missed a run;
    // the incremental one has no backup of its kind to have missed.
    bm.create_full().await.unwrap();
    db.execute("UPDATE backup_history SET finished_at = now() - interval '2 days'", &[]).await.unwrap();
    let incremental = BackupScheduler::start_with(
        bm.clone(),
        "0 3 * * *",
        BackupKind::Physical(PhysicalKind::Incremental),
        cb.clone(),
    )
    .unwrap();
    let logical = BackupScheduler::start_with(bm.clone(), "0 3 * * *", BackupKind::Logical, cb).unwrap();
    for _ in 0..250 {
        if !events.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    drop((incremental, logical));
    let got = events.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        matches!(&got[0], ScheduleEvent::Missed { kind, schedule, .. } if kind == "logical" && schedule == "0 3 * * *"),
        "{got:?}"
    );
}
