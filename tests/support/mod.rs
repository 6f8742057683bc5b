//! Test support: the private stack of real servers (started by `scripts/stack.sh`, the same
//! logic the shell uses) and a fresh database per test.
//!
//! Under `scripts/stack.sh run -- cargo test` the stack of the run is used. Otherwise each test
//! binary starts its own stack, owned by the test process: the script's watchdog stops it when
//! the process exits, also when it crashes or is killed.

#![allow(dead_code)]

use once_cell::sync::Lazy;
use rootstream_db::Config;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Stack {
    pub dir: PathBuf,
    pub vars: HashMap<String, String>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/stack.sh")
}

static STACK: Lazy<Stack> = Lazy::new(|| {
    if let (Ok(dir), Ok(_)) = (std::env::var("ROOTSTREAM_STACK_DIR"), std::env::var("ROOTSTREAM_DATABASE_URL")) {
        let vars = std::env::vars().filter(|(k, _)| k.starts_with("ROOTSTREAM_")).collect();
        return Stack { dir: PathBuf::from(dir), vars };
    }
    let dir = std::env::temp_dir().join(format!("rsdb-test-{}-{}", std::process::id(), rand::random::<u32>()));
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(&dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .output()
        .expect("could not run scripts/stack.sh");
    if !out.status.success() {
        panic!(
            "the private test stack did not start (install the servers with scripts/install-deps.sh):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut vars = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = line.trim().strip_prefix("export ").and_then(|l| l.split_once('=')) {
            vars.insert(k.to_string(), v.trim_matches('\'').to_string());
        }
    }
    Stack { dir, vars }
});

pub fn stack() -> &'static Stack {
    &STACK
}

impl Stack {
    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).unwrap_or_else(|| panic!("{name} is not set by the stack"))
    }

    /// The superuser URL of the `postgres` database.
    pub fn admin_url(&self) -> &str {
        self.var("ROOTSTREAM_DATABASE_URL")
    }

    pub fn redis_url(&self) -> &str {
        self.var("ROOTSTREAM_REDIS_URL")
    }

    pub fn pg_port(&self) -> u16 {
        self.var("ROOTSTREAM_PG_PORT").parse().unwrap()
    }

    /// URL of database `name` on the stack's server.
    pub fn url_for(&self, name: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{}", self.pg_port(), name)
    }

    pub fn redis_stop(&self) {
        self.script_cmd("redis-stop");
    }

    pub fn redis_start(&self) {
        self.script_cmd("redis-start");
    }

    pub fn influx_stop(&self) {
        self.script_cmd("influx-stop");
    }

    pub fn influx_start(&self) {
        self.script_cmd("influx-start");
    }

    fn script_cmd(&self, cmd: &str) {
        let st = Command::new("bash").arg(script()).arg(cmd).arg(&self.dir).status().unwrap();
        assert!(st.success(), "stack.sh {cmd} failed");
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates an empty database for one test and returns its name.
pub async fn create_database() -> String {
    let name =
        format!("t_{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), rand::random::<u16>());
    let (client, conn) =
        tokio_postgres::connect(stack().admin_url(), tokio_postgres::NoTls).await.expect("admin connection");
    let task = tokio::spawn(conn);
    // The name is generated here, never taken from input, so formatting it is safe.
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
    drop(client);
    let _ = task.await;
    name
}

/// A configuration for a fresh, empty database on the stack, plus the stack's Redis.
/// Inserts an active user named `name` (e-mail `name@bench.io`, a placeholder password hash)
/// and returns its id.
pub async fn insert_user(db: &rootstream_db::db::DatabaseManager, name: &str) -> i64 {
    db.query(
        "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'x') RETURNING id",
        &[&name, &format!("{name}@bench.io")],
    )
    .await
    .unwrap()[0]
        .get(0)
}

pub async fn fresh_config() -> Config {
    let name = create_database().await;
    let mut cfg = Config::default();
    cfg.set("database_url", &stack().url_for(&name)).unwrap();
    cfg.set("redis_url", stack().redis_url()).unwrap();
    if let Some(influx) = stack().vars.get("ROOTSTREAM_INFLUX_URL") {
        cfg.set("influx_url", influx).unwrap();
    }
    cfg
}

/// A configuration with only the stack's Redis.
pub fn redis_config() -> Config {
    let mut cfg = Config::default();
    cfg.set("redis_url", stack().redis_url()).unwrap();
    cfg
}

/// A configuration for the S3 repository `s3://BUCKET/PREFIX` on the stack's S3 server (moto),
/// signed with the stack's test credentials. The bucket is not created here.
pub fn s3_config(bucket: &str, prefix: &str) -> Config {
    let st = stack();
    let mut cfg = Config::default();
    cfg.set("backup_s3_url", &format!("s3://{bucket}/{prefix}")).unwrap();
    cfg.set("backup_s3_endpoint", st.var("ROOTSTREAM_S3_ENDPOINT")).unwrap();
    cfg.set("backup_s3_region", st.var("ROOTSTREAM_S3_REGION")).unwrap();
    cfg.set("backup_s3_access_key_id", st.var("ROOTSTREAM_S3_ACCESS_KEY_ID")).unwrap();
    cfg.set("backup_s3_secret_access_key", st.var("ROOTSTREAM_S3_SECRET_ACCESS_KEY")).unwrap();
    cfg
}

/// A TCP port on 127.0.0.1 with nothing listening.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A key prefix unique to one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}:{}:{}", std::process::id(), rand::random::<u64>())
}

/// A fresh configuration with a random master key (for encryption at rest).
pub async fn secure_config() -> Config {
    let mut cfg = fresh_config().await;
    let key: [u8; 32] = rand::random();
    cfg.set("master_key", &hex_string(&key)).unwrap();
    cfg.set("master_key_id", "test-k1").unwrap();
    cfg
}

pub fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A TOTP code from oathtool (liboath), an implementation independent of the library's, for
/// the base32 secret at Unix time `t`.
pub fn oathtool_code(secret_base32: &str, t: u64) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", "--now", &format!("@{t}"), secret_base32])
        .output()
        .expect("oathtool is needed for the MFA tests (scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "oathtool failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Unix time now, after waiting out the last seconds of a 30-second step, so a test has
/// the whole step to work in.
pub fn fresh_totp_time() -> u64 {
    loop {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        if t % 30 < 24 {
            return t;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The stack with a Redis Sentinel setup (`stack.sh --sentinel`): the run's stack when it has
/// one (`ROOTSTREAM_REDIS_SENTINELS` set), else a private one started for this test binary.
pub fn ha_stack() -> &'static Stack {
    static HA: Lazy<Stack> = Lazy::new(|| {
        if std::env::var("ROOTSTREAM_REDIS_SENTINELS").is_ok() && std::env::var("ROOTSTREAM_STACK_DIR").is_ok() {
            let vars = std::env::vars().filter(|(k, _)| k.starts_with("ROOTSTREAM_")).collect();
            return Stack { dir: PathBuf::from(std::env::var("ROOTSTREAM_STACK_DIR").unwrap()), vars };
        }
        let dir = std::env::temp_dir().join(format!("rsdb-ha-{}-{}", std::process::id(), rand::random::<u32>()));
        let out = Command::new("bash")
            .arg(script())
            .args(["start"])
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string(), "--no-influx", "--no-vm", "--no-s3", "--sentinel"])
            .output()
            .expect("could not run scripts/stack.sh");
        if !out.status.success() {
            panic!("the private sentinel stack did not start:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let mut vars = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.trim().strip_prefix("export ").and_then(|l| l.split_once('=')) {
                vars.insert(k.to_string(), v.trim_matches('\'').replace("\\,", ","));
            }
        }
        Stack { dir, vars }
    });
    &HA
}

impl Stack {
    /// A configuration that reaches Redis through this stack's sentinels.
    pub fn sentinel_config(&self) -> Config {
        let mut cfg = Config::default();
        cfg.set("redis_sentinels", self.var("ROOTSTREAM_REDIS_SENTINELS")).unwrap();
        cfg.set("redis_master_name", self.var("ROOTSTREAM_REDIS_MASTER_NAME")).unwrap();
        cfg.set("redis_sentinel_password", self.var("ROOTSTREAM_REDIS_SENTINEL_PASSWORD")).unwrap();
        cfg.set("redis_master_password", self.var("ROOTSTREAM_REDIS_MASTER_PASSWORD")).unwrap();
        cfg.set("redis_timeout_ms", "1000").unwrap();
        cfg
    }

    /// `stack.sh ha-kill|ha-start|ha-wait DIR ARG`; returns its stdout.
    pub fn ha(&self, cmd: &str, arg: &str) -> String {
        let out = Command::new("bash").arg(script()).arg(cmd).arg(&self.dir).arg(arg).output().unwrap();
        assert!(out.status.success(), "stack.sh {cmd} {arg} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The port of HA node `r1` or `r2`.
    pub fn ha_port(&self, node: &str) -> u16 {
        self.var(&format!("ROOTSTREAM_HA_{}_PORT", node.to_ascii_uppercase())).parse().unwrap()
    }

    /// A direct connection to HA node `r1`/`r2` (bypassing Sentinel), for checks.
    pub fn ha_node_url(&self, node: &str) -> String {
        format!("redis://:{}@127.0.0.1:{}/", self.var("ROOTSTREAM_REDIS_MASTER_PASSWORD"), self.ha_port(node))
    }
}
