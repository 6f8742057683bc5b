//! Backups: encrypted, compressed, verifiable backups of PostgreSQL (logical dumps of the
//! database, physical backups of the cluster with incremental and differential WAL backups),
//! their retention, scheduling and restore, and the WAL archive, in a local or S3 repository.
//!
//! - [`manager`]: `BackupManager`, the entry point: takes a backup of any kind, records every
//!   attempt in `backup_history`, lists and deletes backups, reports progress.
//! - [`kind`]: `BackupKind`, the one vocabulary of backup kinds (`logical`, `full`,
//!   `incremental`, `differential`) every face parses.
//! - [`logical`]: the logical kind: `pg_dump` into the repository, `pg_restore` back out.
//! - [`physical`]: the physical kinds: `pg_basebackup` base backups and the WAL backups that
//!   build on them, and the chain a restore needs.
//! - [`manifest`]: what a backup holds, its signature, and verifying a backup byte for byte.
//! - [`retention`]: `RetentionPolicy` (the default periods) and the cleanup that applies it.
//! - [`recovery`]: `RecoveryManager`: restores into a database or a new data directory, to a
//!   point in time, and test restores.
//! - [`cluster`]: starting and stopping the PostgreSQL server of a restored data directory.
//! - [`schedule`]: `BackupScheduler`, backups on cron schedules.
//! - [`wal`]: the WAL archive (`wal-push`/`wal-fetch`) and LSN and segment arithmetic.
//! - [`archiving`]: what `wal-push` does around one file: pushing the next ready files at
//!   once, and the bounded queue that drops WAL to save the primary's disk.
//! - [`gaps`]: the WAL gaps a full queue leaves, the backups they limit, and the refusals.
//! - [`blockmap`]: which data-file blocks the WAL between two positions changed (read by
//!   `pg_waldump`), the map block-level incrementals are to be built from.
//! - [`archive`]: the sealed, chunked file format every stored file uses.
//! - [`storage`]: the `Storage` trait and the local directory; [`s3`]: S3-compatible storage;
//!   [`repository`]: which of the two the configuration names.
//! - `pgtool`, `rowcount`, `pipeline`: running the PostgreSQL tools; counting every table's
//!   rows; reading a stored file in stages on threads of their own (restores).

pub mod archive;
pub mod archiving;
pub mod blockmap;
pub mod cluster;
pub mod gaps;
pub mod kind;
pub mod logical;
pub mod manager;
pub mod manifest;
mod pgtool;
pub mod physical;
mod pipeline;
pub mod recovery;
pub mod repository;
pub mod retention;
mod rowcount;
pub mod s3;
pub mod schedule;
pub mod storage;
pub mod wal;

pub use archiving::{ArchiveSettings, PushReport, WalGap};
pub use gaps::{WalGapCallback, WalGapWatch};
pub use kind::{BackupKind, PhysicalKind};
pub use logical::RestoreReport;
pub use manager::{BackupInfo, BackupManager, Progress, ProgressFn};
pub use manifest::{FileEntry, Manifest, PhysicalInfo};
pub use recovery::{
    ClusterReport, ClusterRestoreOptions, DeltaReport, RecoveryManager, RecoveryTarget, TestRestoreReport,
};
pub use retention::{CleanupReport, RetentionPolicy};
pub use schedule::{BackupScheduler, CronSchedule, ScheduleEvent};
pub use storage::{LocalStorage, Storage};
pub use wal::{PushOutcome, WalArchive};
