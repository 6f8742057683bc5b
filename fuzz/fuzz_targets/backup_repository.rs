//! A damaged backup repository as `rsdb backup verify` / restore read it: a manifest the fuzzer
//! writes (signed by the target, so its contents are exercised past the MAC), optionally with a
//! valid sealed data key, and stored files the fuzzer writes, optionally sealed and with their
//! checksums filled in. Verification must end in an error (integrity, JSON, argument, not
//! found, I/O), never a panic or a huge allocation.
//!
//! Input: one flags byte, the manifest JSON, then each file's content, separated by `\n--\n`.
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rootstream_db::backup::{BackupManager, RecoveryManager};
use rootstream_db::{Config, Error};
use serde_json::Value;

fn sha256_hex(data: &[u8]) -> String {
    rootstream_db::backup::archive::sha256_of(data).unwrap().0
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split("\n--\n");
    let manifest = parts.next().unwrap_or("");
    let payloads: Vec<&str> = parts.collect();
    let keyring = common::master();
    let dir = common::scratch("repo");
    let mut cfg = Config::default();
    cfg.set("master_key", common::MASTER_KEY).unwrap();
    cfg.set("master_key_id", "k1").unwrap();
    cfg.set("backup_dir", dir.to_str().unwrap()).unwrap();
    let mgr = BackupManager::repository_only(&cfg).unwrap();
    let storage = mgr.storage().clone();

    let (id, manifest_bytes) = match serde_json::from_str::<Value>(manifest) {
        Ok(Value::Object(mut m)) => {
            let id = m.get("backup_id").and_then(Value::as_str).unwrap_or("b1").to_string();
            if flags & 1 != 0 {
                let ctx = format!("backup:{id}:data-key");
                let (kid, wrapped) = keyring.seal(ctx.as_bytes(), common::data_key().as_bytes()).unwrap();
                m.insert("key_id".into(), kid.into());
                m.insert("wrapped_key".into(), hex::encode(wrapped).into());
            }
            if let Some(Value::Array(files)) = m.get_mut("files") {
                for (i, f) in files.iter_mut().enumerate() {
                    let Some(f) = f.as_object_mut() else { continue };
                    let Some(name) = f.get("name").and_then(Value::as_str).map(str::to_string) else { continue };
                    let payload = payloads.get(i).copied().unwrap_or("").as_bytes();
                    let stored = if flags & 2 != 0 {
                        common::seal(payload, &id, &name, flags & 4 != 0)
                    } else {
                        payload.to_vec()
                    };
                    if flags & 8 != 0 {
                        f.insert("stored_bytes".into(), stored.len().into());
                        f.insert("sha256".into(), sha256_hex(&stored).into());
                    }
                    let _ = storage.put(&format!("{id}/{name}"), &stored);
                }
            }
            (id, serde_json::to_vec_pretty(&Value::Object(m)).unwrap())
        }
        _ => ("b1".to_string(), manifest.as_bytes().to_vec()),
    };
    let mac = hex::encode(keyring.mac("backup-manifest", &manifest_bytes).unwrap());
    if storage.put(&format!("{id}/manifest.json"), &manifest_bytes).is_err() {
        return;
    }
    storage.put(&format!("{id}/manifest.mac"), mac.as_bytes()).unwrap();

    for result in [mgr.verify(&id).map(drop), mgr.chain(&id).map(drop)] {
        if let Err(e) = result {
            assert!(!matches!(e, Error::Panic(_) | Error::Internal(_)), "{e}");
        }
    }
    let _ = RecoveryManager::new(mgr).list_repository();
});
