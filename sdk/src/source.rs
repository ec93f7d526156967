//! Source plugins: the host calls `open` once, `poll` in a loop and `ack` when a checkpoint is
//! durable in Iceberg. Implement [`Source`] and call [`export_source!`](crate::export_source).

use std::any::Any;
use std::cell::RefCell;

pub use crate::bindings::source::exports::moonlink::plugin::source::{
    CopyProgress, PollResult, ResumePoint, SourceEvent,
};
/// Moved to the shared types in WIT 0.3.0 (receivers declare tables too); re-exported here.
pub use crate::TableDef;
use crate::{BatchBuilder, ChangeBatch, Checkpoint, Config};

impl PollResult {
    /// A poll result of change batches only.
    pub fn batches(
        batches: Vec<ChangeBatch>,
        checkpoint: Option<String>,
        finished: bool,
    ) -> PollResult {
        PollResult {
            events: batches.into_iter().map(SourceEvent::Changes).collect(),
            checkpoint,
            finished,
        }
    }
}

impl PollResult {
    /// The rows of `batch` with the checkpoint after them; an empty batch yields a poll with
    /// no events and no checkpoint.
    pub fn rows(batch: BatchBuilder, checkpoint: Checkpoint, finished: bool) -> PollResult {
        if batch.is_empty() {
            return PollResult::batches(vec![], None, finished);
        }
        PollResult::batches(vec![batch.finish()], Some(checkpoint.into()), finished)
    }
}

impl ResumePoint {
    /// Where `table` resumes as a [`Checkpoint::counter`]: `Ok(None)` on a first start, an
    /// error naming the checkpoint when it is not a counter.
    pub fn counter_for(&self, table: &str) -> Result<Option<u64>, String> {
        self.for_table(table)
            .map(|c| Checkpoint::read_counter(&c))
            .transpose()
    }

    /// A first start: nothing durable yet.
    pub fn fresh() -> ResumePoint {
        ResumePoint {
            checkpoint: None,
            tables: Vec::new(),
        }
    }

    /// Resume every table from `checkpoint`.
    pub fn at(checkpoint: Option<String>) -> ResumePoint {
        ResumePoint {
            checkpoint,
            tables: Vec::new(),
        }
    }

    /// Where `table` resumes: its own checkpoint when it is ahead of the others, else the
    /// acknowledged one. A source that writes one table resumes from exactly this.
    pub fn for_table(&self, table: &str) -> Option<String> {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, checkpoint)| checkpoint.clone())
            .or_else(|| self.checkpoint.clone())
    }
}

impl PollResult {
    /// The change batches of this poll, in order (other events left out).
    pub fn into_batches(self) -> Vec<ChangeBatch> {
        self.events
            .into_iter()
            .filter_map(|e| match e {
                SourceEvent::Changes(batch) => Some(batch),
                _ => None,
            })
            .collect()
    }
}

/// Tells the host how far this source is behind its upstream: `bytes` of upstream log not yet
/// acknowledged and `millis`, the age of the oldest change not yet acknowledged. Call it from
/// `poll` whenever the source learns the upstream's position; the newest report is what
/// `GET /metrics` (`moonlink_source_lag_bytes`, `moonlink_source_lag_seconds`) and
/// `GET /status` show. Natively (in `cargo test`) it does nothing.
///
/// ```
/// moonlink_sdk::source::report_lag(Some(4096), Some(1500));
/// ```
pub fn report_lag(bytes: Option<u64>, millis: Option<u64>) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::host::moonlink::plugin::host::report_lag(bytes, millis);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (bytes, millis);
}

/// A source connector.
pub trait Source: Sized + 'static {
    /// Starts from `resume` (`resume.checkpoint` is the last durable checkpoint, `None` on
    /// first start; `resume.tables` lists every table already committed, with the checkpoint
    /// up to which its changes must be skipped: its own when further ahead, else the
    /// acknowledged one; a table not listed holds nothing from this source) and declares the
    /// tables the source produces.
    fn open(config: Config, resume: ResumePoint) -> Result<(Self, Vec<TableDef>), String>;

    /// Returns up to `max_rows` changes, waiting at most `timeout_ms` for them.
    fn poll(&mut self, max_rows: u32, timeout_ms: u32) -> Result<PollResult, String>;

    /// Everything up to `checkpoint` is committed; upstream resources may be released.
    fn ack(&mut self, _checkpoint: String) {}
}

thread_local! {
    // A component instance is single-threaded and runs one source.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub fn __open<S: Source>(config: String, resume: ResumePoint) -> Result<Vec<TableDef>, String> {
    let config = Config::parse(&config)?;
    let (source, tables) = S::open(config, resume)?;
    INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(source)));
    Ok(tables)
}

fn with_source<S: Source, R>(f: impl FnOnce(&mut S) -> Result<R, String>) -> Result<R, String> {
    INSTANCE.with(|i| {
        let mut slot = i.borrow_mut();
        let source = slot
            .as_mut()
            .and_then(|s| s.downcast_mut::<S>())
            .ok_or_else(|| "the host called the source before open".to_string())?;
        f(source)
    })
}

#[doc(hidden)]
pub fn __poll<S: Source>(max_rows: u32, timeout_ms: u32) -> Result<PollResult, String> {
    with_source::<S, _>(|s| s.poll(max_rows, timeout_ms))
}

#[doc(hidden)]
pub fn __ack<S: Source>(checkpoint: String) {
    let _ = with_source::<S, _>(|s| {
        s.ack(checkpoint);
        Ok(())
    });
}

/// Exports a type implementing [`Source`] as the plugin's `source` interface.
#[macro_export]
macro_rules! export_source {
    ($source:ident) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct MoonlinkSourceExport;
            impl $crate::bindings::source::exports::moonlink::plugin::source::Guest
                for MoonlinkSourceExport
            {
                fn open(
                    config: String,
                    resume: $crate::source::ResumePoint,
                ) -> Result<Vec<$crate::source::TableDef>, String> {
                    $crate::source::__open::<$source>(config, resume)
                }
                fn poll(
                    max_rows: u32,
                    timeout_ms: u32,
                ) -> Result<$crate::source::PollResult, String> {
                    $crate::source::__poll::<$source>(max_rows, timeout_ms)
                }
                fn ack(checkpoint: String) {
                    $crate::source::__ack::<$source>(checkpoint)
                }
            }
            $crate::bindings::source::__export_source_world!(
                MoonlinkSourceExport with_types_in $crate::bindings::source
            );
        };
    };
}
