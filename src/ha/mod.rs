//! PostgreSQL high availability: the nodes of a replicated cluster and the operations on them.

pub mod etcd;
pub mod failover;
pub mod health;
pub mod lease;
pub mod node;
pub mod replication;

pub use failover::{FailoverManager, FailoverOptions, HaMode};
pub use health::{Alert, CheckState, HealthMonitor, HealthOptions, Severity};
pub use lease::LeaderLease;
pub use node::{Lsn, NodeSet, NodeState, PgNode, ReplicaStat};
pub use replication::{ReadRouting, ReplicationManager, ReplicationOptions, ReplicationStatus};
