//! The S3 repository against a real S3-compatible server: the stack's moto, which checks every
//! request's signature against the stack's test user.

mod support;

use rootstream_db::backup::repository;
use rootstream_db::backup::s3::S3Storage;
use rootstream_db::backup::storage::Storage;
use rootstream_db::Error;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use support::*;

const BUCKET: &str = "rsdb-s3-tests";
const MIB: usize = 1 << 20;

/// A repository under a prefix of its own in the shared test bucket, which it creates.
fn repo(name: &str) -> S3Storage {
    let prefix = format!("{name}-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let s = S3Storage::from_config(&s3_config(BUCKET, &prefix)).unwrap();
    s.create_bucket().unwrap();
    s
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

#[test]
fn small_objects_round_trip() {
    let s = repo("small");
    // Creating the bucket again is fine.
    s.create_bucket().unwrap();
    assert_eq!(s.kind(), "s3");
    assert!(s.location("a/b").starts_with(&format!("s3://{BUCKET}/small-")));
    assert!(s.location("a/b").ends_with("/a/b"));

    let mut w = s.create("full-1/data").unwrap();
    w.write_all(b"hello ").unwrap();
    w.write_all(b"world").unwrap();
    assert_eq!(s.size("full-1/data").unwrap(), None, "visible before commit");
    assert!(s.list("").unwrap().is_empty());
    assert_eq!(w.commit().unwrap(), 11);

    s.put("full-1/manifest.json", b"{}").unwrap();
    s.put("full-2/data", b"").unwrap();
    s.put("wal/000000010000000000000001", &[7u8; 1000]).unwrap();
    assert_eq!(s.get("full-1/data").unwrap(), b"hello world");
    assert_eq!(s.get("full-2/data").unwrap(), b"");
    assert_eq!(s.size("full-1/data").unwrap(), Some(11));
    assert_eq!(s.size("full-2/data").unwrap(), Some(0));
    assert_eq!(
        s.list("").unwrap(),
        vec![
            ("full-1/data".to_string(), 11),
            ("full-1/manifest.json".to_string(), 2),
            ("full-2/data".to_string(), 0),
            ("wal/000000010000000000000001".to_string(), 1000),
        ]
    );
    assert_eq!(s.list("full-1/").unwrap().len(), 2);
    assert_eq!(s.list("full-").unwrap().len(), 3);
    assert!(s.list("nothing/").unwrap().is_empty());

    // Replacing an object.
    s.put("full-1/data", b"v2").unwrap();
    assert_eq!(s.get("full-1/data").unwrap(), b"v2");

    s.delete("full-1/data").unwrap();
    s.delete("full-1/data").unwrap();
    assert_eq!(s.size("full-1/data").unwrap(), None);
    assert_eq!(s.delete_prefix("").unwrap(), 2 + 1000);
    assert!(s.list("").unwrap().is_empty());

    // The configuration's repository is this one.
    let cfg = s3_config(BUCKET, "cfg-check");
    let repo = repository::from_config(&cfg).unwrap();
    assert_eq!(repo.kind(), "s3");
    assert_eq!(repo.location("k"), format!("s3://{BUCKET}/cfg-check/k"));
}

#[test]
fn repositories_see_only_their_prefix() {
    let base = format!("iso-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let a = S3Storage::from_config(&s3_config(BUCKET, &format!("{base}/a"))).unwrap();
    a.create_bucket().unwrap();
    let ab = S3Storage::from_config(&s3_config(BUCKET, &format!("{base}/ab/"))).unwrap();
    let top = S3Storage::from_config(&s3_config(BUCKET, &base)).unwrap();
    a.put("k", b"1").unwrap();
    ab.put("k", b"22").unwrap();
    assert_eq!(a.list("").unwrap(), vec![("k".to_string(), 1)]);
    assert_eq!(ab.list("").unwrap(), vec![("k".to_string(), 2)]);
    assert_eq!(top.list("").unwrap(), vec![("a/k".to_string(), 1), ("ab/k".to_string(), 2)]);
    assert_eq!(top.get("ab/k").unwrap(), b"22");
    assert_eq!(top.delete_prefix("").unwrap(), 3);
}

/// Writes `size` random bytes in uneven chunks; returns their SHA-256.
fn write_random(w: &mut dyn Write, size: usize) -> Vec<u8> {
    let mut hash = Sha256::new();
    let mut left = size;
    let mut step = 1;
    while left > 0 {
        // Chunks from 1 byte to 3 MiB, so part boundaries fall inside writes.
        step = (step * 7 + 13) % (3 * MIB) + 1;
        let chunk = random_bytes(step.min(left));
        hash.update(&chunk);
        w.write_all(&chunk).unwrap();
        left -= chunk.len();
    }
    hash.finalize().to_vec()
}

fn read_hash(s: &S3Storage, key: &str) -> (u64, Vec<u8>) {
    let mut r = s.open(key).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
    (total, hash.finalize().to_vec())
}

#[test]
fn large_objects_go_through_multipart() {
    let s = repo("multipart");
    let size = 20 * MIB;
    let mut w = s.create("big/data.bin").unwrap();
    let sent = write_random(&mut w, size);
    // Two parts are uploaded already, but nothing is visible yet.
    assert_eq!(s.size("big/data.bin").unwrap(), None);
    let pending = s.list_multipart_uploads("").unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].0, "big/data.bin");
    assert_eq!(w.commit().unwrap(), size as u64);

    assert!(s.list_multipart_uploads("").unwrap().is_empty());
    assert_eq!(s.size("big/data.bin").unwrap(), Some(size as u64));
    assert_eq!(s.list("big/").unwrap(), vec![("big/data.bin".to_string(), size as u64)]);
    assert_eq!(read_hash(&s, "big/data.bin"), (size as u64, sent));

    // Exactly one part goes with a single PUT; one byte more is a second, tiny part.
    for (key, size) in [("edge/one-part", 8 * MIB), ("edge/one-byte-more", 8 * MIB + 1)] {
        let mut w = s.create(key).unwrap();
        let sent = write_random(&mut w, size);
        assert_eq!(w.commit().unwrap(), size as u64);
        assert_eq!(read_hash(&s, key), (size as u64, sent), "{key}");
    }
    assert!(s.list_multipart_uploads("").unwrap().is_empty());
    s.delete_prefix("").unwrap();
}

#[test]
fn dropped_writers_leave_nothing() {
    let s = repo("dropped");
    // Small: nothing was sent at all.
    let mut w = s.create("small").unwrap();
    w.write_all(b"never committed").unwrap();
    drop(w);

    // Large: a multipart upload was started and must be aborted.
    let mut w = s.create("large").unwrap();
    write_random(&mut w, 9 * MIB);
    let pending = s.list_multipart_uploads("").unwrap();
    assert_eq!(pending.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["large"]);
    drop(w);

    assert!(s.list_multipart_uploads("").unwrap().is_empty());
    assert_eq!(s.size("small").unwrap(), None);
    assert_eq!(s.size("large").unwrap(), None);
    assert!(s.list("").unwrap().is_empty());
}

#[test]
fn missing_objects() {
    let s = repo("missing");
    let err = s.open("no/such/key").err().expect("opening a missing key fails");
    match &err {
        Error::NotFound(m) => assert!(m.contains(&s.location("no/such/key")), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(s.get("no/such/key"), Err(Error::NotFound(_))));
    assert_eq!(s.size("no/such/key").unwrap(), None);
    s.delete("no/such/key").unwrap();

    // A bucket that does not exist.
    let other = S3Storage::from_config(&s3_config("rsdb-no-such-bucket", "x")).unwrap();
    let err = other.list("").unwrap_err();
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    assert!(matches!(other.open("k"), Err(Error::NotFound(m)) if m.contains("NoSuchBucket")));
    assert!(other.put("k", b"x").unwrap_err().to_string().contains("NoSuchBucket"));
}

#[test]
fn wrong_credentials_are_auth_errors() {
    let s = repo("creds");
    s.put("k", b"data").unwrap();
    let prefix = s.location("").trim_start_matches(&format!("s3://{BUCKET}/")).trim_end_matches('/').to_string();

    let mut cfg = s3_config(BUCKET, &prefix);
    cfg.set("backup_s3_secret_access_key", "not-the-secret").unwrap();
    let wrong = S3Storage::from_config(&cfg).unwrap();
    for err in [wrong.put("k2", b"x").unwrap_err(), wrong.open("k").err().unwrap(), wrong.list("").unwrap_err()] {
        match &err {
            Error::Auth(m) => {
                assert!(m.contains("SignatureDoesNotMatch"), "{m}");
                assert!(m.contains("403"), "{m}");
                assert!(!m.contains("not-the-secret"), "{m}");
            }
            other => panic!("expected an Auth error, got {other:?}"),
        }
    }
    // HEAD answers carry no body: still an authentication error.
    assert!(matches!(wrong.size("k"), Err(Error::Auth(_))));

    let mut cfg = s3_config(BUCKET, &prefix);
    cfg.set("backup_s3_access_key_id", "AKIAUNKNOWNKEY000000").unwrap();
    let unknown = S3Storage::from_config(&cfg).unwrap();
    assert!(matches!(unknown.get("k"), Err(Error::Auth(m)) if m.contains("InvalidAccessKeyId")));

    // Nothing was written with the wrong keys.
    assert_eq!(s.list("").unwrap(), vec![("k".to_string(), 4)]);
    s.delete("k").unwrap();
}

#[test]
fn unreachable_endpoint_is_a_connection_error() {
    let mut cfg = s3_config(BUCKET, "down");
    cfg.set("backup_s3_endpoint", &format!("http://127.0.0.1:{}", closed_port())).unwrap();
    let s = S3Storage::from_config(&cfg).unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(s.put("k", b"x"), Err(Error::Connection(_))));
    assert!(matches!(s.open("k"), Err(Error::Connection(_))));
    assert!(matches!(s.size("k"), Err(Error::Connection(_))));
    assert!(matches!(s.list(""), Err(Error::Connection(_))));
    assert!(matches!(s.delete("k"), Err(Error::Connection(_))));
    assert!(matches!(s.create_bucket(), Err(Error::Connection(_))));
    let err = s.get("k").unwrap_err().to_string();
    assert!(err.contains("127.0.0.1"), "{err}");
    // A refused connection is reported at once, not retried.
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn keys_with_spaces_unicode_and_punctuation() {
    let s = repo("names");
    let keys = [
        "with space/and  two  spaces",
        " leading and trailing ",
        "grüße/日本語/emoji 🦀",
        "plus+equals=amp&percent%25hash#question?",
        "quotes\"'<tags>~tilde,comma;semi:colon@at!$()*[]{}|^`",
        "tab\tand\u{7f}",
    ];
    for (i, key) in keys.iter().enumerate() {
        s.put(key, format!("value {i}").as_bytes()).unwrap_or_else(|e| panic!("{key:?}: {e}"));
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(s.get(key).unwrap(), format!("value {i}").as_bytes(), "{key:?}");
        assert_eq!(s.size(key).unwrap(), Some(format!("value {i}").len() as u64), "{key:?}");
    }
    let mut expected: Vec<(String, u64)> =
        keys.iter().enumerate().map(|(i, k)| (k.to_string(), format!("value {i}").len() as u64)).collect();
    expected.sort();
    assert_eq!(s.list("").unwrap(), expected);
    assert_eq!(s.list("grüße/").unwrap().len(), 1);
    assert_eq!(s.list("with space/").unwrap().len(), 1);
    for key in keys {
        s.delete(key).unwrap();
    }
    assert!(s.list("").unwrap().is_empty());
}

#[test]
fn listings_span_pages() {
    let mut s = repo("pages");
    let mut expected = Vec::new();
    for i in 0..45 {
        let key = format!("d{}/obj-{i:03}", i % 3);
        s.put(&key, &vec![b'x'; i]).unwrap();
        expected.push((key, i as u64));
    }
    expected.sort();
    for page in [1, 7, 44, 45, 1000] {
        s.page_size = Some(page);
        assert_eq!(s.list("").unwrap(), expected, "page size {page}");
    }
    s.page_size = Some(4);
    assert_eq!(s.list("d1/").unwrap().len(), 15);
    s.page_size = None;
    assert_eq!(s.list("").unwrap(), expected);
    assert_eq!(s.delete_prefix("").unwrap(), (0..45).sum::<u64>());
}

/// More keys than the server returns in one page (1000), with its own page size.
#[test]
fn listing_more_than_a_thousand_keys() {
    let s = std::sync::Arc::new(repo("thousand"));
    let n = 1010;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    s.put(&format!("k/{i:05}"), b"").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let listed = s.list("k/").unwrap();
    assert_eq!(listed.len(), n);
    assert!(listed.iter().enumerate().all(|(i, (k, size))| *k == format!("k/{i:05}") && *size == 0));
    assert_eq!(s.delete_prefix("").unwrap(), 0);
    assert!(s.list("").unwrap().is_empty());
}
