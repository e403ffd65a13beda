//! The one broken rule the simulator's invariants (`sim/invariants.rs`), the shard
//! simulator's checks and the model check's properties (`model/properties.rs`) report.
//!
//! Each variant means the same in all of them. Where the simulator and the model check
//! measure differently (the simulator in nanoseconds of virtual time and counts of terms,
//! the model check in ticks and tokens), the variant carries which ([`Quiet`],
//! [`NewerTerm`]). Two invariants are the simulator's alone: [`Violation::TermNotInRow`]
//! and [`Violation::SlowHandover`]; three the shard simulator's alone:
//! [`Violation::TwoShardLeaders`], [`Violation::Unbalanced`] and [`Violation::BlipMovedShards`].

use std::fmt;

use crate::sim::trace::Secs;

/// A broken invariant or property.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Violation {
    /// Two processes answer `is_leader` at one instant (with a safeguard off: believe they
    /// lead, by the judge's rule, `Safeguards::leads`).
    TwoLeaders {
        /// One.
        a: String,
        /// The other.
        b: String,
    },
    /// A process leads while the leader-only work of another still runs (work runs until it
    /// has ended, by its own stop or by the kill at its lease's deadline).
    WorkStillRunning {
        /// The process that leads.
        leader: String,
        /// The process whose work runs.
        worker: String,
    },
    /// A `Raise` carried a token not above an earlier one.
    TokenNotIncreasing {
        /// The raising process.
        who: String,
        /// Its token.
        token: i64,
        /// The largest token raised before.
        before: i64,
    },
    /// A check took over a lease that was live by the Go flag's rule
    /// (`now - timestamp <= interval`).
    TookLiveLease {
        /// The process whose check took it.
        who: String,
        /// The holder it displaced.
        holder: String,
        /// The lease's age by the database's clock, µs.
        age_micros: i64,
    },
    /// Nobody led although no fault had been active for the liveness window.
    NoLeader {
        /// Quiet for this long.
        quiet: Quiet,
    },
    /// A transaction of a term's work committed after a newer term began in the table.
    LateEffect {
        /// The process whose work sent it.
        who: String,
        /// Its term.
        token: i64,
        /// The newer term(s) begun before it committed.
        after: NewerTerm,
    },
    /// A term was raised on a row whose term column names another term: its fence would fail,
    /// and the other term's pass. (The simulator's.)
    TermNotInRow {
        /// The raising process.
        who: String,
        /// Its token.
        token: i64,
        /// The row's term column.
        term: Option<i64>,
    },
    /// After a graceful release, nobody else led within one check. (The simulator's, when
    /// asked: `SimConfig::assert_handover`.)
    SlowHandover {
        /// How long since the release (ns).
        waited: u64,
    },
    /// The core broke one of its own promises (its auditor, `leadership_core::audit`, found
    /// it).
    CorePromise {
        /// The process.
        who: String,
        /// The auditor's finding.
        what: String,
    },
    /// The core refused an input: the modelled driver broke the contract.
    Contract {
        /// The process.
        who: String,
        /// The core's error.
        error: String,
    },
    /// Two processes believe they lead one shard of a balanced group at once, each asked
    /// `is_leader` at its own local time. (The shard simulator's.)
    TwoShardLeaders {
        /// The shard.
        shard: usize,
        /// When (true ns).
        at: u64,
        /// The processes that lead it.
        leaders: Vec<String>,
        /// The process whose raise or renew was being checked.
        raised_by: String,
    },
    /// At the end of a quiet stretch, a shard was not led or a live process led outside
    /// `floor(N/M)..=ceil(N/M)`. (The shard simulator's.)
    Unbalanced {
        /// The quiet stretch, in leases.
        quiet_leases: u32,
        /// The episode before it, by name.
        after: &'static str,
        /// When (true ns).
        at: u64,
        /// Each live process and the shards it leads.
        counts: Vec<(String, usize)>,
    },
    /// A blip (a few failed statements, shorter than a lease) moved shards: it should move
    /// none. (The shard simulator's.)
    BlipMovedShards {
        /// When the blip began (true ns).
        at: u64,
        /// New terms during the blip and its quiet stretch.
        moved: usize,
    },
}

/// How long nobody led, in the unit of whoever judged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quiet {
    /// Nanoseconds of virtual time (the simulator).
    Nanos(u64),
    /// Ticks of true time (the model check).
    Ticks(u32),
}

/// What had begun when a late transaction committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NewerTerm {
    /// This many newer terms (the simulator counts the terms begun in the table).
    Count(u64),
    /// The newest term, by its token (the model check).
    Token(i64),
}

impl Violation {
    /// The rule's short name.
    pub fn name(&self) -> &'static str {
        match self {
            Violation::TwoLeaders { .. } => "two-leaders",
            Violation::TokenNotIncreasing { .. } => "fencing",
            Violation::TookLiveLease { .. } => "go-rule",
            Violation::NoLeader { .. } => "liveness",
            Violation::SlowHandover { .. } => "handover",
            Violation::LateEffect { .. } => "effects-in-their-term",
            Violation::TermNotInRow { .. } => "term-in-row",
            Violation::WorkStillRunning { .. } => "work-stops-first",
            Violation::Contract { .. } => "contract",
            Violation::CorePromise { .. } => "core-promise",
            Violation::TwoShardLeaders { .. } => "two-shard-leaders",
            Violation::Unbalanced { .. } => "balance",
            Violation::BlipMovedShards { .. } => "blip-moves-nothing",
        }
    }
}

impl fmt::Display for Quiet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Quiet::Nanos(ns) => write!(f, "{}", Secs(ns)),
            Quiet::Ticks(ticks) => write!(f, "{ticks} ticks"),
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
            Violation::TokenNotIncreasing { who, token, before } => write!(
                f,
                "fencing tokens not increasing: {who} raised token {token} after token {before}"
            ),
            Violation::TookLiveLease {
                who,
                holder,
                age_micros,
            } => write!(
                f,
                "{who} took over {holder}'s lease at age {age_micros} µs: live by the Go rule"
            ),
            Violation::NoLeader { quiet } => {
                write!(f, "liveness: nobody leads after {quiet} without faults")
            }
            Violation::LateEffect { who, token, after } => match after {
                NewerTerm::Count(n) => write!(
                    f,
                    "a transaction of {who}'s term {token} committed after {n} newer term(s) began"
                ),
                NewerTerm::Token(newer) => write!(
                    f,
                    "a transaction of {who}'s term {token} committed after term {newer} began"
                ),
            },
            Violation::TermNotInRow { who, token, term } => write!(
                f,
                "{who} raised term {token} on a row whose term column is {term:?}"
            ),
            Violation::SlowHandover { waited } => write!(
                f,
                "handover: nobody else leads {} after a graceful release",
                Secs(*waited)
            ),
            Violation::WorkStillRunning { leader, worker } => write!(
                f,
                "{leader} leads while {worker}'s leader-only work still runs"
            ),
            Violation::CorePromise { who, what } => {
                write!(f, "{who}'s core broke a promise: {what}")
            }
            Violation::Contract { who, error } => {
                write!(f, "{who}'s core refused an input: {error}")
            }
            Violation::TwoShardLeaders {
                shard,
                at,
                leaders,
                raised_by,
            } => write!(
                f,
                "two leaders of shard {shard} at {:.3} s: {leaders:?} (raised by {raised_by})",
                *at as f64 / 1e9
            ),
            Violation::Unbalanced {
                quiet_leases,
                after,
                at,
                counts,
            } => write!(
                f,
                "not balanced {quiet_leases} leases after {after} at {:.3} s: {counts:?}",
                *at as f64 / 1e9
            ),
            Violation::BlipMovedShards { at, moved } => write!(
                f,
                "a blip at {:.3} s moved {moved} shards",
                *at as f64 / 1e9
            ),
        }
    }
}
