//! `simulate --shards N`: a balanced group (issue 19) of `N` shards shared by a changing fleet,
//! in virtual time, against the reference table.
//!
//! Each process runs the real cores: one [`leadership_core::Flag`] for its member row and one
//! per shard, and the balance of [`leadership_core::balance`] on a scan of the group's rows
//! every half interval (what `leadership-tokio`'s `Balanced` does). The database is the
//! [`RefTable`]; statements execute when they arrive, in arrival order.
//!
//! The run alternates *episodes* and quiet stretches: an episode is one change or fault
//! (`join`, `leave`, `crash` then a later restart, `pause`, `blip` (a few statements of one
//! process fail), `loss`, `stall`, `drift`); the quiet stretch that follows has no fault. It
//! checks:
//!
//! - after every raise and renew, that no shard is believed led by two processes at once
//!   (each asked `is_leader` at its own local time);
//! - at the end of every quiet stretch, that every shard is led and every live process leads
//!   between `floor(N/M)` and `ceil(N/M)`;
//! - for figures: the time from the episode to balance, and the new terms (handovers)
//!   per episode, against `N/M`.
//!
//! Same seed, same output.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::time::Duration;

use leadership_core::balance::{self, Entry, View};
use leadership_core::{Command, Config, Failure, Flag, Input, Instant};

use super::clock::{db_time, LocalClock};
use super::rng::SimRng;
use crate::check::Check;
use crate::table::{RefTable, DEFAULT_SERVER};

const GROUP: &str = "sim";
const MS: u64 = 1_000_000;

/// Which episodes a run draws from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardFaults {
    /// The names, in the order given.
    pub kinds: Vec<Kind>,
}

/// One kind of episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A new process joins (up to the maximum).
    Join,
    /// A process leaves gracefully (closes every flag).
    Leave,
    /// A process crashes; it restarts, under its name, at a later episode.
    Crash,
    /// A crashed process restarts.
    Restart,
    /// A process is paused for 0.2–1.5 leases.
    Pause,
    /// A process's statements fail for up to a quarter lease (it misses a check or two).
    Blip,
    /// Statements and replies are lost (30 %) for up to a lease.
    Loss,
    /// The database holds every statement for 0.1–1.5 leases.
    Stall,
    /// A process's clock rate changes by up to ±4 %.
    Drift,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Crash => "crash",
            Kind::Restart => "restart",
            Kind::Pause => "pause",
            Kind::Blip => "blip",
            Kind::Loss => "loss",
            Kind::Stall => "stall",
            Kind::Drift => "drift",
        }
    }
}

/// The episode names `--faults` takes with `--shards`.
pub const SHARD_FAULT_NAMES: &str = "join,leave,crash,pause,blip,loss,stall,drift|all";

impl ShardFaults {
    /// Parses a comma-separated list (`all` for every kind); `crash` implies restarts.
    pub fn parse(list: &str) -> Result<ShardFaults, String> {
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let more: &[Kind] = match name {
                "join" => &[Kind::Join],
                "leave" => &[Kind::Leave],
                "crash" => &[Kind::Crash, Kind::Restart],
                "pause" => &[Kind::Pause],
                "blip" => &[Kind::Blip],
                "loss" => &[Kind::Loss],
                "stall" => &[Kind::Stall],
                "drift" => &[Kind::Drift],
                "all" => &[
                    Kind::Join,
                    Kind::Leave,
                    Kind::Crash,
                    Kind::Restart,
                    Kind::Pause,
                    Kind::Blip,
                    Kind::Loss,
                    Kind::Stall,
                    Kind::Drift,
                ],
                other => return Err(format!("unknown fault {other:?} ({SHARD_FAULT_NAMES})")),
            };
            for k in more {
                if !kinds.contains(k) {
                    kinds.push(*k);
                }
            }
        }
        Ok(ShardFaults { kinds })
    }
}

/// A sharded run's settings.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Decides everything random.
    pub seed: u64,
    /// Shards in the group.
    pub shards: usize,
    /// Processes at the start (started one by one, a lease apart).
    pub processes: usize,
    /// Most processes at once (joins stop there).
    pub max_processes: usize,
    /// Simulated time.
    pub duration: Duration,
    /// The lease.
    pub interval: Duration,
    /// The statement timeout.
    pub timeout: Duration,
    /// The episodes to draw from; none: joins and leaves only (the fleet changes anyway).
    pub faults: ShardFaults,
    /// A quiet stretch after each episode, in leases.
    pub quiet_leases: u32,
}

impl Default for ShardConfig {
    fn default() -> ShardConfig {
        ShardConfig {
            seed: 1,
            shards: 64,
            processes: 4,
            max_processes: 8,
            duration: Duration::from_secs(600),
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            faults: ShardFaults::default(),
            quiet_leases: 6,
        }
    }
}

/// What one episode led to.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// What happened.
    pub kind: Kind,
    /// Live processes before it.
    pub before: usize,
    /// Live processes after it.
    pub processes: usize,
    /// Time from the episode's start to the first balanced instant, if reached.
    pub to_balance: Option<Duration>,
    /// Handovers (a shard raised by a process other than the one that raised it last) during
    /// the episode and its quiet stretch.
    pub handovers: usize,
}

/// A sharded run's result.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    /// The run's settings, as text.
    pub header: String,
    /// One line per episode.
    pub timeline: Vec<String>,
    /// Every episode.
    pub episodes: Vec<Episode>,
    /// The first broken invariant, if any.
    pub failure: Option<String>,
    /// Checks run.
    pub checks: u64,
    /// Scans run.
    pub scans: u64,
    /// Releases that released a row.
    pub releases: u64,
    /// Pairwise leadership comparisons made (each raise and renew against every process).
    pub compared: u64,
}

impl ShardReport {
    /// The figures per kind of episode: count, time to balance (median, max) and handovers
    /// (mean) against N/M.
    pub fn summary(&self, shards: usize) -> String {
        let mut out = String::new();
        let mut kinds: BTreeMap<Kind, Vec<&Episode>> = BTreeMap::new();
        for e in &self.episodes {
            kinds.entry(e.kind).or_default().push(e);
        }
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>14} {:>10} {:>16} {:>9}",
            "episode", "count", "balance p50 s", "max s", "handovers mean", "N/M mean"
        );
        for (kind, eps) in kinds {
            let mut times: Vec<f64> = eps
                .iter()
                .filter_map(|e| e.to_balance.map(|d| d.as_secs_f64()))
                .collect();
            times.sort_by(f64::total_cmp);
            let p50 = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
            let max = times.last().copied().unwrap_or(f64::NAN);
            let moves = eps.iter().map(|e| e.handovers as f64).sum::<f64>() / eps.len() as f64;
            let share = eps
                .iter()
                .map(|e| shards as f64 / e.processes.max(e.before).max(1) as f64)
                .sum::<f64>()
                / eps.len() as f64;
            let _ = writeln!(
                out,
                "{:<8} {:>5} {:>14.2} {:>10.2} {:>16.1} {:>9.1}",
                kind.name(),
                eps.len(),
                p50,
                max,
                moves,
                share
            );
        }
        let _ = write!(
            out,
            "checks {}, scans {}, releases {}, leadership comparisons {}; invariants: {}",
            self.checks,
            self.scans,
            self.releases,
            self.compared,
            self.failure.as_deref().unwrap_or("all held")
        );
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Up,
    /// Closing gracefully: flags closed one by one; gone once all are.
    Leaving,
    Down,
}

struct Proc {
    name: String,
    life: Life,
    /// Events for this process wait until then (SIGSTOP).
    paused_until: u64,
    /// Statements fail until then (a blip).
    failing_until: u64,
    clock: LocalClock,
    incarnation: u64,
    /// Slot 0: the member flag; slot `s + 1`: shard `s`.
    cores: Vec<Flag>,
    /// The statement in flight per slot (its id), if any.
    pending: Vec<Option<u64>>,
}

impl Proc {
    fn local(&self, t: u64) -> Instant {
        self.clock.local(t)
    }
}

#[derive(Clone, Debug)]
enum Stmt {
    Check(Check),
    Release { version: i64 },
    Scan,
}

#[derive(Clone, Debug)]
enum Ev {
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
enum Reply {
    Checked(crate::table::CheckResult),
    Released(bool),
    Scan(Vec<(String, String, bool)>),
}

struct World {
    cfg: ShardConfig,
    rng: SimRng,
    t: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    table: RefTable,
    procs: Vec<Proc>,
    next_id: u64,
    lease_ns: u64,
    loss_until: u64,
    stall_until: u64,
    report: ShardReport,
    /// The episode being measured: kind, start, live processes before it.
    current: Option<(Kind, u64, usize)>,
    balanced_at: Option<u64>,
    /// Handovers since the current episode began.
    terms: usize,
    /// The process that raised each shard last.
    last_raiser: Vec<Option<usize>>,
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
    fn push(&mut self, at: u64, ev: Ev) {
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

    fn latency(&mut self) -> u64 {
        if self.rng.chance_ppm(20_000) {
            self.rng.between(MS, 20 * MS)
        } else {
            self.rng.between(MS / 10, MS)
        }
    }

    fn config(&self, name: &str, process: &str) -> Config {
        Config::builder(name, process)
            .interval(self.cfg.interval)
            .timeout(self.cfg.timeout)
            .build()
            .expect("valid simulator settings")
    }

    fn up(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&p| self.procs[p].life == Life::Up)
            .collect()
    }

    // ---- Processes -------------------------------------------------------------------------

    fn start(&mut self, p: usize) {
        let t = self.t;
        let name = self.procs[p].name.clone();
        let inc = self.procs[p].incarnation + 1;
        let clock = LocalClock::new(t, self.rng.between(1, 1 << 40), self.rng.signed(100));
        let now = clock.local(t);
        let mut cores = vec![Flag::new(
            self.config(&balance::member_name(GROUP, &name), &name),
            self.rng.next_u64(),
            now,
        )];
        for s in 0..self.cfg.shards {
            cores.push(Flag::new_unwanted(
                self.config(&balance::shard_name(GROUP, s), &name),
                self.rng.next_u64(),
                now,
            ));
        }
        let proc = &mut self.procs[p];
        proc.life = Life::Up;
        proc.incarnation = inc;
        proc.clock = clock;
        proc.paused_until = 0;
        proc.failing_until = 0;
        proc.pending = vec![None; cores.len()];
        proc.cores = cores;
        self.drain(p, 0);
        let first = self.rng.between(0, self.lease_ns / 10);
        self.push(t + first, Ev::ScanDue { p, inc });
    }

    /// Carries out the commands of one slot, then re-arms its timer.
    fn drain(&mut self, p: usize, slot: usize) {
        let t = self.t;
        let inc = self.procs[p].incarnation;
        while let Some(command) = self.procs[p].cores[slot].poll_command() {
            match command {
                Command::Check { .. } => {
                    // One server, never failed over: the check expects none.
                    let check = Check::from_command(&command).expect("a check");
                    self.send(
                        p,
                        slot,
                        Stmt::Check(Check {
                            expect: None,
                            ..check
                        }),
                    )
                }
                Command::Release { version } => self.send(p, slot, Stmt::Release { version }),
                Command::Raise(_) | Command::Renewed(_) => {
                    if matches!(command, Command::Raise(_)) && slot > 0 {
                        // A handover: another process led the shard last.
                        let last = self.last_raiser[slot - 1].replace(p);
                        if last.is_some_and(|q| q != p) {
                            self.terms += 1;
                        }
                    }
                    self.check_overlap(p, slot);
                }
                Command::StopWork => {
                    let d = self.rng.between(0, 20 * MS);
                    self.push(t + d, Ev::WorkStopped { p, inc, slot });
                }
                Command::RunPrecheck => {
                    unreachable!("no precheck in the sharded simulation")
                }
                Command::Closed => {}
                Command::AtRisk(_) | Command::Lower(_) | Command::Anomaly(_) => {}
            }
        }
        self.arm(p, slot);
        if self.procs[p].life == Life::Leaving && self.procs[p].cores.iter().all(Flag::is_closed) {
            self.procs[p].life = Life::Down;
        }
    }

    fn arm(&mut self, p: usize, slot: usize) {
        let proc = &self.procs[p];
        if let Some(at) = proc.cores[slot].poll_timeout() {
            let t = proc.clock.true_at(at, self.t);
            let inc = proc.incarnation;
            self.push(t, Ev::Wake { p, inc, slot });
        }
    }

    fn send(&mut self, p: usize, slot: usize, stmt: Stmt) {
        let t = self.t;
        self.next_id += 1;
        let id = self.next_id;
        let inc = self.procs[p].incarnation;
        if slot != usize::MAX {
            self.procs[p].pending[slot] = Some(id);
        }
        let timeout = self.cfg.timeout.as_nanos() as u64;
        if slot != usize::MAX {
            self.push(t + timeout, Ev::Timeout { p, inc, slot, id });
        }
        if t < self.procs[p].failing_until || (t < self.loss_until && self.rng.chance_ppm(300_000))
        {
            return; // lost, or failing: the timeout answers
        }
        let arrive = (t + self.latency()).max(self.stall_until);
        self.push(
            arrive,
            Ev::Arrive {
                p,
                inc,
                slot,
                id,
                stmt,
            },
        );
    }

    fn check_overlap(&mut self, p: usize, slot: usize) {
        if slot == 0 {
            return; // each process's member flag is a row of its own
        }
        let t = self.t;
        let leaders: Vec<usize> = (0..self.procs.len())
            .filter(|&q| {
                let proc = &self.procs[q];
                proc.life != Life::Down
                    && proc
                        .cores
                        .get(slot)
                        .is_some_and(|c| c.is_leader(proc.local(t)))
            })
            .collect();
        self.report.compared += self.procs.len() as u64;
        if leaders.len() > 1 {
            let names: Vec<&str> = leaders
                .iter()
                .map(|&q| self.procs[q].name.as_str())
                .collect();
            let what = if slot == 0 {
                "a member flag".to_string()
            } else {
                format!("shard {}", slot - 1)
            };
            self.report.failure = Some(format!(
                "two leaders of {what} at {:.3} s: {names:?} (raised by {}); replay: simulate --shards {} --seed {}",
                t as f64 / 1e9,
                self.procs[p].name,
                self.cfg.shards,
                self.cfg.seed
            ));
        }
    }

    // ---- Events ----------------------------------------------------------------------------

    fn alive(&self, p: usize, inc: u64) -> bool {
        let proc = &self.procs[p];
        proc.incarnation == inc && proc.life != Life::Down
    }

    fn handle(&mut self, ev: Ev) {
        let t = self.t;
        // A paused process handles nothing until it resumes.
        let owner = match &ev {
            Ev::Wake { p, .. }
            | Ev::Reply { p, .. }
            | Ev::Timeout { p, .. }
            | Ev::Notify { p, .. }
            | Ev::WorkStopped { p, .. }
            | Ev::ScanDue { p, .. } => Some(*p),
            _ => None,
        };
        if let Some(p) = owner {
            if self.procs[p].paused_until > t {
                let until = self.procs[p].paused_until;
                return self.push(until, ev);
            }
        }
        match ev {
            Ev::Wake { p, inc, slot } => {
                if !self.alive(p, inc) {
                    return;
                }
                let now = self.procs[p].local(t);
                let core = &mut self.procs[p].cores[slot];
                match core.poll_timeout() {
                    Some(at) if at <= now => {
                        core.handle_timeout(now);
                        self.drain(p, slot);
                    }
                    // Early (the clock's rate changed) or stale: re-arm.
                    Some(_) => self.arm(p, slot),
                    None => {}
                }
            }
            Ev::Arrive {
                p,
                inc,
                slot,
                id,
                stmt,
            } => self.arrive(p, inc, slot, id, stmt),
            Ev::Reply {
                p,
                inc,
                slot,
                id,
                reply,
            } => {
                if !self.alive(p, inc) {
                    return;
                }
                if let Reply::Scan(rows) = reply {
                    return self.apply_scan(p, &rows);
                }
                if self.procs[p].pending[slot] != Some(id) {
                    return; // answered by its timeout already
                }
                self.procs[p].pending[slot] = None;
                let now = self.procs[p].local(t);
                let core = &mut self.procs[p].cores[slot];
                let result = match &reply {
                    Reply::Checked(r) => core.handle_input(now, Input::Checked(r.as_input())),
                    Reply::Released(released) => core.handle_input(
                        now,
                        Input::Released {
                            released: *released,
                        },
                    ),
                    Reply::Scan(_) => unreachable!(),
                };
                result.expect("the simulated driver keeps the core's contract");
                self.drain(p, slot);
            }
            Ev::Timeout { p, inc, slot, id } => {
                if !self.alive(p, inc) || self.procs[p].pending[slot] != Some(id) {
                    return;
                }
                self.procs[p].pending[slot] = None;
                let now = self.procs[p].local(t);
                self.procs[p].cores[slot]
                    .handle_input(now, Input::Failed(Failure::Timeout))
                    .expect("contract");
                self.drain(p, slot);
            }
            Ev::Notify { p, inc, slot } => {
                if !self.alive(p, inc) {
                    return;
                }
                let now = self.procs[p].local(t);
                self.procs[p].cores[slot]
                    .handle_input(now, Input::Notified)
                    .expect("contract");
                self.drain(p, slot);
            }
            Ev::WorkStopped { p, inc, slot } => {
                if !self.alive(p, inc) {
                    return;
                }
                let now = self.procs[p].local(t);
                self.procs[p].cores[slot]
                    .handle_input(now, Input::WorkStopped)
                    .expect("contract");
                self.drain(p, slot);
            }
            Ev::ScanDue { p, inc } => {
                if !self.alive(p, inc) || self.procs[p].life != Life::Up {
                    return;
                }
                let period = self.lease_ns / 2;
                let next = period - period / 10 + self.rng.between(0, period / 5);
                self.push(t + next, Ev::ScanDue { p, inc });
                // Until its own heartbeat leads, a process decides nothing.
                let now = self.procs[p].local(t);
                if self.procs[p].cores[0].is_leader(now) {
                    self.send(p, usize::MAX, Stmt::Scan);
                }
            }
            Ev::Episode => self.episode(),
            Ev::Sample => {
                self.sample();
                self.push(t + 50 * MS, Ev::Sample);
            }
        }
    }

    fn arrive(&mut self, p: usize, inc: u64, slot: usize, id: u64, stmt: Stmt) {
        let t = self.t;
        let now = db_time(t);
        let lease_us = (self.lease_ns / 1_000) as i64;
        let name = self.procs[p].name.clone();
        let reply = match stmt {
            Stmt::Check(check) => {
                self.report.checks += 1;
                let flag = self.slot_name(&name, slot);
                let args = check.args(&flag, &name, lease_us);
                Reply::Checked(self.table.check_on(now, &DEFAULT_SERVER, &args))
            }
            Stmt::Release { version } => {
                let flag = self.slot_name(&name, slot);
                let released = self.table.release(&flag, &name, version);
                if released {
                    self.report.releases += 1;
                    // NOTIFY: every other running process's flag of that name.
                    for q in 0..self.procs.len() {
                        if q != p && self.procs[q].life != Life::Down {
                            let d = self.latency();
                            let inc = self.procs[q].incarnation;
                            self.push(t + d, Ev::Notify { p: q, inc, slot });
                        }
                    }
                }
                Reply::Released(released)
            }
            Stmt::Scan => {
                self.report.scans += 1;
                let prefix = balance::group_prefix(GROUP);
                let cutoff = now.as_unix_micros().saturating_sub(lease_us);
                Reply::Scan(
                    self.table
                        .rows()
                        .filter(|(n, _)| n.starts_with(&prefix))
                        .map(|(n, r)| {
                            let live = r.timestamp.is_some_and(|ts| ts.as_unix_micros() >= cutoff);
                            (n.to_string(), r.holder.clone().unwrap_or_default(), live)
                        })
                        .collect(),
                )
            }
        };
        if t < self.loss_until && self.rng.chance_ppm(300_000) {
            return; // the reply is lost
        }
        let back = t + self.latency();
        self.push(
            back,
            Ev::Reply {
                p,
                inc,
                slot,
                id,
                reply,
            },
        );
    }

    fn slot_name(&self, process: &str, slot: usize) -> String {
        if slot == 0 {
            balance::member_name(GROUP, process)
        } else {
            balance::shard_name(GROUP, slot - 1)
        }
    }

    /// The balancer: what `Balanced` does with a scan.
    fn apply_scan(&mut self, p: usize, rows: &[(String, String, bool)]) {
        let t = self.t;
        if self.procs[p].life != Life::Up {
            return;
        }
        let me = self.procs[p].name.clone();
        let mut members = vec![me.as_str()];
        let mut held = Vec::new();
        for (name, holder, live) in rows {
            if !live {
                continue;
            }
            match balance::parse(GROUP, name) {
                Some(Entry::Member(process)) if process == holder => members.push(process),
                Some(Entry::Shard(s)) if s < self.cfg.shards => held.push((s, holder.as_str())),
                _ => {}
            }
        }
        let view = View::new(self.cfg.shards, members, held);
        let wanted = balance::wanted(&view, &me);
        let now = self.procs[p].local(t);
        for (s, want) in wanted.into_iter().enumerate() {
            let core = &mut self.procs[p].cores[s + 1];
            if core.is_wanted() != want {
                core.handle_input(now, Input::Wanted(want))
                    .expect("contract");
                self.drain(p, s + 1);
            }
        }
    }

    // ---- Episodes and figures --------------------------------------------------------------

    fn leaders(&self) -> Vec<Option<usize>> {
        let t = self.t;
        (0..self.cfg.shards)
            .map(|s| {
                (0..self.procs.len()).find(|&q| {
                    let proc = &self.procs[q];
                    proc.life == Life::Up && proc.cores[s + 1].is_leader(proc.local(t))
                })
            })
            .collect()
    }

    fn is_balanced(&self) -> bool {
        let up = self.up();
        if up.is_empty() {
            return false;
        }
        let n = self.cfg.shards;
        let (floor, ceil) = (n / up.len(), n.div_ceil(up.len()));
        let leaders = self.leaders();
        if leaders.iter().any(Option::is_none) {
            return false;
        }
        up.iter().all(|&q| {
            let c = leaders.iter().filter(|l| **l == Some(q)).count();
            (floor..=ceil).contains(&c)
        })
    }

    /// Notes when the fleet last became balanced: the episode's time to balance is the last
    /// such instant (a fault may first unbalance a balanced fleet).
    fn sample(&mut self) {
        if self.current.is_none() {
            return;
        }
        if !self.is_balanced() {
            self.balanced_at = None;
        } else if self.balanced_at.is_none() {
            self.balanced_at = Some(self.t);
        }
    }

    fn finish_episode(&mut self) {
        let Some((kind, start, before)) = self.current.take() else {
            return;
        };
        let processes = self.up().len();
        let to_balance = self
            .balanced_at
            .map(|at| Duration::from_nanos(at.saturating_sub(start)));
        if kind == Kind::Blip && self.terms > 0 && self.report.failure.is_none() {
            self.report.failure = Some(format!(
                "a blip at {:.3} s moved {} shards; replay: simulate --shards {} --seed {}",
                start as f64 / 1e9,
                self.terms,
                self.cfg.shards,
                self.cfg.seed
            ));
        }
        self.report.timeline.push(format!(
            "{:>9.3} s  {:<8} M={:>2}->{:<2} balanced {:<10} handovers {:>3} (N/M {:.1})",
            start as f64 / 1e9,
            kind.name(),
            before,
            processes,
            to_balance.map_or("never".to_string(), |d| format!(
                "+{:.2} s",
                d.as_secs_f64()
            )),
            self.terms,
            self.cfg.shards as f64 / processes.max(before).max(1) as f64
        ));
        self.report.episodes.push(Episode {
            kind,
            before,
            processes,
            to_balance,
            handovers: self.terms,
        });
    }

    fn episode(&mut self) {
        let t = self.t;
        // The quiet stretch of the previous episode has ended: the fleet must be balanced.
        if self.current.is_some() {
            if !self.is_balanced() && self.report.failure.is_none() {
                let counts: Vec<(String, usize)> = self
                    .up()
                    .iter()
                    .map(|&q| {
                        let c = self.leaders().iter().filter(|l| **l == Some(q)).count();
                        (self.procs[q].name.clone(), c)
                    })
                    .collect();
                self.report.failure = Some(format!(
                    "not balanced {} leases after {} at {:.3} s: {counts:?}; replay: simulate --shards {} --seed {}",
                    self.cfg.quiet_leases,
                    self.current.as_ref().map_or("?", |c| c.0.name()),
                    t as f64 / 1e9,
                    self.cfg.shards,
                    self.cfg.seed
                ));
            }
            self.finish_episode();
        }
        let kind = self.draw();
        self.current = Some((kind, t, self.up().len()));
        self.balanced_at = None;
        self.terms = 0;
        let lease = self.lease_ns;
        let up = self.up();
        let pick = |w: &mut World, from: &[usize]| from[w.rng.below(from.len() as u64) as usize];
        match kind {
            Kind::Join if self.procs.len() >= self.cfg.max_processes => {
                // Every name is used: one that left comes back.
                let left: Vec<usize> = (0..self.procs.len())
                    .filter(|&q| self.procs[q].life == Life::Down)
                    .collect();
                let p = pick(self, &left);
                self.start(p);
            }
            Kind::Join => {
                let p = self.procs.len();
                self.procs.push(Proc {
                    name: format!("p{p:02}"),
                    life: Life::Down,
                    paused_until: 0,
                    failing_until: 0,
                    clock: LocalClock::new(0, 0, 0),
                    incarnation: 0,
                    cores: Vec::new(),
                    pending: Vec::new(),
                });
                self.start(p);
            }
            Kind::Restart => {
                let down: Vec<usize> = (0..self.procs.len())
                    .filter(|&q| self.procs[q].life == Life::Down)
                    .collect();
                let p = pick(self, &down);
                self.start(p);
            }
            Kind::Leave => {
                let p = pick(self, &up);
                self.procs[p].life = Life::Leaving;
                let now = self.procs[p].local(t);
                for slot in 0..self.procs[p].cores.len() {
                    self.procs[p].cores[slot]
                        .handle_input(now, Input::Close)
                        .expect("contract");
                    self.drain(p, slot);
                }
            }
            Kind::Crash => {
                let p = pick(self, &up);
                self.procs[p].life = Life::Down;
            }
            Kind::Pause => {
                let p = pick(self, &up);
                self.procs[p].paused_until = t + self.rng.between(lease / 5, lease * 3 / 2);
            }
            Kind::Blip => {
                let p = pick(self, &up);
                self.procs[p].failing_until = t + self.rng.between(lease / 20, lease / 4);
            }
            Kind::Loss => self.loss_until = t + self.rng.between(lease / 10, lease),
            Kind::Stall => self.stall_until = t + self.rng.between(lease / 10, lease * 3 / 2),
            Kind::Drift => {
                let p = pick(self, &up);
                let ppm = self.rng.signed(40_000);
                self.procs[p].clock.set_rate(t, ppm);
                for slot in 0..self.procs[p].cores.len() {
                    self.arm(p, slot);
                }
            }
        }
        // The episode's own length (a pause or a stall ends within 1.5 leases), then quiet.
        let next = t + lease * 3 / 2 + lease * u64::from(self.cfg.quiet_leases);
        self.push(next, Ev::Episode);
    }

    /// The next episode: the first processes join one by one; then a kind drawn from the
    /// enabled ones that makes sense now.
    fn draw(&mut self) -> Kind {
        let up = self.up().len();
        let down = self.procs.iter().filter(|p| p.life == Life::Down).count();
        if self.procs.len() < self.cfg.processes {
            return Kind::Join;
        }
        let mut kinds: Vec<Kind> = if self.cfg.faults.kinds.is_empty() {
            vec![Kind::Join, Kind::Leave]
        } else {
            self.cfg.faults.kinds.clone()
        };
        // The fleet stays between half the starting size and the maximum.
        let floor = (self.cfg.processes / 2).max(1);
        kinds.retain(|k| match k {
            Kind::Join => {
                up < self.cfg.max_processes
                    && (self.procs.len() < self.cfg.max_processes || down > 0)
            }
            Kind::Restart => down > 0,
            Kind::Leave | Kind::Crash => up > floor,
            _ => up > 0,
        });
        if up == 0 || kinds.is_empty() {
            // Nobody is left (or nothing fits): bring one back.
            return if down > 0 { Kind::Restart } else { Kind::Join };
        }
        kinds[self.rng.below(kinds.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_free_fleet_balances_after_every_join_and_leave() {
        let report = run(&ShardConfig {
            seed: 3,
            shards: 32,
            processes: 4,
            duration: Duration::from_secs(300),
            ..ShardConfig::default()
        });
        assert!(report.failure.is_none(), "{}", report.failure.unwrap());
        assert!(report.episodes.len() > 10);
        assert!(report.episodes.iter().all(|e| e.to_balance.is_some()));
    }

    #[test]
    fn every_fault_keeps_one_leader_per_shard_and_balance_after_each_quiet_stretch() {
        for seed in 0..6 {
            let report = run(&ShardConfig {
                seed,
                shards: 24,
                processes: 4,
                max_processes: 6,
                duration: Duration::from_secs(900),
                faults: ShardFaults::parse("all").unwrap(),
                ..ShardConfig::default()
            });
            assert!(report.failure.is_none(), "{}", report.failure.unwrap());
            let kinds: std::collections::BTreeSet<Kind> =
                report.episodes.iter().map(|e| e.kind).collect();
            assert!(kinds.len() >= 6, "seed {seed}: {kinds:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_figures() {
        let cfg = ShardConfig {
            seed: 9,
            shards: 16,
            processes: 3,
            duration: Duration::from_secs(120),
            faults: ShardFaults::parse("all").unwrap(),
            ..ShardConfig::default()
        };
        let (a, b) = (run(&cfg), run(&cfg));
        assert_eq!(a.timeline, b.timeline);
        assert_eq!(a.summary(16), b.summary(16));
    }
}
