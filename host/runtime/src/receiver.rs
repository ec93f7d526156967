//! Hosting HTTP-receiver plugins (WIT world `http-receiver`, since 0.3.0; 0.3.x plugins
//! through `compat::v03`): a pool of instances,
//! each opened with the plugin's settings before its first request, each under the plugin's
//! memory and time limits. An instance whose call trapped, timed out or ran out of memory is
//! dropped, never reused; one that grew large is not kept.

use std::path::Path;
use std::sync::{Arc, Mutex};

use wasmtime::Store;

use crate::sandbox::{self, Capabilities, PluginRuntime, PluginState};
use crate::source::{table_definition, TableDefinition};
use crate::RuntimeError;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "http-receiver",
        exports: { default: async },
        with: {
            "moonlink:plugin/types": crate::bindings::moonlink::plugin::types,
            "moonlink:plugin/host": crate::bindings::source::moonlink::plugin::host,
        },
    });
}

use crate::bindings::v03::receiver as v03;
use crate::compat;

/// A linked receiver of any WIT version the host takes.
enum ReceiverPre {
    V04(bindings::HttpReceiverPre<PluginState>),
    V03(v03::HttpReceiverPre<PluginState>),
}

enum Instance {
    V04(bindings::HttpReceiver),
    V03(v03::HttpReceiver),
}

/// A request as the host hands it to the plugin, its answer, and the batches to write.
pub use bindings::exports::moonlink::plugin::receiver::{HttpRequest, HttpResponse, Reception};

/// Idle instances kept at most (requests are handled in parallel on blocking threads).
const POOL_INSTANCES: usize = 8;
/// An instance whose memories grew past this after a call is dropped, not kept.
const POOL_MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;

struct Idle {
    store: Store<PluginState>,
    instance: Instance,
}

struct Inner {
    runtime: PluginRuntime,
    pre: ReceiverPre,
    name: String,
    config_json: String,
    capabilities: Capabilities,
    pool: Mutex<Vec<Idle>>,
}

/// A loaded receiver. Cheap to clone; calls may run concurrently (each on its own instance).
#[derive(Clone)]
pub struct ReceiverPlugin {
    inner: Arc<Inner>,
}

impl ReceiverPlugin {
    /// Loads `path` if it is an `http-receiver` component; `None` when it is another kind of
    /// plugin. `capabilities` without a memory limit get the rest decoder's: enough for the
    /// largest body the host accepts (`RuntimeConfig::max_body_bytes`).
    pub fn try_load(
        runtime: &PluginRuntime,
        path: &Path,
        name: &str,
        config_json: &str,
        capabilities: Capabilities,
    ) -> Result<Option<Self>, RuntimeError> {
        let component = runtime.load_component(path)?;
        let instance_pre = runtime.instantiate_pre(&component, path)?;
        let pre = match bindings::HttpReceiverPre::new(instance_pre.clone()) {
            Ok(pre) => ReceiverPre::V04(pre),
            Err(_) => match v03::HttpReceiverPre::new(instance_pre) {
                Ok(pre) => ReceiverPre::V03(pre),
                Err(_) => return Ok(None),
            },
        };
        let config = runtime.config();
        let capabilities = Capabilities {
            memory_limit_bytes: Some(capabilities.memory_limit_bytes.unwrap_or_else(|| {
                config.decoder_memory_limit_bytes(config.max_body_bytes as usize)
            })),
            ..capabilities
        };
        Ok(Some(ReceiverPlugin {
            inner: Arc::new(Inner {
                runtime: runtime.clone(),
                pre,
                name: name.to_string(),
                config_json: config_json.to_string(),
                capabilities,
                pool: Mutex::new(Vec::new()),
            }),
        }))
    }

    /// The plugin's name (its config's `name`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Opens a first instance and returns the tables the plugin writes (kept for the first
    /// request). Blocks the calling thread.
    pub fn open(&self) -> Result<Vec<TableDefinition>, RuntimeError> {
        let (idle, tables) = self.new_instance()?;
        self.put_back(idle);
        tables.into_iter().map(table_definition).collect()
    }

    /// A new instance, opened with the plugin's settings.
    fn new_instance(&self) -> Result<(Idle, Vec<crate::wit::TableDef>), RuntimeError> {
        let inner = &*self.inner;
        let mut store = inner.runtime.new_store(&inner.name, &inner.capabilities)?;
        let (limit, memory_limit_bytes) = sandbox::store_limits(&store);
        let pre = &inner.pre;
        let config = inner.config_json.as_str();
        let (instance, opened) = inner
            .runtime
            .block_on_call(limit, memory_limit_bytes, async {
                Ok(match pre {
                    ReceiverPre::V04(pre) => {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let opened = instance
                            .moonlink_plugin_receiver()
                            .call_open(&mut store, config)
                            .await?;
                        (Instance::V04(instance), opened)
                    }
                    ReceiverPre::V03(pre) => {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let opened = instance
                            .moonlink_plugin_receiver()
                            .call_open(&mut store, config)
                            .await?
                            .map(|defs| defs.into_iter().map(compat::v03::table_def_up).collect());
                        (Instance::V03(instance), opened)
                    }
                })
            })?;
        let tables = opened.map_err(RuntimeError::Plugin)?;
        Ok((Idle { store, instance }, tables))
    }

    /// An idle instance, or a new one.
    fn take(&self) -> Result<Idle, RuntimeError> {
        let idle = self.inner.pool.lock().ok().and_then(|mut pool| pool.pop());
        match idle {
            Some(mut idle) => {
                self.inner.runtime.arm_deadline(&mut idle.store);
                Ok(idle)
            }
            None => Ok(self.new_instance()?.0),
        }
    }

    /// Keeps an instance that returned normally, unless the pool is full or it grew large.
    fn put_back(&self, idle: Idle) {
        if sandbox::memory_bytes(&idle.store) > POOL_MAX_MEMORY_BYTES {
            return;
        }
        if let Ok(mut pool) = self.inner.pool.lock() {
            if pool.len() < POOL_INSTANCES {
                pool.push(idle);
            }
        }
    }

    /// Handles one request: the batches to write and the response to send once they are
    /// durable. Blocks the calling thread (use `spawn_blocking`). A body too large for the
    /// instance's memory is [`RuntimeError::ResourceExhausted`] (413), as for the rest decoder.
    pub fn receive(&self, request: &HttpRequest) -> Result<Reception, RuntimeError> {
        let Idle {
            mut store,
            instance,
        } = self.take()?;
        let (limit, memory_limit_bytes) = sandbox::store_limits(&store);
        let body_len = request.body.len() as u64;
        let reception = self
            .inner
            .runtime
            .block_on_call(limit, memory_limit_bytes, async {
                match &instance {
                    Instance::V04(i) => {
                        i.moonlink_plugin_receiver()
                            .call_receive(&mut store, request)
                            .await
                    }
                    Instance::V03(i) => i
                        .moonlink_plugin_receiver()
                        .call_receive(&mut store, &compat::v03::http_request_down(request))
                        .await
                        .map(compat::v03::reception_up),
                }
            })
            .map_err(|e| match e {
                // Out of memory on a body large enough to explain it: too large for this
                // server, not a plugin bug (the same rule as the rest decoder's).
                RuntimeError::MemoryLimit { limit_bytes }
                    if body_len.saturating_mul(crate::MAX_DECODE_EXPANSION) >= limit_bytes =>
                {
                    RuntimeError::ResourceExhausted { limit_bytes }
                }
                other => other,
            })?;
        self.put_back(Idle { store, instance });
        Ok(reception)
    }

    /// The plugin's answer for a request the host could not accept (`status` 413, 429, 500,
    /// 503), in the form the client expects. Blocks the calling thread.
    pub fn failure(
        &self,
        request_headers: &[(String, String)],
        status: u16,
        message: &str,
    ) -> Result<HttpResponse, RuntimeError> {
        let Idle {
            mut store,
            instance,
        } = self.take()?;
        let (limit, memory_limit_bytes) = sandbox::store_limits(&store);
        let response = self
            .inner
            .runtime
            .block_on_call(limit, memory_limit_bytes, async {
                match &instance {
                    Instance::V04(i) => {
                        i.moonlink_plugin_receiver()
                            .call_failure(&mut store, request_headers, status, message)
                            .await
                    }
                    Instance::V03(i) => i
                        .moonlink_plugin_receiver()
                        .call_failure(&mut store, request_headers, status, message)
                        .await
                        .map(compat::v03::http_response_up),
                }
            })?;
        self.put_back(Idle { store, instance });
        Ok(response)
    }

    /// Idle instances right now (for tests and status).
    pub fn idle_instances(&self) -> usize {
        self.inner.pool.lock().map(|p| p.len()).unwrap_or(0)
    }
}
