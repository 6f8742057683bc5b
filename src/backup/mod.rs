//! Backups: encrypted, compressed, verifiable archives of PostgreSQL databases.

pub mod archive;
pub mod logical;
pub mod schedule;

pub use logical::{BackupInfo, BackupManager, CleanupReport, Manifest, RestoreReport, RetentionPolicy};
pub use schedule::{BackupScheduler, CronSchedule, ScheduleEvent};
