//! [`Flag`]: the handle the user holds while the driver task runs.

use std::sync::Arc;
use std::time::Duration;

use leadership_core::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::builder::{FlagBuilder, PrecheckFn};
use crate::connection::{Conn, Connector};
use crate::driver::Driver;
use crate::error::Error;
use crate::lease::{Lease, LeaseCell};
use crate::metrics::Metrics;

/// A leadership flag competed for through a PostgreSQL table, driven by a tokio task.
///
/// Build one with [`Flag::builder`]. Ask [`is_raised`](Flag::is_raised) before doing the
/// leader's work; it is cheap and turns false at the lease's local deadline even while the
/// driver is stuck in a statement. [`close`](Flag::close) hands the flag over at once;
/// dropping the handle stops the task without releasing the row (others take over when the
/// lease expires).
///
/// ```no_run
/// # async fn demo() -> Result<(), leadership_tokio::Error> {
/// use leadership_tokio::Flag;
/// let flag = Flag::builder("nightly-report", "pod-a")
///     .connect_str("host=db user=app")
///     .start(tokio_postgres::NoTls)
///     .await?;
/// loop {
///     if let Some(lease) = flag.lease() {
///         // Pass `lease.token` to systems that fence out deposed leaders.
///         println!("leading with token {}", lease.token);
///         break;
///     }
///     tokio::time::sleep(std::time::Duration::from_millis(100)).await;
/// }
/// flag.close().await?;
/// # Ok(()) }
/// ```
pub struct Flag {
    shared: Arc<LeaseCell>,
    close: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
    close_bound: Duration,
}

impl std::fmt::Debug for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flag")
            .field("raised", &self.is_raised())
            .finish_non_exhaustive()
    }
}

impl Flag {
    /// Starts building flag `name` for process `process` (unique among the processes sharing
    /// the flag, e.g. the pod name).
    ///
    /// ```
    /// let builder = leadership_tokio::Flag::builder("nightly-report", "pod-a");
    /// ```
    pub fn builder(name: impl Into<String>, process: impl Into<String>) -> FlagBuilder {
        FlagBuilder::new(name.into(), process.into())
    }

    pub(crate) fn spawn(
        config: Config,
        seed: u64,
        connector: Connector,
        conn: Conn,
        metrics: Metrics,
        precheck: Option<PrecheckFn>,
    ) -> Flag {
        // A pending statement takes at most one timeout, the release another; one more for
        // the scheduler's slack.
        let close_bound = config.timeout() * 3;
        let shared = Arc::new(LeaseCell::new());
        let (close, closed) = oneshot::channel();
        let driver = Driver::new(
            config,
            seed,
            shared.clone(),
            connector,
            conn,
            metrics,
            precheck,
        );
        let task = tokio::spawn(driver.run(closed));
        Flag {
            shared,
            close: Some(close),
            task: Some(task),
            close_bound,
        }
    }

    /// Whether this process leads now: it holds a lease whose local deadline (when it sent the
    /// winning statement, plus the interval, minus the margin) is later than the monotonic
    /// clock at this call. Two atomic loads and a clock read; callable from any thread.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// if flag.is_raised() {
    ///     // do the leader's work, in steps short enough to ask again between them
    /// }
    /// # }
    /// ```
    pub fn is_raised(&self) -> bool {
        self.shared.is_raised()
    }

    /// The current lease, if this process leads now: its fencing token (the row version at
    /// which the term began; a later leader's is always larger) and its deadline.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// if let Some(lease) = flag.lease() {
    ///     println!("leader, token {}", lease.token);
    /// }
    /// # }
    /// ```
    pub fn lease(&self) -> Option<Lease> {
        self.shared.lease()
    }

    /// Lowers the flag, releases the row so another process takes over at once, and waits for
    /// that, bounded by about three statement timeouts. `Ok` when the row was released or was
    /// not ours; [`Error::ReleaseFailed`] or [`Error::CloseTimedOut`] when the others must wait
    /// for the lease to expire instead. The flag is lowered in every case.
    ///
    /// ```no_run
    /// # async fn demo(flag: leadership_tokio::Flag) {
    /// if let Err(e) = flag.close().await {
    ///     eprintln!("handover incomplete: {e}");
    /// }
    /// # }
    /// ```
    pub async fn close(mut self) -> Result<(), Error> {
        let (Some(close), Some(mut task)) = (self.close.take(), self.task.take()) else {
            return Ok(());
        };
        // If the task is gone, the join below says why.
        let _ = close.send(());
        let result = match tokio::time::timeout(self.close_bound, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::DriverGone),
            Err(_) => {
                task.abort();
                Err(Error::CloseTimedOut(self.close_bound))
            }
        };
        self.shared.clear();
        result
    }
}

impl Drop for Flag {
    /// Stops the driver task without blocking and without releasing the row.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.shared.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Flag>();
        shareable::<crate::Error>();
    }
}
