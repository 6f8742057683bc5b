//! Physical backups, WAL archiving and point-in-time recovery against a real PostgreSQL
//! cluster whose archive_command is `rsdb wal-push` (see scripts/stack.sh).
//!
//! The tests share the stack's cluster and WAL archive, so they run one at a time.

mod support;

use rootstream_db::backup::{
    BackupManager, ClusterRestoreOptions, Manifest, PhysicalKind, RecoveryManager, RecoveryTarget, RetentionPolicy,
};
use rootstream_db::db::migrations;
use rootstream_db::{Config, DatabaseManager, Error};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const RSDB: &str = env!("CARGO_BIN_EXE_rsdb");

/// The stack's archive configuration (repository and key), the stack's cluster, a database of
/// its own for the history, and archiving switched on (the stack's archive_command runs the
/// rsdb it finds linked in the stack directory).
async fn setup() -> (Config, DatabaseManager, BackupManager) {
    let stack_dir = PathBuf::from(stack().var("ROOTSTREAM_STACK_DIR"));
    let link = stack_dir.join("rsdb");
    if !link.exists() {
        let _ = std::os::unix::fs::symlink(RSDB, &link);
    }
    let mut cfg = fresh_config().await;
    cfg.apply_file(Path::new(stack().var("ROOTSTREAM_TEST_ARCHIVE_CONF"))).unwrap();
    cfg.set("rsdb_path", RSDB).unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    db.batch_execute("CREATE TABLE IF NOT EXISTS ledger (id INT PRIMARY KEY, note TEXT NOT NULL)").await.unwrap();
    let bm = BackupManager::new(db.clone(), &cfg).unwrap();
    (cfg, db, bm)
}

fn scratch_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rsdb-pitr-{tag}-{}-{}", std::process::id(), rand::random::<u32>()))
}

async fn insert(db: &DatabaseManager, id: i32) {
    db.execute("INSERT INTO ledger VALUES ($1, $2)", &[&id, &format!("row {id}")]).await.unwrap();
}

/// Restores into a new data directory, returns the ledger ids the restored database holds
/// (and the report), and removes the directory.
async fn restore_ids(
    cfg: &Config,
    db_name: &str,
    backup_id: Option<&str>,
    target: RecoveryTarget,
) -> (Vec<i32>, rootstream_db::backup::ClusterReport) {
    let rm = RecoveryManager::from_config(cfg).unwrap();
    let dir = scratch_dir("restore");
    let mut opts = ClusterRestoreOptions::new(&dir, target);
    opts.backup_id = backup_id.map(str::to_string);
    opts.keep_running = true;
    opts.timeout = Duration::from_secs(300);
    let report = rm.restore_cluster(&opts).await.unwrap_or_else(|e| panic!("restore failed: {e}"));
    assert!(report.running, "keep_running leaves the server running");
    assert_eq!(report.data_dir, dir.display().to_string());
    assert!(report.port > 0 && report.seconds > 0.0, "{report:?}");
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname={db_name}", report.port),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let ids: Vec<i32> =
        client.query("SELECT id FROM ledger ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    drop(client);
    assert_eq!(report.databases[db_name]["public.ledger"], ids.len() as i64, "the report counts what came back");
    rootstream_db::backup::cluster::stop_cluster(cfg, &dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (ids, report)
}

fn db_name(cfg: &Config) -> String {
    cfg.database_url.as_deref().unwrap().rsplit('/').next().unwrap().to_string()
}

fn parent(m: &Manifest) -> Option<String> {
    m.physical.as_ref().unwrap().parent_backup_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_and_differential_chains_restore_and_pitr_stops_between_two_commits() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, bm) = setup().await;
    let name = db_name(&cfg);
    insert(&db, 1).await;
    let full = bm.create_physical(PhysicalKind::Full).await.unwrap();
    assert_eq!(full.backup_type, "full");
    assert!(full.backup_id.starts_with("base-"));
    insert(&db, 2).await;
    let incr1 = bm.create_physical(PhysicalKind::Incremental).await.unwrap();
    assert_eq!(parent(&incr1).as_deref(), Some(full.backup_id.as_str()));
    insert(&db, 3).await;
    // The moment between two committed transactions: 3 is in, 4 is not.
    let between: chrono::DateTime<chrono::Utc> = db.query("SELECT clock_timestamp()", &[]).await.unwrap()[0].get(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    insert(&db, 4).await;
    let diff = bm.create_physical(PhysicalKind::Differential).await.unwrap();
    assert_eq!(parent(&diff).as_deref(), Some(full.backup_id.as_str()), "a differential builds on the full backup");
    insert(&db, 5).await;
    let incr2 = bm.create_physical(PhysicalKind::Incremental).await.unwrap();
    assert_eq!(parent(&incr2).as_deref(), Some(diff.backup_id.as_str()), "an incremental builds on the last backup");
    insert(&db, 6).await;
    db.query("SELECT pg_switch_wal()", &[]).await.unwrap();

    // History rows carry the chain and WAL positions.
    let rows = db
        .query("SELECT backup_type, method, parent_backup_id, start_lsn, stop_lsn FROM backup_history WHERE backup_id = $1", &[&incr2.backup_id])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "incremental");
    assert_eq!(rows[0].get::<_, String>(1), "wal");
    assert_eq!(rows[0].get::<_, Option<String>>(2).as_deref(), Some(diff.backup_id.as_str()));
    assert!(rows[0].get::<_, Option<String>>(4).is_some());
    assert_eq!(bm.chain(&incr2.backup_id).unwrap().len(), 3);
    let row = |id: String| {
        let db = db.clone();
        async move {
            let r = db
                .query(
                    "SELECT status, backup_type, method, parent_backup_id FROM backup_history WHERE backup_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            let r = &r[0];
            (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2), r.get::<_, Option<String>>(3))
        }
    };
    assert_eq!(row(full.backup_id.clone()).await, ("completed".into(), "full".into(), "pg_basebackup".into(), None));
    assert_eq!(
        row(diff.backup_id.clone()).await,
        ("completed".into(), "differential".into(), "wal".into(), Some(full.backup_id.clone()))
    );
    for m in [&full, &incr1, &diff, &incr2] {
        bm.verify(&m.backup_id).unwrap();
    }

    // Each backup restores to exactly its own end, although the archive holds more.
    let (ids, report) = restore_ids(&cfg, &name, Some(&full.backup_id), RecoveryTarget::EndOfBackup).await;
    assert_eq!(ids, vec![1]);
    assert_eq!(report.chain, vec![full.backup_id.clone()]);
    let (ids, report) = restore_ids(&cfg, &name, Some(&incr1.backup_id), RecoveryTarget::EndOfBackup).await;
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(report.chain, vec![full.backup_id.clone(), incr1.backup_id.clone()]);
    let (ids, report) = restore_ids(&cfg, &name, Some(&diff.backup_id), RecoveryTarget::EndOfBackup).await;
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert_eq!(
        report.chain,
        vec![full.backup_id.clone(), diff.backup_id.clone()],
        "a differential needs only the full"
    );
    let (ids, _) = restore_ids(&cfg, &name, Some(&incr2.backup_id), RecoveryTarget::EndOfBackup).await;
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);

    // Point in time: from the full backup plus archived WAL, to the moment between 3 and 4.
    let (ids, report) = restore_ids(&cfg, &name, Some(&full.backup_id), RecoveryTarget::Time(between)).await;
    assert_eq!(ids, vec![1, 2, 3], "kept the commit before the target, not the one after");
    assert!(report.target.starts_with("time "), "{}", report.target);
    assert!(
        report.recovery_log.iter().any(|l| l.contains("recovery stopping before commit")),
        "{:?}",
        report.recovery_log
    );
    // The newest fitting backup is chosen when none is named.
    let (ids, report) = restore_ids(&cfg, &name, None, RecoveryTarget::Time(between)).await;
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(report.backup_id, incr1.backup_id, "the newest backup that ended before the target");
    // Everything archived.
    let (ids, _) = restore_ids(&cfg, &name, None, RecoveryTarget::Latest).await;
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);

    // A target before the backup ended is refused up front.
    let rm = RecoveryManager::from_config(&cfg).unwrap();
    let mut opts = ClusterRestoreOptions::new(scratch_dir("early"), RecoveryTarget::Time(full.started_at));
    opts.backup_id = Some(incr2.backup_id.clone());
    let err = rm.restore_cluster(&opts).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("before backup")), "{err}");
    assert!(!opts.data_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_or_missing_file_in_a_physical_backup_is_caught_and_restore_refuses() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, bm) = setup().await;
    insert(&db, 1).await;
    let full = bm.create_physical(PhysicalKind::Full).await.unwrap();
    let repo = cfg.backup_dir.clone().unwrap();
    let file = repo.join(&full.backup_id).join("base.tar.zst.enc");
    let original = std::fs::read(&file).unwrap();
    let mut bad = original.clone();
    let pos = bad.len() / 2;
    bad[pos] ^= 0x01;
    std::fs::write(&file, &bad).unwrap();
    let err = bm.verify(&full.backup_id).unwrap_err();
    assert!(matches!(err, Error::Integrity(ref m) if m.contains("base.tar.zst.enc: chunk")), "{err}");
    let rm = RecoveryManager::from_config(&cfg).unwrap();
    let mut opts = ClusterRestoreOptions::new(scratch_dir("flip"), RecoveryTarget::EndOfBackup);
    opts.backup_id = Some(full.backup_id.clone());
    let err = rm.restore_cluster(&opts).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    assert!(!opts.data_dir.exists(), "a refused restore leaves no data directory behind");
    assert!(
        matches!(rm.test_restore(&full.backup_id).await, Err(Error::Integrity(_))),
        "a test restore refuses it too"
    );

    // A byte flipped in the last chunk, which holds only what follows tar's end marker, is
    // caught too: the restore reads the file to its end before it counts as unpacked.
    let mut bad = original.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    std::fs::write(&file, &bad).unwrap();
    let err = rm.restore_cluster(&opts).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(ref m) if m.contains("base.tar.zst.enc: chunk")), "{err}");
    assert!(!opts.data_dir.exists(), "a refused restore leaves no data directory behind");

    std::fs::remove_file(&file).unwrap();
    let err = bm.verify(&full.backup_id).unwrap_err();
    assert!(matches!(err, Error::Integrity(ref m) if m.contains("base.tar.zst.enc is missing")), "{err}");
    assert!(matches!(rm.restore_cluster(&opts).await, Err(Error::Integrity(_))));
    std::fs::write(&file, &original).unwrap();
    bm.verify(&full.backup_id).unwrap();

    // An incremental whose parent is gone is refused with the reason.
    insert(&db, 2).await;
    let incr = bm.create_physical(PhysicalKind::Incremental).await.unwrap();
    let manifest = repo.join(&full.backup_id).join("manifest.json");
    let saved = std::fs::read(&manifest).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    let err = bm.chain(&incr.backup_id).unwrap_err();
    assert!(matches!(err, Error::Integrity(ref m) if m.contains("needs") && m.contains(&full.backup_id)), "{err}");
    std::fs::write(&manifest, saved).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_files_and_archived_wal_hold_no_plaintext() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, bm) = setup().await;
    let marker = format!("physical-marker-{}", rand::random::<u64>());
    db.execute("INSERT INTO ledger SELECT g, $1 FROM generate_series(1000, 1200) g", &[&marker]).await.unwrap();
    let full = bm.create_physical(PhysicalKind::Full).await.unwrap();
    db.execute("INSERT INTO ledger SELECT g, $1 FROM generate_series(2000, 2200) g", &[&marker]).await.unwrap();
    let incr = bm.create_physical(PhysicalKind::Incremental).await.unwrap();
    let repo = cfg.backup_dir.clone().unwrap();
    let mut files =
        vec![repo.join(&full.backup_id).join("base.tar.zst.enc"), repo.join(&incr.backup_id).join("wal.tar.zst.enc")];
    for seg in &incr.physical.as_ref().unwrap().wal_segments {
        files.push(repo.join("wal").join(seg));
    }
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "plaintext in {}", f.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_push_is_idempotent_and_wal_fetch_round_trips_through_the_cli() {
    let _serial = SERIAL.lock().await;
    let (_cfg, _db, _bm) = setup().await;
    let conf = stack().var("ROOTSTREAM_TEST_ARCHIVE_CONF");
    let dir = scratch_dir("walcli");
    std::fs::create_dir_all(&dir).unwrap();
    // A name far beyond anything the cluster writes.
    let name = format!("00000001000000FF{:08X}", rand::random::<u32>() & 0xff);
    let seg = dir.join(&name);
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&seg, &data).unwrap();
    let rsdb = |args: &[&str]| Command::new(RSDB).arg("--config").arg(conf).args(args).output().unwrap();
    let first = rsdb(&["wal-push", seg.to_str().unwrap()]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // PostgreSQL retries a segment whose archiving it did not see succeed: same answer.
    let again = rsdb(&["wal-push", seg.to_str().unwrap()]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already archived"));
    // A different file of that name is refused and the archived one kept.
    std::fs::write(&seg, b"something else").unwrap();
    let clash = rsdb(&["wal-push", seg.to_str().unwrap()]);
    assert_eq!(clash.status.code(), Some(6), "{}", String::from_utf8_lossy(&clash.stderr));
    let out = dir.join("fetched");
    let fetched = rsdb(&["wal-fetch", &name, out.to_str().unwrap()]);
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // Asking for a file never archived: exit 4, quietly, nothing written.
    let missing = rsdb(&["wal-fetch", "00000001000000FE000000FF", dir.join("nothing").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(4));
    assert!(missing.stderr.is_empty());
    assert!(!dir.join("nothing").exists());
    // Not a WAL name: a usage error.
    let bad = rsdb(&["wal-fetch", "../../etc/passwd", out.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let repo = _cfg.backup_dir.clone().unwrap();
    std::fs::remove_file(repo.join("wal").join(&name)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_kept_backups_need_and_expires_older_wal() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, bm) = setup().await;
    let name = db_name(&cfg);
    let now_policy = RetentionPolicy {
        full: Duration::ZERO,
        incremental: Duration::ZERO,
        differential: Duration::ZERO,
        keep_last: 1,
    };
    insert(&db, 1).await;
    let base1 = bm.create_physical(PhysicalKind::Full).await.unwrap();
    insert(&db, 2).await;
    let incr1 = bm.create_physical(PhysicalKind::Incremental).await.unwrap();
    insert(&db, 3).await;
    let base2 = bm.create_physical(PhysicalKind::Full).await.unwrap();
    // incr1 is the newest incremental, so it is kept, and with it base1, which it needs.
    let r = bm.cleanup(&now_policy).await.unwrap();
    assert!(!r.deleted.contains(&base1.backup_id) && !r.deleted.contains(&incr1.backup_id), "{r:?}");
    bm.verify(&incr1.backup_id).unwrap();
    insert(&db, 4).await;
    let incr2 = bm.create_physical(PhysicalKind::Incremental).await.unwrap();
    assert_eq!(parent(&incr2).as_deref(), Some(base2.backup_id.as_str()));
    let r = bm.cleanup(&now_policy).await.unwrap();
    assert!(r.deleted.contains(&base1.backup_id) && r.deleted.contains(&incr1.backup_id), "{r:?}");
    assert!(r.wal_deleted > 0, "WAL before the oldest kept full backup is expired: {r:?}");
    assert!(matches!(bm.manifest(&base1.backup_id), Err(Error::NotFound(_))));
    // No archived segment older than what base2 needs remains; what it needs does.
    let start = base2.physical.as_ref().unwrap().start_wal.clone();
    let archived = bm.wal_archive().list().unwrap();
    for (n, _) in &archived {
        if let Some(pos) = rootstream_db::backup::wal::segment_position(n) {
            assert!(pos >= &start[8..], "{n} should have been expired (oldest needed {start})");
        }
    }
    assert!(archived.iter().any(|(n, _)| n == &start || n.starts_with(&start)), "{start} must be kept");
    // What is kept still restores.
    let (ids, _) = restore_ids(&cfg, &name, Some(&incr2.backup_id), RecoveryTarget::EndOfBackup).await;
    assert_eq!(ids, vec![1, 2, 3, 4]);
    // A backup another one builds on cannot be deleted by hand.
    let err = bm.delete(&base2.backup_id).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(ref m) if m.contains(&incr2.backup_id)), "{err}");
    bm.delete(&incr2.backup_id).await.unwrap();
    bm.delete(&base2.backup_id).await.unwrap();
    // Deleting it again: there is nothing left to delete.
    assert!(matches!(bm.delete(&base2.backup_id).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_restore_checks_physical_and_logical_backups_in_scratch_space() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, bm) = setup().await;
    insert(&db, 1).await;
    let full = bm.create_physical(PhysicalKind::Full).await.unwrap();
    let logical = bm.create_full().await.unwrap();
    let rm = RecoveryManager::new(bm.clone());
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut rm_progress = rm.clone();
    let sink = events.clone();
    rm_progress.set_progress(Some(std::sync::Arc::new(move |p: &rootstream_db::backup::Progress| {
        sink.lock().unwrap().push(p.phase.clone());
    })));
    let r = rm_progress.test_restore(&full.backup_id).await.unwrap();
    assert_eq!(r.kind, "physical");
    assert!(r.tables_checked > 0);
    let phases = events.lock().unwrap().clone();
    for want in ["restore", "check", "done"] {
        assert!(phases.iter().any(|p| p == want), "no {want} progress in {phases:?}");
    }
    let r = rm.test_restore(&logical.backup_id).await.unwrap();
    assert_eq!(r.kind, "logical");
    assert_eq!(r.backup_id, logical.backup_id);
    assert_eq!(r.tables_checked, logical.row_counts.len());
    assert_eq!(r.rows, logical.row_counts.values().sum::<i64>());
    // Without the database there is nowhere to make the scratch database.
    let mut repo_only = cfg.clone();
    repo_only.set("database_url", "").unwrap();
    let bare = RecoveryManager::from_config(&repo_only).unwrap();
    let err = bare.test_restore(&logical.backup_id).await.unwrap_err();
    assert!(matches!(err, Error::Config(ref m) if m.contains("database")), "{err}");
    let scratch: i64 =
        db.query("SELECT count(*) FROM pg_database WHERE datname LIKE 'rsdb_check_%'", &[]).await.unwrap()[0].get(0);
    assert_eq!(scratch, 0, "the scratch database is dropped");
    let _ = cfg;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_needs_a_full_physical_backup_and_the_cli_takes_all_three_kinds() {
    let _serial = SERIAL.lock().await;
    let (cfg, _db, _bm) = setup().await;
    // A database whose history has no physical backup yet.
    let fresh = fresh_config().await;
    let mut other = cfg.clone();
    other.set("database_url", fresh.database_url.as_deref().unwrap()).unwrap();
    let odb = DatabaseManager::connect(&other).await.unwrap();
    migrations::migrate(&odb).await.unwrap();
    let obm = BackupManager::new(odb.clone(), &other).unwrap();
    for kind in [PhysicalKind::Incremental, PhysicalKind::Differential] {
        let err = obm.create_physical(kind).await.unwrap_err();
        assert!(matches!(err, Error::State(ref m) if m.contains("full physical backup")), "{kind:?}: {err}");
    }
    // A logical backup in the history is no base for them either.
    obm.create_full().await.unwrap();
    let err = obm.create_physical(PhysicalKind::Incremental).await.unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err}");

    let conf = stack().var("ROOTSTREAM_TEST_ARCHIVE_CONF");
    let url = other.database_url.clone().unwrap();
    let run = |args: &[&str]| {
        Command::new(RSDB).arg("--config").arg(conf).arg("--database-url").arg(&url).args(args).output().unwrap()
    };
    for args in [
        vec!["backup", "create", "--physical"],
        vec!["backup", "create", "--type", "incremental"],
        vec!["backup", "create", "--type", "differential"],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let list = run(&["backup", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    for kind in ["full", "incremental", "differential"] {
        assert!(text.contains(kind), "{text}");
    }
    let repo_list =
        Command::new(RSDB).arg("--config").arg(conf).args(["backup", "list", "--repository"]).output().unwrap();
    assert!(repo_list.status.success());
    assert!(String::from_utf8_lossy(&repo_list.stdout).contains("physical"));
    let bad = run(&["restore", "--data-dir", "/tmp/x", "--target-time", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    let neither = run(&["restore", "some-id"]);
    assert_eq!(neither.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_progress_names_the_backup_and_restore_cluster_reports_its_phases() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, mut bm) = setup().await;
    insert(&db, 1).await;
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<rootstream_db::backup::Progress>::new()));
    let sink = events.clone();
    let cb: rootstream_db::backup::ProgressFn = std::sync::Arc::new(move |p| sink.lock().unwrap().push(p.clone()));
    bm.set_progress(Some(cb.clone()));
    let full = bm.create_physical(PhysicalKind::Full).await.unwrap();
    let got = std::mem::take(&mut *events.lock().unwrap());
    assert!(got.iter().any(|p| p.phase == "done"), "{got:?}");
    assert!(got.iter().all(|p| p.backup_id == full.backup_id && !p.message.is_empty()), "{got:?}");
    bm.set_progress(None);
    insert(&db, 2).await;
    let incr = bm.create_physical(PhysicalKind::Incremental).await.unwrap();
    assert!(events.lock().unwrap().is_empty(), "no callback, no reports");

    let mut rm = RecoveryManager::from_config(&cfg).unwrap();
    rm.set_progress(Some(cb));
    let mut opts = ClusterRestoreOptions::new(scratch_dir("progress"), RecoveryTarget::EndOfBackup);
    opts.backup_id = Some(incr.backup_id.clone());
    opts.port = closed_port();
    let report = rm.restore_cluster(&opts).await.unwrap();
    assert_eq!(report.port, opts.port, "a port that is asked for is used");
    assert!(!report.running && !opts.data_dir.join("postmaster.pid").exists(), "stopped without keep_running");
    assert_eq!(report.databases[&db_name(&cfg)]["public.ledger"], 2);
    let got = events.lock().unwrap().clone();
    for want in ["restore", "check", "done"] {
        assert!(got.iter().any(|p| p.phase == want), "no {want} progress in {got:?}");
    }
    assert!(got.iter().all(|p| p.bytes_total.is_none_or(|t| p.bytes_done <= t)), "{got:?}");
    assert!(got.iter().filter(|p| p.phase == "restore").all(|p| p.bytes_total.is_some()), "a restore knows its total");
    assert!(got.iter().filter(|p| p.phase == "done").all(|p| p.backup_id == incr.backup_id), "{got:?}");
    std::fs::remove_dir_all(&opts.data_dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_alone_lists_and_restores_and_each_restore_refuses_the_other_kind() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, bm) = setup().await;
    insert(&db, 1).await;
    insert(&db, 2).await;
    let logical = bm.create_full().await.unwrap();
    let full = bm.create_physical(PhysicalKind::Full).await.unwrap();

    let mut repo_only = cfg.clone();
    repo_only.set("database_url", "").unwrap();
    let mut rm = RecoveryManager::from_config(&repo_only).unwrap();
    let phases = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = phases.clone();
    rm.set_progress(Some(std::sync::Arc::new(move |p: &rootstream_db::backup::Progress| {
        sink.lock().unwrap().push(p.phase.clone())
    })));
    let listed = rm.list_repository().unwrap();
    let at = |id: &str| listed.iter().position(|m| m.backup_id == id).unwrap_or_else(|| panic!("{id} not listed"));
    assert!(at(&logical.backup_id) < at(&full.backup_id), "oldest first");
    assert_eq!(listed[at(&logical.backup_id)], logical, "the signed manifest as create returned it");
    assert_eq!(listed[at(&full.backup_id)], full);
    assert!(listed[at(&full.backup_id)].is_physical());

    // A logical backup restores into an empty database from the repository alone.
    let target = create_database().await;
    let report = rm.restore_database(&logical.backup_id, &stack().url_for(&target)).await.unwrap();
    assert_eq!(report.tables_checked, logical.row_counts.len());
    assert!(phases.lock().unwrap().iter().any(|p| p == "done"), "{:?}", phases.lock().unwrap());
    let (c, conn) = tokio_postgres::connect(&stack().url_for(&target), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let ids: Vec<i32> =
        c.query("SELECT id FROM ledger ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1, 2]);

    // Each restore refuses the other kind, and leaves nothing behind.
    let other = create_database().await;
    let err = rm.restore_database(&full.backup_id, &stack().url_for(&other)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("physical")), "{err}");
    let mut opts = ClusterRestoreOptions::new(scratch_dir("kind"), RecoveryTarget::EndOfBackup);
    opts.backup_id = Some(logical.backup_id.clone());
    let err = rm.restore_cluster(&opts).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("logical")), "{err}");
    assert!(!opts.data_dir.exists());

    // A data directory that is not empty is refused and left as it was.
    std::fs::create_dir_all(opts.data_dir.join("sub")).unwrap();
    opts.backup_id = Some(full.backup_id.clone());
    let err = rm.restore_cluster(&opts).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("not empty")), "{err}");
    assert!(opts.data_dir.join("sub").is_dir());
    assert!(!opts.data_dir.join("postmaster.pid").exists());
    std::fs::remove_dir_all(&opts.data_dir).unwrap();

    // init_repository creates a missing directory, is idempotent, and names what it cannot create.
    let fresh = scratch_dir("init").join("repo");
    let mut c = cfg.clone();
    c.set("backup_dir", fresh.to_str().unwrap()).unwrap();
    let fresh_bm = BackupManager::new(db.clone(), &c).unwrap();
    assert!(!fresh.exists());
    fresh_bm.init_repository().unwrap();
    assert!(fresh.is_dir());
    fresh_bm.init_repository().unwrap();
    std::fs::remove_dir_all(fresh.parent().unwrap()).unwrap();
    c.set("backup_dir", "/proc/rsdb-nope/repo").unwrap();
    let err = BackupManager::new(db.clone(), &c).unwrap().init_repository().unwrap_err();
    assert!(matches!(err, Error::Io(ref m) if m.contains("/proc/rsdb-nope")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_refused_while_an_incremental_or_a_differential_builds_on_a_backup() {
    let _serial = SERIAL.lock().await;
    let (_cfg, db, bm) = setup().await;
    let status = |id: String| {
        let db = db.clone();
        async move {
            db.query("SELECT status FROM backup_history WHERE backup_id = $1", &[&id]).await.unwrap()[0]
                .get::<_, String>(0)
        }
    };
    insert(&db, 1).await;
    let full = bm.create_physical(PhysicalKind::Full).await.unwrap().backup_id;
    insert(&db, 2).await;
    let incr = bm.create_physical(PhysicalKind::Incremental).await.unwrap().backup_id;
    insert(&db, 3).await;
    let diff = bm.create_physical(PhysicalKind::Differential).await.unwrap().backup_id;

    let err = bm.delete(&full).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(ref m) if m.contains(&incr)), "{err}");
    assert_eq!(status(full.clone()).await, "completed");
    assert!(bm.delete(&incr).await.unwrap() > 0, "the bytes freed");
    assert_eq!(status(incr.clone()).await, "deleted");
    let err = bm.delete(&full).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(ref m) if m.contains(&diff)), "the differential builds on it too: {err}");
    assert!(bm.delete(&diff).await.unwrap() > 0);
    assert!(bm.delete(&full).await.unwrap() > 0);
    assert!(matches!(bm.storage().get(&format!("{full}/manifest.json")), Err(Error::NotFound(_))));
    assert_eq!(status(full.clone()).await, "deleted");
    assert!(matches!(bm.verify(&full), Err(Error::NotFound(_))));
    assert!(matches!(bm.delete("full-20000101T000000Z-000000").await, Err(Error::NotFound(_))));
    // With the only full backup gone, an incremental has nothing to build on.
    assert!(matches!(bm.create_physical(PhysicalKind::Incremental).await, Err(Error::State(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_restore_over_a_drifted_data_directory_gives_what_a_full_restore_gives() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, bm) = setup().await;
    let name = db_name(&cfg);
    insert(&db, 1).await;
    let full = bm.create_physical(PhysicalKind::Full).await.unwrap();
    let rm = RecoveryManager::from_config(&cfg).unwrap();
    let restore = |dir: PathBuf, delta: bool, keep_running: bool| {
        let rm = rm.clone();
        let id = full.backup_id.clone();
        async move {
            let mut opts = ClusterRestoreOptions::new(&dir, RecoveryTarget::EndOfBackup);
            opts.backup_id = Some(id);
            opts.delta = delta;
            opts.keep_running = keep_running;
            opts.timeout = Duration::from_secs(300);
            rm.restore_cluster(&opts).await
        }
    };
    let connect = |port: u16| {
        let name = name.clone();
        async move {
            let (client, conn) = tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=postgres dbname={name}"),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            client
        }
    };
    // The reference: a full restore into a new directory.
    let reference = scratch_dir("delta-ref");
    let full_report = restore(reference.clone(), false, false).await.unwrap();
    assert!(full_report.delta.is_none());

    // A restored cluster that then lived on: rows written, a table created, a file added, one
    // removed.
    let dir = scratch_dir("delta");
    let first = restore(dir.clone(), false, true).await.unwrap();
    let client = connect(first.port).await;
    client
        .batch_execute(
            "INSERT INTO ledger SELECT g, 'drift' FROM generate_series(100, 5000) g;
             CREATE TABLE drifted AS SELECT g FROM generate_series(1, 10000) g; CHECKPOINT;",
        )
        .await
        .unwrap();
    drop(client);
    // A delta restore refuses a running server's directory, and a directory that is not one.
    let err = restore(dir.clone(), true, false).await.unwrap_err();
    assert!(matches!(err, Error::State(ref m) if m.contains("running")), "{err}");
    let not_pg = scratch_dir("delta-not-pg");
    std::fs::create_dir_all(&not_pg).unwrap();
    std::fs::write(not_pg.join("notes"), b"keep me").unwrap();
    let err = restore(not_pg.clone(), true, false).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("PG_VERSION")), "{err}");
    assert_eq!(std::fs::read(not_pg.join("notes")).unwrap(), b"keep me");
    std::fs::remove_dir_all(&not_pg).unwrap();
    rootstream_db::backup::cluster::stop_cluster(&cfg, &dir).unwrap();
    std::fs::write(dir.join("stray.txt"), b"not in the backup").unwrap();
    std::fs::remove_file(dir.join("pg_hba.conf")).unwrap();

    let report = restore(dir.clone(), true, true).await.unwrap();
    let d = report.delta.clone().expect("a delta restore reports what it changed");
    println!("full restore {:.2} s, delta restore {:.2} s: {d:?}", full_report.seconds, report.seconds);
    assert!(d.files_unchanged > 100, "most files were left alone: {d:?}");
    assert!(d.files_changed >= 1 && d.files_created >= 1, "{d:?}");
    assert!(d.paths_removed >= 2, "stray.txt and the drifted table's files: {d:?}");
    assert!(d.bytes_written < d.bytes_compared / 4, "only the differing blocks were written: {d:?}");
    assert!(!dir.join("stray.txt").exists() && dir.join("pg_hba.conf").exists());
    let client = connect(report.port).await;
    let ids: Vec<i32> =
        client.query("SELECT id FROM ledger ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let drifted: Option<String> =
        client.query_one("SELECT to_regclass('public.drifted')::text", &[]).await.unwrap().get(0);
    drop(client);
    assert_eq!(ids, vec![1]);
    assert_eq!(drifted, None, "the table created after the backup is gone");
    assert_eq!(report.databases, full_report.databases, "the same rows as the full restore, table by table");
    rootstream_db::backup::cluster::stop_cluster(&cfg, &dir).unwrap();
    std::fs::remove_dir_all(&reference).unwrap();

    // A flipped byte in the backup is refused by a delta restore too, naming the backup; the
    // directory is left for inspection, never started.
    let object = cfg.backup_dir.clone().unwrap().join(&full.backup_id).join("base.tar.zst.enc");
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&object, &bytes).unwrap();
    let err = restore(dir.clone(), true, false).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(ref m) if m.contains(&full.backup_id)), "{err}");
    assert!(!dir.join("postmaster.pid").exists(), "a refused delta restore starts nothing");
    bm.delete(&full.backup_id).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_block_map_of_archived_wal_names_the_blocks_creates_truncations_and_drops_of_a_table() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, _bm) = setup().await;
    let lsn = |db: DatabaseManager| async move {
        db.query("SELECT pg_current_wal_insert_lsn()::text", &[]).await.unwrap()[0].get::<_, String>(0)
    };
    let start = lsn(db.clone()).await;
    db.batch_execute("CREATE TABLE mapped (id INT, body TEXT)").await.unwrap();
    let (dbid, rel): (u32, u32) = {
        let r = db
            .query(
                "SELECT (SELECT oid FROM pg_database WHERE datname = current_database())::oid,
                        pg_relation_filenode('mapped')::oid",
                &[],
            )
            .await
            .unwrap();
        (r[0].get(0), r[0].get(1))
    };
    db.batch_execute("INSERT INTO mapped SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g").await.unwrap();
    db.batch_execute("DELETE FROM mapped WHERE id > 100").await.unwrap();
    db.batch_execute("VACUUM mapped").await.unwrap();
    db.batch_execute("DROP TABLE mapped").await.unwrap();
    let end = lsn(db.clone()).await;
    // Every segment of the range in the archive, then decrypted into a directory of its own.
    let row = db
        .query("SELECT pg_walfile_name(pg_switch_wal()), (SELECT timeline_id FROM pg_control_checkpoint())", &[])
        .await
        .unwrap();
    let (last, timeline): (String, i32) = (row[0].get(0), row[0].get(1));
    let archive = rootstream_db::backup::WalArchive::from_config(&cfg).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while archive.storage().size(&format!("wal/{last}")).unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "{last} was not archived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seg = 16 << 20;
    let wal_dir = scratch_dir("blockmap");
    std::fs::create_dir_all(&wal_dir).unwrap();
    let (from, to) = (
        rootstream_db::backup::wal::parse_lsn(&start).unwrap() / seg,
        rootstream_db::backup::wal::parse_lsn(&end).unwrap() / seg,
    );
    for s in from..=to {
        let name = rootstream_db::backup::wal::segment_name(timeline as u32, s * seg, seg);
        archive.fetch(&name, &wal_dir.join(&name)).unwrap();
    }
    let pg_waldump = Path::new(stack().var("ROOTSTREAM_PG_BIN")).join("pg_waldump");
    let map =
        rootstream_db::backup::blockmap::BlockMap::from_wal_dir(&pg_waldump, &wal_dir, timeline as u32, &start, &end)
            .unwrap();
    std::fs::remove_dir_all(&wal_dir).unwrap();
    let fork = |f: &str| rootstream_db::backup::blockmap::RelFork {
        tablespace: 1663,
        database: dbid,
        relfilenode: rel,
        fork: f.into(),
    };
    let main = map.forks.get(&fork("main")).unwrap_or_else(|| panic!("no changes of the table in {map:?}"));
    println!(
        "{} records; the table: {} blocks written, truncated to {:?}",
        map.records,
        main.blocks.len(),
        main.truncated_to
    );
    assert!(main.created && main.dropped, "{main:?}");
    // 2,000 rows of 200 bytes fill some 55 blocks; VACUUM cut the empty tail off.
    assert!(main.blocks.len() > 40 && main.blocks.contains(&0), "{main:?}");
    assert!(main.truncated_to.is_some_and(|n| n < 10), "{main:?}");
    assert!(map.forks.get(&fork("vm")).is_some_and(|v| v.blocks.contains(&0)), "VACUUM set the visibility map");
    assert_eq!(fork("main").path(""), format!("base/{dbid}/{rel}"));
    // A range the archive cannot give is an error naming pg_waldump's complaint.
    let empty = scratch_dir("blockmap-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err =
        rootstream_db::backup::blockmap::BlockMap::from_wal_dir(&pg_waldump, &empty, 1, &start, &end).unwrap_err();
    assert!(matches!(err, Error::Io(ref m) if m.contains("pg_waldump")), "{err}");
    std::fs::remove_dir_all(&empty).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_read_through_the_server_equal_the_data_files_bytes() {
    let _serial = SERIAL.lock().await;
    let (_cfg, db, _bm) = setup().await;
    db.batch_execute(
        "DROP TABLE IF EXISTS read_back; CREATE TABLE read_back AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 3000) g;
         CHECKPOINT",
    )
    .await
    .unwrap();
    let path: String = db.query("SELECT pg_relation_filepath('read_back')", &[]).await.unwrap()[0].get(0);
    let data_dir: String = db.query("SHOW data_directory", &[]).await.unwrap()[0].get(0);
    let file = std::fs::read(Path::new(&data_dir).join(&path)).unwrap();
    let nblocks = (file.len() / 8192) as u32;
    assert!(nblocks > 10, "{nblocks}");
    let wanted: std::collections::BTreeSet<u32> = [0, 1, 2, 5, nblocks - 1, nblocks, nblocks + 7].into_iter().collect();
    let got = rootstream_db::backup::blockmap::read_blocks(&db, &path, &wanted).await.unwrap();
    assert_eq!(
        got.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        vec![0, 1, 2, 5, nblocks - 1],
        "blocks past the end are left out"
    );
    for (b, bytes) in &got {
        let at = *b as usize * 8192;
        assert_eq!(&bytes[..], &file[at..at + 8192], "block {b}");
    }
    let none = rootstream_db::backup::blockmap::read_blocks(&db, "base/1/999999999", &wanted).await.unwrap();
    assert!(none.is_empty(), "a missing file gives nothing");
    db.batch_execute("DROP TABLE read_back").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_through_sql_lists_the_data_directory_and_ends_with_its_label() {
    let _serial = SERIAL.lock().await;
    let (cfg, db, _bm) = setup().await;
    let url = cfg.database_url.clone().unwrap();
    let backup = rootstream_db::backup::blockmap::SqlBackup::start(&url, "rsdb-sql-backup-test").await.unwrap();
    assert!(rootstream_db::backup::wal::parse_lsn(&backup.start_lsn).is_ok(), "{}", backup.start_lsn);
    let files = backup.files().await.unwrap();
    let has = |p: &str| files.iter().any(|(f, _)| f == p);
    assert!(has("PG_VERSION") && has("global/pg_control") && has("pg_wal"), "{} files", files.len());
    assert!(files.iter().any(|(f, size)| f.starts_with("base/") && size.is_some_and(|s| s % 8192 == 0 && s > 0)));
    assert!(!files.iter().any(|(f, _)| f.starts_with("pg_wal/") || f == "postmaster.pid"), "exclusions applied");
    let path: String = db.query("SELECT pg_relation_filepath('ledger')", &[]).await.unwrap()[0].get(0);
    assert!(has(&path), "the ledger's file {path} is listed");
    let start = backup.start_lsn.clone();
    let end = backup.stop().await.unwrap();
    assert!(end.backup_label.contains("LABEL: rsdb-sql-backup-test"), "{}", end.backup_label);
    assert!(end.backup_label.contains(&format!("START WAL LOCATION: {start}")), "{}", end.backup_label);
    let lsn = rootstream_db::backup::wal::parse_lsn;
    assert!(lsn(&end.stop_lsn).unwrap() >= lsn(&start).unwrap(), "{} < {start}", end.stop_lsn);
}
