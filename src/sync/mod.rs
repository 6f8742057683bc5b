//! State kept in step between RootStream instances: the manager that carries events and
//! entity changes over Redis (pub/sub plus a capped stream as the ordered log), the envelope
//! they travel in, hybrid logical clocks, version vectors, and the entity store that resolves
//! concurrent changes per entity type.

pub mod envelope;
pub mod hlc;
pub mod log;
pub mod manager;
mod receive;
mod send;
pub mod snapshot;
pub mod state;
pub mod vv;

pub use envelope::{events, Envelope};
pub use hlc::{HybridClock, PhysicalClock, SystemClock, Timestamp};
pub use manager::{Resync, StateSyncManager, SyncOptions, SyncStatus};
pub use snapshot::{SnapshotInfo, SnapshotManager, StoredSnapshot};
pub use state::{Change, ChangeBody, Conflict, EntityStore, MergeFn, MergeRequest, Outcome, StoreImage, Strategy};
pub use vv::{Causality, VersionVector};
