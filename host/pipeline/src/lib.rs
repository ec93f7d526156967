//! `moonlink-pipeline`: the exactly-once source driver.
//!
//! Runs each configured source plugin on its own thread: poll the plugin, run every batch
//! through the transform chain, apply it to the engine (tagged with the poll's checkpoint),
//! acknowledge a checkpoint to the plugin once everything it covers is committed in Iceberg,
//! and restart from the last durable checkpoint (with back-off) when the plugin faults.
//!
//! - [`ack`]: the acknowledgement and resume-point rules as pure functions (unit-tested).
//! - [`SourceRegistry`]: every source's status, shared with whoever reports it (the HTTP API).
//! - [`start_all`] / [`stop_all`]: the driver threads.
//! - [`SourceSpec`]: what the driver needs of a source's configuration (the server parses
//!   the config files and builds these).
//!
//! Dependencies point one way: server → pipeline → runtime → engine; nothing here knows HTTP.

#![warn(missing_docs)]

pub mod ack;
mod commit_now;
mod driver;
mod error;
mod registry;
mod spec;

pub use driver::start_all;
pub use error::PipelineError;
pub use registry::{stop_all, FaultRecord, SourceRegistry, SourceState, SourceStatus};
pub use spec::{PollLimits, SourceSpec, TransformSpec};

/// The Iceberg namespace and table name a host table name stands for: split at the last `.`,
/// or the namespace `default` when the name has none.
pub fn split_table_name(name: &str) -> (String, String) {
    match name.rsplit_once('.') {
        Some((namespace, table)) => (namespace.to_string(), table.to_string()),
        None => ("default".to_string(), name.to_string()),
    }
}

/// How far an initial copy has come, in percent (`None` while the total is unknown or zero).
pub fn copy_percent(rows_copied: u64, rows_total: Option<u64>) -> Option<f64> {
    rows_total
        .filter(|t| *t > 0)
        .map(|t| rows_copied.min(t) as f64 * 100.0 / t as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_split_at_the_last_dot() {
        assert_eq!(
            split_table_name("demo.users"),
            ("demo".into(), "users".into())
        );
        assert_eq!(split_table_name("a.b.c"), ("a.b".into(), "c".into()));
        assert_eq!(
            split_table_name("users"),
            ("default".into(), "users".into())
        );
    }

    #[test]
    fn copy_percent_is_bounded_and_needs_a_total() {
        assert_eq!(copy_percent(5, None), None);
        assert_eq!(copy_percent(5, Some(0)), None);
        assert_eq!(copy_percent(25, Some(100)), Some(25.0));
        assert_eq!(copy_percent(150, Some(100)), Some(100.0));
    }
}
