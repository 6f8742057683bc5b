//! Time-series metrics: line protocol, an InfluxDB client (v1 and v2 APIs), a background
//! batching writer that counts every point it cannot deliver, collectors, a reporter and a
//! Prometheus text export. See `docs/metrics.md`.

pub mod client;
pub mod collector;
pub mod flux;
pub mod library;
pub mod line;
pub mod options;
pub mod prometheus;
pub mod reporter;
pub mod writer;

pub use client::{ClientOptions, InfluxApi, InfluxDBClient, RetentionSetup, WriteFailure};
pub use collector::{
    CacheCollector, Collector, CollectorFailure, DatabaseCollector, MetricsCollector, StreamCollector, StreamMetrics,
    SystemCollector,
};
pub use library::{counters, LibraryCounters};
pub use line::{FieldValue, Point, Precision, UnsignedMode};
pub use prometheus::{LibraryMetrics, MetricsServer};
pub use reporter::{Alert, AlertRule, Comparison, MetricsReporter, Percentiles, Severity};
pub use writer::{DropEvent, DropReason, MetricsWriter, WriterOptions, WriterStats};
