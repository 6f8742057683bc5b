//! Time-series metrics: line protocol, an InfluxDB client (v1 and v2 APIs), a background
//! batching writer that counts every point it cannot deliver, collectors and a reporter.

pub mod client;
pub mod flux;
pub mod line;

pub use client::{ClientOptions, InfluxApi, InfluxDBClient, RetentionSetup, WriteFailure};
pub use line::{FieldValue, Point, Precision, UnsignedMode};
