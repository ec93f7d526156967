//! Where plugin calls' I/O (sockets, timers, name lookups) is driven.
//!
//! Two ways, both polling the call on the calling thread:
//! - [`shared_io`]: one process-wide multi-thread tokio runtime whose workers run the I/O
//!   driver; the caller sleeps on a condition variable until a worker wakes it
//!   ([`block_on`]). Any thread may call (also one inside another runtime's task). Used by
//!   the short calls of transforms, receivers and rest decoders.
//! - [`LocalIo`]: a current-thread runtime owned by one long-lived instance (a source). Its
//!   sockets are registered with that runtime's reactor, and `block_on` runs the reactor on
//!   the calling thread itself: a read that must wait costs one `epoll_wait` on the poll
//!   thread instead of a hand-off through another thread and back.
//!
//! Invariant: every call of an instance uses the same one of the two, for the instance's
//! whole life. A socket belongs to the reactor it was created under; under another runtime
//! its readiness would never be observed.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use crate::error::RuntimeError;

/// The tokio runtime that drives shared plugin I/O, made once per process and never dropped
/// (like a static: dropping a runtime from async code panics, and stores may outlive any one
/// `PluginRuntime`). A plugin call is polled on the calling thread; this runtime's workers
/// only run the I/O driver, timers and WASI's background tasks.
pub(crate) fn shared_io() -> Result<tokio::runtime::Handle, RuntimeError> {
    static IO: Mutex<Option<tokio::runtime::Handle>> = Mutex::new(None);
    let mut slot = IO.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("moonlink-plugin-io")
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Load {
            path: PathBuf::new(),
            message: format!("cannot start the plugin I/O runtime: {e}"),
        })?;
    let handle = runtime.handle().clone();
    std::mem::forget(runtime);
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Polls `future` to completion on this thread. Unlike a tokio `block_on`, it may be used
/// anywhere (also inside another runtime's task); wake-ups come through a condition variable,
/// so nothing else using this thread's park token can swallow one.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Signal {
        woken: Mutex<bool>,
        condvar: Condvar,
    }
    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            *self.woken.lock().unwrap_or_else(PoisonError::into_inner) = true;
            self.condvar.notify_one();
        }
    }
    let signal = Arc::new(Signal {
        woken: Mutex::new(false),
        condvar: Condvar::new(),
    });
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let mut woken = signal.woken.lock().unwrap_or_else(PoisonError::into_inner);
        while !*woken {
            woken = signal
                .condvar
                .wait(woken)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *woken = false;
    }
}

/// A current-thread tokio runtime for the calls of one instance, driven only while a call
/// runs (`block_on` on the caller's thread). Between calls nothing polls it: reads wait in
/// the kernel's socket buffer, and a write still in flight (WASI spawns one only when the
/// socket's send buffer is full) resumes with the next call.
///
/// A call from a thread inside another tokio runtime's context (an async caller) runs on a
/// helper thread instead, since tokio refuses to nest `block_on`; the caller blocks either way.
pub(crate) struct LocalIo {
    /// Always `Some` until dropped (taken by `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
}

impl LocalIo {
    pub(crate) fn new() -> Result<LocalIo, RuntimeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("moonlink-plugin-io")
            .build()
            .map_err(|e| RuntimeError::Load {
                path: PathBuf::new(),
                message: format!("cannot start a plugin's I/O runtime: {e}"),
            })?;
        Ok(LocalIo {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` to completion on this thread, driving the runtime's reactor and timers
    /// while it waits (on a helper thread when this one is inside another runtime).
    pub(crate) fn block_on<F>(&self, future: F) -> Result<F::Output, RuntimeError>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let Some(runtime) = &self.runtime else {
            return Err(RuntimeError::Trap(
                "the plugin's I/O runtime is shut down".into(),
            ));
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(runtime.block_on(future));
        }
        std::thread::scope(|scope| {
            match scope.spawn(|| runtime.block_on(future)).join() {
                Ok(output) => Ok(output),
                // A panic in the call stays a panic, as on the calling thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for LocalIo {
    fn drop(&mut self) {
        // Without waiting: a plain drop blocks on the blocking pool (a name lookup in flight)
        // and panics when the owner happens to be dropped inside an async task.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
