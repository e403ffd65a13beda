//! What goes wrong, and how often: the fault knobs of [`SimConfig`](super::SimConfig), named
//! like turmoil's, and their defaults. Fault injection itself is `faults.rs`.

use std::time::Duration;

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
    /// Another transaction holds one flag's row lock (`SELECT … FOR UPDATE` by an operator, a
    /// long transaction of the user's): a check that would write the row waits until it
    /// ends (then runs with the `now()` of its start), a batch skips it (the flag is told
    /// `Failed(NotAttempted)`), a release waits, a fenced transaction waits. Not in `all`.
    pub rowlock: Option<Schedule>,
}

/// The default maximum database clock step: stands for "within the budget the safety
/// condition leaves" (see [`Faults::db_step`]), computed for the run's settings.
pub const DEFAULT_DB_STEP: Duration = Duration::from_millis(10);

/// The fault names `all` switches on ([`Faults::parse`] knows [`MORE_FAULT_NAMES`] too).
pub const FAULT_NAMES: [&str; 13] = [
    "pause", "crash", "stall", "drift", "loss", "conn", "close", "slow", "precheck", "dbstep",
    "notify", "failover", "delete",
];

/// The fault names [`Faults::parse`] knows beyond [`FAULT_NAMES`], named one by one: `all`
/// leaves them out, so that a seed with `all` runs as it did before them (issue 28: the row
/// lock, for the batch).
pub const MORE_FAULT_NAMES: [&str; 1] = ["rowlock"];

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
            rowlock: None,
        }
    }

    /// Every fault at its default rate.
    pub fn all() -> Faults {
        Faults::parse(&FAULT_NAMES.join(",")).expect("known names")
    }

    /// Faults from a comma-separated list of [`FAULT_NAMES`] and [`MORE_FAULT_NAMES`] (or
    /// `all`, or `none`), each at its default rate.
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
                "rowlock" => f.rowlock = Some(Schedule::new(30_000, 100, 3_000)),
                other => {
                    return Err(format!(
                        "unknown fault {other:?}; known: {},{}, all, none",
                        FAULT_NAMES.join(","),
                        MORE_FAULT_NAMES.join(",")
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
            &mut self.rowlock,
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
        let more = [self.rowlock.is_some()];
        FAULT_NAMES
            .iter()
            .zip(on)
            .chain(MORE_FAULT_NAMES.iter().zip(more))
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }
}
