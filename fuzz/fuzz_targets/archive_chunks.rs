//! The encrypted chunk framing of backup files: arbitrary files, and valid files damaged by
//! flipped bytes, truncation or appended bytes. A file either opens to exactly what was sealed
//! or fails with an `InvalidData` error naming the chunk; it never panics or allocates more
//! than one chunk.
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rootstream_db::backup::archive::{ChunkReader, CHUNK};
use std::io::Read;

fn open(file: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    ChunkReader::new(file, common::data_key(), "b1", "data.zst").read_to_end(&mut out)?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        // Anything as a stored file.
        if let Err(e) = open(rest) {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        }
        return;
    }
    // [n: u16] plaintext[n] then damage operations of 3 bytes: (op, position u16).
    if rest.len() < 2 {
        return;
    }
    let n = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
    let plain = &rest[2..2 + n];
    // A plaintext longer than one chunk when asked, so chunk boundaries are crossed.
    let plain: Vec<u8> =
        if mode & 2 != 0 { plain.iter().cycle().take(CHUNK + n + 1).copied().collect() } else { plain.to_vec() };
    let sealed = common::seal(&plain, "b1", "data.zst", false);
    let mut file = sealed.clone();
    for op in rest[2 + n..].chunks_exact(3) {
        if file.is_empty() {
            break;
        }
        let pos = u16::from_be_bytes([op[1], op[2]]) as usize * (1 + file.len() / 65536) % file.len();
        match op[0] % 4 {
            0 => file[pos] ^= op[0] | 1,
            1 => file.truncate(pos),
            2 => file.push(op[0]),
            _ => {
                file.remove(pos);
            }
        }
    }
    match open(&file) {
        Ok(got) => {
            assert_eq!(file, sealed, "a damaged file opened");
            assert_eq!(got, plain);
        }
        Err(e) => {
            assert_ne!(file, sealed, "an intact file failed: {e}");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        }
    }
});
