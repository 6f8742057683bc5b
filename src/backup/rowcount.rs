//! Row counts per table: what a logical backup records from its snapshot, and what a restore is
//! checked against.

use crate::db::{DatabaseManager, Transaction};
use crate::error::Result;
use std::collections::BTreeMap;

/// Where the counting runs: a database, or a transaction (a snapshot).
pub(crate) enum Counter<'a> {
    Db(&'a DatabaseManager),
    Tx(&'a Transaction),
}

impl Counter<'_> {
    async fn query(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>> {
        match self {
            Counter::Db(db) => db.query(sql, &[]).await,
            Counter::Tx(tx) => tx.query(sql, &[]).await,
        }
    }
}

/// The rows of every user table (outside `pg_catalog` and `information_schema`), keyed by the
/// quoted `schema.table` name.
pub(crate) async fn count_every_table(on: Counter<'_>) -> Result<BTreeMap<String, i64>> {
    let tables = on
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )
        .await?;
    let mut counts = BTreeMap::new();
    for t in &tables {
        let name: String = t.get(0);
        // The name comes from the catalog, quoted by format('%I'); values are never spliced.
        let n: i64 = on.query(&format!("SELECT count(*) FROM {name}")).await?[0].get(0);
        counts.insert(name, n);
    }
    Ok(counts)
}
