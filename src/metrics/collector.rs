//! MetricsCollector: turns stream, system, database and cache state into points, once or
//! periodically on a background thread. A collector that fails is reported (callback, counter,
//! last error) and never stops the others.
//!
//! Measurements (tags; fields):
//! - `stream` (`stream_id`; `viewers`i, `bitrate_kbps`, `fps`, `width`i, `height`i,
//!   `duration_seconds`, `bytes_sent`i)
//! - `system` (`host`; `cpu_usage_percent`, `memory_total_bytes`i, `memory_available_bytes`i,
//!   `memory_used_percent`, `disk_total_bytes`i, `disk_free_bytes`i, `net_rx_bytes`i,
//!   `net_tx_bytes`i, `process_rss_bytes`i)
//! - `database` (`database`; `connections`i, `query_seconds`, `size_bytes`i, `pool_size`i,
//!   `pool_in_use`i, `pool_idle`i, `pool_waiting`i, `pool_max`i)
//! - `cache` (`server`; `hit_rate`, `keyspace_hits`i, `keyspace_misses`i, `ops_per_second`i,
//!   `total_commands`i, `connected_clients`i, `used_memory_bytes`i)

use super::line::{now_ns, Point};
use super::writer::MetricsWriter;
use crate::cache::RedisClient;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One source of points.
pub trait Collector: Send + Sync {
    fn name(&self) -> &str;
    fn collect(&self) -> Result<Vec<Point>>;
}

/// The state of one stream, as the streaming code reports it.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct StreamMetrics {
    pub stream_id: String,
    pub viewers: i64,
    pub bitrate_kbps: f64,
    pub fps: f64,
    pub width: i64,
    pub height: i64,
    pub duration_seconds: f64,
    pub bytes_sent: i64,
}

impl StreamMetrics {
    /// The `stream` point of this state at `timestamp_ns`.
    pub fn to_point(&self, timestamp_ns: i64) -> Point {
        Point::new("stream")
            .tag("stream_id", &self.stream_id)
            .field("viewers", self.viewers)
            .field("bitrate_kbps", self.bitrate_kbps)
            .field("fps", self.fps)
            .field("width", self.width)
            .field("height", self.height)
            .field("duration_seconds", self.duration_seconds)
            .field("bytes_sent", self.bytes_sent)
            .timestamp_ns(timestamp_ns)
    }
}

/// Holds the latest state of every live stream; collects one `stream` point per stream.
#[derive(Default)]
pub struct StreamCollector {
    streams: Mutex<BTreeMap<String, StreamMetrics>>,
}

impl StreamCollector {
    pub fn new() -> StreamCollector {
        StreamCollector::default()
    }

    pub fn update(&self, m: StreamMetrics) -> Result<()> {
        if m.stream_id.is_empty() {
            return Err(Error::InvalidArgument("stream_id is empty".into()));
        }
        // Checked now rather than at collection time.
        m.to_point(0).to_line(super::line::Precision::Nanoseconds)?;
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).insert(m.stream_id.clone(), m);
        Ok(())
    }

    pub fn remove(&self, stream_id: &str) -> bool {
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).remove(stream_id).is_some()
    }
}

impl Collector for StreamCollector {
    fn name(&self) -> &str {
        "stream"
    }

    fn collect(&self) -> Result<Vec<Point>> {
        let t = now_ns();
        Ok(self.streams.lock().unwrap_or_else(|p| p.into_inner()).values().map(|m| m.to_point(t)).collect())
    }
}

/// CPU, memory, disk and network from `/proc` (and `statvfs` of one path).
pub struct SystemCollector {
    host: String,
    disk_path: String,
    proc_root: String,
    last_cpu: Mutex<Option<(u64, u64)>>,
}

impl SystemCollector {
    /// `disk_path` is the file system whose size is reported (e.g. the data directory).
    pub fn new(disk_path: &str) -> SystemCollector {
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        SystemCollector {
            host: if host.is_empty() { "localhost".into() } else { host },
            disk_path: disk_path.to_owned(),
            proc_root: "/proc".into(),
            last_cpu: Mutex::new(None),
        }
    }

    /// Reads another `/proc` (tests use this to make the collector fail).
    pub fn with_proc_root(mut self, root: &str) -> SystemCollector {
        self.proc_root = root.to_owned();
        self
    }

    fn read(&self, file: &str) -> Result<String> {
        let p = format!("{}/{file}", self.proc_root);
        std::fs::read_to_string(&p).map_err(|e| Error::Io(format!("{p}: {e}")))
    }
}

/// (busy, total) jiffies of the `cpu` line of /proc/stat.
pub fn parse_proc_stat(text: &str) -> Result<(u64, u64)> {
    let line =
        text.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| Error::Io("no cpu line in /proc/stat".into()))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return Err(Error::Io("short cpu line in /proc/stat".into()));
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// A `/proc/meminfo`-style key in bytes.
pub fn parse_kb_field(text: &str, key: &str) -> Option<i64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse::<i64>().ok().map(|kb| kb * 1024)
    })
}

/// Received and sent bytes over all interfaces but `lo`, from /proc/net/dev.
pub fn parse_net_dev(text: &str) -> (i64, i64) {
    let mut rx = 0i64;
    let mut tx = 0i64;
    for l in text.lines().skip(2) {
        let Some((iface, rest)) = l.split_once(':') else { continue };
        if iface.trim() == "lo" {
            continue;
        }
        let v: Vec<i64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if v.len() >= 9 {
            rx += v[0];
            tx += v[8];
        }
    }
    (rx, tx)
}

fn statvfs(path: &str) -> Result<(i64, i64)> {
    let c = std::ffi::CString::new(path).map_err(|_| Error::InvalidArgument("disk path holds a NUL".into()))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated string and s a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(Error::Io(format!("statvfs {path}: {}", std::io::Error::last_os_error())));
    }
    let f = s.f_frsize as i64;
    Ok((s.f_blocks as i64 * f, s.f_bavail as i64 * f))
}

impl Collector for SystemCollector {
    fn name(&self) -> &str {
        "system"
    }

    fn collect(&self) -> Result<Vec<Point>> {
        let (busy, total) = parse_proc_stat(&self.read("stat")?)?;
        let cpu = {
            let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
            let (b0, t0) = last.unwrap_or((0, 0));
            *last = Some((busy, total));
            let dt = total.saturating_sub(t0);
            if dt == 0 {
                0.0
            } else {
                busy.saturating_sub(b0) as f64 * 100.0 / dt as f64
            }
        };
        let mem = self.read("meminfo")?;
        let mem_total = parse_kb_field(&mem, "MemTotal").ok_or_else(|| Error::Io("no MemTotal in meminfo".into()))?;
        let mem_avail = parse_kb_field(&mem, "MemAvailable").unwrap_or(0);
        let (rx, tx) = parse_net_dev(&self.read("net/dev")?);
        let rss = parse_kb_field(&self.read("self/status")?, "VmRSS").unwrap_or(0);
        let (disk_total, disk_free) = statvfs(&self.disk_path)?;
        let used_pct = if mem_total > 0 { (mem_total - mem_avail) as f64 * 100.0 / mem_total as f64 } else { 0.0 };
        Ok(vec![Point::new("system")
            .tag("host", &self.host)
            .field("cpu_usage_percent", cpu)
            .field("memory_total_bytes", mem_total)
            .field("memory_available_bytes", mem_avail)
            .field("memory_used_percent", used_pct)
            .field("disk_total_bytes", disk_total)
            .field("disk_free_bytes", disk_free)
            .field("net_rx_bytes", rx)
            .field("net_tx_bytes", tx)
            .field("process_rss_bytes", rss)
            .timestamp_ns(now_ns())])
    }
}

/// Connections, query time, size and pool statistics of one PostgreSQL database.
pub struct DatabaseCollector {
    db: DatabaseManager,
}

impl DatabaseCollector {
    pub fn new(db: DatabaseManager) -> DatabaseCollector {
        DatabaseCollector { db }
    }
}

impl Collector for DatabaseCollector {
    fn name(&self) -> &str {
        "database"
    }

    fn collect(&self) -> Result<Vec<Point>> {
        let db = self.db.clone();
        let (name, conns, size, ms) = crate::runtime::block_on(async move {
            let t = Instant::now();
            let row = db
                .query_opt(
                    "SELECT current_database()::text, \
                     (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())::bigint, \
                     pg_database_size(current_database())::bigint",
                    &[],
                )
                .await?
                .ok_or_else(|| Error::Query("no row".into()))?;
            let ms = t.elapsed().as_secs_f64();
            Ok::<_, Error>((row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, i64>(2), ms))
        })?;
        let p = self.db.stats();
        Ok(vec![Point::new("database")
            .tag("database", name)
            .field("connections", conns)
            .field("query_seconds", ms)
            .field("size_bytes", size)
            .field("pool_size", p.size as i64)
            .field("pool_in_use", p.in_use as i64)
            .field("pool_idle", p.available as i64)
            .field("pool_waiting", p.waiting as i64)
            .field("pool_max", p.max_size as i64)
            .timestamp_ns(now_ns())])
    }
}

/// Hit rate and operations from Redis `INFO`.
pub struct CacheCollector {
    redis: RedisClient,
    server: String,
}

impl CacheCollector {
    /// `server` names the Redis in the `server` tag.
    pub fn new(redis: RedisClient, server: &str) -> CacheCollector {
        CacheCollector { redis, server: server.to_owned() }
    }
}

/// `key:value` lines of Redis `INFO`.
pub fn parse_redis_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl Collector for CacheCollector {
    fn name(&self) -> &str {
        "cache"
    }

    fn collect(&self) -> Result<Vec<Point>> {
        let redis = self.redis.clone();
        let v = crate::runtime::block_on(async move { redis.command(&["INFO".to_owned()]).await })?;
        let text = v.as_str().ok_or_else(|| Error::Redis("INFO did not answer text".into()))?;
        let info = parse_redis_info(text);
        let num = |k: &str| -> Result<i64> {
            info.get(k)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| Error::Redis(format!("INFO has no numeric {k}")))
        };
        let hits = num("keyspace_hits")?;
        let misses = num("keyspace_misses")?;
        let rate = if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 };
        Ok(vec![Point::new("cache")
            .tag("server", &self.server)
            .field("hit_rate", rate)
            .field("keyspace_hits", hits)
            .field("keyspace_misses", misses)
            .field("ops_per_second", num("instantaneous_ops_per_sec")?)
            .field("total_commands", num("total_commands_processed")?)
            .field("connected_clients", num("connected_clients")?)
            .field("used_memory_bytes", num("used_memory")?)
            .timestamp_ns(now_ns())])
    }
}

/// One collector's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorFailure {
    pub collector: String,
    pub message: String,
}

/// The result of one round.
#[derive(Debug, Default)]
pub struct CollectReport {
    pub points: Vec<Point>,
    pub failures: Vec<CollectorFailure>,
}

/// Per-collector counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectorStats {
    pub name: String,
    pub runs_ok: u64,
    pub runs_failed: u64,
    pub last_error: Option<String>,
}

struct Entry {
    c: Arc<dyn Collector>,
    ok: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

pub type FailureCallback = Arc<dyn Fn(&CollectorFailure) + Send + Sync>;

struct Periodic {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

/// Runs collectors once ([`MetricsCollector::collect_once`]) or every interval into a writer.
pub struct MetricsCollector {
    entries: Arc<Mutex<Vec<Arc<Entry>>>>,
    on_failure: Arc<Mutex<Option<FailureCallback>>>,
    periodic: Mutex<Option<Periodic>>,
    running: AtomicBool,
}

impl Default for MetricsCollector {
    fn default() -> Self {
        MetricsCollector::new()
    }
}

impl MetricsCollector {
    pub fn new() -> MetricsCollector {
        MetricsCollector {
            entries: Arc::default(),
            on_failure: Arc::default(),
            periodic: Mutex::new(None),
            running: AtomicBool::new(false),
        }
    }

    pub fn add(&self, c: Arc<dyn Collector>) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::new(Entry {
            c,
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }));
    }

    pub fn set_failure_callback(&self, cb: Option<FailureCallback>) {
        *self.on_failure.lock().unwrap_or_else(|p| p.into_inner()) = cb;
    }

    /// Runs every collector once; one that fails (or panics) is reported in the result, counted
    /// and passed to the failure callback; the others still run.
    pub fn collect_once(&self) -> CollectReport {
        collect_round(&self.entries, &self.on_failure)
    }

    /// Collects every `interval` on a background thread and hands the points to `writer`.
    /// Errors if already running.
    pub fn start(&self, writer: Arc<MetricsWriter>, interval: Duration) -> Result<()> {
        if interval.is_zero() {
            return Err(Error::InvalidArgument("the collection interval must be above zero".into()));
        }
        let mut p = self.periodic.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_some() {
            return Err(Error::State("collection is already running".into()));
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (stop2, entries, cb) = (stop.clone(), self.entries.clone(), self.on_failure.clone());
        let thread = std::thread::Builder::new()
            .name("rsdb-collector".into())
            .spawn(move || loop {
                let r = collect_round(&entries, &cb);
                for pt in &r.points {
                    // Points were built by the collectors; a refusal here is a defect, but it
                    // must not stop collection.
                    let _ = writer.write_point(pt);
                }
                let (m, cv) = &*stop2;
                let g = m.lock().unwrap_or_else(|p| p.into_inner());
                let (g, _) = cv.wait_timeout_while(g, interval, |s| !*s).unwrap_or_else(|p| p.into_inner());
                if *g {
                    return;
                }
            })
            .map_err(|e| Error::Internal(format!("could not start the collector thread: {e}")))?;
        *p = Some(Periodic { stop, thread });
        self.running.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Stops periodic collection (waits for a round in progress). Idempotent.
    pub fn stop(&self) {
        let p = self.periodic.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(p) = p {
            *p.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
            p.stop.1.notify_all();
            let _ = p.thread.join();
        }
        self.running.store(false, Ordering::Relaxed);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> Vec<CollectorStats> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| CollectorStats {
                name: e.c.name().to_owned(),
                runs_ok: e.ok.load(Ordering::Relaxed),
                runs_failed: e.failed.load(Ordering::Relaxed),
                last_error: e.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            })
            .collect()
    }
}

impl Drop for MetricsCollector {
    fn drop(&mut self) {
        self.stop();
    }
}

fn collect_round(entries: &Mutex<Vec<Arc<Entry>>>, cb: &Mutex<Option<FailureCallback>>) -> CollectReport {
    let list: Vec<Arc<Entry>> = entries.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let cb = cb.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut report = CollectReport::default();
    for e in list {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.c.collect()))
            .unwrap_or_else(|_| Err(Error::Panic(format!("collector {} panicked", e.c.name()))));
        match r {
            Ok(mut pts) => {
                e.ok.fetch_add(1, Ordering::Relaxed);
                report.points.append(&mut pts);
            }
            Err(err) => {
                e.failed.fetch_add(1, Ordering::Relaxed);
                let f = CollectorFailure { collector: e.c.name().to_owned(), message: err.to_string() };
                *e.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.message.clone());
                if let Some(cb) = &cb {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&f)));
                }
                report.failures.push(f);
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        let (busy, total) = parse_proc_stat("cpu  10 0 5 80 5 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!((busy, total), (15, 100));
        assert!(parse_proc_stat("intr 1 2").is_err());
        let mem = "MemTotal:       16000 kB\nMemFree: 100 kB\nMemAvailable:    8000 kB\n";
        assert_eq!(parse_kb_field(mem, "MemTotal"), Some(16000 * 1024));
        assert_eq!(parse_kb_field(mem, "MemAvailable"), Some(8000 * 1024));
        assert_eq!(parse_kb_field(mem, "Mem"), None);
        let net = "Inter-|   Receive\n face |bytes\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 2000 10 0 0 0 0 0 0 3000 20 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(net), (2000, 3000));
        let info = parse_redis_info("# Stats\r\nkeyspace_hits:3\r\nkeyspace_misses:1\r\n");
        assert_eq!(info["keyspace_hits"], "3");
    }

    #[test]
    fn system_collector_reads_proc_and_one_failure_does_not_stop_others() {
        let mc = MetricsCollector::new();
        mc.add(Arc::new(SystemCollector::new("/")));
        mc.add(Arc::new(SystemCollector::new("/").with_proc_root("/nonexistent-proc")));
        let streams = Arc::new(StreamCollector::new());
        streams
            .update(StreamMetrics { stream_id: "s1".into(), viewers: 3, fps: 60.0, ..StreamMetrics::default() })
            .unwrap();
        mc.add(streams.clone());
        let r = mc.collect_once();
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert!(r.failures[0].message.contains("nonexistent-proc"));
        assert_eq!(r.points.len(), 2);
        let sys = &r.points[0];
        assert_eq!(sys.measurement, "system");
        let total = sys.fields.iter().find(|(k, _)| k == "memory_total_bytes").unwrap();
        assert!(matches!(total.1, crate::metrics::FieldValue::Integer(n) if n > 0));
        assert_eq!(r.points[1].measurement, "stream");
        let st = mc.stats();
        assert_eq!((st[0].runs_ok, st[1].runs_failed, st[2].runs_ok), (1, 1, 1));
        assert!(streams.update(StreamMetrics { stream_id: "".into(), ..StreamMetrics::default() }).is_err());
        assert!(streams
            .update(StreamMetrics { stream_id: "x".into(), fps: f64::NAN, ..StreamMetrics::default() })
            .is_err());
    }
}
