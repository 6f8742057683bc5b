//! What a backup holds and how it is proven authentic: the manifest (`manifest.json`: sizes,
//! SHA-256 of every stored file, the data key sealed under the master key, row counts or the WAL
//! range), its MAC (`manifest.mac`, an HMAC under the master key), and the verification that
//! reads a whole backup back.

use super::archive::{sha256_of, ChunkReader};
use super::kind::{BackupKind, PhysicalKind};
use super::manager::BackupManager;
use crate::crypto::envelope::{constant_time_eq, Key};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One stored file of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub chunks: u64,
    /// Bytes before compression and encryption.
    pub plain_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// SHA-256 of the stored file.
    pub sha256: String,
}

/// What a backup contains and how to open it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup_id: String,
    pub backup_type: String,
    pub method: String,
    pub database: String,
    pub server_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub compression: String,
    pub encryption: String,
    pub key_id: String,
    /// The data key, sealed under the master key `key_id` (hex).
    pub wrapped_key: String,
    pub files: Vec<FileEntry>,
    /// Rows per table in the snapshot the dump was taken from (logical backups).
    #[serde(default)]
    pub row_counts: BTreeMap<String, i64>,
    /// Physical backups: where WAL replay starts and stops, and what the backup builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<PhysicalInfo>,
}

/// The WAL range of a physical backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhysicalInfo {
    /// The backup this one needs (none for a full backup).
    pub parent_backup_id: Option<String>,
    /// The full backup at the root of the chain (itself for a full backup).
    pub base_backup_id: String,
    pub timeline: u32,
    /// Full: the checkpoint the base backup starts from. Incremental/differential: where the
    /// parent (incremental) or the full backup (differential) stopped.
    pub start_lsn: String,
    /// A restore of this backup replays WAL up to here.
    pub stop_lsn: String,
    /// The first WAL segment this backup holds or needs.
    pub start_wal: String,
    /// The last WAL segment this backup holds.
    pub stop_wal: String,
    pub wal_segment_size: u64,
    pub system_identifier: String,
    /// Every WAL segment stored in this backup.
    pub wal_segments: Vec<String>,
}

impl Manifest {
    /// The kind of this backup: a manifest with a WAL range is physical (its `backup_type` is
    /// `full`, `incremental` or `differential`), one without is a logical dump. A physical
    /// manifest whose type this version does not know counts as a physical full backup.
    pub fn kind(&self) -> BackupKind {
        match &self.physical {
            None => BackupKind::Logical,
            Some(_) => BackupKind::Physical(PhysicalKind::parse(&self.backup_type).unwrap_or(PhysicalKind::Full)),
        }
    }

    /// `logical` or `physical` (the tool that wrote it is in the `method` field).
    pub fn backup_method(&self) -> &'static str {
        self.kind().method()
    }

    /// Whether this is a physical backup of the cluster.
    pub fn is_physical(&self) -> bool {
        self.physical.is_some()
    }
}

pub(crate) fn manifest_context(backup_id: &str) -> Vec<u8> {
    format!("backup:{backup_id}:data-key").into_bytes()
}

impl BackupManager {
    /// Signs and stores a manifest (the manifest last: a backup without one is incomplete).
    pub(crate) fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let text = serde_json::to_vec_pretty(m)?;
        let mac = hex::encode(self.keyring.mac("backup-manifest", &text)?);
        self.storage.put(&format!("{}/manifest.mac", m.backup_id), mac.as_bytes())?;
        self.storage.put(&format!("{}/manifest.json", m.backup_id), &text)?;
        Ok(())
    }

    /// Every backup in the repository (read from the manifests, not from the database),
    /// oldest first. Manifests that do not authenticate are skipped.
    pub fn repository_manifests(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for (key, _) in self.storage.list("")? {
            if let Some(id) = key.strip_suffix("/manifest.json") {
                if !id.contains('/') {
                    if let Ok(m) = self.manifest(id) {
                        out.push(m);
                    }
                }
            }
        }
        out.sort_by_key(|m| m.finished_at);
        Ok(out)
    }

    /// Reads and authenticates a backup's manifest.
    pub fn manifest(&self, backup_id: &str) -> Result<Manifest> {
        check_id(backup_id)?;
        let get = |name: &str| match self.storage.get(&format!("{backup_id}/{name}")) {
            Err(Error::NotFound(e)) => Err(Error::NotFound(format!("backup {backup_id}: {name}: {e}"))),
            other => other,
        };
        let text = get("manifest.json")?;
        let mac = get("manifest.mac")?;
        let mac = hex::decode(String::from_utf8_lossy(&mac).trim())
            .map_err(|_| Error::Integrity(format!("backup {backup_id}: manifest.mac is corrupt")))?;
        let ok = self.keyring.mac_all("backup-manifest", &text)?.iter().any(|(_, m)| constant_time_eq(m, &mac));
        if !ok {
            return Err(Error::Integrity(format!(
                "backup {backup_id}: manifest.json or manifest.mac was altered (the MAC does not match), \
                 or the master key that signed them is not loaded"
            )));
        }
        let m: Manifest = serde_json::from_slice(&text)?;
        if m.backup_id != backup_id {
            return Err(Error::Integrity(format!("backup {backup_id}: the manifest belongs to {}", m.backup_id)));
        }
        Ok(m)
    }

    pub(crate) fn data_key(&self, m: &Manifest) -> Result<Key> {
        let wrapped = hex::decode(&m.wrapped_key).map_err(|_| Error::Integrity("wrapped key is corrupt".into()))?;
        let raw = self.keyring.open(&m.key_id, &manifest_context(&m.backup_id), &wrapped)?;
        Key::from_hex(&hex::encode(raw))
    }

    /// Reads the whole backup back: the manifest's MAC, every file's size and SHA-256, and every
    /// chunk's authentication tag. The error names the file and chunk at fault.
    pub fn verify(&self, backup_id: &str) -> Result<Manifest> {
        let m = self.manifest(backup_id)?;
        let key = self.data_key(&m)?;
        // Sizes come from the manifest: added without overflow whatever it claims.
        let total = m.files.iter().fold(0u64, |t, f| t.saturating_add(f.stored_bytes));
        let mut done = 0u64;
        for f in &m.files {
            let object = format!("{backup_id}/{}", f.name);
            let open = || match self.storage.open(&object) {
                Err(Error::NotFound(e)) => {
                    Err(Error::Integrity(format!("backup {backup_id}: {} is missing: {e}", f.name)))
                }
                other => other,
            };
            let (sha, size) = sha256_of(open()?)?;
            if size != f.stored_bytes || sha != f.sha256 {
                // Find the chunk: decrypting names it.
                let mut r = ChunkReader::new(open()?, key.clone(), backup_id, &f.name);
                let detail = match std::io::copy(&mut r, &mut std::io::sink()) {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("{}: size or checksum differs from the manifest", f.name),
                };
                return Err(Error::Integrity(format!("backup {backup_id}: {detail}")));
            }
            let r = ChunkReader::new(open()?, key.clone(), backup_id, &f.name);
            let mut z = zstd::stream::read::Decoder::new(r)?;
            let n = std::io::copy(&mut z, &mut std::io::sink())
                .map_err(|e| Error::Integrity(format!("backup {backup_id}: {e}")))?;
            if n != f.plain_bytes {
                return Err(Error::Integrity(format!(
                    "backup {backup_id}: {} holds {n} bytes, the manifest says {}",
                    f.name, f.plain_bytes
                )));
            }
            done = done.saturating_add(f.stored_bytes);
            self.report(backup_id, "verify", done, Some(total), format!("{} verified", f.name));
        }
        Ok(m)
    }
}

/// Checks that a backup id is a single safe name.
pub fn check_id(backup_id: &str) -> Result<()> {
    if backup_id.is_empty()
        || backup_id.len() > 128
        || !backup_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || backup_id == "wal"
    {
        return Err(Error::invalid(format!("{backup_id:?} is not a backup id")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::storage::LocalStorage;
    use crate::crypto::envelope::Keyring;
    use std::sync::Arc;

    fn manifest(id: &str) -> Manifest {
        Manifest {
            format: 1,
            backup_id: id.into(),
            backup_type: "full".into(),
            method: "pg_dump custom format".into(),
            database: "db".into(),
            server_version: "15".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            compression: "zstd".into(),
            encryption: "aes-256-gcm".into(),
            key_id: "k1".into(),
            wrapped_key: String::new(),
            files: vec![],
            row_counts: BTreeMap::new(),
            physical: None,
        }
    }

    #[test]
    fn a_damaged_but_well_formed_mac_names_both_files() {
        let dir = std::env::temp_dir().join(format!("rsdb-manifest-{}", std::process::id()));
        let storage: Arc<dyn crate::backup::Storage> = Arc::new(LocalStorage::new(&dir));
        let bm = BackupManager {
            db: None,
            cfg: Default::default(),
            keyring: Keyring::new("k1", Key::generate().unwrap()).unwrap(),
            storage: storage.clone(),
            progress: None,
        };
        bm.write_manifest(&manifest("full-1")).unwrap();
        assert_eq!(bm.manifest("full-1").unwrap().backup_id, "full-1");
        // Still valid hex, but not the MAC of manifest.json: either file may be the damaged one.
        storage.put("full-1/manifest.mac", "00".repeat(32).as_bytes()).unwrap();
        let err = bm.manifest("full-1").unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
        assert!(err.to_string().contains("manifest.json or manifest.mac was altered"), "{err}");
        // Not hex at all: the MAC file is the one at fault.
        storage.put("full-1/manifest.mac", b"not hex").unwrap();
        assert!(bm.manifest("full-1").unwrap_err().to_string().contains("manifest.mac is corrupt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_a_signed_manifest_claims_do_not_overflow_verification() {
        let dir = std::env::temp_dir().join(format!("rsdb-manifest-size-{}", std::process::id()));
        let keyring = Keyring::new("k1", Key::generate().unwrap()).unwrap();
        let bm = BackupManager {
            db: None,
            cfg: Default::default(),
            keyring: keyring.clone(),
            storage: Arc::new(LocalStorage::new(&dir)),
            progress: None,
        };
        let mut m = manifest("full-2");
        let (kid, wrapped) = keyring.seal(&manifest_context("full-2"), Key::generate().unwrap().as_bytes()).unwrap();
        (m.key_id, m.wrapped_key) = (kid, hex::encode(wrapped));
        // Two files of u64::MAX bytes: adding them up for the progress total overflowed.
        for name in ["a", "b"] {
            let sha256 = String::new();
            m.files.push(FileEntry { name: name.into(), chunks: 1, plain_bytes: 1, stored_bytes: u64::MAX, sha256 });
        }
        bm.write_manifest(&m).unwrap();
        let err = bm.verify("full-2").unwrap_err();
        assert!(matches!(err, Error::Integrity(ref e) if e.contains("a is missing")), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_manifest_says_its_kind_and_method_from_its_wal_range_and_type() {
        let logical = manifest("full-1");
        assert_eq!(logical.kind(), BackupKind::Logical);
        assert_eq!(logical.backup_method(), "logical");
        assert!(!logical.is_physical());
        for (ty, kind) in [
            ("full", PhysicalKind::Full),
            ("incremental", PhysicalKind::Incremental),
            ("differential", PhysicalKind::Differential),
        ] {
            let mut m = manifest("base-1");
            m.backup_type = ty.into();
            m.method = "pg_basebackup".into();
            m.physical = Some(PhysicalInfo {
                parent_backup_id: None,
                base_backup_id: "base-1".into(),
                timeline: 1,
                start_lsn: "0/2000028".into(),
                stop_lsn: "0/2000100".into(),
                start_wal: "000000010000000000000002".into(),
                stop_wal: "000000010000000000000002".into(),
                wal_segment_size: 16 << 20,
                system_identifier: "1".into(),
                wal_segments: vec![],
            });
            assert_eq!(m.kind(), BackupKind::Physical(kind), "{ty}");
            assert_eq!(m.backup_method(), "physical", "{ty}");
            assert!(m.is_physical());
        }
    }
}
