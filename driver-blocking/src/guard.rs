//! [`Guard`]: a term of leadership held by leader-only work, and the signals through which the
//! driver tells the handle, watchers and guards what the core decided.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use leadership_tokio::lease::LeaseCell;
use leadership_tokio::state::{Holder, State};

use crate::driver::Msg;

/// What the driver publishes besides the lease cell: the state for watchers and waiters, the
/// number of live guards (the leader-only work the core waits for before releasing), and the
/// holder seen by the last check.
pub(crate) struct Signals {
    inner: Mutex<Inner>,
    /// Notified on every change of the state; waiters re-check the lease cell.
    changed: Condvar,
    holder: Mutex<Option<Holder>>,
    /// The lease as the handle judges it: the one source of truth for validity.
    lease: Arc<LeaseCell>,
    /// Wakes the driver's loop when the last guard is dropped, so it never polls for it.
    wake: Mutex<Sender<Msg>>,
}

struct Inner {
    /// The handle closed or dropped the flag: nothing is raised again, even by a renew whose
    /// reply the driver handles before it hears of the close.
    ended: bool,
    state: State,
    guards: usize,
    watchers: Vec<Sender<State>>,
}

impl Signals {
    pub(crate) fn new(lease: Arc<LeaseCell>, wake: Sender<Msg>) -> Signals {
        Signals {
            inner: Mutex::new(Inner {
                ended: false,
                state: State::Lowered,
                guards: 0,
                watchers: Vec::new(),
            }),
            changed: Condvar::new(),
            holder: Mutex::new(None),
            lease,
            wake: Mutex::new(wake),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a lease (on `Raise` and `Renewed`): to the cell that `is_raised` and the
    /// guards read, and as the state. Under the state's lock, so that it cannot slip in after
    /// [`end`](Signals::end).
    pub(crate) fn raise(&self, lease: leadership_core::Lease) {
        let mut inner = self.lock();
        if inner.ended {
            return;
        }
        self.lease.publish(lease);
        if let Some(deadline) = self.lease.at(lease.deadline) {
            self.set(
                &mut inner,
                State::Raised {
                    token: lease.token,
                    deadline,
                },
            );
        }
    }

    /// Lowers (on `Lower`, and when the driver stops): the cell is cleared, guards turn
    /// invalid, waiters wake, watchers hear `Lowered`.
    pub(crate) fn lower(&self) {
        let mut inner = self.lock();
        self.lease.clear();
        self.set(&mut inner, State::Lowered);
    }

    /// Lowers for good: the handle closed or dropped the flag.
    pub(crate) fn end(&self) {
        let mut inner = self.lock();
        inner.ended = true;
        self.lease.clear();
        self.set(&mut inner, State::Lowered);
    }

    /// Sets the state if it changed: watchers get it, waiters wake up.
    fn set(&self, inner: &mut Inner, state: State) {
        if inner.state == state {
            return;
        }
        inner.state = state.clone();
        // A watcher that dropped its receiver is forgotten here.
        inner.watchers.retain(|w| w.send(state.clone()).is_ok());
        // The waiters re-check once the caller's lock is released.
        self.changed.notify_all();
    }

    /// A receiver that gets the current state at once, then every change.
    pub(crate) fn subscribe(&self) -> Receiver<State> {
        let (tx, rx) = mpsc::channel();
        let mut inner = self.lock();
        let _ = tx.send(inner.state.clone());
        inner.watchers.push(tx);
        rx
    }

    /// How many guards are alive.
    pub(crate) fn guards(&self) -> usize {
        self.lock().guards
    }

    pub(crate) fn set_holder(&self, holder: Holder) {
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = Some(holder);
    }

    pub(crate) fn holder(&self) -> Option<Holder> {
        self.holder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for a valid term and returns a guard on it.
    ///
    /// The guard is counted under the state's lock, after reading the state: the driver
    /// publishes `Lowered` (under that lock) before it reads the count on `StopWork`, so either
    /// it sees this guard and waits for it, or this sees `Lowered` and makes no guard. No guard
    /// can slip past a release.
    pub(crate) fn wait_raised(self: &Arc<Self>, timeout: Duration) -> Option<Guard> {
        let end = Instant::now().checked_add(timeout);
        let mut inner = self.lock();
        loop {
            if let State::Raised { token, .. } = inner.state {
                // The cell is judged by the clock: a raised state whose deadline has passed
                // (the `Lowered` is on its way) makes no guard.
                if let Some(lease) = self.lease.lease().filter(|l| l.token == token) {
                    inner.guards += 1;
                    return Some(Guard {
                        token,
                        deadline: lease.deadline,
                        signals: Arc::clone(self),
                    });
                }
            }
            let now = Instant::now();
            let left = match end {
                Some(end) if now >= end => return None,
                Some(end) => end - now,
                None => Duration::from_secs(3600),
            };
            // A raised state with a passed deadline is followed by `Lowered` at once; the cap
            // only guards against waiting on a driver that has gone.
            let wait = left.min(Duration::from_secs(1));
            inner = self
                .changed
                .wait_timeout(inner, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A term of leadership held by leader-only work, from [`Flag::wait_raised`](crate::Flag::wait_raised).
///
/// It carries the term's fencing token and deadline. [`is_valid`](Guard::is_valid) compares the
/// current lease's deadline with the clock at the call, and turns false for good when the term
/// ends for any reason: the deadline passed (even while the database hangs), another process
/// took over, the precheck refused, or the flag was closed or dropped.
/// [`wait_lost`](Guard::wait_lost) blocks until then.
///
/// On a close or a refused precheck the driver releases the row only after every guard has
/// been dropped (or at the lease's deadline, whichever is first), so the next leader does not
/// start while this one's work still runs: drop the guard when the work has stopped, not
/// before.
///
/// ```no_run
/// # fn demo(flag: &leadership_blocking::Flag) {
/// # fn step(_token: i64) {}
/// use std::time::Duration;
/// while let Some(guard) = flag.wait_raised(Duration::from_secs(60)) {
///     // Leader-only work in small steps, each fenced by the token and checked first.
///     while guard.is_valid() {
///         step(guard.token());
///     }
///     drop(guard); // the work has stopped: the row may go to the next leader
/// }
/// # }
/// ```
pub struct Guard {
    token: i64,
    /// The deadline when the guard was made; the current one moves with each renew.
    deadline: Instant,
    signals: Arc<Signals>,
}

impl Guard {
    /// The fencing token: the row version at which this term was won. A later leader's is
    /// always larger; pass it to systems that refuse writes from deposed leaders.
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_blocking::Guard) {
    /// println!("writing as token {}", guard.token());
    /// # }
    /// ```
    pub fn token(&self) -> i64 {
        self.token
    }

    /// The current lease's deadline: moved later by every renew of this term. Once the term has
    /// ended, the deadline the guard was made with.
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_blocking::Guard) {
    /// let left = guard.deadline().saturating_duration_since(std::time::Instant::now());
    /// # }
    /// ```
    pub fn deadline(&self) -> Instant {
        self.signals
            .lease
            .lease()
            .filter(|l| l.token == self.token)
            .map_or(self.deadline, |l| l.deadline)
    }

    /// Whether the term still holds now: the lease of this token is published and its deadline
    /// lies ahead of the clock. False for good once the term has ended.
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_blocking::Guard) {
    /// if !guard.is_valid() { return; }
    /// # }
    /// ```
    pub fn is_valid(&self) -> bool {
        self.signals
            .lease
            .lease()
            .is_some_and(|l| l.token == self.token)
    }

    /// Blocks until the term ends or `timeout` passes; returns whether it has ended. It wakes
    /// at the deadline by itself (the driver may be unable to publish anything), and at once
    /// on a lower, a close or a drop of the flag.
    ///
    /// ```no_run
    /// # fn demo(guard: leadership_blocking::Guard) {
    /// if guard.wait_lost(std::time::Duration::from_secs(5)) {
    ///     println!("no longer the leader");
    /// }
    /// # }
    /// ```
    pub fn wait_lost(&self, timeout: Duration) -> bool {
        let end = Instant::now().checked_add(timeout);
        let mut inner = self.signals.lock();
        loop {
            if !self.is_valid() {
                return true;
            }
            let now = Instant::now();
            let mut wake = self.deadline();
            if let Some(end) = end {
                if now >= end {
                    return false;
                }
                wake = wake.min(end);
            }
            // Just past the deadline, so the clock has passed it when we look again.
            let wait = wake.saturating_duration_since(now) + Duration::from_micros(100);
            inner = self
                .signals
                .changed
                .wait_timeout(inner, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut inner = self.signals.lock();
        inner.guards = inner.guards.saturating_sub(1);
        if inner.guards == 0 {
            drop(inner);
            // The loop may be waiting for the work to stop; a gone loop does not care.
            let wake = self
                .signals
                .wake
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let _ = wake.send(Msg::GuardsDropped);
        }
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("token", &self.token)
            .field("valid", &self.is_valid())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadership_core::WonBy;

    fn signals() -> (Arc<Signals>, Receiver<Msg>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Signals::new(Arc::new(LeaseCell::new()), tx)), rx)
    }

    fn raise(s: &Signals, token: i64, ahead: Duration) {
        let deadline = s.lease.now() + ahead;
        s.raise(leadership_core::Lease {
            token,
            version: token,
            deadline,
            won_by: WonBy::Created,
        });
    }

    fn lower(s: &Signals) {
        s.lower();
    }

    #[test]
    fn no_guard_while_lowered_or_past_the_deadline() {
        let (s, _rx) = signals();
        assert!(s.wait_raised(Duration::from_millis(10)).is_none());
        raise(&s, 1, Duration::ZERO);
        assert!(s.wait_raised(Duration::from_millis(10)).is_none());
        assert_eq!(s.guards(), 0);
    }

    #[test]
    fn guards_are_counted_until_dropped_and_the_last_drop_wakes_the_loop() {
        let (s, rx) = signals();
        raise(&s, 3, Duration::from_secs(60));
        let (a, b) = (
            s.wait_raised(Duration::ZERO).unwrap(),
            s.wait_raised(Duration::ZERO).unwrap(),
        );
        assert_eq!((a.token(), s.guards()), (3, 2));
        lower(&s);
        assert!(!a.is_valid() && !b.is_valid());
        assert!(s.wait_raised(Duration::ZERO).is_none(), "none once lowered");
        drop(a);
        assert!(rx.try_recv().is_err(), "one guard still alive");
        drop(b);
        assert_eq!(s.guards(), 0);
        assert!(matches!(rx.try_recv(), Ok(Msg::GuardsDropped)));
    }

    #[test]
    fn wait_raised_wakes_on_the_raise() {
        let (s, _rx) = signals();
        let waiter = std::thread::spawn({
            let s = Arc::clone(&s);
            move || s.wait_raised(Duration::from_secs(10)).map(|g| g.token())
        });
        std::thread::sleep(Duration::from_millis(20));
        raise(&s, 4, Duration::from_secs(60));
        assert_eq!(waiter.join().unwrap(), Some(4));
    }

    #[test]
    fn a_guard_is_lost_on_a_lower_on_another_term_and_at_the_deadline() {
        let (s, _rx) = signals();
        raise(&s, 1, Duration::from_secs(60));
        let guard = s.wait_raised(Duration::ZERO).unwrap();
        // A renew of the same term does not end it.
        raise(&s, 1, Duration::from_secs(90));
        assert!(!guard.wait_lost(Duration::from_millis(20)));
        // A term with another token is not this one.
        raise(&s, 5, Duration::from_secs(60));
        assert!(guard.wait_lost(Duration::ZERO));
        drop(guard);

        // Nobody publishes anything: the deadline alone ends the term.
        raise(&s, 6, Duration::from_millis(100));
        let guard = s.wait_raised(Duration::ZERO).unwrap();
        let started = Instant::now();
        assert!(guard.wait_lost(Duration::from_secs(5)));
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert!(!guard.is_valid());
    }

    #[test]
    fn nothing_is_raised_again_once_the_handle_ended_the_flag() {
        let (s, _rx) = signals();
        raise(&s, 1, Duration::from_secs(60));
        let guard = s.wait_raised(Duration::ZERO).unwrap();
        s.end();
        // A renew whose reply the driver handled before it heard of the close.
        raise(&s, 1, Duration::from_secs(90));
        assert!(!guard.is_valid() && !s.lease.is_raised());
        assert!(s.wait_raised(Duration::ZERO).is_none());
    }

    #[test]
    fn subscribers_get_the_current_state_then_each_change() {
        let (s, _rx) = signals();
        let rx = s.subscribe();
        raise(&s, 2, Duration::from_secs(60));
        lower(&s);
        lower(&s); // no change, no message
        let got: Vec<_> = rx.try_iter().map(|st| st.token()).collect();
        assert_eq!(got, vec![None, Some(2), None]);
    }
}
