//! The library through each face RootStream calls — C (`bench/faces_c.c`), C++
//! (`bench/faces_cpp.cpp`) and Rust — beside raw clients in the same run, at 1, 8 and 50
//! concurrent callers: session validation, session creation, MFA verification, a pooled
//! parameterized query, Redis GET and SET, event append. Then the instructions one session
//! validation and one session creation cost through each face, counted by callgrind.
//!
//! Run with `scripts/bench.sh --bench faces`, which builds the C and C++ programs in release
//! (`RSDB_BUILD_BENCHES`) and passes their folder in `RSDB_FACES_BIN_DIR`. Without them only
//! the Rust and raw columns are filled.
//!
//! Order in a run: raw, Rust, C, C++, raw again; the raw column is the mean of both raw passes
//! (each pass is printed too, so drift on a shared machine shows).

#[path = "../tests/support/mod.rs"]
mod support;

use rootstream_db::auth::mfa::MfaManager;
use rootstream_db::auth::totp::{self, TotpParams};
use rootstream_db::db::migrations;
use rootstream_db::events::{EventStore, NewEvent};
use rootstream_db::models::session::{cache_key, DeviceInfo, SessionModel, SessionSettings, SessionToken};
use rootstream_db::{Config, DatabaseManager, RedisClient};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const LEVELS: [usize; 3] = [1, 8, 50];
const OPS: [&str; 7] = ["validate", "create", "mfa_verify", "query", "redis_get", "redis_set", "event_append"];
const POOL: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Fig {
    rate: f64,
    p50: f64,
    p99: f64,
}

/// (operation, threads) -> figure, for one face.
type Figures = BTreeMap<(String, usize), Fig>;

async fn drive<F, Fut>(workers: usize, ops: usize, op: F) -> Fig
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..workers {
        let (op, next) = (op.clone(), next.clone());
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    let q = |x: f64| lat[((lat.len() as f64 * x) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    Fig { rate, p50: q(0.5), p99: q(0.99) }
}

/// Operations per thread count, as in the C and C++ programs.
fn counts(threads: usize) -> (usize, usize, usize) {
    let base: usize = std::env::var("RSDB_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let fast = if threads == 1 { base } else { 4 * base };
    let slow = fast / 5;
    (fast, slow, slow.min(300))
}

struct Lib {
    cfg: Config,
    db: DatabaseManager,
    redis: RedisClient,
    sessions: SessionModel,
}

async fn open(cfg: Config) -> Lib {
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    let redis = RedisClient::connect(&cfg).await.unwrap();
    let sessions = SessionModel::new(db.clone(), redis.clone(), SessionSettings::from_config(&cfg));
    Lib { cfg, db, redis, sessions }
}

fn device() -> DeviceInfo {
    DeviceInfo { fingerprint: "fp-bench".into(), ..Default::default() }
}

/// Enrolls `n` users and returns them with their codes for the current 30-second step.
async fn mfa_users(lib: &Lib, mfa: &MfaManager, prefix: &str, n: usize) -> Vec<(i64, String)> {
    let mut secrets = Vec::new();
    for i in 0..n {
        let id = insert_user(&lib.db, &format!("{prefix}-{i}")).await;
        let en = mfa.begin_enrollment(id, "bench").await.unwrap();
        let secret = totp::base32_decode(&en.secret_base32).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        mfa.confirm_enrollment(id, &totp::code_at(&secret, &TotpParams::default(), now - 30).unwrap(), None)
            .await
            .unwrap();
        secrets.push((id, secret));
    }
    let t = fresh_totp_time();
    secrets.into_iter().map(|(id, s)| (id, totp::code_at(&s, &TotpParams::default(), t).unwrap())).collect()
}

/// The Rust API, from tasks on the library's runtime.
async fn rust_face(lib: &Lib, run: &str) -> Figures {
    let mut out = Figures::new();
    let uid = insert_user(&lib.db, &format!("rust-bench-{run}")).await;
    let mut tokens = Vec::new();
    for _ in 0..1000 {
        tokens.push(lib.sessions.create(uid, &device(), false, false).await.unwrap().token.expose().to_string());
    }
    let tokens = Arc::new(tokens);
    let mut logins = Vec::new();
    for i in 0..8 {
        logins.push(insert_user(&lib.db, &format!("rust-login-{run}-{i}")).await);
    }
    let logins = Arc::new(logins);
    let mfa = Arc::new(MfaManager::new(lib.db.clone(), Some(lib.redis.clone()), &lib.cfg).unwrap());
    let events = Arc::new(EventStore::new(lib.db.clone()));
    let seq = Arc::new(AtomicUsize::new(0));
    for &th in &LEVELS {
        let (fast, slow, m) = counts(th);
        let (s, t) = (lib.sessions.clone(), tokens.clone());
        let f = drive(th, fast, move |i| {
            let (s, t) = (s.clone(), t.clone());
            async move {
                s.validate(&t[i % t.len()], "fp-bench", true).await.unwrap();
            }
        })
        .await;
        out.insert(("validate".into(), th), f);
        let (s, l) = (lib.sessions.clone(), logins.clone());
        let f = drive(th, slow, move |i| {
            let (s, l) = (s.clone(), l.clone());
            async move {
                s.create(l[i % l.len()], &device(), false, false).await.unwrap();
            }
        })
        .await;
        out.insert(("create".into(), th), f);
        let users = Arc::new(mfa_users(lib, &mfa, &format!("rust-mfa-{run}-{th}"), m).await);
        let mf = mfa.clone();
        let f = drive(th, m, move |i| {
            let (mf, users) = (mf.clone(), users.clone());
            async move {
                let (id, code) = &users[i];
                assert!(mf.verify(*id, code, Some("127.0.0.1"), None).await.unwrap());
            }
        })
        .await;
        out.insert(("mfa_verify".into(), th), f);
        let db = lib.db.clone();
        let f = drive(th, fast, move |_| {
            let db = db.clone();
            async move {
                let rows = db.query("SELECT id, username FROM users WHERE id = $1", &[&uid]).await.unwrap();
                assert_eq!(rows.len(), 1);
            }
        })
        .await;
        out.insert(("query".into(), th), f);
        let r = lib.redis.clone();
        let f = drive(th, fast, move |i| {
            let r = r.clone();
            async move {
                assert!(r.get(&format!("bench:faces:{}", i % 1000)).await.unwrap().is_some());
            }
        })
        .await;
        out.insert(("redis_get".into(), th), f);
        let r = lib.redis.clone();
        let f = drive(th, fast, move |i| {
            let r = r.clone();
            async move {
                r.set(&format!("bench:faces:set:{}", i % 1000), "value-of-sixteen", None).await.unwrap();
            }
        })
        .await;
        out.insert(("redis_set".into(), th), f);
        let (ev, seq2, run2) = (events.clone(), seq.clone(), run.to_string());
        let f = drive(th, slow, move |_| {
            let (ev, id) = (ev.clone(), format!("rust-{run2}-{}", seq2.fetch_add(1, Ordering::Relaxed)));
            async move {
                ev.append("bench", &id, 0, &[NewEvent::new("viewer.joined", serde_json::json!({"n": 1}))])
                    .await
                    .unwrap();
            }
        })
        .await;
        out.insert(("event_append".into(), th), f);
    }
    out
}

/// Raw clients: the redis crate on one multiplexed connection (as the library's client), and
/// tokio-postgres with prepared statements on as many connections as the library's pool.
async fn raw_pass(lib: &Lib, run: &str, pass: usize) -> Figures {
    let mut out = Figures::new();
    let rc = redis::Client::open(lib.cfg.redis_url.clone().unwrap().as_str()).unwrap();
    let conn = rc.get_multiplexed_async_connection().await.unwrap();
    // The cache keys of live sessions: what a validation reads.
    let uid = insert_user(&lib.db, &format!("raw-bench-{run}-{pass}")).await;
    let mut keys = Vec::new();
    for _ in 0..1000 {
        let t = lib.sessions.create(uid, &device(), false, false).await.unwrap().token.expose().to_string();
        keys.push(cache_key(&SessionToken::from_client(&t).hash()));
    }
    let keys = Arc::new(keys);
    let url = lib.cfg.database_url.clone().unwrap();
    let mut pg = Vec::new();
    for _ in 0..POOL {
        let (c, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let ins = c
            .prepare("INSERT INTO sessions (user_id, token_hash, expires_at, device_fingerprint) VALUES ($1, $2, now() + interval '1 day', 'fp')")
            .await
            .unwrap();
        let sel = c.prepare("SELECT id, username FROM users WHERE id = $1").await.unwrap();
        let ev = c
            .prepare("INSERT INTO event_log (aggregate_type, aggregate_id, version, event_type, payload) VALUES ('bench', $1, 1, 'viewer.joined', $2)")
            .await
            .unwrap();
        pg.push((c, ins, sel, ev));
    }
    let pg = Arc::new(pg);
    let seq = Arc::new(AtomicUsize::new(0));
    for &th in &LEVELS {
        let (fast, slow, _) = counts(th);
        let (c, k) = (conn.clone(), keys.clone());
        let f = drive(th, fast, move |i| {
            let (mut c, k) = (c.clone(), k.clone());
            async move {
                let v: Option<String> = redis::cmd("GET").arg(&k[i % k.len()]).query_async(&mut c).await.unwrap();
                assert!(v.is_some());
            }
        })
        .await;
        out.insert(("validate".into(), th), f);
        out.insert(("redis_get".into(), th), f);
        let (p, s, r) = (pg.clone(), seq.clone(), run.to_string());
        let f = drive(th, slow, move |i| {
            let (p, h) = (p.clone(), format!("raw-{r}-{pass}-{}", s.fetch_add(1, Ordering::Relaxed)));
            async move {
                let (c, ins, _, _) = &p[i % POOL];
                c.execute(ins, &[&uid, &h]).await.unwrap();
            }
        })
        .await;
        out.insert(("create".into(), th), f);
        let p = pg.clone();
        let f = drive(th, fast, move |i| {
            let p = p.clone();
            async move {
                let (c, _, sel, _) = &p[i % POOL];
                assert_eq!(c.query(sel, &[&uid]).await.unwrap().len(), 1);
            }
        })
        .await;
        out.insert(("query".into(), th), f);
        let c = conn.clone();
        let f = drive(th, fast, move |i| {
            let mut c = c.clone();
            async move {
                let _: () = redis::cmd("SET")
                    .arg(format!("bench:faces:set:{}", i % 1000))
                    .arg("value-of-sixteen")
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        })
        .await;
        out.insert(("redis_set".into(), th), f);
        let (p, s, r) = (pg.clone(), seq.clone(), run.to_string());
        let f = drive(th, slow, move |i| {
            let (p, id) = (p.clone(), format!("raw-{r}-{pass}-{}", s.fetch_add(1, Ordering::Relaxed)));
            async move {
                let (c, _, _, ev) = &p[i % POOL];
                c.execute(ev, &[&id, &serde_json::json!({"n": 1})]).await.unwrap();
            }
        })
        .await;
        out.insert(("event_append".into(), th), f);
    }
    out
}

/// Runs a face program and reads its `RESULT` lines.
fn program_face(bin: &Path, envs: &[(String, String)]) -> Option<Figures> {
    let out = Command::new(bin).envs(envs.iter().cloned()).output().ok()?;
    if !out.status.success() {
        eprintln!("{} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let mut figs = Figures::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.strip_prefix("RESULT ") else { continue };
        let kv: BTreeMap<&str, &str> = rest.split_whitespace().filter_map(|p| p.split_once('=')).collect();
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
        figs.insert(
            (kv["op"].to_string(), kv["threads"].parse().unwrap()),
            Fig { rate: num("rate"), p50: num("p50_us"), p99: num("p99_us") },
        );
    }
    Some(figs)
}

/// Instructions per operation: callgrind's total for a run of `n` operations minus a run of 0,
/// divided by `n`.
fn callgrind_per_op(cmd: &[String], envs: &[(String, String)], op: &str, n: u64, dir: &Path) -> Option<f64> {
    let total = |k: u64| -> Option<u64> {
        let file = dir.join(format!("callgrind.{}.{op}.{k}", Path::new(&cmd[0]).file_name()?.to_string_lossy()));
        let mut c = Command::new("valgrind");
        c.arg("--tool=callgrind").arg(format!("--callgrind-out-file={}", file.display())).args(cmd);
        if cmd.len() == 1 {
            // The Rust face: this benchmark itself, in counting mode.
            c.env("RSDB_FACES_COUNT", format!("{op}:{k}"));
        } else {
            c.args([op.to_string(), k.to_string()]);
        }
        let out = c.envs(envs.iter().cloned()).output().ok()?;
        if !out.status.success() {
            eprintln!("callgrind of {cmd:?} {op} {k} failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let text = std::fs::read_to_string(&file).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let (zero, many) = (total(0)?, total(n)?);
    Some((many as f64 - zero as f64) / n as f64)
}

/// Counting mode (`RSDB_FACES_COUNT=op:N`, op one of validate, create, redis_get, raw_get): set up, run N operations on
/// one task, exit — what callgrind measures for the Rust face.
fn count_mode(spec: &str) {
    let (op, n) = spec.split_once(':').expect("RSDB_FACES_COUNT=op:n");
    let n: usize = n.parse().unwrap();
    rootstream_db::runtime::runtime().block_on(async {
        let lib = open(Config::from_env().unwrap()).await;
        // Both runs (N and 0) migrate, so it cancels out; alone it makes a fresh database usable.
        migrations::migrate(&lib.db).await.unwrap();
        let uid = insert_user(&lib.db, &format!("count-{}", std::process::id())).await;
        match op {
            "validate" => {
                let t = lib.sessions.create(uid, &device(), false, false).await.unwrap().token.expose().to_string();
                for _ in 0..n {
                    lib.sessions.validate(&t, "fp-bench", true).await.unwrap();
                }
            }
            "create" => {
                for _ in 0..n {
                    lib.sessions.create(uid, &device(), false, false).await.unwrap();
                }
            }
            // The baselines of a validation: a GET of the same cached session through the
            // library's client, and through the redis crate's multiplexed connection alone.
            "redis_get" | "raw_get" => {
                let t = lib.sessions.create(uid, &device(), false, false).await.unwrap().token.expose().to_string();
                let key = cache_key(&SessionToken::from_client(&t).hash());
                let rc = redis::Client::open(lib.cfg.redis_url.clone().unwrap().as_str()).unwrap();
                let mut conn = rc.get_multiplexed_async_connection().await.unwrap();
                for _ in 0..n {
                    let v = if op == "raw_get" {
                        redis::cmd("GET").arg(&key).query_async::<Option<String>>(&mut conn).await.unwrap()
                    } else {
                        lib.redis.get(&key).await.unwrap()
                    };
                    assert!(v.is_some());
                }
            }
            other => panic!("unknown operation {other}"),
        }
    });
}

fn cell(f: Option<&Fig>) -> String {
    match f {
        Some(f) => format!("{:.0} | {:.0} / {:.0}", f.rate, f.p50, f.p99),
        None => "— | —".into(),
    }
}

fn ratio(a: Option<&Fig>, b: Option<&Fig>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a.rate / b.rate),
        _ => "—".into(),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("RSDB_FACES_COUNT") {
        return count_mode(&spec);
    }
    let bin_dir = std::env::var("RSDB_FACES_BIN_DIR").map(PathBuf::from).ok();
    let faces_c = bin_dir.as_ref().map(|d| d.join("faces_c")).filter(|p| p.exists());
    let faces_cpp = bin_dir.as_ref().map(|d| d.join("faces_cpp")).filter(|p| p.exists());
    rootstream_db::runtime::runtime().block_on(async {
        let mut cfg = secure_config().await;
        cfg.set("pool_size", &POOL.to_string()).unwrap();
        cfg.set("session_max_per_user", "0").unwrap();
        let lib = open(cfg.clone()).await;
        migrations::migrate(&lib.db).await.unwrap();
        for i in 0..1000 {
            lib.redis.set(&format!("bench:faces:{i}"), "value-of-sixteen", None).await.unwrap();
        }
        // What the face programs and the counting runs get: this run's database and settings.
        let envs: Vec<(String, String)> = vec![
            ("ROOTSTREAM_DATABASE_URL".into(), cfg.database_url.clone().unwrap()),
            ("ROOTSTREAM_REDIS_URL".into(), cfg.redis_url.clone().unwrap()),
            ("ROOTSTREAM_MASTER_KEY".into(), cfg.master_key.clone().unwrap()),
            ("ROOTSTREAM_POOL_SIZE".into(), POOL.to_string()),
            ("ROOTSTREAM_SESSION_MAX_PER_USER".into(), "0".into()),
        ];
        let run = format!("{}", std::process::id());
        println!("rootstream-db through its faces (C, C++, Rust) beside raw clients, servers on loopback; pool {POOL}");
        let raw1 = raw_pass(&lib, &run, 1).await;
        let rust = rust_face(&lib, &run).await;
        let c = faces_c.as_deref().and_then(|b| program_face(b, &envs));
        let cpp = faces_cpp.as_deref().and_then(|b| program_face(b, &envs));
        let raw2 = raw_pass(&lib, &run, 2).await;
        if c.is_none() || cpp.is_none() {
            println!("(C or C++ figures missing: build them with scripts/bench.sh --bench faces, or set RSDB_FACES_BIN_DIR)");
        }
        let raw_name = |op: &str| match op {
            "validate" | "redis_get" => "GET",
            "redis_set" => "SET",
            "create" => "INSERT session",
            "query" => "SELECT",
            "event_append" => "INSERT event",
            _ => "—",
        };
        println!();
        println!("| operation | threads | C /s | C p50 / p99 µs | C++ /s | C++ p50 / p99 µs | Rust /s | Rust p50 / p99 µs | raw | raw /s (pass 1, 2) | raw p50 / p99 µs | C/raw | C++/raw | Rust/raw | C/Rust |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for op in OPS {
            for &th in &LEVELS {
                let k = (op.to_string(), th);
                let (r1, r2) = (raw1.get(&k), raw2.get(&k));
                let raw = match (r1, r2) {
                    (Some(a), Some(b)) => Some(Fig { rate: (a.rate + b.rate) / 2.0, p50: (a.p50 + b.p50) / 2.0, p99: (a.p99 + b.p99) / 2.0 }),
                    _ => None,
                };
                let (cf, pf, rf) = (c.as_ref().and_then(|m| m.get(&k)), cpp.as_ref().and_then(|m| m.get(&k)), rust.get(&k));
                let raw_cols = match (raw, r1, r2) {
                    (Some(r), Some(a), Some(b)) => format!("{:.0} ({:.0}, {:.0}) | {:.0} / {:.0}", r.rate, a.rate, b.rate, r.p50, r.p99),
                    _ => "— | —".into(),
                };
                println!(
                    "| {op} | {th} | {} | {} | {} | {} | {raw_cols} | {} | {} | {} | {} |",
                    cell(cf),
                    cell(pf),
                    cell(rf),
                    raw_name(op),
                    ratio(cf, raw.as_ref()),
                    ratio(pf, raw.as_ref()),
                    ratio(rf, raw.as_ref()),
                    ratio(cf, rf),
                );
            }
        }

        // Instructions per operation (client side, all threads of the process), callgrind.
        if Command::new("valgrind").arg("--version").output().is_err() {
            println!("\n(valgrind is missing: no instruction counts)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("rsdb-faces-callgrind-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::env::current_exe().unwrap().display().to_string();
        let mut programs: Vec<(&str, Vec<String>)> = vec![("Rust", vec![me])];
        if let Some(b) = &faces_c {
            programs.push(("C", vec![b.display().to_string(), "--count".into()]));
        }
        if let Some(b) = &faces_cpp {
            programs.push(("C++", vec![b.display().to_string(), "--count".into()]));
        }
        println!("\n| instructions per operation (callgrind, N ops minus 0) | validate | create |");
        println!("|---|---|---|");
        let f = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
        for (face, cmd) in &programs {
            let v = callgrind_per_op(cmd, &envs, "validate", 200, &dir);
            let cr = callgrind_per_op(cmd, &envs, "create", 100, &dir);
            println!("| {face} | {} | {} |", f(v), f(cr));
        }
        // What a validation is held against: a GET of the same cached session.
        let lib_get = callgrind_per_op(&programs[0].1, &envs, "redis_get", 200, &dir);
        let raw_get = callgrind_per_op(&programs[0].1, &envs, "raw_get", 200, &dir);
        println!("| GET of a cached session: library client (Rust) / redis crate alone | {} / {} | — |", f(lib_get), f(raw_get));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
