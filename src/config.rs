//! Library configuration: one struct, settable field by field from Rust, from C/C++ through
//! string keys (`Config::set`), and from `ROOTSTREAM_*` environment variables.

use crate::error::{Error, Result};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Every configuration key, its environment variable is `ROOTSTREAM_` + the key in upper case.
pub const KEYS: &[&str] = &[
    "database_url",
    "pool_size",
    "acquire_timeout_ms",
    "connect_timeout_ms",
    "query_timeout_ms",
    "redis_url",
    "redis_sentinels",
    "redis_master_name",
    "redis_sentinel_password",
    "redis_master_password",
    "redis_timeout_ms",
    "influx_url",
    "influx_database",
    "influx_org",
    "influx_bucket",
    "influx_token",
    "master_key",
    "master_key_id",
    "master_keys_old",
    "backup_dir",
    "backup_s3_url",
    "backup_s3_endpoint",
    "backup_s3_region",
    "backup_s3_access_key_id",
    "backup_s3_secret_access_key",
    "wal_queue_max",
    "wal_push_parallel",
    "wal_spool_dir",
    "rsdb_path",
    "pg_bin_dir",
    "instance_id",
    "session_ttl_s",
    "session_remember_ttl_s",
    "session_idle_timeout_s",
    "session_max_per_user",
    "session_limit_policy",
    "session_retention_days",
    "mfa_issuer",
    "mfa_max_failures",
    "mfa_lockout_window_s",
    "ha_nodes",
    "ha_data_dirs",
    "etcd_endpoints",
    "ha_cluster",
    "ha_mode",
];

/// Configuration for every part of the library. Unset optional parts stay `None`, and the
/// component that needs them reports a [`Error::Config`] naming the missing key.
#[derive(Clone)]
pub struct Config {
    /// PostgreSQL URL (`postgresql://user@host1:5432,host2:5433/db?target_session_attrs=read-write`).
    pub database_url: Option<String>,
    /// Maximum pooled connections (default 20).
    pub pool_size: usize,
    /// How long an acquire waits for a free pooled connection (default 5 s).
    pub acquire_timeout: Duration,
    /// How long opening one server connection may take (default 5 s).
    pub connect_timeout: Duration,
    /// Upper bound on one statement round trip seen from the client (default 30 s).
    pub query_timeout: Duration,
    /// Redis URL (`redis://127.0.0.1:6379/0`).
    pub redis_url: Option<String>,
    /// Redis Sentinel addresses (`host:port`), used with `redis_master_name`.
    pub redis_sentinels: Vec<String>,
    /// The master name the sentinels monitor.
    pub redis_master_name: Option<String>,
    /// Password of the sentinels themselves (`requirepass` of sentinel; never printed).
    pub redis_sentinel_password: Option<String>,
    /// Password of the master and replicas found through the sentinels (never printed).
    pub redis_master_password: Option<String>,
    /// Redis connect and response timeout (default 2 s).
    pub redis_timeout: Duration,
    /// InfluxDB base URL (`http://127.0.0.1:8086`).
    pub influx_url: Option<String>,
    /// InfluxDB 1.x database name.
    pub influx_database: Option<String>,
    /// InfluxDB 2.x organisation.
    pub influx_org: Option<String>,
    /// InfluxDB 2.x bucket.
    pub influx_bucket: Option<String>,
    /// InfluxDB token (never printed).
    pub influx_token: Option<String>,
    /// Master key for encryption at rest, 32 bytes as 64 hex digits (never printed).
    pub master_key: Option<String>,
    /// Identifier of the master key, stored beside everything it encrypts (default `k1`).
    pub master_key_id: Option<String>,
    /// Older master keys that still decrypt (`id:64-hex,id:64-hex`), for key rotation (never printed).
    pub master_keys_old: Vec<String>,
    /// Directory for local backups.
    pub backup_dir: Option<PathBuf>,
    /// S3-compatible repository `s3://bucket/prefix`; when set, backups and WAL go there
    /// instead of `backup_dir`.
    pub backup_s3_url: Option<String>,
    /// S3 endpoint (`http://127.0.0.1:9000`); default `https://s3.<region>.amazonaws.com`.
    /// With an endpoint, requests use path-style addressing.
    pub backup_s3_endpoint: Option<String>,
    /// S3 region used in request signatures (default `us-east-1`).
    pub backup_s3_region: String,
    /// S3 access key id.
    pub backup_s3_access_key_id: Option<String>,
    /// S3 secret access key (never printed).
    pub backup_s3_secret_access_key: Option<String>,
    /// The most WAL (bytes) that may wait to be archived before `wal-push` drops segments
    /// instead of letting `pg_wal` grow (key `wal_queue_max`, with an optional `kB`, `MB`, `GB`
    /// suffix); 0 (the default) never drops. Dropping trades point-in-time recovery across the
    /// dropped WAL for the primary's disk; see `docs/backup-and-restore.md`.
    pub wal_queue_max: u64,
    /// How many ready WAL files one `wal-push` stores at once, the one PostgreSQL named and
    /// the next ones waiting in `archive_status` (default 1: only the named one).
    pub wal_push_parallel: usize,
    /// Where `wal-push` keeps what it pushed ahead and the WAL gaps it recorded (default
    /// `pg_wal/rsdb_spool`, which base backups leave out).
    pub wal_spool_dir: Option<PathBuf>,
    /// The `rsdb` executable that a restored cluster runs as its `restore_command` (default:
    /// `rsdb` beside the running executable when it exists there, else from the PATH).
    pub rsdb_path: Option<PathBuf>,
    /// Where pg_dump, pg_restore and friends live (default: PostgreSQL 15's Debian directory
    /// when it exists, else the PATH).
    pub pg_bin_dir: Option<PathBuf>,
    /// Identifier of this process among cooperating instances (default: host name + pid).
    pub instance_id: String,
    /// Absolute session lifetime (default 24 h).
    pub session_ttl: Duration,
    /// Absolute lifetime of a remember-me session (default 30 days).
    pub session_remember_ttl: Duration,
    /// A session unused this long expires (default 30 min).
    pub session_idle_timeout: Duration,
    /// Active sessions allowed per user (default 10; 0 = no limit).
    pub session_max_per_user: u32,
    /// What a login over the limit does: `evict_oldest` (default) or `refuse`.
    pub session_limit_policy: String,
    /// How long ended (revoked, expired, idle) sessions are kept before the cleanup deletes
    /// them (default 30 days; key `session_retention_days`).
    pub session_ended_retention: Duration,
    /// Issuer shown in authenticator apps (default `RootStream`).
    pub mfa_issuer: String,
    /// Failed MFA attempts that lock a user out (default 5) ...
    pub mfa_max_failures: u32,
    /// ... within this window (default 15 min); the lock lifts when the window has passed.
    pub mfa_lockout_window: Duration,
    /// The PostgreSQL nodes of the replicated cluster: `p1=postgres://…,p2=…` (key `ha_nodes`).
    pub ha_nodes: Option<String>,
    /// Data directories of the nodes that run on this machine: `p1=/dir,…` (key `ha_data_dirs`).
    pub ha_data_dirs: Option<String>,
    /// etcd client endpoints for the failover lease (`http://127.0.0.1:2379,…`).
    pub etcd_endpoints: Vec<String>,
    /// The cluster's name: its keys live under `/rootstream/ha/<ha_cluster>/` (default `rootstream`).
    pub ha_cluster: String,
    /// `sync` (default: quorum commit on one standby, no acknowledged write lost on failover)
    /// or `async`.
    pub ha_mode: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            pool_size: 20,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(30),
            redis_url: None,
            redis_sentinels: Vec::new(),
            redis_master_name: None,
            redis_sentinel_password: None,
            redis_master_password: None,
            redis_timeout: Duration::from_secs(2),
            influx_url: None,
            influx_database: None,
            influx_org: None,
            influx_bucket: None,
            influx_token: None,
            master_key: None,
            master_key_id: None,
            master_keys_old: Vec::new(),
            backup_dir: None,
            backup_s3_url: None,
            backup_s3_endpoint: None,
            backup_s3_region: "us-east-1".into(),
            backup_s3_access_key_id: None,
            backup_s3_secret_access_key: None,
            wal_queue_max: 0,
            wal_push_parallel: 1,
            wal_spool_dir: None,
            rsdb_path: None,
            pg_bin_dir: None,
            instance_id: default_instance_id(),
            session_ttl: Duration::from_secs(24 * 3600),
            session_remember_ttl: Duration::from_secs(30 * 24 * 3600),
            session_idle_timeout: Duration::from_secs(30 * 60),
            session_max_per_user: 10,
            session_limit_policy: "evict_oldest".into(),
            session_ended_retention: Duration::from_secs(30 * 86400),
            mfa_issuer: "RootStream".into(),
            mfa_max_failures: 5,
            mfa_lockout_window: Duration::from_secs(15 * 60),
            ha_nodes: None,
            ha_data_dirs: None,
            etcd_endpoints: Vec::new(),
            ha_cluster: "rootstream".into(),
            ha_mode: "sync".into(),
        }
    }
}

fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!("{host}-{}", std::process::id())
}

fn parse_ms(key: &str, value: &str) -> Result<Duration> {
    let ms: u64 = value
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("{key} must be a whole number of milliseconds, got {value:?}")))?;
    Ok(Duration::from_millis(ms))
}

fn parse_secs(key: &str, value: &str) -> Result<Duration> {
    let s: u64 = value
        .trim()
        .parse()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| Error::Config(format!("{key} must be a positive number of seconds, got {value:?}")))?;
    Ok(Duration::from_secs(s))
}

/// A size in bytes: a whole number with an optional `kB`, `MB` or `GB` suffix (powers of 1024,
/// as PostgreSQL reads them); an empty value is 0.
fn parse_bytes(key: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(0);
    }
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&v[..i], v[i..].trim()),
        None => (v, ""),
    };
    let scale: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" | "k" | "K" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| Error::Config(format!("{key} must be a size in bytes (e.g. 1073741824 or 1GB), got {value:?}")))
}

fn non_empty(value: &str) -> Option<String> {
    let v = value.trim();
    if v.is_empty() {
        None
    } else {
        Some(v.to_string())
    }
}

impl Config {
    /// Defaults overridden by every `ROOTSTREAM_*` variable that is set.
    pub fn from_env() -> Result<Self> {
        let mut cfg = Config::default();
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// Applies a configuration file: one `key = value` per line (keys as in [`KEYS`], or their
    /// `ROOTSTREAM_*` variable names), `#` comments and blank lines ignored, values optionally
    /// in single or double quotes. Used by `rsdb --config`, e.g. from PostgreSQL's
    /// `archive_command`, whose environment has no `ROOTSTREAM_*` variables.
    pub fn apply_file(&mut self, path: &std::path::Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read configuration file {}: {e}", path.display())))?;
        self.apply_str(&text, &path.display().to_string())
    }

    /// Applies the text of a configuration file (see [`Config::apply_file`]); `origin` names it
    /// in errors.
    pub fn apply_str(&mut self, text: &str, origin: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("{origin}:{}: expected key = value", n + 1)))?;
            let k = k.trim();
            let key = k.strip_prefix("ROOTSTREAM_").map(str::to_ascii_lowercase).unwrap_or_else(|| k.to_string());
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            self.set(&key, v).map_err(|e| Error::Config(format!("{origin}:{}: {e}", n + 1)))?;
        }
        Ok(())
    }

    /// Overrides fields with the `ROOTSTREAM_*` variables that are set.
    pub fn apply_env(&mut self) -> Result<()> {
        for key in KEYS {
            let var = format!("ROOTSTREAM_{}", key.to_ascii_uppercase());
            if let Ok(value) = std::env::var(&var) {
                self.set(key, &value).map_err(|e| Error::Config(format!("{var}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Sets one field by its key (see [`KEYS`]); an empty value clears an optional field.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "database_url" => self.database_url = non_empty(value),
            "pool_size" => {
                let n: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| Error::Config(format!("pool_size must be a positive integer, got {value:?}")))?;
                if n == 0 || n > 10_000 {
                    return Err(Error::Config(format!("pool_size must be between 1 and 10000, got {n}")));
                }
                self.pool_size = n;
            }
            "acquire_timeout_ms" => self.acquire_timeout = parse_ms(key, value)?,
            "connect_timeout_ms" => self.connect_timeout = parse_ms(key, value)?,
            "query_timeout_ms" => self.query_timeout = parse_ms(key, value)?,
            "redis_url" => self.redis_url = non_empty(value),
            "redis_sentinels" => {
                self.redis_sentinels = value.split(',').filter_map(non_empty).collect();
            }
            "redis_master_name" => self.redis_master_name = non_empty(value),
            // Passwords are taken as given (no trimming): spaces may be part of them.
            "redis_sentinel_password" => {
                self.redis_sentinel_password = if value.is_empty() { None } else { Some(value.to_string()) }
            }
            "redis_master_password" => {
                self.redis_master_password = if value.is_empty() { None } else { Some(value.to_string()) }
            }
            "redis_timeout_ms" => self.redis_timeout = parse_ms(key, value)?,
            "influx_url" => self.influx_url = non_empty(value),
            "influx_database" => self.influx_database = non_empty(value),
            "influx_org" => self.influx_org = non_empty(value),
            "influx_bucket" => self.influx_bucket = non_empty(value),
            "influx_token" => self.influx_token = non_empty(value),
            "master_key" => {
                let v = non_empty(value);
                if let Some(k) = &v {
                    let ok = k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit());
                    if !ok {
                        return Err(Error::Config("master_key must be 64 hex digits (32 bytes)".into()));
                    }
                }
                self.master_key = v;
            }
            "master_key_id" => self.master_key_id = non_empty(value),
            "master_keys_old" => {
                self.master_keys_old = value.split(',').filter_map(non_empty).collect();
            }
            "session_ttl_s" => self.session_ttl = parse_secs(key, value)?,
            "session_remember_ttl_s" => self.session_remember_ttl = parse_secs(key, value)?,
            "session_idle_timeout_s" => self.session_idle_timeout = parse_secs(key, value)?,
            "session_max_per_user" => {
                self.session_max_per_user = value
                    .trim()
                    .parse()
                    .map_err(|_| Error::Config(format!("session_max_per_user must be a whole number, got {value:?}")))?
            }
            "session_limit_policy" => match value.trim() {
                "evict_oldest" | "refuse" => self.session_limit_policy = value.trim().to_string(),
                other => {
                    return Err(Error::Config(format!(
                        "session_limit_policy must be evict_oldest or refuse, got {other:?}"
                    )))
                }
            },
            "session_retention_days" => {
                let days: u64 = value.trim().parse().ok().filter(|d| *d > 0).ok_or_else(|| {
                    Error::Config(format!("session_retention_days must be a positive number of days, got {value:?}"))
                })?;
                self.session_ended_retention = Duration::from_secs(days.saturating_mul(86400));
            }
            "mfa_issuer" => {
                self.mfa_issuer =
                    non_empty(value).ok_or_else(|| Error::Config("mfa_issuer must not be empty".into()))?
            }
            "mfa_max_failures" => {
                self.mfa_max_failures = value.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Error::Config(format!("mfa_max_failures must be a positive number, got {value:?}"))
                })?
            }
            "mfa_lockout_window_s" => self.mfa_lockout_window = parse_secs(key, value)?,
            "backup_dir" => self.backup_dir = non_empty(value).map(PathBuf::from),
            "backup_s3_url" => {
                let v = non_empty(value);
                if let Some(u) = &v {
                    let bucket = u.strip_prefix("s3://").map(|r| r.split('/').next().unwrap_or(""));
                    if bucket.is_none_or(str::is_empty) {
                        return Err(Error::Config(format!(
                            "backup_s3_url must look like s3://bucket/prefix, got {u:?}"
                        )));
                    }
                }
                self.backup_s3_url = v;
            }
            "backup_s3_endpoint" => self.backup_s3_endpoint = non_empty(value),
            "backup_s3_region" => {
                self.backup_s3_region = non_empty(value).unwrap_or_else(|| "us-east-1".into());
            }
            "backup_s3_access_key_id" => self.backup_s3_access_key_id = non_empty(value),
            "backup_s3_secret_access_key" => self.backup_s3_secret_access_key = non_empty(value),
            "wal_queue_max" => self.wal_queue_max = parse_bytes(key, value)?,
            "wal_push_parallel" => {
                self.wal_push_parallel =
                    value.trim().parse().ok().filter(|n| (1..=32).contains(n)).ok_or_else(|| {
                        Error::Config(format!("wal_push_parallel must be a whole number from 1 to 32, got {value:?}"))
                    })?
            }
            "wal_spool_dir" => self.wal_spool_dir = non_empty(value).map(PathBuf::from),
            "rsdb_path" => self.rsdb_path = non_empty(value).map(PathBuf::from),
            "pg_bin_dir" => self.pg_bin_dir = non_empty(value).map(PathBuf::from),
            "ha_nodes" => {
                let v = non_empty(value);
                if let Some(n) = &v {
                    crate::ha::NodeSet::parse(n, None)?;
                }
                self.ha_nodes = v;
            }
            "ha_data_dirs" => self.ha_data_dirs = non_empty(value),
            "etcd_endpoints" => {
                self.etcd_endpoints = value.split(',').filter_map(non_empty).collect();
            }
            "ha_cluster" => {
                let v = value.trim();
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                    return Err(Error::Config(format!(
                        "ha_cluster must be letters, digits, '_', '-' or '.', got {value:?}"
                    )));
                }
                self.ha_cluster = v.to_string();
            }
            "ha_mode" => {
                let v = value.trim().to_ascii_lowercase();
                if v != "sync" && v != "async" {
                    return Err(Error::Config(format!("ha_mode must be sync or async, got {value:?}")));
                }
                self.ha_mode = v;
            }
            "instance_id" => {
                self.instance_id =
                    non_empty(value).ok_or_else(|| Error::Config("instance_id must not be empty".into()))?
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown configuration key {other:?}; known keys: {}",
                    KEYS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// The PostgreSQL nodes of `ha_nodes` with the data directories of `ha_data_dirs`.
    pub fn ha_node_set(&self) -> Result<crate::ha::NodeSet> {
        let nodes = self
            .ha_nodes
            .as_deref()
            .ok_or_else(|| Error::Config("ha_nodes is not set (ROOTSTREAM_HA_NODES)".into()))?;
        crate::ha::NodeSet::parse(nodes, self.ha_data_dirs.as_deref())
    }

    /// The database URL, or a configuration error naming the key and variable.
    pub fn require_database_url(&self) -> Result<&str> {
        self.database_url
            .as_deref()
            .ok_or_else(|| Error::Config("database_url is not set (ROOTSTREAM_DATABASE_URL)".into()))
    }

    /// True when Redis is reached through Sentinel: `redis_sentinels` and `redis_master_name`
    /// are both set and `redis_url` is not (an explicit URL means a direct connection).
    pub fn uses_sentinel(&self) -> bool {
        self.sentinel_configured() && self.redis_url.is_none()
    }

    /// True when `redis_sentinels` and `redis_master_name` are both set.
    pub fn sentinel_configured(&self) -> bool {
        !self.redis_sentinels.is_empty() && self.redis_master_name.is_some()
    }

    /// The Redis URL, or a configuration error naming the key and variable.
    pub fn require_redis_url(&self) -> Result<&str> {
        self.redis_url.as_deref().ok_or_else(|| Error::Config("redis_url is not set (ROOTSTREAM_REDIS_URL)".into()))
    }
}

/// Replaces the password part of a URL's authority with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{}://{}@{}", &url[..scheme_end], masked, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |v: &Option<String>| if v.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Config")
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_sentinels", &self.redis_sentinels)
            .field("redis_master_name", &self.redis_master_name)
            .field("redis_sentinel_password", &secret(&self.redis_sentinel_password))
            .field("redis_master_password", &secret(&self.redis_master_password))
            .field("redis_timeout", &self.redis_timeout)
            .field("influx_url", &self.influx_url)
            .field("influx_database", &self.influx_database)
            .field("influx_org", &self.influx_org)
            .field("influx_bucket", &self.influx_bucket)
            .field("influx_token", &secret(&self.influx_token))
            .field("master_key", &secret(&self.master_key))
            .field("master_key_id", &self.master_key_id)
            .field("master_keys_old", &format!("<{} keys>", self.master_keys_old.len()))
            .field("backup_dir", &self.backup_dir)
            .field("backup_s3_url", &self.backup_s3_url)
            .field("backup_s3_endpoint", &self.backup_s3_endpoint)
            .field("backup_s3_region", &self.backup_s3_region)
            .field("backup_s3_access_key_id", &self.backup_s3_access_key_id)
            .field("backup_s3_secret_access_key", &secret(&self.backup_s3_secret_access_key))
            .field("wal_queue_max", &self.wal_queue_max)
            .field("wal_push_parallel", &self.wal_push_parallel)
            .field("wal_spool_dir", &self.wal_spool_dir)
            .field("rsdb_path", &self.rsdb_path)
            .field("pg_bin_dir", &self.pg_bin_dir)
            .field("instance_id", &self.instance_id)
            .field("session_ttl", &self.session_ttl)
            .field("session_remember_ttl", &self.session_remember_ttl)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("session_max_per_user", &self.session_max_per_user)
            .field("session_limit_policy", &self.session_limit_policy)
            .field("session_ended_retention", &self.session_ended_retention)
            .field("mfa_issuer", &self.mfa_issuer)
            .field("mfa_max_failures", &self.mfa_max_failures)
            .field("mfa_lockout_window", &self.mfa_lockout_window)
            .field("ha_nodes", &self.ha_nodes.as_ref().map(|n| format!("<{} nodes>", n.split(',').count())))
            .field("ha_data_dirs", &self.ha_data_dirs)
            .field("etcd_endpoints", &self.etcd_endpoints)
            .field("ha_cluster", &self.ha_cluster)
            .field("ha_mode", &self.ha_mode)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_rejects_unknown_keys_and_bad_numbers() {
        let mut c = Config::default();
        assert!(matches!(c.set("nope", "1"), Err(Error::Config(_))));
        assert!(matches!(c.set("pool_size", "0"), Err(Error::Config(_))));
        assert!(matches!(c.set("pool_size", "abc"), Err(Error::Config(_))));
        c.set("pool_size", "7").unwrap();
        assert_eq!(c.pool_size, 7);
        c.set("acquire_timeout_ms", "250").unwrap();
        assert_eq!(c.acquire_timeout, Duration::from_millis(250));
        c.set("redis_sentinels", "a:1, b:2,,").unwrap();
        assert_eq!(c.redis_sentinels, vec!["a:1", "b:2"]);
    }

    #[test]
    fn wal_queue_sizes_and_parallelism() {
        let mut c = Config::default();
        assert_eq!((c.wal_queue_max, c.wal_push_parallel), (0, 1));
        for (text, bytes) in
            [("1073741824", 1u64 << 30), ("64MB", 64 << 20), ("512 kB", 512 << 10), ("2GB", 2 << 30), ("", 0)]
        {
            c.set("wal_queue_max", text).unwrap();
            assert_eq!(c.wal_queue_max, bytes, "{text}");
        }
        for bad in ["-1", "1.5GB", "1TB", "MB", "99999999999999999999", "18014398509481984GB"] {
            let err = c.set("wal_queue_max", bad).unwrap_err().to_string();
            assert!(err.contains("wal_queue_max"), "{err}");
        }
        c.set("wal_push_parallel", "4").unwrap();
        assert_eq!(c.wal_push_parallel, 4);
        for bad in ["0", "33", "x"] {
            assert!(c.set("wal_push_parallel", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_secrets_and_passwords() {
        let mut c = Config::default();
        c.set("database_url", "postgresql://app:hunter2@db:5432/x").unwrap();
        c.set("master_key", &"ab".repeat(32)).unwrap();
        c.set("influx_token", "tok-secret").unwrap();
        c.set("redis_sentinel_password", "sent-secret").unwrap();
        c.set("redis_master_password", "mast-secret").unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(!s.contains(&"ab".repeat(32)), "{s}");
        assert!(!s.contains("tok-secret"), "{s}");
        assert!(!s.contains("sent-secret") && !s.contains("mast-secret"), "{s}");
        assert!(s.contains("app:***@db:5432"), "{s}");
    }

    #[test]
    fn master_key_must_be_32_bytes_of_hex() {
        let mut c = Config::default();
        assert!(c.set("master_key", "short").is_err());
        assert!(c.set("master_key", &"zz".repeat(32)).is_err());
        c.set("master_key", &"0f".repeat(32)).unwrap();
    }

    #[test]
    fn session_retention_is_a_positive_number_of_days_defaulting_to_thirty() {
        let mut c = Config::default();
        assert_eq!(c.session_ended_retention, Duration::from_secs(30 * 86400));
        c.set("session_retention_days", "7").unwrap();
        assert_eq!(c.session_ended_retention, Duration::from_secs(7 * 86400));
        for bad in ["0", "-1", "a week"] {
            assert!(c.set("session_retention_days", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redact_leaves_urls_without_password_alone() {
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(redact_url("redis://:pw@h:1/"), "redis://:***@h:1/");
    }
}
