//! Helpers of the metrics tests: clients on the stack's InfluxDB 1.6 and VictoriaMetrics, reading
//! points back, and a local HTTP listener that misbehaves on purpose.

#![allow(dead_code)]

use crate::support::stack;
use rootstream_db::metrics::{ClientOptions, InfluxDBClient};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn influx_url() -> String {
    stack().var("ROOTSTREAM_INFLUX_URL").to_owned()
}

pub fn vm_url() -> String {
    stack().var("ROOTSTREAM_VM_URL").to_owned()
}

/// A database name unique to one test.
pub fn unique_db(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>())
}

/// A v1 client on a fresh database of the stack's InfluxDB.
pub fn v1_client(prefix: &str) -> InfluxDBClient {
    let c = InfluxDBClient::new(ClientOptions::v1(influx_url(), unique_db(prefix))).unwrap();
    c.create_database().unwrap();
    c
}

/// A v2 client on the stack's VictoriaMetrics (org and bucket are accepted and ignored there).
pub fn v2_client() -> InfluxDBClient {
    InfluxDBClient::new(ClientOptions::v2(vm_url(), "rootstream", "metrics", Some("test-token".into()))).unwrap()
}

/// One exported VictoriaMetrics series.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSeries {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps_ms: Vec<i64>,
}

/// `/api/v1/export` of the series matching `selector`.
pub fn vm_export(selector: &str) -> Vec<VmSeries> {
    let text = ureq::post(&format!("{}/api/v1/export", vm_url()))
        .send_form(&[("match[]", selector)])
        .unwrap()
        .into_string()
        .unwrap();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let mut labels = BTreeMap::new();
        let mut name = String::new();
        for (k, val) in v["metric"].as_object().unwrap() {
            if k == "__name__" {
                name = val.as_str().unwrap().to_owned();
            } else {
                labels.insert(k.clone(), val.as_str().unwrap().to_owned());
            }
        }
        let values = v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let timestamps_ms = v["timestamps"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        out.push(VmSeries { name, labels, values, timestamps_ms });
    }
    out.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    out
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the misbehaving listener does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer this status with these extra headers and this body.
    Status(u16, Vec<(String, String)>, String),
    /// Read the request and never answer (until the listener is dropped).
    Hang,
}

/// A request the listener received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub body: String,
}

/// A local HTTP listener on 127.0.0.1 that answers each request with the next reply of a
/// script (the last one repeats), recording what it received.
pub struct Listener {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Vec<Reply>>>,
}

impl Listener {
    pub fn start(script: Vec<Reply>) -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let (seen2, script2) = (seen.clone(), script.clone());
        std::thread::spawn(move || {
            let mut hung = Vec::new();
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
                seen2.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    path,
                    body: String::from_utf8_lossy(&body).into(),
                });
                let reply = {
                    let mut s = script2.lock().unwrap();
                    if s.len() > 1 {
                        s.remove(0)
                    } else {
                        s[0].clone()
                    }
                };
                match reply {
                    Reply::Hang => hung.push(conn),
                    Reply::Status(code, headers, body) => {
                        let mut resp =
                            format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                        for (k, v) in headers {
                            resp.push_str(&format!("{k}: {v}\r\n"));
                        }
                        resp.push_str("\r\n");
                        resp.push_str(&body);
                        let _ = conn.write_all(resp.as_bytes());
                    }
                }
            }
        });
        Listener { url, seen, script }
    }

    /// Replaces the script from now on.
    pub fn set_script(&self, script: Vec<Reply>) {
        *self.script.lock().unwrap() = script;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn ok() -> Reply {
    Reply::Status(204, vec![], String::new())
}

pub fn status(code: u16) -> Reply {
    Reply::Status(code, vec![], format!("{{\"error\":\"status {code} from the test listener\"}}"))
}
