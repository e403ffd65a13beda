//! The handle a program keeps: cheap questions answered from atomics, close and drop.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use leadership_tokio::lease::{Lease, LeaseCell};
use leadership_tokio::state::{Holder, State};

use crate::builder::FlagBuilder;
use crate::driver::Msg;
use crate::error::Error;
use crate::guard::{Guard, Signals};

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
    pub(crate) signals: Arc<Signals>,
    pub(crate) tx: Sender<Msg>,
    pub(crate) thread: Option<JoinHandle<()>>,
    pub(crate) timeout: Duration,
    pub(crate) interval: Duration,
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

    /// Waits up to `timeout` for this process to lead, and returns a [`Guard`] on the term:
    /// its fencing token and deadline, and whether it still holds. `None` if it did not lead
    /// within `timeout` (or the flag was closed).
    ///
    /// While a guard lives, a close or a refused precheck waits (at most until the lease's
    /// deadline) for it to be dropped before releasing the row.
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
        self.signals.wait_raised(timeout)
    }

    /// A channel of this process's state: the current one at once, then every change the
    /// driver publishes (`Raised` on a raise and, with a later deadline, on each renew;
    /// `Lowered` when the term ends, on close, and when the flag is dropped).
    ///
    /// A channel rather than a callback: a callback would run on the driver's thread, where a
    /// slow one would delay the renewals; sending on an unbounded channel never blocks the
    /// loop, and the receiver reads at its own pace. Drop the receiver to unsubscribe.
    /// `Lowered` can arrive after the deadline has already passed (the deadline itself is in
    /// `Raised`; [`is_raised`](Flag::is_raised) and [`Guard::is_valid`] compare it with the
    /// clock).
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
    pub fn subscribe(&self) -> std::sync::mpsc::Receiver<State> {
        self.signals.subscribe()
    }

    /// Who held the row at the last check (name, token, lease age by the database's clock),
    /// from what that check returned: no extra statement. `None` before the first check
    /// returns.
    ///
    /// ```no_run
    /// # fn demo(flag: &leadership_blocking::Flag) {
    /// if let Some(h) = flag.current_holder() {
    ///     println!("{:?} holds token {:?}, written {:?} ago", h.name, h.token, h.lease_age);
    /// }
    /// # }
    /// ```
    pub fn current_holder(&self) -> Option<Holder> {
        self.signals.holder()
    }

    /// Lowers the flag and releases the row so that another process can lead at once.
    ///
    /// Every guard turns invalid at once; the release waits until they have all been dropped,
    /// or until the lease's deadline if they linger, so the next leader never starts while
    /// this one's leader-only work still runs. Then it waits for a statement in flight and
    /// for the release: in all at most the time left on the lease plus about three statement
    /// timeouts. The flag is lowered in every case; an error says the row was left to expire.
    /// Drop (or hand to another thread) every guard this thread holds before calling it, or
    /// it waits for the lease to run out.
    ///
    /// ```no_run
    /// # fn demo(flag: leadership_blocking::Flag) {
    /// if let Err(e) = flag.close() {
    ///     eprintln!("closed, but the next leader waits for the lease to expire: {e}");
    /// }
    /// # }
    /// ```
    pub fn close(mut self) -> Result<(), Error> {
        let mut left = self.shared.lease().map_or(Duration::ZERO, |l| {
            l.deadline
                .saturating_duration_since(std::time::Instant::now())
        });
        if self.signals.guards() > 0 {
            // Work told to stop earlier (a refused precheck) may hold the release until a
            // deadline the handle no longer sees; it is within one lease.
            left = left.max(self.interval);
        }
        self.lower_now();
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Close(reply_tx)).is_err() {
            return Err(Error::DriverGone);
        }
        let bound = left + self.timeout * 3 + Duration::from_millis(200);
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

    /// Ends belief at once, before the driver hears of it: `is_raised`, guards and watchers
    /// see the flag lowered from this call on.
    fn lower_now(&self) {
        self.signals.end();
    }
}

impl Drop for Flag {
    /// Stops the driver without releasing the row and without waiting: the lease expires and
    /// another process takes over after one interval.
    fn drop(&mut self) {
        self.lower_now();
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
