//! PostgreSQL high availability: the nodes of a replicated cluster and the operations on them.

pub mod node;

pub use node::{Lsn, NodeSet, NodeState, PgNode, ReplicaStat};
