//! The encrypted archive format of backups.
//!
//! A backup file is the zstd-compressed stream cut into chunks of at most 1 MiB, each sealed
//! with AES-256-GCM under the backup's own data key:
//!
//! ```text
//! "RSDBBK01" | chunk* ; chunk = u32 length (big endian) | nonce (12) | ciphertext | tag (16)
//! ```
//!
//! Each chunk's associated data is `backup id | file name | chunk index | last flag`, so chunks
//! cannot be swapped between backups, files or positions, dropped from the end (the last chunk
//! is marked, and a file without it is truncated), or altered without the tag failing. The data
//! key is sealed with the master key and kept in the manifest.

use crate::crypto::envelope::{self as crypto, Key};
use crate::error::Result;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

/// File magic and format version.
pub const MAGIC: &[u8; 8] = b"RSDBBK01";
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 1 << 20;
const NONCE: usize = 12;
const TAG: usize = 16;

fn aad(backup_id: &str, file: &str, index: u64, last: bool) -> Vec<u8> {
    format!("{backup_id}\0{file}\0{index}\0{}", last as u8).into_bytes()
}

/// Seals a byte stream into chunks; `finish` writes the last chunk.
pub struct ChunkWriter<W: Write> {
    inner: HashingWriter<W>,
    key: Key,
    backup_id: String,
    file: String,
    buf: Vec<u8>,
    index: u64,
    plain_bytes: u64,
}

impl<W: Write> ChunkWriter<W> {
    pub fn new(inner: W, key: Key, backup_id: &str, file: &str) -> Result<Self> {
        let mut inner = HashingWriter::new(inner);
        inner.write_all(MAGIC)?;
        Ok(ChunkWriter {
            inner,
            key,
            backup_id: backup_id.into(),
            file: file.into(),
            buf: Vec::with_capacity(CHUNK),
            index: 0,
            plain_bytes: 0,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let sealed = crypto::seal(&self.key, &aad(&self.backup_id, &self.file, self.index, last), &self.buf)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.inner.write_all(&(sealed.len() as u32).to_be_bytes())?;
        self.inner.write_all(&sealed)?;
        self.index += 1;
        self.buf.clear();
        Ok(())
    }

    /// Writes the final chunk; returns (chunks, plaintext bytes, stored bytes, SHA-256 of the
    /// stored file, the inner writer).
    pub fn finish(mut self) -> io::Result<(u64, u64, u64, String, W)> {
        self.seal_chunk(true)?;
        self.inner.flush()?;
        let (inner, size, digest) = self.inner.into_parts();
        Ok((self.index, self.plain_bytes, size, digest, inner))
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let room = CHUNK - self.buf.len();
            let n = room.min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == CHUNK {
                self.seal_chunk(false)?;
            }
        }
        self.plain_bytes += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes what passes through.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), size: 0 }
    }

    pub fn into_parts(self) -> (W, u64, String) {
        (self.inner, self.size, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens a chunked file; yields its plaintext, and fails naming the file and chunk at the
/// first chunk that does not authenticate, or when the last chunk is missing.
pub struct ChunkReader<R: Read> {
    inner: R,
    key: Key,
    backup_id: String,
    file: String,
    index: u64,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
    started: bool,
}

impl<R: Read> ChunkReader<R> {
    pub fn new(inner: R, key: Key, backup_id: &str, file: &str) -> Self {
        ChunkReader {
            inner,
            key,
            backup_id: backup_id.into(),
            file: file.into(),
            index: 0,
            plain: Vec::new(),
            pos: 0,
            done: false,
            started: false,
        }
    }

    fn fail(&self, what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: chunk {}: {what}", self.file, self.index))
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        if !self.started {
            let mut magic = [0u8; 8];
            self.inner.read_exact(&mut magic).map_err(|_| self.fail("not a backup file (too short)"))?;
            if &magic != MAGIC {
                return Err(self.fail("not a backup file (bad magic)"));
            }
            self.started = true;
        }
        let mut len = [0u8; 4];
        if let Err(e) = self.inner.read_exact(&mut len) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                self.fail("the file ends before its last chunk (truncated)")
            } else {
                e
            });
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(NONCE + TAG..=NONCE + TAG + CHUNK).contains(&len) {
            return Err(self.fail("chunk length is corrupt"));
        }
        let mut sealed = vec![0u8; len];
        self.inner.read_exact(&mut sealed).map_err(|_| self.fail("the file ends inside a chunk (truncated)"))?;
        // A chunk authenticates either as a middle chunk or as the last one.
        let (plain, last) = match crypto::open(&self.key, &aad(&self.backup_id, &self.file, self.index, false), &sealed)
        {
            Ok(p) => (p, false),
            Err(_) => match crypto::open(&self.key, &aad(&self.backup_id, &self.file, self.index, true), &sealed) {
                Ok(p) => (p, true),
                Err(_) => return Err(self.fail("authentication failed (the data was altered, or the key is wrong)")),
            },
        };
        if last {
            let mut extra = [0u8; 1];
            if self.inner.read(&mut extra)? != 0 {
                return Err(self.fail("data follows the last chunk"));
            }
            self.done = true;
        }
        self.plain = plain;
        self.pos = 0;
        self.index += 1;
        Ok(())
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// SHA-256 of everything `r` yields, and its length.
pub fn sha256_of(mut r: impl Read) -> Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(data: &[u8], key: &Key) -> Vec<u8> {
        let mut w = ChunkWriter::new(Vec::new(), key.clone(), "b1", "data").unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap().4
    }

    fn open_all(file: &[u8], key: &Key) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChunkReader::new(file, key.clone(), "b1", "data").read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_across_chunk_boundaries() {
        let key = Key::generate().unwrap();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(open_all(&sealed(&data, &key), &key).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn any_flipped_byte_truncation_or_wrong_key_is_detected_with_its_chunk() {
        let key = Key::generate().unwrap();
        let data: Vec<u8> = (0..CHUNK + 100).map(|i| (i % 7) as u8).collect();
        let file = sealed(&data, &key);
        for pos in (0..file.len()).step_by(9973).chain([8, file.len() - 1]) {
            let mut bad = file.clone();
            bad[pos] ^= 0x40;
            assert!(open_all(&bad, &key).is_err(), "flip at {pos} undetected");
        }
        let second_chunk_byte = 8 + 4 + NONCE + TAG + CHUNK + 4 + 20;
        let mut bad = file.clone();
        bad[second_chunk_byte] ^= 1;
        let msg = open_all(&bad, &key).unwrap_err().to_string();
        assert!(msg.contains("data: chunk 1"), "{msg}");
        let truncated = &file[..8 + 4 + NONCE + TAG + CHUNK];
        assert!(open_all(truncated, &key).unwrap_err().to_string().contains("truncated"));
        assert!(open_all(&file, &Key::generate().unwrap()).is_err());
        assert!(!file.windows(64).any(|w| w == &data[..64]), "no plaintext in the file");
    }
}
