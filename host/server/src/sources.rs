//! Runs source plugins: poll → transform chain → engine, ack once committed, and restart from
//! the last committed checkpoint (with back-off) when the plugin faults.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use moonlink_engine::{CreateTable, Engine, EngineError};
use moonlink_runtime::{
    into_engine_batch, Capabilities, CopyProgress, PluginBatch, PluginRuntime, ResumePoint,
    RunningSource, RunningTransform, SourceEvent, SourcePlugin, TransformPlugin,
};
use serde::Serialize;

use crate::plugin_config::SourceConfig;

/// What `GET /plugins` reports for a source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub path: String,
    /// starting | running | finished | restarting | failed
    pub state: &'static str,
    pub tables: Vec<String>,
    pub rows: u64,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// The last checkpoint acknowledged to the plugin (durable in Iceberg).
    pub acked_checkpoint: Option<String>,
    /// Initial-copy progress per table (host table name), as the source reports it.
    pub copy_progress: BTreeMap<String, CopyProgress>,
}

/// All sources' statuses, shared with the HTTP API.
#[derive(Clone, Default)]
pub struct SourceRegistry {
    statuses: Arc<Mutex<BTreeMap<String, SourceStatus>>>,
    stopping: Arc<AtomicBool>,
    /// The longest time one plugin call of any source may take (its time limit).
    longest_call: Arc<Mutex<Duration>>,
}

/// A lock that survives a panic elsewhere: the data behind these locks (statuses, pending
/// acknowledgements) stays consistent between statements, so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long shutdown waits for source threads beyond the longest plugin call.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(3);

impl SourceRegistry {
    pub fn list(&self) -> Vec<SourceStatus> {
        lock(&self.statuses).values().cloned().collect()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        if let Some(status) = lock(&self.statuses).get_mut(name) {
            f(status);
        }
    }

    /// Initial-copy progress of a host table, if a source is copying or has copied it.
    pub fn copy_progress(&self, table: &str) -> Option<CopyProgress> {
        lock(&self.statuses)
            .values()
            .find_map(|s| s.copy_progress.get(table).cloned())
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleeps `duration`, or less if shutdown begins meanwhile.
    fn sleep_unless_stopping(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// How long shutdown waits for the source threads: a call in progress ends within its
    /// time limit (blocked host calls included), then a thread commits and returns.
    pub fn shutdown_grace(&self) -> Duration {
        *lock(&self.longest_call) + SHUTDOWN_SLACK
    }
}

/// Stops every source and waits for their threads, at most [`SourceRegistry::shutdown_grace`].
/// Returns the names of the threads still running then (stuck: they are left behind, and the
/// caller commits what was applied and exits anyway).
pub async fn stop_all(
    registry: &SourceRegistry,
    threads: Vec<std::thread::JoinHandle<()>>,
) -> Vec<String> {
    registry.stop();
    let deadline = Instant::now() + registry.shutdown_grace();
    while Instant::now() < deadline && threads.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stuck = Vec::new();
    for thread in threads {
        if thread.is_finished() {
            if thread.join().is_err() {
                tracing::error!("a source thread panicked");
            }
        } else {
            stuck.push(thread.thread().name().unwrap_or("source").to_string());
        }
    }
    stuck
}

/// Starts one thread per source. Load failures are reported as `failed`, never fatal.
pub fn start_all(
    runtime: &PluginRuntime,
    engine: &Engine,
    configs: Vec<SourceConfig>,
    registry: &SourceRegistry,
) -> Vec<std::thread::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::current();
    let mut threads = Vec::new();
    for config in configs {
        let name = config.name();
        let path = config.path.clone().unwrap_or_default();
        let call_limit = config
            .capabilities
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(runtime.config().call_timeout)
            .max(runtime.config().call_timeout);
        {
            let mut longest = lock(&registry.longest_call);
            *longest = (*longest).max(call_limit);
        }
        lock(&registry.statuses).insert(
            name.clone(),
            SourceStatus {
                name: name.clone(),
                path: path.display().to_string(),
                state: "starting",
                tables: Vec::new(),
                rows: 0,
                restarts: 0,
                last_error: None,
                acked_checkpoint: None,
                copy_progress: BTreeMap::new(),
            },
        );
        let driver = Driver {
            name: name.clone(),
            config,
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
    name: String,
    config: SourceConfig,
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
    fn fail(&self, state: &'static str, message: String) {
        tracing::error!(source = %self.name, state, "{message}");
        self.registry.update(&self.name, |s| {
            s.state = state;
            s.last_error = Some(message);
        });
    }

    fn run(self) {
        let path = self.config.path.clone().unwrap_or_default();
        let capabilities = Capabilities {
            network: self.config.granted_network(),
            env: self.config.granted_env(),
            directories: self
                .config
                .capabilities
                .directories
                .iter()
                .map(|d| (d.host.clone(), d.guest.clone()))
                .collect(),
            memory_limit_bytes: self.config.capabilities.memory_mib.map(|m| m * 1024 * 1024),
            call_timeout: self
                .config
                .capabilities
                .timeout_ms
                .map(std::time::Duration::from_millis),
        };
        let plugin = match SourcePlugin::load(&self.runtime, &path, &self.name, capabilities) {
            Ok(p) => p,
            Err(e) => return self.fail("failed", e.to_string()),
        };
        let mut transforms = Vec::new();
        for t in &self.config.transforms {
            let name = t.name.clone().unwrap_or_else(|| {
                t.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            match TransformPlugin::load(&self.runtime, &t.path, &name) {
                Ok(p) => transforms.push((p, SourceConfig::settings_json(&t.settings))),
                Err(e) => return self.fail("failed", e.to_string()),
            }
        }
        let mut backoff = Duration::from_millis(200);
        let mut known_tables: Vec<String> = Vec::new();
        while !self.registry.stopping() {
            match self.run_once(&plugin, &transforms, &mut known_tables) {
                Ok(Stop::Finished) => {
                    self.registry.update(&self.name, |s| s.state = "finished");
                    tracing::info!(source = %self.name, "source finished");
                    return;
                }
                Ok(Stop::Shutdown) => return,
                Err(message) => {
                    self.fail("restarting", message);
                    self.registry.update(&self.name, |s| s.restarts += 1);
                    // Resume from a checkpoint that covers everything applied so far: commit
                    // the buffered rows first, or they would be produced twice.
                    for table in &known_tables {
                        if let Err(e) = self.handle.block_on(self.engine.commit(table)) {
                            tracing::warn!(source = %self.name, table, error = %e, "commit before restart failed");
                        }
                    }
                    self.registry.sleep_unless_stopping(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Where to resume: the last acknowledged checkpoint, plus tables whose committed
    /// snapshots are further ahead (a crash can land between two tables' commits).
    fn resume_point(&self, known_tables: &[String]) -> Result<ResumePoint, String> {
        let acked = self
            .engine
            .source_ack(&self.name)
            .map_err(|e| format!("cannot read the acknowledged checkpoint: {e}"))?;
        let mut candidates: Vec<String> = known_tables.to_vec();
        if candidates.is_empty() {
            candidates = self
                .engine
                .list_tables()
                .into_iter()
                .map(|t| t.name)
                .collect();
        }
        let committed: Vec<(String, String)> = candidates
            .iter()
            .filter_map(|t| {
                let cp = self
                    .engine
                    .source_checkpoint(t, &self.name)
                    .ok()
                    .flatten()?;
                Some((self.config.source_table(t), cp))
            })
            .collect();
        // Without an acknowledgement (none happened yet), the least advanced table is safe.
        let checkpoint = acked.or_else(|| {
            committed
                .iter()
                .map(|(_, cp)| cp.clone())
                .min_by(|a, b| checkpoint_order(a, b))
        });
        let tables = committed
            .into_iter()
            .filter(|(_, cp)| {
                checkpoint
                    .as_ref()
                    .is_none_or(|c| checkpoint_order(cp, c).is_gt())
            })
            .collect();
        Ok(ResumePoint { checkpoint, tables })
    }

    fn run_once(
        &self,
        plugin: &SourcePlugin,
        transforms: &[(TransformPlugin, String)],
        known_tables: &mut Vec<String>,
    ) -> Result<Stop, String> {
        let resume = self.resume_point(known_tables)?;
        let settings = SourceConfig::settings_json(&self.config.settings);
        let (mut source, tables) = plugin
            .start(&settings, &resume)
            .map_err(|e| format!("open failed: {e}"))?;
        let mut chain: Vec<RunningTransform> = transforms
            .iter()
            .map(|(t, settings)| t.start(settings))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("transform failed to start: {e}"))?;
        // The tables this run may touch: what `open` declared, under the config's names.
        let mut declared = BTreeSet::new();
        for table in &tables {
            let host_name = self.config.host_table(&table.name);
            self.ensure_table(&host_name, table.schema.clone())?;
            declared.insert(host_name.clone());
            if !known_tables.contains(&host_name) {
                known_tables.push(host_name);
            }
        }
        self.registry.update(&self.name, |s| {
            s.state = "running";
            s.tables = known_tables.clone();
        });
        tracing::info!(source = %self.name, resume_from = ?resume, "source running");
        let last_checkpoint = resume.checkpoint;
        // (table, lsn, checkpoint) applied but not yet known to be committed.
        let unacked: Mutex<Vec<(String, u64, String)>> = Mutex::new(Vec::new());
        // Polling (plugin and transforms) and applying (engine) run on two threads, so decoding
        // the next poll overlaps with indexing and buffering the last one.
        std::thread::scope(|scope| {
            let (to_apply, applier_rx) = std::sync::mpsc::sync_channel::<Applied>(2);
            let applier = scope.spawn(|| {
                for work in applier_rx {
                    self.apply_poll(work, &unacked)?;
                }
                Ok::<(), String>(())
            });
            let polled = self.poll_loop(
                &mut source,
                &mut chain,
                &declared,
                &to_apply,
                last_checkpoint,
                &unacked,
            );
            drop(to_apply);
            let applied = applier
                .join()
                .unwrap_or_else(|_| Err("the apply thread panicked".into()));
            // An apply failure is the cause of a failed send: report it first.
            applied?;
            let stop = polled?;
            if let Stop::Finished = stop {
                // Wait for the rest to commit, so the final ack reaches the plugin.
                for table in known_tables.iter() {
                    self.handle
                        .block_on(self.engine.commit(table))
                        .map_err(|e| format!("final commit failed: {e}"))?;
                }
                self.ack_committed(&mut source, &unacked)?;
            }
            Ok(stop)
        })
    }

    /// Polls the plugin and runs the transforms; hands each poll to the apply thread.
    fn poll_loop(
        &self,
        source: &mut RunningSource,
        chain: &mut [RunningTransform],
        declared: &BTreeSet<String>,
        to_apply: &std::sync::mpsc::SyncSender<Applied>,
        mut last_checkpoint: Option<String>,
        unacked: &Mutex<Vec<(String, u64, String)>>,
    ) -> Result<Stop, String> {
        loop {
            if self.registry.stopping() {
                return Ok(Stop::Shutdown);
            }
            let poll = source
                .poll(self.config.poll.max_rows, self.config.poll.timeout_ms)
                .map_err(|e| format!("poll failed: {e}"))?;
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
                .map_err(|_| "the apply thread stopped".to_string())?;
            last_checkpoint = checkpoint;
            self.ack_committed(source, unacked)?;
            if poll.finished {
                return Ok(Stop::Finished);
            }
        }
    }

    /// Refuses steps for tables the source did not declare in `open` (after the config's
    /// renames): a source may write, truncate or evolve only its own tables.
    fn confine(&self, steps: &[Step], declared: &BTreeSet<String>) -> Result<(), String> {
        for step in steps {
            let (what, table) = match step {
                Step::Apply(batch) | Step::Control(SourceEvent::Changes(batch)) => {
                    ("wrote to", &batch.table)
                }
                Step::Control(SourceEvent::Truncate(table)) => ("truncated", table),
                Step::Control(SourceEvent::SchemaChange(def)) => {
                    ("changed the schema of", &def.name)
                }
                Step::Control(SourceEvent::Progress(p)) => ("reported copy progress of", &p.table),
            };
            let host = self.config.host_table(table);
            if !declared.contains(&host) {
                let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
                return Err(format!(
                    "the source {what} table '{host}', which it did not declare in open \
                     (declared: {}); the poll was refused, nothing of it was applied",
                    declared.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Applies one poll's steps in order, recording what each checkpoint waits for.
    fn apply_poll(
        &self,
        work: Applied,
        unacked: &Mutex<Vec<(String, u64, String)>>,
    ) -> Result<(), String> {
        let count = work.steps.len();
        for (i, step) in work.steps.into_iter().enumerate() {
            // Only the last step of a poll carries the poll's checkpoint: a commit that
            // lands between steps must not claim the rest of the poll.
            let cp = if i + 1 == count {
                work.checkpoint.clone()
            } else {
                work.previous.clone()
            };
            match step {
                Step::Apply(mut batch) => {
                    let table = self.config.host_table(&batch.table);
                    batch.table = table.clone();
                    let rows = batch.operations.len() as u64;
                    let lsn = self.apply(&table, batch, cp.clone())?;
                    if let Some(cp) = cp {
                        lock(unacked).push((table, lsn, cp));
                    }
                    self.registry.update(&self.name, |s| s.rows += rows);
                }
                Step::Control(SourceEvent::Truncate(table)) => {
                    let table = self.config.host_table(&table);
                    let info = self
                        .handle
                        .block_on(
                            self.engine
                                .truncate(&table, cp.clone().map(|cp| (self.name.clone(), cp))),
                        )
                        .map_err(|e| format!("cannot truncate '{table}': {e}"))?;
                    tracing::info!(source = %self.name, table, "table truncated");
                    if let Some(cp) = cp {
                        lock(unacked).push((table, info.committed_lsn, cp));
                    }
                }
                Step::Control(SourceEvent::SchemaChange(def)) => {
                    let table = self.config.host_table(&def.name);
                    self.handle
                        .block_on(self.engine.evolve_table(&table, def.schema.columns))
                        .map_err(|e| format!("cannot change the schema of '{table}': {e}"))?;
                }
                Step::Control(SourceEvent::Progress(mut progress)) => {
                    progress.table = self.config.host_table(&progress.table);
                    tracing::info!(source = %self.name, table = %progress.table,
                    rows = progress.rows_copied, total = ?progress.rows_total,
                    percent = ?progress.rows_total.filter(|t| *t > 0)
                        .map(|t| progress.rows_copied.min(t) * 100 / t),
                    done = progress.done, "initial copy");
                    self.registry.update(&self.name, |s| {
                        s.copy_progress.insert(progress.table.clone(), progress);
                    });
                }
                Step::Control(SourceEvent::Changes(_)) => unreachable!("split above"),
            }
        }
        // A checkpoint no applied step carries (a poll of only progress, or of changes to
        // nothing mirrored) is acknowledged once everything before it is committed.
        if let Some(cp) = work.poll_checkpoint {
            let mut unacked = lock(unacked);
            if unacked.last().map(|u| &u.2) != Some(&cp) {
                unacked.push((String::new(), 0, cp));
            }
        }
        Ok(())
    }

    fn ensure_table(&self, name: &str, schema: moonlink_engine::TableSchema) -> Result<(), String> {
        if self.engine.table_info(name).is_ok() {
            return Ok(());
        }
        let (namespace, table) = match name.rsplit_once('.') {
            Some((ns, t)) => (ns.to_string(), t.to_string()),
            None => ("default".to_string(), name.to_string()),
        };
        match self.handle.block_on(self.engine.create_table(CreateTable {
            options: Default::default(),
            name: name.to_string(),
            namespace,
            table,
            schema,
        })) {
            Ok(_) | Err(EngineError::TableExists(_)) => Ok(()),
            Err(e) => Err(format!("cannot create table '{name}': {e}")),
        }
    }

    fn apply(
        &self,
        table: &str,
        batch: PluginBatch,
        checkpoint: Option<String>,
    ) -> Result<u64, String> {
        let schema = self
            .engine
            .table_schema(table)
            .map_err(|e| format!("batch for table '{table}': {e}"))?;
        let batch = into_engine_batch(table, &schema, batch)
            .map_err(|e| format!("malformed batch for '{table}': {e}"))?;
        let receipt = match checkpoint {
            Some(cp) => self
                .handle
                .block_on(self.engine.apply_from_source(table, batch, &self.name, cp)),
            // Nothing to resume from yet: log it so a crash cannot lose it.
            None => self.handle.block_on(self.engine.apply(
                table,
                batch,
                moonlink_engine::Durability::Logged,
            )),
        }
        .map_err(|e| format!("engine refused a batch for '{table}': {e}"))?;
        Ok(receipt.lsn)
    }

    /// Acks the newest checkpoint whose rows are all committed.
    fn ack_committed(
        &self,
        source: &mut RunningSource,
        unacked: &Mutex<Vec<(String, u64, String)>>,
    ) -> Result<(), String> {
        let mut unacked = lock(unacked);
        let mut done = 0;
        for (table, lsn, _) in unacked.iter() {
            if table.is_empty() {
                done += 1;
                continue;
            }
            let committed = self
                .engine
                .table_info(table)
                .map(|i| i.committed_lsn)
                .unwrap_or(0);
            if committed < *lsn {
                break;
            }
            done += 1;
        }
        if done == 0 {
            return Ok(());
        }
        let checkpoint = unacked[done - 1].2.clone();
        unacked.drain(..done);
        // Recorded before the plugin hears of it: a restart resumes from here.
        self.engine
            .record_source_ack(&self.name, &checkpoint)
            .map_err(|e| format!("cannot record the acknowledged checkpoint: {e}"))?;
        source
            .ack(&checkpoint)
            .map_err(|e| format!("ack failed: {e}"))?;
        self.registry
            .update(&self.name, |s| s.acked_checkpoint = Some(checkpoint));
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

/// The order of a source's checkpoints (see the WIT `source` interface): by length, then bytes.
fn checkpoint_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn run_chain(
    chain: &mut [RunningTransform],
    batch: PluginBatch,
) -> Result<Vec<PluginBatch>, String> {
    let mut batches = vec![batch];
    for transform in chain.iter_mut() {
        let mut next = Vec::new();
        for b in &batches {
            next.extend(
                transform
                    .apply(b)
                    .map_err(|e| format!("transform failed: {e}"))?,
            );
        }
        batches = next;
    }
    Ok(batches)
}
