//! PostgreSQL high availability: health monitoring.

pub mod health;

pub use health::{Alert, CheckState, HealthMonitor, HealthOptions, Severity};
