//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/*`, `/v3/lease/*`).
//!
//! Why the gateway rather than gRPC: the gateway ships with every etcd 3.4 server, speaks plain
//! HTTP/1.1 + JSON, and needs nothing beyond `ureq`, which the library already uses. A gRPC client
//! would add protoc at build time and a tonic/prost/tower tree to compile; the failover manager
//! needs only a handful of unary calls (grant, keepalive, revoke, range, put, txn, delete), so the
//! streaming parts of gRPC buy nothing here. Watches are replaced by reading the keys once per
//! loop, which the manager does anyway.
//!
//! The client is blocking. Call it from a thread of your own or through
//! `tokio::task::spawn_blocking`. Each request has its own time limit; on a connection error or a
//! timeout it tries the next endpoint, so one dead or frozen member costs one timeout at most.
//! Keys and values are base64 on the wire; numbers (revisions, lease ids) come back as strings.

use crate::error::{Error, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A lease id as etcd hands it out.
pub type LeaseId = i64;

/// One key as read back from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: LeaseId,
}

/// The result of a lease keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    /// The lease lives for `ttl_s` more seconds from the moment the server handled the request.
    Alive { ttl_s: i64 },
    /// The lease no longer exists (expired or revoked).
    Expired,
}

/// A blocking etcd v3 client for several endpoints of one cluster.
pub struct EtcdClient {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    timeout: Duration,
    /// The endpoint that answered last; requests start there.
    current: AtomicUsize,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient").field("endpoints", &self.endpoints).field("timeout", &self.timeout).finish()
    }
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

fn unb64(v: Option<&Value>) -> Result<String> {
    match v.and_then(Value::as_str) {
        None => Ok(String::new()),
        Some(s) => {
            let bytes = B64.decode(s).map_err(|e| Error::Json(format!("etcd sent bad base64: {e}")))?;
            String::from_utf8(bytes).map_err(|_| Error::Json("etcd sent a value that is not UTF-8".into()))
        }
    }
}

/// etcd sends 64-bit numbers as JSON strings; missing means 0 (proto3 omits defaults).
fn num(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// Splits `http://a:1,http://b:2` into a list; a bare `host:port` gets `http://`.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>> {
    let eps: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.trim_end_matches('/');
            if s.starts_with("http://") || s.starts_with("https://") {
                s.to_string()
            } else {
                format!("http://{s}")
            }
        })
        .collect();
    if eps.is_empty() {
        return Err(Error::Config("etcd_endpoints lists no endpoint".into()));
    }
    Ok(eps)
}

impl EtcdClient {
    /// A client for `endpoints` (`http://host:port`), with `timeout` per request and endpoint.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Config("etcd_endpoints lists no endpoint".into()));
        }
        if timeout.is_zero() {
            return Err(Error::InvalidArgument("the etcd request timeout must be positive".into()));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .timeout_connect(timeout.min(Duration::from_secs(1)))
            .max_idle_connections_per_host(2)
            .build();
        Ok(EtcdClient { endpoints, agent, timeout, current: AtomicUsize::new(0) })
    }

    /// The endpoints, in configuration order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The per-request time limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs `body` to `path` on the first endpoint that answers. Transport failures and
    /// "no leader / timed out" answers move on to the next endpoint; other answers from the
    /// server are final.
    fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let text = body.to_string();
        let mut failures = Vec::new();
        let mut timed_out = false;
        for i in 0..n {
            let idx = (start + i) % n;
            let ep = &self.endpoints[idx];
            let url = format!("{ep}{path}");
            let res = self.agent.post(&url).set("Content-Type", "application/json").send_string(&text);
            let (status, body_text) = match res {
                Ok(resp) => (200, resp.into_string()),
                Err(ureq::Error::Status(code, resp)) => (code, resp.into_string()),
                Err(ureq::Error::Transport(t)) => {
                    let msg = t.to_string();
                    if msg.contains("timed out") || msg.contains("Timeout") {
                        timed_out = true;
                    }
                    failures.push(format!("{ep}: {msg}"));
                    continue;
                }
            };
            let body_text = match body_text {
                Ok(t) => t,
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock {
                        timed_out = true;
                    }
                    failures.push(format!("{ep}: reading the answer failed: {e}"));
                    continue;
                }
            };
            // The streaming endpoints (keepalive) may send one JSON document per line.
            let first = body_text.lines().find(|l| !l.trim().is_empty()).unwrap_or("{}");
            let v: Value = serde_json::from_str(first)
                .map_err(|e| Error::Json(format!("etcd {ep}{path} sent something that is not JSON: {e}")))?;
            let v = match v.get("result") {
                Some(r) if path.contains("keepalive") => r.clone(),
                _ => v,
            };
            if let Some(err) = v.get("error") {
                let msg = err
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| err.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| err.to_string());
                let code = num(v.get("code").or_else(|| err.get("grpc_code")));
                // 14 unavailable, 4 deadline exceeded, 2 unknown ("context deadline exceeded"):
                // this member cannot reach a quorum right now; another one might.
                if matches!(code, 2 | 4 | 14) || status == 503 {
                    timed_out = true;
                    failures.push(format!("{ep}: {msg}"));
                    continue;
                }
                self.current.store(idx, Ordering::Relaxed);
                return Err(if code == 5 {
                    Error::NotFound(format!("etcd {ep}{path}: {msg}"))
                } else {
                    Error::Connection(format!("etcd {ep}{path}: {msg} (code {code})"))
                });
            }
            if status >= 400 {
                failures.push(format!("{ep}: HTTP {status}"));
                continue;
            }
            self.current.store(idx, Ordering::Relaxed);
            return Ok(v);
        }
        let msg = format!("no etcd endpoint answered {path}: {}", failures.join("; "));
        Err(if timed_out { Error::Timeout(msg) } else { Error::Connection(msg) })
    }

    /// Grants a lease of `ttl_s` seconds; returns its id and the TTL the server granted.
    pub fn lease_grant(&self, ttl_s: i64) -> Result<(LeaseId, i64)> {
        let v = self.call("/v3/lease/grant", &json!({ "TTL": ttl_s }))?;
        let id = num(v.get("ID"));
        if id == 0 {
            return Err(Error::Connection(format!("etcd granted no lease: {v}")));
        }
        Ok((id, num(v.get("TTL"))))
    }

    /// Renews a lease once. A missing or zero TTL in the answer means the lease is gone.
    pub fn lease_keepalive(&self, id: LeaseId) -> Result<Keepalive> {
        let v = self.call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        let ttl = num(v.get("TTL"));
        Ok(if ttl > 0 { Keepalive::Alive { ttl_s: ttl } } else { Keepalive::Expired })
    }

    /// Revokes a lease (its keys are deleted). An already expired lease is not an error.
    pub fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        match self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() })) {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn kv(v: &Value) -> Result<KeyValue> {
        Ok(KeyValue {
            key: unb64(v.get("key"))?,
            value: unb64(v.get("value"))?,
            create_revision: num(v.get("create_revision").or_else(|| v.get("createRevision"))),
            mod_revision: num(v.get("mod_revision").or_else(|| v.get("modRevision"))),
            lease: num(v.get("lease")),
        })
    }

    /// Reads one key.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let v = self.call("/v3/kv/range", &json!({ "key": b64(key) }))?;
        match v.get("kvs").and_then(Value::as_array).and_then(|a| a.first()) {
            Some(kv) => Ok(Some(Self::kv(kv)?)),
            None => Ok(None),
        }
    }

    /// Reads every key starting with `prefix`, in key order.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let end = prefix_end(prefix);
        let v = self.call("/v3/kv/range", &json!({ "key": b64(prefix), "range_end": B64.encode(end) }))?;
        let mut out = Vec::new();
        for kv in v.get("kvs").and_then(Value::as_array).into_iter().flatten() {
            out.push(Self::kv(kv)?);
        }
        Ok(out)
    }

    /// Writes a key (with `lease`, when non-zero).
    pub fn put(&self, key: &str, value: &str, lease: LeaseId) -> Result<()> {
        let mut body = json!({ "key": b64(key), "value": b64(value) });
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", &body)?;
        Ok(())
    }

    /// Deletes a key; returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let v = self.call("/v3/kv/deleterange", &json!({ "key": b64(key) }))?;
        Ok(num(v.get("deleted")) > 0)
    }

    fn txn(&self, body: Value) -> Result<bool> {
        let v = self.call("/v3/kv/txn", &body)?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Creates `key` = `value` tied to `lease` only if the key does not exist (its create
    /// revision is 0). Returns whether this call created it.
    pub fn create_if_absent(&self, key: &str, value: &str, lease: LeaseId) -> Result<bool> {
        self.txn(json!({
            "compare": [{ "target": "CREATE", "result": "EQUAL", "key": b64(key), "create_revision": "0" }],
            "success": [{ "request_put": { "key": b64(key), "value": b64(value), "lease": lease.to_string() } }],
        }))
    }

    /// Writes `key` = `value` only while `guard_key` holds `guard_value` (the leader check).
    /// Returns whether the write happened.
    pub fn put_if_equal(&self, guard_key: &str, guard_value: &str, key: &str, value: &str) -> Result<bool> {
        self.txn(json!({
            "compare": [{ "target": "VALUE", "result": "EQUAL", "key": b64(guard_key), "value": b64(guard_value) }],
            "success": [{ "request_put": { "key": b64(key), "value": b64(value) } }],
        }))
    }

    /// Writes several keys at once, only while `guard_key` holds `guard_value`.
    pub fn put_many_if_equal(&self, guard_key: &str, guard_value: &str, puts: &[(&str, &str)]) -> Result<bool> {
        let ops: Vec<Value> =
            puts.iter().map(|(k, v)| json!({ "request_put": { "key": b64(k), "value": b64(v) } })).collect();
        self.txn(json!({
            "compare": [{ "target": "VALUE", "result": "EQUAL", "key": b64(guard_key), "value": b64(guard_value) }],
            "success": ops,
        }))
    }

    /// Deletes `key` only while it holds `value`. Returns whether it was deleted.
    pub fn delete_if_equal(&self, key: &str, value: &str) -> Result<bool> {
        self.txn(json!({
            "compare": [{ "target": "VALUE", "result": "EQUAL", "key": b64(key), "value": b64(value) }],
            "success": [{ "request_delete_range": { "key": b64(key) } }],
        }))
    }

    /// Checks that a member answers and the cluster has a leader; returns the cluster's
    /// member count as seen by that member's status (or an error naming every endpoint).
    pub fn check(&self) -> Result<()> {
        // A linearizable read needs a quorum, which is exactly what the failover manager needs.
        self.call("/v3/kv/range", &json!({ "key": b64("/rootstream/health-check") }))?;
        Ok(())
    }
}

/// The smallest key greater than every key with `prefix` (etcd's range_end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_and_without_scheme() {
        assert_eq!(
            parse_endpoints("http://127.0.0.1:1, 127.0.0.1:2/").unwrap(),
            vec!["http://127.0.0.1:1".to_string(), "http://127.0.0.1:2".to_string()]
        );
        assert!(parse_endpoints(" , ").is_err());
    }

    #[test]
    fn numbers_and_prefixes() {
        assert_eq!(num(Some(&json!("42"))), 42);
        assert_eq!(num(Some(&json!(7))), 7);
        assert_eq!(num(None), 0);
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(unb64(Some(&json!("YmFy"))).unwrap(), "bar");
        assert_eq!(unb64(None).unwrap(), "");
    }

    #[test]
    fn an_unreachable_endpoint_is_a_connection_error_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = EtcdClient::new(vec![format!("http://127.0.0.1:{port}")], Duration::from_millis(500)).unwrap();
        let e = c.get("/x").unwrap_err();
        assert!(matches!(e, Error::Connection(_)), "{e}");
        assert!(e.to_string().contains(&port.to_string()), "{e}");
    }
}
