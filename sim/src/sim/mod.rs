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
//!   missing row at once).
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

pub mod clock;
mod dispatch;
mod driver;
mod faults;
pub mod go_model;
pub mod invariants;
mod net;
pub mod process;
pub mod report;
pub mod rng;
pub mod shards;
pub mod svg;
pub mod trace;
mod world;

pub use crate::safeguards::{Safeguards, SAFEGUARD_NAMES};
pub use crate::violation::Violation;
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

    /// Whether the core accepts these settings.
    pub fn validate(&self) -> Result<(), String> {
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

/// A fault that comes and goes: on average one every `every` (fleet-wide), lasting between
/// `min` and `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Mean time between two starts (uniform in `[0, 2 × every]`).
    pub every: Duration,
    /// Shortest duration.
    pub min: Duration,
    /// Longest duration.
    pub max: Duration,
}

impl Schedule {
    const fn new(every_ms: u64, min_ms: u64, max_ms: u64) -> Schedule {
        Schedule {
            every: Duration::from_millis(every_ms),
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
        }
    }
}

/// Message latency: every message (request, reply, notification) takes `min` plus a uniform
/// part of `spread`; `tail_ppm` of them take up to `tail` instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// The floor.
    pub min: Duration,
    /// The uniform part above the floor.
    pub spread: Duration,
    /// How many in a million are slow.
    pub tail_ppm: u64,
    /// How slow a slow one can be.
    pub tail: Duration,
}

impl Default for Latency {
    fn default() -> Latency {
        Latency {
            min: Duration::from_micros(100),
            spread: Duration::from_micros(900),
            tail_ppm: 5_000,
            tail: Duration::from_millis(20),
        }
    }
}

/// Clock drift: each process's rate error is drawn in `±max_ppm` at the start and redrawn
/// about every `every`; forward steps of up to `step_max` come about every `step_every`.
/// With the drift fault off, clocks still have a fixed rate error of up to `base_ppm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drift {
    /// Whether the rate changes and steps happen at all.
    pub on: bool,
    /// Bound on the rate error while drifting (default 4%: below the 5% margin).
    pub max_ppm: u64,
    /// Bound on the rate error without the drift fault (a quartz's 100 ppm).
    pub base_ppm: u64,
    /// Mean time between rate changes (per process).
    pub every: Duration,
    /// Largest forward step.
    pub step_max: Duration,
    /// Mean time between steps (fleet-wide).
    pub step_every: Duration,
}

impl Default for Drift {
    fn default() -> Drift {
        Drift {
            on: false,
            max_ppm: 40_000,
            base_ppm: 100,
            every: Duration::from_secs(20),
            step_max: Duration::from_millis(50),
            step_every: Duration::from_secs(120),
        }
    }
}

/// What goes wrong, named like turmoil's knobs. `None` switches a fault off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Latency of every message (always on).
    pub latency: Latency,
    /// Windows in which every message (both directions, and notifications) is lost with
    /// probability `loss_ppm`.
    pub loss: Option<Schedule>,
    /// The loss probability inside a loss window, in ppm.
    pub loss_ppm: u64,
    /// Windows in which replies and requests are slow: up to `slow_max`, past the timeout.
    pub slow: Option<Schedule>,
    /// The slowest message in a slow window.
    pub slow_max: Duration,
    /// SIGSTOP-like pauses of one process (its clock keeps running).
    pub pause: Option<Schedule>,
    /// Crashes of one process; the duration is its downtime before a restart with a fresh core
    /// under the same name.
    pub crash: Option<Schedule>,
    /// Database stalls: statements hang until the end, then all complete or all fail.
    pub stall: Option<Schedule>,
    /// Broken connections of one process: every statement errors.
    pub conn: Option<Schedule>,
    /// Graceful `close()` of one process; the duration is its downtime before it starts again.
    pub close: Option<Schedule>,
    /// Clock drift and steps.
    pub drift: Drift,
    /// The processes run a precheck before each check; it refuses with this probability
    /// (ppm), and fails with the same probability.
    pub precheck: Option<u64>,
    /// Forward steps of the database's clock (an NTP correction on the server). Safety needs
    /// their sum over one lease within what the drift leaves of the margin. A maximum of
    /// [`DEFAULT_DB_STEP`] keeps that sum within 90% of the room (18 ms for a 2 s lease,
    /// 100 ms margin and 4% drift); any other maximum is used as given, with no budget.
    pub db_step: Option<Schedule>,
    /// Each notification is lost with this probability (ppm), on top of the loss windows: a
    /// listening connection dropped, a notification queue overflowed. Only speed may suffer.
    pub notify_loss: Option<u64>,
    /// Failovers of the database to an asynchronous standby that lags by up to the schedule's
    /// duration: the writes of that last stretch are lost (acknowledged or not), statements on
    /// their way are lost, every connection breaks, and the new primary's clock is another
    /// machine's (a millisecond off); it is on a new timeline and says when it was promoted.
    pub failover: Option<Schedule>,
    /// `DELETE FROM leadership_flags` by an operator, live lease or not.
    pub delete: Option<Schedule>,
}

/// The default maximum database clock step: stands for "within the budget the safety
/// condition leaves" (see [`Faults::db_step`]), computed for the run's settings.
pub const DEFAULT_DB_STEP: Duration = Duration::from_millis(10);

/// The fault names [`Faults::parse`] knows.
pub const FAULT_NAMES: [&str; 13] = [
    "pause", "crash", "stall", "drift", "loss", "conn", "close", "slow", "precheck", "dbstep",
    "notify", "failover", "delete",
];

impl Faults {
    /// Nothing goes wrong (latency stays).
    pub fn none() -> Faults {
        Faults {
            latency: Latency::default(),
            loss: None,
            loss_ppm: 300_000,
            slow: None,
            slow_max: Duration::from_millis(1500),
            pause: None,
            crash: None,
            stall: None,
            conn: None,
            close: None,
            drift: Drift::default(),
            precheck: None,
            db_step: None,
            notify_loss: None,
            failover: None,
            delete: None,
        }
    }

    /// Every fault at its default rate.
    pub fn all() -> Faults {
        Faults::parse(&FAULT_NAMES.join(",")).expect("known names")
    }

    /// Faults from a comma-separated list of [`FAULT_NAMES`] (or `all`, or `none`), each at its
    /// default rate.
    pub fn parse(list: &str) -> Result<Faults, String> {
        let mut f = Faults::none();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "none" => {}
                "all" => f = Faults::all(),
                "pause" => f.pause = Some(Schedule::new(60_000, 500, 8_000)),
                "crash" => f.crash = Some(Schedule::new(90_000, 100, 10_000)),
                "stall" => f.stall = Some(Schedule::new(90_000, 100, 3_000)),
                "drift" => f.drift.on = true,
                "loss" => f.loss = Some(Schedule::new(90_000, 1_000, 20_000)),
                "conn" => f.conn = Some(Schedule::new(90_000, 500, 5_000)),
                "close" => f.close = Some(Schedule::new(60_000, 100, 5_000)),
                "slow" => f.slow = Some(Schedule::new(90_000, 1_000, 10_000)),
                "precheck" => f.precheck = Some(1_000),
                "dbstep" => {
                    f.db_step = Some(Schedule {
                        max: DEFAULT_DB_STEP,
                        ..Schedule::new(120_000, 0, 0)
                    })
                }
                "notify" => f.notify_loss = Some(500_000),
                "failover" => f.failover = Some(Schedule::new(120_000, 0, 3_000)),
                "delete" => f.delete = Some(Schedule::new(120_000, 0, 0)),
                other => {
                    return Err(format!(
                        "unknown fault {other:?}; known: {}, all, none",
                        FAULT_NAMES.join(",")
                    ))
                }
            }
        }
        Ok(f)
    }

    /// The same faults `factor` times as often (each schedule's mean gap divided by it).
    pub fn intensified(mut self, factor: u32) -> Faults {
        let factor = factor.max(1);
        for s in [
            &mut self.pause,
            &mut self.crash,
            &mut self.stall,
            &mut self.conn,
            &mut self.loss,
            &mut self.slow,
            &mut self.close,
            &mut self.db_step,
            &mut self.failover,
            &mut self.delete,
        ]
        .into_iter()
        .flatten()
        {
            s.every /= factor;
        }
        self.drift.every /= factor;
        self.drift.step_every /= factor;
        self.precheck = self.precheck.map(|p| (p * u64::from(factor)).min(400_000));
        self
    }

    /// The names of the faults switched on, comma-separated.
    pub fn names(&self) -> String {
        let on = [
            self.pause.is_some(),
            self.crash.is_some(),
            self.stall.is_some(),
            self.drift.on,
            self.loss.is_some(),
            self.conn.is_some(),
            self.close.is_some(),
            self.slow.is_some(),
            self.precheck.is_some(),
            self.db_step.is_some(),
            self.notify_loss.is_some(),
            self.failover.is_some(),
            self.delete.is_some(),
        ];
        FAULT_NAMES
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
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
        let off = self.safeguards.names_off();
        if !off.is_empty() {
            write!(f, ", safeguards OFF [{off}]")?;
        }
        Ok(())
    }
}
