//! Backups: encrypted, compressed, verifiable archives of PostgreSQL databases.

pub mod archive;
pub mod logical;
pub mod physical;
pub mod recovery;
pub mod s3;
pub mod schedule;
pub mod storage;
pub mod wal;

pub use logical::{BackupInfo, BackupManager, CleanupReport, Manifest, RestoreReport, RetentionPolicy};
pub use logical::{PhysicalInfo, Progress, ProgressFn};
pub use physical::PhysicalKind;
pub use recovery::{ClusterReport, ClusterRestoreOptions, RecoveryManager, RecoveryTarget, TestRestoreReport};
pub use schedule::{BackupScheduler, CronSchedule, ScheduleEvent, ScheduledBackup};
pub use storage::{LocalStorage, Storage};
pub use wal::{PushOutcome, WalArchive};
