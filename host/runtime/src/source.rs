//! Hosting source plugins: one long-lived, sandboxed instance per running source.

use std::path::Path;

use moonlink_engine::TableSchema;
use wasmtime::Store;

use crate::bindings::moonlink::plugin::types as wit;
use crate::bindings::source::exports::moonlink::plugin::source as wit_source;
use crate::bindings::source::SourcePluginPre;
use crate::bindings::v02::source::exports::moonlink::plugin::source as v02_source;
use crate::bindings::v03::source::exports::moonlink::plugin::source as v03_source;
use crate::call_io::LocalIo;
use crate::compat;
use crate::convert::schema_from_wit;
use crate::sandbox::{self, Capabilities, PluginRuntime, PluginState, SourceLag};
use crate::{PluginBatch, RuntimeError};

/// A table a source declares, in engine terms.
#[derive(Debug, Clone)]
pub struct TableDefinition {
    pub name: String,
    pub schema: TableSchema,
    /// The partition spec to create the table with (`POST /tables` form); empty: none.
    pub partition_by: Vec<String>,
}

/// One change a source asks the host to apply, in order.
pub enum SourceEvent {
    Changes(PluginBatch),
    /// Remove every row of the table (the source's name for it).
    Truncate(String),
    /// The table now has these columns.
    SchemaChange(TableDefinition),
    /// Initial-copy progress of a table.
    Progress(CopyProgress),
}

/// How far a source's initial copy of a table has come.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyProgress {
    pub table: String,
    pub rows_copied: u64,
    pub rows_total: Option<u64>,
    pub done: bool,
}

/// What one poll returned.
pub struct SourcePoll {
    pub events: Vec<SourceEvent>,
    pub checkpoint: Option<String>,
    pub finished: bool,
    /// The lag the source reported during this poll (`report-lag`), if it did.
    pub lag: Option<SourceLag>,
}

/// Where a source resumes: the last acknowledged checkpoint, and every table the source
/// committed to (by the source's name), each with the checkpoint it is committed through:
/// its own when further ahead, else the acknowledged one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumePoint {
    pub checkpoint: Option<String>,
    pub tables: Vec<(String, String)>,
}

/// A linked source of any WIT version the host takes.
#[derive(Clone)]
enum SourcePre {
    V04(SourcePluginPre<PluginState>),
    V03(crate::bindings::v03::source::SourcePluginPre<PluginState>),
    V02(crate::bindings::v02::source::SourcePluginPre<PluginState>),
}

enum SourceInstance {
    V04(crate::bindings::source::SourcePlugin),
    V03(crate::bindings::v03::source::SourcePlugin),
    V02(crate::bindings::v02::source::SourcePlugin),
}

/// A loaded (compiled and linked) source component; start it as often as needed.
#[derive(Clone)]
pub struct SourcePlugin {
    runtime: PluginRuntime,
    pre: SourcePre,
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
        let instance_pre = runtime.instantiate_pre(&component, path)?;
        // A 0.4 source, else a 0.3 or a 0.2 one (the export's version tells them apart).
        let pre = match SourcePluginPre::new(instance_pre.clone()) {
            Ok(pre) => SourcePre::V04(pre),
            Err(e) => {
                match crate::bindings::v03::source::SourcePluginPre::new(instance_pre.clone()) {
                    Ok(pre) => SourcePre::V03(pre),
                    Err(_) => SourcePre::V02(
                        crate::bindings::v02::source::SourcePluginPre::new(instance_pre).map_err(
                            |_| RuntimeError::Load {
                                path: path.to_path_buf(),
                                message: format!("not a source plugin: {e:#}"),
                            },
                        )?,
                    ),
                }
            }
        };
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
        resume: &ResumePoint,
    ) -> Result<(RunningSource, Vec<TableDefinition>), RuntimeError> {
        // The instance's own I/O runtime: its sockets (made in `open` or later) are driven on
        // the thread that calls it.
        let io = LocalIo::new()?;
        let mut store = self.runtime.new_store(&self.name, &self.capabilities)?;
        let (limit, memory_limit_bytes) = sandbox::store_limits(&store);
        let pre = &self.pre;
        let (instance, tables) =
            self.runtime
                .block_on_local_call(&io, limit, memory_limit_bytes, async {
                    Ok(match pre {
                        SourcePre::V04(pre) => {
                            let resume = wit_source::ResumePoint {
                                checkpoint: resume.checkpoint.clone(),
                                tables: resume.tables.clone(),
                            };
                            let instance = pre.instantiate_async(&mut store).await?;
                            let tables = instance
                                .moonlink_plugin_source()
                                .call_open(&mut store, config_json, &resume)
                                .await?;
                            (SourceInstance::V04(instance), tables)
                        }
                        SourcePre::V03(pre) => {
                            let resume = v03_source::ResumePoint {
                                checkpoint: resume.checkpoint.clone(),
                                tables: resume.tables.clone(),
                            };
                            let instance = pre.instantiate_async(&mut store).await?;
                            let tables = instance
                                .moonlink_plugin_source()
                                .call_open(&mut store, config_json, &resume)
                                .await?
                                .map(|defs| {
                                    defs.into_iter().map(compat::v03::table_def_up).collect()
                                });
                            (SourceInstance::V03(instance), tables)
                        }
                        SourcePre::V02(pre) => {
                            let resume = v02_source::ResumePoint {
                                checkpoint: resume.checkpoint.clone(),
                                tables: resume.tables.clone(),
                            };
                            let instance = pre.instantiate_async(&mut store).await?;
                            let tables = instance
                                .moonlink_plugin_source()
                                .call_open(&mut store, config_json, &resume)
                                .await?
                                .map(|defs| {
                                    defs.into_iter().map(compat::table_def_from_v02).collect()
                                });
                            (SourceInstance::V02(instance), tables)
                        }
                    })
                })?;
        let tables = tables.map_err(RuntimeError::Plugin)?;
        let tables = tables
            .into_iter()
            .map(table_definition)
            .collect::<Result<_, _>>()?;
        Ok((
            RunningSource {
                runtime: self.runtime.clone(),
                store,
                instance,
                broken: false,
                io,
            },
            tables,
        ))
    }
}

pub(crate) fn table_definition(def: wit::TableDef) -> Result<TableDefinition, RuntimeError> {
    Ok(TableDefinition {
        schema: schema_from_wit(&def.schema).map_err(|e| {
            RuntimeError::Plugin(format!("table '{}' cannot be created: {e}", def.name))
        })?,
        name: def.name,
        partition_by: def.partition_by,
    })
}

/// A started source instance. Not shareable: one driver calls it.
pub struct RunningSource {
    runtime: PluginRuntime,
    store: Store<PluginState>,
    instance: SourceInstance,
    /// A call failed in a way that leaves the instance unusable (trap, timeout).
    broken: bool,
    /// Drives every call's I/O on the calling thread (after `store`: dropped last).
    io: LocalIo,
}

impl RunningSource {
    /// Arms the deadline of the next call; refuses calls on a broken instance.
    fn begin(&mut self) -> Result<(std::time::Duration, u64), RuntimeError> {
        if self.broken {
            return Err(RuntimeError::Plugin(
                "the instance failed earlier and must be restarted".into(),
            ));
        }
        let limit = self.runtime.arm_deadline(&mut self.store);
        Ok((limit, sandbox::store_limits(&self.store).1))
    }

    pub fn poll(&mut self, max_rows: u32, timeout_ms: u32) -> Result<SourcePoll, RuntimeError> {
        let (limit, memory_limit_bytes) = self.begin()?;
        let store = &mut self.store;
        let result = match &self.instance {
            SourceInstance::V04(i) => self.runtime.block_on_local_call(
                &self.io,
                limit,
                memory_limit_bytes,
                i.moonlink_plugin_source()
                    .call_poll(&mut *store, max_rows, timeout_ms),
            ),
            SourceInstance::V03(i) => self
                .runtime
                .block_on_local_call(
                    &self.io,
                    limit,
                    memory_limit_bytes,
                    i.moonlink_plugin_source()
                        .call_poll(&mut *store, max_rows, timeout_ms),
                )
                .map(|r| {
                    r.map(|p| wit_source::PollResult {
                        events: p
                            .events
                            .into_iter()
                            .map(compat::v03::source_event_up)
                            .collect(),
                        checkpoint: p.checkpoint,
                        finished: p.finished,
                    })
                }),
            SourceInstance::V02(i) => self
                .runtime
                .block_on_local_call(
                    &self.io,
                    limit,
                    memory_limit_bytes,
                    i.moonlink_plugin_source()
                        .call_poll(&mut *store, max_rows, timeout_ms),
                )
                .map(|r| {
                    r.map(|p| wit_source::PollResult {
                        events: p
                            .events
                            .into_iter()
                            .map(compat::source_event_from_v02)
                            .collect(),
                        checkpoint: p.checkpoint,
                        finished: p.finished,
                    })
                }),
        };
        // A trap or a timeout leaves the instance unusable.
        self.broken = result.is_err();
        let result = result?.map_err(RuntimeError::Plugin)?;
        let events = result
            .events
            .into_iter()
            .map(|event| {
                Ok(match event {
                    wit_source::SourceEvent::Changes(batch) => SourceEvent::Changes(batch),
                    wit_source::SourceEvent::Truncate(table) => SourceEvent::Truncate(table),
                    wit_source::SourceEvent::SchemaChange(def) => {
                        SourceEvent::SchemaChange(table_definition(def)?)
                    }
                    wit_source::SourceEvent::Progress(p) => SourceEvent::Progress(CopyProgress {
                        table: p.table,
                        rows_copied: p.rows_copied,
                        rows_total: p.rows_total,
                        done: p.done,
                    }),
                })
            })
            .collect::<Result<_, RuntimeError>>()?;
        Ok(SourcePoll {
            events,
            checkpoint: result.checkpoint,
            finished: result.finished,
            lag: self.store.data_mut().reported_lag.take(),
        })
    }

    pub fn ack(&mut self, checkpoint: &str) -> Result<(), RuntimeError> {
        let (limit, memory_limit_bytes) = self.begin()?;
        let store = &mut self.store;
        let result = match &self.instance {
            SourceInstance::V04(i) => self.runtime.block_on_local_call(
                &self.io,
                limit,
                memory_limit_bytes,
                i.moonlink_plugin_source().call_ack(&mut *store, checkpoint),
            ),
            SourceInstance::V03(i) => self.runtime.block_on_local_call(
                &self.io,
                limit,
                memory_limit_bytes,
                i.moonlink_plugin_source().call_ack(&mut *store, checkpoint),
            ),
            SourceInstance::V02(i) => self.runtime.block_on_local_call(
                &self.io,
                limit,
                memory_limit_bytes,
                i.moonlink_plugin_source().call_ack(&mut *store, checkpoint),
            ),
        };
        self.broken = result.is_err();
        result
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
