//! Archived WAL objects (`wal/<name>` in the repository) as `rsdb wal-fetch` reads them:
//! arbitrary objects, and objects whose header the fuzzer writes and the target signs, so the
//! header's contents (sizes, checksums, sealed key, chunk stream) are exercised past the MAC.
//! Every damaged object must give an error, never a panic or a huge allocation.
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rootstream_db::backup::storage::{LocalStorage, Storage};
use rootstream_db::backup::WalArchive;
use std::sync::Arc;

const NAME: &str = "000000010000000000000003";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let keyring = common::master();
    let object = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // header JSON, a NUL, then the body.
        let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let (header, body) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
        let mut header = header.to_vec();
        if mode & 2 != 0 {
            // Give the header a valid sealed data key, so the chunks are opened.
            if let Ok(serde_json::Value::Object(mut h)) = serde_json::from_slice(&header) {
                let ctx = format!("wal:{NAME}:data-key");
                let (id, wrapped) = keyring.seal(ctx.as_bytes(), common::data_key().as_bytes()).unwrap();
                h.insert("key_id".into(), id.into());
                h.insert("wrapped_key".into(), hex::encode(wrapped).into());
                header = serde_json::to_vec(&h).unwrap();
            }
        }
        let body = if mode & 4 != 0 { common::seal(body, "wal", NAME, mode & 8 != 0) } else { body.to_vec() };
        let mac = keyring.mac("wal-header", &header).unwrap();
        let mut o = b"RSDBWL01".to_vec();
        o.extend_from_slice(&(header.len() as u32).to_be_bytes());
        o.extend_from_slice(&header);
        o.extend_from_slice(&mac);
        o.extend_from_slice(&body);
        o
    };
    let dir = common::scratch("wal");
    let storage = Arc::new(LocalStorage::new(&dir));
    storage.put(&format!("wal/{NAME}"), &object).unwrap();
    let archive = WalArchive::new(storage, keyring);
    let _ = archive.read(NAME);
    let _ = archive.list();
});
