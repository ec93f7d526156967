//! Every source's status, shared between the driver threads and whoever reports them.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use moonlink_runtime::{CopyProgress, SourceLag};

/// Where a source is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Loading the plugin and its transforms.
    Starting,
    /// Polling.
    Running,
    /// The plugin said it has nothing more; everything it produced is committed and acked.
    Finished,
    /// Faulted; restarting from the last durable checkpoint after a back-off.
    Restarting,
    /// Could not be loaded; not retried.
    Failed,
}

impl SourceState {
    /// The state's name as reported: `starting`, `running`, `finished`, `restarting`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Running => "running",
            SourceState::Finished => "finished",
            SourceState::Restarting => "restarting",
            SourceState::Failed => "failed",
        }
    }
}

impl fmt::Display for SourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One source's status.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// The plugin's wasm file.
    pub path: String,
    /// Where it is in its life.
    pub state: SourceState,
    /// The host tables it declared (over all its runs).
    pub tables: Vec<String>,
    /// Tables it produced before that its latest run no longer declares (e.g. removed from a
    /// Postgres publication): they keep their data and receive nothing more.
    pub removed_tables: Vec<String>,
    /// Rows applied (after transforms).
    pub rows: u64,
    /// Restarts after faults.
    pub restarts: u64,
    /// The last fault.
    pub last_error: Option<String>,
    /// The last checkpoint acknowledged to the plugin (durable in Iceberg).
    pub acked_checkpoint: Option<String>,
    /// Initial-copy progress per table (host table name), as the source reports it.
    pub copy_progress: BTreeMap<String, CopyProgress>,
    /// The lag the source last measured against its upstream (`report-lag`), if it does.
    pub reported_lag: Option<SourceLag>,
}

/// A fault worth showing an operator: a source that faulted, or a commit that failed.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// When it was recorded.
    pub at: SystemTime,
    /// `source` or `commit`.
    pub kind: &'static str,
    /// The source's or the table's name.
    pub origin: String,
    /// What happened.
    pub message: String,
}

/// How many recent faults are kept.
const RECENT_FAULTS: usize = 50;

/// All sources' statuses, and the shutdown flag their threads watch.
#[derive(Clone, Default)]
pub struct SourceRegistry {
    statuses: Arc<Mutex<BTreeMap<String, SourceStatus>>>,
    /// When each source's acknowledged checkpoint last advanced (or it was registered): lag.
    advanced: Arc<Mutex<BTreeMap<String, Instant>>>,
    /// The newest faults, oldest first.
    faults: Arc<Mutex<VecDeque<FaultRecord>>>,
    stopping: Arc<AtomicBool>,
    /// The longest time one plugin call of any source may take (its time limit).
    longest_call: Arc<Mutex<Duration>>,
}

/// A lock that survives a panic elsewhere: the data behind these locks (statuses, pending
/// acknowledgements) stays consistent between statements, so a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long shutdown waits for source threads beyond the longest plugin call.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(3);

impl SourceRegistry {
    /// Every source's status, by name.
    pub fn list(&self) -> Vec<SourceStatus> {
        lock(&self.statuses).values().cloned().collect()
    }

    /// Adds a source that is starting, and its call limit to the shutdown grace.
    pub(crate) fn register(&self, name: &str, path: String, call_limit: Duration) {
        {
            let mut longest = lock(&self.longest_call);
            *longest = (*longest).max(call_limit);
        }
        lock(&self.advanced).insert(name.to_string(), Instant::now());
        lock(&self.statuses).insert(
            name.to_string(),
            SourceStatus {
                name: name.to_string(),
                path,
                state: SourceState::Starting,
                tables: Vec::new(),
                removed_tables: Vec::new(),
                rows: 0,
                restarts: 0,
                last_error: None,
                acked_checkpoint: None,
                copy_progress: BTreeMap::new(),
                reported_lag: None,
            },
        );
    }

    pub(crate) fn update(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        let mut statuses = lock(&self.statuses);
        let Some(status) = statuses.get_mut(name) else {
            return;
        };
        let (acked, state, restarts) = (
            status.acked_checkpoint.clone(),
            status.state,
            status.restarts,
        );
        f(status);
        if status.acked_checkpoint != acked {
            lock(&self.advanced).insert(name.to_string(), Instant::now());
        }
        if status.restarts > restarts {
            metrics::counter!("moonlink_source_restarts_total", "source" => name.to_string())
                .increment(status.restarts - restarts);
        }
        // Entering `restarting` or `failed` is a fault.
        if status.state != state
            && matches!(status.state, SourceState::Restarting | SourceState::Failed)
        {
            metrics::counter!("moonlink_source_faults_total", "source" => name.to_string())
                .increment(1);
            let message = status.last_error.clone().unwrap_or_default();
            drop(statuses);
            self.record_fault("source", name, &message);
        }
    }

    /// Seconds since the source's acknowledged checkpoint last advanced (since it was
    /// registered, before its first acknowledgement): the generic lag.
    pub fn checkpoint_age(&self, name: &str) -> Option<Duration> {
        lock(&self.advanced).get(name).map(Instant::elapsed)
    }

    /// A source's lag in seconds: what the source measured against its upstream when it
    /// reports lag (Postgres: the age of its oldest unacknowledged change), otherwise the
    /// generic [`checkpoint_age`](Self::checkpoint_age).
    pub fn lag_seconds(&self, status: &SourceStatus) -> Option<f64> {
        status
            .reported_lag
            .and_then(|lag| lag.seconds)
            .or_else(|| self.checkpoint_age(&status.name).map(|d| d.as_secs_f64()))
    }

    /// Records a fault for operators (kept: the newest few).
    pub fn record_fault(&self, kind: &'static str, origin: &str, message: &str) {
        let mut faults = lock(&self.faults);
        if faults.len() == RECENT_FAULTS {
            faults.pop_front();
        }
        faults.push_back(FaultRecord {
            at: SystemTime::now(),
            kind,
            origin: origin.to_string(),
            message: message.to_string(),
        });
    }

    /// The newest faults, newest first.
    pub fn recent_faults(&self) -> Vec<FaultRecord> {
        lock(&self.faults).iter().rev().cloned().collect()
    }

    /// Initial-copy progress of a host table, if a source is copying or has copied it.
    pub fn copy_progress(&self, table: &str) -> Option<CopyProgress> {
        lock(&self.statuses)
            .values()
            .find_map(|s| s.copy_progress.get(table).cloned())
    }

    /// The source that no longer produces a host table it produced before, if any.
    pub fn removed_from(&self, table: &str) -> Option<String> {
        lock(&self.statuses)
            .values()
            .find(|s| s.removed_tables.iter().any(|t| t == table))
            .map(|s| s.name.clone())
    }

    /// The source that produces a host table now, if any.
    pub fn produced_by(&self, table: &str) -> Option<String> {
        lock(&self.statuses)
            .values()
            .find(|s| {
                s.tables.iter().any(|t| t == table) && !s.removed_tables.iter().any(|t| t == table)
            })
            .map(|s| s.name.clone())
    }

    /// Tells every source thread to stop (see [`stop_all`]).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleeps `duration`, or less if shutdown begins meanwhile.
    pub(crate) fn sleep_unless_stopping(&self, duration: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_checkpoint_advances_are_recorded() {
        let registry = SourceRegistry::default();
        registry.register("s", "s.wasm".into(), Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(20));
        let before = registry.checkpoint_age("s").expect("registered");
        registry.update("s", |s| s.acked_checkpoint = Some("1".into()));
        assert!(registry.checkpoint_age("s").expect("registered") < before);
        // The same checkpoint again is not an advance.
        std::thread::sleep(Duration::from_millis(20));
        registry.update("s", |s| s.acked_checkpoint = Some("1".into()));
        assert!(registry.checkpoint_age("s").expect("registered") >= Duration::from_millis(20));

        registry.update("s", |s| {
            s.state = SourceState::Restarting;
            s.last_error = Some("boom".into());
        });
        // Still restarting: not a new fault.
        registry.update("s", |s| s.restarts += 1);
        let faults = registry.recent_faults();
        assert_eq!(faults.len(), 1);
        assert_eq!((faults[0].kind, faults[0].origin.as_str()), ("source", "s"));
        assert_eq!(faults[0].message, "boom");

        for i in 0..RECENT_FAULTS + 5 {
            registry.record_fault("commit", "t", &format!("f{i}"));
        }
        let faults = registry.recent_faults();
        assert_eq!(faults.len(), RECENT_FAULTS);
        assert_eq!(
            faults[0].message,
            format!("f{}", RECENT_FAULTS + 4),
            "newest first"
        );
    }
}
