//! [`Signals`]: what the driver publishes for the handle, watchers and guards (the lease cell,
//! the term, the state, the holder, the count of live guards), each through its own channel.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use leadership_core::Instant as CoreInstant;
use tokio::sync::watch;

use crate::fence::Fencing;
use crate::lease::{Lease, LeaseCell};
use crate::state::{Holder, State};

/// The current term as the driver last published it: on every raise, renew, at-risk and
/// lower. Judged against the lease cell's clock, the one `is_raised` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Term {
    pub(crate) token: i64,
    pub(crate) deadline: CoreInstant,
    pub(crate) at_risk: CoreInstant,
    /// The core said the lease is at risk, and no renew has won since.
    pub(crate) told_at_risk: bool,
}

/// What the driver publishes: the lease cell (the fast path of `is_raised`), the current term
/// for guards, the state for watchers (transitions only), the number of live guards (the
/// leader-only work the core waits for before releasing), and the holder seen by the last
/// check.
#[derive(Debug)]
pub(crate) struct Signals {
    pub(crate) cell: LeaseCell,
    term: watch::Sender<Option<Term>>,
    /// The lease as the handle reports it: every raise, renew and lower.
    lease: watch::Sender<Option<Lease>>,
    state: watch::Sender<State>,
    guards: watch::Sender<usize>,
    holder: watch::Sender<Option<Holder>>,
    /// The statements' outcomes, for `health()`.
    pub(crate) health: crate::health::HealthCounters,
    /// What guards need to fence: set by the flag before its driver runs, so before any guard.
    pub(crate) fencing: OnceLock<Arc<Fencing>>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            cell: LeaseCell::new(),
            term: watch::Sender::new(None),
            lease: watch::Sender::new(None),
            state: watch::Sender::new(State::Lowered),
            guards: watch::Sender::new(0),
            holder: watch::Sender::new(None),
            health: Default::default(),
            fencing: OnceLock::new(),
        }
    }

    /// A raise or a renew: the lease and the term, and the state if it changed.
    pub(crate) fn raised(&self, lease: leadership_core::Lease) -> Lease {
        let reported = self.cell.publish(lease);
        self.lease.send_replace(Some(reported));
        self.publish_term(Some(Term {
            token: lease.token,
            deadline: lease.deadline,
            at_risk: lease.at_risk,
            told_at_risk: false,
        }));
        reported
    }

    /// The core said the lease is at risk.
    pub(crate) fn at_risk(&self) {
        self.term.send_if_modified(|term| match term {
            Some(t) if !t.told_at_risk => {
                t.told_at_risk = true;
                true
            }
            _ => false,
        });
        self.publish_state();
    }

    /// Leadership ended: every guard's `lost()` fires now.
    pub(crate) fn lowered(&self) {
        self.cell.clear();
        self.lease.send_if_modified(|l| l.take().is_some());
        self.publish_term(None);
    }

    fn publish_term(&self, term: Option<Term>) {
        self.term.send_if_modified(|t| {
            let changed = *t != term;
            *t = term;
            changed
        });
        self.publish_state();
    }

    /// The state follows the term, and watchers see transitions only: a raise, a new term, the
    /// lease at risk and back, a lower; not the deadline moved by each renew.
    fn publish_state(&self) {
        let state = match *self.term.borrow() {
            Some(t) => State::Raised {
                token: t.token,
                at_risk: t.told_at_risk,
            },
            None => State::Lowered,
        };
        self.state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    pub(crate) fn subscribe_lease(&self) -> watch::Receiver<Option<Lease>> {
        self.lease.subscribe()
    }

    pub(crate) fn subscribe_term(&self) -> watch::Receiver<Option<Term>> {
        self.term.subscribe()
    }

    /// Resolves once no guard is alive.
    pub(crate) async fn guards_dropped(&self) {
        let mut guards = self.guards.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = guards.wait_for(|n| *n == 0).await;
    }

    #[cfg(test)]
    pub(crate) fn guards(&self) -> usize {
        *self.guards.borrow()
    }

    pub(crate) fn set_holder(&self, holder: Holder) {
        self.cell.saw(holder.version);
        self.holder.send_replace(Some(holder));
    }

    pub(crate) fn holder(&self) -> Option<Holder> {
        self.holder.borrow().clone()
    }

    pub(crate) fn subscribe_holder(&self) -> watch::Receiver<Option<Holder>> {
        self.holder.subscribe()
    }

    /// The current term, as last published.
    pub(crate) fn term(&self) -> Option<Term> {
        *self.term.borrow()
    }

    /// Counts a guard for the current term, if this process leads (the deadline lies ahead
    /// by the clock), and returns that term. With `not_at_risk`, none while the lease is at
    /// risk either.
    ///
    /// The guard is counted under the count's lock, after reading the term: the driver
    /// publishes the lowering before it reads the count, so either it sees this guard and waits
    /// for it, or this sees the lowering and makes no guard. No guard can slip past a release.
    pub(crate) fn count_guard(&self, not_at_risk: bool) -> Option<Term> {
        let mut made = None;
        self.guards.send_if_modified(|n| {
            let Some(term) = *self.term.borrow() else {
                return false;
            };
            let now = self.cell.now();
            if now >= term.deadline || (not_at_risk && term.is_at_risk(now)) {
                return false;
            }
            *n += 1;
            made = Some(term);
            true
        });
        made
    }

    /// A guard counted by [`count_guard`](Signals::count_guard) is gone.
    pub(crate) fn guard_dropped(&self) {
        self.guards.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Waits until the term `token` ends or, with `risk`, is at risk (by the state or the
    /// clock).
    pub(crate) async fn wait(&self, token: i64, risk: bool) {
        let mut term = self.subscribe_term();
        loop {
            let current = (*term.borrow_and_update()).filter(|t| t.token == token);
            let Some(t) = current else { return };
            let now = self.cell.now();
            if now >= t.deadline || (risk && t.is_at_risk(now)) {
                return;
            }
            let wake = if risk { t.at_risk } else { t.deadline };
            let wake = self.cell.at(wake).unwrap_or_else(Instant::now);
            tokio::select! {
                changed = term.changed() => if changed.is_err() { return },
                // A renew may have moved the instant meanwhile: look again.
                // On the lease's clock, so a suspend cannot delay it.
                () = crate::boot_clock::sleep_until(wake) => {}
            }
        }
    }
}

impl Term {
    /// The core said so, or the at-risk instant has come.
    pub(crate) fn is_at_risk(&self, now: CoreInstant) -> bool {
        self.told_at_risk || now >= self.at_risk
    }
}
