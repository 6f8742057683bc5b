//! Logical backups: a full `pg_dump` (custom format) of the configured database, and its
//! restore with `pg_restore` into a database that is then checked table by table.
//!
//! A logical backup is `<backup_id>/dump.zst.enc` (the dump, zstd-compressed, sealed in
//! authenticated chunks under a fresh data key — see [`archive`](super::archive)) beside its
//! signed manifest (see [`manifest`](super::manifest)), whose row counts come from the same
//! snapshot as the dump.

use super::manager::{BackupManager, ZSTD_LEVEL};
use super::manifest::{manifest_context, FileEntry, Manifest};
use super::pgtool::{drain, pg_tool, pipe_into_store, Metered};
use super::rowcount::{count_every_table, Counter};
use crate::config::redact_url;
use crate::crypto::envelope::Key;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::process::{Command, Stdio};

pub(crate) const DUMP_FILE: &str = "dump.zst.enc";

/// The outcome of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub target: String,
    /// Tables whose row count matches the backup's.
    pub tables_checked: usize,
    pub rows_restored: i64,
}

impl BackupManager {
    /// Takes a full logical backup. The row counts recorded in the manifest come from the same
    /// snapshot as the dump. Returns the manifest; on failure the history row says why and the
    /// partial files are removed.
    pub async fn create_full(&self) -> Result<Manifest> {
        let r = self.create_full_counted().await;
        crate::metrics::library::backup_outcome(r.is_ok());
        r
    }

    async fn create_full_counted(&self) -> Result<Manifest> {
        let started = Utc::now();
        let backup_id = Self::new_id("full")?;
        self.history_start(&backup_id, "full", "pg_dump", None).await?;
        let result = self.create_full_inner(&backup_id, started).await;
        self.history_finish(&backup_id, &result).await?;
        result
    }

    async fn create_full_inner(&self, backup_id: &str, started: DateTime<Utc>) -> Result<Manifest> {
        // A repeatable-read transaction exports its snapshot: pg_dump reads exactly what the
        // row counts below read.
        let mut tx = self.db()?.begin().await?;
        tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
        let snap: String = tx.query("SELECT pg_export_snapshot()", &[]).await?[0].get(0);
        let meta = tx.query("SELECT current_database()::text, current_setting('server_version')", &[]).await?;
        let (database, server_version): (String, String) = (meta[0].get(0), meta[0].get(1));
        let row_counts = count_every_table(Counter::Tx(&tx)).await?;
        let key = Key::generate()?;
        let (key_id, wrapped) = self.keyring.seal(&manifest_context(backup_id), key.as_bytes())?;
        let url = self.cfg.require_database_url()?.to_string();
        let pg_dump = pg_tool(&self.cfg, "pg_dump");
        let (bid, this) = (backup_id.to_string(), self.clone());
        let entry = tokio::task::spawn_blocking(move || -> Result<FileEntry> {
            let mut cmd = Command::new(&pg_dump);
            cmd.args(["--format=custom", "--compress=0", "--no-password", "--snapshot", &snap, "--dbname", &url]);
            let (entry, _) = pipe_into_store(cmd, |stdout| {
                let report_to = this.clone();
                let id2 = bid.clone();
                let mut src = Metered {
                    inner: stdout,
                    done: 0,
                    last: 0,
                    report: Box::new(move |n| report_to.report(&id2, "backup", n, None, "pg_dump".into())),
                };
                this.store_stream(&bid, DUMP_FILE, &key, &mut src)
            })?;
            Ok(entry)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        tx.rollback().await?;

        let manifest = Manifest {
            format: 1,
            backup_id: backup_id.to_string(),
            backup_type: "full".into(),
            method: "pg_dump custom format".into(),
            database,
            server_version,
            started_at: started,
            finished_at: Utc::now(),
            compression: format!("zstd level {ZSTD_LEVEL}"),
            encryption: "aes-256-gcm, 1 MiB authenticated chunks".into(),
            key_id,
            wrapped_key: hex::encode(wrapped),
            files: vec![entry],
            row_counts,
            physical: None,
        };
        self.write_manifest(&manifest)?;
        self.report(backup_id, "done", manifest.files[0].plain_bytes, None, "backup completed".into());
        Ok(manifest)
    }

    /// Restores a logical backup into the database at `target_url`, after verifying it; then
    /// checks every table's row count against the backup. The database is created when it
    /// does not exist; an existing one should be empty.
    pub async fn restore(&self, backup_id: &str, target_url: &str) -> Result<RestoreReport> {
        let m = self.verify(backup_id)?;
        if m.is_physical() {
            return Err(Error::invalid(format!(
                "backup {backup_id} is a physical backup: restore it into a data directory (RecoveryManager::restore_cluster)"
            )));
        }
        create_database_if_missing(target_url, self.cfg.connect_timeout).await?;
        let key = self.data_key(&m)?;
        let pg_restore = pg_tool(&self.cfg, "pg_restore");
        let (url, this, m2) = (target_url.to_string(), self.clone(), m.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut child = Command::new(&pg_restore)
                .args(["--no-owner", "--no-password", "--exit-on-error", "--dbname", &url])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error::Io(format!("cannot run {}: {e}", pg_restore.display())))?;
            let stderr = drain(child.stderr.take().expect("piped"));
            // A manifest without files (which no backup writes) restores nothing, not a panic.
            let total = m2.files.first().map_or(0, |f| f.plain_bytes);
            let (report_to, id) = (this.clone(), m2.backup_id.clone());
            let mut src = Metered {
                inner: this.open_file(&m2, &key, DUMP_FILE)?,
                done: 0,
                last: 0,
                report: Box::new(move |n| report_to.report(&id, "restore", n, Some(total), "pg_restore".into())),
            };
            let mut stdin = child.stdin.take().expect("piped");
            let fed = std::io::copy(&mut src, &mut stdin);
            drop(stdin);
            let status = child.wait()?;
            let err = stderr.join().unwrap_or_default();
            fed.map_err(|e| Error::Integrity(format!("backup {}: {e}", m2.backup_id)))?;
            if !status.success() {
                return Err(Error::Io(format!("pg_restore failed ({status}): {}", err.trim())));
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;

        let mut target_cfg = self.cfg.clone();
        target_cfg.set("database_url", target_url)?;
        target_cfg.set("pool_size", "1")?;
        let target = DatabaseManager::connect(&target_cfg).await?;
        let mut rows = 0;
        for (table, want) in &m.row_counts {
            let got: i64 = target.query(&format!("SELECT count(*) FROM {table}"), &[]).await?[0].get(0);
            if got != *want {
                target.close();
                return Err(Error::Integrity(format!("restored {table} has {got} rows, the backup recorded {want}")));
            }
            rows += got;
        }
        target.close();
        self.report(backup_id, "done", rows as u64, None, format!("{} tables checked", m.row_counts.len()));
        Ok(RestoreReport {
            backup_id: backup_id.into(),
            target: redact_url(target_url),
            tables_checked: m.row_counts.len(),
            rows_restored: rows,
        })
    }
}

/// Creates the database `url` names when the server says it does not exist.
async fn create_database_if_missing(url: &str, timeout: std::time::Duration) -> Result<()> {
    let parsed: tokio_postgres::Config =
        url.parse().map_err(|e| Error::invalid(format!("target URL {}: {e}", redact_url(url))))?;
    let connect = |cfg: tokio_postgres::Config| async move {
        tokio::time::timeout(timeout, cfg.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {} took over {timeout:?}", redact_url(url))))
    };
    match connect(parsed.clone()).await? {
        Ok((client, conn)) => {
            drop(client);
            let _ = conn.await;
            Ok(())
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            let name = parsed.get_dbname().unwrap_or_default().to_string();
            let mut admin = parsed.clone();
            admin.dbname("postgres");
            let (client, conn) =
                connect(admin).await?.map_err(|e| Error::Connection(format!("{}: {e}", redact_url(url))))?;
            let task = tokio::spawn(conn);
            // The name is quoted as an identifier; it is never spliced unquoted.
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let created = client.batch_execute(&format!("CREATE DATABASE {quoted}")).await;
            drop(client);
            let _ = task.await;
            created.map_err(|e| Error::Query(format!("cannot create database {quoted}: {e}")))
        }
        Err(e) => Err(Error::Connection(format!("{}: {e}", redact_url(url)))),
    }
}
