//! Hosting transform plugins: one long-lived instance per transform in a chain.

use std::path::Path;

use wasmtime::Store;

use crate::bindings::transform::TransformPluginPre;
use crate::compat;
use crate::sandbox::{self, Capabilities, PluginRuntime, PluginState};
use crate::{PluginBatch, RuntimeError};

/// A linked transform of any WIT version the host takes.
#[derive(Clone)]
enum TransformPre {
    V04(TransformPluginPre<PluginState>),
    V03(crate::bindings::v03::transform::TransformPluginPre<PluginState>),
    V02(crate::bindings::v02::transform::TransformPluginPre<PluginState>),
}

enum TransformInstance {
    V04(crate::bindings::transform::TransformPlugin),
    V03(crate::bindings::v03::transform::TransformPlugin),
    V02(crate::bindings::v02::transform::TransformPlugin),
}

/// A loaded transform component.
#[derive(Clone)]
pub struct TransformPlugin {
    runtime: PluginRuntime,
    pre: TransformPre,
    name: String,
}

impl TransformPlugin {
    pub fn load(runtime: &PluginRuntime, path: &Path, name: &str) -> Result<Self, RuntimeError> {
        let component = runtime.load_component(path)?;
        let instance_pre = runtime.instantiate_pre(&component, path)?;
        // A 0.4 transform, else a 0.3 or a 0.2 one (the export's version tells them apart).
        let pre = match TransformPluginPre::new(instance_pre.clone()) {
            Ok(pre) => TransformPre::V04(pre),
            Err(e) => {
                match crate::bindings::v03::transform::TransformPluginPre::new(instance_pre.clone())
                {
                    Ok(pre) => TransformPre::V03(pre),
                    Err(_) => TransformPre::V02(
                        crate::bindings::v02::transform::TransformPluginPre::new(instance_pre)
                            .map_err(|_| RuntimeError::Load {
                                path: path.to_path_buf(),
                                message: format!("not a transform plugin: {e:#}"),
                            })?,
                    ),
                }
            }
        };
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
                    Ok(match pre {
                        TransformPre::V04(pre) => {
                            let instance = pre.instantiate_async(&mut store).await?;
                            let configured = instance
                                .moonlink_plugin_transform()
                                .call_configure(&mut store, config_json)
                                .await?;
                            (TransformInstance::V04(instance), configured)
                        }
                        TransformPre::V03(pre) => {
                            let instance = pre.instantiate_async(&mut store).await?;
                            let configured = instance
                                .moonlink_plugin_transform()
                                .call_configure(&mut store, config_json)
                                .await?;
                            (TransformInstance::V03(instance), configured)
                        }
                        TransformPre::V02(pre) => {
                            let instance = pre.instantiate_async(&mut store).await?;
                            let configured = instance
                                .moonlink_plugin_transform()
                                .call_configure(&mut store, config_json)
                                .await?;
                            (TransformInstance::V02(instance), configured)
                        }
                    })
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
    instance: TransformInstance,
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
        let store = &mut self.store;
        let result = match &self.instance {
            TransformInstance::V04(i) => self.runtime.block_on_call(
                limit,
                memory_limit_bytes,
                i.moonlink_plugin_transform().call_apply(&mut *store, batch),
            ),
            TransformInstance::V03(i) => {
                // Refused before the call (the instance stays usable): a malformed buffer.
                let batch = compat::v03::batch_down(batch.clone())?;
                self.runtime
                    .block_on_call(
                        limit,
                        memory_limit_bytes,
                        i.moonlink_plugin_transform()
                            .call_apply(&mut *store, &batch),
                    )
                    .map(|r| r.map(|out| out.into_iter().map(compat::v03::batch_up).collect()))
            }
            TransformInstance::V02(i) => {
                // Refused before the call (the instance stays usable): a map column.
                let batch = compat::batch_to_v02(batch)?;
                self.runtime
                    .block_on_call(
                        limit,
                        memory_limit_bytes,
                        i.moonlink_plugin_transform()
                            .call_apply(&mut *store, &batch),
                    )
                    .map(|r| r.map(|out| out.into_iter().map(compat::batch_from_v02).collect()))
            }
        };
        self.broken = result.is_err();
        result?.map_err(RuntimeError::Plugin)
    }
}
