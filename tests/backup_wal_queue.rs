//! The bounded WAL queue against a real PostgreSQL cluster of this test's own (4 MiB WAL
//! segments, `archive_command = rsdb wal-push`, `wal_queue_max` set once the data is loaded): the repository is made
//! unreachable while pgbench writes, `pg_wal` stays bounded, the gap is recorded and reported,
//! recovery across it is refused, and recovery after the next full backup works.

mod support;

use rootstream_db::backup::{BackupManager, ClusterRestoreOptions, PhysicalKind, RecoveryManager, RecoveryTarget};
use rootstream_db::db::migrations;
use rootstream_db::{Config, DatabaseManager, Error};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const RSDB: &str = env!("CARGO_BIN_EXE_rsdb");
const SEGMENT: u64 = 4 << 20;
const LIMIT: u64 = 6 * SEGMENT;

fn postgres_ids() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    Some((uid, String::from_utf8_lossy(&out.stdout).trim().parse().ok()?))
}

/// A PostgreSQL tool, run as `postgres` when the test runs as root.
fn pg(tool: &str) -> Command {
    let path = Path::new(stack().var("ROOTSTREAM_PG_BIN")).join(tool);
    if postgres_ids().is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

struct Cluster {
    dir: PathBuf,
    port: u16,
    cfg: Config,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("pg")
    }

    fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    /// Moves the repository away and leaves a file in its place: every store fails.
    fn break_repository(&self) {
        std::fs::rename(self.repo(), self.dir.join("repo-away")).unwrap();
        std::fs::write(self.repo(), b"the repository is unreachable").unwrap();
    }

    fn mend_repository(&self) {
        std::fs::remove_file(self.repo()).unwrap();
        std::fs::rename(self.dir.join("repo-away"), self.repo()).unwrap();
    }

    /// Bytes of WAL waiting to be archived, and of all of `pg_wal`.
    fn wal_sizes(&self) -> (u64, u64) {
        let wal = self.data().join("pg_wal");
        let ready = std::fs::read_dir(wal.join("archive_status"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".ready").map(str::to_string))
                    .filter_map(|n| std::fs::metadata(wal.join(n)).ok().map(|m| m.len()))
                    .sum()
            })
            .unwrap_or(0);
        let all = std::fs::read_dir(&wal)
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
            .unwrap_or(0);
        (ready, all)
    }

    fn stop(&self) {
        let mut c = pg("pg_ctl");
        c.args(["-D"]).arg(self.data()).args(["-m", "fast", "-w", "stop"]);
        let _ = c.output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// initdb with 4 MiB segments, archiving through `rsdb wal-push` into `DIR/repo`, the gap
/// history in the cluster's own database.
fn start_cluster() -> Cluster {
    let dir = std::env::temp_dir().join(format!("rsdb-walq-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    let key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let conf = dir.join("archive.conf");
    std::fs::write(
        &conf,
        format!(
            "backup_dir = {}\nmaster_key = {key}\nmaster_key_id = walq\npg_bin_dir = {}\ndatabase_url = {url}\n\
             wal_push_parallel = 2\nrsdb_path = {RSDB}\n",
            dir.join("repo").display(),
            stack().var("ROOTSTREAM_PG_BIN"),
        ),
    )
    .unwrap();
    if let Some((uid, gid)) = postgres_ids() {
        for p in [dir.clone(), dir.join("repo"), conf.clone()] {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        }
    }
    let mut c = pg("initdb");
    c.arg("-D").arg(dir.join("pg")).args([
        "-U",
        "postgres",
        "--auth=trust",
        "--wal-segsize=4",
        "--no-sync",
        "-E",
        "UTF8",
    ]);
    run(c, "initdb");
    let archive = format!("'{RSDB}' --config '{}' wal-push %p", conf.display());
    let settings = format!(
        "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nwal_level = replica\n\
         max_wal_senders = 4\narchive_mode = on\narchive_command = '{}'\nmax_wal_size = 16MB\nmin_wal_size = 8MB\n\
         checkpoint_timeout = 30s\n",
        archive.replace('\'', "''")
    );
    let pgconf = dir.join("pg/postgresql.conf");
    let mut text = std::fs::read_to_string(&pgconf).unwrap();
    text.push_str(&settings);
    std::fs::write(&pgconf, text).unwrap();
    let mut c = pg("pg_ctl");
    c.arg("-D").arg(dir.join("pg")).arg("-l").arg(dir.join("pg/server.log")).args(["-w", "-t", "60", "start"]);
    run(c, "pg_ctl start");
    let mut cfg = Config::default();
    cfg.apply_file(&conf).unwrap();
    Cluster { dir, port, cfg }
}

async fn wait_archived(db: &DatabaseManager, segment: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = db.query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", &[]).await.unwrap();
        let last: String = row[0].get(0);
        if last.as_str() >= segment {
            return;
        }
        assert!(Instant::now() < deadline, "{segment} was not archived (last {last})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Switches to a new segment and waits until the finished one is archived.
async fn switch_and_archive(db: &DatabaseManager) {
    let seg: String = db.query("SELECT pg_walfile_name(pg_switch_wal())", &[]).await.unwrap()[0].get(0);
    wait_archived(db, &seg).await;
}

async fn ids_after_restore(c: &Cluster, backup_id: Option<&str>, target: RecoveryTarget) -> Result<Vec<i32>, Error> {
    let rm = RecoveryManager::from_config(&c.cfg).unwrap();
    let dir = c.dir.join(format!("restore-{}", rand::random::<u32>()));
    let mut opts = ClusterRestoreOptions::new(&dir, target);
    opts.backup_id = backup_id.map(str::to_string);
    opts.keep_running = true;
    opts.timeout = Duration::from_secs(300);
    let report = rm.restore_cluster(&opts).await?;
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname=postgres", report.port),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let ids = client.query("SELECT id FROM marks ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    drop(client);
    rootstream_db::backup::cluster::stop_cluster(&c.cfg, &dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_repository_cannot_fill_pg_wal_and_the_gap_it_leaves_is_reported_and_refused() {
    let c = start_cluster();
    let db = DatabaseManager::connect(&c.cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    db.batch_execute("CREATE TABLE marks (id INT PRIMARY KEY)").await.unwrap();
    let bm = BackupManager::new(db.clone(), &c.cfg).unwrap();
    let mut bench = pg("pgbench");
    bench.args(["-i", "-s", "2", "-q", "-h", "127.0.0.1", "-p", &c.port.to_string(), "-U", "postgres", "postgres"]);
    run(bench, "pgbench -i");
    db.execute("INSERT INTO marks VALUES (1)", &[]).await.unwrap();
    let b1 = bm.create_physical(PhysicalKind::Full).await.unwrap();
    // Mark 2 is committed before `t2`, mark 3 after it, both before the repository fails.
    db.execute("INSERT INTO marks VALUES (2)", &[]).await.unwrap();
    let t2: chrono::DateTime<chrono::Utc> = db.query("SELECT clock_timestamp()", &[]).await.unwrap()[0].get(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    db.execute("INSERT INTO marks VALUES (3)", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    switch_and_archive(&db).await;

    // Each push reads the configuration afresh: the limit applies from the next one on.
    let conf = c.dir.join("archive.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{text}wal_queue_max = {LIMIT}\n")).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let watch = bm.watch_wal_gaps(
        Duration::from_millis(200),
        std::sync::Arc::new(move |g: &rootstream_db::backup::WalGap| sink.lock().unwrap().push(g.clone())),
    );
    c.break_repository();
    let mut bench = pg("pgbench");
    bench.args([
        "-T",
        "12",
        "-c",
        "2",
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        &c.port.to_string(),
        "-U",
        "postgres",
        "postgres",
    ]);
    let mut child = bench.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let (mut max_ready, mut max_all) = (0, 0);
    while child.try_wait().unwrap().is_none() {
        let (ready, all) = c.wal_sizes();
        max_ready = max_ready.max(ready);
        max_all = max_all.max(all);
        std::thread::sleep(Duration::from_millis(20));
    }
    let gaps = bm.wal_gaps().await.unwrap();
    println!("wal_queue_max {LIMIT}: most WAL waiting {max_ready}, largest pg_wal {max_all}; gaps {gaps:?}");
    assert!(max_ready <= LIMIT + SEGMENT, "the queue stayed within the limit and one segment: {max_ready}");
    // Beside the queue, pg_wal holds the WAL since the last checkpoint (max_wal_size, 16 MiB)
    // and segments recycled for reuse.
    assert!(max_all <= LIMIT + 8 * SEGMENT, "pg_wal stayed bounded: {max_all}");
    assert_eq!(gaps.len(), 1, "one gap, from the database's rows while the repository is away: {gaps:?}");
    let gap = gaps[0].clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(watch);
    let alerts = seen.lock().unwrap().clone();
    assert!(!alerts.is_empty() && alerts.iter().all(|g| g.first_segment == gap.first_segment), "{alerts:?}");
    assert!(alerts.windows(2).all(|w| w[0].segments < w[1].segments), "each alert says the gap grew: {alerts:?}");
    assert!(gap.segments >= 5, "pgbench wrote well past the limit: {gap:?}");
    assert!(gap.complete_before.is_some_and(|t| t > t2), "{gap:?}");

    // The repository returns: the next push tells it of the gap before storing anything.
    c.mend_repository();
    switch_and_archive(&db).await;
    let in_repo = bm.wal_gaps_in_repository().unwrap();
    assert_eq!(in_repo.len(), 1);
    assert_eq!(in_repo[0].first_segment, gap.first_segment);
    assert_eq!(in_repo[0].affected_backups, vec![b1.backup_id.clone()]);
    assert_eq!(in_repo[0].closed_by, None);

    // An incremental cannot cross it; recovery past it is refused, before it works.
    let err = bm.create_physical(PhysicalKind::Incremental).await.unwrap_err();
    assert!(matches!(err, Error::State(ref m) if m.contains("WAL gap")), "{err}");
    let err = ids_after_restore(&c, Some(&b1.backup_id), RecoveryTarget::Latest).await.unwrap_err();
    assert!(matches!(err, Error::State(ref m) if m.contains("WAL gap") && m.contains(&gap.first_segment)), "{err}");
    let past = gap.complete_before.unwrap() + chrono::Duration::seconds(2);
    let err = ids_after_restore(&c, Some(&b1.backup_id), RecoveryTarget::Time(past)).await.unwrap_err();
    assert!(matches!(err, Error::State(ref m) if m.contains("before")), "{err}");
    assert_eq!(ids_after_restore(&c, Some(&b1.backup_id), RecoveryTarget::Time(t2)).await.unwrap(), vec![1, 2]);

    // A full backup closes the gap: recovery to a later moment starts from it.
    let b2 = bm.create_physical(PhysicalKind::Full).await.unwrap();
    db.execute("INSERT INTO marks VALUES (4)", &[]).await.unwrap();
    switch_and_archive(&db).await;
    let gaps = bm.wal_gaps().await.unwrap();
    assert_eq!(gaps[0].closed_by.as_deref(), Some(b2.backup_id.as_str()));
    let row = db.query("SELECT closed_by_backup_id FROM wal_gaps", &[]).await.unwrap();
    assert_eq!(row[0].get::<_, Option<String>>(0).as_deref(), Some(b2.backup_id.as_str()));
    assert_eq!(ids_after_restore(&c, None, RecoveryTarget::Latest).await.unwrap(), vec![1, 2, 3, 4]);

    // What an operator sees.
    let out = Command::new(RSDB)
        .args(["--config"])
        .arg(c.dir.join("archive.conf"))
        .args(["backup", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("[PITR stops at WAL gap {}]", gap.first_segment)), "{text}");
    assert!(text.contains(&format!("closed by full backup {}", b2.backup_id)), "{text}");
    let out = Command::new(RSDB)
        .args(["--config"])
        .arg(c.dir.join("archive.conf"))
        .args(["backup", "verify", &b1.backup_id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("cannot cross a WAL gap"), "{text}");
    db.close();
}
