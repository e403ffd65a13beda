//! The background thread on which the tokio driver runs: one current-thread runtime per
//! flag or set, the way the `postgres` crate owns a runtime for `tokio-postgres`.
//!
//! The thread drives the runtime's I/O and timers for as long as any handle (flag, guard,
//! subscription) holds it; the handles block on futures from their own threads with
//! [`Handle::block_on`](tokio::runtime::Handle::block_on), which works on a current-thread
//! runtime because this thread keeps driving it.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::Error;

/// The runtime and its thread; shared by every handle made from one flag or set.
#[derive(Debug)]
pub(crate) struct Runtime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Starts the thread and its runtime.
    pub(crate) fn start() -> Result<Arc<Runtime>, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("leadership")
            .build()
            .map_err(Error::DriverThread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("leadership".into())
            .spawn(move || {
                // Runs until the last handle is dropped; dropping the runtime then ends
                // whatever is left (connection tasks) without waiting for it.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(Error::DriverThread)?;
        Ok(Arc::new(Runtime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }))
    }

    /// Runs `future` to completion on the calling thread; I/O and timers are driven by the
    /// runtime's thread. Must not be called from inside an async runtime (it panics there, as
    /// the `postgres` crate's calls do).
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    /// Enters the runtime, so that tokio tasks can be spawned on it from this thread.
    pub(crate) fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.handle.enter()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The last handle may be dropped on the runtime's own thread (a guard moved into a
            // spawned task): it must not wait for itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
