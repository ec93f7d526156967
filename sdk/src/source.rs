//! Source plugins: the host calls `open` once, `poll` in a loop and `ack` when a checkpoint is
//! durable in Iceberg. Implement [`Source`] and call [`export_source!`](crate::export_source).

use std::any::Any;
use std::cell::RefCell;

pub use crate::bindings::source::exports::moonlink::plugin::source::{PollResult, TableDef};
use crate::Config;

/// A source connector.
pub trait Source: Sized + 'static {
    /// Starts from `resume_from` (the last durable checkpoint, `None` on first start) and
    /// declares the tables the source produces.
    fn open(config: Config, resume_from: Option<String>) -> Result<(Self, Vec<TableDef>), String>;

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
pub fn __open<S: Source>(
    config: String,
    resume_from: Option<String>,
) -> Result<Vec<TableDef>, String> {
    let config = Config::parse(&config)?;
    let (source, tables) = S::open(config, resume_from)?;
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
                    resume_from: Option<String>,
                ) -> Result<Vec<$crate::source::TableDef>, String> {
                    $crate::source::__open::<$source>(config, resume_from)
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
