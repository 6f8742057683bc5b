//! The WAL archive: PostgreSQL's `archive_command` (`rsdb wal-push %p`) and `restore_command`
//! (`rsdb wal-fetch %f %p`).
//!
//! Every archived file (segment, timeline history, backup label, partial segment) is one object
//! `wal/<name>` in the repository, sealed on its own:
//!
//! ```text
//! "RSDBWL01" | u32 header length (big endian) | header (JSON) | HMAC-SHA-256 of the header (32)
//!            | the file, zstd-compressed, in authenticated chunks (see `archive`)
//! ```
//!
//! The header names the file, its size and SHA-256, and its data key sealed under the master
//! key; the HMAC under the master key covers the header, and the chunks' associated data name
//! the file, so an object cannot be renamed or swapped for another.

use super::archive::{ChunkReader, ChunkWriter};
use super::storage::Storage;
use crate::crypto::envelope::{constant_time_eq, Key, Keyring};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"RSDBWL01";
const ZSTD_LEVEL: i32 = 3;
/// Where archived WAL lives in the repository.
pub const PREFIX: &str = "wal/";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    name: String,
    plain_bytes: u64,
    sha256: String,
    key_id: String,
    wrapped_key: String,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushOutcome {
    /// The file was stored.
    Stored,
    /// An identical copy was already stored (PostgreSQL retried after a crash): nothing to do.
    AlreadyArchived,
    /// An earlier push stored it ahead of PostgreSQL asking (`wal_push_parallel`), and the
    /// file is still the one stored.
    PushedAhead,
    /// Not stored: the WAL waiting to be archived had passed `wal_queue_max`, so the file was
    /// reported archived and a WAL gap recorded (see [`super::archiving`]).
    Dropped,
}

/// The archived WAL of one repository.
#[derive(Debug, Clone)]
pub struct WalArchive {
    storage: Arc<dyn Storage>,
    keyring: Keyring,
}

fn key_context(name: &str) -> Vec<u8> {
    format!("wal:{name}:data-key").into_bytes()
}

/// Checks that `name` is a file name PostgreSQL archives: a segment
/// (`000000010000000000000003`), a partial segment, a backup label
/// (`000000010000000000000003.00000028.backup`) or a timeline history (`00000002.history`).
pub fn check_name(name: &str) -> Result<()> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase());
    let ok = match name.split_once('.') {
        None => hex(name, 24),
        Some((seg, "partial")) => hex(seg, 24),
        Some((tli, "history")) => hex(tli, 8),
        Some((seg, rest)) => match rest.split_once('.') {
            Some((off, "backup")) => hex(seg, 24) && hex(off, 8),
            _ => false,
        },
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("{name:?} is not a WAL file name")))
    }
}

/// The file name of a WAL path (PostgreSQL's `%p`), checked with [`check_name`].
pub(crate) fn file_name_of(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| Error::invalid(format!("{} is not a file", path.display())))?;
    check_name(&name)?;
    Ok(name)
}

/// The segment after `name` (24 hex digits) with segments of `segment_size` bytes; `None` for
/// anything else.
pub fn next_segment(name: &str, segment_size: u64) -> Option<String> {
    if name.len() != 24 || check_name(name).is_err() || segment_size == 0 {
        return None;
    }
    let per_log = 0x1_0000_0000u64 / segment_size;
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let segno = (log * per_log + seg).checked_add(1)?;
    Some(segment_name(tli, segno.checked_mul(segment_size)?, segment_size))
}

/// Parses an LSN such as `0/3000028`.
pub fn parse_lsn(lsn: &str) -> Result<u64> {
    let (hi, lo) = lsn.trim().split_once('/').ok_or_else(|| Error::invalid(format!("{lsn:?} is not an LSN")))?;
    let hi = u32::from_str_radix(hi, 16).map_err(|_| Error::invalid(format!("{lsn:?} is not an LSN")))?;
    let lo = u32::from_str_radix(lo, 16).map_err(|_| Error::invalid(format!("{lsn:?} is not an LSN")))?;
    Ok(((hi as u64) << 32) | lo as u64)
}

/// Formats an LSN the way PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The name of the segment holding `lsn` on `timeline`.
pub fn segment_name(timeline: u32, lsn: u64, segment_size: u64) -> String {
    let per_log = 0x1_0000_0000u64 / segment_size;
    let segno = lsn / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

/// The position (log and segment number parts) of a segment or backup-label name, for
/// ordering segments regardless of timeline; `None` for history files.
pub fn segment_position(name: &str) -> Option<&str> {
    name.get(8..24).filter(|p| !name.ends_with(".history") && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The timeline of a segment name.
pub fn segment_timeline(name: &str) -> Option<u32> {
    name.get(..8).and_then(|t| u32::from_str_radix(t, 16).ok())
}

impl WalArchive {
    pub fn new(storage: Arc<dyn Storage>, keyring: Keyring) -> Self {
        WalArchive { storage, keyring }
    }

    /// The archive of the repository `cfg` names (`backup_dir` or `backup_s3_url`), sealed
    /// with its `master_key`; what `rsdb wal-push` / `wal-fetch` use.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Self> {
        Ok(WalArchive::new(super::repository::from_config(cfg)?, Keyring::from_config(cfg)?))
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Archives the file at `path` (PostgreSQL's `%p`). Idempotent: when an identical copy is
    /// already archived it succeeds without writing; when a *different* file of that name is,
    /// it fails and leaves the archived one alone, so PostgreSQL keeps the segment and retries
    /// while an operator looks.
    pub fn push(&self, path: &Path) -> Result<PushOutcome> {
        Ok(self.push_file(path)?.0)
    }

    /// [`WalArchive::push`], also giving the file's SHA-256 and size.
    pub(crate) fn push_file(&self, path: &Path) -> Result<(PushOutcome, String, u64)> {
        let name = file_name_of(path)?;
        let data = std::fs::read(path).map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        let sha = hex::encode(Sha256::digest(&data));
        let outcome = self.push_data(&name, &data, &sha)?;
        Ok((outcome, sha, data.len() as u64))
    }

    fn push_data(&self, name: &str, data: &[u8], sha: &str) -> Result<PushOutcome> {
        let name = name.to_string();
        let sha = sha.to_string();
        let key = format!("{PREFIX}{name}");
        if self.storage.size(&key)?.is_some() {
            let existing = self.read_header(&name, &mut self.storage.open(&key)?)?;
            if existing.sha256 == sha && existing.plain_bytes == data.len() as u64 {
                return Ok(PushOutcome::AlreadyArchived);
            }
            return Err(Error::Conflict(format!(
                "{name} is already archived with different contents ({}); refusing to overwrite it",
                self.storage.location(&key)
            )));
        }
        let data_key = Key::generate()?;
        let (key_id, wrapped) = self.keyring.seal(&key_context(&name), data_key.as_bytes())?;
        let header = Header {
            name: name.clone(),
            plain_bytes: data.len() as u64,
            sha256: sha,
            key_id,
            wrapped_key: hex::encode(wrapped),
        };
        let header = serde_json::to_vec(&header)?;
        let mac = self.keyring.mac("wal-header", &header)?;
        let mut out = self.storage.create(&key)?;
        let io = |e: std::io::Error| Error::Io(format!("writing {}: {e}", self.storage.location(&key)));
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&(header.len() as u32).to_be_bytes()).map_err(io)?;
        out.write_all(&header).map_err(io)?;
        out.write_all(&mac).map_err(io)?;
        let sealer = ChunkWriter::new(&mut out, data_key, "wal", &name)?;
        let mut z = zstd::stream::write::Encoder::new(sealer, ZSTD_LEVEL)?;
        z.write_all(data).map_err(io)?;
        z.finish().map_err(io)?.finish().map_err(io)?;
        out.commit()?;
        Ok(PushOutcome::Stored)
    }

    fn read_header(&self, name: &str, r: &mut dyn Read) -> Result<Header> {
        let bad = |what: &str| Error::Integrity(format!("archived WAL {name}: {what}"));
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(|_| bad("too short"))?;
        if &magic != MAGIC {
            return Err(bad("not an archived WAL file (bad magic)"));
        }
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(|_| bad("truncated header"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 64 * 1024 {
            return Err(bad("header length is corrupt"));
        }
        let mut header = vec![0u8; len];
        r.read_exact(&mut header).map_err(|_| bad("truncated header"))?;
        let mut mac = [0u8; 32];
        r.read_exact(&mut mac).map_err(|_| bad("truncated header"))?;
        let ok = self.keyring.mac_all("wal-header", &header)?.iter().any(|(_, m)| constant_time_eq(m, &mac));
        if !ok {
            return Err(bad("the header was altered, or the master key that sealed it is not loaded"));
        }
        let h: Header = serde_json::from_slice(&header).map_err(|_| bad("header is corrupt"))?;
        if h.name != name {
            return Err(bad(&format!("the object holds {}", h.name)));
        }
        Ok(h)
    }

    /// Reads an archived file back, authenticated and checked against its SHA-256.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        check_name(name)?;
        let key = format!("{PREFIX}{name}");
        let mut r = self.storage.open(&key)?;
        let h = self.read_header(name, &mut r)?;
        let wrapped = hex::decode(&h.wrapped_key).map_err(|_| Error::Integrity(format!("{name}: wrapped key")))?;
        let raw = self.keyring.open(&h.key_id, &key_context(name), &wrapped)?;
        let data_key = Key::from_hex(&hex::encode(raw))?;
        let mut z = zstd::stream::read::Decoder::new(ChunkReader::new(r, data_key, "wal", name))?;
        // The header is authenticated, but its size only reserves up to one WAL segment's worth
        // (1 GiB, PostgreSQL's largest); the data decides how much is read.
        let mut data = Vec::with_capacity(h.plain_bytes.min(1 << 30) as usize);
        z.read_to_end(&mut data).map_err(|e| Error::Integrity(format!("archived WAL {e}")))?;
        if data.len() as u64 != h.plain_bytes || hex::encode(Sha256::digest(&data)) != h.sha256 {
            return Err(Error::Integrity(format!("archived WAL {name}: contents differ from its recorded checksum")));
        }
        Ok(data)
    }

    /// Restores archived `name` (PostgreSQL's `%f`) to `dest` (`%p`). [`Error::NotFound`] when
    /// it was never archived — PostgreSQL asks for files that may not exist, such as the next
    /// timeline's history. The file appears at `dest` complete or not at all.
    pub fn fetch(&self, name: &str, dest: &Path) -> Result<u64> {
        let data = self.read(name)?;
        let tmp = dest.with_file_name(format!(
            ".{}.rsdb-tmp-{}",
            dest.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dest)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io(format!("cannot write {}: {e}", dest.display())));
        }
        Ok(data.len() as u64)
    }

    /// Names of every archived file, sorted.
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .storage
            .list(PREFIX)?
            .into_iter()
            .filter_map(|(k, size)| k.strip_prefix(PREFIX).map(|n| (n.to_string(), size)))
            .filter(|(n, _)| check_name(n).is_ok())
            .collect())
    }

    /// Deletes archived segments and backup labels positioned before `oldest_needed` (a segment
    /// name), on every timeline; history files are always kept. Returns (files, bytes) removed.
    pub fn expire_before(&self, oldest_needed: &str) -> Result<(Vec<String>, u64)> {
        let limit = segment_position(oldest_needed)
            .ok_or_else(|| Error::invalid(format!("{oldest_needed:?} is not a segment name")))?
            .to_string();
        let mut removed = Vec::new();
        let mut bytes = 0;
        for (name, size) in self.list()? {
            if let Some(pos) = segment_position(&name) {
                if pos < limit.as_str() {
                    self.storage.delete(&format!("{PREFIX}{name}"))?;
                    removed.push(name);
                    bytes += size;
                }
            }
        }
        Ok((removed, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::storage::LocalStorage;

    #[test]
    fn names_and_positions() {
        for ok in [
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000003.00000028.backup",
            "000000020000000A000000FF.partial",
        ] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "x",
            "../x",
            "../etc/passwd",
            "00000001000000000000000g",
            "00000001000000ff000000aa",
            "x.history",
            "000000010000000000000003.backup",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let seg = 16 << 20;
        assert_eq!(parse_lsn("0/3000028").unwrap(), 0x3000028);
        assert_eq!(format_lsn(0x1_0300_0028), "1/3000028");
        assert_eq!(segment_name(1, 0x3000028, seg), "000000010000000000000003");
        assert_eq!(segment_name(2, 0x1_FF00_0000, seg), "0000000200000001000000FF");
        assert_eq!(segment_position("000000020000000100000003"), Some("0000000100000003"));
        assert_eq!(segment_position("00000002.history"), None);
        assert_eq!(next_segment("000000010000000000000003", seg).as_deref(), Some("000000010000000000000004"));
        assert_eq!(next_segment("0000000100000000000000FF", seg).as_deref(), Some("000000010000000100000000"));
        assert_eq!(next_segment("000000010000000000000001", 1 << 30).as_deref(), Some("000000010000000000000002"));
        assert_eq!(next_segment("000000010000000000000003", 1 << 30).as_deref(), Some("000000010000000100000000"));
        assert_eq!(next_segment("00000002.history", seg), None);
        // Not a byte index into a multi-byte character (this panicked), nor a non-hex position.
        assert_eq!(segment_position("0000000\u{e9}0000000000000000"), None);
        assert_eq!(segment_position("00000001ZZZZZZZZ00000003"), None);
    }

    #[test]
    fn a_signed_header_claiming_a_huge_size_is_an_integrity_error_not_an_abort() {
        let dir = std::env::temp_dir().join(format!("rsdb-walsize-{}-{}", std::process::id(), rand::random::<u32>()));
        let keyring = Keyring::new("k1", Key::generate().unwrap()).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.join("repo")));
        let archive = WalArchive::new(storage.clone(), keyring.clone());
        std::fs::create_dir_all(&dir).unwrap();
        let name = "000000010000000000000001";
        std::fs::write(dir.join(name), b"segment").unwrap();
        archive.push(&dir.join(name)).unwrap();
        // Rewrite the header with a size of 2^62 bytes and sign it again.
        let object = storage.get(&format!("{PREFIX}{name}")).unwrap();
        let len = u32::from_be_bytes(object[8..12].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&object[12..12 + len]).unwrap();
        header["plain_bytes"] = (1u64 << 62).into();
        let header = serde_json::to_vec(&header).unwrap();
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&(header.len() as u32).to_be_bytes());
        forged.extend_from_slice(&header);
        forged.extend_from_slice(&keyring.mac("wal-header", &header).unwrap());
        forged.extend_from_slice(&object[12 + len + 32..]);
        storage.put(&format!("{PREFIX}{name}"), &forged).unwrap();
        let err = archive.read(name).unwrap_err();
        assert!(matches!(err, Error::Integrity(ref m) if m.contains("checksum")), "{err}");
        // A non-ASCII limit is refused, not a panic.
        assert!(matches!(archive.expire_before("0000000\u{e9}0000000000000000"), Err(Error::InvalidArgument(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn push_is_idempotent_and_fetch_round_trips() {
        let dir = std::env::temp_dir().join(format!("rsdb-wal-{}-{}", std::process::id(), rand::random::<u32>()));
        let keyring = Keyring::new("k1", Key::generate().unwrap()).unwrap();
        let archive = WalArchive::new(Arc::new(LocalStorage::new(dir.join("repo"))), keyring.clone());
        std::fs::create_dir_all(dir.join("pg_wal")).unwrap();
        let seg = dir.join("pg_wal/000000010000000000000001");
        let data: Vec<u8> = (0..(1 << 21)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&seg, &data).unwrap();
        assert_eq!(archive.push(&seg).unwrap(), PushOutcome::Stored);
        assert_eq!(archive.push(&seg).unwrap(), PushOutcome::AlreadyArchived);
        let stored = dir.join("repo/wal/000000010000000000000001");
        let archived = std::fs::read(&stored).unwrap();
        assert!(!archived.windows(256).any(|w| w == &data[4096..4352]), "the archived object holds no plaintext");
        std::fs::write(&seg, b"different").unwrap();
        let err = archive.push(&seg).unwrap_err();
        assert!(matches!(err, Error::Conflict(ref m) if m.contains("000000010000000000000001")), "{err}");
        assert_eq!(std::fs::read(&stored).unwrap(), archived, "the archived copy is kept");
        let out = dir.join("restored");
        assert_eq!(archive.fetch("000000010000000000000001", &out).unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&out).unwrap(), data);
        let nothing = dir.join("nothing");
        assert!(matches!(archive.fetch("000000010000000000000002", &nothing), Err(Error::NotFound(_))));
        assert!(matches!(archive.fetch("../x", &nothing), Err(Error::InvalidArgument(_))));
        assert!(!nothing.exists(), "a refused fetch writes nothing");
        // Only WAL files are pushed, and a missing one is an I/O error naming it.
        std::fs::write(dir.join("pg_wal/notes.txt"), b"hello").unwrap();
        let err = archive.push(&dir.join("pg_wal/notes.txt")).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("notes.txt")), "{err}");
        let err = archive.push(&dir.join("pg_wal/000000010000000000000009")).unwrap_err();
        assert!(matches!(err, Error::Io(ref m) if m.contains("000000010000000000000009")), "{err}");
        assert!(!dir.join("repo/wal/000000010000000000000009").exists());
        let other = WalArchive::new(archive.storage.clone(), Keyring::new("k1", Key::generate().unwrap()).unwrap());
        assert!(matches!(other.read("000000010000000000000001"), Err(Error::Integrity(_))));
        // A flipped byte in the stored object is refused.
        let mut bytes = std::fs::read(&stored).unwrap();
        let n = bytes.len();
        bytes[n - 100] ^= 1;
        std::fs::write(&stored, &bytes).unwrap();
        assert!(matches!(archive.read("000000010000000000000001"), Err(Error::Integrity(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
