//! A private PostgreSQL HA stack per test (`scripts/stack.sh start DIR --pg-ha`): three nodes,
//! three etcd members, owned by the test process and stopped when the value is dropped.
//! Failover tests change the topology, so each one gets its own; a global lock runs them one
//! at a time (two cores).

#![allow(dead_code)]

use rootstream_db::ha::NodeSet;
use rootstream_db::Config;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct HaStack {
    pub dir: PathBuf,
    pub vars: HashMap<String, String>,
    _turn: MutexGuard<'static, ()>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/stack.sh")
}

/// Undoes the shell quoting of `export K=V` lines (`\,`, `\?`, `'…'`).
fn unquote(v: &str) -> String {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_string();
    }
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl HaStack {
    pub fn start() -> Self {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let dir = std::env::temp_dir().join(format!("rsdb-ha-{}-{}", std::process::id(), rand::random::<u32>()));
        let out = Command::new("bash")
            .arg(script())
            .args(["start"])
            .arg(&dir)
            .args(["--pg-ha", "--no-s3", "--no-influx", "--no-vm", "--owner-pid"])
            .arg(std::process::id().to_string())
            .output()
            .expect("could not run scripts/stack.sh");
        if !out.status.success() {
            panic!("the HA stack did not start:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let mut vars = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.trim().strip_prefix("export ").and_then(|l| l.split_once('=')) {
                vars.insert(k.to_string(), unquote(v));
            }
        }
        HaStack { dir, vars, _turn: turn }
    }

    pub fn var(&self, k: &str) -> &str {
        self.vars.get(k).unwrap_or_else(|| panic!("{k} is not set by the stack"))
    }

    /// Runs `stack.sh CMD DIR ARGS…` and returns its output; panics when it fails.
    pub fn cmd(&self, cmd: &str, args: &[&str]) -> String {
        let out = Command::new("bash").arg(script()).arg(cmd).arg(&self.dir).args(args).output().unwrap();
        assert!(out.status.success(), "stack.sh {cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn role(&self, node: &str) -> String {
        self.cmd("pg-role", &[node])
    }

    pub fn nodes(&self) -> NodeSet {
        NodeSet::parse(self.var("ROOTSTREAM_HA_PG_NODES"), Some(self.var("ROOTSTREAM_HA_PG_DATA"))).unwrap()
    }

    /// A configuration for the cluster, the pool on the multi-host read-write URL.
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        c.set("database_url", self.var("ROOTSTREAM_HA_DATABASE_URL")).unwrap();
        c.set("ha_nodes", self.var("ROOTSTREAM_HA_PG_NODES")).unwrap();
        c.set("ha_data_dirs", self.var("ROOTSTREAM_HA_PG_DATA")).unwrap();
        c.set("etcd_endpoints", self.var("ROOTSTREAM_ETCD_ENDPOINTS")).unwrap();
        c.set("pg_bin_dir", self.var("ROOTSTREAM_PG_BIN")).unwrap();
        c.set("pool_size", "8").unwrap();
        c.set("acquire_timeout_ms", "2000").unwrap();
        c.set("connect_timeout_ms", "1000").unwrap();
        c.set("query_timeout_ms", "10000").unwrap();
        c
    }

    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.var("ROOTSTREAM_ETCD_ENDPOINTS").split(',').map(str::to_string).collect()
    }
}

impl Drop for HaStack {
    fn drop(&mut self) {
        if std::env::var_os("RSDB_KEEP_HA_STACK").is_some() {
            eprintln!("keeping the HA stack in {}", self.dir.display());
            return;
        }
        let _ = Command::new("bash").arg(script()).arg("stop").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
