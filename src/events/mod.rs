//! The event store: an append-only log per aggregate with optimistic concurrency, and snapshots.

pub mod store;

pub use store::{Event, EventStore, NewEvent, Snapshot, SnapshotAndEvents};
