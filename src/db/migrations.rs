//! Schema migrations: numbered SQL files embedded in the library, applied in order, each in
//! its own transaction, tracked with a SHA-256 checksum, and serialized across processes by a
//! PostgreSQL advisory lock.

use super::manager::DatabaseManager;
use crate::error::{Error, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The migrations this library ships, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "foundation", sql: include_str!("../../migrations/001_foundation.sql") },
    Migration { version: 2, name: "sessions_mfa", sql: include_str!("../../migrations/002_sessions_mfa.sql") },
    Migration { version: 3, name: "backup_history", sql: include_str!("../../migrations/003_backup_history.sql") },
    Migration { version: 4, name: "state_sync", sql: include_str!("../../migrations/004_state_sync.sql") },
    Migration {
        version: 5,
        name: "replication_status",
        sql: include_str!("../../migrations/005_replication_status.sql"),
    },
    Migration { version: 6, name: "failover_history", sql: include_str!("../../migrations/006_failover_history.sql") },
    Migration { version: 7, name: "wal_gaps", sql: include_str!("../../migrations/007_wal_gaps.sql") },
];

/// Key of the advisory lock that serializes migrations (the ASCII of "rsdbmigr").
const LOCK_KEY: i64 = 0x7273_6462_6d69_6772;

const TRACKING_TABLE: &str = "CREATE TABLE IF NOT EXISTS rsdb_schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// What [`migrate`] did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order.
    pub applied: Vec<i32>,
    /// The schema version after the call.
    pub current_version: i32,
}

/// SHA-256 of a migration's text, hex.
pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Applies the embedded migrations.
pub async fn migrate(db: &DatabaseManager) -> Result<MigrationReport> {
    migrate_with(db, MIGRATIONS).await
}

/// Applies `migrations` (sorted by version). Refuses to run when an applied migration's
/// checksum differs from the file's, or when the database has versions this code lacks.
pub async fn migrate_with(db: &DatabaseManager, migrations: &[Migration]) -> Result<MigrationReport> {
    let mut client = db.acquire().await?;
    // A session-level lock, held on this connection for the whole run: a second process
    // waits here until the first one has finished, then finds nothing left to do.
    db.timed(Some(&client), "migration lock", async {
        Ok(client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?)
    })
    .await
    .map_err(|e| Error::Migration(format!("could not take the migration lock: {e}")))?;
    let result = run_locked(db, &mut client, migrations).await;
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    if unlock.is_err() {
        // A connection whose lock state is unknown must not go back to the pool.
        let _ = deadpool_postgres::Object::take(client);
    }
    result
}

async fn run_locked(
    db: &DatabaseManager,
    client: &mut deadpool_postgres::Object,
    migrations: &[Migration],
) -> Result<MigrationReport> {
    let mig_err = |e: Error| Error::Migration(e.to_string());
    client.batch_execute(TRACKING_TABLE).await.map_err(|e| mig_err(e.into()))?;
    let rows = client
        .query("SELECT version, name, checksum FROM rsdb_schema_migrations ORDER BY version", &[])
        .await
        .map_err(|e| mig_err(e.into()))?;
    let mut applied_versions = Vec::new();
    for row in &rows {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        let sum: String = row.get(2);
        match migrations.iter().find(|m| m.version == version) {
            Some(m) if checksum(m.sql) != sum => {
                return Err(Error::Migration(format!(
                    "migration {version:03} ({name}) was changed after it was applied: its checksum is {} but the database recorded {sum}; restore the original file and add a new migration instead",
                    checksum(m.sql)
                )))
            }
            Some(_) => applied_versions.push(version),
            None => {
                return Err(Error::Migration(format!(
                    "the database has migration {version:03} ({name}), which this version of the library does not know; upgrade the library"
                )))
            }
        }
    }
    let mut report =
        MigrationReport { applied: Vec::new(), current_version: applied_versions.iter().copied().max().unwrap_or(0) };
    for m in migrations {
        if applied_versions.contains(&m.version) {
            continue;
        }
        let tx = client.transaction().await.map_err(|e| mig_err(e.into()))?;
        let applied = db
            .timed(None, "migration", async {
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO rsdb_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &checksum(m.sql)],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
            .await;
        applied.map_err(|e| {
            Error::Migration(format!("migration {:03} ({}) failed and was rolled back: {e}", m.version, m.name))
        })?;
        report.applied.push(m.version);
        report.current_version = m.version;
    }
    Ok(report)
}

/// The highest applied version, 0 for an empty database.
pub async fn current_version(db: &DatabaseManager) -> Result<i32> {
    let row = db
        .query_opt(
            "SELECT COALESCE(MAX(version), 0) FROM rsdb_schema_migrations WHERE to_regclass('rsdb_schema_migrations') IS NOT NULL",
            &[],
        )
        .await;
    match row {
        Ok(Some(r)) => Ok(r.get(0)),
        Ok(None) => Ok(0),
        Err(Error::Query(m)) if m.contains("42P01") => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_numbered_in_order_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(!m.sql.trim().is_empty());
        }
    }

    #[test]
    fn checksum_changes_with_one_character() {
        assert_ne!(checksum("SELECT 1;"), checksum("SELECT 2;"));
        assert_eq!(checksum("x").len(), 64);
    }
}
