//! [`Flag`] and [`FlagSet`]: handles on the tokio driver that block the calling thread.

use std::sync::Arc;
use std::time::Duration;

use crate::guard::Guard;
use crate::runtime::Runtime;
use crate::subscription::Subscription;
use crate::{Error, Holder, Lease, TermLog, TermRecord};

/// A leadership flag competed for by this process; the driver runs on a background thread.
///
/// Create one with [`Flag::builder`]. Ask [`is_raised`](Flag::is_raised) before each piece of
/// leader-only work (an atomic load and a clock read), or wait for a [`Guard`] with
/// [`wait_raised`](Flag::wait_raised). Behaviour, errors, logs and metrics are those of
/// [`leadership_tokio::Flag`], which this handle drives.
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
#[derive(Clone, Debug)]
pub struct Flag {
    inner: leadership_tokio::Flag,
    runtime: Arc<Runtime>,
}

impl Flag {
    pub(crate) fn wrap(inner: leadership_tokio::Flag, runtime: Arc<Runtime>) -> Flag {
        // If the last handle goes without a close, the driver closes in the background: the
        // runtime's thread waits for that before it ends.
        runtime.keep_until(inner.clone());
        Flag { inner, runtime }
    }

    /// Whether this process leads now; see [`leadership_tokio::Flag::is_raised`].
    pub fn is_raised(&self) -> bool {
        self.inner.is_raised()
    }

    /// The current lease, if this process leads now: fencing token and deadline.
    pub fn lease(&self) -> Option<Lease> {
        self.inner.lease()
    }

    /// This process's terms so far, with their instants; see
    /// [`leadership_tokio::Flag::terms`].
    pub fn terms(&self) -> Vec<TermRecord> {
        self.inner.terms()
    }

    /// A handle on the terms that does not keep the flag alive; see
    /// [`leadership_tokio::Flag::term_log`].
    pub fn term_log(&self) -> TermLog {
        self.inner.term_log()
    }

    /// Waits up to `timeout` for this process to lead and returns a [`Guard`] on the term, or
    /// `None` if it did not lead in time or the driver has stopped.
    ///
    /// While a guard lives, a close or a refused precheck waits for it to be dropped before
    /// releasing the row (see [`leadership_tokio::Flag::raised`]).
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_blocking::Flag) {
    /// use std::time::Duration;
    /// if let Some(guard) = flag.wait_raised(Duration::from_secs(30)) {
    ///     println!("leading with token {} until {:?}", guard.token(), guard.deadline());
    /// }
    /// # }
    /// ```
    pub fn wait_raised(&self, timeout: Duration) -> Option<Guard> {
        let raised = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.raised()).await });
        match raised {
            Ok(Ok(guard)) => Some(Guard::wrap(guard, self.runtime.clone())),
            _ => None,
        }
    }

    /// The [`State`](crate::State) as it changes: the current one at once, then the latest
    /// after each change (a slow reader skips intermediate states, never the latest; nothing
    /// queues up). See [`leadership_tokio::Flag::subscribe`].
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_blocking::Flag) {
    /// use leadership_blocking::State;
    /// let states = flag.subscribe();
    /// std::thread::spawn(move || {
    ///     for state in states {
    ///         match state {
    ///             State::Raised { token, .. } => println!("leading, token {token}"),
    ///             State::Lowered => println!("following"),
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(&self.inner, self.runtime.clone())
    }

    /// Who held the row at the last check, from what that check returned: no extra statement.
    /// `None` before the first check returns.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_blocking::Flag) {
    /// if let Some(h) = flag.current_holder() {
    ///     println!("{:?} wrote version {:?}, {:?} ago", h.name, h.version, h.lease_age);
    /// }
    /// # }
    /// ```
    pub fn current_holder(&self) -> Option<Holder> {
        self.inner.current_holder()
    }

    /// Runs `work` on this thread while this process leads, until the flag is closed (by
    /// another clone or thread): once for each term, and again within a term after the lease
    /// was at risk and a renew won; see [`leadership_tokio::Flag::lead`]. The work should
    /// return soon after [`Guard::is_at_risk`] turns true (check it between steps, or wait
    /// with [`Guard::wait_at_risk`]) so that it is over by the deadline, and fence its writes
    /// with [`Guard::token`]. A close releases the row only after the work has returned.
    ///
    /// ```no_run
    /// # fn demo(flag: leadership_blocking::Flag) -> Result<(), leadership_blocking::Error> {
    /// # fn step(_token: i64) {}
    /// flag.lead(|guard| {
    ///     while !guard.is_at_risk() {
    ///         step(guard.token());
    ///     }
    /// })
    /// # }
    /// ```
    pub fn lead(&self, mut work: impl FnMut(&Guard)) -> Result<(), Error> {
        let mut last = None;
        while let Some(guard) = self.runtime.block_on(self.inner.next_run(last))? {
            let guard = Guard::wrap(guard, self.runtime.clone());
            work(&guard);
            last = Some(leadership_tokio::LastRun {
                token: guard.token(),
                stopped: guard.is_at_risk(),
            });
        }
        Ok(())
    }

    /// Waits for the first check to answer, then [`TryLead::Led`](crate::TryLead::Led) with the
    /// term's guard or [`TryLead::HeldBy`](crate::TryLead::HeldBy) with the holder; see
    /// [`leadership_tokio::Flag::try_lead`].
    ///
    /// ```no_run
    /// # fn demo(flag: leadership_blocking::Flag) -> Result<(), leadership_blocking::Error> {
    /// use leadership_blocking::TryLead;
    /// match flag.try_lead()? {
    ///     TryLead::Led(guard) => println!("running the job with token {}", guard.token()),
    ///     TryLead::HeldBy(holder) => println!("{:?} runs it", holder.name),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_lead(&self) -> Result<crate::TryLead, Error> {
        Ok(match self.runtime.block_on(self.inner.try_lead())? {
            leadership_tokio::TryLead::Led(guard) => {
                crate::TryLead::Led(Guard::wrap(guard, self.runtime.clone()))
            }
            leadership_tokio::TryLead::HeldBy(holder) => crate::TryLead::HeldBy(holder),
        })
    }

    /// The driver's health for a probe; see [`leadership_tokio::Flag::health`].
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_blocking::Flag) {
    /// let healthy = flag.health().is_healthy(std::time::Duration::from_secs(90));
    /// # }
    /// ```
    pub fn health(&self) -> leadership_tokio::Health {
        self.inner.health()
    }

    /// Steps down without closing: lowers, waits for every [`Guard`] to be dropped, releases
    /// the row and stays a follower, taking nothing for `hold_off` if given; see
    /// [`leadership_tokio::Flag::resign`]. Drop this thread's guards first.
    ///
    /// ```no_run
    /// # fn demo(flag: leadership_blocking::Flag) -> Result<(), leadership_blocking::Error> {
    /// flag.resign(Some(std::time::Duration::from_secs(60)))?;
    /// # Ok(()) }
    /// ```
    pub fn resign(&self, hold_off: Option<Duration>) -> Result<(), Error> {
        self.runtime.block_on(self.inner.resign(hold_off))
    }

    /// Lowers the flag, waits for every [`Guard`] to be dropped, releases the row so that
    /// another process leads at once, and returns; see [`leadership_tokio::Flag::close`]. Safe
    /// from any clone and idempotent. Drop (or hand to another thread) every guard this thread
    /// holds before calling it, or the release waits for the lease to run out.
    ///
    /// ```no_run
    /// # fn demo(flag: leadership_blocking::Flag) {
    /// if let Err(e) = flag.close() {
    ///     eprintln!("closed, but the next leader waits for the lease to expire: {e}");
    /// }
    /// # }
    /// ```
    pub fn close(&self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.close())
    }

    /// [`close`](Flag::close), returning after `bound` at the latest; see
    /// [`leadership_tokio::Flag::close_within`].
    ///
    /// ```no_run
    /// # fn demo(flag: leadership_blocking::Flag) {
    /// let _ = flag.close_within(std::time::Duration::from_secs(25));
    /// # }
    /// ```
    pub fn close_within(&self, bound: Duration) -> Result<(), Error> {
        self.runtime.block_on(self.inner.close_within(bound))
    }
}

/// Many flags of one process over one connection and one background thread: the blocking
/// face of [`leadership_tokio::FlagSet`].
///
/// ```no_run
/// let set = leadership_blocking::FlagSet::builder("pod-a")
///     .connect_str("host=db user=app")
///     .start(postgres::NoTls)?;
/// let shards: Vec<_> = (0..8).map(|i| set.add(format!("shard-{i}"))).collect::<Result<_, _>>()?;
/// # Ok::<(), leadership_blocking::Error>(())
/// ```
#[derive(Debug)]
pub struct FlagSet {
    inner: leadership_tokio::FlagSet,
    runtime: Arc<Runtime>,
}

impl FlagSet {
    pub(crate) fn wrap(inner: leadership_tokio::FlagSet, runtime: Arc<Runtime>) -> FlagSet {
        FlagSet { inner, runtime }
    }

    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub(crate) fn tokio(&self) -> &leadership_tokio::FlagSet {
        &self.inner
    }

    /// Starts competing for flag `name` on the set's connection; see
    /// [`leadership_tokio::FlagSet::add`].
    ///
    /// ```no_run
    /// # fn demo(set: &leadership_blocking::FlagSet) -> Result<(), leadership_blocking::Error> {
    /// let flag = set.add("shard-7")?;
    /// # Ok(()) }
    /// ```
    pub fn add(&self, name: impl Into<String>) -> Result<Flag, Error> {
        let _entered = self.runtime.enter();
        let flag = self.inner.add(name)?;
        Ok(Flag::wrap(flag, self.runtime.clone()))
    }
}
