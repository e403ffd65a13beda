//! A deterministic multi-process simulator of the leadership protocol: the project's main
//! proof of safety.
//!
//! One `u64` seed decides everything: latencies, losses, faults, clock drift, the order in
//! which processes start, and the seed of every core. Time is virtual and jumps from one event
//! to the next, so an hour of a five-process fleet takes about ten milliseconds. Each Rust
//! process runs the real [`leadership_core::Flag`] behind a modelled driver ([`process`]);
//! the database is the [`RefTable`](crate::table::RefTable), which executes every statement
//! when it arrives, in arrival order, with `now()` read at that instant. Go processes
//! ([`go_model`]) can compete on the same table with the reference algorithm.
//!
//! After every event the [`invariants`] are checked: never two Rust processes answering
//! `is_leader(local_now) == true`, fencing tokens of successive leaders strictly increasing,
//! no Rust takeover of a lease still live by the Go rule, nobody leading while leader-only work
//! told to stop still runs, someone leading after a quiet stretch, and (when asked) a quick
//! handover after a graceful release.
//!
//! # Running it
//!
//! ```text
//! # one run: its seed, a timeline of who led and the faults, a summary
//! cargo run --release -p leadership-sim --bin simulate -- --faults all --duration 1h
//! # replay a seed, with every event, and a picture
//! cargo run --release -p leadership-sim --bin simulate -- --seed 42 --trace --svg run.svg
//! # the long sweep (CI runs 2,000 seeds in sim/tests/simulation.rs)
//! cargo run --release -p leadership-sim --bin simulate -- --seeds 100000 --faults all --quiet
//! # watch the checker fail: a Go-like belief (until the next Lower) under pauses
//! cargo run --release -p leadership-sim --bin simulate -- --seeds 20 --faults pause --unsafe local-deadline --quiet
//! # three flags per process, their checks batched, with row locks (issue 28)
//! cargo run --release -p leadership-sim --bin simulate -- --seeds 1000 --processes 3 --flags 3 --batch --faults all,rowlock --quiet
//! ```
//!
//! # What is modelled
//!
//! - Clocks ([`clock`]): the database's clock is the reference; each process's monotonic
//!   clock has a rate error within a bound (100 ppm, or ±4% under `drift`, redrawn every
//!   ~20 s) and small forward steps. The core sees only its own clock, and the database's
//!   time in rows. `dbstep` steps the database's clock forward.
//! - Messages: every request, reply and notification has its own latency (0.1–1 ms, a tail
//!   to 20 ms); `loss` and `slow` windows lose or delay them (past the timeout); `notify` loses
//!   half the notifications besides.
//! - The driver: one statement at a time; gives up after the timeout and replies
//!   `Failed(Timeout)`; the statement may still run later. A crashed process's statements
//!   still run. `RELEASE` notifies every other running Rust process.
//! - Leader-only work, modelled on `leadership run`'s command (its own process group): it
//!   starts with each term; it is told to stop (SIGTERM) when the lease is at risk
//!   (`AtRisk`), when leadership ends and before a release (`StopWork`), and winds down for a
//!   time the seed draws (mostly under 50 ms, one time in five up to 1.5 leases); at its
//!   lease's deadline it is killed (by the supervisor, or by the watchdog while the supervisor
//!   is paused) and is gone 0.1–2 ms later. It is not paused with its supervisor, dies with a
//!   crash (the parent-death signal), and the driver answers `WorkStopped` once it has ended.
//! - Faults, each on a schedule (mean gap, duration range; `--intensity` multiplies the
//!   rate): `pause` (SIGSTOP: events wait, the clock runs, its belief is still judged),
//!   `crash` (down, then a fresh core under the same name), `stall` (the database holds
//!   statements, then runs or fails them all), `conn` (one process's statements fail),
//!   `close` (graceful close, then a restart), `precheck` (refusals and errors), `drift`,
//!   `dbstep`, `loss`, `slow`, `failover` (to a standby lagging up to 3 s: the last writes
//!   are lost, connections break, processes reconnect and hear of the new server), `delete`
//!   (an operator deletes the flag's row; no process starts for a lease after it, for one
//!   that never saw the row cannot tell it from a new table; not with Go peers, which insert a
//!   missing row at once). `rowlock` (not in `all`): another transaction holds one flag's row
//!   lock for 0.1–3 s; a statement that would write the row waits for it (then runs with the
//!   `now()` of its start, as PostgreSQL's `UPDATE` does), one that would not runs at once.
//! - Several flags per process (`--flags N`, issue 28): each a row of its own (`sim`,
//!   `sim.1`, …) that every process competes for, run by a core of its own on the process's
//!   clock; pauses, crashes, closes, broken connections and clock faults are the process's.
//!   Every invariant is judged per flag.
//! - Batched checks (`--batch`, `batch.rs`): a process's driver sends one statement at a time;
//!   at the end of each instant, if free, it hands `Input::Batching` to its cores whose
//!   `poll_early_check()` has passed, serves those whose timer is due, and sends every check
//!   they asked for as one statement (`sql::CHECK_BATCH`). The batch is one message (one
//!   latency; lost, slow, stalled, failed or sent to a lost primary as a whole) and one reply
//!   for all its flags; the database runs each flag's check as the single check at the same
//!   `now()`, and skips a row another transaction holds locked that the check would write: that
//!   flag alone is told `Failed(NotAttempted)`. `--unsafe join-before-send`: the driver puts
//!   an early renew into the batch behind its core's back and tells it when the batch returns,
//!   so that lease counts from the reply.
//!
//! ```
//! use leadership_sim::sim::{Faults, SimConfig};
//! let config = SimConfig {
//!     seed: 7,
//!     processes: 3,
//!     duration: std::time::Duration::from_secs(60),
//!     faults: Faults::parse("pause,crash,stall").unwrap(),
//!     ..SimConfig::default()
//! };
//! let report = leadership_sim::sim::run(&config);
//! assert!(report.failure.is_none(), "{}", report.failure.unwrap());
//! assert!(report.stats.checks > 0);
//! ```

use std::fmt;
use std::time::Duration;

mod batch;
pub mod clock;
mod dispatch;
mod driver;
mod faults;
pub mod go_model;
pub mod invariants;
mod knobs;
mod net;
pub mod process;
pub mod report;
pub mod rng;
mod sets;
pub mod shards;
pub mod svg;
pub mod trace;
mod world;

pub use crate::safeguards::{Safeguards, SAFEGUARD_NAMES};
pub use crate::violation::Violation;
pub use knobs::{Drift, Faults, Latency, Schedule, DEFAULT_DB_STEP, FAULT_NAMES, MORE_FAULT_NAMES};
pub use report::{Failure, Report, Stats};

/// One run's settings. `SimConfig::default()` is a fault-free fleet of five Rust processes
/// for ten simulated minutes with the Go peer benchmark's lease (interval 2 s), a timeout of
/// 500 ms (so that a precheck and a check fit in a renew) and a stop-ahead of 500 ms: the
/// leader renews every 0.9 s, as the Go flag's peer with a 1 s timeout does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Decides everything else that is random.
    pub seed: u64,
    /// Rust processes.
    pub processes: usize,
    /// Go-model processes on the same flag.
    pub go_peers: usize,
    /// Simulated time.
    pub duration: Duration,
    /// The lease, for Rust and Go processes alike.
    pub interval: Duration,
    /// The statement timeout.
    pub timeout: Duration,
    /// The jitter factor.
    pub jitter: f64,
    /// The margin (`None`: the core's default, interval/20).
    pub margin: Option<Duration>,
    /// How long before the deadline the leader-only work is told to stop when no renew has
    /// won (`None`: a quarter of the lease, or less where a renew attempt would not fit
    /// before it; 500 ms with the default lease). Also the grace of the old `run` when the
    /// at-risk stop is off.
    pub stop_ahead: Option<Duration>,
    /// What goes wrong, and how often.
    pub faults: Faults,
    /// The protections of the protocol; tests switch them off to prove the checker can fail.
    pub safeguards: Safeguards,
    /// Assert that every graceful release is followed by another leader within one check.
    pub assert_handover: bool,
    /// How much more often faults come than their defaults (1: as in [`Faults::parse`]);
    /// applied by [`run`], recorded for the replay command.
    pub intensity: u32,
    /// Keep every trace record (for byte-for-byte comparisons and `--trace`).
    pub full_trace: bool,
    /// Wrap every core in the core's auditor (`leadership_core::audit`): its promises
    /// (no raise without a won check, a stable `poll_timeout` never in the past, …) are
    /// checked on every call. Slower; the trace is the same.
    pub audit: bool,
    /// A self-test of the liveness check: from this time on the database drops every
    /// statement, and no fault is declared, so the check must report nobody leading.
    pub undeclared_outage: Option<Duration>,
    /// The user's effects: while a term's leader-only work runs, it sends a transaction to the
    /// flags' database this often; one in twenty is held by a congested link for up to two
    /// leases more. Fenced (`sql::FENCE` on the reference table) unless the `fence` safeguard
    /// is off. `None`: no effects.
    pub effects: Option<Duration>,
    /// Twins: Rust processes `r0` and `r1` are given one name (`r0`, the `holder` both write),
    /// as two containers with one default name, or a process restarted beside a frozen earlier
    /// incarnation. Shown as `r0` and `r1` in the trace; judged as two processes.
    pub twins: bool,
    /// Failovers happen behind a pooler in transaction pooling (issue 25): the pooler keeps
    /// each client connection open and swaps the server under it, so no process is told
    /// (no `Connected` input); statements simply run on the new primary.
    pub pooler: bool,
    /// Flags per Rust process (issue 28): each a row of its own (`sim`, `sim.1`, …) that every
    /// process competes for, with a core of its own on the process's one clock; a pause, a
    /// crash, a close or a broken connection is the whole process's. 1: the one flag `sim`.
    pub flags: usize,
    /// The process's flags' checks go as batches (issue 28, `sql::CHECK_BATCH`): its driver
    /// sends one statement at a time; the checks its flags emit meanwhile, with the renews
    /// whose early window has opened (`Input::Batching`), go together as one statement when
    /// it is free, one reply for all (a single check when there is one). Needs `flags` ≥ 2.
    pub batch: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 0,
            processes: 5,
            go_peers: 0,
            duration: Duration::from_secs(600),
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            jitter: 0.2,
            margin: None,
            stop_ahead: None,
            faults: Faults::none(),
            safeguards: Safeguards::default(),
            assert_handover: false,
            intensity: 1,
            full_trace: false,
            audit: false,
            undeclared_outage: None,
            effects: None,
            twins: false,
            pooler: false,
            flags: 1,
            batch: false,
        }
    }
}

impl SimConfig {
    /// The core's configuration for process `process`.
    pub fn core_config(&self, process: &str) -> leadership_core::Config {
        let mut b = leadership_core::Config::builder("sim", process)
            .interval(self.interval)
            .timeout(self.timeout)
            .jitter(self.jitter);
        if let Some(m) = self.margin {
            b = b.margin(m);
        }
        b = b.stop_ahead(self.stop_ahead());
        b = b.precheck(self.faults.precheck.is_some());
        b.build().expect("the simulator's configuration is valid")
    }

    /// The stop-ahead the run uses (see [`SimConfig::stop_ahead`]).
    pub fn stop_ahead(&self) -> Duration {
        self.stop_ahead.unwrap_or_else(|| {
            let margin = self.margin.unwrap_or(self.interval / 20);
            let attempt = self.timeout * if self.faults.precheck.is_some() { 2 } else { 1 };
            let room = self.interval.saturating_sub(margin + attempt);
            (self.interval / 4).min(room.saturating_sub(room / 10))
        })
    }

    /// The Rust cores of the run: `flags` per process.
    pub fn rust_cores(&self) -> usize {
        self.processes * self.flags.max(1)
    }

    /// Whether the core accepts these settings, and the simulator models them.
    pub fn validate(&self) -> Result<(), String> {
        if self.flags == 0 {
            return Err("--flags must be at least 1".into());
        }
        if self.batch && self.flags < 2 {
            return Err("--batch needs --flags 2 or more".into());
        }
        if self.go_peers > 0 && (self.flags > 1 || self.faults.rowlock.is_some()) {
            return Err(
                "Go peers compete for the one flag `sim`, and their statements do not model \
                 row locks: no --go-peers with --flags or rowlock"
                    .into(),
            );
        }
        let mut b = leadership_core::Config::builder("sim", "p")
            .interval(self.interval)
            .timeout(self.timeout)
            .jitter(self.jitter);
        if let Some(m) = self.margin {
            b = b.margin(m);
        }
        b = b.stop_ahead(self.stop_ahead());
        b = b.precheck(self.faults.precheck.is_some());
        b.build().map(|_| ()).map_err(|e| e.to_string())
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut s = format!(
            "cargo run --release -p leadership-sim --bin simulate -- --seed {} --processes {} --duration {}s",
            self.seed,
            self.processes,
            self.duration.as_secs()
        );
        if self.go_peers > 0 {
            s += &format!(" --go-peers {}", self.go_peers);
        }
        let d = SimConfig::default();
        if self.interval != d.interval {
            s += &format!(" --interval {}ms", self.interval.as_millis());
        }
        if self.timeout != d.timeout {
            s += &format!(" --timeout {}ms", self.timeout.as_millis());
        }
        if self.jitter != d.jitter {
            s += &format!(" --jitter {}", self.jitter);
        }
        if let Some(m) = self.margin {
            s += &format!(" --margin {}ms", m.as_millis());
        }
        if let Some(sa) = self.stop_ahead {
            s += &format!(" --stop-ahead {}ms", sa.as_millis());
        }
        let names = self.faults.names();
        if !names.is_empty() {
            s += &format!(" --faults {names}");
        }
        if self.intensity > 1 {
            s += &format!(" --intensity {}", self.intensity);
        }
        if let Some(step) = self.faults.db_step.filter(|s| s.max != DEFAULT_DB_STEP) {
            s += &format!(" --db-step-max {}ms", step.max.as_millis());
        }
        if self.faults.drift.max_ppm != Drift::default().max_ppm {
            s += &format!(" --drift-ppm {}", self.faults.drift.max_ppm);
        }
        if let Some(every) = self.effects {
            s += &format!(" --effects {}ms", every.as_millis());
        }
        if self.twins {
            s += " --twins";
        }
        if self.pooler {
            s += " --pooler";
        }
        if self.flags > 1 {
            s += &format!(" --flags {}", self.flags);
        }
        if self.batch {
            s += " --batch";
        }
        let off = self.safeguards.names_off();
        if !off.is_empty() {
            s += &format!(" --unsafe {off}");
        }
        if self.assert_handover {
            s += " --assert-handover";
        }
        if self.audit {
            s += " --audit";
        }
        if let Some(at) = self.undeclared_outage {
            s += &format!(" --undeclared-outage {}ms", at.as_millis());
        }
        s
    }
}

/// Runs one simulation to its end or its first broken invariant.
pub fn run(config: &SimConfig) -> Report {
    world::World::new(config).run()
}

/// Parses `90`, `90s`, `500ms`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1_000,
        "m" | "min" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_millis(ms))
}

impl fmt::Display for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} Rust + {} Go processes, {} s, interval {} ms, timeout {} ms, faults [{}]",
            self.processes,
            self.go_peers,
            self.duration.as_secs(),
            self.interval.as_millis(),
            self.timeout.as_millis(),
            self.faults.names()
        )?;
        if let Some(every) = self.effects {
            write!(f, ", effects every {} ms", every.as_millis())?;
        }
        if self.twins {
            write!(f, ", r0 and r1 share one name")?;
        }
        if self.pooler {
            write!(f, ", failovers behind a pooler (no reconnect)")?;
        }
        if self.flags > 1 {
            write!(
                f,
                ", {} flags per process{}",
                self.flags,
                if self.batch { ", checks batched" } else { "" }
            )?;
        }
        let off = self.safeguards.names_off();
        if !off.is_empty() {
            write!(f, ", safeguards OFF [{off}]")?;
        }
        Ok(())
    }
}
