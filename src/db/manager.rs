//! `DatabaseManager`: a bounded pool of PostgreSQL connections with time limits on every step.

use super::transaction::Transaction;
use super::value::{param_refs, parse_params, rows_to_json, JsonParam};
use crate::config::{redact_url, Config};
use crate::error::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// A pooled connection. Returned to the pool when dropped.
pub type PooledClient = deadpool_postgres::Object;

/// Pool counters at one moment.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PoolStats {
    /// The configured maximum number of connections.
    pub max_size: usize,
    /// Connections currently open (idle + in use).
    pub size: usize,
    /// Idle connections ready to be handed out.
    pub available: usize,
    /// Connections handed out right now.
    pub in_use: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// The result of [`DatabaseManager::health_check`].
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// The round trip of `SELECT` on a pooled connection, in milliseconds.
    pub latency_ms: f64,
    /// `server_version` as the server reports it.
    pub server_version: String,
    /// True when the server is a standby (in recovery) and refuses writes.
    pub in_recovery: bool,
    /// The database the pool is connected to.
    pub database: String,
    /// Pool counters at the time of the check.
    pub pool: PoolStats,
}

/// Prepared statements kept per connection; past this many the cache starts over, so code that
/// builds many distinct SQL strings cannot grow it without bound.
const STATEMENT_CACHE_LIMIT: usize = 512;

/// Runs `op` with a prepared statement from the connection's cache. When the server reports
/// that a cached plan went stale (the table changed under it, SQLSTATE 0A000), the cache is
/// cleared and, where `retry` allows (not inside a transaction), the statement runs once more.
pub(crate) async fn with_statement<T, F, Fut>(client: &PooledClient, sql: &str, retry: bool, op: F) -> Result<T>
where
    F: Fn(tokio_postgres::Statement) -> Fut,
    Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
{
    if client.statement_cache.size() >= STATEMENT_CACHE_LIMIT {
        client.statement_cache.clear();
    }
    let stmt = client.prepare_cached(sql).await?;
    match op(stmt).await {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED) => {
            client.statement_cache.clear();
            if !retry {
                return Err(e.into());
            }
            let stmt = client.prepare_cached(sql).await?;
            Ok(op(stmt).await?)
        }
        r => Ok(r?),
    }
}

struct Inner {
    /// The current pool. [`DatabaseManager::retarget`] swaps it; callers clone the handle
    /// (cheap) and never hold the lock across an await.
    pool: RwLock<Target>,
    query_timeout: Duration,
    acquire_timeout: Duration,
    connect_timeout: Duration,
    pool_size: usize,
    /// Bumped by every retarget.
    generation: AtomicU64,
    /// Set by `close`: a closed manager is not reopened by a retarget.
    closed: AtomicBool,
}

struct Target {
    pool: Pool,
    pg: tokio_postgres::Config,
    url_for_messages: String,
}

fn build_pool(
    mut pg: tokio_postgres::Config,
    pool_size: usize,
    acquire_timeout: Duration,
    connect_timeout: Duration,
) -> Result<(Pool, tokio_postgres::Config)> {
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(connect_timeout);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("rootstream-db");
    }
    // Keepalives make a silently vanished server (power loss, partition) show up as an error.
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(30));
    let mgr = Manager::from_config(pg.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(mgr)
        .max_size(pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(acquire_timeout))
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(connect_timeout))
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok((pool, pg))
}

/// A pool of PostgreSQL connections. Cheap to clone; all clones share the pool.
#[derive(Clone)]
pub struct DatabaseManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DatabaseManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseManager").field("url", &self.url_for_messages()).field("stats", &self.stats()).finish()
    }
}

impl DatabaseManager {
    /// Builds the pool from `config.database_url`. Connections open lazily, so this succeeds
    /// while the server is down; use [`connect`](Self::connect) to also check one round trip.
    pub fn new(config: &Config) -> Result<Self> {
        let url = config.require_database_url()?;
        let pg = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::Config(format!("database_url {}: {e}", redact_url(url))))?;
        let (pool, pg) = build_pool(pg, config.pool_size, config.acquire_timeout, config.connect_timeout)?;
        Ok(DatabaseManager {
            inner: Arc::new(Inner {
                pool: RwLock::new(Target { pool, pg, url_for_messages: redact_url(url) }),
                query_timeout: config.query_timeout,
                acquire_timeout: config.acquire_timeout,
                connect_timeout: config.connect_timeout,
                pool_size: config.pool_size,
                generation: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn target(&self) -> std::sync::RwLockReadGuard<'_, Target> {
        self.inner.pool.read().unwrap_or_else(|p| p.into_inner())
    }

    fn pool(&self) -> Pool {
        self.target().pool.clone()
    }

    fn url_for_messages(&self) -> String {
        self.target().url_for_messages.clone()
    }

    /// Moves the pool to another server (after a failover): a new pool is built on `url` with
    /// the same size and time limits, and the old pool is closed, so none of its connections is
    /// handed out again. Idle old connections close now; ones in use finish (or fail, if their
    /// server is gone) and are closed when returned. Every clone of this manager follows.
    pub fn retarget(&self, url: &str) -> Result<()> {
        let pg = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::Config(format!("retarget {}: {e}", redact_url(url))))?;
        self.swap(pg, redact_url(url))
    }

    /// [`retarget`](Self::retarget) to the server of `node_url` (a single-host URL such as an
    /// `ha_nodes` entry), keeping this pool's user, password, database and application name,
    /// and requiring a server that accepts writes (`target_session_attrs=read-write`), so a
    /// node that turned read-only or into a standby is refused instead of used.
    pub fn retarget_host(&self, node_url: &str) -> Result<()> {
        let node = tokio_postgres::Config::from_str(node_url)
            .map_err(|e| Error::Config(format!("retarget {}: {e}", redact_url(node_url))))?;
        let mut pg = node.clone();
        let base = self.target().pg.clone();
        if let Some(u) = base.get_user() {
            pg.user(u);
        }
        if let Some(p) = base.get_password() {
            pg.password(p);
        }
        if let Some(d) = base.get_dbname() {
            pg.dbname(d);
        }
        if let Some(a) = base.get_application_name() {
            pg.application_name(a);
        }
        if let Some(t) = base.get_connect_timeout() {
            pg.connect_timeout(*t);
        }
        pg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        let hosts: Vec<String> = node
            .get_hosts()
            .iter()
            .zip(node.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, p)| match h {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                tokio_postgres::config::Host::Unix(d) => format!("{}:{p}", d.display()),
            })
            .collect();
        let label = format!("postgres://{}/{}", hosts.join(","), base.get_dbname().unwrap_or(""));
        self.swap(pg, label)
    }

    fn swap(&self, pg: tokio_postgres::Config, label: String) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::State("the database pool is closed".into()));
        }
        let (pool, pg) = build_pool(pg, self.inner.pool_size, self.inner.acquire_timeout, self.inner.connect_timeout)?;
        let old = {
            let mut t = self.inner.pool.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *t, Target { pool, pg, url_for_messages: label })
        };
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        old.pool.close();
        Ok(())
    }

    /// How many times the pool was moved to another server.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// The server URL the pool connects to now (password masked).
    pub fn current_url(&self) -> String {
        self.url_for_messages()
    }

    /// Builds the pool and checks that the server answers.
    pub async fn connect(config: &Config) -> Result<Self> {
        let db = Self::new(config)?;
        db.execute("SELECT 1", &[]).await?;
        Ok(db)
    }

    /// Takes a connection from the pool, waiting at most the acquire timeout.
    pub async fn acquire(&self) -> Result<PooledClient> {
        let started = Instant::now();
        // The outer limit also covers the rare case where the pool's own timers cannot fire.
        let limit = self.inner.acquire_timeout + Duration::from_secs(1);
        let pool = self.pool();
        match tokio::time::timeout(limit, pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.map_pool_error(e, started.elapsed())),
            Err(_) => Err(Error::Timeout(format!(
                "no database connection became available within {:?}",
                self.inner.acquire_timeout
            ))),
        }
    }

    fn map_pool_error(&self, e: PoolError, waited: Duration) -> Error {
        match e {
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => Error::Timeout(format!(
                "pool exhausted: all {} connections stayed in use for {:?} (acquire timeout)",
                self.inner.pool_size, waited
            )),
            PoolError::Timeout(kind) => {
                Error::Timeout(format!("connecting to {} timed out ({kind:?})", self.url_for_messages()))
            }
            PoolError::Backend(e) => {
                let mapped = Error::from(e);
                match mapped {
                    Error::Connection(m) => Error::Connection(format!("{}: {m}", self.url_for_messages())),
                    other => other,
                }
            }
            PoolError::Closed => Error::State("the database pool is closed".into()),
            other => Error::Connection(format!("{}: {other}", self.url_for_messages())),
        }
    }

    /// Runs a future with the query time limit. When it expires and `client` is given, the
    /// statement still running on the server is cancelled, so the connection can be reused.
    pub(crate) async fn timed<T>(
        &self,
        client: Option<&PooledClient>,
        what: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.query_timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                // The statement's future is gone, the connection still open: ask the server
                // to cancel what it runs.
                if let Some(token) = client.map(|c| c.cancel_token()) {
                    tokio::spawn(async move {
                        let _ = token.cancel_query(NoTls).await;
                    });
                }
                Err(Error::Timeout(format!("{what} did not finish within {:?}", self.inner.query_timeout)))
            }
        }
    }

    /// The query time limit.
    pub fn query_timeout(&self) -> Duration {
        self.inner.query_timeout
    }

    /// Executes one statement with typed parameters; returns the number of rows affected.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let client = self.acquire().await?;
        let c = &client;
        self.timed(
            Some(c),
            "statement",
            with_statement(&client, sql, true, move |st| async move { c.execute(&st, params).await }),
        )
        .await
    }

    /// Runs a query with typed parameters and returns typed rows.
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let client = self.acquire().await?;
        let c = &client;
        self.timed(
            Some(c),
            "query",
            with_statement(&client, sql, true, move |st| async move { c.query(&st, params).await }),
        )
        .await
    }

    /// Runs a query expected to return at most one row.
    pub async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let client = self.acquire().await?;
        let c = &client;
        self.timed(
            Some(c),
            "query",
            with_statement(&client, sql, true, move |st| async move { c.query_opt(&st, params).await }),
        )
        .await
    }

    /// Executes a statement whose parameters are a JSON array (`[1, "text", null]`).
    pub async fn execute_json(&self, sql: &str, params_json: Option<&str>) -> Result<u64> {
        let params: Vec<JsonParam> = parse_params(params_json)?;
        self.execute(sql, &param_refs(&params)).await
    }

    /// Runs a query whose parameters are a JSON array; returns an array of row objects.
    pub async fn query_json(&self, sql: &str, params_json: Option<&str>) -> Result<Value> {
        let params: Vec<JsonParam> = parse_params(params_json)?;
        let rows = self.query(sql, &param_refs(&params)).await?;
        rows_to_json(&rows)
    }

    /// Runs several statements separated by semicolons, without parameters (DDL, scripts).
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        let client = self.acquire().await?;
        self.timed(Some(&client), "batch", async { Ok(client.batch_execute(sql).await?) }).await
    }

    /// Starts a transaction on a connection of its own. It rolls back unless committed.
    pub async fn begin(&self) -> Result<Transaction> {
        let client = self.acquire().await?;
        Transaction::begin(self.clone(), client).await
    }

    /// Runs `f` inside a transaction: commits when it returns `Ok`, rolls back otherwise.
    pub async fn with_transaction<T, F>(&self, f: F) -> Result<T>
    where
        F: for<'t> FnOnce(&'t mut Transaction) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>,
    {
        let mut tx = self.begin().await?;
        match f(&mut tx).await {
            Ok(v) => {
                tx.commit().await?;
                Ok(v)
            }
            Err(e) => {
                // The original error matters more than a failed rollback.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Current pool counters.
    pub fn stats(&self) -> PoolStats {
        let s = self.pool().status();
        PoolStats {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            in_use: s.size.saturating_sub(s.available),
            waiting: s.waiting,
        }
    }

    /// Checks one round trip and reports latency, version and whether the server is a standby.
    pub async fn health_check(&self) -> Result<Health> {
        let started = Instant::now();
        let client = self.acquire().await?;
        let row = self
            .timed(Some(&client), "health check", async {
                Ok(client
                    .query_one(
                        "SELECT current_setting('server_version'), pg_is_in_recovery(), current_database()::text",
                        &[],
                    )
                    .await?)
            })
            .await?;
        Ok(Health {
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            server_version: row.get(0),
            in_recovery: row.get(1),
            database: row.get(2),
            pool: self.stats(),
        })
    }

    /// Closes the pool: idle connections close now, and connections in use close when returned.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.pool().close();
    }
}
