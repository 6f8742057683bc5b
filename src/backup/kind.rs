//! The one vocabulary of backup kinds, shared by the CLI, the C and C++ faces and the scheduler:
//! `logical` (a `pg_dump` of the database), and the physical `full` (a base backup of the
//! cluster), `incremental` and `differential` (the WAL since the last physical backup of any
//! type, or since the last physical full backup).

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The kinds of physical backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhysicalKind {
    Full,
    Incremental,
    Differential,
}

impl PhysicalKind {
    /// `full`, `incremental` (or `incr`), `differential` (or `diff`).
    pub fn parse(s: &str) -> Result<Self> {
        match BackupKind::parse(s)? {
            BackupKind::Physical(k) => Ok(k),
            BackupKind::Logical => {
                Err(Error::invalid(format!("{s:?} is not a physical backup type (full, incremental, differential)")))
            }
        }
    }

    /// The name in `backup_history.backup_type` and in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            PhysicalKind::Full => "full",
            PhysicalKind::Incremental => "incremental",
            PhysicalKind::Differential => "differential",
        }
    }

    /// The first part of a backup id of this kind.
    pub(crate) fn id_prefix(self) -> &'static str {
        match self {
            PhysicalKind::Full => "base",
            PhysicalKind::Incremental => "incr",
            PhysicalKind::Differential => "diff",
        }
    }
}

/// What a backup is: a logical dump of the database or a physical backup of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    /// A full logical backup (pg_dump) of the database.
    Logical,
    /// A physical backup of the cluster: full, incremental or differential.
    Physical(PhysicalKind),
}

impl Default for BackupKind {
    /// The kind taken when a caller names none: a logical backup, which needs no WAL archive.
    fn default() -> Self {
        BackupKind::Logical
    }
}

impl BackupKind {
    /// Every accepted name, in the order the help texts list them.
    pub const NAMES: [&'static str; 4] = ["logical", "full", "incremental", "differential"];

    /// `logical`, or the physical `full`, `incremental` (`incr`) or `differential` (`diff`).
    /// The error names the valid values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "logical" => Ok(BackupKind::Logical),
            "full" => Ok(BackupKind::Physical(PhysicalKind::Full)),
            "incremental" | "incr" => Ok(BackupKind::Physical(PhysicalKind::Incremental)),
            "differential" | "diff" => Ok(BackupKind::Physical(PhysicalKind::Differential)),
            other => Err(Error::invalid(format!(
                "{other:?} is not a backup type (logical, full, incremental, differential; \
                 full, incremental and differential are physical)"
            ))),
        }
    }

    /// The name [`BackupKind::parse`] reads back.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Logical => "logical",
            BackupKind::Physical(k) => k.as_str(),
        }
    }

    /// `logical` or `physical`.
    pub fn method(self) -> &'static str {
        match self {
            BackupKind::Logical => "logical",
            BackupKind::Physical(_) => "physical",
        }
    }

    /// How `backup_history` records this kind: its `backup_type` and `method` columns.
    pub(crate) fn history_type_and_method(self) -> (&'static str, &'static str) {
        match self {
            BackupKind::Logical => ("full", "pg_dump"),
            BackupKind::Physical(PhysicalKind::Full) => ("full", "pg_basebackup"),
            BackupKind::Physical(k) => (k.as_str(), "wal"),
        }
    }

    /// The kind of a `backup_history` row, from its `backup_type` and `method` columns.
    pub fn from_history(backup_type: &str, method: Option<&str>) -> Result<Self> {
        match (backup_type, method) {
            ("full", Some("pg_dump")) | ("full", None) => Ok(BackupKind::Logical),
            (t, _) => BackupKind::parse(t),
        }
    }
}

impl FromStr for BackupKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        BackupKind::parse(s)
    }
}

impl serde::Serialize for BackupKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vocabulary_parses_every_kind_and_names_the_valid_ones() {
        assert_eq!(BackupKind::parse("logical").unwrap(), BackupKind::Logical);
        assert_eq!(BackupKind::parse("full").unwrap(), BackupKind::Physical(PhysicalKind::Full));
        assert_eq!(BackupKind::parse("incr").unwrap(), BackupKind::Physical(PhysicalKind::Incremental));
        assert_eq!(BackupKind::parse("differential").unwrap(), BackupKind::Physical(PhysicalKind::Differential));
        for name in BackupKind::NAMES {
            assert_eq!(BackupKind::parse(name).unwrap().as_str(), name);
        }
        let err = BackupKind::parse("weekly").unwrap_err().to_string();
        for name in BackupKind::NAMES {
            assert!(err.contains(name), "{err}");
        }
        assert!(PhysicalKind::parse("logical").is_err());
        assert_eq!(BackupKind::from_history("full", Some("pg_dump")).unwrap(), BackupKind::Logical);
        assert_eq!(BackupKind::from_history("full", Some("pg_basebackup")).unwrap().as_str(), "full");
        assert_eq!(BackupKind::Logical.history_type_and_method(), ("full", "pg_dump"));
    }
}
