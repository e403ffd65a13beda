//! What both modelled drivers (`sim/driver.rs`, `model/driver.rs`) keep of the core's
//! leadership commands, the same way: who believes it leads ([`Belief`], from `Raise`,
//! `Renewed` and `Lower`) and the largest token raised so far ([`Tokens`], the fencing
//! order).

use leadership_core::{Config, Instant, LowerReason};

use crate::violation::Violation;

/// A process's belief that it leads, by the commands its core has sent: the judge's view
/// with the local-deadline safeguard off (`Safeguards::leads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Belief {
    /// Raised by a `Raise` or `Renewed`, ended by a `Lower` (or the process's end).
    pub held: bool,
    /// With the deadline-from-send safeguard off: the belief ends at this local instant,
    /// counted from the arrival of the winning reply.
    pub until: Instant,
}

impl Belief {
    /// Believes nothing (a process that starts, or has ended).
    pub const NONE: Belief = Belief {
        held: false,
        until: Instant::ZERO,
    };

    /// A `Raise` or `Renewed` handled at `local`: believed for a lease less the margin,
    /// counted from now.
    pub fn raised(&mut self, local: Instant, config: &Config) {
        self.held = true;
        self.until = local + (config.interval() - config.margin());
    }

    /// A `Lower`: ends the belief, except the core's own deadline lowering when the
    /// deadline-from-send safeguard is off (the reply-counted deadline outlives it).
    pub fn lowered(&mut self, reason: LowerReason, deadline_from_send: bool) {
        if deadline_from_send || reason != LowerReason::DeadlinePassed {
            self.held = false;
        }
    }

    /// The process ended (crash, exit): it believes nothing.
    pub fn end(&mut self) {
        self.held = false;
    }
}

/// The fencing order: a new term's token must exceed every earlier one, lost history
/// included, whether the raising process saw the higher token or not (issue 25: a new
/// term's token follows the database's clock, which a failover's standby keeps ahead;
/// before the clock floor, a process that never saw a lost token could write below it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tokens {
    largest: Option<i64>,
}

impl Tokens {
    /// Records `who`'s `Raise` of `token`; the broken order if it is not above every
    /// earlier token (recorded all the same).
    pub fn raise(&mut self, who: &str, token: i64) -> Result<(), Violation> {
        let before = self.largest;
        self.largest = Some(before.map_or(token, |b| b.max(token)));
        match before {
            Some(before) if token <= before => Err(Violation::TokenNotIncreasing {
                who: who.to_string(),
                token,
                before,
            }),
            _ => Ok(()),
        }
    }
}
