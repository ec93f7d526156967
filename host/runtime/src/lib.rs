//! moonlink-runtime: runs moonlink plugins (WebAssembly components) with wasmtime.
//!
//! Every plugin call gets a fresh, sandboxed instance (the rest decoder reuses instances that
//! returned normally, see `RestDecoder`): no filesystem, no network, no
//! environment, a memory limit and a time limit (epoch interruption for computing, a timeout
//! for host calls that block). A plugin that traps, loops, blocks or exhausts memory fails
//! that one call with a clear error; the host keeps running. The runtime knows nothing of HTTP.

mod cache;
mod call_io;
mod compat;
mod convert;
mod error;
mod receiver;
mod sandbox;
mod source;
mod transform;

pub use convert::{batch_from_wit as into_engine_batch, schema_from_wit};
pub use error::{DataErrorKind, RuntimeError};
pub use receiver::{HttpRequest, HttpResponse, ReceiverPlugin, Reception};
pub use sandbox::{Capabilities, PluginRuntime, RuntimeConfig, SourceLag};
pub use source::{
    CopyProgress, ResumePoint, RunningSource, SourceEvent, SourcePlugin, SourcePoll,
    TableDefinition,
};
pub use transform::{RunningTransform, TransformPlugin};

/// A change batch as plugins produce it (columnar WIT values), before the engine validates it.
pub type PluginBatch = bindings::moonlink::plugin::types::ChangeBatch;
/// The WIT types plugin batches are made of, for hosts that build batches themselves.
pub mod wit {
    pub use crate::bindings::moonlink::plugin::types::{
        ArrayValues, ChangeBatch, Column, ColumnValues, DataType, DecimalType, ElementType,
        ElementValues, Field, Int128, MapType, MapValues, Operation, TableDef, TableSchema,
        Utf8Buffer,
    };
}

use std::path::Path;
use std::sync::{Arc, Mutex};

use moonlink_engine::{ChangeBatch, TableSchema};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "rest-ingest",
        exports: { default: async },
    });

    pub mod source {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "source-plugin",
            exports: { default: async },
            with: { "moonlink:plugin/types": super::moonlink::plugin::types },
        });
    }

    pub mod transform {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "transform-plugin",
            exports: { default: async },
            with: {
                "moonlink:plugin/types": super::moonlink::plugin::types,
                "moonlink:plugin/host": super::source::moonlink::plugin::host,
            },
        });
    }

    /// The previous package, `moonlink:plugin@0.3.0` (`wit/compat/0.3`): plugins built
    /// against 0.3.x still load; `compat::v03` converts their values.
    pub mod v03 {
        wasmtime::component::bindgen!({
            path: "../../wit/compat/0.3",
            world: "rest-ingest",
            exports: { default: async },
        });

        pub mod source {
            wasmtime::component::bindgen!({
                path: "../../wit/compat/0.3",
                world: "source-plugin",
                exports: { default: async },
                with: { "moonlink:plugin/types": super::moonlink::plugin::types },
            });
        }

        pub mod transform {
            wasmtime::component::bindgen!({
                path: "../../wit/compat/0.3",
                world: "transform-plugin",
                exports: { default: async },
                with: {
                    "moonlink:plugin/types": super::moonlink::plugin::types,
                    "moonlink:plugin/host": super::source::moonlink::plugin::host,
                },
            });
        }

        pub mod receiver {
            wasmtime::component::bindgen!({
                path: "../../wit/compat/0.3",
                world: "http-receiver",
                exports: { default: async },
                with: {
                    "moonlink:plugin/types": super::moonlink::plugin::types,
                    "moonlink:plugin/host": super::source::moonlink::plugin::host,
                },
            });
        }
    }

    /// The package before that, `moonlink:plugin@0.2.1` (`wit/compat/0.2`): plugins built
    /// against 0.2.x still load; `compat` converts their values (to 0.3, then to 0.4).
    pub mod v02 {
        wasmtime::component::bindgen!({
            path: "../../wit/compat/0.2",
            world: "rest-ingest",
            exports: { default: async },
        });

        pub mod source {
            wasmtime::component::bindgen!({
                path: "../../wit/compat/0.2",
                world: "source-plugin",
                exports: { default: async },
                with: { "moonlink:plugin/types": super::moonlink::plugin::types },
            });
        }

        pub mod transform {
            wasmtime::component::bindgen!({
                path: "../../wit/compat/0.2",
                world: "transform-plugin",
                exports: { default: async },
                with: {
                    "moonlink:plugin/types": super::moonlink::plugin::types,
                    "moonlink:plugin/host": super::source::moonlink::plugin::host,
                },
            });
        }
    }
}

use bindings::exports::moonlink::plugin::rest_decoder;

/// A decoder that needs more memory than this per body byte is broken, not overloaded: its
/// memory-limit failures are plugin errors, not [`RuntimeError::ResourceExhausted`].
/// (rest_ingest needs ~4.5 bytes per byte for wide rows, ~15 for rows of a single integer.)
const MAX_DECODE_EXPANSION: u64 = 64;

/// When the host may answer an ingest request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMode {
    /// Once the rows are in the write-ahead log.
    Async,
    /// Once the Iceberg snapshot containing them is committed.
    Sync,
}

/// A decoded ingest request: one validated batch and when to answer.
#[derive(Debug)]
pub struct DecodedRequest {
    pub batch: ChangeBatch,
    pub mode: RequestMode,
}

/// A decoder instance kept between requests, in its own store (its memory stays grown, so the
/// next request does not fault it in again).
struct IdleDecoder {
    store: wasmtime::Store<sandbox::PluginState>,
    instance: DecoderInstance,
}

/// A linked decoder of any WIT version the host takes.
enum DecoderPre {
    V04(bindings::RestIngestPre<sandbox::PluginState>),
    V03(bindings::v03::RestIngestPre<sandbox::PluginState>),
    V02(bindings::v02::RestIngestPre<sandbox::PluginState>),
}

enum DecoderInstance {
    V04(bindings::RestIngest),
    V03(bindings::v03::RestIngest),
    V02(bindings::v02::RestIngest),
}

/// Idle instances kept at most (a few per core: requests decode in parallel).
const POOL_INSTANCES: usize = 8;
/// An instance whose memories grew past this after a call is dropped, not kept.
const POOL_MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// A loaded rest-ingest plugin. Cheap to clone; calls may run concurrently.
#[derive(Clone)]
pub struct RestDecoder {
    runtime: PluginRuntime,
    pre: Arc<DecoderPre>,
    /// Instances that finished a call normally, with the base memory limit, ready for reuse.
    /// One that trapped, ran out of time or memory is never put back.
    pool: Arc<Mutex<Vec<IdleDecoder>>>,
    /// Idle instances kept at most: `POOL_INSTANCES`, or 0 with `MOONLINK_DECODER_POOL=0`
    /// (a fresh instance per request, for comparisons).
    pool_instances: usize,
}

impl RestDecoder {
    /// Loads and validates a component implementing the `rest-ingest` world.
    pub fn load(runtime: &PluginRuntime, path: &Path) -> Result<Self, RuntimeError> {
        let component = runtime.load_component(path)?;
        let instance_pre = runtime.instantiate_pre(&component, path)?;
        // A 0.4 decoder, else a 0.3 or a 0.2 one (the export's version tells them apart).
        let pre = match bindings::RestIngestPre::new(instance_pre.clone()) {
            Ok(pre) => DecoderPre::V04(pre),
            Err(e) => match bindings::v03::RestIngestPre::new(instance_pre.clone()) {
                Ok(pre) => DecoderPre::V03(pre),
                Err(_) => {
                    DecoderPre::V02(bindings::v02::RestIngestPre::new(instance_pre).map_err(
                        |_| RuntimeError::Load {
                            path: path.to_path_buf(),
                            message: format!("not a rest-ingest plugin: {e:#}"),
                        },
                    )?)
                }
            },
        };
        Ok(RestDecoder {
            runtime: runtime.clone(),
            pre: Arc::new(pre),
            pool: Arc::new(Mutex::new(Vec::new())),
            pool_instances: match std::env::var("MOONLINK_DECODER_POOL").as_deref() {
                Ok("0") => 0,
                _ => POOL_INSTANCES,
            },
        })
    }

    /// Decodes one request body for `table` into a batch the engine accepts. Blocks the
    /// calling thread (run it on `spawn_blocking` or a plain thread). A body too large for
    /// the decoder's memory limit gives [`RuntimeError::ResourceExhausted`] (a decoder out of
    /// memory on a small body gives [`RuntimeError::MemoryLimit`]: the plugin's fault).
    pub fn decode(
        &self,
        table: &str,
        schema: &TableSchema,
        content_type: Option<&str>,
        parameters: &[(String, String)],
        body: &[u8],
    ) -> Result<DecodedRequest, RuntimeError> {
        let config = self.runtime.config();
        let memory_limit_bytes = config.decoder_memory_limit_bytes(body.len());
        // Only bodies under the base memory limit share instances, so a reused instance has
        // exactly the limit a fresh one would get.
        let poolable = memory_limit_bytes == config.decoder_memory_limit_bytes(0);
        let idle = if poolable {
            self.pool.lock().ok().and_then(|mut pool| pool.pop())
        } else {
            None
        };
        let (mut store, idle_instance) = match idle {
            Some(IdleDecoder {
                mut store,
                instance,
            }) => {
                self.runtime.arm_deadline(&mut store);
                (store, Some(instance))
            }
            None => {
                let capabilities = Capabilities {
                    memory_limit_bytes: Some(memory_limit_bytes),
                    ..Capabilities::default()
                };
                (self.runtime.new_store("rest_ingest", &capabilities)?, None)
            }
        };
        let (limit, memory_limit_bytes) = sandbox::store_limits(&store);
        let info = rest_decoder::RequestInfo {
            table: table.to_string(),
            schema: convert::schema_to_wit(schema),
            content_type: content_type.map(str::to_string),
            parameters: parameters.to_vec(),
        };
        // An older decoder gets the request in its terms, or a clear error before any call.
        let info_v03 = match &*self.pre {
            DecoderPre::V03(_) => Some(compat::v03::request_info_down(&info)),
            _ => None,
        };
        let info_v02 = match &*self.pre {
            DecoderPre::V02(_) => Some(compat::request_info_to_v02(&info)?),
            _ => None,
        };
        let pre = &self.pre;
        let (instance, result) = self
            .runtime
            .block_on_call(limit, memory_limit_bytes, async {
                let instance = match (idle_instance, &**pre) {
                    (Some(instance), _) => instance,
                    (None, DecoderPre::V04(pre)) => {
                        DecoderInstance::V04(pre.instantiate_async(&mut store).await?)
                    }
                    (None, DecoderPre::V03(pre)) => {
                        DecoderInstance::V03(pre.instantiate_async(&mut store).await?)
                    }
                    (None, DecoderPre::V02(pre)) => {
                        DecoderInstance::V02(pre.instantiate_async(&mut store).await?)
                    }
                };
                let result = match (&instance, &info_v03, &info_v02) {
                    (DecoderInstance::V04(i), _, _) => {
                        i.moonlink_plugin_rest_decoder()
                            .call_decode(&mut store, &info, body)
                            .await?
                    }
                    (DecoderInstance::V03(i), Some(info), _) => i
                        .moonlink_plugin_rest_decoder()
                        .call_decode(&mut store, info, body)
                        .await?
                        .map(compat::v03::ingest_request_up)
                        .map_err(compat::v03::data_error_up),
                    (DecoderInstance::V02(i), _, Some(info)) => compat::decoded_from_v02(
                        i.moonlink_plugin_rest_decoder()
                            .call_decode(&mut store, info, body)
                            .await?,
                    ),
                    (DecoderInstance::V03(_), None, _) | (DecoderInstance::V02(_), _, None) => {
                        unreachable!("an instance comes from a pre of its own version")
                    }
                };
                Ok((instance, result))
            })
            .map_err(|e| match e {
                // Out of memory on a body large enough to explain it: the request is too
                // large for this server. On a small body it is the plugin's fault.
                RuntimeError::MemoryLimit { limit_bytes }
                    if body.len() as u64 * MAX_DECODE_EXPANSION >= limit_bytes =>
                {
                    RuntimeError::ResourceExhausted { limit_bytes }
                }
                other => other,
            })?;
        // The call returned normally (a refused body is a normal return): keep the instance.
        if poolable && sandbox::memory_bytes(&store) <= POOL_MAX_MEMORY_BYTES {
            if let Ok(mut pool) = self.pool.lock() {
                if pool.len() < self.pool_instances {
                    pool.push(IdleDecoder { store, instance });
                }
            }
        }
        let request = result.map_err(convert::data_error)?;
        let batch = convert::batch_from_wit(table, schema, request.batch)?;
        let mode = match request.request_mode {
            rest_decoder::RequestMode::Async => RequestMode::Async,
            rest_decoder::RequestMode::Sync => RequestMode::Sync,
        };
        Ok(DecodedRequest { batch, mode })
    }
}
