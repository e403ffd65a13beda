//! What a run tells: statistics, the failure if any, and the readable summary.

use std::fmt::{self, Write as _};

use super::trace::{Secs, Trace};
use super::SimConfig;
use crate::violation::Violation;

/// Counts and distributions of one run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Events handled.
    pub events: u64,
    /// Invariant checks done (one per event).
    pub invariant_checks: u64,
    /// Simulated time reached (ns).
    pub simulated_ns: u64,
    /// Rust checks sent.
    pub checks: u64,
    /// Rust releases sent.
    pub releases: u64,
    /// Go checks started.
    pub go_checks: u64,
    /// Go statements sent.
    pub go_statements: u64,
    /// Rust raises.
    pub raises: u64,
    /// Rust raises that took over a lease.
    pub takeovers: u64,
    /// Rust renewals.
    pub renewals: u64,
    /// Transactions of the work that committed (`SimConfig::effects`).
    pub effects_committed: u64,
    /// Transactions of the work whose fence failed.
    pub effects_refused: u64,
    /// Driver timeouts (Rust and Go).
    pub timeouts: u64,
    /// Statements that failed (stall or connection).
    pub errors: u64,
    /// Messages lost.
    pub lost: u64,
    /// Anomalies the Rust cores reported.
    pub anomalies: u64,
    /// Notifications handed to Rust cores.
    pub notified: u64,
    /// Faults started: pause, crash, stall, conn, loss, slow, close, step, precheck refusals,
    /// database clock steps, failovers, deletes, row locks ([`FAULT_COUNTERS`]).
    pub faults: [u64; 13],
    /// Time nobody led, after the first leader (ns).
    pub leaderless_ns: u64,
    /// Time until the first leader (ns).
    pub first_leader_ns: Option<u64>,
    /// Leaderless stretches after the first leader (ns): failover latencies.
    pub gaps: Vec<u64>,
    /// Release at the database → another process leads (ns).
    pub handovers: Vec<u64>,
    /// Leader-only work told to stop (at risk, lowered, or before a release).
    pub work_stops: u64,
    /// Work killed at its lease's deadline because it had not stopped by then.
    pub work_killed: u64,
    /// Leases at risk: no renew had won by the deadline minus the stop-ahead.
    pub at_risk: u64,
    /// Failovers to a lagging standby.
    pub failovers: u64,
    /// Tokens raised below an earlier one after a failover lost writes or the row was deleted,
    /// by a process that had never seen the earlier one (the residue of asynchronous
    /// replication, or of a `DELETE`).
    pub tokens_behind_after_failover: u64,
    /// Two Go processes raised at once: the stretches (ns).
    pub go_overlaps: Vec<u64>,
    /// A Rust and a Go process both leading at once (ns in total; the Go one's belief).
    pub rust_go_overlap_ns: u64,
    /// Rust takeovers of a row whose Go holder still had its flag raised.
    pub took_from_raised_go: u64,
    /// Batches sent (`SimConfig::batch`), and the checks they carried.
    pub batches: u64,
    /// Checks sent in batches.
    pub batched_checks: u64,
    /// Renews that joined a batch early (`Input::Batching`).
    pub joined_early: u64,
    /// Checks a batch skipped for a row lock (`Failed(NotAttempted)`).
    pub not_attempted: u64,
    /// Statements that waited for a row lock.
    pub lock_waits: u64,
}

/// The fault counters' names, in [`Stats::faults`] order.
pub const FAULT_COUNTERS: [&str; 13] = [
    "pause", "crash", "stall", "conn", "loss", "slow", "close", "step", "precheck", "dbstep",
    "failover", "delete", "rowlock",
];

/// A broken invariant with what is needed to understand and replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The run's seed.
    pub seed: u64,
    /// What broke.
    pub violation: Violation,
    /// When (true ns).
    pub at: u64,
    /// The last events, readable.
    pub last_events: String,
    /// Every process at the failure: running or not, clock rate, belief.
    pub state: String,
    /// The command that replays the run.
    pub replay: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "FAILED seed {}: {}", self.seed, self.violation)?;
        writeln!(f, "  at {} (simulated)", Secs(self.at))?;
        writeln!(f, "  last events:")?;
        for line in self.last_events.lines() {
            writeln!(f, "    {line}")?;
        }
        writeln!(f, "  processes at that instant:")?;
        for line in self.state.lines() {
            writeln!(f, "    {line}")?;
        }
        write!(f, "  replay: {}", self.replay)
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The settings.
    pub config: SimConfig,
    /// Counts and distributions.
    pub stats: Stats,
    /// The first broken invariant, if any (the run stops there).
    pub failure: Option<Failure>,
    /// The event log.
    pub trace: Trace,
}

impl Report {
    /// The digest of the whole event log: equal for equal seeds.
    pub fn digest(&self) -> u64 {
        self.trace.digest()
    }

    /// The timeline: leadership changes and faults, one a line.
    pub fn timeline(&self) -> String {
        self.trace.render(self.trace.notable())
    }

    /// The summary.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        // Leaderless time adds up over the flags' rows.
        let sim = s.simulated_ns.max(1) * self.config.flags.max(1) as u64;
        let _ = writeln!(out, "summary ({})", self.config);
        let _ = writeln!(
            out,
            "  simulated          {} ({} events, {} invariant checks)",
            Secs(s.simulated_ns),
            s.events,
            s.invariant_checks
        );
        let _ = writeln!(
            out,
            "  first leader       {}",
            s.first_leader_ns
                .map_or("never".to_string(), |t| Secs(t).to_string())
        );
        let _ = writeln!(
            out,
            "  leaderless         {} ({:.3}% of the time after the first leader)",
            Secs(s.leaderless_ns),
            s.leaderless_ns as f64 * 100.0 / sim as f64
        );
        let _ = writeln!(
            out,
            "  raises             {} ({} takeovers), renewals {}",
            s.raises, s.takeovers, s.renewals
        );
        let _ = writeln!(out, "  failover latency   {}", distribution(&s.gaps));
        let _ = writeln!(out, "  handover latency   {}", distribution(&s.handovers));
        // A batch is one statement for all its checks.
        let rust_statements = s.checks + s.releases + s.batches - s.batched_checks.min(s.checks);
        let _ = writeln!(
            out,
            "  statements/check   Rust {:.3} ({} checks, {} releases)",
            rust_statements as f64 / s.checks.max(1) as f64,
            s.checks,
            s.releases
        );
        if s.go_checks > 0 {
            let _ = writeln!(
                out,
                "                     Go   {:.3} ({} checks)",
                s.go_statements as f64 / s.go_checks as f64,
                s.go_checks
            );
            let _ = writeln!(
                out,
                "  Go two-leader      {} overlaps, {}",
                s.go_overlaps.len(),
                distribution(&s.go_overlaps)
            );
            let _ = writeln!(
                out,
                "  Rust+Go overlap    {} in total; {} Rust takeovers from a still-raised Go holder",
                Secs(s.rust_go_overlap_ns),
                s.took_from_raised_go
            );
        }
        let faults: Vec<String> = FAULT_COUNTERS
            .iter()
            .zip(s.faults)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  faults             {}; timeouts {}, errors {}, lost {}, anomalies {}, notified {}",
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            },
            s.timeouts,
            s.errors,
            s.lost,
            s.anomalies,
            s.notified
        );
        if s.work_stops > 0 {
            let _ = writeln!(
                out,
                "  leader-only work   told to stop {} times ({} leases at risk); {} killed at the deadline",
                s.work_stops, s.at_risk, s.work_killed
            );
        }
        if s.batches > 0 || s.lock_waits > 0 {
            let _ = writeln!(
                out,
                "  batches            {} ({} checks, {:.2} a batch; {} renews joined early); {} checks skipped for a row lock, {} statements waited for one",
                s.batches,
                s.batched_checks,
                s.batched_checks as f64 / s.batches.max(1) as f64,
                s.joined_early,
                s.not_attempted,
                s.lock_waits
            );
        }
        let deletes = s.faults[super::world::FaultKind::Delete as usize];
        if s.failovers > 0 || deletes > 0 {
            let _ = writeln!(
                out,
                "  database failovers {} to a lagging standby, rows deleted {}; {} tokens below an earlier one, raised by processes that never saw it",
                s.failovers, deletes, s.tokens_behind_after_failover
            );
        }
        let _ = writeln!(out, "  trace digest       {:016x}", self.digest());
        match &self.failure {
            None => {
                let _ = writeln!(out, "  invariants         all held");
            }
            Some(f) => {
                let _ = writeln!(out, "{f}");
            }
        }
        out
    }
}

/// `n, min, p50, p90, p99, max` of durations in ns.
pub fn distribution(values: &[u64]) -> String {
    if values.is_empty() {
        return "none".to_string();
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let q = |p: usize| v[(v.len() - 1) * p / 100];
    format!(
        "n {}, min {}, p50 {}, p90 {}, p99 {}, max {}",
        v.len(),
        Secs(v[0]),
        Secs(q(50)),
        Secs(q(90)),
        Secs(q(99)),
        Secs(v[v.len() - 1])
    )
}
