//! The shard simulator's world: the fleet, its statements and events in flight, the
//! reference table; [`run`] drives it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use leadership_core::{Config, Flag, Instant};

use super::super::clock::LocalClock;
use super::super::rng::SimRng;
use super::*;
use crate::check::Check;
use crate::table::RefTable;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Up,
    /// Closing gracefully: flags closed one by one; gone once all are.
    Leaving,
    Down,
}

pub(super) struct Proc {
    pub(super) name: String,
    pub(super) life: Life,
    /// Events for this process wait until then (SIGSTOP).
    pub(super) paused_until: u64,
    /// Statements fail until then (a blip).
    pub(super) failing_until: u64,
    pub(super) clock: LocalClock,
    pub(super) incarnation: u64,
    /// Slot 0: the member flag; slot `s + 1`: shard `s`.
    pub(super) cores: Vec<Flag>,
    /// The statement in flight per slot (its id), if any.
    pub(super) pending: Vec<Option<u64>>,
}

impl Proc {
    pub(super) fn local(&self, t: u64) -> Instant {
        self.clock.local(t)
    }
}

#[derive(Clone, Debug)]
pub(super) enum Stmt {
    Check(Check),
    Release { version: i64 },
    Scan,
}

#[derive(Clone, Debug)]
pub(super) enum Ev {
    /// Timer of one slot.
    Wake {
        p: usize,
        inc: u64,
        slot: usize,
    },
    /// A statement reaches the database.
    Arrive {
        p: usize,
        inc: u64,
        slot: usize,
        id: u64,
        stmt: Stmt,
    },
    /// Its reply reaches the process.
    Reply {
        p: usize,
        inc: u64,
        slot: usize,
        id: u64,
        reply: Reply,
    },
    /// The driver gives up on statement `id`.
    Timeout {
        p: usize,
        inc: u64,
        slot: usize,
        id: u64,
    },
    Notify {
        p: usize,
        inc: u64,
        slot: usize,
    },
    WorkStopped {
        p: usize,
        inc: u64,
        slot: usize,
    },
    ScanDue {
        p: usize,
        inc: u64,
    },
    Episode,
    Sample,
}

#[derive(Clone, Debug)]
pub(super) enum Reply {
    Checked(crate::table::CheckResult),
    Released(bool),
    Scan(Vec<(String, String, bool)>),
}

pub(super) struct World {
    pub(super) cfg: ShardConfig,
    pub(super) rng: SimRng,
    pub(super) t: u64,
    pub(super) seq: u64,
    pub(super) queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    pub(super) events: Vec<Option<Ev>>,
    pub(super) free: Vec<usize>,
    pub(super) table: RefTable,
    pub(super) procs: Vec<Proc>,
    pub(super) next_id: u64,
    pub(super) lease_ns: u64,
    pub(super) loss_until: u64,
    pub(super) stall_until: u64,
    pub(super) report: ShardReport,
    /// The episode being measured: kind, start, live processes before it.
    pub(super) current: Option<(Kind, u64, usize)>,
    pub(super) balanced_at: Option<u64>,
    /// Handovers since the current episode began.
    pub(super) terms: usize,
    /// The process that raised each shard last.
    pub(super) last_raiser: Vec<Option<usize>>,
}

/// Runs one sharded simulation.
pub fn run(cfg: &ShardConfig) -> ShardReport {
    let mut w = World {
        cfg: cfg.clone(),
        rng: SimRng::new(cfg.seed),
        t: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        events: Vec::new(),
        free: Vec::new(),
        table: RefTable::new(),
        procs: Vec::new(),
        next_id: 0,
        lease_ns: cfg.interval.as_nanos() as u64,
        loss_until: 0,
        stall_until: 0,
        report: ShardReport::default(),
        current: None,
        balanced_at: None,
        terms: 0,
        last_raiser: vec![None; cfg.shards],
    };
    w.report.header = format!(
        "seed {} shards {} processes {} (max {}) interval {:?} duration {:?} faults {}",
        cfg.seed,
        cfg.shards,
        cfg.processes,
        cfg.max_processes,
        cfg.interval,
        cfg.duration,
        if cfg.faults.kinds.is_empty() {
            "none (joins and leaves)".to_string()
        } else {
            cfg.faults
                .kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(",")
        }
    );
    // The first processes start one by one, each an episode of its own.
    w.push(0, Ev::Episode);
    w.push(0, Ev::Sample);
    let end = cfg.duration.as_nanos() as u64;
    while let Some(Reverse((t, _, slot))) = w.queue.pop() {
        if t > end || w.report.failure.is_some() {
            break;
        }
        w.t = t;
        let ev = w.events[slot].take().expect("queued");
        w.free.push(slot);
        w.handle(ev);
    }
    // The last episode's quiet stretch was cut short by the end of the run: not counted.
    w.report
}

impl World {
    pub(super) fn push(&mut self, at: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.events[s] = Some(ev);
                s
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    pub(super) fn latency(&mut self) -> u64 {
        if self.rng.chance_ppm(20_000) {
            self.rng.between(MS, 20 * MS)
        } else {
            self.rng.between(MS / 10, MS)
        }
    }

    pub(super) fn config(&self, name: &str, process: &str) -> Config {
        Config::builder(name, process)
            .interval(self.cfg.interval)
            .timeout(self.cfg.timeout)
            .build()
            .expect("valid simulator settings")
    }

    /// Records what broke (the run stops before its next event).
    pub(super) fn fail(&mut self, violation: Violation) {
        self.report.failure = Some(ShardFailure {
            violation,
            shards: self.cfg.shards,
            seed: self.cfg.seed,
        });
    }

    pub(super) fn up(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&p| self.procs[p].life == Life::Up)
            .collect()
    }
}
