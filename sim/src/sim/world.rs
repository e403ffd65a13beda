//! The event loop: a binary heap of timed events and the state of the whole simulation. The
//! handling is split by subject: `driver.rs` (the processes' drivers), `net.rs` (messages and
//! the database), `batch.rs` (a process's checks as one statement, and row locks),
//! `faults.rs` (fault injection), `invariants.rs` (the judge, after every event).
//!
//! A Rust process with several flags is a *set* of sibling cores (`sets.rs`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;
use std::time::Duration;

use leadership_core::Command;

use super::clock::LocalClock;
use super::go_model::GoProc;
use super::process::{Host, RustProc, Stmt};
use super::report::{Failure, Report, Stats};
use super::rng::SimRng;
use super::sets::{row_name, RowState, SetDriver};
use super::trace::{Pid, Trace};
use super::SimConfig;
use crate::check::Check;
use crate::violation::Violation;

/// How many of the last events a failure shows.
const SHOWN: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FaultKind {
    Pause,
    Crash,
    Stall,
    Conn,
    Loss,
    Slow,
    Close,
    Step,
    Precheck,
    DbStep,
    Failover,
    Delete,
    RowLock,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Ev {
    Start(Pid),
    Wake {
        p: Pid,
        gen: u64,
    },
    /// A statement reaches the database: an index into `World::in_net`, which keeps the
    /// heap's entries small.
    Arrive(u32),
    Reply {
        p: Pid,
        inc: u32,
        id: u64,
    },
    Timeout {
        p: Pid,
        inc: u32,
        id: u64,
    },
    Notify {
        p: Pid,
        inc: u32,
    },
    Fault(FaultKind),
    StallEnd,
    Drift(Pid),
    Precheck {
        p: Pid,
        inc: u32,
    },
    /// The leader-only work numbered `work` may have ended (stopped or killed).
    WorkEnds {
        p: Pid,
        work: u64,
    },
    /// The supervisor learns that the work ended (SIGCHLD) and tells the core.
    Reaped {
        p: Pid,
        inc: u32,
    },
    /// The deadline of process `p`'s lease, if `gen` is still current: kill the work.
    WorkDeadline {
        p: Pid,
        gen: u64,
    },
    /// The standby's copy of the table (for failovers): a snapshot, taken every 100 ms.
    Snapshot,
    /// The work numbered `work` sends a transaction of its term (`SimConfig::effects`).
    EffectTick {
        p: Pid,
        work: u64,
    },
    /// A transaction of the work of `p`'s term `token` reaches the database.
    EffectLands {
        p: Pid,
        token: i64,
        fenced: bool,
        timeline: u32,
    },
    /// A batch reaches the database: an index into `World::batches`.
    BatchArrives(u32),
    /// A batch's reply reaches its process: every member's at once.
    BatchReply(u32),
    /// The lock another transaction holds on row `row` ends, if its time has come.
    RowUnlock(u16),
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    t: u64,
    seq: u64,
    ev: Ev,
}

// The heap is a max-heap: order reversed, earliest first, ties in insertion order.
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.t, other.seq).cmp(&(self.t, self.seq))
    }
}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}
impl Eq for Queued {}

pub(super) struct World {
    pub(super) config: SimConfig,
    /// The faults at the configured intensity.
    pub(super) faults: super::Faults,
    /// The most the database's clock may step forward within one interval, if bounded.
    pub(super) db_step_budget: Option<u64>,
    /// Recent database clock steps (true time, size), within the last interval.
    pub(super) db_steps: Vec<(u64, u64)>,
    pub(super) core_configs: Vec<leadership_core::Config>,
    pub(super) rng: SimRng,
    heap: BinaryHeap<Queued>,
    pub(super) seq: u64,
    pub(super) t: u64,
    pub(super) end: u64,
    pub(super) rust: Vec<RustProc>,
    pub(super) go: Vec<GoProc>,
    pub(super) table: crate::table::RefTable,
    pub(super) lease_micros: i64,
    pub(super) interval_ns: u64,
    /// The database holds statements until then.
    pub(super) stall_until: u64,
    pub(super) stall_fails: bool,
    pub(super) stalled: Vec<super::sets::Held>,
    pub(super) loss_until: u64,
    pub(super) slow_until: u64,
    /// No fault is active from this true time on (unless another starts).
    pub(super) quiet_since: u64,
    /// After a deleted row: no process starts before this true time (see the `delete` fault).
    pub(super) no_start_before: u64,
    /// How long a quiet stretch must last before someone must lead.
    pub(super) liveness_window: u64,
    pub(super) go_overlap_since: Option<u64>,
    pub(super) rust_go_since: Option<u64>,
    /// Per flag: the judge's and the database's view of its row.
    pub(super) rows: Vec<RowState>,
    /// Flags per Rust process (the size of a set).
    pub(super) flags: usize,
    /// Batches on their way or waiting for their reply, by slot (`Ev::BatchArrives`).
    pub(super) batches: Vec<super::sets::Batch>,
    /// Slots of `batches` free for reuse.
    pub(super) free_batches: Vec<u32>,
    /// Per set, in batch mode: its driver's outbox.
    pub(super) sets: Vec<SetDriver>,
    /// With the `join-before-send` safeguard off, while a batch's reply is handed to a core
    /// that joined it unknowingly: the renew the batch carried for it, which the driver does
    /// not send again when the core asks for it now.
    pub(super) swallow: Option<(Pid, Check)>,
    /// That renew was asked for (and not sent again).
    pub(super) swallowed: bool,
    pub(super) stats: Stats,
    pub(super) trace: Trace,
    pub(super) violation: Option<Violation>,
    /// Commands drained from a core, reused.
    pub(super) commands: Vec<Command>,
    /// The last traced `Raised()` of each Go process.
    pub(super) go_traced: Vec<bool>,
    /// The instant of the previous invariant check.
    pub(super) last_check: u64,
    /// How far the database's clock has stepped forward (ns).
    pub(super) db_offset: u64,
    /// Statements on their way to the database, by slot.
    pub(super) in_net: Vec<Stmt>,
    /// Slots of `in_net` free for reuse.
    pub(super) free_slots: Vec<u32>,
    /// The database's timeline: a failover starts a new one.
    pub(super) timeline: u32,
    /// When the database started (true time) and, after a failover, when it was promoted.
    pub(super) db_started: u64,
    /// Snapshots of the table (true time, table) of the last few seconds: what a lagging
    /// standby has.
    pub(super) snapshots: std::collections::VecDeque<(u64, crate::table::RefTable)>,
    /// A failover lost writes, or the row was deleted: tokens below older ones are the residue
    /// of an asynchronous standby or a `DELETE`, not a broken rule, for processes that never
    /// saw the older ones.
    pub(super) history_lost: bool,
}

impl World {
    pub(super) fn new(config: &SimConfig) -> World {
        let mut rng = SimRng::new(config.seed);
        let n = config.processes + config.go_peers;
        let flags = config.flags.max(1);
        let mut names = Vec::with_capacity(n);
        names.extend((0..config.processes).map(|i| format!("r{i}")));
        names.extend((0..config.go_peers).map(|i| format!("g{i}")));
        // The name each process writes as `holder`: its own, but for the second twin.
        let holder = |i: usize| -> String {
            if config.twins && i == 1 && config.processes >= 2 {
                names[0].clone()
            } else {
                names[i].clone()
            }
        };
        // One core per flag of each Rust process, siblings one after the other.
        let core_configs = (0..config.processes * flags)
            .map(|c| config.core_config(&holder(c / flags)))
            .collect();
        let rows: Vec<RowState> = (0..flags)
            .map(|f| RowState {
                name: row_name(f),
                leaderless_since: Some(0),
                ..RowState::default()
            })
            .collect();
        let drift = config.faults.drift;
        let bound = if drift.on {
            drift.max_ppm
        } else {
            drift.base_ppm
        };
        let mut hosts: Vec<Host> = (0..names.len())
            .map(|i| {
                // Each machine's monotonic clock has its own origin and rate error.
                let origin = rng.below(1_000_000_000_000);
                let ppm = rng.signed(bound);
                Host::new(holder(i), LocalClock::new(0, origin, ppm))
            })
            .collect();
        let go_hosts = hosts.split_off(config.processes);
        let rust = hosts
            .into_iter()
            .flat_map(|h| std::iter::repeat_n(h, flags))
            .map(RustProc::new)
            .collect();
        let go = go_hosts
            .into_iter()
            .map(|h| {
                let r = rng.fork();
                GoProc::new(h, r)
            })
            .collect();
        let interval_ns = config.interval.as_nanos() as u64;
        let core = config.core_config("x");
        let lease_micros = if config.safeguards.expiry_check {
            core.interval_micros()
        } else {
            // `timestamp < now() - lease` with a lease of minus a century: always true.
            -3_155_760_000_000_000
        };
        let retry = core.retry_interval().as_nanos() as u64;
        let latency = config.faults.latency;
        let lat_max = (latency.min + latency.spread.max(latency.tail)).as_nanos() as u64;
        // A lease (stretched by the slowest allowed clock), one check, a retry with its
        // jitter, and a few round trips.
        let drift_bound = if drift.on {
            drift.max_ppm
        } else {
            drift.base_ppm
        };
        let liveness_window = interval_ns
            + interval_ns * drift_bound / 1_000_000
            + core.renew_interval().as_nanos() as u64
            + 2 * retry
            + 6 * lat_max;
        let trace_names = if flags == 1 {
            names
        } else {
            // Each core by its process and flag; the holder it writes is the process's name.
            let mut v: Vec<String> = (0..config.processes * flags)
                .map(|c| format!("{}/f{}", names[c / flags], c % flags))
                .collect();
            v.extend(names.into_iter().skip(config.processes));
            v
        };
        let trace = Trace::new(trace_names, config.full_trace);
        let (faults, db_step_budget) = db_step_budget(config, &core);
        let mut world = World {
            config: config.clone(),
            faults,
            db_step_budget,
            db_steps: Vec::with_capacity(16),
            core_configs,
            rng,
            heap: BinaryHeap::with_capacity(1024),
            seq: 0,
            t: 0,
            end: config.duration.as_nanos() as u64,
            rust,
            go,
            table: {
                let mut table = crate::table::RefTable::new();
                table.clock_floor = config.safeguards.clock_floor;
                table
            },
            lease_micros,
            interval_ns,
            stall_until: 0,
            stall_fails: false,
            stalled: Vec::with_capacity(64),
            loss_until: 0,
            slow_until: 0,
            quiet_since: 0,
            no_start_before: 0,
            liveness_window,
            go_overlap_since: None,
            rust_go_since: None,
            rows,
            flags,
            batches: Vec::new(),
            free_batches: Vec::new(),
            sets: vec![SetDriver::default(); if config.batch { config.processes } else { 0 }],
            swallow: None,
            swallowed: false,
            stats: Stats::default(),
            trace,
            violation: None,
            commands: Vec::with_capacity(16),
            go_traced: vec![false; config.go_peers],
            last_check: 0,
            db_offset: 0,
            in_net: Vec::with_capacity(64),
            free_slots: Vec::with_capacity(64),
            timeline: 1,
            db_started: 0,
            snapshots: std::collections::VecDeque::with_capacity(64),
            history_lost: false,
        };
        // Who starts first is the seed's choice too: all within the first 50 ms. A process's
        // flags start together.
        for p in 0..n {
            let at = world.rng.below(50_000_000);
            for c in world.cores_of(p) {
                world.push(at, Ev::Start(c as Pid));
            }
        }
        let f = world.faults;
        let kinds = [
            (FaultKind::Pause, f.pause),
            (FaultKind::Crash, f.crash),
            (FaultKind::Stall, f.stall),
            (FaultKind::Conn, f.conn),
            (FaultKind::Loss, f.loss),
            (FaultKind::Slow, f.slow),
            (FaultKind::Close, f.close),
            (FaultKind::DbStep, f.db_step),
            (FaultKind::Failover, f.failover),
            (FaultKind::Delete, f.delete),
            (FaultKind::RowLock, f.rowlock),
        ];
        for (kind, schedule) in kinds {
            if let Some(s) = schedule {
                world.schedule_fault(kind, s.every);
            }
        }
        if f.failover.is_some() {
            world.push(0, Ev::Snapshot);
        }
        if f.drift.on {
            world.schedule_fault(FaultKind::Step, f.drift.step_every);
            for p in 0..n {
                let at = world.rng.below(2 * f.drift.every.as_nanos() as u64);
                let first = world.cores_of(p).start;
                world.push(at, Ev::Drift(first as Pid));
            }
        }
        world
    }

    pub(super) fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Queued {
            t,
            seq: self.seq,
            ev,
        });
    }

    pub(super) fn schedule_fault(&mut self, kind: FaultKind, every: Duration) {
        let gap = self.rng.below(2 * every.as_nanos() as u64).max(1);
        self.push(self.t + gap, Ev::Fault(kind));
    }

    pub(super) fn run(mut self) -> Report {
        while let Some(q) = self.heap.pop() {
            if q.t > self.end {
                break;
            }
            self.t = q.t;
            self.stats.events += 1;
            self.dispatch(q.ev);
            if self.violation.is_none() {
                self.check();
            }
            if self.violation.is_some() {
                break;
            }
            // In batch mode, what the sets' drivers gathered in this instant goes now.
            if self.config.batch && self.heap.peek().is_none_or(|n| n.t > self.t) {
                self.flush_all();
                if self.violation.is_none() {
                    self.check();
                }
                if self.violation.is_some() {
                    break;
                }
            }
        }
        if self.violation.is_none() {
            self.t = self.end;
            self.check();
        }
        self.finish()
    }

    pub(super) fn finish(mut self) -> Report {
        let t = self.t;
        if let Some(since) = self.go_overlap_since.take() {
            self.stats.go_overlaps.push(t - since);
        }
        if let Some(since) = self.rust_go_since.take() {
            self.stats.rust_go_overlap_ns += t - since;
        }
        for row in &self.rows {
            if let (Some(since), true) = (row.leaderless_since, row.led) {
                self.stats.leaderless_ns += t - since;
            }
        }
        self.stats.simulated_ns = t;
        self.stats.notified = self.rust.iter().map(|p| p.notified).sum();
        self.stats.go_checks = self.go.iter().map(|g| g.checks).sum();
        let state = self.describe_processes();
        let failure = self.violation.take().map(|violation| Failure {
            seed: self.config.seed,
            violation,
            at: t,
            last_events: self.trace.render(&self.trace.last(SHOWN)),
            state,
            replay: self.config.replay_command(),
        });
        Report {
            config: self.config,
            stats: self.stats,
            failure,
            trace: self.trace,
        }
    }

    // ---- Events ----------------------------------------------------------------------------

    pub(super) fn is_rust(&self, p: Pid) -> bool {
        usize::from(p) < self.rust.len()
    }

    /// The cores (pids) of process `i` (0 ≤ i < processes + Go peers): its flags' siblings,
    /// or the one Go process.
    pub(super) fn cores_of(&self, i: usize) -> Range<usize> {
        let processes = self.config.processes;
        if i < processes {
            i * self.flags..(i + 1) * self.flags
        } else {
            let g = self.rust.len() + (i - processes);
            g..g + 1
        }
    }

    /// The siblings of core `p` (itself included): the cores of its process.
    pub(super) fn siblings(&self, p: Pid) -> Range<usize> {
        let i = usize::from(p);
        if i < self.rust.len() {
            self.cores_of(i / self.flags)
        } else {
            i..i + 1
        }
    }

    /// The flag (row index) core `p` runs: 0 for a Go process.
    pub(super) fn flag_of(&self, p: Pid) -> usize {
        let i = usize::from(p);
        if i < self.rust.len() {
            i % self.flags
        } else {
            0
        }
    }

    pub(super) fn host(&mut self, p: Pid) -> &mut Host {
        let n = self.rust.len();
        let i = usize::from(p);
        if i < n {
            &mut self.rust[i].host
        } else {
            &mut self.go[i - n].host
        }
    }

    pub(super) fn go_mut(&mut self, p: Pid) -> &mut GoProc {
        let n = self.rust.len();
        &mut self.go[usize::from(p) - n]
    }

    pub(super) fn host_ref(&self, i: usize) -> &Host {
        let n = self.rust.len();
        if i < n {
            &self.rust[i].host
        } else {
            &self.go[i - n].host
        }
    }
}

/// The faults at the configured intensity, and the budget of database clock steps: with the
/// default maximum ([`DEFAULT_DB_STEP`](super::DEFAULT_DB_STEP)) the steps within any one
/// interval add up to at most 90% of what the drift bound leaves of the margin (the safety
/// condition); an explicit other maximum has no budget.
fn db_step_budget(
    config: &SimConfig,
    core: &leadership_core::Config,
) -> (super::Faults, Option<u64>) {
    let mut f = config.faults.intensified(config.intensity);
    let mut budget = None;
    if let Some(step) = &mut f.db_step {
        if step.max == super::DEFAULT_DB_STEP {
            let ppm = if f.drift.on {
                f.drift.max_ppm
            } else {
                f.drift.base_ppm
            };
            let drift = core.interval().as_nanos() as u64 * ppm / 1_000_000;
            let room = (core.margin().as_nanos() as u64).saturating_sub(drift) / 10 * 9;
            step.max = Duration::from_nanos(room);
            budget = Some(room);
        }
    }
    (f, budget)
}
