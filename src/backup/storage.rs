//! Where backups and archived WAL are kept: a local directory or S3-compatible object storage.
//!
//! Objects are named by `/`-separated keys relative to the repository root, such as
//! `full-20261125T101500Z-a1b2c3/manifest.json` or `wal/000000010000000000000003`. Writing is
//! all-or-nothing: an object appears under its key only when [`ObjectWriter::commit`] succeeded,
//! and then it is durable (fsynced, or acknowledged by the object store). A writer dropped
//! without a commit leaves nothing behind.

use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// An object being written; nothing is visible under its key until `commit`.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible; returns its size in bytes.
    fn commit(self: Box<Self>) -> Result<u64>;
}

/// A backup repository.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// `local` or `s3`.
    fn kind(&self) -> &'static str;
    /// Where a key lives, for messages and the history (`/path/key`, `s3://bucket/prefix/key`).
    fn location(&self, key: &str) -> String;
    /// Starts writing `key`, replacing any object of that name at commit.
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Reads `key`; [`Error::NotFound`] when it does not exist.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>>;
    /// The size of `key`, or `None` when it does not exist.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Every key that starts with `prefix` (at any depth), with its size, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    /// Deletes `key`; deleting a missing key succeeds.
    fn delete(&self, key: &str) -> Result<()>;
    /// Prepares the repository: creates the directory, or the bucket when it does not exist.
    /// Idempotent.
    fn init(&self) -> Result<()>;

    /// Writes a whole object.
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut w = self.create(key)?;
        w.write_all(data).map_err(|e| Error::Io(format!("writing {}: {e}", self.location(key))))?;
        w.commit()?;
        Ok(())
    }

    /// Reads a whole object.
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(key)?.read_to_end(&mut out).map_err(|e| Error::Io(format!("reading {}: {e}", self.location(key))))?;
        Ok(out)
    }

    /// Deletes every key under `prefix`; returns the bytes freed.
    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let mut freed = 0;
        for (key, size) in self.list(prefix)? {
            self.delete(&key)?;
            freed += size;
        }
        Ok(freed)
    }
}

/// Checks that a key is relative, `/`-separated and free of `.`/`..` segments.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && !key.contains('\0')
        && !key.contains('\\');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("{key:?} is not a storage key")))
    }
}

/// A repository in a local directory (created on first write).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directories up to `dir`. Directories this process creates under an
    /// existing repository root get the root's owner, so that a push run by root (say, by
    /// hand) never leaves a directory the database server's own archive_command cannot write.
    fn make_dirs(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut missing = Vec::new();
        let mut d = dir.to_path_buf();
        while !d.exists() && d.starts_with(&self.root) && d != self.root {
            missing.push(d.clone());
            match d.parent() {
                Some(p) => d = p.to_path_buf(),
                None => break,
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
        if unsafe { libc::geteuid() } == 0 {
            if let Ok(meta) = std::fs::metadata(&self.root) {
                if meta.uid() != 0 {
                    for m in missing {
                        std::os::unix::fs::chown(&m, Some(meta.uid()), Some(meta.gid()))
                            .map_err(|e| io_err("cannot chown", &m, e))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound && what == "cannot open" {
        Error::NotFound(format!("{}: {e}", path.display()))
    } else {
        Error::Io(format!("{what} {}: {e}", path.display()))
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("cannot sync", dir, e))
}

struct LocalWriter {
    file: Option<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    dest: PathBuf,
    written: u64,
}

impl Write for LocalWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.file.as_mut().expect("open until commit").write(data)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("open until commit").flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> Result<u64> {
        let file = self.file.take().expect("committed once");
        let file = file.into_inner().map_err(|e| io_err("cannot write", &self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err("cannot sync", &self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| io_err("cannot rename", &self.tmp, e))?;
        if let Some(parent) = self.dest.parent() {
            sync_dir(parent)?;
        }
        Ok(self.written)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Storage for LocalStorage {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn init(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| io_err("cannot create", &self.root, e))
    }

    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let dest = self.path(key)?;
        let parent = dest.parent().expect("a key has a parent").to_path_buf();
        self.make_dirs(&parent)?;
        let name = dest.file_name().expect("a key has a name").to_string_lossy().to_string();
        let tmp = parent.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            hex::encode(crate::crypto::random::bytes(4)?)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_err("cannot create", &tmp, e))?;
        Ok(Box::new(LocalWriter {
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            tmp,
            dest,
            written: 0,
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.path(key)?;
        let f = std::fs::File::open(&p).map_err(|e| io_err("cannot open", &p, e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key)?;
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot stat", &p, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        // Walk the deepest directory the prefix names fully, then filter by the prefix.
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if base.is_empty() { self.root.clone() } else { self.path(base)? };
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err("cannot list", &dir, e))?;
                let name = entry.file_name().to_string_lossy().to_string();
                if name.starts_with('.') {
                    continue; // unfinished writes
                }
                let meta = entry.metadata().map_err(|e| io_err("cannot stat", &entry.path(), e))?;
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if let Ok(rel) = entry.path().strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                    if key.starts_with(prefix) {
                        out.push((key, meta.len()));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("cannot delete", &p, e)),
        }
        // Drop directories the deletion emptied, up to the root.
        let mut dir = p.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_objects_appear_only_when_committed() {
        let dir = std::env::temp_dir().join(format!("rsdb-storage-{}", std::process::id()));
        let s = LocalStorage::new(&dir);
        let mut w = s.create("a/b/one").unwrap();
        w.write_all(b"hello").unwrap();
        assert_eq!(s.size("a/b/one").unwrap(), None);
        assert!(s.list("a/").unwrap().is_empty());
        assert_eq!(w.commit().unwrap(), 5);
        let mut w = s.create("a/b/two").unwrap();
        w.write_all(b"dropped").unwrap();
        drop(w);
        s.put("a/c", b"xy").unwrap();
        s.put("ab", b"z").unwrap();
        assert_eq!(s.list("a/").unwrap(), vec![("a/b/one".to_string(), 5), ("a/c".to_string(), 2)]);
        assert_eq!(s.list("a").unwrap().len(), 3);
        assert_eq!(s.get("a/b/one").unwrap(), b"hello");
        assert!(matches!(s.open("a/b/two"), Err(Error::NotFound(_))));
        assert_eq!(s.delete_prefix("a/").unwrap(), 7);
        assert!(!dir.join("a").exists());
        s.delete("a/c").unwrap();
        for bad in ["", "/abs", "a/../b", "a//b", "./a"] {
            assert!(s.create(bad).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
