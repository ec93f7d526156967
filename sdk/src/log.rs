//! Logging from plugins: lines go to the host's log, tagged with the plugin's name. Natively
//! (in `cargo test`) they go to stderr.

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the plugin handles.
    Warn,
    /// A failure.
    Error,
}

/// Writes one line to the host's log.
pub fn log(level: Level, message: &str) {
    #[cfg(all(target_arch = "wasm32", any(feature = "source", feature = "transform")))]
    {
        use crate::bindings::host::moonlink::plugin::host::{log as host_log, LogLevel};
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        host_log(level, message);
    }
    #[cfg(not(all(target_arch = "wasm32", any(feature = "source", feature = "transform"))))]
    eprintln!("[{level:?}] {message}");
}

/// `moonlink_sdk::info!("copied {} rows", n)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($arg)*)) };
}

/// `moonlink_sdk::warn!("retrying: {}", e)`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, &format!($($arg)*)) };
}

/// `moonlink_sdk::debug!("polled {} rows", n)`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, &format!($($arg)*)) };
}
