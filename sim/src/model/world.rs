//! The model's world: a small fleet of real cores, the reference table, a database that can
//! fail over to a lagging standby, and discretized time.
//!
//! With `Params::flags` = 2 (issue 28), each process runs two flags, `sim` and `sim.1`, each a
//! core of its own ([`Proc`], numbered one after the other: `r0/f0`, `r0/f1`, `r1/f0`, …) on
//! the process's one clock; the process's driver, its connection and its messages are kept on
//! its first core (the set's *head*): it sends one statement at a time, the checks its cores
//! ask for together as one batch.
//!
//! Everything here is plain data (`Clone + Eq + Hash`): a state is stored by its hash, and a
//! trace is the list of events that leads to it from an initial state.

use leadership_core::audit::AuditedFlag;
use leadership_core::{Config, DbTime, Instant, Server};

use crate::check::Check;

use super::Params;
use crate::belief::{Belief, Tokens};
use crate::sim::trace::Op;
use crate::table::{CheckResult, RefRow};
use crate::violation::Violation;

/// The flag's name in the table (the first flag's, with two).
pub const FLAG: &str = "sim";

/// The most flags a process runs in the model.
pub const MAX_FLAGS: usize = 2;

/// The rows' names, by flag.
pub const ROWS: [&str; MAX_FLAGS] = [FLAG, "sim.1"];

/// A local monotonic clock: `origin + t × (1 + ppm/10⁶)` for true time `t` (ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Clock {
    /// The reading at true time 0 (far from zero: the core's instants never saturate).
    pub origin: u64,
    /// The rate error in ppm (negative: slower than the database's clock).
    pub ppm: i64,
}

impl Clock {
    /// The reading at true time `t_ns`.
    pub fn local(&self, t_ns: u64) -> Instant {
        let scaled = i128::from(t_ns) * i128::from(1_000_000 + self.ppm) / 1_000_000;
        Instant::from_nanos(self.origin + scaled as u64)
    }
}

/// What one statement of a process carries: each flag's part, by flag. A single statement
/// has one part; a batch (`sql::CHECK_BATCH`) has a check for each of its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sent {
    /// The parts, by flag.
    pub ops: [Option<Op>; MAX_FLAGS],
    /// With the `join-before-send` safeguard off, the flags (bits) whose renew the driver put
    /// in unknown to their core: it is told when the batch returns.
    pub joined: u8,
}

impl Sent {
    /// One statement of flag `f`.
    pub fn one(f: usize, op: Op) -> Sent {
        let mut ops = [None; MAX_FLAGS];
        ops[f] = Some(op);
        Sent { ops, joined: 0 }
    }

    /// The parts: flag and what it does.
    pub fn parts(&self) -> impl Iterator<Item = (usize, Op)> + '_ {
        self.ops
            .iter()
            .enumerate()
            .filter_map(|(f, op)| op.map(|op| (f, op)))
    }

    /// Whether it is a batch of checks (two or more parts).
    pub fn is_batch(&self) -> bool {
        self.parts().count() > 1
    }

    /// Whether flag `f`'s core does not know of its part yet.
    pub fn joined(&self, f: usize) -> bool {
        self.joined & (1 << f) != 0
    }

    /// The check of flag `f`, if it has one.
    pub fn check(&self, f: usize) -> Option<Check> {
        match self.ops[f] {
            Some(Op::Check(c)) => Some(c),
            _ => None,
        }
    }
}

/// A statement on its way to the database (or held there: it may run at any later moment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Req {
    /// What it does.
    pub op: Sent,
    /// The driver still waits for its reply (it has not timed out, the process has not
    /// crashed): only then is the reply delivered.
    pub live: bool,
    /// The database timeline it was sent to: after a failover it never runs.
    pub timeline: u8,
    /// Held past a tick already (charged once to the budget of late messages).
    pub late: bool,
}

/// A reply on its way back to the driver.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The check's result.
    Check(CheckResult),
    /// Whether the release changed the row.
    Released(bool),
    /// The statement was not run: the first on a new connection; this is the server.
    Connected(ServerKey),
    /// A batch skipped the check: another transaction held its row's lock.
    NotAttempted,
    /// A batch's reply: each flag's part, by flag.
    Batch(Vec<(u8, Reply)>),
}

/// [`Server`] as stored in a state (the database's identity after `n` failovers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// The timeline.
    pub timeline: u8,
    /// When that timeline began (true ns).
    pub started_ns: u64,
}

/// The leader-only work of a term (as in the simulator: `leadership run`'s command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Runs.
    Running,
    /// Told to stop: ends at any later moment (or is killed). `kill_at`: without the at-risk
    /// stop, the old `run` kills it a grace after telling it (true ns).
    Told {
        /// The kill, if one is scheduled apart from the deadline's.
        kill_at: Option<u64>,
    },
    /// Killed: gone before time moves on.
    Dying,
}

/// One process's core (with two flags, one of a process's two cores): the real core
/// (audited) behind the modelled driver. The driver's connection, statements and reply are
/// the process's, kept on its first core (the head).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proc {
    /// Its process's name: the `holder` it writes.
    pub name: String,
    /// Its monotonic clock.
    pub clock: Clock,
    /// The core; `None` while down (crashed, or exited after a close).
    pub core: Option<AuditedFlag>,
    /// Frozen (SIGSTOP): no timer, no reply, no notification is handled; the clock runs.
    pub paused: bool,
    /// The statement the driver waits for, and the local instant it gives up (the head's).
    pub inflight: Option<(Sent, Instant)>,
    /// Its statements in the network or held at the database (at most [`MAX_REQS`]).
    pub reqs: Vec<Req>,
    /// The reply on its way, if any.
    pub reply: Option<Reply>,
    /// The reply was held past a tick already.
    pub reply_late: bool,
    /// A notification on its way.
    pub notify: bool,
    /// The notification was held past a tick already.
    pub notify_late: bool,
    /// The database timeline its core heard of (0: none yet).
    pub known_timeline: u8,
    /// Raised by the commands handled (`Raise` … `Lower`): the judge's view without the
    /// local-deadline safeguard.
    pub belief: Belief,
    /// The latest lease's deadline (local): the work is killed then.
    pub lease_deadline: Instant,
    /// The leader-only work, until it has ended.
    pub work: Option<Work>,
    /// The work ended while the process was paused: its supervisor learns of it on resume.
    pub reap_pending: bool,
    /// The highest version this life has received (fencing judge).
    pub observed: Option<i64>,
    /// Whether its latest check showed the row (the delete fault's precondition).
    pub saw_row: bool,
    /// The fencing token of the term its work runs for (the work's `LEADERSHIP_TOKEN`).
    pub work_token: Option<i64>,
    /// With two flags, the head's: what its cores asked to send while a statement was on its
    /// way (flag and statement), sent when it is back.
    pub outbox: Vec<(u8, Op)>,
}

/// A transaction of a term's leader-only work on its way to the database (the user's effect):
/// it may arrive and commit at any later moment, as a congested link delivers it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Effect {
    /// The process whose work sent it.
    pub p: u8,
    /// The term's fencing token it was written with.
    pub token: i64,
    /// Whether it runs the fence first.
    pub fenced: bool,
    /// The database timeline it was sent to: after a failover it never runs.
    pub timeline: u8,
}

/// The most statements of one process the network holds at once; a further send loses the
/// oldest (a loss, charged to the budget if there is one, else the send waits: see events).
pub const MAX_REQS: usize = 2;

/// How many of the latest writes a failover may lose.
pub const LAG_WRITES: usize = 2;

/// What is left of each fault's budget on this path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Pauses.
    pub pauses: u8,
    /// Crashes.
    pub crashes: u8,
    /// Graceful closes.
    pub closes: u8,
    /// Failovers.
    pub failovers: u8,
    /// Failovers behind a transaction pooler (no reconnect, no `Connected`).
    pub poolers: u8,
    /// Operator deletes of the row.
    pub deletes: u8,
    /// Lost statements, replies or notifications.
    pub losses: u8,
    /// Messages held past a tick (slow network, a stalled database).
    pub lates: u8,
    /// Batches run while another transaction holds one of their rows' lock (the row skipped).
    pub rowlocks: u8,
    /// Faults of any kind above, in all: bounds the combinations.
    pub total: u8,
    /// Transactions the leader-only work may send (not a fault: outside `total`).
    pub writes: u8,
}

/// The whole world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World {
    /// True time in ticks.
    pub tick: u32,
    /// The processes' cores (`flags` per process, one after the other).
    pub procs: Vec<Proc>,
    /// Flags per process.
    pub flags: u8,
    /// Each flag's row in the primary's table (the reference table executes each statement).
    pub rows: Vec<Option<RefRow>>,
    /// The table before each of the latest writes (oldest first, at most [`LAG_WRITES`]): a
    /// failover promotes a standby that lacks some of them. Kept only while a failover is
    /// left in the budget.
    pub history: Vec<Vec<Option<RefRow>>>,
    /// The database's timeline (1 at start).
    pub timeline: u8,
    /// When the current primary started (true ns).
    pub db_started_ns: u64,
    /// Faults left.
    pub budget: Budget,
    /// The tick of the latest fault (liveness counts from there).
    pub quiet_since: u32,
    /// The fencing tokens raised so far, by flag.
    pub tokens: Vec<Tokens>,
    /// A failover or delete lost history: a token behind from a process that never saw the
    /// newer one is residue, not a violation.
    pub history_lost: bool,
    /// After a delete, nobody starts before this tick (as in the simulator).
    pub no_start_before: u32,
    /// The first broken property on this path (set by a step; the state is a counterexample).
    pub violation: Option<Violation>,
    /// The work's transactions on their way.
    pub effects: Vec<Effect>,
    /// The highest term each row has named (its term column), on any timeline: a term
    /// begins for the user's data when the check that starts it commits.
    pub newest_term: Vec<Option<i64>>,
    /// With `join-before-send` off, only within an event: the renew a returned batch carried
    /// for a core that did not know of it, which its driver does not send again when the
    /// core asks for it now; and whether it did.
    pub(super) swallow: Option<(usize, Check)>,
    pub(super) swallowed: bool,
}

impl World {
    /// The initial world: every process up at tick 0 with its clock rate (one per process),
    /// its first check emitted and carried out (sent).
    pub fn new(params: &Params, rates: &[i64]) -> World {
        let flags = params.flags;
        let procs = rates
            .iter()
            .enumerate()
            .flat_map(|(i, &ppm)| std::iter::repeat_n((i, ppm), flags))
            .map(|(i, ppm)| Proc {
                // Twins: r1 writes r0's name (the holder both write).
                name: format!("r{}", if params.sim.twins && i == 1 { 0 } else { i }),
                clock: Clock {
                    origin: 1_000_000_000_000 + i as u64 * 1_000_000_000,
                    ppm,
                },
                core: None,
                paused: false,
                inflight: None,
                reqs: Vec::new(),
                reply: None,
                reply_late: false,
                notify: false,
                notify_late: false,
                known_timeline: 0,
                belief: Belief::NONE,
                lease_deadline: Instant::ZERO,
                work: None,
                reap_pending: false,
                observed: None,
                saw_row: false,
                work_token: None,
                outbox: Vec::new(),
            })
            .collect();
        let mut w = World {
            tick: 0,
            procs,
            flags: flags as u8,
            rows: vec![None; flags],
            history: Vec::new(),
            timeline: 1,
            db_started_ns: 0,
            budget: params.budget,
            quiet_since: 0,
            tokens: vec![Tokens::default(); flags],
            history_lost: false,
            no_start_before: 0,
            violation: None,
            effects: Vec::new(),
            newest_term: vec![None; flags],
            swallow: None,
            swallowed: false,
        };
        for s in 0..rates.len() {
            w.start_set(params, s);
        }
        w.flush_all(params);
        w
    }

    /// The cores of process (set) `s`.
    pub fn set(&self, s: usize) -> std::ops::Range<usize> {
        let f = usize::from(self.flags);
        s * f..(s + 1) * f
    }

    /// The head of core `p`'s process: the core that keeps its driver's connection.
    pub fn head(&self, p: usize) -> usize {
        p - p % usize::from(self.flags)
    }

    /// The flag core `p` runs.
    pub fn flag(&self, p: usize) -> usize {
        p % usize::from(self.flags)
    }

    /// Core `p` as logs and violations name it: `r1` with one flag, `r1/f0` with two.
    pub fn label(&self, p: usize) -> String {
        let f = usize::from(self.flags);
        match f {
            1 => format!("r{p}"),
            _ => format!("r{}/f{}", p / f, p % f),
        }
    }

    /// True time in ns.
    pub fn t_ns(&self, params: &Params) -> u64 {
        u64::from(self.tick) * params.tick_ns
    }

    /// Process `p`'s clock now.
    pub fn local(&self, params: &Params, p: usize) -> Instant {
        self.procs[p].clock.local(self.t_ns(params))
    }

    /// The database's `now()`.
    pub fn db_now(&self, params: &Params) -> DbTime {
        crate::sim::clock::db_time(self.t_ns(params))
    }

    /// What a new connection hears about the server.
    pub fn server(&self, params: &Params) -> ServerKey {
        let _ = params;
        ServerKey {
            timeline: self.timeline,
            started_ns: self.db_started_ns,
        }
    }

    /// The core's view of a [`ServerKey`] at the current time.
    pub fn server_input(&self, params: &Params, key: ServerKey) -> Server {
        let t = self.t_ns(params);
        Server {
            system: Some(1),
            timeline: Some(u32::from(key.timeline)),
            started: Some(crate::sim::clock::db_time(key.started_ns)),
            durable: true,
            promoted_ago: (key.timeline > 1)
                .then(|| std::time::Duration::from_nanos(t.saturating_sub(key.started_ns))),
        }
    }

    /// The core's configuration for process `p`.
    pub fn config(params: &Params, name: &str) -> Config {
        params.sim.core_config(name)
    }

    /// Starts process `s`'s cores, fresh (a restart under the same name; at tick 0, its first
    /// flag's only: the second opens a tick later, see [`Params::batch`]).
    pub fn start_set(&mut self, params: &Params, s: usize) {
        let cores = match self.tick {
            0 => self.set(s).start..self.set(s).start + 1,
            _ => self.set(s),
        };
        for p in cores.clone() {
            self.start_core(params, p);
        }
        for p in cores {
            self.drain(params, p);
        }
    }

    /// A fresh core `p`.
    fn start_core(&mut self, params: &Params, p: usize) {
        let local = self.local(params, p);
        let config = World::config(params, &self.procs[p].name.clone());
        let pr = &mut self.procs[p];
        pr.core = Some(AuditedFlag::new(config, p as u64 + 1, local));
        pr.paused = false;
        pr.belief = Belief::NONE;
        pr.observed = None;
        pr.saw_row = false;
    }

    /// At tick 1, each running process opens its second flag (its renews then fall due a tick
    /// after the first's, inside the early window: see [`Params::batch`]).
    pub(super) fn open_second_flags(&mut self, params: &Params) {
        if self.tick != 1 || self.flags == 1 {
            return;
        }
        for s in 0..self.procs.len() / usize::from(self.flags) {
            let head = self.set(s).start;
            let open = self.procs[head]
                .core
                .as_ref()
                .is_some_and(|c| !c.flag().is_closed());
            for p in self.set(s).skip(1) {
                if open && self.procs[p].core.is_none() {
                    self.start_core(params, p);
                    // A paused process's driver sends it once resumed (`flush`).
                    self.procs[p].paused = self.procs[head].paused;
                    self.drain(params, p);
                }
            }
        }
    }

    /// Whether core `p` is up (not crashed, not exited).
    pub fn up(&self, p: usize) -> bool {
        self.procs[p].core.is_some()
    }

    /// Whether anything of core `p` waits on the network (a statement, a reply for a
    /// running driver, a notification): holding it while time moves on makes it late.
    pub fn waiting_messages(&self, p: usize) -> bool {
        let pr = &self.procs[p];
        !pr.reqs.is_empty() || (!pr.paused && (pr.reply.is_some() || pr.notify))
    }
}
