//! The handle a program keeps: cheap questions answered from atomics, close and drop.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use leadership_tokio::lease::{Lease, LeaseCell};

use crate::builder::FlagBuilder;
use crate::driver::Msg;
use crate::error::Error;

/// A leadership flag competed for by this process, run by a background thread.
///
/// Create one with [`Flag::builder`]. Ask [`is_raised`](Flag::is_raised) before each piece of
/// leader-only work; it is a couple of atomic loads and a clock read.
///
/// ```no_run
/// use std::time::Duration;
/// use leadership_blocking::Flag;
///
/// let flag = Flag::builder("nightly-report", "pod-a")
///     .interval(Duration::from_secs(10))
///     .connect_str("host=127.0.0.1 user=postgres dbname=postgres")
///     .start(postgres::NoTls)?;
/// for _ in 0..3 {
///     if flag.is_raised() {
///         // leader-only work; `flag.lease()` gives the fencing token
///     }
///     std::thread::sleep(Duration::from_secs(1));
/// }
/// flag.close()?; // releases the row: the next leader starts at once
/// # Ok::<(), leadership_blocking::Error>(())
/// ```
pub struct Flag {
    pub(crate) shared: Arc<LeaseCell>,
    pub(crate) tx: Sender<Msg>,
    pub(crate) thread: Option<JoinHandle<()>>,
    pub(crate) timeout: Duration,
}

impl Flag {
    /// Starts configuring a flag `name` for process `process` (unique among the processes
    /// sharing the flag, e.g. a pod name).
    pub fn builder(name: impl Into<String>, process: impl Into<String>) -> FlagBuilder {
        FlagBuilder::new(name.into(), process.into())
    }

    /// Whether this process leads now. It turns false at the lease's local deadline even if
    /// the driver thread is stuck, so the answer can be trusted at the moment it is given.
    pub fn is_raised(&self) -> bool {
        self.shared.is_raised()
    }

    /// The current lease, if this process leads now.
    pub fn lease(&self) -> Option<Lease> {
        self.shared.lease()
    }

    /// Lowers the flag and releases the row so that another process can lead at once.
    ///
    /// Waits for a statement in flight, then for the release: at most about three statement
    /// timeouts (one for the statement in flight, one to reconnect if needed, one for the
    /// release). The flag is lowered in every case; an error says the row was left to expire.
    pub fn close(mut self) -> Result<(), Error> {
        self.shared.clear();
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Close(reply_tx)).is_err() {
            return Err(Error::DriverGone);
        }
        let bound = self.timeout * 3 + Duration::from_millis(200);
        match reply_rx.recv_timeout(bound) {
            Ok(result) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join(); // it returns right after replying
                }
                result
            }
            Err(RecvTimeoutError::Timeout) => Err(Error::CloseTimedOut(bound)),
            Err(RecvTimeoutError::Disconnected) => Err(Error::DriverGone),
        }
    }
}

impl Drop for Flag {
    /// Stops the driver without releasing the row and without waiting: the lease expires and
    /// another process takes over after one interval.
    fn drop(&mut self) {
        self.shared.clear();
        let _ = self.tx.send(Msg::Stop);
    }
}

impl std::fmt::Debug for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flag")
            .field("raised", &self.is_raised())
            .finish_non_exhaustive()
    }
}
