//! State kept in step between RootStream instances: hybrid logical clocks, version vectors,
//! and the entity store that resolves concurrent changes per entity type.

pub mod hlc;
pub mod state;
pub mod vv;

pub use hlc::{HybridClock, PhysicalClock, SystemClock, Timestamp};
pub use state::{Change, ChangeBody, Conflict, EntityStore, MergeFn, MergeRequest, Outcome, StoreImage, Strategy};
pub use vv::{Causality, VersionVector};
