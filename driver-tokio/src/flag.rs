//! [`Flag`]: the handle the user holds while the driver task runs.

use std::sync::Arc;
use std::time::Duration;

use leadership_core::Config;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::builder::{FlagBuilder, PrecheckFn};
use crate::connection::Link;
use crate::driver::Driver;
use crate::error::Error;
use crate::guard::{Guard, Signals};
use crate::lease::{Lease, LeaseCell};
use crate::recorder::Metrics;
use crate::state::{Holder, State};

/// A leadership flag competed for through a PostgreSQL table, driven by a tokio task.
///
/// Build one with [`Flag::builder`] (or add it to a [`FlagSet`](crate::FlagSet)). Ask
/// [`is_raised`](Flag::is_raised) before doing the leader's work; it is cheap and turns false
/// at the lease's local deadline even while the driver is stuck in a statement. Or wait with
/// [`raised`](Flag::raised) for a [`Guard`] whose [`lost`](Guard::lost) fires when the term
/// ends; [`subscribe`](Flag::subscribe) watches the [`State`]. [`close`](Flag::close) ends the
/// guards, waits for them to be dropped and hands the flag over at once (the followers are
/// notified); dropping the handle stops the task without releasing the row (others take over
/// when the lease expires; guards see `lost()` fire).
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
    signals: Arc<Signals>,
    /// Errs once the driver task has ended, whatever the way (its sender lives in the task).
    alive: watch::Receiver<()>,
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
        link: Arc<Link>,
        notifications: Option<mpsc::Receiver<()>>,
        metrics: Metrics,
        precheck: Option<PrecheckFn>,
    ) -> Flag {
        // The leader-only work may take until the lease's deadline (less than one interval)
        // to stop; a pending statement takes at most one timeout, the release another; one
        // more for the scheduler's slack.
        let close_bound = config.interval() + config.timeout() * 3;
        let shared = Arc::new(LeaseCell::new());
        let signals = Arc::new(Signals::new());
        let (close, closed) = oneshot::channel();
        let (alive_tx, alive) = watch::channel(());
        let driver = Driver::new(
            config,
            seed,
            (shared.clone(), signals.clone()),
            link,
            notifications,
            metrics,
            precheck,
        );
        let task = tokio::spawn(async move {
            let _alive = alive_tx;
            driver.run(closed).await
        });
        Flag {
            shared,
            signals,
            alive,
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

    /// A receiver of the [`State`]: `Raised { token, deadline }` on a raise and on every
    /// renew, `Lowered` when leadership ends. A watch keeps only the latest value, so a slow
    /// reader may miss a short term; it never misses the latest state. The deadline is the
    /// only authority while raised: a driver stuck in a hung statement publishes `Lowered`
    /// late, but its deadline has passed on time (or use [`raised`](Flag::raised) and
    /// [`Guard::lost`], which watch the clock too).
    ///
    /// ```no_run
    /// # async fn demo(flag: &leadership_tokio::Flag) {
    /// use leadership_tokio::State;
    /// let mut state = flag.subscribe();
    /// while state.changed().await.is_ok() {
    ///     match &*state.borrow() {
    ///         State::Raised { token, .. } => println!("leading, token {token}"),
    ///         State::Lowered => println!("following"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.signals.subscribe()
    }

    /// Resolves when this process leads, with a [`Guard`] for the term: its fencing token, its
    /// deadline, and [`Guard::lost`], which fires when the term ends. Resolves at once if it
    /// leads already. [`Error::DriverGone`] if the driver stopped (its task panicked).
    ///
    /// On [`close`](Flag::close) (and on a refused precheck) the row is released only after
    /// every guard is dropped, or at the lease's deadline: drop the guard once the leader-only
    /// work has stopped.
    ///
    /// ```no_run
    /// # async fn demo(flag: leadership_tokio::Flag) -> Result<(), leadership_tokio::Error> {
    /// # async fn work(_token: i64) {}
    /// let guard = flag.raised().await?;
    /// tokio::select! {
    ///     () = guard.lost() => println!("lost the lead"),
    ///     () = work(guard.token()) => println!("done"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn raised(&self) -> Result<Guard, Error> {
        let mut state = self.signals.subscribe();
        let mut alive = self.alive.clone();
        loop {
            let raised = state.borrow_and_update().is_raised();
            if raised {
                if let Some(guard) = self.signals.guard() {
                    return Ok(guard);
                }
            }
            // Raised but past its deadline (the driver is stuck): wait for what comes next.
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return Err(Error::DriverGone) },
                // Nobody sends on it: it returns only when the driver task has ended.
                _ = alive.changed() => return Err(Error::DriverGone),
            }
        }
    }

    /// Who held the row at the last check, from what that check returned (no extra
    /// statement): the holder's name, its token (the row's version), the lease's age by the
    /// database's clock, whether it had expired. `None` before the first check returns.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// if let Some(holder) = flag.current_holder() {
    ///     println!("{:?} holds it, lease {:?} old", holder.name, holder.lease_age);
    /// }
    /// # }
    /// ```
    pub fn current_holder(&self) -> Option<Holder> {
        self.signals.holder()
    }

    /// Lowers the flag, ends every [`Guard`] (their [`lost`](Guard::lost) fires), waits until
    /// they are dropped (at most until the lease's deadline), then releases the row so another
    /// process takes over at once (its followers are notified), and waits for that, bounded by
    /// one interval and three statement timeouts. `Ok` when the row was released or was not
    /// ours; [`Error::ReleaseFailed`] or [`Error::CloseTimedOut`] when the others must wait for
    /// the lease to expire instead. The flag is lowered in every case.
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
        self.signals.publish(State::Lowered);
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
        // Guards outlive the handle: tell them the term is over.
        self.signals.publish(State::Lowered);
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
