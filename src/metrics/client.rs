//! InfluxDBClient: writes line protocol over the v1 API (`/write`, InfluxDB 1.x and the
//! v1-compatible endpoints of 2.x/3.x) or the v2 API (`/api/v2/write` with org, bucket and
//! token), runs InfluxQL queries (`/query`, JSON answers), creates databases and buckets, and sets
//! up retention (1 day raw, 30 days downsampled by a continuous query).
//!
//! The client is blocking (one `ureq` agent with a connection pool) and cheap to clone; the
//! background writer ([`super::writer::MetricsWriter`]) runs it on its own thread.

use super::flux;
use super::line::{encode_batch, Point, Precision, UnsignedMode};
use crate::config::Config;
use crate::error::{Error, Result};
use serde_json::Value;
use std::time::Duration;

/// Which HTTP API the client speaks.
#[derive(Clone, PartialEq, Eq)]
pub enum InfluxApi {
    /// `/write?db=&rp=` and `/query` (InfluxQL). `username`/`password` are sent as `u`/`p` when set.
    V1 { database: String, retention_policy: Option<String>, username: Option<String>, password: Option<String> },
    /// `/api/v2/write?org=&bucket=` with `Authorization: Token ...` (when a token is set).
    V2 { org: String, bucket: String, token: Option<String> },
}

impl std::fmt::Debug for InfluxApi {
    // Never prints passwords or tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InfluxApi::V1 { database, retention_policy, username, .. } => f
                .debug_struct("V1")
                .field("database", database)
                .field("retention_policy", retention_policy)
                .field("username", username)
                .finish_non_exhaustive(),
            InfluxApi::V2 { org, bucket, .. } => {
                f.debug_struct("V2").field("org", org).field("bucket", bucket).finish_non_exhaustive()
            }
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL, e.g. `http://127.0.0.1:8086` (a trailing `/` is ignored).
    pub url: String,
    pub api: InfluxApi,
    /// Timestamp precision of writes.
    pub precision: Precision,
    /// Limit of one HTTP request (connect + send + answer). Default 10 s.
    pub timeout: Duration,
}

impl ClientOptions {
    /// v1 settings for `url` and `database`.
    pub fn v1(url: impl Into<String>, database: impl Into<String>) -> ClientOptions {
        ClientOptions {
            url: url.into(),
            api: InfluxApi::V1 { database: database.into(), retention_policy: None, username: None, password: None },
            precision: Precision::Nanoseconds,
            timeout: Duration::from_secs(10),
        }
    }

    /// v2 settings for `url`, `org`, `bucket` and an optional token.
    pub fn v2(
        url: impl Into<String>,
        org: impl Into<String>,
        bucket: impl Into<String>,
        token: Option<String>,
    ) -> ClientOptions {
        ClientOptions {
            url: url.into(),
            api: InfluxApi::V2 { org: org.into(), bucket: bucket.into(), token },
            precision: Precision::Nanoseconds,
            timeout: Duration::from_secs(10),
        }
    }

    /// From the library configuration: v2 when `influx_org` and `influx_bucket` are set,
    /// otherwise v1 with `influx_database` (default `rootstream`).
    pub fn from_config(cfg: &Config) -> Result<ClientOptions> {
        let url = cfg
            .influx_url
            .clone()
            .ok_or_else(|| Error::Config("influx_url is not set (ROOTSTREAM_INFLUX_URL)".into()))?;
        Ok(match (&cfg.influx_org, &cfg.influx_bucket) {
            (Some(org), Some(bucket)) => ClientOptions::v2(url, org, bucket, cfg.influx_token.clone()),
            _ => ClientOptions::v1(url, cfg.influx_database.clone().unwrap_or_else(|| "rootstream".into())),
        })
    }
}

/// Why a write failed, as the batching writer needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteFailure {
    /// Worth retrying: the server is down or unreachable, timed out, or answered 5xx/408/429.
    /// `retry_after` is the server's `Retry-After`, when it sent one.
    Retryable { message: String, retry_after: Option<Duration> },
    /// The server refused the batch and will refuse it again (bad line, unknown database,
    /// forbidden...). `dropped` is how many points of the batch were not written when the
    /// server said so (InfluxDB's "partial write: ... dropped=N"), else `None` (all of them).
    Rejected { status: u16, message: String, dropped: Option<u64> },
}

impl WriteFailure {
    pub fn message(&self) -> &str {
        match self {
            WriteFailure::Retryable { message, .. } | WriteFailure::Rejected { message, .. } => message,
        }
    }

    fn into_error(self) -> Error {
        match self {
            WriteFailure::Retryable { message, .. } => Error::Connection(message),
            WriteFailure::Rejected { message, .. } => Error::Query(message),
        }
    }
}

/// Longest server message kept in an error (answers can echo whole batches).
const MAX_MESSAGE: usize = 300;

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Parses `Retry-After` given in seconds (HTTP dates are not used by InfluxDB).
fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    let v = v?.trim();
    v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}

/// The `dropped=N` of an InfluxDB partial write.
fn parse_dropped(body: &str) -> Option<u64> {
    let i = body.rfind("dropped=")?;
    let digits: String = body[i + 8..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// A client for one server and one database/bucket.
#[derive(Clone)]
pub struct InfluxDBClient {
    opts: ClientOptions,
    base: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for InfluxDBClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxDBClient").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl InfluxDBClient {
    pub fn new(opts: ClientOptions) -> Result<InfluxDBClient> {
        let base = opts.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!("influx url {base:?} must start with http:// or https://")));
        }
        match &opts.api {
            InfluxApi::V1 { database, .. } if database.is_empty() => {
                return Err(Error::Config("the InfluxDB database name is empty".into()))
            }
            InfluxApi::V2 { org, bucket, .. } if org.is_empty() || bucket.is_empty() => {
                return Err(Error::Config("InfluxDB v2 needs an org and a bucket".into()))
            }
            _ => {}
        }
        if opts.timeout.is_zero() {
            return Err(Error::Config("the InfluxDB request timeout must be above zero".into()));
        }
        let agent = ureq::AgentBuilder::new().max_idle_connections_per_host(8).build();
        Ok(InfluxDBClient { opts, base, agent })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// How this client writes unsigned fields: InfluxDB 1.x has no unsigned type.
    pub fn unsigned_mode(&self) -> UnsignedMode {
        match self.opts.api {
            InfluxApi::V1 { .. } => UnsignedMode::AsInteger,
            InfluxApi::V2 { .. } => UnsignedMode::Suffix,
        }
    }

    /// Encodes one point the way this client writes it.
    pub fn encode(&self, p: &Point) -> Result<String> {
        p.to_line_with(self.opts.precision, self.unsigned_mode())
    }

    /// `GET /ping` (v1) or `/health` (v2): is the server up?
    pub fn ping(&self) -> Result<()> {
        let path = match self.opts.api {
            InfluxApi::V1 { .. } => "/ping",
            InfluxApi::V2 { .. } => "/health",
        };
        match self.agent.get(&format!("{}{path}", self.base)).timeout(self.opts.timeout).call() {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, _)) => Err(Error::Connection(format!("{path} answered {code}"))),
            Err(e) => Err(Error::Connection(format!("{path}: {}", transport_message(&e)))),
        }
    }

    /// Writes one point.
    pub fn write_point(&self, p: &Point) -> Result<()> {
        let line = self.encode(p)?;
        self.write_lines(&line)
    }

    /// Writes a batch in one request; nothing is sent when any point is invalid.
    pub fn write_points(&self, points: &[Point]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let body = encode_batch(points, self.opts.precision, self.unsigned_mode())?;
        self.write_lines(&body)
    }

    /// Sends newline-separated lines (already in this client's precision) in one request.
    pub fn write_lines(&self, body: &str) -> Result<()> {
        self.send(body.as_bytes(), self.opts.timeout).map_err(WriteFailure::into_error)
    }

    /// One write request with its own time limit, with the failure classified for retrying.
    pub fn send(&self, body: &[u8], timeout: Duration) -> std::result::Result<(), WriteFailure> {
        let req = match &self.opts.api {
            InfluxApi::V1 { database, retention_policy, username, password } => {
                let mut r = self
                    .agent
                    .post(&format!("{}/write", self.base))
                    .query("db", database)
                    .query("precision", self.opts.precision.v1_param());
                if let Some(rp) = retention_policy {
                    r = r.query("rp", rp);
                }
                if let (Some(u), Some(p)) = (username, password) {
                    r = r.query("u", u).query("p", p);
                }
                r
            }
            InfluxApi::V2 { org, bucket, token } => {
                let mut r = self
                    .agent
                    .post(&format!("{}/api/v2/write", self.base))
                    .query("org", org)
                    .query("bucket", bucket)
                    .query("precision", self.opts.precision.v2_param());
                if let Some(t) = token {
                    r = r.set("Authorization", &format!("Token {t}"));
                }
                r
            }
        };
        let req = req.timeout(timeout.max(Duration::from_millis(1))).set("Content-Type", "text/plain; charset=utf-8");
        match req.send_bytes(body) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, resp)) => {
                let retry_after = parse_retry_after(resp.header("Retry-After"));
                let text = resp.into_string().unwrap_or_default();
                let message = format!("write answered {code}: {}", clip(&server_message(&text)));
                if code >= 500 || code == 429 || code == 408 {
                    Err(WriteFailure::Retryable { message, retry_after })
                } else {
                    Err(WriteFailure::Rejected { status: code, dropped: parse_dropped(&text), message })
                }
            }
            Err(e) => Err(WriteFailure::Retryable {
                message: format!("write failed: {}", transport_message(&e)),
                retry_after: None,
            }),
        }
    }

    fn v1_db(&self) -> Result<&str> {
        match &self.opts.api {
            InfluxApi::V1 { database, .. } => Ok(database),
            InfluxApi::V2 { .. } => Err(Error::State(
                "InfluxQL needs the v1 API (InfluxDB 1.x, or the v1-compatible endpoint of 2.x/3.x); \
                 on v2 use query_flux"
                    .into(),
            )),
        }
    }

    /// Runs an InfluxQL statement on `/query` and returns InfluxDB's JSON answer. An error in
    /// any statement's result is returned as an error. Timestamps are RFC 3339 unless `epoch`
    /// (`ns`, `u`, `ms`, `s`) is given.
    pub fn query(&self, influxql: &str, epoch: Option<&str>) -> Result<Value> {
        let db = self.v1_db()?;
        let mut req = self.agent.post(&format!("{}/query", self.base)).timeout(self.opts.timeout).query("db", db);
        if let Some(e) = epoch {
            req = req.query("epoch", e);
        }
        if let InfluxApi::V1 { username: Some(u), password: Some(p), .. } = &self.opts.api {
            req = req.query("u", u).query("p", p);
        }
        let resp = match req.send_form(&[("q", influxql)]) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                return Err(Error::Query(format!("query answered {code}: {}", clip(&server_message(&text)))));
            }
            Err(e) => return Err(Error::Connection(format!("query failed: {}", transport_message(&e)))),
        };
        let text = resp.into_string().map_err(|e| Error::Connection(format!("reading the query answer: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json(format!("query answer: {e}")))?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(Error::Query(clip(e)));
        }
        if let Some(results) = v.get("results").and_then(Value::as_array) {
            for r in results {
                if let Some(e) = r.get("error").and_then(Value::as_str) {
                    return Err(Error::Query(clip(e)));
                }
            }
        }
        Ok(v)
    }

    /// The rows of the first series of the first statement as JSON objects keyed by column name
    /// (empty when nothing matched).
    pub fn query_rows(&self, influxql: &str, epoch: Option<&str>) -> Result<Vec<serde_json::Map<String, Value>>> {
        let v = self.query(influxql, epoch)?;
        Ok(rows_of(&v))
    }

    /// `CREATE DATABASE` (v1; idempotent) or a bucket through `/api/v2/buckets` (v2, with the
    /// given retention in seconds, 0 = forever).
    pub fn create_database(&self) -> Result<()> {
        match &self.opts.api {
            InfluxApi::V1 { database, .. } => {
                self.query(&format!("CREATE DATABASE {}", quote_ident(database)), None).map(|_| ())
            }
            InfluxApi::V2 { .. } => self.create_bucket(0),
        }
    }

    /// v2: creates the configured bucket in the configured org (looked up by name) with
    /// `retention_seconds` (0 = keep forever). An existing bucket is not an error.
    pub fn create_bucket(&self, retention_seconds: u64) -> Result<()> {
        let InfluxApi::V2 { org, bucket, token } = &self.opts.api else {
            return Err(Error::State("buckets exist on the v2 API only; v1 uses create_database".into()));
        };
        let auth = token.as_ref().map(|t| format!("Token {t}"));
        let mut req =
            self.agent.get(&format!("{}/api/v2/orgs", self.base)).timeout(self.opts.timeout).query("org", org);
        if let Some(a) = &auth {
            req = req.set("Authorization", a);
        }
        let orgs: Value = http_json(req.call(), "looking up the org")?;
        let org_id = orgs
            .get("orgs")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|o| o.get("name").and_then(Value::as_str) == Some(org)))
            .and_then(|o| o.get("id").and_then(Value::as_str))
            .ok_or_else(|| Error::NotFound(format!("org {org:?}")))?
            .to_owned();
        let body = bucket_request(&org_id, bucket, retention_seconds);
        let mut req = self.agent.post(&format!("{}/api/v2/buckets", self.base)).timeout(self.opts.timeout);
        if let Some(a) = &auth {
            req = req.set("Authorization", a);
        }
        match req.set("Content-Type", "application/json").send_string(&body.to_string()) {
            Ok(_) | Err(ureq::Error::Status(422, _)) => Ok(()),
            r => http_json(r, "creating the bucket").map(|_| ()),
        }
    }

    /// v1 retention: a default policy keeping raw points for `raw`, a second one keeping
    /// downsampled points for `downsampled`, and a continuous query that writes the mean of
    /// every numeric field of every measurement per `interval` (with all tags) from the first
    /// into the second. Statements are idempotent; an existing policy gets the new duration.
    pub fn setup_retention(&self, r: &RetentionSetup) -> Result<()> {
        r.validate()?;
        let db = self.v1_db()?.to_owned();
        for stmt in retention_statements(&db, r) {
            match self.query(&stmt, None) {
                Ok(_) => {}
                Err(Error::Query(m)) if m.contains("already exists") => {
                    if let Some(rest) = stmt.strip_prefix("CREATE RETENTION POLICY ") {
                        self.query(&format!("ALTER RETENTION POLICY {rest}"), None)?;
                    } else {
                        // A continuous query cannot be altered: replace it.
                        let db_q = quote_ident(&db);
                        let name = quote_ident(&r.continuous_query);
                        self.query(&format!("DROP CONTINUOUS QUERY {name} ON {db_q}"), None)?;
                        self.query(&stmt, None)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// v2: runs a Flux query on `/api/v2/query` and returns the annotated CSV answer. (Not
    /// testable against InfluxDB 1.6; the query text comes from [`flux`] and is unit-tested.)
    pub fn query_flux(&self, flux_text: &str) -> Result<String> {
        let InfluxApi::V2 { org, token, .. } = &self.opts.api else {
            return Err(Error::State("Flux needs the v2 API; v1 uses InfluxQL (query)".into()));
        };
        let mut req = self
            .agent
            .post(&format!("{}/api/v2/query", self.base))
            .timeout(self.opts.timeout)
            .query("org", org)
            .set("Accept", "application/csv");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Token {t}"));
        }
        let body = serde_json::json!({ "query": flux_text, "type": "flux" });
        match req.set("Content-Type", "application/json").send_string(&body.to_string()) {
            Ok(r) => r.into_string().map_err(|e| Error::Connection(format!("reading the Flux answer: {e}"))),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                Err(Error::Query(format!("Flux query answered {code}: {}", clip(&server_message(&text)))))
            }
            Err(e) => Err(Error::Connection(format!("Flux query failed: {}", transport_message(&e)))),
        }
    }

    /// The Flux text [`flux::range_query`] builds for this client's bucket.
    pub fn flux_range(&self, q: &flux::RangeQuery) -> Result<String> {
        let InfluxApi::V2 { bucket, .. } = &self.opts.api else {
            return Err(Error::State("Flux needs the v2 API".into()));
        };
        flux::range_query(bucket, q)
    }
}

/// The request body of `POST /api/v2/buckets`.
pub fn bucket_request(org_id: &str, bucket: &str, retention_seconds: u64) -> Value {
    let rules = if retention_seconds == 0 {
        serde_json::json!([])
    } else {
        serde_json::json!([{ "type": "expire", "everySeconds": retention_seconds }])
    };
    serde_json::json!({ "orgID": org_id, "name": bucket, "retentionRules": rules })
}

fn http_json(r: std::result::Result<ureq::Response, ureq::Error>, what: &str) -> Result<Value> {
    match r {
        Ok(resp) => {
            let text = resp.into_string().map_err(|e| Error::Connection(format!("{what}: {e}")))?;
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_str(&text).map_err(|e| Error::Json(format!("{what}: {e}")))
        }
        Err(ureq::Error::Status(code, resp)) => {
            let text = resp.into_string().unwrap_or_default();
            Err(Error::Query(format!("{what}: answered {code}: {}", clip(&server_message(&text)))))
        }
        Err(e) => Err(Error::Connection(format!("{what}: {}", transport_message(&e)))),
    }
}

/// A transport error without its URL (which can hold `p=` or a token-bearing query).
fn transport_message(e: &ureq::Error) -> String {
    use std::error::Error as _;
    match e {
        ureq::Error::Transport(t) => {
            let mut m = t.kind().to_string();
            if let Some(msg) = t.message() {
                m.push_str(": ");
                m.push_str(msg);
            }
            if let Some(src) = t.source() {
                m.push_str(": ");
                m.push_str(&src.to_string());
            }
            m
        }
        ureq::Error::Status(code, _) => format!("answered {code}"),
    }
}

/// InfluxDB answers errors as `{"error": "..."}` (v1) or `{"message": "..."}` (v2).
fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        for k in ["error", "message"] {
            if let Some(m) = v.get(k).and_then(Value::as_str) {
                return m.to_owned();
            }
        }
    }
    body.to_owned()
}

/// Rows of the first series of the first result of an InfluxQL JSON answer.
pub fn rows_of(v: &Value) -> Vec<serde_json::Map<String, Value>> {
    let Some(series) = v.pointer("/results/0/series/0") else { return Vec::new() };
    let cols: Vec<&str> = series
        .get("columns")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    series
        .get("values")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .filter_map(Value::as_array)
                .map(|row| cols.iter().zip(row).map(|(c, v)| ((*c).to_owned(), v.clone())).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// Retention settings for [`InfluxDBClient::setup_retention`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSetup {
    /// Default policy for raw points (`raw_1d`).
    pub raw_policy: String,
    /// InfluxQL duration of raw points (`1d`).
    pub raw_duration: String,
    /// Policy for downsampled points (`downsampled_30d`).
    pub downsampled_policy: String,
    /// InfluxQL duration of downsampled points (`30d`).
    pub downsampled_duration: String,
    /// Downsampling interval (`5m`).
    pub interval: String,
    /// Name of the continuous query (`downsample_5m`).
    pub continuous_query: String,
}

impl Default for RetentionSetup {
    fn default() -> Self {
        RetentionSetup {
            raw_policy: "raw_1d".into(),
            raw_duration: "1d".into(),
            downsampled_policy: "downsampled_30d".into(),
            downsampled_duration: "30d".into(),
            interval: "5m".into(),
            continuous_query: "downsample_5m".into(),
        }
    }
}

fn check_duration(d: &str) -> Result<()> {
    let ok = !d.is_empty()
        && d.split_inclusive(|c: char| c.is_ascii_alphabetic()).all(|part| {
            let unit_at = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
            unit_at > 0 && matches!(&part[unit_at..], "ns" | "u" | "µ" | "ms" | "s" | "m" | "h" | "d" | "w" | "")
        })
        && d.chars().all(|c| c.is_ascii_alphanumeric());
    if ok && d.ends_with(|c: char| c.is_ascii_alphabetic()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{d:?} is not an InfluxQL duration (like 1d, 30d, 5m)")))
    }
}

/// The InfluxQL statements of a retention setup (also what the docs show).
pub fn retention_statements(db: &str, r: &RetentionSetup) -> Vec<String> {
    let db_q = quote_ident(db);
    vec![
        format!(
            "CREATE RETENTION POLICY {} ON {db_q} DURATION {} REPLICATION 1 DEFAULT",
            quote_ident(&r.raw_policy),
            r.raw_duration
        ),
        format!(
            "CREATE RETENTION POLICY {} ON {db_q} DURATION {} REPLICATION 1",
            quote_ident(&r.downsampled_policy),
            r.downsampled_duration
        ),
        format!(
            "CREATE CONTINUOUS QUERY {} ON {db_q} BEGIN SELECT mean(*) INTO {db_q}.{}.:MEASUREMENT FROM {db_q}.{}./.*/ GROUP BY time({}), * END",
            quote_ident(&r.continuous_query),
            quote_ident(&r.downsampled_policy),
            quote_ident(&r.raw_policy),
            r.interval
        ),
    ]
}

impl RetentionSetup {
    /// Checks the durations (they are written into statements unquoted).
    pub fn validate(&self) -> Result<()> {
        check_duration(&self.raw_duration)?;
        check_duration(&self.downsampled_duration)?;
        check_duration(&self.interval)
    }
}

/// An InfluxQL identifier in double quotes (`"` and `\` escaped).
pub fn quote_ident(s: &str) -> String {
    let mut out = String::new();
    crate::metrics::line::push_quoted(&mut out, s, '"');
    out
}

/// An InfluxQL string literal in single quotes (`'` and `\` escaped).
pub fn quote_string(s: &str) -> String {
    let mut out = String::new();
    crate::metrics::line::push_quoted(&mut out, s, '\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote_string(r"it's \"), r"'it\'s \\'");
    }

    #[test]
    fn retention_statement_text() {
        let s = retention_statements("rs db", &RetentionSetup::default());
        assert_eq!(s[0], r#"CREATE RETENTION POLICY "raw_1d" ON "rs db" DURATION 1d REPLICATION 1 DEFAULT"#);
        assert_eq!(s[1], r#"CREATE RETENTION POLICY "downsampled_30d" ON "rs db" DURATION 30d REPLICATION 1"#);
        assert_eq!(
            s[2],
            r#"CREATE CONTINUOUS QUERY "downsample_5m" ON "rs db" BEGIN SELECT mean(*) INTO "rs db"."downsampled_30d".:MEASUREMENT FROM "rs db"."raw_1d"./.*/ GROUP BY time(5m), * END"#
        );
        assert!(RetentionSetup::default().validate().is_ok());
        for bad in ["", "1", "d", "1d;DROP", "1x", "1 d"] {
            let r = RetentionSetup { raw_duration: bad.into(), ..RetentionSetup::default() };
            assert!(r.validate().is_err(), "{bad:?}");
        }
        let r = RetentionSetup { raw_duration: "1h30m".into(), ..RetentionSetup::default() };
        assert!(r.validate().is_ok());
    }

    #[test]
    fn answers_are_parsed() {
        assert_eq!(parse_retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(Some(" 0.5 ")), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(Some("-1")), None);
        assert_eq!(
            parse_dropped(
                r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"m\" is type integer, already exists as type float dropped=2"}"#
            ),
            Some(2)
        );
        assert_eq!(parse_dropped("unable to parse"), None);
        assert_eq!(server_message(r#"{"error":"db not found"}"#), "db not found");
        assert_eq!(server_message(r#"{"code":"invalid","message":"bad"}"#), "bad");
        assert_eq!(clip(&"é".repeat(400)).len(), 300 + 3);
    }

    #[test]
    fn options_are_checked_and_secrets_not_printed() {
        assert!(InfluxDBClient::new(ClientOptions::v1("ftp://x", "db")).is_err());
        assert!(InfluxDBClient::new(ClientOptions::v1("http://x", "")).is_err());
        assert!(InfluxDBClient::new(ClientOptions::v2("http://x", "", "b", None)).is_err());
        let c = InfluxDBClient::new(ClientOptions::v2("http://x/", "o", "b", Some("s3cret".into()))).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.unsigned_mode(), UnsignedMode::Suffix);
        assert!(c.query("SHOW DATABASES", None).is_err());
        let mut o = ClientOptions::v1("http://x", "db");
        if let InfluxApi::V1 { password, username, .. } = &mut o.api {
            *username = Some("u".into());
            *password = Some("hunter2".into());
        }
        let c = InfluxDBClient::new(o).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.unsigned_mode(), UnsignedMode::AsInteger);
        let b = bucket_request("0123", "metrics", 86400);
        assert_eq!(b["retentionRules"][0]["everySeconds"], 86400);
        assert_eq!(bucket_request("0123", "m", 0)["retentionRules"], serde_json::json!([]));
    }
}
