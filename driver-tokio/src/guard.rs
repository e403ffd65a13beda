//! [`Guard`]: a term of leadership held by leader-only work, counted by the driver's
//! [`Signals`] so that no release passes a guard still alive.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use leadership_core::Instant as CoreInstant;
use tokio_util::sync::CancellationToken;

use crate::fence::{Fence, FenceError};
use crate::signals::{Signals, Term};

/// A term of leadership held by leader-only work, from [`Flag::raised`](crate::Flag::raised),
/// [`Flag::try_lead`](crate::Flag::try_lead) or [`Flag::lead`](crate::Flag::lead).
///
/// It carries the term's fencing token and deadline; [`at_risk`](Guard::at_risk) resolves
/// when the work should begin stopping (no renew has won by the deadline minus the
/// stop-ahead), and [`lost`](Guard::lost) when the term has ended for any reason: the deadline
/// passed (even while the driver is stuck in a hung statement), another process took over,
/// the precheck refused, or the flag was closed or dropped. On a close or a refused precheck
/// the driver releases the row only after every guard has been dropped, and never while one
/// lives (the lease is left to expire instead), so drop the guard when the work has stopped,
/// not before.
///
/// The pattern: stop when at risk; the deadline is the hard bound; fence writes elsewhere with
/// the token.
///
/// ```no_run
/// # async fn demo(flag: leadership_tokio::Flag) {
/// # async fn work(_token: i64) {}
/// loop {
///     let Ok(guard) = flag.raised().await else { break };
///     tokio::select! {
///         () = guard.at_risk() => println!("the lease is at risk; work stopped in time"),
///         () = work(guard.token()) => println!("work done"),
///     }
///     drop(guard); // now the row may be released to the next leader
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Guard {
    token: i64,
    deadline: CoreInstant,
    signals: Arc<Signals>,
    /// Cancelled when the term is at risk or lost, or the guard dropped; made on first use.
    stop: OnceLock<CancellationToken>,
}

impl Guard {
    /// A guard for the current term, if this process leads (the deadline lies ahead by the
    /// clock). With `not_at_risk`, none while the lease is at risk either.
    pub(crate) fn current(signals: &Arc<Signals>, not_at_risk: bool) -> Option<Guard> {
        let term = signals.count_guard(not_at_risk)?;
        Some(Guard {
            token: term.token,
            deadline: term.deadline,
            signals: signals.clone(),
            stop: OnceLock::new(),
        })
    }

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

    /// This term's fence, for the database that holds the flags: the statement and its values,
    /// to run first in a transaction whose writes must commit only while this term holds the
    /// flag. See [`Fence`]; [`fence_in`](Guard::fence_in) runs it with tokio-postgres.
    pub fn fence(&self) -> Fence {
        let fencing = self
            .signals
            .fencing
            .get()
            .expect("a flag sets its fencing before its driver makes any guard");
        Fence::new(fencing.clone(), self.token)
    }

    /// Runs this term's fence first in `transaction` (a tokio-postgres `Transaction`, or a
    /// `Client` inside a transaction block begun by hand), on the database that holds the
    /// flags: `Ok` means the transaction's writes commit while this term holds the flag, or
    /// not at all (every renew and takeover waits for the transaction to end, which the fence
    /// bounds by the lease left). [`FenceError::TermOver`] means the term is over: roll back.
    /// A guard already lost fails without a round trip.
    ///
    /// Keep the transaction short, well under the flag's timeout: this term's own renew waits
    /// for it too.
    ///
    /// ```no_run
    /// # async fn demo(guard: &leadership_tokio::Guard, db: &mut tokio_postgres::Client)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// let tx = db.transaction().await?;
    /// guard.fence_in(&tx).await?; // the term is over: the error, and no commit
    /// tx.execute("INSERT INTO report_runs (token) VALUES ($1)", &[&guard.token()]).await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fence_in<C>(&self, transaction: &C) -> Result<(), FenceError>
    where
        C: tokio_postgres::GenericClient + Sync,
    {
        let fence = self.fence();
        if self.is_lost() {
            return Err(fence.error_term_over());
        }
        fence.run(transaction).await
    }

    /// The term's current term, if it still holds by the state (not by the clock).
    fn term(&self) -> Option<Term> {
        self.signals.term().filter(|t| t.token == self.token)
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
        let deadline = self.term().map_or(self.deadline, |t| t.deadline);
        self.std_instant(deadline)
    }

    fn std_instant(&self, at: CoreInstant) -> Instant {
        let now = self.signals.cell.now();
        let std_now = Instant::now();
        if at >= now {
            std_now + (at - now)
        } else {
            std_now.checked_sub(now - at).unwrap_or(std_now)
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
        self.term()
            .is_none_or(|t| self.signals.cell.now() >= t.deadline)
    }

    /// Whether the work should be stopping now: the lease is at risk (no renew has won by its
    /// at-risk instant), or the term has ended.
    ///
    /// ```no_run
    /// # fn demo(guard: &leadership_tokio::Guard) {
    /// if guard.is_at_risk() { /* finish the current step and stop */ }
    /// # }
    /// ```
    pub fn is_at_risk(&self) -> bool {
        let now = self.signals.cell.now();
        self.term()
            .is_none_or(|t| now >= t.deadline || t.is_at_risk(now))
    }

    /// Resolves when the work should begin stopping so that it is over by the deadline: the
    /// lease is at risk (no renew has won by the deadline minus the stop-ahead; judged by the
    /// clock too, so it fires on time while the driver is stuck), or the term has ended.
    /// Resolves at once if so already. A renew that wins before the at-risk instant moves it
    /// later. Cancel-safe.
    ///
    /// ```no_run
    /// # async fn demo(guard: leadership_tokio::Guard) {
    /// guard.at_risk().await;
    /// println!("stop now: the lease may end at {:?}", guard.deadline());
    /// # }
    /// ```
    pub async fn at_risk(&self) {
        self.wait(true).await
    }

    /// Resolves when the term ends: it is lowered or replaced, or the current deadline passes
    /// (the driver may be stuck and unable to publish; the clock is enough). Resolves at once
    /// if it already has. Cancel-safe; call it as often as needed.
    ///
    /// ```no_run
    /// # async fn demo(guard: leadership_tokio::Guard) {
    /// guard.lost().await;
    /// println!("no longer the leader");
    /// # }
    /// ```
    pub async fn lost(&self) {
        self.wait(false).await
    }

    async fn wait(&self, risk: bool) {
        self.signals.wait(self.token, risk).await
    }

    /// A token cancelled when the work should stop: when the lease is at risk, the term ends,
    /// or the guard is dropped. Pass it down to the tasks the work spawns. Call it within a
    /// tokio runtime (a small task watches the term for it).
    ///
    /// ```no_run
    /// # async fn demo(guard: leadership_tokio::Guard) {
    /// let stop = guard.stop_token();
    /// tokio::spawn(async move {
    ///     stop.cancelled().await;
    ///     println!("winding down");
    /// });
    /// # }
    /// ```
    pub fn stop_token(&self) -> CancellationToken {
        self.stop
            .get_or_init(|| {
                let stop = CancellationToken::new();
                let (signals, token, watcher) = (self.signals.clone(), self.token, stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = signals.wait(token, true) => watcher.cancel(),
                        () = watcher.cancelled() => {}
                    }
                });
                stop
            })
            .clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.get() {
            stop.cancel();
        }
        self.signals.guard_dropped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use std::time::Duration;

    fn raised(signals: &Signals, token: i64, ahead: Duration, risk_ahead: Duration) {
        let now = signals.cell.now();
        signals.raised(leadership_core::Lease {
            token,
            version: token,
            deadline: now + ahead,
            at_risk: now + risk_ahead,
            won_by: leadership_core::WonBy::Created,
        });
    }

    #[test]
    fn no_guard_while_lowered_or_past_the_deadline_or_at_risk_if_asked() {
        let signals = Arc::new(Signals::new());
        assert!(Guard::current(&signals, false).is_none());
        raised(&signals, 1, Duration::ZERO, Duration::ZERO);
        assert!(Guard::current(&signals, false).is_none());
        raised(&signals, 2, Duration::from_secs(60), Duration::ZERO);
        assert!(Guard::current(&signals, true).is_none(), "at risk");
        let guard = Guard::current(&signals, false).expect("leading, at risk");
        assert!(guard.is_at_risk() && !guard.is_lost());
        drop(guard);
        assert_eq!(signals.guards(), 0);
    }

    #[test]
    fn the_state_changes_on_transitions_only() {
        let signals = Arc::new(Signals::new());
        let mut state = signals.subscribe();
        raised(
            &signals,
            1,
            Duration::from_secs(60),
            Duration::from_secs(50),
        );
        assert!(state.has_changed().unwrap());
        assert_eq!(
            *state.borrow_and_update(),
            State::Raised {
                token: 1,
                at_risk: false
            }
        );
        // A renew of the same term moves the deadline: not a transition.
        raised(
            &signals,
            1,
            Duration::from_secs(90),
            Duration::from_secs(80),
        );
        assert!(!state.has_changed().unwrap());
        signals.at_risk();
        assert_eq!(
            *state.borrow_and_update(),
            State::Raised {
                token: 1,
                at_risk: true
            }
        );
        raised(
            &signals,
            1,
            Duration::from_secs(90),
            Duration::from_secs(80),
        );
        assert!(state.has_changed().unwrap(), "a renew ends the risk");
        state.borrow_and_update();
        signals.lowered();
        assert_eq!(*state.borrow_and_update(), State::Lowered);
    }

    #[tokio::test]
    async fn guards_are_counted_until_dropped() {
        let signals = Arc::new(Signals::new());
        raised(
            &signals,
            3,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let (a, b) = (
            Guard::current(&signals, true).unwrap(),
            Guard::current(&signals, true).unwrap(),
        );
        assert_eq!((a.token(), signals.guards()), (3, 2));
        signals.lowered();
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
    async fn at_risk_fires_before_lost_by_the_clock_alone() {
        let signals = Arc::new(Signals::new());
        raised(
            &signals,
            6,
            Duration::from_millis(200),
            Duration::from_millis(100),
        );
        let guard = Guard::current(&signals, true).unwrap();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), guard.at_risk())
            .await
            .unwrap();
        let risk = started.elapsed();
        assert!(!guard.is_lost() && guard.is_at_risk());
        tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .unwrap();
        let lost = started.elapsed();
        assert!(
            risk >= Duration::from_millis(90) && lost >= Duration::from_millis(190),
            "{risk:?} {lost:?}"
        );
        assert!(guard.is_lost());
        assert!(guard.deadline() <= Instant::now());
    }

    #[tokio::test]
    async fn lost_fires_on_lowered_and_on_another_term_not_on_a_renew() {
        let signals = Arc::new(Signals::new());
        raised(
            &signals,
            1,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let guard = Guard::current(&signals, false).unwrap();
        let lost = tokio::spawn(async move {
            guard.lost().await;
            guard
        });
        tokio::task::yield_now().await;
        raised(
            &signals,
            1,
            Duration::from_secs(90),
            Duration::from_secs(90),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!lost.is_finished());
        raised(
            &signals,
            5,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let guard = tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .unwrap()
            .unwrap();
        assert!(guard.is_lost());
    }
}
