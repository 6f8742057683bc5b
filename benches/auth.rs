//! Session and MFA benchmarks beside raw baselines from the same run: session validation vs a
//! raw Redis GET at the same concurrency, session creation vs a raw INSERT, MFA verification
//! latency. Validation and creation are also measured through the C functions, called from
//! native threads as a C program calls them.
//!
//! Run with `scripts/bench.sh --bench auth`.

#[path = "../tests/support/mod.rs"]
mod support;

use rootstream_db::auth::mfa::MfaManager;
use rootstream_db::auth::totp::{self, TotpParams};
use rootstream_db::db::migrations;
use rootstream_db::ffi::c::auth::{
    rsdb_sessions, rsdb_sessions_create, rsdb_sessions_free, rsdb_sessions_new, rsdb_sessions_validate,
};
use rootstream_db::ffi::c::config::{rsdb_config_free, rsdb_config_new, rsdb_config_set};
use rootstream_db::ffi::c::db::{rsdb_db, rsdb_db_close, rsdb_db_open};
use rootstream_db::ffi::c::redis::{rsdb_redis, rsdb_redis_close, rsdb_redis_open};
use rootstream_db::ffi::c::rsdb_string_free;
use rootstream_db::models::session::{DeviceInfo, SessionModel, SessionSettings};
use rootstream_db::{DatabaseManager, RedisClient};
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

struct Fig {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

async fn drive<F, Fut>(workers: usize, per: usize, op: F) -> Fig
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
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    let q = |x: f64| lat[((lat.len() as f64 * x) as usize).min(lat.len() - 1)];
    Fig { rate, p50: q(0.5), p99: q(0.99) }
}

/// Like `drive`, from `workers` OS threads (each call blocks, as through the C functions).
fn drive_threads<F>(workers: usize, per: usize, op: F) -> Fig
where
    F: Fn(usize) + Sync,
{
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let mut lat = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::with_capacity(per);
                    for _ in 0..per {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let t = Instant::now();
                        op(i);
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    let q = |x: f64| lat[((lat.len() as f64 * x) as usize).min(lat.len() - 1)];
    Fig { rate, p50: q(0.5), p99: q(0.99) }
}

/// A session handle made through the C functions, shared by the benchmark's threads, with the
/// database and Redis handles it was made on (closing those closes their pool and client).
struct CSessions(*mut rsdb_sessions, *mut rsdb_db, *mut rsdb_redis);
// SAFETY: `rsdb_sessions` is documented thread-safe; the handle outlives the threads.
unsafe impl Send for CSessions {}
unsafe impl Sync for CSessions {}

impl CSessions {
    /// The handle; a method, so that closures capture the whole (Sync) wrapper.
    fn get(&self) -> *mut rsdb_sessions {
        self.0
    }

    /// Frees the session handle, then closes the pool and the Redis client.
    fn close(self) {
        unsafe {
            rsdb_sessions_free(self.0);
            rsdb_redis_close(self.2);
            rsdb_db_close(self.1);
        }
    }
}

/// Opens `rsdb_db`, `rsdb_redis` and `rsdb_sessions` through the C functions, with `keys`
/// set on a fresh configuration.
fn c_sessions(keys: &[(&str, &str)]) -> CSessions {
    let cstr = |s: &str| CString::new(s).unwrap();
    unsafe {
        let mut cfg = std::ptr::null_mut();
        assert_eq!(rsdb_config_new(&mut cfg), 0);
        for (k, v) in keys {
            assert_eq!(rsdb_config_set(cfg, cstr(k).as_ptr(), cstr(v).as_ptr()), 0, "{k}");
        }
        let (mut db, mut redis, mut sessions) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        assert_eq!(rsdb_db_open(cfg, &mut db), 0);
        assert_eq!(rsdb_redis_open(cfg, &mut redis), 0);
        assert_eq!(rsdb_sessions_new(cfg, db, redis, &mut sessions), 0);
        rsdb_config_free(cfg);
        CSessions(sessions, db, redis)
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn report(name: &str, ours: &Fig, raw_name: &str, raw: &Fig) {
    println!(
        "{name:<36} ours {:>8.0}/s p50 {:>6.0}µs p99 {:>6.0}µs | {raw_name} {:>8.0}/s p50 {:>6.0}µs p99 {:>6.0}µs | ratio {:.2}",
        ours.rate,
        us(ours.p50),
        us(ours.p99),
        raw.rate,
        us(raw.p50),
        us(raw.p99),
        ours.rate / raw.rate
    );
}

fn main() {
    rootstream_db::runtime::runtime().block_on(async {
        let mut cfg = secure_config().await;
        cfg.set("pool_size", "8").unwrap();
        cfg.set("session_max_per_user", "0").unwrap();
        let db = DatabaseManager::connect(&cfg).await.unwrap();
        migrations::migrate(&db).await.unwrap();
        let redis = RedisClient::connect(&cfg).await.unwrap();
        let uid: i64 = db
            .query("INSERT INTO users (username, email, password_hash) VALUES ('bench', 'b@x.io', 'x') RETURNING id", &[])
            .await
            .unwrap()[0]
            .get(0);
        let sessions = SessionModel::new(db.clone(), redis.clone(), SessionSettings::from_config(&cfg));
        let device = DeviceInfo { fingerprint: "fp-bench".into(), ..Default::default() };
        // For instruction counts under callgrind: `RSDB_AUTH_PROFILE=validate|create|create10`
        // with `RSDB_AUTH_OPS=N` runs only N sequential operations of that kind; two runs with
        // different N give the instructions of one operation.
        if let (Ok(what), Some(n)) =
            (std::env::var("RSDB_AUTH_PROFILE"), std::env::var("RSDB_AUTH_OPS").ok().and_then(|v| v.parse::<usize>().ok()))
        {
            let mut c = cfg.clone();
            c.set("session_max_per_user", if what == "create10" { "10" } else { "0" }).unwrap();
            let model = SessionModel::new(db.clone(), redis.clone(), SessionSettings::from_config(&c));
            let token = model.create(uid, &device, false, false).await.unwrap().token;
            model.validate(token.expose(), "fp-bench", true).await.unwrap();
            for _ in 0..n {
                if what == "validate" {
                    model.validate(token.expose(), "fp-bench", true).await.unwrap();
                } else {
                    model.create(uid, &device, false, false).await.unwrap();
                }
            }
            println!("{what}: {n} operations");
            return;
        }
        println!("rootstream-db session and MFA benchmarks (library runtime, servers on loopback)");

        // Validation: 1,000 live sessions, 50 concurrent validators; raw: GET of a cached
        // session's key with the redis crate at the same concurrency.
        let mut tokens = Vec::new();
        for _ in 0..1000 {
            tokens.push(sessions.create(uid, &device, false, false).await.unwrap().token.expose().to_string());
        }
        let tokens = Arc::new(tokens);
        let raw_client = redis::Client::open(cfg.redis_url.clone().unwrap().as_str()).unwrap();
        let raw_conn = raw_client.get_multiplexed_async_connection().await.unwrap();
        let keys: Arc<Vec<String>> = Arc::new(
            tokens
                .iter()
                .map(|t| rootstream_db::models::session::cache_key(&rootstream_db::models::session::SessionToken::from_client(t).hash()))
                .collect(),
        );
        for &workers in &[1usize, 50] {
            let per = if workers == 1 { 5000 } else { 1000 };
            let raw = drive(workers, per, {
                let (c, keys) = (raw_conn.clone(), keys.clone());
                move |i| {
                    let (mut c, keys) = (c.clone(), keys.clone());
                    async move {
                        let v: Option<String> = redis::cmd("GET").arg(&keys[i % keys.len()]).query_async(&mut c).await.unwrap();
                        assert!(v.is_some());
                    }
                }
            })
            .await;
            let ours = drive(workers, per, {
                let (s, tokens) = (sessions.clone(), tokens.clone());
                move |i| {
                    let (s, tokens) = (s.clone(), tokens.clone());
                    async move {
                        s.validate(&tokens[i % tokens.len()], "fp-bench", true).await.unwrap();
                    }
                }
            })
            .await;
            report(&format!("session validation, {workers} concurrent"), &ours, "raw GET", &raw);
        }

        // The same validations through the C function from 50 native threads, beside a raw GET
        // at the same concurrency measured just before.
        let db_url = cfg.database_url.clone().unwrap();
        let redis_url = cfg.redis_url.clone().unwrap();
        let open = |limit: &str| {
            c_sessions(&[
                ("database_url", db_url.as_str()),
                ("redis_url", redis_url.as_str()),
                ("pool_size", "8"),
                ("session_max_per_user", limit),
            ])
        };
        let c_handle = open("0");
        let c_tokens: Vec<CString> = tokens.iter().map(|t| CString::new(t.as_str()).unwrap()).collect();
        let fp = CString::new("fp-bench").unwrap();
        let raw = drive(50, 1000, {
            let (c, keys) = (raw_conn.clone(), keys.clone());
            move |i| {
                let (mut c, keys) = (c.clone(), keys.clone());
                async move {
                    let v: Option<String> = redis::cmd("GET").arg(&keys[i % keys.len()]).query_async(&mut c).await.unwrap();
                    assert!(v.is_some());
                }
            }
        })
        .await;
        let ours = drive_threads(50, 1000, |i| unsafe {
            let rc = rsdb_sessions_validate(c_handle.get(), c_tokens[i % c_tokens.len()].as_ptr(), fp.as_ptr(), 1, std::ptr::null_mut());
            assert_eq!(rc, 0);
        });
        report("C face: validation, 50 threads", &ours, "raw GET", &raw);
        c_handle.close();

        // Creation: 8 clients; raw: a prepared INSERT of a session row on 8 connections.
        let url = cfg.database_url.clone().unwrap();
        let mut raws = Vec::new();
        for _ in 0..8 {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let st = c
                .prepare("INSERT INTO sessions (user_id, token_hash, expires_at, device_fingerprint) VALUES ($1, $2, now() + interval '1 day', 'fp')")
                .await
                .unwrap();
            raws.push(Arc::new((c, st)));
        }
        let raws = Arc::new(raws);
        let raw = drive(8, 500, move |i| {
            let raws = raws.clone();
            async move {
                let (c, st) = &*raws[i % 8];
                c.execute(st, &[&uid, &format!("raw-{i}")]).await.unwrap();
            }
        })
        .await;
        // Eight users logging in concurrently, without and with the per-user limit (10,
        // evicting the oldest). Each run logs in users of its own; with the limit they already
        // hold 10 sessions each, so every measured login also evicts one (the steady state of
        // a limited user, not the one-off eviction of sessions an earlier run left).
        let login_users = |tag: &'static str, limit: &'static str| {
            let db = db.clone();
            let cfg = cfg.clone();
            let redis = redis.clone();
            async move {
                let mut uids = Vec::new();
                for i in 0..8 {
                    uids.push(insert_user(&db, &format!("login-{tag}-{limit}-{i}")).await);
                }
                let warm: usize = limit.parse().unwrap();
                let mut c = cfg.clone();
                c.set("session_max_per_user", limit).unwrap();
                let model = SessionModel::new(db.clone(), redis.clone(), SessionSettings::from_config(&c));
                let d = DeviceInfo { fingerprint: "fp-bench".into(), ..Default::default() };
                for &u in &uids {
                    for _ in 0..warm {
                        model.create(u, &d, false, false).await.unwrap();
                    }
                }
                Arc::new(uids)
            }
        };
        for limit in ["0", "10"] {
            let uids = login_users("rust", limit).await;
            let mut c = cfg.clone();
            c.set("session_max_per_user", limit).unwrap();
            let model = SessionModel::new(db.clone(), redis.clone(), SessionSettings::from_config(&c));
            let ours = drive(8, 500, {
                let uids = uids.clone();
                move |i| {
                    let (s, uids) = (model.clone(), uids.clone());
                    async move {
                        let d = DeviceInfo { fingerprint: "fp-bench".into(), ..Default::default() };
                        s.create(uids[i % 8], &d, false, false).await.unwrap();
                    }
                }
            })
            .await;
            let label = if limit == "0" { "session creation, 8 users, no limit" } else { "session creation, 8 users, limit 10" };
            report(label, &ours, "raw INSERT", &raw);
        }
        // The same logins through the C function from 8 native threads.
        for limit in ["0", "10"] {
            let uids = login_users("c", limit).await;
            let handle = open(limit);
            let ours = drive_threads(8, 500, |i| unsafe {
                let mut token = std::ptr::null_mut();
                let rc = rsdb_sessions_create(
                    handle.get(),
                    uids[i % 8],
                    fp.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                    0,
                    &mut token,
                    std::ptr::null_mut(),
                );
                assert_eq!(rc, 0);
                rsdb_string_free(token);
            });
            let label = if limit == "0" { "C face: creation, 8 threads, no limit" } else { "C face: creation, 8 threads, limit 10" };
            report(label, &ours, "raw INSERT", &raw);
            handle.close();
        }

        // MFA verification: one user per verification, each with its own fresh code.
        let mfa = MfaManager::new(db.clone(), None, &cfg).unwrap();
        let n = 200;
        let mut users = Vec::new();
        for i in 0..n {
            let id = insert_user(&db, &format!("m{i}")).await;
            let en = mfa.begin_enrollment(id, "bench").await.unwrap();
            let secret = totp::base32_decode(&en.secret_base32).unwrap();
            let t = fresh_totp_time();
            mfa.confirm_enrollment(id, &totp::code_at(&secret, &TotpParams::default(), t - 30).unwrap(), None).await.unwrap();
            users.push((id, secret));
        }
        let t = fresh_totp_time();
        let mut lat = Vec::new();
        for (id, secret) in &users {
            let code = totp::code_at(secret, &TotpParams::default(), t).unwrap();
            let s = Instant::now();
            assert!(mfa.verify(*id, &code, Some("127.0.0.1"), None).await.unwrap());
            lat.push(s.elapsed());
        }
        lat.sort();
        println!(
            "{:<36} p50 {:.2} ms  p99 {:.2} ms  (decrypt secret, 3 HMACs, replay check, attempt log)",
            "MFA verification, sequential",
            lat[lat.len() / 2].as_secs_f64() * 1e3,
            lat[(lat.len() * 99) / 100].as_secs_f64() * 1e3
        );
    });
}
