//! Backup benchmark beside baselines from the same run on the same database: our full backup
//! (pg_dump → zstd → AES-256-GCM chunks) against `pg_dump | zstd` (the same compression without
//! encryption) and a plain `pg_dump` custom-format dump; restore against `pg_restore`.
//!
//! `RSDB_BENCH_BACKUP_MB` sets the database size (default 200).
//! Run with `scripts/bench.sh --bench backup`.

#[path = "../tests/support/mod.rs"]
mod support;

use rootstream_db::backup::BackupManager;
use rootstream_db::DatabaseManager;
use std::process::{Command, Stdio};
use std::time::Instant;
use support::*;

fn main() {
    rootstream_db::runtime::runtime().block_on(async {
        let mb: u64 = std::env::var("RSDB_BENCH_BACKUP_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
        let mut cfg = secure_config().await;
        let dir = std::env::temp_dir().join(format!("rsdb-bench-backup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        cfg.set("backup_dir", dir.to_str().unwrap()).unwrap();
        let db = DatabaseManager::connect(&cfg).await.unwrap();
        rootstream_db::db::migrations::migrate(&db).await.unwrap();
        // Rows of mixed text: about 300 bytes each on disk.
        let rows = mb * 1024 * 1024 / 300;
        let t = Instant::now();
        db.batch_execute(&format!(
            "CREATE TABLE bench_data (id BIGSERIAL PRIMARY KEY, user_id BIGINT, title TEXT, body TEXT, created_at TIMESTAMPTZ DEFAULT now());
             INSERT INTO bench_data (user_id, title, body)
             SELECT g % 5000, 'stream title ' || (g % 997), repeat(md5(g::text), 3) || ' viewers ' || (g % 1234)
             FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
        db.batch_execute("VACUUM ANALYZE bench_data").await.unwrap();
        let size: i64 = db.query("SELECT pg_database_size(current_database())", &[]).await.unwrap()[0].get(0);
        println!(
            "rootstream-db backup benchmark: database of {:.0} MB ({rows} rows, loaded in {:.1} s)",
            size as f64 / 1048576.0,
            t.elapsed().as_secs_f64()
        );
        let url = cfg.database_url.clone().unwrap();
        let pg_dump = "/usr/lib/postgresql/15/bin/pg_dump";

        // Baseline 1: pg_dump custom format with its own default compression.
        let out = dir.join("baseline.dump");
        let t = Instant::now();
        let st = Command::new(pg_dump).args(["--format=custom", "--file", out.to_str().unwrap(), "--dbname", &url]).status().unwrap();
        assert!(st.success());
        let plain_time = t.elapsed().as_secs_f64();
        let plain_size = std::fs::metadata(&out).unwrap().len();

        // Baseline 2: pg_dump | zstd -3 (same compressor and level as ours, no encryption).
        let out2 = dir.join("baseline.dump.zst");
        let t = Instant::now();
        let mut dump = Command::new(pg_dump)
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
            plain_size as f64 / 1048576.0
        );
        println!("{:<46} {:>7.2} s {:>9.1} MB", "pg_dump | zstd -3", zstd_time, zstd_size as f64 / 1048576.0);
        println!(
            "{:<46} {:>7.2} s {:>9.1} MB | time ratio {:.2} vs pg_dump|zstd, size ratio {:.3}",
            "ours: pg_dump → zstd → AES-256-GCM + manifest",
            ours_time,
            ours_size as f64 / 1048576.0,
            ours_time / zstd_time,
            ours_size as f64 / zstd_size as f64
        );
        println!("{:<46} {:>7.2} s (reads, authenticates and decompresses everything)", "ours: verify", verify_time);

        // Restore: ours (verify + decrypt + pg_restore + row counts) vs pg_restore of the plain dump.
        let t1 = create_database().await;
        let t = Instant::now();
        let st = Command::new("/usr/lib/postgresql/15/bin/pg_restore")
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
        let _ = std::fs::remove_dir_all(&dir);
    });
}
