//! `HealthMonitor`: periodic checks of a PostgreSQL setup, with alerts on changes of state.
//!
//! A monitor watches one [`DatabaseManager`] (and, optionally, a list of PostgreSQL nodes of an
//! HA cluster). Each round runs these checks:
//!
//! | check | value | alert when |
//! |---|---|---|
//! | `connectivity` | consecutive failed rounds | the pool's server does not answer |
//! | `latency` | round trip of the probe query, ms | above the thresholds |
//! | `replication_bytes` | largest replica lag, bytes | above the thresholds |
//! | `replication_seconds` | largest replica lag, seconds | above the thresholds |
//! | `disk` | free space of a path, percent | below the thresholds (percent or bytes) |
//! | `pool` | connections in use, percent of the pool | above the thresholds, or callers waiting |
//! | `long_queries` | longest running statement, seconds | above the thresholds |
//! | `nodes` (with `nodes`) | unreachable nodes | a node is down; no or two primaries |
//!
//! The monitor keeps one connection of its own, taken out of the pool (it no longer counts in the
//! pool's statistics and is never handed to the application), with `application_name`
//! `rootstream-db-health`; a broken one is replaced on the next round. Each statement is bounded
//! by `check_timeout_ms`; a server that is down is a `connectivity` alert and the checks that need
//! it become `unknown`, never a panic or a stuck thread.
//!
//! Alerts go to the registered callbacks only when a check's state changes (a `warning`, a
//! `critical`, or `resolved` when it is back to `ok`), and again every `repeat_interval_ms` while
//! it stays alerting (when that is not 0). `info` alerts tell of a change of role of the
//! pool's server or of the set of replicas. Periodic rounds run on the thread `rsdb-health`; the
//! callbacks of a round run on the thread that ran it (`rsdb-health`, or the caller of
//! [`HealthMonitor::check_now`]), one at a time, in order. A panicking callback is caught and
//! logged.

use crate::db::{DatabaseManager, PoolStats};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// The `application_name` of the monitor's own connections.
pub const APPLICATION_NAME: &str = "rootstream-db-health";

/// The names of the checks, in the order they run and appear in the status.
pub const CHECKS: [&str; 8] =
    ["connectivity", "latency", "replication_bytes", "replication_seconds", "disk", "pool", "long_queries", "nodes"];

/// Settings of a monitor. Every field has a default; [`HealthOptions::from_json`] reads the
/// same names (unknown keys are refused). Thresholds of the kind `*_warning`/`*_critical`
/// apply when the value is at or beyond them; a threshold of 0 for the byte limits of `disk`
/// turns that limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthOptions {
    /// Time between the starts of two periodic rounds.
    pub interval_ms: u64,
    /// Limit of each statement and connection attempt of a check.
    pub check_timeout_ms: u64,
    /// While a check stays alerting, its alert is sent again this often (0: only on changes).
    pub repeat_interval_ms: u64,
    /// How long [`HealthMonitor::stop`] waits for the thread to end.
    pub stop_timeout_ms: u64,
    /// Failed rounds in a row before `connectivity` is critical (warning before that).
    pub connectivity_critical_after: u32,
    pub latency_warning_ms: f64,
    pub latency_critical_ms: f64,
    pub replication_lag_warning_bytes: f64,
    pub replication_lag_critical_bytes: f64,
    pub replication_lag_warning_s: f64,
    pub replication_lag_critical_s: f64,
    /// The path whose file system is checked. Unset: the server's `data_directory` when it
    /// exists on this machine (and can be read by the monitor's role); otherwise `disk` is
    /// `disabled`.
    pub disk_path: Option<String>,
    /// Free space at or below which `disk` is warning / critical, in percent of the file system.
    pub disk_free_warning_pct: f64,
    pub disk_free_critical_pct: f64,
    /// Free space at or below which `disk` is warning / critical, in bytes (0: off).
    pub disk_free_warning_bytes: u64,
    pub disk_free_critical_bytes: u64,
    /// Connections in use, in percent of the pool's maximum.
    pub pool_warning_pct: f64,
    pub pool_critical_pct: f64,
    /// Callers waiting for a connection at or above which `pool` is critical (0: off).
    pub pool_waiting_critical: u64,
    /// Duration of the longest running statement (`pg_stat_activity`, state not idle).
    pub long_query_warning_s: f64,
    pub long_query_critical_s: f64,
    /// Nodes of an HA cluster, `name=url,name=url` (as `ROOTSTREAM_HA_PG_NODES`). Each round
    /// probes each of them on a connection of its own; replication lag is then measured on
    /// every node and the `nodes` check runs.
    pub nodes: Option<String>,
    /// The checks to run (names from [`CHECKS`]); unset: all. Others are `disabled`.
    pub checks: Option<Vec<String>>,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            interval_ms: 5000,
            check_timeout_ms: 2000,
            repeat_interval_ms: 0,
            stop_timeout_ms: 5000,
            connectivity_critical_after: 1,
            latency_warning_ms: 100.0,
            latency_critical_ms: 1000.0,
            replication_lag_warning_bytes: 16.0 * 1024.0 * 1024.0,
            replication_lag_critical_bytes: 256.0 * 1024.0 * 1024.0,
            replication_lag_warning_s: 5.0,
            replication_lag_critical_s: 30.0,
            disk_path: None,
            disk_free_warning_pct: 15.0,
            disk_free_critical_pct: 5.0,
            disk_free_warning_bytes: 0,
            disk_free_critical_bytes: 0,
            pool_warning_pct: 80.0,
            pool_critical_pct: 100.0,
            pool_waiting_critical: 1,
            long_query_warning_s: 30.0,
            long_query_critical_s: 300.0,
            nodes: None,
            checks: None,
        }
    }
}

impl HealthOptions {
    /// Options from a JSON object; missing keys keep their defaults. `RSDB_ERR_JSON` for text
    /// that is not a JSON object, `RSDB_ERR_INVALID_ARGUMENT` for an unknown key, a wrong type
    /// or thresholds out of order.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Json(format!("health options: {e}")))?;
        if !v.is_object() {
            return Err(Error::Json("health options must be a JSON object".into()));
        }
        let o: HealthOptions = serde_json::from_value(v.clone()).map_err(|e| {
            // serde names the type but not the key; find the key by trying each alone.
            let bad = v.as_object().into_iter().flatten().find(|(k, val)| {
                let one = Value::Object(Map::from_iter([((*k).clone(), (*val).clone())]));
                serde_json::from_value::<HealthOptions>(one).is_err()
            });
            match bad {
                Some((k, _)) if !e.to_string().contains(k.as_str()) => {
                    Error::InvalidArgument(format!("health options: {k}: {e}"))
                }
                _ => Error::InvalidArgument(format!("health options: {e}")),
            }
        })?;
        o.validate()?;
        Ok(o)
    }

    /// Checks ranges and the order of each pair of thresholds.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("health options: {m}")));
        if self.interval_ms < 10 {
            return bad(format!("interval_ms must be at least 10, got {}", self.interval_ms));
        }
        if self.check_timeout_ms == 0 {
            return bad("check_timeout_ms must be greater than 0".into());
        }
        if self.connectivity_critical_after == 0 {
            return bad("connectivity_critical_after must be at least 1".into());
        }
        let above = [
            ("latency", self.latency_warning_ms, self.latency_critical_ms),
            ("replication_lag_*_bytes", self.replication_lag_warning_bytes, self.replication_lag_critical_bytes),
            ("replication_lag_*_s", self.replication_lag_warning_s, self.replication_lag_critical_s),
            ("pool_*_pct", self.pool_warning_pct, self.pool_critical_pct),
            ("long_query_*_s", self.long_query_warning_s, self.long_query_critical_s),
        ];
        for (name, w, c) in above {
            if !(w.is_finite() && c.is_finite()) || w < 0.0 || w > c {
                return bad(format!(
                    "{name}: the warning threshold ({w}) must be between 0 and the critical one ({c})"
                ));
            }
        }
        let (w, c) = (self.disk_free_warning_pct, self.disk_free_critical_pct);
        if !(0.0..=100.0).contains(&w) || !(0.0..=100.0).contains(&c) || w < c {
            return bad(format!("disk_free_*_pct: need 100 >= warning ({w}) >= critical ({c}) >= 0"));
        }
        if self.disk_free_warning_bytes != 0 && self.disk_free_warning_bytes < self.disk_free_critical_bytes {
            return bad("disk_free_warning_bytes must not be below disk_free_critical_bytes".into());
        }
        if let Some(list) = &self.checks {
            if let Some(unknown) = list.iter().find(|c| !CHECKS.contains(&c.as_str())) {
                return bad(format!("unknown check {unknown:?}; known: {}", CHECKS.join(", ")));
            }
        }
        if let Some(n) = &self.nodes {
            parse_nodes(n)?;
        }
        Ok(())
    }

    fn enabled(&self, check: &str) -> bool {
        self.checks.as_ref().is_none_or(|l| l.iter().any(|c| c == check))
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.check_timeout_ms)
    }
}

/// `name=url,name=url` into pairs (the syntax of [`NodeSet::parse`](super::node::NodeSet::parse)).
fn parse_nodes(text: &str) -> Result<Vec<(String, String)>> {
    let set = super::node::NodeSet::parse(text, None).map_err(|e| match e {
        Error::Config(m) => Error::InvalidArgument(format!("health options: nodes: {m}")),
        other => other,
    })?;
    Ok(set.nodes.into_iter().map(|n| (n.name, n.url)).collect())
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// The state of one check after its latest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// Within its thresholds.
    Ok,
    Warning,
    Critical,
    /// Could not be measured (the server is down, or the check has not run yet).
    Unknown,
    /// Turned off by the options, or nothing to measure (no disk path known).
    Disabled,
}

impl CheckState {
    fn severity(self) -> Option<Severity> {
        match self {
            CheckState::Warning => Some(Severity::Warning),
            CheckState::Critical => Some(Severity::Critical),
            _ => None,
        }
    }
    fn rank(self) -> u8 {
        match self {
            CheckState::Disabled | CheckState::Ok => 0,
            CheckState::Unknown => 1,
            CheckState::Warning => 2,
            CheckState::Critical => 3,
        }
    }
}

/// One alert, as the callbacks receive it (and as its JSON form in the C and C++ APIs).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// The check (`connectivity`, `latency`, ...), or `role` / `replicas` for info alerts.
    pub check: String,
    /// `warning` or `critical`; for a `resolved` alert the severity it had; `info` for notices.
    pub severity: Severity,
    /// The check's state now (`ok` when resolved).
    pub state: CheckState,
    /// True when the check is back to `ok` after alerting.
    pub resolved: bool,
    /// True when this repeats an alert whose state has not changed (`repeat_interval_ms`).
    pub repeat: bool,
    pub message: String,
    /// The measured value (see the table in the module documentation), when there is one.
    pub value: Option<f64>,
    /// The threshold crossed, when there is one.
    pub threshold: Option<f64>,
    /// When the alert was raised (RFC 3339, UTC).
    pub at: String,
    /// Since when the check has been in this state.
    pub since: String,
}

/// Called for each alert; see the module documentation for the thread.
pub type AlertCallback = Arc<dyn Fn(&Alert) + Send + Sync>;

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What one check measured in one round.
struct Outcome {
    state: CheckState,
    value: Option<f64>,
    unit: &'static str,
    message: String,
    details: Value,
    warning: Option<f64>,
    critical: Option<f64>,
}

impl Outcome {
    fn new(state: CheckState, unit: &'static str, message: impl Into<String>) -> Self {
        Outcome {
            state,
            value: None,
            unit,
            message: message.into(),
            details: Value::Null,
            warning: None,
            critical: None,
        }
    }

    fn unknown(unit: &'static str, why: impl Into<String>) -> Self {
        Self::new(CheckState::Unknown, unit, why)
    }

    fn disabled(unit: &'static str, why: impl Into<String>) -> Self {
        Self::new(CheckState::Disabled, unit, why)
    }

    /// A value judged against `warning` and `critical` (higher is worse).
    fn above(unit: &'static str, value: f64, warning: f64, critical: f64, what: &str) -> Self {
        let state = if value >= critical {
            CheckState::Critical
        } else if value >= warning {
            CheckState::Warning
        } else {
            CheckState::Ok
        };
        let message = match state {
            CheckState::Critical => format!("{what} is {} {unit}, at or above the critical {critical}", fmt_num(value)),
            CheckState::Warning => format!("{what} is {} {unit}, at or above the warning {warning}", fmt_num(value)),
            _ => format!("{what} is {} {unit}", fmt_num(value)),
        };
        Outcome {
            state,
            value: Some(value),
            unit,
            message,
            details: Value::Null,
            warning: Some(warning),
            critical: Some(critical),
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    fn threshold(&self) -> Option<f64> {
        match self.state {
            CheckState::Critical => self.critical,
            CheckState::Warning => self.warning,
            _ => None,
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// The remembered state of one check.
#[derive(Clone)]
struct Record {
    state: CheckState,
    value: Option<f64>,
    unit: &'static str,
    message: String,
    details: Value,
    warning: Option<f64>,
    critical: Option<f64>,
    checked_at: Option<String>,
    since: Option<String>,
    /// The severity of the last alert sent and not resolved yet.
    alerted: Option<Severity>,
    last_sent: Option<Instant>,
    alerts: u64,
}

impl Record {
    fn new() -> Self {
        Record {
            state: CheckState::Unknown,
            value: None,
            unit: "",
            message: "not checked yet".into(),
            details: Value::Null,
            warning: None,
            critical: None,
            checked_at: None,
            since: None,
            alerted: None,
            last_sent: None,
            alerts: 0,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "state": self.state,
            "value": self.value,
            "unit": self.unit,
            "message": self.message,
            "warning": self.warning,
            "critical": self.critical,
            "checked_at": self.checked_at,
            "since": self.since,
            "alerting": self.alerted,
            "alerts": self.alerts,
            "details": self.details,
        })
    }
}

struct Status {
    records: Vec<(&'static str, Record)>,
    rounds: u64,
    last_round_at: Option<String>,
    last_round_ms: Option<f64>,
    /// The pool server's role as last seen (true: standby).
    in_recovery: Option<bool>,
    /// The replicas (application names) the primary listed last.
    replicas: Option<BTreeSet<String>>,
    /// The disk path found from the server's data_directory.
    auto_disk_path: Option<Option<String>>,
}

struct Shared {
    db: DatabaseManager,
    opts: HealthOptions,
    nodes: Vec<(String, String)>,
    /// The monitor's own connection; the lock also keeps rounds from overlapping.
    conn: tokio::sync::Mutex<Option<deadpool_postgres::ClientWrapper>>,
    status: Mutex<Status>,
    callbacks: Mutex<Vec<(u64, AlertCallback)>>,
    dispatch_lock: Mutex<()>,
    next_id: AtomicU64,
    running: Mutex<Option<Runner>>,
    closed: AtomicBool,
    callback_panics: AtomicU64,
}

struct Runner {
    stop: tokio::sync::watch::Sender<bool>,
    handle: std::thread::JoinHandle<()>,
}

thread_local! {
    /// Set while this thread runs an alert callback.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

fn in_callback() -> bool {
    IN_CALLBACK.with(|c| c.get())
}

/// Periodic health checks of a PostgreSQL setup; see the module documentation.
/// Dropping it stops the checks (as [`stop`](Self::stop)).
pub struct HealthMonitor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("options", &self.shared.opts)
            .field("running", &self.is_running())
            .finish()
    }
}

impl HealthMonitor {
    /// A monitor of `db` (no check runs until [`start`](Self::start) or
    /// [`check_now`](Self::check_now)). Fails only for invalid options.
    pub fn new(db: DatabaseManager, options: HealthOptions) -> Result<Self> {
        options.validate()?;
        let nodes = match &options.nodes {
            Some(n) => parse_nodes(n)?,
            None => Vec::new(),
        };
        let records = CHECKS.iter().map(|c| (*c, Record::new())).collect();
        Ok(HealthMonitor {
            shared: Arc::new(Shared {
                db,
                opts: options,
                nodes,
                conn: tokio::sync::Mutex::new(None),
                status: Mutex::new(Status {
                    records,
                    rounds: 0,
                    last_round_at: None,
                    last_round_ms: None,
                    in_recovery: None,
                    replicas: None,
                    auto_disk_path: None,
                }),
                callbacks: Mutex::new(Vec::new()),
                dispatch_lock: Mutex::new(()),
                next_id: AtomicU64::new(1),
                running: Mutex::new(None),
                closed: AtomicBool::new(false),
                callback_panics: AtomicU64::new(0),
            }),
        })
    }

    /// As [`new`](Self::new), with options as JSON (see [`HealthOptions::from_json`]).
    pub fn from_json(db: DatabaseManager, options_json: &str) -> Result<Self> {
        Self::new(db, HealthOptions::from_json(options_json)?)
    }

    /// The options in use.
    pub fn options(&self) -> &HealthOptions {
        &self.shared.opts
    }

    /// Calls `callback` for every alert (see the module documentation for when and on which
    /// thread). Returns an id for [`remove_callback`](Self::remove_callback).
    pub fn on_alert<F>(&self, callback: F) -> u64
    where
        F: Fn(&Alert) + Send + Sync + 'static,
    {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if !self.shared.closed.load(Ordering::Acquire) {
            self.shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).push((id, Arc::new(callback)));
        }
        id
    }

    /// Removes a callback; when this returns it is not running and will not run again (unless
    /// called from inside a callback). False for an unknown id.
    pub fn remove_callback(&self, id: u64) -> bool {
        let removed = {
            let mut cbs = self.shared.callbacks.lock().unwrap_or_else(|p| p.into_inner());
            let before = cbs.len();
            cbs.retain(|(i, _)| *i != id);
            cbs.len() != before
        };
        if removed && !in_callback() {
            drop(self.shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner()));
        }
        removed
    }

    /// Starts the periodic rounds on the thread `rsdb-health` (the first one right away).
    /// Does nothing when already running. `RSDB_ERR_STATE` after [`close`](Self::close).
    pub fn start(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::State("the health monitor is closed".into()));
        }
        let mut running = self.shared.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.as_ref() {
            if !r.handle.is_finished() && !*r.stop.borrow() {
                return Ok(());
            }
        }
        if let Some(old) = running.take() {
            // A runner told to stop (perhaps from a callback) that may still be finishing.
            let _ = old.stop.send(true);
            if !old.handle.is_finished() && std::thread::current().id() != old.handle.thread().id() {
                let _ = wait_finished(&old.handle, Duration::from_millis(self.shared.opts.stop_timeout_ms));
            }
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("rsdb-health".into())
            .spawn(move || run_loop(shared, rx))
            .map_err(|e| Error::Internal(format!("could not start the health monitor thread: {e}")))?;
        *running = Some(Runner { stop: tx, handle });
        Ok(())
    }

    /// Stops the periodic rounds: a round in progress is abandoned (its statements are
    /// dropped), and this waits up to `stop_timeout_ms` for the thread to end
    /// (`RSDB_ERR_TIMEOUT` when a callback is still running then; the thread ends after it).
    /// Called from a callback, it only asks the thread to stop. Idempotent.
    pub fn stop(&self) -> Result<()> {
        let runner = self.shared.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(runner) = runner else { return Ok(()) };
        let _ = runner.stop.send(true);
        if std::thread::current().id() == runner.handle.thread().id() {
            return Ok(());
        }
        let limit = Duration::from_millis(self.shared.opts.stop_timeout_ms);
        if wait_finished(&runner.handle, limit) {
            let _ = runner.handle.join();
            Ok(())
        } else {
            Err(Error::Timeout(format!(
                "the health monitor thread did not end within {limit:?} (a callback is still running)"
            )))
        }
    }

    /// True while the periodic rounds run.
    pub fn is_running(&self) -> bool {
        self.shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|r| !r.handle.is_finished() && !*r.stop.borrow())
    }

    /// Runs one round now (waiting for a periodic one in progress to finish first), delivers
    /// its alerts to the callbacks on this thread, and returns the status. A failing check is
    /// part of the status, not an error. `RSDB_ERR_STATE` from inside a callback or after
    /// [`close`](Self::close).
    pub async fn check_now(&self) -> Result<Value> {
        if in_callback() {
            return Err(Error::State("check_now cannot be called from an alert callback".into()));
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::State("the health monitor is closed".into()));
        }
        round(&self.shared).await;
        Ok(self.status())
    }

    /// The status: every check's latest value, state and times, and the overall state
    /// (`critical` if any check is, else `warning`, else `unknown` before the first round or
    /// while a check cannot measure, else `ok`).
    pub fn status(&self) -> Value {
        status_json(&self.shared, self.is_running())
    }

    /// Stops the rounds and drops every callback; later calls of `start` and `check_now` fail
    /// with `RSDB_ERR_STATE`. Idempotent.
    pub fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        let r = self.stop();
        let cbs: Vec<_> = self.shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        if !in_callback() {
            drop(self.shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner()));
        }
        drop(cbs);
        r
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn wait_finished(handle: &std::thread::JoinHandle<()>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn run_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval = Duration::from_millis(shared.opts.interval_ms);
    let work = async {
        loop {
            if *stop.borrow() {
                return;
            }
            let started = tokio::time::Instant::now();
            let one = std::panic::AssertUnwindSafe(round(&shared));
            tokio::select! {
                r = futures_util::FutureExt::catch_unwind(one) => {
                    if r.is_err() {
                        eprintln!("rootstream-db: a health round failed unexpectedly (caught); the monitor goes on");
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            let next = started + interval;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    };
    crate::runtime::runtime().block_on(work);
}

fn status_json(shared: &Shared, running: bool) -> Value {
    let st = shared.status.lock().unwrap_or_else(|p| p.into_inner());
    let mut checks = Map::new();
    let mut worst = 0u8;
    let mut any = false;
    for (name, r) in &st.records {
        checks.insert((*name).to_string(), r.to_json());
        if r.state != CheckState::Disabled {
            any = true;
            worst = worst.max(r.state.rank());
        }
    }
    let overall = if st.rounds == 0 || !any {
        "unknown"
    } else {
        match worst {
            0 => "ok",
            1 => "unknown",
            2 => "warning",
            _ => "critical",
        }
    };
    json!({
        "overall": overall,
        "running": running,
        "rounds": st.rounds,
        "last_round_at": st.last_round_at,
        "last_round_ms": st.last_round_ms,
        "callback_panics": shared.callback_panics.load(Ordering::Relaxed),
        "checks": checks,
    })
}

async fn bounded<T, F>(limit: Duration, what: &str, fut: F) -> std::result::Result<T, String>
where
    F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", Error::from(e))),
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
    }
}

/// The monitor's connection, taken out of the pool once and kept while it works.
async fn own_connection(
    shared: &Shared,
    slot: &mut Option<deadpool_postgres::ClientWrapper>,
) -> std::result::Result<(), String> {
    if slot.as_ref().is_some_and(|c| !c.is_closed()) {
        return Ok(());
    }
    *slot = None;
    // The pool waits at most its acquire/connect timeouts; ours bounds it too.
    let limit = shared.opts.timeout().max(Duration::from_millis(100));
    let obj = match tokio::time::timeout(limit, shared.db.acquire()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no connection within {limit:?}")),
    };
    let client = deadpool_postgres::Object::take(obj);
    bounded(
        limit,
        "set application_name",
        client.batch_execute(&format!("SET application_name = '{APPLICATION_NAME}'")),
    )
    .await?;
    *slot = Some(client);
    Ok(())
}

struct Probe {
    latency_ms: f64,
    in_recovery: bool,
    server_version: String,
}

async fn probe(client: &Client, limit: Duration) -> std::result::Result<Probe, String> {
    let started = Instant::now();
    let row =
        bounded(limit, "probe", client.query_one("SELECT pg_is_in_recovery(), current_setting('server_version')", &[]))
            .await?;
    Ok(Probe {
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        in_recovery: row.get(0),
        server_version: row.get(1),
    })
}

/// Replication as seen from one server: `(replicas, bytes, seconds, rows)`.
struct ReplicationView {
    replicas: BTreeSet<String>,
    max_bytes: f64,
    max_seconds: f64,
    rows: Vec<Value>,
}

const PRIMARY_REPLICATION_SQL: &str = "SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''), \
     coalesce(state, ''), coalesce(sync_state, ''), \
     coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'))::float8, \
     coalesce(extract(epoch FROM replay_lag), 0)::float8 \
     FROM pg_stat_replication ORDER BY 1";

const REPLICA_LAG_SQL: &str =
    "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8, \
     CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
          ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8, \
     (SELECT coalesce(status, '') FROM pg_stat_wal_receiver LIMIT 1)";

async fn primary_view(client: &Client, limit: Duration) -> std::result::Result<ReplicationView, String> {
    let rows = bounded(limit, "pg_stat_replication", client.query(PRIMARY_REPLICATION_SQL, &[])).await?;
    let mut v = ReplicationView { replicas: BTreeSet::new(), max_bytes: 0.0, max_seconds: 0.0, rows: Vec::new() };
    for r in rows {
        let name: String = r.get(0);
        let bytes: f64 = r.get(4);
        let seconds: f64 = r.get(5);
        v.max_bytes = v.max_bytes.max(bytes);
        v.max_seconds = v.max_seconds.max(seconds);
        v.rows.push(json!({
            "application_name": name,
            "client_addr": r.get::<_, String>(1),
            "state": r.get::<_, String>(2),
            "sync_state": r.get::<_, String>(3),
            "lag_bytes": bytes,
            "replay_lag_s": seconds,
        }));
        v.replicas.insert(name);
    }
    Ok(v)
}

async fn replica_lag(client: &Client, limit: Duration) -> std::result::Result<(f64, f64, String), String> {
    let r = bounded(limit, "replica lag", client.query_one(REPLICA_LAG_SQL, &[])).await?;
    Ok((r.get(0), r.get(1), r.get::<_, Option<String>>(2).unwrap_or_default()))
}

/// One probed node of the `nodes` option.
struct NodeSeen {
    name: String,
    reachable: bool,
    in_recovery: bool,
    latency_ms: f64,
    error: Option<String>,
    primary_view: Option<ReplicationView>,
    replica_lag: Option<(f64, f64, String)>,
}

async fn probe_node(name: String, url: String, limit: Duration) -> NodeSeen {
    let mut seen = NodeSeen {
        name,
        reachable: false,
        in_recovery: false,
        latency_ms: 0.0,
        error: None,
        primary_view: None,
        replica_lag: None,
    };
    let work = async {
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        cfg.application_name(APPLICATION_NAME);
        cfg.connect_timeout(limit);
        let (client, conn) = bounded(limit, "connect", cfg.connect(NoTls)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let out = async {
            let p = probe(&client, limit).await?;
            let (pv, rl) = if p.in_recovery {
                (None, Some(replica_lag(&client, limit).await?))
            } else {
                (Some(primary_view(&client, limit).await?), None)
            };
            Ok::<_, String>((p, pv, rl))
        }
        .await;
        drop(client);
        task.abort();
        out
    };
    match work.await {
        Ok((p, pv, rl)) => {
            seen.reachable = true;
            seen.in_recovery = p.in_recovery;
            seen.latency_ms = p.latency_ms;
            seen.primary_view = pv;
            seen.replica_lag = rl;
        }
        Err(e) => seen.error = Some(e),
    }
    seen
}

/// The file system of `path`: `(free bytes for unprivileged users, total bytes)`.
pub fn disk_space(path: &str) -> Result<(u64, u64)> {
    let c = std::ffi::CString::new(path).map_err(|_| Error::invalid("disk_path contains a NUL byte"))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a valid out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(Error::Io(format!("statvfs {path}: {}", std::io::Error::last_os_error())));
    }
    let frsize = s.f_frsize as u64;
    Ok((s.f_bavail as u64 * frsize, s.f_blocks as u64 * frsize))
}

fn disk_outcome(opts: &HealthOptions, path: &str) -> Outcome {
    let (free, total) = match disk_space(path) {
        Ok(v) => v,
        Err(e) => return Outcome::unknown("%", e.to_string()).with_details(json!({ "path": path })),
    };
    let pct = if total == 0 { 100.0 } else { free as f64 * 100.0 / total as f64 };
    let crit = pct <= opts.disk_free_critical_pct
        || (opts.disk_free_critical_bytes > 0 && free <= opts.disk_free_critical_bytes);
    let warn =
        pct <= opts.disk_free_warning_pct || (opts.disk_free_warning_bytes > 0 && free <= opts.disk_free_warning_bytes);
    let state = if crit {
        CheckState::Critical
    } else if warn {
        CheckState::Warning
    } else {
        CheckState::Ok
    };
    let gib = |b: u64| b as f64 / (1024.0 * 1024.0 * 1024.0);
    let message = format!("{path}: {:.1} % free ({:.2} GiB of {:.2} GiB)", pct, gib(free), gib(total));
    let message = match state {
        CheckState::Critical => format!("{message}, at or below the critical limit"),
        CheckState::Warning => format!("{message}, at or below the warning limit"),
        _ => message,
    };
    Outcome {
        state,
        value: Some((pct * 100.0).round() / 100.0),
        unit: "%",
        message,
        details: json!({ "path": path, "free_bytes": free, "total_bytes": total,
            "warning_bytes": opts.disk_free_warning_bytes, "critical_bytes": opts.disk_free_critical_bytes }),
        warning: Some(opts.disk_free_warning_pct),
        critical: Some(opts.disk_free_critical_pct),
    }
}

fn pool_outcome(opts: &HealthOptions, s: PoolStats) -> Outcome {
    let pct = if s.max_size == 0 { 0.0 } else { s.in_use as f64 * 100.0 / s.max_size as f64 };
    let mut o = Outcome::above("%", pct, opts.pool_warning_pct, opts.pool_critical_pct, "pool use");
    if opts.pool_waiting_critical > 0 && s.waiting as u64 >= opts.pool_waiting_critical {
        o.state = CheckState::Critical;
        o.message = format!("{} callers wait for a connection ({} of {} in use)", s.waiting, s.in_use, s.max_size);
    } else {
        o.message = format!("{} of {} connections in use, {} waiting", s.in_use, s.max_size, s.waiting);
    }
    o.with_details(serde_json::to_value(s).unwrap_or(Value::Null))
}

const LONG_QUERIES_SQL: &str = "SELECT pid, coalesce(usename::text, ''), coalesce(datname::text, ''), \
     coalesce(application_name, ''), coalesce(state, ''), \
     extract(epoch FROM now() - query_start)::float8, left(coalesce(query, ''), 200), \
     count(*) OVER ()::int8 \
     FROM pg_stat_activity \
     WHERE state IS NOT NULL AND state <> 'idle' AND backend_type = 'client backend' \
       AND pid <> pg_backend_pid() AND query_start IS NOT NULL \
     ORDER BY query_start LIMIT 5";

async fn long_queries(opts: &HealthOptions, client: &Client) -> Outcome {
    let rows = match bounded(opts.timeout(), "pg_stat_activity", client.query(LONG_QUERIES_SQL, &[])).await {
        Ok(r) => r,
        Err(e) => return Outcome::unknown("s", e),
    };
    let mut longest = 0.0f64;
    let mut active = 0i64;
    let mut list = Vec::new();
    for r in &rows {
        let secs: f64 = r.get(5);
        longest = longest.max(secs);
        active = r.get(7);
        list.push(json!({
            "pid": r.get::<_, i32>(0),
            "user": r.get::<_, String>(1),
            "database": r.get::<_, String>(2),
            "application_name": r.get::<_, String>(3),
            "state": r.get::<_, String>(4),
            "seconds": (secs * 1000.0).round() / 1000.0,
            "query": r.get::<_, String>(6),
        }));
    }
    let longest = (longest * 1000.0).round() / 1000.0;
    let mut o = Outcome::above(
        "s",
        longest,
        opts.long_query_warning_s,
        opts.long_query_critical_s,
        "the longest running statement",
    );
    if rows.is_empty() {
        o.message = "no statement running".into();
    } else if let Some(first) = list.first() {
        if o.state != CheckState::Ok {
            o.message = format!(
                "{} (pid {}: {})",
                o.message,
                first["pid"],
                first["query"].as_str().unwrap_or_default().chars().take(80).collect::<String>()
            );
        }
    }
    o.with_details(json!({ "active": active, "longest": list }))
}

/// Runs every check once, records the outcomes and delivers the alerts.
async fn round(shared: &Shared) {
    let opts = &shared.opts;
    let limit = opts.timeout();
    let mut conn = shared.conn.lock().await;
    let started = Instant::now();
    let mut outcomes: Vec<(&'static str, Outcome)> = Vec::new();
    let mut notices: Vec<Alert> = Vec::new();

    // connectivity and latency, on the monitor's own connection.
    let probed = match own_connection(shared, &mut conn).await {
        Ok(()) => match probe(conn.as_deref().expect("connected"), limit).await {
            Ok(p) => Ok(p),
            Err(e) => {
                *conn = None;
                Err(e)
            }
        },
        Err(e) => Err(e),
    };
    let failures = {
        let st = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        let r = &st.records.iter().find(|(n, _)| *n == "connectivity").expect("connectivity").1;
        r.value.unwrap_or(0.0)
    };
    let client = match &probed {
        Ok(_) => conn.as_deref(),
        Err(_) => None,
    };
    match &probed {
        Ok(p) => {
            let mut o = Outcome::new(CheckState::Ok, "failures", format!("PostgreSQL {} answers", p.server_version));
            o.value = Some(0.0);
            o.details = json!({ "server_version": p.server_version, "in_recovery": p.in_recovery });
            outcomes.push(("connectivity", o));
            outcomes.push((
                "latency",
                Outcome::above(
                    "ms",
                    (p.latency_ms * 1000.0).round() / 1000.0,
                    opts.latency_warning_ms,
                    opts.latency_critical_ms,
                    "the probe round trip",
                ),
            ));
        }
        Err(e) => {
            let n = failures + 1.0;
            let state =
                if n >= opts.connectivity_critical_after as f64 { CheckState::Critical } else { CheckState::Warning };
            let mut o = Outcome::new(state, "failures", format!("the database does not answer: {e}"));
            o.value = Some(n);
            o.warning = Some(1.0);
            o.critical = Some(opts.connectivity_critical_after as f64);
            outcomes.push(("connectivity", o));
            outcomes.push(("latency", Outcome::unknown("ms", "the database does not answer")));
        }
    }

    // The pool server's role, for an info notice when it changes.
    if let Ok(p) = &probed {
        let mut st = shared.status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = st.in_recovery {
            if before != p.in_recovery {
                notices.push(notice(
                    "role",
                    if p.in_recovery {
                        "the database server is now a standby (in recovery)"
                    } else {
                        "the database server is now a primary"
                    },
                ));
            }
        }
        st.in_recovery = Some(p.in_recovery);
    }

    // Replication lag: from the nodes when configured, else from the pool's server.
    let node_views = if shared.nodes.is_empty() {
        None
    } else {
        let probes = shared.nodes.iter().map(|(n, u)| probe_node(n.clone(), u.clone(), limit));
        Some(futures_util::future::join_all(probes).await)
    };
    let (rep_bytes, rep_secs, replicas) =
        replication_outcomes(opts, client, probed.as_ref().ok(), node_views.as_deref()).await;
    outcomes.push(("replication_bytes", rep_bytes));
    outcomes.push(("replication_seconds", rep_secs));
    if let Some(set) = replicas {
        let mut st = shared.status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = &st.replicas {
            if *before != set {
                let gone: Vec<_> = before.difference(&set).cloned().collect();
                let new: Vec<_> = set.difference(before).cloned().collect();
                let mut m = String::from("the replicas changed:");
                if !new.is_empty() {
                    m.push_str(&format!(" connected {}", new.join(", ")));
                }
                if !gone.is_empty() {
                    m.push_str(&format!(" gone {}", gone.join(", ")));
                }
                notices.push(notice("replicas", &m));
            }
        }
        st.replicas = Some(set);
    }

    // disk
    let disk_path = match &opts.disk_path {
        Some(p) => Some(p.clone()),
        None => {
            let known = shared.status.lock().unwrap_or_else(|e| e.into_inner()).auto_disk_path.clone();
            match (known, client) {
                (Some(p), _) => p,
                (None, Some(c)) => {
                    let found = match bounded(
                        limit,
                        "data_directory",
                        c.query_one("SELECT current_setting('data_directory')", &[]),
                    )
                    .await
                    {
                        Ok(row) => Some(row.get::<_, String>(0)).filter(|p| disk_space(p).is_ok()),
                        Err(_) => None,
                    };
                    shared.status.lock().unwrap_or_else(|e| e.into_inner()).auto_disk_path = Some(found.clone());
                    found
                }
                (None, None) => None,
            }
        }
    };
    outcomes.push((
        "disk",
        match disk_path {
            Some(p) => disk_outcome(opts, &p),
            None if client.is_none() && opts.disk_path.is_none() => {
                Outcome::unknown("%", "the database does not answer (its data_directory is the default path)")
            }
            None => Outcome::disabled("%", "no disk_path, and the server's data_directory is not on this machine"),
        },
    ));

    // pool
    outcomes.push(("pool", pool_outcome(opts, shared.db.stats())));

    // long queries
    outcomes.push((
        "long_queries",
        match client {
            Some(c) => long_queries(opts, c).await,
            None => Outcome::unknown("s", "the database does not answer"),
        },
    ));

    // nodes
    outcomes.push((
        "nodes",
        match &node_views {
            None => Outcome::disabled("nodes", "no nodes configured"),
            Some(views) => nodes_outcome(views),
        },
    ));

    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let alerts = record(shared, outcomes, notices, elapsed_ms);
    // Deliver in order: take the dispatch lock before letting the next round in.
    let guard = shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner());
    drop(conn);
    dispatch(shared, &alerts);
    drop(guard);
}

fn notice(check: &str, message: &str) -> Alert {
    let at = now_text();
    Alert {
        check: check.into(),
        severity: Severity::Info,
        state: CheckState::Ok,
        resolved: false,
        repeat: false,
        message: message.into(),
        value: None,
        threshold: None,
        since: at.clone(),
        at,
    }
}

async fn replication_outcomes(
    opts: &HealthOptions,
    client: Option<&Client>,
    probed: Option<&Probe>,
    nodes: Option<&[NodeSeen]>,
) -> (Outcome, Outcome, Option<BTreeSet<String>>) {
    let limit = opts.timeout();
    let judge = |bytes: f64, secs: f64, details: Value| {
        (
            Outcome::above(
                "bytes",
                bytes,
                opts.replication_lag_warning_bytes,
                opts.replication_lag_critical_bytes,
                "the largest replica lag",
            )
            .with_details(details.clone()),
            Outcome::above(
                "s",
                (secs * 1000.0).round() / 1000.0,
                opts.replication_lag_warning_s,
                opts.replication_lag_critical_s,
                "the largest replica lag",
            )
            .with_details(details),
        )
    };
    if let Some(nodes) = nodes {
        let mut bytes = 0.0f64;
        let mut secs = 0.0f64;
        let mut per_node = Vec::new();
        let mut replicas = None;
        let mut measured = false;
        for n in nodes {
            if let Some(v) = &n.primary_view {
                measured = true;
                bytes = bytes.max(v.max_bytes);
                secs = secs.max(v.max_seconds);
                per_node.push(json!({ "node": n.name, "role": "primary", "replicas": v.rows }));
                replicas = Some(v.replicas.clone());
            } else if let Some((b, s, receiver)) = &n.replica_lag {
                measured = true;
                bytes = bytes.max(*b);
                secs = secs.max(*s);
                per_node.push(json!({ "node": n.name, "role": "replica", "replay_backlog_bytes": b,
                    "replay_lag_s": s, "wal_receiver": receiver }));
            } else {
                per_node.push(json!({ "node": n.name, "role": "down", "error": n.error }));
            }
        }
        if !measured {
            return (Outcome::unknown("bytes", "no node answers"), Outcome::unknown("s", "no node answers"), None);
        }
        let (a, b) = judge(bytes, secs, json!({ "nodes": per_node }));
        return (a, b, replicas);
    }
    let (Some(c), Some(p)) = (client, probed) else {
        return (
            Outcome::unknown("bytes", "the database does not answer"),
            Outcome::unknown("s", "the database does not answer"),
            None,
        );
    };
    if p.in_recovery {
        match replica_lag(c, limit).await {
            Ok((b, s, receiver)) => {
                let (x, y) = judge(
                    b,
                    s,
                    json!({ "role": "replica", "replay_backlog_bytes": b, "replay_lag_s": s,
                    "wal_receiver": receiver }),
                );
                (x, y, None)
            }
            Err(e) => (Outcome::unknown("bytes", e.clone()), Outcome::unknown("s", e), None),
        }
    } else {
        match primary_view(c, limit).await {
            Ok(v) if v.rows.is_empty() => {
                let (mut a, mut b) = judge(0.0, 0.0, json!({ "role": "primary", "replicas": [] }));
                a.message = "no replica is connected".into();
                b.message = "no replica is connected".into();
                (a, b, Some(v.replicas))
            }
            Ok(v) => {
                let (x, y) = judge(v.max_bytes, v.max_seconds, json!({ "role": "primary", "replicas": v.rows }));
                (x, y, Some(v.replicas))
            }
            Err(e) => (Outcome::unknown("bytes", e.clone()), Outcome::unknown("s", e), None),
        }
    }
}

fn nodes_outcome(views: &[NodeSeen]) -> Outcome {
    let down: Vec<&NodeSeen> = views.iter().filter(|n| !n.reachable).collect();
    let primaries: Vec<&str> =
        views.iter().filter(|n| n.reachable && !n.in_recovery).map(|n| n.name.as_str()).collect();
    let details = json!({
        "nodes": views.iter().map(|n| json!({
            "node": n.name,
            "reachable": n.reachable,
            "role": if !n.reachable { "down" } else if n.in_recovery { "replica" } else { "primary" },
            "latency_ms": (n.latency_ms * 1000.0).round() / 1000.0,
            "error": n.error,
        })).collect::<Vec<_>>(),
        "primaries": primaries,
    });
    let names = |l: &[&NodeSeen]| l.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    let (state, message) = if primaries.len() > 1 {
        (CheckState::Critical, format!("more than one node accepts writes: {}", primaries.join(", ")))
    } else if primaries.is_empty() {
        (CheckState::Critical, format!("no node is a reachable primary (down: {})", names(&down)))
    } else if !down.is_empty() {
        (CheckState::Warning, format!("{} of {} nodes do not answer: {}", down.len(), views.len(), names(&down)))
    } else {
        (CheckState::Ok, format!("{} nodes answer, primary {}", views.len(), primaries[0]))
    };
    let mut o = Outcome::new(state, "nodes", message);
    o.value = Some(down.len() as f64);
    o.warning = Some(1.0);
    o.details = details;
    o
}

/// Stores the outcomes and works out which alerts are due.
fn record(shared: &Shared, outcomes: Vec<(&'static str, Outcome)>, notices: Vec<Alert>, elapsed_ms: f64) -> Vec<Alert> {
    let opts = &shared.opts;
    let at = now_text();
    let repeat = Duration::from_millis(opts.repeat_interval_ms);
    let mut alerts = notices;
    let mut st = shared.status.lock().unwrap_or_else(|p| p.into_inner());
    st.rounds += 1;
    st.last_round_at = Some(at.clone());
    st.last_round_ms = Some((elapsed_ms * 1000.0).round() / 1000.0);
    for (name, mut o) in outcomes {
        if !opts.enabled(name) {
            o = Outcome::disabled(o.unit, "turned off in the options");
        }
        let r = &mut st.records.iter_mut().find(|(n, _)| *n == name).expect("every check has a record").1;
        if r.state != o.state || r.since.is_none() {
            r.since = Some(at.clone());
        }
        r.state = o.state;
        r.value = o.value;
        r.unit = o.unit;
        r.message = o.message.clone();
        r.details = o.details.clone();
        r.warning = o.warning;
        r.critical = o.critical;
        r.checked_at = Some(at.clone());
        let make = |severity: Severity, resolved: bool, again: bool, since: &str| Alert {
            check: name.to_string(),
            severity,
            state: o.state,
            resolved,
            repeat: again,
            message: o.message.clone(),
            value: o.value,
            threshold: o.threshold(),
            at: at.clone(),
            since: since.to_string(),
        };
        let since = r.since.clone().unwrap_or_default();
        match (o.state, r.alerted) {
            (CheckState::Warning | CheckState::Critical, alerted) => {
                let sev = o.state.severity().expect("alerting state");
                if alerted != Some(sev) {
                    alerts.push(make(sev, false, false, &since));
                    r.alerted = Some(sev);
                    r.last_sent = Some(Instant::now());
                    r.alerts += 1;
                } else if !repeat.is_zero() && r.last_sent.is_some_and(|t| t.elapsed() >= repeat) {
                    alerts.push(make(sev, false, true, &since));
                    r.last_sent = Some(Instant::now());
                    r.alerts += 1;
                }
            }
            (CheckState::Ok | CheckState::Disabled, Some(prev)) => {
                alerts.push(make(prev, true, false, &since));
                r.alerted = None;
                r.last_sent = None;
            }
            // Unknown keeps the alert open: it is resolved only by a measurement within limits.
            _ => {}
        }
    }
    alerts
}

fn dispatch(shared: &Shared, alerts: &[Alert]) {
    if alerts.is_empty() {
        return;
    }
    let cbs: Vec<(u64, AlertCallback)> = shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for alert in alerts {
        for (id, cb) in &cbs {
            if !shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(i, _)| i == id) {
                continue;
            }
            IN_CALLBACK.with(|c| c.set(true));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(alert)));
            IN_CALLBACK.with(|c| c.set(false));
            if let Err(p) = r {
                shared.callback_panics.fetch_add(1, Ordering::Relaxed);
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                eprintln!("rootstream-db: a health alert callback panicked (caught): {what}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_refuse_unknown_keys_and_bad_orders() {
        let o = HealthOptions::from_json(r#"{"interval_ms": 250, "long_query_warning_s": 1.5}"#).unwrap();
        assert_eq!(o.interval_ms, 250);
        assert_eq!(o.long_query_warning_s, 1.5);
        assert_eq!(o.latency_critical_ms, HealthOptions::default().latency_critical_ms);
        assert!(matches!(HealthOptions::from_json("{"), Err(Error::Json(_))));
        assert!(matches!(HealthOptions::from_json("[]"), Err(Error::Json(_))));
        assert!(matches!(HealthOptions::from_json(r#"{"nope": 1}"#), Err(Error::InvalidArgument(_))));
        match HealthOptions::from_json(r#"{"interval_ms": "x"}"#) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("interval_ms"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            HealthOptions::from_json(r#"{"latency_warning_ms": 10, "latency_critical_ms": 5}"#),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            HealthOptions::from_json(r#"{"disk_free_warning_pct": 5, "disk_free_critical_pct": 10}"#),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(HealthOptions::from_json(r#"{"checks": ["pool", "bogus"]}"#), Err(Error::InvalidArgument(_))));
        assert!(matches!(HealthOptions::from_json(r#"{"nodes": "p1"}"#), Err(Error::InvalidArgument(_))));
        assert!(HealthOptions::from_json(r#"{"nodes": "p1=postgres://h/db, p2=postgres://h:2/db"}"#).is_ok());
        assert!(matches!(HealthOptions::from_json(r#"{"interval_ms": 1}"#), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn thresholds_judge_values() {
        assert_eq!(Outcome::above("ms", 5.0, 10.0, 20.0, "x").state, CheckState::Ok);
        assert_eq!(Outcome::above("ms", 10.0, 10.0, 20.0, "x").state, CheckState::Warning);
        assert_eq!(Outcome::above("ms", 25.0, 10.0, 20.0, "x").state, CheckState::Critical);
        let o = HealthOptions::default();
        let s = |in_use, waiting| PoolStats { max_size: 10, size: 10, available: 10 - in_use, in_use, waiting };
        assert_eq!(pool_outcome(&o, s(2, 0)).state, CheckState::Ok);
        assert_eq!(pool_outcome(&o, s(8, 0)).state, CheckState::Warning);
        assert_eq!(pool_outcome(&o, s(10, 0)).state, CheckState::Critical);
        assert_eq!(pool_outcome(&o, s(3, 1)).state, CheckState::Critical);
    }

    #[test]
    fn disk_space_of_the_temp_dir_and_a_missing_path() {
        let (free, total) = disk_space(std::env::temp_dir().to_str().unwrap()).unwrap();
        assert!(total > 0 && free <= total);
        let o = disk_outcome(&HealthOptions::default(), "/no/such/path/at/all");
        assert_eq!(o.state, CheckState::Unknown);
        let all = HealthOptions { disk_free_warning_pct: 100.0, disk_free_critical_pct: 100.0, ..Default::default() };
        assert_eq!(disk_outcome(&all, "/").state, CheckState::Critical);
    }
}
