//! Backup benchmark beside baselines from the same run on the same database.
//!
//! Logical: our full backup (pg_dump → zstd → AES-256-GCM chunks) against `pg_dump | zstd` (the
//! same compression without encryption) and a plain `pg_dump` custom-format dump; restore
//! against `pg_restore`.
//!
//! Physical: our full physical backup (pg_basebackup tar → zstd 3 → AES-256-GCM chunks) against
//! `pg_basebackup -Ft | zstd -3` and pgBackRest full backups (zst level 3, without and with its
//! aes-256-cbc encryption); our restore into a new data directory (to the end of the backup,
//! server started, recovery finished, rows counted) against `pgbackrest restore` followed by the
//! same start, wait and count. pgBackRest runs with a configuration of its own in a temporary
//! directory, against the bench's stack only, with `process-max=2` (a process per core of the
//! benchmark machine, for backup and restore); while it is measured, the stack's archive_command
//! pushes WAL into its repository, so its backups hold the WAL they need, as ours do.
//!
//! Each physical measurement runs `RSDB_BENCH_BACKUP_RUNS` times (default 3), the tools taking
//! turns in a rotating order, and is reported as the median with the range.
//!
//! WAL archiving: a burst of 24 segments of 16 MiB, pushed as PostgreSQL's archiver drives
//! `wal-push` (each named in order and waited for), one at a time against
//! `wal_push_parallel` = 2 and 4, into a local repository.
//!
//! `RSDB_BENCH_BACKUP_MB` sets the size of the benchmark database (default 500); rows are added
//! until the database is at least that large.
//! Run with `scripts/bench.sh --bench backup`.

#[path = "../tests/support/mod.rs"]
mod support;

use rootstream_db::backup::{BackupManager, ClusterRestoreOptions, PhysicalKind, RecoveryManager, RecoveryTarget};
use rootstream_db::DatabaseManager;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const MB: f64 = 1048576.0;
const STANZA: &str = "bench";
/// pgBackRest's worker processes for backup and restore: one per core of the benchmark
/// machine (2), its best there.
const PROCESS_MAX: usize = 2;
/// How often a restored server is asked whether recovery has finished (as ours does).
const POLL: Duration = Duration::from_millis(RecoveryManager::RECOVERY_POLL_MS);

/// Removes a directory tree when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A program on PATH or in one of `extra`.
fn find_program(name: &str, extra: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found (scripts/install-deps.sh installs it)"))
}

/// The owner of the stack's data directory, who must run every tool that reads or writes a
/// data directory (`postgres` when the bench runs as root).
struct PgUser {
    uid: u32,
    gid: u32,
    /// `runuser -u NAME --` when that owner is not us.
    prefix: Vec<String>,
}

impl PgUser {
    fn owner_of(data_dir: &Path) -> Self {
        let meta = std::fs::metadata(data_dir).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        let prefix = if unsafe { libc::geteuid() } == uid {
            Vec::new()
        } else {
            let pw = unsafe { libc::getpwuid(uid) };
            assert!(!pw.is_null(), "no user with uid {uid}");
            let name = unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }.to_string_lossy().to_string();
            let runuser = find_program("runuser", &["/usr/sbin", "/sbin"]);
            vec![runuser.display().to_string(), "-u".into(), name, "--".into()]
        };
        PgUser { uid, gid, prefix }
    }

    fn command(&self, program: &Path) -> Command {
        match self.prefix.split_first() {
            Some((runuser, args)) => {
                let mut c = Command::new(runuser);
                c.args(args).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Creates a directory (mode 0700) that belongs to this user.
    fn mkdir(&self, path: &Path) {
        std::fs::create_dir(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
        self.give(path);
    }

    fn give(&self, path: &Path) {
        if !self.prefix.is_empty() {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).unwrap();
        }
    }
}

/// Runs a command to its end, panicking with its output if it fails.
fn run(what: &str, cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Bytes in the regular files under `path`.
fn tree_bytes(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        std::fs::read_dir(path).unwrap().map(|e| tree_bytes(&e.unwrap().path())).sum()
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

/// One pgBackRest setup (configuration, repository, lock, log and spool paths) in its own
/// directory, for the stanza of the stack's cluster.
struct PgBackRest<'a> {
    bin: PathBuf,
    conf: PathBuf,
    include: PathBuf,
    repo: PathBuf,
    root: PathBuf,
    user: &'a PgUser,
}

impl<'a> PgBackRest<'a> {
    fn create(root: PathBuf, user: &'a PgUser, stack_dir: &Path, port: u16, cipher_pass: Option<&str>) -> Self {
        user.mkdir(&root);
        let sub = |name: &str| {
            let p = root.join(name);
            user.mkdir(&p);
            p
        };
        let (conf_dir, repo, lock, log, spool) = (sub("conf"), sub("repo"), sub("lock"), sub("log"), sub("spool"));
        let include = conf_dir.join("conf.d");
        user.mkdir(&include);
        let socket_dir = stack_dir.join("sock");
        assert!(
            socket_dir.join(format!(".s.PGSQL.{port}")).exists(),
            "the stack's PostgreSQL has no Unix socket in {} (pgBackRest connects through it)",
            socket_dir.display()
        );
        let mut text = format!(
            "[global]\nrepo1-path={}\nrepo1-retention-full=1000\nlock-path={}\nlog-path={}\nspool-path={}\n\
             compress-type=zst\ncompress-level=3\nprocess-max={PROCESS_MAX}\nstart-fast=y\narchive-check=y\narchive-copy=y\n\
             log-level-console=warn\nlog-level-stderr=warn\nlog-level-file=info\n",
            repo.display(),
            lock.display(),
            log.display(),
            spool.display()
        );
        if let Some(pass) = cipher_pass {
            text.push_str(&format!("repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={pass}\n"));
        }
        text.push_str(&format!(
            "\n[{STANZA}]\npg1-path={}\npg1-port={port}\npg1-socket-path={}\npg1-user=postgres\n",
            stack_dir.join("pg").display(),
            socket_dir.display()
        ));
        let conf = conf_dir.join("pgbackrest.conf");
        std::fs::write(&conf, text).unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
        user.give(&conf);
        let bin = find_program("pgbackrest", &[]);
        PgBackRest { bin, conf, include, repo, root, user }
    }

    fn options(&self) -> Vec<String> {
        vec![
            format!("--config={}", self.conf.display()),
            format!("--config-include-path={}", self.include.display()),
            format!("--stanza={STANZA}"),
        ]
    }

    fn run(&self, args: &[&str]) {
        let mut cmd = self.user.command(&self.bin);
        cmd.current_dir(&self.root).args(self.options()).args(args);
        run(&format!("pgbackrest {}", args.join(" ")), &mut cmd);
    }

    fn archive_command(&self) -> String {
        let mut words = vec![sh_quote(&self.bin.display().to_string())];
        words.extend(self.options().iter().map(|o| sh_quote(o)));
        words.push("archive-push %p".into());
        words.join(" ")
    }

    /// Bytes stored for the newest backup set in the repository (its WAL included).
    fn latest_set_bytes(&self) -> u64 {
        let latest = self.repo.join("backup").join(STANZA).join("latest");
        tree_bytes(&std::fs::canonicalize(&latest).unwrap())
    }

    /// A full backup, with the stack's archive_command pushing into this repository while it
    /// runs: seconds and bytes stored.
    async fn backup(&self, db: &DatabaseManager) -> (f64, u64) {
        let set = format!("ALTER SYSTEM SET archive_command = {}", sql_literal(&self.archive_command()));
        db.batch_execute(&set).await.unwrap();
        db.batch_execute("SELECT pg_reload_conf()").await.unwrap();
        // Switches WAL and waits until the segment is in this repository: the archiver pushes
        // here from now on.
        self.run(&["check"]);
        db.batch_execute("CHECKPOINT").await.unwrap();
        settle();
        let t = Instant::now();
        self.run(&["backup", "--type=full"]);
        let secs = t.elapsed().as_secs_f64();
        db.batch_execute("ALTER SYSTEM RESET archive_command").await.unwrap();
        db.batch_execute("SELECT pg_reload_conf()").await.unwrap();
        (secs, self.latest_set_bytes())
    }
}

/// A PostgreSQL server started on a restored data directory; stopped (immediately) if still
/// running when dropped.
struct Restored<'a> {
    dir: PathBuf,
    pg_ctl: PathBuf,
    user: &'a PgUser,
}

impl Restored<'_> {
    fn stop(&self, mode: &str) {
        if self.dir.join("postmaster.pid").exists() {
            let mut cmd = self.user.command(&self.pg_ctl);
            cmd.current_dir("/").arg("-D").arg(&self.dir).args(["-m", mode, "-w", "-t", "120", "stop"]);
            run("pg_ctl stop", &mut cmd);
        }
    }
}

impl Drop for Restored<'_> {
    fn drop(&mut self) {
        if self.dir.join("postmaster.pid").exists() {
            let _ = self
                .user
                .command(&self.pg_ctl)
                .current_dir("/")
                .arg("-D")
                .arg(&self.dir)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn connect(port: u16, dbname: &str) -> Option<tokio_postgres::Client> {
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname={dbname} connect_timeout=2");
    let (client, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(conn);
    Some(client)
}

/// Waits until the server on `port` accepts queries and has left recovery.
async fn wait_promoted(port: u16, dir: &Path, log: &Path) {
    let started = Instant::now();
    loop {
        if let Some(c) = connect(port, "postgres").await {
            if let Ok(row) = c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                if !row.get::<_, bool>(0) {
                    return;
                }
            }
        }
        let gone = started.elapsed() > Duration::from_secs(10) && !dir.join("postmaster.pid").exists();
        if gone || started.elapsed() > Duration::from_secs(3600) {
            panic!("the restored server did not come up:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Rows of every table of every database, as our restore counts them.
async fn count_rows(port: u16) -> BTreeMap<String, BTreeMap<String, i64>> {
    let admin = connect(port, "postgres").await.expect("restored server");
    let dbs = admin
        .query("SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1", &[])
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for d in &dbs {
        let name: String = d.get(0);
        let db = connect(port, &name).await.expect("restored database");
        let tables = db
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        let mut counts = BTreeMap::new();
        for t in &tables {
            let table: String = t.get(0);
            let n: i64 = db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
            counts.insert(table, n);
        }
        out.insert(name, counts);
    }
    out
}

/// Seconds of a physical restore until the files are laid out, until the server answers after
/// recovery, and until every table's rows are counted.
type RestoreTimes = (f64, f64, f64);

/// Starts the server of a directory pgBackRest restored, with the settings our restore gives
/// its restored server (appended to `postgresql.auto.conf`, which a restore rewrites).
fn start_peer_server(br: &PgBackRest<'_>, server: &Restored<'_>, log: &Path, port: u16) {
    let mut auto = std::fs::OpenOptions::new().append(true).open(server.dir.join("postgresql.auto.conf")).unwrap();
    write!(
        auto,
        "\n# benchmark restore\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
         archive_mode = off\nhot_standby = on\nrecovery_init_sync_method = syncfs\n"
    )
    .unwrap();
    drop(auto);
    let mut start = br.user.command(&server.pg_ctl);
    start.current_dir(&br.root).arg("-D").arg(&server.dir).arg("-l").arg(log).args(["-W", "start"]);
    run("pg_ctl start", &mut start);
}

/// `pgbackrest restore` of the newest backup into a new directory, then the server started on
/// it with the settings our restore uses, recovery awaited and rows counted.
async fn pgbackrest_restore(br: &PgBackRest<'_>, pg_bin: &Path, db_name: &str, rows: u64) -> RestoreTimes {
    let dir = br.root.join("restore");
    let log = br.root.join("restore.log");
    br.user.mkdir(&dir);
    let server = Restored { dir: dir.clone(), pg_ctl: pg_bin.join("pg_ctl"), user: br.user };
    let port = closed_port();
    settle();
    let t = Instant::now();
    br.run(&["restore", &format!("--pg1-path={}", dir.display()), "--type=immediate", "--target-action=promote"]);
    let files = t.elapsed().as_secs_f64();
    start_peer_server(br, &server, &log, port);
    wait_promoted(port, &dir, &log).await;
    let ready = t.elapsed().as_secs_f64();
    let counts = count_rows(port).await;
    let total = t.elapsed().as_secs_f64();
    assert_eq!(counts[db_name]["public.bench_data"], rows as i64, "pgBackRest's restore lost rows");
    server.stop("fast");
    let _ = std::fs::remove_file(&log);
    (files, ready, total)
}

/// Our restore_cluster of `backup_id` to the end of the backup into a new directory, the
/// server kept running until the row counts are in; the first two times come from its
/// progress reports.
async fn our_restore(
    rm: &RecoveryManager,
    backup_id: &str,
    dir: &Path,
    pg_bin: &Path,
    user: &PgUser,
    db_name: &str,
    rows: u64,
) -> RestoreTimes {
    let events: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let mut rm = rm.clone();
    let sink = events.clone();
    rm.set_progress(Some(Arc::new(move |p: &rootstream_db::backup::Progress| {
        sink.lock().unwrap().push((p.phase.clone(), Instant::now()));
    })));
    let server = Restored { dir: dir.to_path_buf(), pg_ctl: pg_bin.join("pg_ctl"), user };
    let mut opts = ClusterRestoreOptions::new(dir, RecoveryTarget::EndOfBackup);
    opts.backup_id = Some(backup_id.to_string());
    opts.keep_running = true;
    settle();
    let t = Instant::now();
    let report = rm.restore_cluster(&opts).await.unwrap();
    let total = t.elapsed().as_secs_f64();
    // The restore phase reports as it unpacks; its last report is the backup unpacked. The
    // first row count starts once the server has finished recovery and answers.
    let ev = events.lock().unwrap();
    let secs = |i: &Instant| i.duration_since(t).as_secs_f64();
    let files = ev.iter().rev().find(|(p, _)| p == "restore").map(|(_, i)| secs(i));
    let ready = ev.iter().find(|(p, _)| p == "check").map(|(_, i)| secs(i));
    assert_eq!(report.databases[db_name]["public.bench_data"], rows as i64, "our restore lost rows");
    server.stop("fast");
    (files.expect("the restore reports the unpacked backup"), ready.expect("the restore reports the row counts"), total)
}

/// The small change a delta restore then undoes: a thousand rows rewritten, and checkpointed
/// so the data files differ from the backup's.
async fn small_change(port: u16, db_name: &str) {
    let c = connect(port, db_name).await.expect("restored server");
    c.batch_execute(
        "UPDATE public.bench_data SET title = title || ' (changed)' WHERE id IN (SELECT id FROM public.bench_data LIMIT 1000);
         CHECKPOINT",
    )
    .await
    .unwrap();
}

/// Our delta restore: the backup restored into a directory, the server changed a little and
/// stopped, then `restore_cluster` with `delta` over it, timed until the rows are counted.
#[allow(clippy::too_many_arguments)]
async fn our_delta_restore(
    rm: &RecoveryManager,
    backup_id: &str,
    dir: &Path,
    pg_bin: &Path,
    user: &PgUser,
    db_name: &str,
    rows: u64,
) -> (f64, rootstream_db::backup::DeltaReport) {
    let server = Restored { dir: dir.to_path_buf(), pg_ctl: pg_bin.join("pg_ctl"), user };
    let mut opts = ClusterRestoreOptions::new(dir, RecoveryTarget::EndOfBackup);
    opts.backup_id = Some(backup_id.to_string());
    opts.keep_running = true;
    let first = rm.restore_cluster(&opts).await.unwrap();
    small_change(first.port, db_name).await;
    server.stop("fast");
    opts.delta = true;
    settle();
    let t = Instant::now();
    let report = rm.restore_cluster(&opts).await.unwrap();
    let total = t.elapsed().as_secs_f64();
    assert_eq!(report.databases[db_name]["public.bench_data"], rows as i64, "our delta restore lost rows");
    server.stop("fast");
    (total, report.delta.expect("a delta restore reports"))
}

/// `pgbackrest restore --delta` after the same small change, then the server started, recovery
/// awaited and rows counted, as for its full restore.
async fn pgbackrest_delta_restore(br: &PgBackRest<'_>, pg_bin: &Path, db_name: &str, rows: u64) -> f64 {
    let dir = br.root.join("restore-delta");
    let log = br.root.join("restore-delta.log");
    br.user.mkdir(&dir);
    let server = Restored { dir: dir.clone(), pg_ctl: pg_bin.join("pg_ctl"), user: br.user };
    let port = closed_port();
    let start = |extra: &[&str]| {
        let mut args = vec!["restore".to_string(), format!("--pg1-path={}", dir.display())];
        args.extend(["--type=immediate", "--target-action=promote"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        br.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        start_peer_server(br, &server, &log, port);
    };
    start(&[]);
    wait_promoted(port, &dir, &log).await;
    small_change(port, db_name).await;
    server.stop("fast");
    settle();
    let t = Instant::now();
    start(&["--delta"]);
    wait_promoted(port, &dir, &log).await;
    let counts = count_rows(port).await;
    let total = t.elapsed().as_secs_f64();
    assert_eq!(counts[db_name]["public.bench_data"], rows as i64, "pgBackRest's delta restore lost rows");
    server.stop("fast");
    let _ = std::fs::remove_file(&log);
    total
}

/// Seconds of the runs of one measurement.
#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    /// `MEDIAN s [MIN–MAX]`.
    fn show(&self) -> String {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(0.0, f64::max);
        format!("{:.2} s [{min:.2}–{max:.2}]", self.median())
    }
}

/// Writes back every dirty page, so that a measurement does not pay for the writes of the
/// one before it.
fn settle() {
    unsafe { libc::sync() };
}

/// `what  OURS / THEIRS = RATIO` for seconds.
fn cmp_time(what: &str, ours: f64, theirs: f64) {
    println!("  {what:<60} {ours:>7.2} s  / {theirs:>7.2} s  = {:.2}", ours / theirs);
}

/// `what  OURS / THEIRS = RATIO` for sizes.
fn cmp_size(what: &str, ours: u64, theirs: u64) {
    println!(
        "  {what:<60} {:>7.1} MB / {:>7.1} MB = {:.3}",
        ours as f64 / MB,
        theirs as f64 / MB,
        ours as f64 / theirs as f64
    );
}

/// 16 MiB that compress about as WAL of text rows does (zstd 3 to roughly a third): rows of
/// words drawn from a small vocabulary with numbers, segment `n`'s own.
fn synthetic_segment(n: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "stream",
        "viewer",
        "session",
        "frame",
        "bitrate",
        "chat",
        "relay",
        "encoder",
        "latency",
        "buffer",
        "keyframe",
        "channel",
        "replay",
        "overlay",
        "donation",
        "moderator",
    ];
    let mut out = Vec::with_capacity(16 << 20);
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < 16 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let row = format!(
            "{}|{}|{} {}|",
            x % 1_000_000,
            WORDS[(x >> 20) as usize % 16],
            WORDS[(x >> 30) as usize % 16],
            x >> 40
        );
        out.extend_from_slice(row.as_bytes());
    }
    out.truncate(16 << 20);
    out
}

/// Archives a burst of WAL as PostgreSQL's archiver does (one named file at a time, each push
/// awaited, `.ready` renamed to `.done` after it), for each `wal_push_parallel`.
fn archive_burst(dir: &Path, cfg: &rootstream_db::Config) {
    use rootstream_db::backup::{ArchiveSettings, LocalStorage, WalArchive};
    const SEGMENTS: u64 = 24;
    let keyring = rootstream_db::crypto::envelope::Keyring::from_config(cfg).unwrap();
    let name = |n: u64| format!("00000001000000000000{n:04X}");
    println!();
    println!("WAL archiving of a burst: {SEGMENTS} segments of 16 MiB (synthetic text rows), pushed as PostgreSQL's");
    println!("archiver drives wal-push (each named in order and awaited), into a local repository:");
    let mut one = 0.0;
    for parallel in [1usize, 2, 4] {
        let root = dir.join(format!("burst-{parallel}"));
        let wal = root.join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        for n in 1..=SEGMENTS {
            std::fs::write(wal.join(name(n)), synthetic_segment(n)).unwrap();
            std::fs::write(wal.join("archive_status").join(format!("{}.ready", name(n))), b"").unwrap();
        }
        let archive = WalArchive::new(Arc::new(LocalStorage::new(root.join("repo"))), keyring.clone());
        let settings = ArchiveSettings { parallel, ..Default::default() };
        settle();
        let t = Instant::now();
        for n in 1..=SEGMENTS {
            archive.archive(&wal.join(name(n)), &settings).unwrap();
            let status = wal.join("archive_status");
            std::fs::rename(status.join(format!("{}.ready", name(n))), status.join(format!("{}.done", name(n))))
                .unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        if parallel == 1 {
            one = secs;
        }
        println!(
            "  wal_push_parallel = {parallel}: {secs:>6.2} s, {:>6.0} MB/s; / one at a time = {:.2}",
            (SEGMENTS * 16) as f64 * 1.048576 / secs,
            secs / one
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}

fn main() {
    rootstream_db::runtime::runtime().block_on(async {
        let mb: u64 = std::env::var("RSDB_BENCH_BACKUP_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
        let mut cfg = secure_config().await;
        let dir = std::env::temp_dir().join(format!("rsdb-bench-backup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _scratch = Scratch(dir.clone());
        // The PostgreSQL user must reach the repository (restore_command) and restored clusters.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let repo = dir.join("repo");
        cfg.set("backup_dir", repo.to_str().unwrap()).unwrap();
        cfg.set("rsdb_path", env!("CARGO_BIN_EXE_rsdb")).unwrap();
        archive_burst(&dir, &cfg);
        let db = DatabaseManager::connect(&cfg).await.unwrap();
        rootstream_db::db::migrations::migrate(&db).await.unwrap();
        // Rows of mixed text; more are added until the database has the requested size.
        let t = Instant::now();
        db.batch_execute(
            "CREATE TABLE bench_data (id BIGSERIAL PRIMARY KEY, user_id BIGINT, title TEXT, body TEXT,
                                      created_at TIMESTAMPTZ DEFAULT now())",
        )
        .await
        .unwrap();
        let target = mb * 1024 * 1024;
        let mut rows = 0u64;
        let mut batch = target / 300;
        loop {
            db.batch_execute(&format!(
                "INSERT INTO bench_data (user_id, title, body)
                 SELECT g % 5000, 'stream title ' || (g % 997), repeat(md5(g::text), 3) || ' viewers ' || (g % 1234)
                 FROM generate_series({}, {}) g;",
                rows + 1,
                rows + batch
            ))
            .await
            .unwrap();
            rows += batch;
            db.batch_execute("VACUUM ANALYZE bench_data").await.unwrap();
            let size: i64 = db.query("SELECT pg_database_size(current_database())", &[]).await.unwrap()[0].get(0);
            let size = size as u64;
            if size >= target {
                break;
            }
            batch = ((target - size) as f64 * rows as f64 / size as f64 * 1.02) as u64 + 1000;
        }
        let size: i64 = db.query("SELECT pg_database_size(current_database())", &[]).await.unwrap()[0].get(0);
        println!(
            "rootstream-db backup benchmark: database of {:.0} MB ({rows} rows, loaded in {:.1} s)",
            size as f64 / MB,
            t.elapsed().as_secs_f64()
        );
        let url = cfg.database_url.clone().unwrap();
        let db_name = url.rsplit('/').next().unwrap().to_string();
        let pg_bin = PathBuf::from(stack().var("ROOTSTREAM_PG_BIN"));
        let pg_dump = pg_bin.join("pg_dump");

        // Baseline 1: pg_dump custom format with its own default compression.
        let out = dir.join("baseline.dump");
        let t = Instant::now();
        let st = Command::new(&pg_dump)
            .args(["--format=custom", "--file", out.to_str().unwrap(), "--dbname", &url])
            .status()
            .unwrap();
        assert!(st.success());
        let plain_time = t.elapsed().as_secs_f64();
        let plain_size = std::fs::metadata(&out).unwrap().len();

        // Baseline 2: pg_dump | zstd -3 (same compressor and level as ours, no encryption).
        let out2 = dir.join("baseline.dump.zst");
        let t = Instant::now();
        let mut dump = Command::new(&pg_dump)
            .args(["--format=custom", "--compress=0", "--dbname", &url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let st = Command::new("zstd")
            .args(["-3", "-q", "-f", "-o", out2.to_str().unwrap()])
            .stdin(dump.stdout.take().unwrap())
            .status()
            .unwrap();
        assert!(st.success() && dump.wait().unwrap().success());
        let zstd_time = t.elapsed().as_secs_f64();
        let zstd_size = std::fs::metadata(&out2).unwrap().len();

        let bm = BackupManager::new(db.clone(), &cfg).unwrap();
        let t = Instant::now();
        let m = bm.create_full().await.unwrap();
        let ours_time = t.elapsed().as_secs_f64();
        let ours_size = m.files[0].stored_bytes;
        let t = Instant::now();
        bm.verify(&m.backup_id).unwrap();
        let verify_time = t.elapsed().as_secs_f64();

        println!(
            "{:<46} {:>7.2} s {:>9.1} MB",
            "pg_dump --format=custom (default compression)",
            plain_time,
            plain_size as f64 / MB
        );
        println!("{:<46} {:>7.2} s {:>9.1} MB", "pg_dump | zstd -3", zstd_time, zstd_size as f64 / MB);
        println!(
            "{:<46} {:>7.2} s {:>9.1} MB | time ratio {:.2} vs pg_dump|zstd, size ratio {:.3}",
            "ours: pg_dump → zstd → AES-256-GCM + manifest",
            ours_time,
            ours_size as f64 / MB,
            ours_time / zstd_time,
            ours_size as f64 / zstd_size as f64
        );
        println!("{:<46} {:>7.2} s (reads, authenticates and decompresses everything)", "ours: verify", verify_time);

        // Restore: ours (verify + decrypt + pg_restore + row counts) vs pg_restore of the plain dump.
        let t1 = create_database().await;
        let t = Instant::now();
        let st = Command::new(pg_bin.join("pg_restore"))
            .args(["--no-owner", "--dbname", &stack().url_for(&t1), out.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
        let raw_restore = t.elapsed().as_secs_f64();
        let t2 = create_database().await;
        let t = Instant::now();
        bm.restore(&m.backup_id, &stack().url_for(&t2)).await.unwrap();
        let ours_restore = t.elapsed().as_secs_f64();
        println!(
            "{:<46} {:>7.2} s | ours (verify + restore + row-count check) {:.2} s, ratio {:.2}",
            "pg_restore of the plain dump",
            raw_restore,
            ours_restore,
            ours_restore / raw_restore
        );
        // The physical backups below copy the whole cluster: only the benchmark database (and
        // the small system ones) stay.
        for t in [&t1, &t2] {
            db.batch_execute(&format!("DROP DATABASE {t} WITH (FORCE)")).await.unwrap();
        }
        for f in [&out, &out2] {
            std::fs::remove_file(f).unwrap();
        }

        // ------------------------------------------------------------ physical backups
        let runs: usize = std::env::var("RSDB_BENCH_BACKUP_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        let stack_dir = PathBuf::from(stack().var("ROOTSTREAM_STACK_DIR"));
        let pg_user = PgUser::owner_of(&stack_dir.join("pg"));
        let cluster: i64 =
            db.query("SELECT sum(pg_database_size(datname))::bigint FROM pg_database", &[]).await.unwrap()[0].get(0);
        let dbs: i64 = db.query("SELECT count(*) FROM pg_database", &[]).await.unwrap()[0].get(0);

        // pgBackRest without and with encryption, each with a repository of its own.
        let br_root = dir.join("pgbackrest");
        pg_user.mkdir(&br_root);
        let port = stack().pg_port();
        let pass = hex_string(&rand::random::<[u8; 32]>());
        let plain = PgBackRest::create(br_root.join("plain"), &pg_user, &stack_dir, port, None);
        let enc = PgBackRest::create(br_root.join("aes"), &pg_user, &stack_dir, port, Some(&pass));
        for br in [&plain, &enc] {
            br.run(&["stanza-create"]);
        }

        // 0: pg_basebackup | zstd (the tar ours is made of, through the zstd tool), 1: ours,
        // 2: pgBackRest unencrypted, 3: pgBackRest aes-256-cbc.
        let raw = dir.join("basebackup.tar.zst");
        let mut secs: [Samples; 4] = Default::default();
        let mut bytes = [0u64; 4];
        let mut phys = None;
        for round in 0..runs {
            for k in 0..4 {
                let which = (k + round) % 4;
                let (t, b) = match which {
                    0 => {
                        db.batch_execute("CHECKPOINT").await.unwrap();
                        settle();
                        let t = Instant::now();
                        let mut base = Command::new(pg_bin.join("pg_basebackup"))
                            .args(["--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast"])
                            .args(["--no-password", "--dbname", &url])
                            .stdout(Stdio::piped())
                            .spawn()
                            .unwrap();
                        let st = Command::new("zstd")
                            .args(["-3", "-q", "-f", "-o", raw.to_str().unwrap()])
                            .stdin(base.stdout.take().unwrap())
                            .status()
                            .unwrap();
                        assert!(st.success() && base.wait().unwrap().success());
                        let t = t.elapsed().as_secs_f64();
                        let b = std::fs::metadata(&raw).unwrap().len();
                        std::fs::remove_file(&raw).unwrap();
                        (t, b)
                    }
                    1 => {
                        db.batch_execute("CHECKPOINT").await.unwrap();
                        settle();
                        let t = Instant::now();
                        let m = bm.create_physical(PhysicalKind::Full).await.unwrap();
                        let t = t.elapsed().as_secs_f64();
                        let b = m.files[0].stored_bytes;
                        phys = Some(m);
                        (t, b)
                    }
                    2 => plain.backup(&db).await,
                    _ => enc.backup(&db).await,
                };
                secs[which].0.push(t);
                bytes[which] = b;
            }
        }
        let phys = phys.expect("at least one run");
        let [raw_t, ours_t, br_t, enc_t] = secs.each_ref().map(Samples::median);
        let [raw_b, ours_b, br_b, enc_b] = bytes;

        println!();
        println!(
            "physical full backups of the whole cluster ({:.0} MB, {dbs} databases), zstd 3, pgBackRest process-max={PROCESS_MAX};",
            cluster as f64 / MB
        );
        println!("median of {runs} runs [min–max]:");
        for (what, i) in [
            ("pg_basebackup -Ft -X fetch | zstd -3 (raw, unencrypted)", 0),
            ("pgBackRest backup --type=full, zst 3, unencrypted", 2),
            ("pgBackRest backup --type=full, zst 3, aes-256-cbc", 3),
            ("ours: create_physical(Full), zstd 3 + AES-256-GCM", 1),
        ] {
            println!("{what:<58} {:>22} {:>9.1} MB", secs[i].show(), bytes[i] as f64 / MB);
        }
        cmp_time("ours / pg_basebackup | zstd -3, time", ours_t, raw_t);
        cmp_size("ours / pg_basebackup | zstd -3, size", ours_b, raw_b);
        cmp_time("ours / pgBackRest unencrypted, time", ours_t, br_t);
        cmp_size("ours / pgBackRest unencrypted, size", ours_b, br_b);
        cmp_time("ours / pgBackRest aes-256-cbc, time", ours_t, enc_t);
        cmp_size("ours / pgBackRest aes-256-cbc, size", ours_b, enc_b);
        println!("encryption overhead (ours is always encrypted; pgBackRest's with / without):");
        cmp_time("pgBackRest aes-256-cbc / unencrypted, time", enc_t, br_t);
        cmp_size("pgBackRest aes-256-cbc / unencrypted, size", enc_b, br_b);
        cmp_time("ours (AES-256-GCM) / pgBackRest aes-256-cbc, time", ours_t, enc_t);

        // ------------------------------------------------------------ physical restores
        // 0: ours (of its last backup), 1: pgBackRest unencrypted, 2: pgBackRest aes-256-cbc
        // (each of its newest backup).
        let rm = RecoveryManager::new(bm.clone());
        let ours_dir = dir.join("restore-ours");
        let mut times: [[Samples; 3]; 3] = Default::default();
        for round in 0..runs {
            for k in 0..3 {
                let which = (k + round) % 3;
                let (files, ready, total) = match which {
                    0 => our_restore(&rm, &phys.backup_id, &ours_dir, &pg_bin, &pg_user, &db_name, rows).await,
                    1 => pgbackrest_restore(&plain, &pg_bin, &db_name, rows).await,
                    _ => pgbackrest_restore(&enc, &pg_bin, &db_name, rows).await,
                };
                for (s, v) in times[which].iter_mut().zip([files, ready, total]) {
                    s.0.push(v);
                }
            }
        }
        println!();
        println!("physical restore into a new data directory, to the end of the backup, pgBackRest process-max={PROCESS_MAX};");
        println!("seconds from the start until");
        println!(
            "{:<48} {:>22} {:>22} {:>22}",
            "", "the files are laid out", "it answers (started,", "every table's rows"
        );
        println!(
            "{:<48} {:>22} {:>22} {:>22}",
            format!("(median of {runs} runs [min–max])"),
            "",
            "recovery finished)",
            "are counted"
        );
        for (what, t) in [
            ("ours: restore_cluster(EndOfBackup)", &times[0]),
            ("pgbackrest restore (unencrypted) + pg_ctl start", &times[1]),
            ("pgbackrest restore (aes-256-cbc) + pg_ctl start", &times[2]),
        ] {
            println!("{what:<48} {:>22} {:>22} {:>22}", t[0].show(), t[1].show(), t[2].show());
        }
        let [ours_files, ours_ready, ours_total] = times[0].each_ref().map(Samples::median);
        for (name, t) in [("unencrypted", &times[1]), ("aes-256-cbc", &times[2])] {
            let [files, ready, total] = t.each_ref().map(Samples::median);
            cmp_time(&format!("files only: ours unpack / pgbackrest restore ({name})"), ours_files, files);
            cmp_time(&format!("until it answers: ours / pgBackRest ({name})"), ours_ready, ready);
            cmp_time(&format!("with the row count: ours / pgBackRest ({name})"), ours_total, total);
        }

        // ------------------------------------------------------------ delta restores
        // After a small change (1,000 rows rewritten, checkpointed) in a restored cluster:
        // 0: ours, 1: pgbackrest restore --delta (aes-256-cbc), timed until rows are counted.
        let mut delta: [Samples; 2] = Default::default();
        let mut last_report = None;
        for round in 0..runs {
            for k in 0..2 {
                let which = (k + round) % 2;
                let t = match which {
                    0 => {
                        let (t, r) =
                            our_delta_restore(&rm, &phys.backup_id, &ours_dir, &pg_bin, &pg_user, &db_name, rows).await;
                        last_report = Some(r);
                        t
                    }
                    _ => pgbackrest_delta_restore(&enc, &pg_bin, &db_name, rows).await,
                };
                delta[which].0.push(t);
            }
        }
        println!();
        println!("delta restore over the restored cluster after 1,000 rows were rewritten, until every table's rows");
        println!("are counted, pgBackRest process-max={PROCESS_MAX} (median of {runs} runs [min–max]):");
        println!("{:<48} {:>22}", "ours: restore_cluster(delta)", delta[0].show());
        println!("{:<48} {:>22}", "pgbackrest restore --delta (aes-256-cbc)", delta[1].show());
        if let Some(r) = &last_report {
            println!(
                "  ours wrote {:.1} MB of {:.1} MB compared: {} files unchanged, {} changed, {} created, {} removed",
                r.bytes_written as f64 / MB,
                r.bytes_compared as f64 / MB,
                r.files_unchanged,
                r.files_changed,
                r.files_created,
                r.paths_removed
            );
        }
        let [ours_delta, br_delta] = delta.each_ref().map(Samples::median);
        cmp_time("ours delta / ours full restore (with the row count)", ours_delta, ours_total);
        cmp_time("ours delta / pgbackrest restore --delta (aes-256-cbc)", ours_delta, br_delta);
        let [_, _, enc_total] = times[2].each_ref().map(Samples::median);
        cmp_time("pgbackrest --delta / its full restore (aes-256-cbc)", br_delta, enc_total);
    });
}
