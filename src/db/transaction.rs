//! An owned transaction: it holds its pooled connection, so it can cross the C and C++ APIs
//! as a handle, and it rolls back when dropped without a commit.

use super::manager::{with_statement, DatabaseManager, PooledClient};
use super::value::{param_refs, parse_params, rows_to_json, JsonParam};
use crate::error::{Error, Result};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// A database transaction on a pooled connection.
pub struct Transaction {
    db: DatabaseManager,
    client: Option<PooledClient>,
    failed: AtomicBool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("open", &self.client.is_some()).finish()
    }
}

impl Transaction {
    pub(crate) async fn begin(db: DatabaseManager, client: PooledClient) -> Result<Self> {
        db.timed(Some(&client), "BEGIN", async { Ok(client.batch_execute("BEGIN").await?) }).await?;
        Ok(Transaction { db, client: Some(client), failed: AtomicBool::new(false) })
    }

    fn client(&self) -> Result<&PooledClient> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::State("the transaction has already been committed or rolled back".into()))
    }

    fn track<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        r
    }

    /// True until commit or rollback.
    pub fn is_open(&self) -> bool {
        self.client.is_some()
    }

    /// Executes a statement inside the transaction.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let c = self.client()?;
        self.track(
            self.db
                .timed(
                    Some(c),
                    "statement",
                    with_statement(c, sql, false, move |st| async move { c.execute(&st, params).await }),
                )
                .await,
        )
    }

    /// Runs a query inside the transaction.
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let c = self.client()?;
        self.track(
            self.db
                .timed(
                    Some(c),
                    "query",
                    with_statement(c, sql, false, move |st| async move { c.query(&st, params).await }),
                )
                .await,
        )
    }

    /// Runs a query expected to return at most one row.
    pub async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let c = self.client()?;
        self.track(
            self.db
                .timed(
                    Some(c),
                    "query",
                    with_statement(c, sql, false, move |st| async move { c.query_opt(&st, params).await }),
                )
                .await,
        )
    }

    /// Executes a statement with JSON parameters.
    pub async fn execute_json(&self, sql: &str, params_json: Option<&str>) -> Result<u64> {
        let params: Vec<JsonParam> = parse_params(params_json)?;
        self.execute(sql, &param_refs(&params)).await
    }

    /// Runs a query with JSON parameters; returns an array of row objects.
    pub async fn query_json(&self, sql: &str, params_json: Option<&str>) -> Result<Value> {
        let params: Vec<JsonParam> = parse_params(params_json)?;
        let rows = self.query(sql, &param_refs(&params)).await?;
        rows_to_json(&rows)
    }

    /// Runs semicolon-separated statements without parameters.
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        let c = self.client()?;
        self.track(self.db.timed(Some(c), "batch", async { Ok(c.batch_execute(sql).await?) }).await)
    }

    /// Commits. PostgreSQL turns COMMIT into ROLLBACK after a failed statement; that case is
    /// reported as an error (and the transaction is rolled back) instead of a silent success.
    pub async fn commit(&mut self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            self.rollback().await?;
            return Err(Error::State(
                "the transaction was aborted by an earlier failed statement and has been rolled back".into(),
            ));
        }
        let client = self
            .client
            .take()
            .ok_or_else(|| Error::State("the transaction has already been committed or rolled back".into()))?;
        self.db.timed(Some(&client), "COMMIT", async { Ok(client.batch_execute("COMMIT").await?) }).await
    }

    /// Rolls back. Calling it on a finished transaction is a no-op.
    pub async fn rollback(&mut self) -> Result<()> {
        if let Some(client) = self.client.take() {
            self.db.timed(Some(&client), "ROLLBACK", async { Ok(client.batch_execute("ROLLBACK").await?) }).await?;
        }
        Ok(())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // The connection must not return to the pool inside an open transaction. Roll back
            // on the runtime; if that fails the connection is discarded instead of reused.
            let rollback = async move {
                if client.batch_execute("ROLLBACK").await.is_err() {
                    let _ = deadpool_postgres::Object::take(client);
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(rollback);
                }
                Err(_) => {
                    crate::runtime::runtime().spawn(rollback);
                }
            }
        }
    }
}
