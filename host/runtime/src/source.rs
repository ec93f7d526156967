//! Hosting source plugins: one long-lived, sandboxed instance per running source.

use std::path::Path;

use moonlink_engine::TableSchema;
use wasmtime::Store;

use crate::bindings::source::SourcePluginPre;
use crate::convert::schema_from_wit;
use crate::sandbox::{Capabilities, PluginRuntime, PluginState};
use crate::{PluginBatch, RuntimeError};

/// A table a source declares, in engine terms.
#[derive(Debug, Clone)]
pub struct TableDefinition {
    pub name: String,
    pub schema: TableSchema,
}

/// What one poll returned.
pub struct SourcePoll {
    pub batches: Vec<PluginBatch>,
    pub checkpoint: Option<String>,
    pub finished: bool,
}

/// A loaded (compiled and linked) source component; start it as often as needed.
#[derive(Clone)]
pub struct SourcePlugin {
    runtime: PluginRuntime,
    pre: SourcePluginPre<PluginState>,
    name: String,
    capabilities: Capabilities,
}

impl SourcePlugin {
    pub fn load(
        runtime: &PluginRuntime,
        path: &Path,
        name: &str,
        capabilities: Capabilities,
    ) -> Result<Self, RuntimeError> {
        let component = runtime.load_component(path)?;
        let pre =
            SourcePluginPre::new(runtime.instantiate_pre(&component, path)?).map_err(|e| {
                RuntimeError::Load {
                    path: path.to_path_buf(),
                    message: format!("not a source plugin: {e:#}"),
                }
            })?;
        Ok(SourcePlugin {
            runtime: runtime.clone(),
            pre,
            name: name.to_string(),
            capabilities,
        })
    }

    /// Instantiates the source and calls `open`.
    pub fn start(
        &self,
        config_json: &str,
        resume_from: Option<&str>,
    ) -> Result<(RunningSource, Vec<TableDefinition>), RuntimeError> {
        let mut store = self.runtime.new_store(&self.name, &self.capabilities)?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.runtime.classify(e))?;
        let tables = instance
            .moonlink_plugin_source()
            .call_open(&mut store, config_json, resume_from)
            .map_err(|e| self.runtime.classify(e))?
            .map_err(RuntimeError::Plugin)?;
        let tables = tables
            .into_iter()
            .map(|t| TableDefinition {
                name: t.name,
                schema: schema_from_wit(&t.schema),
            })
            .collect();
        Ok((
            RunningSource {
                runtime: self.runtime.clone(),
                store,
                instance,
            },
            tables,
        ))
    }
}

/// A started source instance. Not shareable: one driver calls it.
pub struct RunningSource {
    runtime: PluginRuntime,
    store: Store<PluginState>,
    instance: crate::bindings::source::SourcePlugin,
}

impl RunningSource {
    pub fn poll(&mut self, max_rows: u32, timeout_ms: u32) -> Result<SourcePoll, RuntimeError> {
        self.runtime.arm_deadline(&mut self.store);
        let result = self
            .instance
            .moonlink_plugin_source()
            .call_poll(&mut self.store, max_rows, timeout_ms)
            .map_err(|e| self.runtime.classify(e))?
            .map_err(RuntimeError::Plugin)?;
        Ok(SourcePoll {
            batches: result.batches,
            checkpoint: result.checkpoint,
            finished: result.finished,
        })
    }

    pub fn ack(&mut self, checkpoint: &str) -> Result<(), RuntimeError> {
        self.runtime.arm_deadline(&mut self.store);
        self.instance
            .moonlink_plugin_source()
            .call_ack(&mut self.store, checkpoint)
            .map_err(|e| self.runtime.classify(e))
    }
}
