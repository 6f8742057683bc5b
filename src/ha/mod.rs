//! PostgreSQL high availability: the nodes of a replicated cluster and the operations on them.

pub mod etcd;
pub mod failover;
pub mod lease;
pub mod node;

pub use failover::{FailoverManager, FailoverOptions, HaMode};
pub use lease::LeaderLease;
pub use node::{Lsn, NodeSet, NodeState, PgNode, ReplicaStat};
