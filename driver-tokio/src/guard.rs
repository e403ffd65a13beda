//! [`Guard`]: a term of leadership held by leader-only work, and the signals through which the
//! driver tells the handle, watchers and guards what the core decided.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use crate::state::{Holder, State};

/// What the driver publishes besides the lease cell: the state for watchers and guards, the
/// number of live guards (the leader-only work the core waits for before releasing), and the
/// holder seen by the last check.
#[derive(Debug)]
pub(crate) struct Signals {
    state: watch::Sender<State>,
    guards: watch::Sender<usize>,
    holder: Mutex<Option<Holder>>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            state: watch::Sender::new(State::Lowered),
            guards: watch::Sender::new(0),
            holder: Mutex::new(None),
        }
    }

    /// Publishes the state; watchers and guards see it at once.
    pub(crate) fn publish(&self, state: State) {
        self.state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    /// Resolves once no guard is alive.
    pub(crate) async fn guards_dropped(&self) {
        let mut guards = self.guards.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = guards.wait_for(|n| *n == 0).await;
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

    /// A guard for the current term, if the state is raised and its deadline lies ahead.
    ///
    /// The guard is counted under the count's lock, after reading the state: the driver
    /// publishes `Lowered` before it reads the count, so either it sees this guard and waits
    /// for it, or this sees `Lowered` and makes no guard. No guard can slip past a release.
    pub(crate) fn guard(self: &Arc<Self>) -> Option<Guard> {
        let mut made = None;
        self.guards.send_if_modified(|n| {
            let State::Raised { token, deadline } = *self.state.borrow() else {
                return false;
            };
            if Instant::now() >= deadline {
                return false;
            }
            *n += 1;
            made = Some((token, deadline));
            true
        });
        let (token, deadline) = made?;
        Some(Guard {
            token,
            deadline,
            signals: self.clone(),
        })
    }
}

/// A term of leadership held by leader-only work, from [`Flag::raised`](crate::Flag::raised).
///
/// It carries the term's fencing token and deadline, and [`lost`](Guard::lost) resolves when
/// the term ends for any reason: the deadline passed (even while the driver is stuck in a hung
/// statement), another process took over, the precheck refused, or the flag was closed or
/// dropped. On a close or a refused precheck the driver releases the row only after every
/// guard has been dropped (or at the lease's deadline, whichever is first), so drop the guard
/// when the work has stopped, not before.
///
/// ```no_run
/// # async fn demo(flag: leadership_tokio::Flag) {
/// # async fn work(_token: i64) {}
/// loop {
///     let Ok(guard) = flag.raised().await else { break };
///     tokio::select! {
///         () = guard.lost() => println!("lost the lead; work abandoned"),
///         () = work(guard.token()) => println!("work done"),
///     }
///     drop(guard); // now the row may be released to the next leader
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Guard {
    token: i64,
    deadline: Instant,
    signals: Arc<Signals>,
}

impl Guard {
    /// The fencing token: the row version at which this term was won. A later leader's is
    /// always larger; pass it to systems that refuse writes from deposed leaders.
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_tokio::Guard) {
    /// println!("writing as token {}", guard.token());
    /// # }
    /// ```
    pub fn token(&self) -> i64 {
        self.token
    }

    /// The current lease's deadline: moved later by every renew of this term; once the term
    /// has ended, the last deadline it had.
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_tokio::Guard) {
    /// let left = guard.deadline().saturating_duration_since(std::time::Instant::now());
    /// # }
    /// ```
    pub fn deadline(&self) -> Instant {
        match *self.signals.state.borrow() {
            State::Raised { token, deadline } if token == self.token => deadline,
            _ => self.deadline,
        }
    }

    /// Whether the term has ended (now, by the state and the clock).
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_tokio::Guard) {
    /// if guard.is_lost() { return; }
    /// # }
    /// ```
    pub fn is_lost(&self) -> bool {
        match *self.signals.state.borrow() {
            State::Raised { token, deadline } if token == self.token => Instant::now() >= deadline,
            _ => true,
        }
    }

    /// Resolves when the term ends: the state leaves `Raised` with this token, or the current
    /// deadline passes (the driver may be stuck and unable to publish; the clock is enough).
    /// Resolves at once if it already has. Cancel-safe; call it as often as needed.
    ///
    /// ```no_run
    /// # async fn demo(guard: leadership_tokio::Guard) {
    /// guard.lost().await;
    /// println!("no longer the leader");
    /// # }
    /// ```
    pub async fn lost(&self) {
        let mut state = self.signals.subscribe();
        loop {
            let deadline = match *state.borrow_and_update() {
                State::Raised { token, deadline } if token == self.token => deadline,
                _ => return,
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return },
                // A renew may have moved the deadline meanwhile: look again.
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.signals
            .guards
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn raised(signals: &Signals, token: i64, ahead: Duration) {
        signals.publish(State::Raised {
            token,
            deadline: Instant::now() + ahead,
        });
    }

    #[test]
    fn no_guard_while_lowered_or_past_the_deadline() {
        let signals = Arc::new(Signals::new());
        assert!(signals.guard().is_none());
        signals.publish(State::Raised {
            token: 1,
            deadline: Instant::now(),
        });
        assert!(signals.guard().is_none());
        assert_eq!(*signals.guards.borrow(), 0);
    }

    #[tokio::test]
    async fn guards_are_counted_until_dropped() {
        let signals = Arc::new(Signals::new());
        raised(&signals, 3, Duration::from_secs(60));
        let (a, b) = (signals.guard().unwrap(), signals.guard().unwrap());
        assert_eq!((a.token(), *signals.guards.borrow()), (3, 2));
        signals.publish(State::Lowered);
        drop(a);
        let waiting = tokio::spawn({
            let signals = signals.clone();
            async move { signals.guards_dropped().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released once the last guard is dropped")
            .unwrap();
    }

    #[tokio::test]
    async fn lost_fires_on_lowered_on_another_term_and_at_the_deadline() {
        let signals = Arc::new(Signals::new());
        raised(&signals, 1, Duration::from_secs(60));
        let guard = signals.guard().unwrap();
        let lost = tokio::spawn(async move {
            guard.lost().await;
            guard
        });
        tokio::task::yield_now().await;
        // A renew of the same term does not end it.
        raised(&signals, 1, Duration::from_secs(90));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!lost.is_finished());
        // A term with another token is not this one.
        raised(&signals, 5, Duration::from_secs(60));
        let guard = tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .unwrap()
            .unwrap();
        assert!(guard.is_lost());
        drop(guard);

        // Nobody publishes anything: the deadline alone ends the term.
        raised(&signals, 6, Duration::from_millis(100));
        let guard = signals.guard().unwrap();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert!(guard.is_lost());
        // The guard remembers the deadline of its term after it ended.
        assert!(guard.deadline() <= Instant::now());
    }
}
