//! [`Flag`]: the handle the user holds (and clones) while the driver task runs: its state,
//! its guards, resign and close; running the leader-only work is in [`work`].

mod work;

pub use work::{LastRun, TryLead};

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::driver::{Driver, Outcome, Request};
use crate::error::Error;
use crate::guard::Guard;
use crate::health::Health;
use crate::lease::{Lease, TermLog, TermRecord};
use crate::parts::Parts;
use crate::signals::Signals;
use crate::state::{Holder, State};

/// A leadership flag competed for through a PostgreSQL table, driven by a tokio task.
///
/// Build one with [`Flag::builder`] (or add it to a [`FlagSet`](crate::FlagSet)). The handle
/// is cheap to clone and share (a worker, a health endpoint, a shutdown task); every clone
/// drives the same flag. Ask [`is_raised`](Flag::is_raised) before doing the leader's work; it
/// is cheap and turns false at the lease's local deadline even while the driver is stuck in a
/// statement. Or let [`lead`](Flag::lead) run the work for each term and stop it in time, or
/// wait with [`raised`](Flag::raised) for a [`Guard`]. [`close`](Flag::close) (from any clone)
/// ends the guards, waits for them to be dropped and hands the flag over at once (the
/// followers are notified). Dropping the last clone without closing does the same in the
/// background, best effort.
///
/// ```no_run
/// # async fn demo() -> Result<(), leadership_tokio::Error> {
/// use leadership_tokio::Flag;
/// let flag = Flag::builder("nightly-report", "pod-a")
///     .connect_str("host=db user=app")
///     .start(tokio_postgres::NoTls)
///     .await?;
/// let shutdown = flag.clone();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     let _ = shutdown.close_within(std::time::Duration::from_secs(20)).await;
/// });
/// flag.lead(|guard| async move {
///     // Leader-only work; stop when `guard.at_risk()` fires, fence writes with the token.
///     guard.at_risk().await;
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Flag {
    inner: Arc<Inner>,
}

struct Inner {
    signals: Arc<Signals>,
    /// Cancelled to close: by `close`, by the last handle's drop, or by the user's token.
    close: CancellationToken,
    /// What the driver task ended with, once it has.
    outcome: watch::Receiver<Option<Outcome>>,
    task: Mutex<Option<JoinHandle<()>>>,
    close_bound: Duration,
    requests: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flag")
            .field("raised", &self.is_raised())
            .finish_non_exhaustive()
    }
}

impl Flag {
    /// Spawns the driver task of `parts` on the current runtime; `shutdown`, the user's token,
    /// closes the flag when cancelled.
    pub(crate) fn spawn(parts: Parts, shutdown: Option<CancellationToken>) -> Flag {
        let config = &parts.config;
        // The leader-only work may take until a margin past the lease's deadline to stop (then
        // the release is given up); a pending statement takes at most one timeout, the
        // release another; one more for the scheduler's slack.
        let close_bound = config.interval() + config.margin() + config.timeout() * 3;
        let signals = Arc::new(Signals::new());
        let fencing = crate::fence::Fencing {
            statements: parts.link.connector().qualified_statements(),
            name: config.name().to_string(),
            process: config.process().to_string(),
            lease_micros: config.interval_micros(),
        };
        let _ = signals.fencing.set(Arc::new(fencing));
        let close = shutdown.map_or_else(CancellationToken::new, |s| s.child_token());
        let (outcome_tx, outcome) = watch::channel(None);
        // The task's events carry the flag and the process, inside the span of whoever
        // started it (a request's, a service's).
        let span =
            tracing::info_span!("leadership", name = %config.name(), process = %config.process());
        let driver = Driver::new(parts, signals.clone());
        let closing = close.clone();
        let (requests, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            async move {
                let ended = driver.run(closing, received).await;
                outcome_tx.send_replace(Some(ended));
            }
            .instrument(span),
        );
        Flag {
            inner: Arc::new(Inner {
                signals,
                close,
                outcome,
                task: Mutex::new(Some(task)),
                close_bound,
                requests,
            }),
        }
    }

    /// Whether this process leads now: it holds a lease whose local deadline (when it sent the
    /// winning statement, plus the interval, minus the margin) is later than the monotonic
    /// clock at this call. An atomic load and a clock read; callable from any thread.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// if flag.is_raised() {
    ///     // do the leader's work, in steps short enough to ask again between them
    /// }
    /// # }
    /// ```
    pub fn is_raised(&self) -> bool {
        self.inner.signals.cell.is_raised()
    }

    /// The current lease, if this process leads now: its fencing token (the row version at
    /// which the term began; a later leader's is always larger), its deadline and its at-risk
    /// instant. Both instants are computed once per lease, so they read the same until the
    /// next renew.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// if let Some(lease) = flag.lease() {
    ///     println!("leader, token {}", lease.token);
    /// }
    /// # }
    /// ```
    pub fn lease(&self) -> Option<Lease> {
        self.inner.signals.cell.lease()
    }

    /// This process's terms of this flag so far, oldest first (the latest
    /// [`TERM_LOG_LEN`](crate::TERM_LOG_LEN)), each with the instants at which the belief
    /// began and ended on the lease clock: what a test or an audit judges overlaps from.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// if let Some(last) = flag.terms().last() {
    ///     println!("token {} began at {} ns", last.token, last.began_ns);
    /// }
    /// # }
    /// ```
    pub fn terms(&self) -> Vec<TermRecord> {
        self.inner.signals.cell.log().terms()
    }

    /// A handle on this flag's terms that does not keep the flag alive (see
    /// [`terms`](Flag::terms)).
    ///
    /// ```no_run
    /// # fn demo(flag: leadership_tokio::Flag) {
    /// let log = flag.term_log();
    /// drop(flag);
    /// println!("{} terms", log.terms().len());
    /// # }
    /// ```
    pub fn term_log(&self) -> TermLog {
        self.inner.signals.cell.log()
    }

    /// A receiver of the [`State`], which changes on transitions only: a raise, a new term,
    /// the lease at risk and back, a lower; not on each renewal. A watch keeps only the latest
    /// value, so a slow reader may miss a short term; it never misses the latest state. The
    /// deadline is the authority while raised: a driver stuck in a hung statement publishes
    /// `Lowered` late, but its deadline has passed on time (see [`is_raised`](Flag::is_raised),
    /// or use a [`Guard`], which watches the clock too).
    ///
    /// ```no_run
    /// # async fn demo(flag: &leadership_tokio::Flag) {
    /// use leadership_tokio::State;
    /// let mut state = flag.subscribe();
    /// while state.changed().await.is_ok() {
    ///     match *state.borrow() {
    ///         State::Raised { token, at_risk: false } => println!("leading, token {token}"),
    ///         State::Raised { at_risk: true, .. } => println!("leading, at risk"),
    ///         State::Lowered => println!("following"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.inner.signals.subscribe()
    }

    /// A receiver of the [`Lease`] as it changes: on every raise and renew (with the new
    /// deadline) and on the lower (`None`). For a timer at the deadline, or a log line per
    /// renewal; [`subscribe`](Flag::subscribe) is the quieter stream of transitions. The
    /// deadline passes on time even if the driver is stuck and publishes nothing: compare it
    /// with the clock.
    ///
    /// ```no_run
    /// # async fn demo(flag: &leadership_tokio::Flag) {
    /// let mut leases = flag.subscribe_lease();
    /// while leases.changed().await.is_ok() {
    ///     if let Some(lease) = *leases.borrow() {
    ///         println!("token {} until {:?}", lease.token, lease.deadline);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn subscribe_lease(&self) -> watch::Receiver<Option<Lease>> {
        self.inner.signals.subscribe_lease()
    }

    /// Resolves when this process leads, with a [`Guard`] for the term: its fencing token, its
    /// deadline, [`Guard::at_risk`] and [`Guard::lost`]. Resolves at once if it leads already.
    /// [`Error::Closed`] once the flag has closed, [`Error::DriverGone`] if its task died.
    ///
    /// On [`close`](Flag::close) (and on a refused precheck) the row is released only after
    /// every guard is dropped: drop the guard once the leader-only work has stopped.
    ///
    /// ```no_run
    /// # async fn demo(flag: leadership_tokio::Flag) -> Result<(), leadership_tokio::Error> {
    /// # async fn work(_token: i64) {}
    /// let guard = flag.raised().await?;
    /// tokio::select! {
    ///     () = guard.at_risk() => println!("stopping in time"),
    ///     () = work(guard.token()) => println!("done"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn raised(&self) -> Result<Guard, Error> {
        self.guard_when(false).await
    }

    /// A guard as soon as this process leads (and, with `not_at_risk`, its lease is not at
    /// risk); [`Error::Closed`] or [`Error::DriverGone`] once the driver has stopped.
    async fn guard_when(&self, not_at_risk: bool) -> Result<Guard, Error> {
        let signals = &self.inner.signals;
        let mut term = signals.subscribe_term();
        let mut outcome = self.inner.outcome.clone();
        loop {
            term.borrow_and_update();
            if let Some(ended) = self.ended(*outcome.borrow_and_update()) {
                return Err(ended);
            }
            if let Some(guard) = Guard::current(signals, not_at_risk) {
                return Ok(guard);
            }
            // Not raised, at risk, or raised past its deadline (the driver is stuck): wait for
            // what comes next.
            tokio::select! {
                changed = term.changed() => if changed.is_err() { return Err(Error::DriverGone) },
                _ = outcome.changed() => {}
            }
        }
    }

    /// Steps down without closing: lowers at once (every [`Guard`]'s `lost` fires), waits
    /// for the guards to be dropped, releases the row (the followers are notified and one
    /// takes over within milliseconds), and stays a follower. With `hold_off`, this process
    /// takes nothing (no takeover, not even of a free row) for that long; without, it
    /// competes again from its next check. Returns once the row is released, or left to
    /// expire if the work has not stopped a margin after the lease's deadline. A follower
    /// that resigns only holds off. For a rolling deploy, a leader that drains, or handing a
    /// shard to a process that is less loaded.
    ///
    /// ```no_run
    /// # async fn demo(flag: leadership_tokio::Flag) -> Result<(), leadership_tokio::Error> {
    /// // Let another process lead for at least a minute.
    /// flag.resign(Some(std::time::Duration::from_secs(60))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn resign(&self, hold_off: Option<Duration>) -> Result<(), Error> {
        let (done, resigned) = tokio::sync::oneshot::channel();
        self.inner
            .requests
            .send(Request::Resign { hold_off, done })
            .map_err(|_| self.stopped())?;
        // Dropped unanswered when the driver ends first (a close or a crash).
        resigned.await.map_err(|_| self.stopped())
    }

    /// The driver's health for a probe: whether it runs, whether this process leads, when
    /// the server last answered, and how many statements failed since (no statement of its
    /// own). A health endpoint answers [`Health::is_healthy`]; a `/leader` endpoint
    /// [`is_raised`](Flag::is_raised) or [`current_holder`](Flag::current_holder).
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// let health = flag.health();
    /// if !health.is_healthy(std::time::Duration::from_secs(90)) {
    ///     eprintln!("no answer from the server; {} failures", health.consecutive_failures);
    /// }
    /// # }
    /// ```
    pub fn health(&self) -> Health {
        let (last_success, consecutive_failures) = self.inner.signals.health.read();
        Health {
            running: self.inner.outcome.borrow().is_none() && !self.inner.close.is_cancelled(),
            raised: self.is_raised(),
            last_success,
            consecutive_failures,
        }
    }

    /// Who held the row at the last check, from what that check returned (no extra
    /// statement): the holder's name, the row's version, the lease's age by the database's
    /// clock, whether it had expired. `None` before the first check returns.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// if let Some(holder) = flag.current_holder() {
    ///     println!("{:?} holds it, lease {:?} old", holder.name, holder.lease_age);
    /// }
    /// # }
    /// ```
    pub fn current_holder(&self) -> Option<Holder> {
        self.inner.signals.holder()
    }

    /// A receiver of [`current_holder`](Flag::current_holder): changes after each check whose
    /// reply differs from the last (holder, version, expiry, lease age).
    ///
    /// ```no_run
    /// # async fn demo(flag: &leadership_tokio::Flag) {
    /// let mut holder = flag.subscribe_holder();
    /// while holder.changed().await.is_ok() {
    ///     println!("{:?}", holder.borrow().as_ref().map(|h| h.name.clone()));
    /// }
    /// # }
    /// ```
    pub fn subscribe_holder(&self) -> watch::Receiver<Option<Holder>> {
        self.inner.signals.subscribe_holder()
    }

    /// Lowers the flag, ends every [`Guard`] (their [`lost`](Guard::lost) fires), waits until
    /// they are dropped, then releases the row so another process takes over at once (its
    /// followers are notified). The row is never released while a guard lives: if the work
    /// has not stopped a margin after the lease's deadline, the lease is left to expire.
    /// Waits for all that, bounded by one interval, a margin and three statement timeouts.
    ///
    /// Safe from any clone and idempotent: every call waits for the same close and gets the
    /// same answer. `Ok` when the row was released or was not ours; [`Error::ReleaseFailed`]
    /// or [`Error::CloseTimedOut`] when the others must wait for the lease to expire instead
    /// (after a timeout the driver goes on in the background and may still release). The flag
    /// is lowered in every case.
    ///
    /// ```no_run
    /// # async fn demo(flag: leadership_tokio::Flag) {
    /// if let Err(e) = flag.close().await {
    ///     eprintln!("handover incomplete: {e}");
    /// }
    /// # }
    /// ```
    pub async fn close(&self) -> Result<(), Error> {
        self.close_within(self.inner.close_bound).await
    }

    /// [`close`](Flag::close), returning after `bound` at the latest (for shutdowns with a
    /// deadline of their own, such as a Kubernetes termination grace):
    /// [`Error::CloseTimedOut`] then, with the flag lowered; the driver goes on in the
    /// background and releases the row once the work has stopped, if the process lives on.
    ///
    /// ```no_run
    /// # async fn demo(flag: leadership_tokio::Flag) {
    /// let _ = flag.close_within(std::time::Duration::from_secs(25)).await;
    /// # }
    /// ```
    pub async fn close_within(&self, bound: Duration) -> Result<(), Error> {
        self.inner.close.cancel();
        let mut outcome = self.inner.outcome.clone();
        let ended = tokio::time::timeout(bound, outcome.wait_for(Option::is_some)).await;
        // Whatever the driver is doing, this process no longer leads.
        self.inner.signals.lowered();
        let outcome = match ended {
            Ok(Ok(ended)) => *ended,
            // The sender lives in the task: gone without an outcome means it panicked.
            Ok(Err(_)) => Some(Outcome::Gone),
            Err(_) => return Err(Error::CloseTimedOut(bound)),
        };
        match outcome {
            Some(Outcome::Closed) => Ok(()),
            Some(Outcome::ReleaseFailed) => Err(Error::ReleaseFailed),
            Some(Outcome::Gone) | None => Err(Error::DriverGone),
        }
    }

    /// Resolves once the driver task has ended after a close was asked for (by a clone, the
    /// last drop or the shutdown token), or a close bound after that at the latest; holds no
    /// handle. For a runtime that must outlive a background close (`leadership-blocking`).
    #[doc(hidden)]
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut outcome = self.inner.outcome.clone();
        let close = self.inner.close.clone();
        let bound = self.inner.close_bound;
        async move {
            close.cancelled().await;
            let _ = tokio::time::timeout(bound, outcome.wait_for(Option::is_some)).await;
        }
    }

    /// Why nothing more will come: closed (asked by a clone, the last drop or the token), or
    /// the driver gone without a close; `None` while the driver runs.
    fn ended(&self, outcome: Option<Outcome>) -> Option<Error> {
        match outcome {
            None => None,
            Some(Outcome::Gone) => Some(self.stopped()),
            Some(_) => Some(Error::Closed),
        }
    }

    /// The error once the driver has stopped without saying why: [`Error::Closed`] if a close
    /// was asked for, else [`Error::DriverGone`] (its task died).
    fn stopped(&self) -> Error {
        if self.inner.close.is_cancelled() {
            Error::Closed
        } else {
            Error::DriverGone
        }
    }

    /// Whether [`close`](Flag::close) was asked for (by any clone, the last drop, or the
    /// shutdown token).
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// if flag.is_closing() { return; }
    /// # }
    /// ```
    pub fn is_closing(&self) -> bool {
        self.inner.close.is_cancelled()
    }
}

impl Drop for Inner {
    /// The last handle is gone without a close: close in the background (best effort: the
    /// driver task goes on until it has released the row, if the runtime lives that long).
    fn drop(&mut self) {
        self.close.cancel();
        // The task owns what it needs; detach it.
        drop(
            self.task
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_be_shared_across_threads() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Flag>();
        fn sendable<T: Send + Sync + 'static>() {}
        sendable::<crate::Error>();
    }
}
