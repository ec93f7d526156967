//! What the driver needs to know of one source: plain values, parsed by the caller.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use moonlink_runtime::Capabilities;

/// One source plugin to run.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The source's name (log lines, statuses, the catalog's acknowledged checkpoint).
    pub name: String,
    /// The plugin's wasm file.
    pub path: PathBuf,
    /// The settings handed to the plugin's `open`, as a JSON object.
    pub settings_json: String,
    /// The plugin's table name → the host's (tables not listed keep their name).
    pub tables: BTreeMap<String, String>,
    /// The chain every batch goes through, in order.
    pub transforms: Vec<TransformSpec>,
    /// What the plugin may touch, and its limits.
    pub capabilities: Capabilities,
    /// How much one poll may return and how long it may wait.
    pub poll: PollLimits,
}

/// One transform of a source's chain.
#[derive(Debug, Clone)]
pub struct TransformSpec {
    /// The transform's name (log lines).
    pub name: String,
    /// The plugin's wasm file.
    pub path: PathBuf,
    /// The settings handed to the transform's `open`, as a JSON object.
    pub settings_json: String,
}

/// Limits of one poll.
#[derive(Debug, Clone, Copy)]
pub struct PollLimits {
    /// Most rows one poll may return.
    pub max_rows: u32,
    /// Longest a poll may wait for rows, in milliseconds.
    pub timeout_ms: u32,
}

impl SourceSpec {
    /// The host table a plugin table name maps to.
    pub fn host_table(&self, plugin_table: &str) -> String {
        self.tables
            .get(plugin_table)
            .cloned()
            .unwrap_or_else(|| plugin_table.to_string())
    }

    /// The plugin's name for a host table (the inverse of [`SourceSpec::host_table`]).
    pub fn source_table(&self, host_table: &str) -> String {
        self.tables
            .iter()
            .find(|(_, host)| host.as_str() == host_table)
            .map(|(plugin, _)| plugin.clone())
            .unwrap_or_else(|| host_table.to_string())
    }

    /// The longest one call of this plugin may take: its own limit, never below the runtime's.
    pub fn call_limit(&self, runtime_limit: Duration) -> Duration {
        self.capabilities
            .call_timeout
            .unwrap_or(runtime_limit)
            .max(runtime_limit)
    }
}
