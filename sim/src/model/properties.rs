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

use super::world::{Proc, Work, World};
use super::Params;
use crate::violation::{Quiet, Violation};

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
        .leads(lease, pr.belief.held, pr.belief.until, local)
        .0
}

/// The first broken property in `world`, if any.
pub fn judge(world: &World, params: &Params) -> Option<Violation> {
    if let Some(v) = &world.violation {
        return Some(v.clone());
    }
    (0..usize::from(world.flags)).find_map(|f| judge_flag(world, params, f))
}

/// The first broken property of flag `f` (its cores, one per process) in `world`.
fn judge_flag(world: &World, params: &Params, f: usize) -> Option<Violation> {
    let cores = (f..world.procs.len()).step_by(usize::from(world.flags));
    let mut leader: Option<usize> = None;
    for i in cores.clone() {
        if leads(world, params, &world.procs[i]) {
            if let Some(a) = leader {
                return Some(Violation::TwoLeaders {
                    // By index: twins share a name.
                    a: world.label(a),
                    b: world.label(i),
                });
            }
            leader = Some(i);
        }
    }
    match leader {
        Some(l) => {
            if let Some(w) = cores
                .clone()
                .find(|&j| j != l && world.procs[j].work.is_some())
            {
                return Some(Violation::WorkStillRunning {
                    leader: world.label(l),
                    worker: world.label(w),
                });
            }
        }
        None => {
            let quiet = world.tick - world.quiet_since;
            // Only judged at the start of a tick's events would be kinder; a leaderless
            // moment inside a tick is a lapse all the same.
            if quiet > params.liveness_ticks
                && !cores
                    .clone()
                    .any(|p| world.procs[p].work.is_some_and(|w| w != Work::Running))
            {
                return Some(Violation::NoLeader {
                    quiet: Quiet::Ticks(quiet),
                });
            }
        }
    }
    None
}
