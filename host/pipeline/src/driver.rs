//! Runs source plugins: poll → transform chain → engine, ack once committed, and restart from
//! the last committed checkpoint (with back-off) when the plugin faults.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use moonlink_engine::{CreateTable, Engine, EngineError, SourceCheckpoint};
use moonlink_runtime::{
    into_engine_batch, PluginBatch, PluginRuntime, RunningSource, RunningTransform, SourceEvent,
    SourcePlugin, TransformPlugin,
};

use crate::ack::{self, AckQueue};
use crate::commit_now::CommitNow;
use crate::registry::lock;
use crate::{
    copy_percent, split_table_name, PipelineError, SourceRegistry, SourceSpec, SourceState,
};

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Starts one thread per source (on the current tokio runtime). Load failures are reported as
/// `failed`, never fatal.
pub fn start_all(
    runtime: &PluginRuntime,
    engine: &Engine,
    specs: Vec<SourceSpec>,
    registry: &SourceRegistry,
) -> Vec<std::thread::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::current();
    let mut threads = Vec::new();
    for spec in specs {
        let name = spec.name.clone();
        registry.register(
            &name,
            spec.path.display().to_string(),
            spec.call_limit(runtime.config().call_timeout),
        );
        let driver = Driver {
            spec,
            runtime: runtime.clone(),
            engine: engine.clone(),
            registry: registry.clone(),
            handle: handle.clone(),
        };
        match std::thread::Builder::new()
            .name(format!("source-{name}"))
            .spawn(move || driver.run())
        {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(source = %name, error = %e, "cannot start source thread"),
        }
    }
    threads
}

struct Driver {
    spec: SourceSpec,
    runtime: PluginRuntime,
    engine: Engine,
    registry: SourceRegistry,
    handle: tokio::runtime::Handle,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a running source stopped.
enum Stop {
    Finished,
    Shutdown,
}

impl Driver {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn fail(&self, state: SourceState, error: &PipelineError) {
        tracing::error!(source = %self.name(), state = %state, "{error}");
        self.registry.update(self.name(), |s| {
            s.state = state;
            s.last_error = Some(error.to_string());
        });
    }

    fn run(self) {
        let plugin = match SourcePlugin::load(
            &self.runtime,
            &self.spec.path,
            self.name(),
            self.spec.capabilities.clone(),
        ) {
            Ok(p) => p,
            Err(e) => return self.fail(SourceState::Failed, &PipelineError::Load(e.into())),
        };
        let mut transforms = Vec::new();
        for t in &self.spec.transforms {
            match TransformPlugin::load(&self.runtime, &t.path, &t.name) {
                Ok(p) => transforms.push((p, t.settings_json.clone())),
                Err(e) => return self.fail(SourceState::Failed, &PipelineError::Load(e.into())),
            }
        }
        let mut backoff = Duration::from_millis(200);
        let mut known_tables: Vec<String> = Vec::new();
        while !self.registry.stopping() {
            match self.run_once(&plugin, &transforms, &mut known_tables) {
                Ok(Stop::Finished) => {
                    self.registry
                        .update(self.name(), |s| s.state = SourceState::Finished);
                    tracing::info!(source = %self.name(), "source finished");
                    return;
                }
                Ok(Stop::Shutdown) => return,
                Err(error) => {
                    self.fail(SourceState::Restarting, &error);
                    self.registry.update(self.name(), |s| s.restarts += 1);
                    // Resume from a checkpoint that covers everything applied so far: commit
                    // the buffered rows first, or they would be produced twice.
                    for table in &known_tables {
                        if let Err(e) = self.handle.block_on(self.engine.commit(table)) {
                            tracing::warn!(source = %self.name(), table, error = %e, "commit before restart failed");
                        }
                    }
                    self.registry.sleep_unless_stopping(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Where to resume: the catalog's acknowledged checkpoint and the checkpoints the known
    /// tables' snapshots carry (every table when none is known yet), by [`ack::resume_point`].
    /// Every table with this source's checkpoint is listed: a source tells by it which tables
    /// it mirrors already (postgres_cdc copies a published table that is not listed).
    fn resume_point(&self, known_tables: &[String]) -> Result<moonlink_runtime::ResumePoint> {
        let acked =
            self.engine
                .source_ack(self.name())
                .map_err(|source| PipelineError::AckRecord {
                    action: "read",
                    source: source.into(),
                })?;
        let mut candidates: Vec<String> = known_tables.to_vec();
        if candidates.is_empty() {
            candidates = self
                .engine
                .list_tables()
                .into_iter()
                .map(|t| t.name)
                .collect();
        }
        let committed = candidates
            .iter()
            .filter_map(|t| {
                let cp = self
                    .engine
                    .source_checkpoint(t, self.name())
                    .ok()
                    .flatten()?;
                Some((self.spec.source_table(t), cp))
            })
            .collect();
        Ok(ack::resume_point(acked, committed))
    }

    fn run_once(
        &self,
        plugin: &SourcePlugin,
        transforms: &[(TransformPlugin, String)],
        known_tables: &mut Vec<String>,
    ) -> Result<Stop> {
        let resume = self.resume_point(known_tables)?;
        let (mut source, tables) = plugin
            .start(&self.spec.settings_json, &resume)
            .map_err(|e| PipelineError::Open(e.into()))?;
        let mut chain: Vec<RunningTransform> = transforms
            .iter()
            .map(|(t, settings)| t.start(settings))
            .collect::<Result<_, _>>()
            .map_err(|e| PipelineError::TransformStart(e.into()))?;
        // The tables this run may touch: what `open` declared, under the config's names.
        let mut declared = BTreeSet::new();
        for table in &tables {
            let host_name = self.spec.host_table(&table.name);
            self.ensure_table(&host_name, table)?;
            declared.insert(host_name.clone());
            if !known_tables.contains(&host_name) {
                known_tables.push(host_name);
            }
        }
        let removed = self.removed_tables(known_tables, &declared);
        self.registry.update(self.name(), |s| {
            s.state = SourceState::Running;
            s.tables = known_tables.clone();
            s.removed_tables = removed;
        });
        tracing::info!(source = %self.name(), resume_from = ?resume, "source running");
        let last_checkpoint = resume.checkpoint;
        // Applied but not yet known to be committed.
        let unacked = Mutex::new(AckQueue::default());
        let commit_now = CommitNow::default();
        // Polling (plugin and transforms) and applying (engine) run on two threads, so decoding
        // the next poll overlaps with indexing and buffering the last one.
        let result = std::thread::scope(|scope| {
            let (to_apply, applier_rx) = std::sync::mpsc::sync_channel::<Applied>(2);
            let applier = scope.spawn(|| {
                for work in applier_rx {
                    self.apply_poll(work, &unacked, &commit_now)?;
                }
                Ok::<(), PipelineError>(())
            });
            let polled = self.poll_loop(
                &mut source,
                &mut chain,
                &mut declared,
                &to_apply,
                last_checkpoint,
                &unacked,
            );
            drop(to_apply);
            let applied = applier.join().unwrap_or(Err(PipelineError::ApplyPanicked));
            // An apply failure is the cause of a failed send: report it first.
            applied?;
            let stop = polled?;
            if let Stop::Finished = stop {
                // Wait for the rest to commit, so the final ack reaches the plugin.
                for table in known_tables.iter() {
                    self.handle
                        .block_on(self.engine.commit(table))
                        .map_err(|e| PipelineError::FinalCommit(e.into()))?;
                }
                self.ack_committed(&mut source, &unacked)?;
            }
            Ok(stop)
        });
        // Tables the source added while running are its own from now on (restarts included).
        for table in declared {
            if !known_tables.contains(&table) {
                known_tables.push(table);
            }
        }
        result
    }

    /// Tables this source produced before (in an earlier run, or per the source checkpoints
    /// their snapshots carry) that its latest `open` no longer declares: they keep their data
    /// but receive nothing more (e.g. a table removed from a Postgres publication).
    fn removed_tables(&self, known_tables: &[String], declared: &BTreeSet<String>) -> Vec<String> {
        let mut removed: BTreeSet<String> = known_tables
            .iter()
            .filter(|t| !declared.contains(*t))
            .cloned()
            .collect();
        for info in self.engine.list_tables() {
            if declared.contains(&info.name) || removed.contains(&info.name) {
                continue;
            }
            if let Ok(Some(_)) = self.engine.source_checkpoint(&info.name, self.name()) {
                removed.insert(info.name);
            }
        }
        removed.into_iter().collect()
    }

    /// Polls the plugin and runs the transforms; hands each poll to the apply thread.
    fn poll_loop(
        &self,
        source: &mut RunningSource,
        chain: &mut [RunningTransform],
        declared: &mut BTreeSet<String>,
        to_apply: &std::sync::mpsc::SyncSender<Applied>,
        mut last_checkpoint: Option<String>,
        unacked: &Mutex<AckQueue>,
    ) -> Result<Stop> {
        loop {
            if self.registry.stopping() {
                return Ok(Stop::Shutdown);
            }
            let poll = source
                .poll(self.spec.poll.max_rows, self.spec.poll.timeout_ms)
                .map_err(|e| PipelineError::Poll(e.into()))?;
            metrics::counter!("moonlink_plugin_calls_total", "source" => self.spec.name.clone(), "call" => "poll").increment(1);
            if let Some(lag) = poll.lag {
                self.registry
                    .update(self.name(), |s| s.reported_lag = Some(lag));
            }
            let mut steps = Vec::new();
            for event in poll.events {
                match event {
                    SourceEvent::Changes(batch) => {
                        steps.extend(run_chain(chain, batch)?.into_iter().map(Step::Apply))
                    }
                    other => steps.push(Step::Control(other)),
                }
            }
            // Refused as a whole: nothing of a poll that touches another table is applied.
            self.confine(&steps, declared)?;
            let checkpoint = poll.checkpoint.clone().or(last_checkpoint.clone());
            to_apply
                .send(Applied {
                    steps,
                    poll_checkpoint: poll.checkpoint,
                    checkpoint: checkpoint.clone(),
                    previous: last_checkpoint,
                })
                .map_err(|_| PipelineError::ApplyStopped)?;
            last_checkpoint = checkpoint;
            self.ack_committed(source, unacked)?;
            if poll.finished {
                return Ok(Stop::Finished);
            }
        }
    }

    /// Refuses steps for tables the source did not declare (after the config's renames): a
    /// source may write, truncate or evolve only its own tables. A schema change for a table
    /// not declared yet declares it (a table the source started producing while running, e.g.
    /// one added to a Postgres publication); the apply thread creates it.
    fn confine(&self, steps: &[Step], declared: &mut BTreeSet<String>) -> Result<()> {
        for step in steps {
            if let Step::Control(SourceEvent::SchemaChange(def)) = step {
                let host = self.spec.host_table(&def.name);
                if !declared.contains(&host) && self.may_adopt(&host) {
                    declared.insert(host.clone());
                    tracing::info!(source = %self.name(), table = %host, "source added a table");
                    self.registry.update(self.name(), |s| {
                        if !s.tables.contains(&host) {
                            s.tables.push(host.clone());
                        }
                        s.removed_tables.retain(|t| t != &host);
                    });
                }
            }
            let (action, table) = match step {
                Step::Apply(batch) | Step::Control(SourceEvent::Changes(batch)) => {
                    ("wrote to", &batch.table)
                }
                Step::Control(SourceEvent::Truncate(table)) => ("truncated", table),
                Step::Control(SourceEvent::SchemaChange(def)) => {
                    ("changed the schema of", &def.name)
                }
                Step::Control(SourceEvent::Progress(p)) => ("reported copy progress of", &p.table),
            };
            let host = self.spec.host_table(table);
            if !declared.contains(&host) {
                let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
                return Err(PipelineError::Undeclared {
                    action,
                    table: host,
                    declared: declared.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Whether a table the source did not declare in `open` may become its own by a schema
    /// change: one that does not exist, or that this source produced before (its snapshots
    /// carry this source's checkpoint). Never a table someone else writes.
    fn may_adopt(&self, table: &str) -> bool {
        self.engine.table_info(table).is_err()
            || matches!(
                self.engine.source_checkpoint(table, self.name()),
                Ok(Some(_))
            )
    }

    /// Creates a table a source declared while running (see `confine`). One created by
    /// someone else meanwhile is refused, not adopted.
    fn create_declared(&self, name: &str, schema: moonlink_engine::TableSchema) -> Result<()> {
        let (namespace, table) = split_table_name(name);
        match self.handle.block_on(self.engine.create_table(CreateTable {
            options: Default::default(),
            name: name.to_string(),
            namespace,
            table,
            schema,
        })) {
            Ok(_) => Ok(()),
            Err(EngineError::TableExists(_)) if self.may_adopt(name) => Ok(()),
            Err(EngineError::TableExists(_)) => Err(PipelineError::Undeclared {
                action: "changed the schema of",
                table: name.to_string(),
                declared: "a table created by someone else meanwhile".to_string(),
            }),
            Err(source) => Err(PipelineError::Engine {
                action: "cannot create table",
                table: name.to_string(),
                source: source.into(),
            }),
        }
    }

    /// Applies one poll's steps in order, recording what each checkpoint waits for.
    fn apply_poll(
        &self,
        work: Applied,
        unacked: &Mutex<AckQueue>,
        commit_now: &CommitNow,
    ) -> Result<()> {
        let count = work.steps.len();
        if count == 0 {
            // Idle: what is buffered commits now, not at the next tick.
            commit_now.request(&self.engine, &self.handle, None);
        }
        for (i, step) in work.steps.into_iter().enumerate() {
            let cp = ack::step_checkpoint(i, count, &work.previous, &work.checkpoint);
            match step {
                Step::Apply(mut batch) => {
                    let table = self.spec.host_table(&batch.table);
                    batch.table = table.clone();
                    let rows = batch.operations.len() as u64;
                    let lsn = self.apply(&table, batch, cp.clone())?;
                    commit_now.wrote(&table, rows);
                    if let Some(cp) = cp {
                        lock(unacked).wait_for(table, lsn, cp);
                    }
                    self.registry.update(self.name(), |s| s.rows += rows);
                }
                Step::Control(SourceEvent::Truncate(table)) => {
                    let table = self.spec.host_table(&table);
                    let info = self
                        .handle
                        .block_on(self.engine.truncate(
                            &table,
                            cp.clone().map(|position| SourceCheckpoint {
                                source: self.name().to_string(),
                                position,
                            }),
                        ))
                        .map_err(|source| PipelineError::Engine {
                            action: "cannot truncate",
                            table: table.clone(),
                            source: source.into(),
                        })?;
                    tracing::info!(source = %self.name(), table, "table truncated");
                    if let Some(cp) = cp {
                        lock(unacked).wait_for(table, info.committed_lsn, cp);
                    }
                }
                Step::Control(SourceEvent::SchemaChange(def)) => {
                    let table = self.spec.host_table(&def.name);
                    if self.engine.table_info(&table).is_err() {
                        // Declared while running (see `confine`): created in its first shape.
                        self.create_declared(&table, def.schema)?;
                        continue;
                    }
                    self.handle
                        .block_on(self.engine.evolve_table_to(&table, &def.schema))
                        .map_err(|source| PipelineError::Engine {
                            action: "cannot change the schema of",
                            table,
                            source: source.into(),
                        })?;
                }
                Step::Control(SourceEvent::Progress(mut progress)) => {
                    progress.table = self.spec.host_table(&progress.table);
                    tracing::info!(source = %self.name(), table = %progress.table,
                    rows = progress.rows_copied, total = ?progress.rows_total,
                    percent = ?copy_percent(progress.rows_copied, progress.rows_total),
                    done = progress.done, "initial copy");
                    if progress.done {
                        let table = progress.table.clone();
                        commit_now.request(&self.engine, &self.handle, Some(&table));
                    } else {
                        // The copied prefix commits while the copy runs, so only a tail is
                        // left to commit when it ends.
                        commit_now.request_if_large(
                            &self.engine,
                            &self.handle,
                            &progress.table,
                            progress.rows_copied,
                        );
                    }
                    self.registry.update(self.name(), |s| {
                        s.copy_progress.insert(progress.table.clone(), progress);
                    });
                }
                Step::Control(SourceEvent::Changes(_)) => unreachable!("split above"),
            }
        }
        lock(unacked).poll_done(work.poll_checkpoint);
        Ok(())
    }

    /// Creates a declared table that is missing, with the source's partition spec; an
    /// existing table keeps its own spec (a differing declaration is logged).
    fn ensure_table(&self, name: &str, def: &moonlink_runtime::TableDefinition) -> Result<()> {
        if let Ok(info) = self.engine.table_info(name) {
            if !def.partition_by.is_empty() && info.options.partition_by != def.partition_by {
                tracing::warn!(source = %self.name(), table = name, declared = ?def.partition_by,
                    current = ?info.options.partition_by,
                    "the table exists with another partition spec; it keeps its own");
            }
            return Ok(());
        }
        let (namespace, table) = split_table_name(name);
        let mut schema = def.schema.clone();
        // A default belongs to a column being added, not to a new table's columns.
        schema.defaults.clear();
        let options = moonlink_engine::TableOptions {
            partition_by: def.partition_by.clone(),
            ..Default::default()
        };
        match self.handle.block_on(self.engine.create_table(CreateTable {
            options,
            name: name.to_string(),
            namespace,
            table,
            schema,
        })) {
            Ok(_) | Err(EngineError::TableExists(_)) => Ok(()),
            Err(source) => Err(PipelineError::Engine {
                action: "cannot create table",
                table: name.to_string(),
                source: source.into(),
            }),
        }
    }

    fn apply(&self, table: &str, batch: PluginBatch, checkpoint: Option<String>) -> Result<u64> {
        let engine_error = |action, source: EngineError| PipelineError::Engine {
            action,
            table: table.to_string(),
            source: source.into(),
        };
        let schema = self
            .engine
            .table_schema(table)
            .map_err(|e| engine_error("batch for table", e))?;
        let batch = into_engine_batch(table, &schema, batch).map_err(|source| {
            PipelineError::MalformedBatch {
                table: table.to_string(),
                source: source.into(),
            }
        })?;
        let receipt = match checkpoint {
            Some(cp) => self.handle.block_on(self.engine.apply_from_source(
                table,
                batch,
                SourceCheckpoint {
                    source: self.name().to_string(),
                    position: cp,
                },
            )),
            // Nothing to resume from yet: log it so a crash cannot lose it.
            None => self.handle.block_on(self.engine.apply(
                table,
                batch,
                moonlink_engine::Durability::Logged,
            )),
        }
        .map_err(|e| engine_error("engine refused a batch for", e))?;
        Ok(receipt.lsn)
    }

    /// Acks the newest checkpoint whose rows are all committed: recorded in the catalog, then
    /// told to the plugin.
    fn ack_committed(&self, source: &mut RunningSource, unacked: &Mutex<AckQueue>) -> Result<()> {
        let mut unacked = lock(unacked);
        // Runs on the poll thread after every poll: reads the committed LSN only, never the
        // buffer's lock (an apply or a commit's take holds it for a batch).
        let Some(checkpoint) =
            unacked.take_ackable(|table| self.engine.committed_lsn(table).unwrap_or(0))
        else {
            return Ok(());
        };
        ack::acknowledge(
            &checkpoint,
            |cp| {
                self.engine
                    .record_source_ack(self.name(), cp)
                    .map_err(|source| PipelineError::AckRecord {
                        action: "record",
                        source: source.into(),
                    })
            },
            |cp| source.ack(cp).map_err(|e| PipelineError::Ack(e.into())),
        )?;
        self.registry
            .update(self.name(), |s| s.acked_checkpoint = Some(checkpoint));
        Ok(())
    }
}

/// One poll, handed from the poll thread to the apply thread.
struct Applied {
    steps: Vec<Step>,
    /// The checkpoint the plugin gave this poll, if any.
    poll_checkpoint: Option<String>,
    /// The checkpoint after this poll (the poll's, or the previous one carried on).
    checkpoint: Option<String>,
    /// The checkpoint before this poll.
    previous: Option<String>,
}

/// What the driver does with one event, after transforms.
enum Step {
    Apply(PluginBatch),
    Control(SourceEvent),
}

fn run_chain(chain: &mut [RunningTransform], batch: PluginBatch) -> Result<Vec<PluginBatch>> {
    let mut batches = vec![batch];
    for transform in chain.iter_mut() {
        let mut next = Vec::new();
        for b in &batches {
            next.extend(
                transform
                    .apply(b)
                    .map_err(|e| PipelineError::Transform(e.into()))?,
            );
        }
        batches = next;
    }
    Ok(batches)
}
