//! Hosting transform plugins: one long-lived instance per transform in a chain.

use std::path::Path;

use wasmtime::Store;

use crate::bindings::transform::TransformPluginPre;
use crate::sandbox::{self, Capabilities, PluginRuntime, PluginState};
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
        let (limit, memory_limit_bytes) = sandbox::store_limits(&store);
        let pre = &self.pre;
        let (instance, configured) =
            self.runtime
                .block_on_call(limit, memory_limit_bytes, async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let configured = instance
                        .moonlink_plugin_transform()
                        .call_configure(&mut store, config_json)
                        .await?;
                    Ok((instance, configured))
                })?;
        configured.map_err(RuntimeError::Plugin)?;
        Ok(RunningTransform {
            runtime: self.runtime.clone(),
            store,
            instance,
            broken: false,
        })
    }
}

/// A configured transform instance.
pub struct RunningTransform {
    runtime: PluginRuntime,
    store: Store<PluginState>,
    instance: crate::bindings::transform::TransformPlugin,
    /// A call trapped or timed out: the instance must be restarted.
    broken: bool,
}

impl RunningTransform {
    pub fn apply(&mut self, batch: &PluginBatch) -> Result<Vec<PluginBatch>, RuntimeError> {
        if self.broken {
            return Err(RuntimeError::Plugin(
                "the instance failed earlier and must be restarted".into(),
            ));
        }
        let limit = self.runtime.arm_deadline(&mut self.store);
        let (_, memory_limit_bytes) = sandbox::store_limits(&self.store);
        let result = self.runtime.block_on_call(
            limit,
            memory_limit_bytes,
            self.instance
                .moonlink_plugin_transform()
                .call_apply(&mut self.store, batch),
        );
        self.broken = result.is_err();
        result?.map_err(RuntimeError::Plugin)
    }
}
