//! The event store behind `rootstream::events::EventStore`. Events and snapshot state are
//! free-form JSON.

use super::{to_json, R};
use crate::error::Error;
use crate::events::{EventStore, NewEvent};
use crate::runtime::block_on;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        type DbBox = crate::ffi::cxx::db::DbBox;
    }

    extern "Rust" {
        fn events_append(
            db: &DbBox,
            aggregate_type: &str,
            aggregate_id: &str,
            expected_version: i64,
            events_json: &str,
        ) -> Result<i64>;
        fn events_load(db: &DbBox, aggregate_type: &str, aggregate_id: &str, after_version: i64) -> Result<String>;
        fn events_version(db: &DbBox, aggregate_type: &str, aggregate_id: &str) -> Result<i64>;
        fn events_by_user(db: &DbBox, user_id: i64, limit: i64) -> Result<String>;
        fn events_save_snapshot(
            db: &DbBox,
            aggregate_type: &str,
            aggregate_id: &str,
            version: i64,
            state_json: &str,
        ) -> Result<()>;
        fn events_load_from_snapshot(db: &DbBox, aggregate_type: &str, aggregate_id: &str) -> Result<String>;
    }
}

use super::db::DbBox;

fn store(db: &DbBox) -> EventStore {
    EventStore::new(db.0.clone())
}

fn events_append(
    db: &DbBox,
    aggregate_type: &str,
    aggregate_id: &str,
    expected_version: i64,
    events_json: &str,
) -> R<i64> {
    let list: Vec<NewEvent> = serde_json::from_str(events_json)
        .map_err(|e| Error::Json(format!("events must be an array of events: {e}")))?;
    Ok(block_on(store(db).append(aggregate_type, aggregate_id, expected_version, &list))?)
}

fn events_load(db: &DbBox, aggregate_type: &str, aggregate_id: &str, after_version: i64) -> R<String> {
    to_json(&block_on(store(db).load(aggregate_type, aggregate_id, after_version))?)
}

fn events_version(db: &DbBox, aggregate_type: &str, aggregate_id: &str) -> R<i64> {
    Ok(block_on(store(db).current_version(aggregate_type, aggregate_id))?)
}

fn events_by_user(db: &DbBox, user_id: i64, limit: i64) -> R<String> {
    to_json(&block_on(store(db).by_user(user_id, limit))?)
}

fn events_save_snapshot(db: &DbBox, aggregate_type: &str, aggregate_id: &str, version: i64, state_json: &str) -> R<()> {
    let state: serde_json::Value = serde_json::from_str(state_json)?;
    Ok(block_on(store(db).save_snapshot(aggregate_type, aggregate_id, version, &state))?)
}

fn events_load_from_snapshot(db: &DbBox, aggregate_type: &str, aggregate_id: &str) -> R<String> {
    to_json(&block_on(store(db).load_from_snapshot(aggregate_type, aggregate_id))?)
}
