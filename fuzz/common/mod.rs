//! What the repository targets share: a fixed master key and a scratch directory per process.
#![allow(dead_code)]

use rootstream_db::crypto::envelope::{Key, Keyring};
use std::path::PathBuf;

pub const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const DATA_KEY: &str = "f0e0d0c0b0a090807060504030201000f0e0d0c0b0a090807060504030201000";

pub fn master() -> Keyring {
    Keyring::new("k1", Key::from_hex(MASTER_KEY).unwrap()).unwrap()
}

pub fn data_key() -> Key {
    Key::from_hex(DATA_KEY).unwrap()
}

/// An empty scratch directory (emptied on every call).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rsdb-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Seals `plain` as a backup file would be: the archive framing with the data key.
pub fn seal(plain: &[u8], backup_id: &str, file: &str, compress: bool) -> Vec<u8> {
    use rootstream_db::backup::archive::ChunkWriter;
    use std::io::Write;
    let body = if compress { zstd::encode_all(plain, 1).unwrap() } else { plain.to_vec() };
    let mut w = ChunkWriter::new(Vec::new(), data_key(), backup_id, file).unwrap();
    w.write_all(&body).unwrap();
    w.finish().unwrap().4
}
