//! The core's own promises, checked on every call: a wrapper for tests, fuzzers and
//! simulators (feature `audit`).
//!
//! [`AuditedFlag`] forwards every call to a [`Flag`] and returns a [`Violation`] the moment a
//! promise breaks: a raise without a won check in flight, a lease raised already past, a leader
//! at its own deadline, an unstable or past `poll_timeout`, a refused input that changed the
//! state, a lease said to be at risk before its time, or a release while the leader-only work
//! told to stop has not said it has.
//!
//! ```
//! use leadership_core::audit::AuditedFlag;
//! use leadership_core::{Config, Instant};
//! let mut flag = AuditedFlag::new(Config::builder("f", "p").build()?, 1, Instant::ZERO);
//! while let Some(command) = flag.poll_command()? {
//!     println!("{command:?}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Command, Config, ContractError, Flag, Input, Instant};

/// A broken promise of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// `Raise` or `Renewed` came out of anything but an accepted won check reply.
    #[error("{0:?} emitted without a won check in flight")]
    RaiseWithoutWin(Command),
    /// `Raise` or `Renewed` carried a deadline not after the current time.
    #[error("{0:?} emitted with a deadline already past")]
    RaisedPastDeadline(Command),
    /// `is_leader` answered `true` at or after the lease's deadline, or disagreed with `lease_at`.
    #[error("is_leader disagrees with the lease deadline")]
    LeaderPastDeadline,
    /// A check reply was accepted though no check had been emitted.
    #[error("a check reply was accepted with no check emitted")]
    ReplyWithoutCheck,
    /// Two calls of `poll_timeout` without an input between them disagreed.
    #[error("poll_timeout changed without an input")]
    UnstableTimeout,
    /// `poll_timeout` pointed before the latest time handed in.
    #[error("poll_timeout {timeout:?} is before the latest now {now:?}")]
    TimeoutInPast {
        /// What `poll_timeout` returned.
        timeout: Instant,
        /// The latest time handed in.
        now: Instant,
    },
    /// An input was refused as a contract error, yet the state changed.
    #[error("a refused input changed the state")]
    RefusalChangedState,
    /// `AtRisk` came before the lease's at-risk instant, or after its deadline.
    #[error("{0:?} emitted outside its lease's at-risk window")]
    AtRiskOutOfTime(Command),
    /// `Release` came after `StopWork` while the work had not said it stopped.
    #[error("a release was emitted while the leader-only work told to stop still runs")]
    ReleaseWhileWorking,
}

/// A [`Flag`] whose every call is checked against the core's promises.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuditedFlag {
    flag: Flag,
    /// The latest `now` the flag accepted.
    now: Instant,
    /// The input just handled was an accepted won check reply.
    won_in_flight: bool,
    /// A check was emitted and not yet answered.
    check_pending: bool,
    /// `StopWork` was emitted and `WorkStopped` not yet handed in.
    work_running: bool,
}

impl AuditedFlag {
    /// [`Flag::new`], audited.
    pub fn new(config: Config, seed: u64, now: Instant) -> AuditedFlag {
        AuditedFlag {
            flag: Flag::new(config, seed, now),
            now,
            won_in_flight: false,
            check_pending: false,
            work_running: false,
        }
    }

    /// The flag, for queries.
    pub fn flag(&self) -> &Flag {
        &self.flag
    }

    /// [`Flag::handle_input`], audited. The outer error is a broken promise of the core; the
    /// inner one the core's answer to a broken contract.
    pub fn handle_input(
        &mut self,
        now: Instant,
        input: Input<'_>,
    ) -> Result<Result<(), ContractError>, Violation> {
        let before = self.flag.clone();
        let result = self.flag.handle_input(now, input);
        match result {
            Err(_) if self.flag != before => return Err(Violation::RefusalChangedState),
            Err(_) => {}
            Ok(()) => {
                self.now = self.now.max(now);
                match input {
                    Input::Checked(reply) => {
                        if !self.check_pending {
                            return Err(Violation::ReplyWithoutCheck);
                        }
                        self.check_pending = false;
                        self.won_in_flight = reply.won;
                    }
                    Input::Failed(_) | Input::Connected(_) => self.check_pending = false,
                    Input::WorkStopped => self.work_running = false,
                    Input::Wanted(_) => self.won_in_flight = false,
                    _ => {}
                }
            }
        }
        self.audit_state(now)?;
        Ok(result)
    }

    /// [`Flag::handle_timeout`], audited.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Violation> {
        self.flag.handle_timeout(now);
        self.now = self.now.max(now);
        self.won_in_flight = false;
        self.audit_state(now)
    }

    /// [`Flag::poll_command`], audited.
    pub fn poll_command(&mut self) -> Result<Option<Command>, Violation> {
        let Some(command) = self.flag.poll_command() else {
            self.won_in_flight = false;
            return Ok(None);
        };
        match command {
            Command::Raise(lease) | Command::Renewed(lease) => {
                if !self.won_in_flight {
                    return Err(Violation::RaiseWithoutWin(command));
                }
                if !lease.is_valid(self.now) {
                    return Err(Violation::RaisedPastDeadline(command));
                }
            }
            Command::AtRisk(lease) if !lease.is_at_risk(self.now) || !lease.is_valid(self.now) => {
                return Err(Violation::AtRiskOutOfTime(command));
            }
            Command::StopWork => self.work_running = true,
            Command::Release { .. } if self.work_running => {
                return Err(Violation::ReleaseWhileWorking)
            }
            Command::Check { .. } => self.check_pending = true,
            _ => {}
        }
        Ok(Some(command))
    }

    /// [`Flag::poll_timeout`], audited.
    pub fn poll_timeout(&self) -> Result<Option<Instant>, Violation> {
        let timeout = self.flag.poll_timeout();
        if timeout != self.flag.poll_timeout() {
            return Err(Violation::UnstableTimeout);
        }
        match timeout {
            Some(t) if t < self.now => Err(Violation::TimeoutInPast {
                timeout: t,
                now: self.now,
            }),
            _ => Ok(timeout),
        }
    }

    fn audit_state(&self, now: Instant) -> Result<(), Violation> {
        let consistent = match self.flag.lease_at(now) {
            Some(lease) => {
                self.flag.is_leader(now)
                    && lease.is_valid(now)
                    && !self.flag.is_leader(lease.deadline)
            }
            None => !self.flag.is_leader(now),
        };
        if !consistent {
            return Err(Violation::LeaderPastDeadline);
        }
        self.poll_timeout().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Lease, WonBy};

    fn audited() -> AuditedFlag {
        let config = Config::builder("f", "p").build().unwrap();
        AuditedFlag::new(config, 1, Instant::from_nanos(5))
    }

    #[test]
    fn a_raise_out_of_nowhere_is_caught() {
        let mut flag = audited();
        assert_eq!(
            flag.poll_command(),
            Ok(Some(Command::Check {
                renew: None,
                floor: 0,
                may_take: true,
                may_insert: true,
                continues: None,
                expect: None,
            }))
        );
        let lease = Lease {
            token: 1,
            version: 1,
            deadline: Instant::MAX,
            at_risk: Instant::MAX,
            won_by: WonBy::TookOver,
        };
        flag.flag.inject(Command::Raise(lease));
        assert_eq!(
            flag.poll_command(),
            Err(Violation::RaiseWithoutWin(Command::Raise(lease)))
        );
    }

    #[test]
    fn an_accepted_reply_to_no_check_is_caught() {
        let mut flag = audited();
        // The check was emitted but the auditor never saw it drained.
        let reply = Input::Failed(crate::Failure::Error);
        assert!(flag.handle_input(Instant::from_nanos(6), reply).is_ok());
        let reply = Input::Checked(crate::Checked {
            won: false,
            won_by: None,
            server: None,
            row: None,
            now: crate::DbTime::UNIX_EPOCH,
        });
        assert!(flag.handle_timeout(Instant::MAX).is_ok());
        assert_eq!(
            flag.handle_input(Instant::MAX, reply),
            Err(Violation::ReplyWithoutCheck)
        );
    }

    #[test]
    fn a_release_while_the_work_runs_and_an_early_risk_are_caught() {
        let mut flag = audited();
        flag.flag.inject(Command::StopWork);
        flag.flag.inject(Command::Release { version: 0 });
        assert_eq!(
            flag.poll_command(),
            Ok(Some(Command::Check {
                renew: None,
                floor: 0,
                may_take: true,
                may_insert: true,
                continues: None,
                expect: None,
            }))
        );
        assert_eq!(flag.poll_command(), Ok(Some(Command::StopWork)));
        assert_eq!(flag.poll_command(), Err(Violation::ReleaseWhileWorking));
        let early = Command::AtRisk(Lease {
            token: 1,
            version: 1,
            deadline: Instant::MAX,
            at_risk: Instant::MAX,
            won_by: WonBy::TookOver,
        });
        flag.flag.inject(early);
        assert_eq!(flag.poll_command(), Err(Violation::AtRiskOutOfTime(early)));
    }
}
