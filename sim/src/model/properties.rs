//! The properties checked in every reachable state (the simulator's invariants, judged the
//! same way: `sim/invariants.rs`).
//!
//! - **one leader**: never two processes answering `is_leader(local_now)` (with the
//!   local-deadline or deadline-from-send safeguard off: the belief the simulator's judge
//!   uses then). Leadership begins only at an event, so judging every state judges every
//!   instant at which it could begin.
//! - **work stops first**: no process leads while another's leader-only work still runs.
//! - **fencing**: every `Raise` carries a token above every earlier one, lost history
//!   included, whether the raising process saw the higher token or not (issue 25: a new term's
//!   token follows the database's clock), as in the simulator.
//! - **the Go rule**: no check takes over a lease live by the Go flag's rule.
//! - **the core's promises**: the core's auditor (`leadership_core::audit`) finds nothing,
//!   and the core never refuses an input of the modelled driver.
//! - **effects in their term**: no transaction of a term's leader-only work commits after a
//!   newer term began (the check that started it committed), whenever it arrives.
//! - **liveness** (bounded): once no fault has been active for the liveness window (a lease,
//!   a renew, two retries and a timeout, stretched by the slowest clock), someone leads.

use std::fmt;

use super::world::{Proc, Work, World};
use super::Params;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Violation {
    /// Two processes answer `is_leader` at one instant.
    TwoLeaders {
        /// One.
        a: String,
        /// The other.
        b: String,
    },
    /// A process leads while another's leader-only work runs.
    WorkStillRunning {
        /// The leader.
        leader: String,
        /// The process whose work runs.
        worker: String,
    },
    /// A token not above an earlier one.
    TokenNotIncreasing {
        /// The raising process.
        who: String,
        /// Its token.
        token: i64,
        /// The largest before.
        before: i64,
    },
    /// A takeover of a lease live by the Go rule.
    TookLiveLease {
        /// The taker.
        who: String,
        /// The lease's age by the database's clock (µs).
        age_micros: i64,
    },
    /// The core's auditor found a broken promise.
    CorePromise {
        /// The process.
        who: String,
        /// The finding.
        what: String,
    },
    /// The core refused an input of the modelled driver.
    Contract {
        /// The process.
        who: String,
        /// The core's error.
        error: String,
    },
    /// A transaction of a term's work committed after a newer term began.
    LateEffect {
        /// The process whose work wrote it.
        who: String,
        /// Its term.
        token: i64,
        /// The newer term that had begun.
        newer: i64,
    },
    /// Nobody leads though nothing has gone wrong for the liveness window.
    NoLeader {
        /// Quiet for this many ticks.
        quiet_ticks: u32,
    },
}

impl Violation {
    /// The property's short name.
    pub fn name(&self) -> &'static str {
        match self {
            Violation::TwoLeaders { .. } => "two-leaders",
            Violation::WorkStillRunning { .. } => "work-stops-first",
            Violation::TokenNotIncreasing { .. } => "fencing",
            Violation::TookLiveLease { .. } => "go-rule",
            Violation::CorePromise { .. } => "core-promise",
            Violation::Contract { .. } => "contract",
            Violation::LateEffect { .. } => "effects-in-their-term",
            Violation::NoLeader { .. } => "liveness",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TwoLeaders { a, b } => {
                write!(
                    f,
                    "two leaders: {a} and {b} both answer is_leader() == true"
                )
            }
            Violation::WorkStillRunning { leader, worker } => write!(
                f,
                "{leader} leads while {worker}'s leader-only work still runs"
            ),
            Violation::TokenNotIncreasing { who, token, before } => write!(
                f,
                "fencing tokens not increasing: {who} raised token {token} after token {before}"
            ),
            Violation::TookLiveLease { who, age_micros } => write!(
                f,
                "{who} took over a lease {age_micros} µs old: live by the Go rule"
            ),
            Violation::CorePromise { who, what } => {
                write!(f, "{who}'s core broke a promise: {what}")
            }
            Violation::Contract { who, error } => {
                write!(f, "{who}'s core refused an input: {error}")
            }
            Violation::LateEffect { who, token, newer } => write!(
                f,
                "a transaction of {who}'s term {token} committed after term {newer} began"
            ),
            Violation::NoLeader { quiet_ticks } => write!(
                f,
                "liveness: nobody leads after {quiet_ticks} ticks without faults"
            ),
        }
    }
}

/// Whether process `pr` leads now, by the simulator's rule ([`Safeguards::leads`](crate::sim::Safeguards::leads)).
pub fn leads(world: &World, params: &Params, pr: &Proc) -> bool {
    let Some(core) = &pr.core else {
        return false; // a crashed process believes nothing
    };
    let local = pr.clock.local(world.t_ns(params));
    let lease = core.flag().lease_at(local);
    params
        .sim
        .safeguards
        .leads(lease, pr.believed, pr.believed_until, local)
        .0
}

/// The first broken property in `world`, if any.
pub fn judge(world: &World, params: &Params) -> Option<Violation> {
    if let Some(v) = &world.violation {
        return Some(v.clone());
    }
    let mut leader: Option<usize> = None;
    for (i, pr) in world.procs.iter().enumerate() {
        if leads(world, params, pr) {
            if let Some(a) = leader {
                return Some(Violation::TwoLeaders {
                    // By index: twins share a name.
                    a: format!("r{a}"),
                    b: format!("r{i}"),
                });
            }
            leader = Some(i);
        }
    }
    match leader {
        Some(l) => {
            if let Some(w) =
                (0..world.procs.len()).find(|&j| j != l && world.procs[j].work.is_some())
            {
                return Some(Violation::WorkStillRunning {
                    leader: format!("r{l}"),
                    worker: format!("r{w}"),
                });
            }
        }
        None => {
            let quiet = world.tick - world.quiet_since;
            // Only judged at the start of a tick's events would be kinder; a leaderless
            // moment inside a tick is a lapse all the same.
            if quiet > params.liveness_ticks
                && !world
                    .procs
                    .iter()
                    .any(|p| p.work.is_some_and(|w| w != Work::Running))
            {
                return Some(Violation::NoLeader { quiet_ticks: quiet });
            }
        }
    }
    None
}
