//! Hosting transform plugins: one long-lived instance per transform in a chain.

use std::path::Path;

use wasmtime::Store;

use crate::bindings::transform::TransformPluginPre;
use crate::sandbox::{Capabilities, PluginRuntime, PluginState};
use crate::{PluginBatch, RuntimeError};

/// A loaded transform component.
#[derive(Clone)]
pub struct TransformPlugin {
    runtime: PluginRuntime,
    pre: TransformPluginPre<PluginState>,
    name: String,
}

impl TransformPlugin {
    pub fn load(runtime: &PluginRuntime, path: &Path, name: &str) -> Result<Self, RuntimeError> {
        let component = runtime.load_component(path)?;
        let pre =
            TransformPluginPre::new(runtime.instantiate_pre(&component, path)?).map_err(|e| {
                RuntimeError::Load {
                    path: path.to_path_buf(),
                    message: format!("not a transform plugin: {e:#}"),
                }
            })?;
        Ok(TransformPlugin {
            runtime: runtime.clone(),
            pre,
            name: name.to_string(),
        })
    }

    /// Instantiates the transform (no capabilities: transforms only compute) and configures it.
    pub fn start(&self, config_json: &str) -> Result<RunningTransform, RuntimeError> {
        let mut store = self
            .runtime
            .new_store(&self.name, &Capabilities::default())?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.runtime.classify(e))?;
        instance
            .moonlink_plugin_transform()
            .call_configure(&mut store, config_json)
            .map_err(|e| self.runtime.classify(e))?
            .map_err(RuntimeError::Plugin)?;
        Ok(RunningTransform {
            runtime: self.runtime.clone(),
            store,
            instance,
        })
    }
}

/// A configured transform instance.
pub struct RunningTransform {
    runtime: PluginRuntime,
    store: Store<PluginState>,
    instance: crate::bindings::transform::TransformPlugin,
}

impl RunningTransform {
    pub fn apply(&mut self, batch: &PluginBatch) -> Result<Vec<PluginBatch>, RuntimeError> {
        self.runtime.arm_deadline(&mut self.store);
        self.instance
            .moonlink_plugin_transform()
            .call_apply(&mut self.store, batch)
            .map_err(|e| self.runtime.classify(e))?
            .map_err(RuntimeError::Plugin)
    }
}
