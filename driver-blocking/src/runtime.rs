//! The background thread on which the tokio driver runs: one current-thread runtime per
//! flag or set, the way the `postgres` crate owns a runtime for `tokio-postgres`.
//!
//! The thread drives the runtime's I/O and timers for as long as any handle (flag, guard,
//! subscription) holds it; the handles block on futures from their own threads with
//! [`Handle::block_on`](tokio::runtime::Handle::block_on), which works on a current-thread
//! runtime because this thread keeps driving it. When the last handle is gone, the thread
//! lets the flags finish closing in the background (their drivers release the rows), then
//! ends.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Error;

/// The runtime and its thread; shared by every handle made from one flag or set.
#[derive(Debug)]
pub(crate) struct Runtime {
    handle: Handle,
    stop: Option<oneshot::Sender<Vec<JoinHandle<()>>>>,
    /// One task per flag, ending when its driver has finished closing.
    closing: Mutex<Vec<JoinHandle<()>>>,
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
        let (stop, stopped) = oneshot::channel::<Vec<JoinHandle<()>>>();
        std::thread::Builder::new()
            .name("leadership".into())
            .spawn(move || {
                runtime.block_on(async {
                    // Runs until the last handle is gone, then waits for the background
                    // closes; dropping the runtime ends whatever is left.
                    if let Ok(closing) = stopped.await {
                        for task in closing {
                            let _ = task.await;
                        }
                    }
                });
            })
            .map_err(Error::DriverThread)?;
        Ok(Arc::new(Runtime {
            handle,
            stop: Some(stop),
            closing: Mutex::new(Vec::new()),
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

    /// Keeps the thread alive, once the last handle is gone, until `flag` has finished
    /// closing (bounded by its close bound).
    pub(crate) fn keep_until(&self, flag: leadership_tokio::Flag) {
        let task = self.handle.spawn(flag.finished());
        self.closing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }
}

impl Drop for Runtime {
    /// Does not wait: the thread finishes the background closes on its own.
    fn drop(&mut self) {
        let closing =
            std::mem::take(&mut *self.closing.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(closing);
        }
    }
}
