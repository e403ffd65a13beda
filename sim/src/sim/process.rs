//! What every simulated process has (a clock, an incarnation, a connection, at most one
//! statement in flight), and the Rust process: the real core behind a modelled driver.
//!
//! The modelled driver does what the real ones do: it sends each `Check`/`Release` at once on
//! its one connection, gives up after `config.timeout()` by its local clock and replies
//! `Failed(Timeout)`, and drops a reply that arrives after that. A statement it gave up on may
//! still run at the database later, and so do the statements of a process that crashed.

use std::cell::Cell;

use leadership_core::audit::{AuditedFlag, Violation as Broken};
use leadership_core::{Command, Config, ContractError, DbTime, Flag, Input, Instant, Lease};

use super::clock::LocalClock;
use super::trace::Op;
use crate::belief::Belief;
use crate::check::Check;
use crate::table::{CheckResult, RefRow};

/// A statement on its way to the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stmt {
    /// The sender.
    pub who: u16,
    /// The sender's incarnation when it sent it.
    pub inc: u32,
    /// The sender's statement number.
    pub id: u64,
    /// What it does.
    pub op: Op,
    /// The timestamp a Go write sets (the `now()` the Go flag read first).
    pub ts: DbTime,
    /// The database's timeline when it was sent: one sent to a primary that failed over
    /// never arrives.
    pub timeline: u32,
}

/// A reply waiting to be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The check's row.
    Check(CheckResult),
    /// Whether the release changed the row.
    Released(bool),
    /// `select now()`.
    GoNow(DbTime),
    /// The Go flag's load.
    GoLoad(Option<RefRow>),
    /// Whether the Go flag's write changed the row (insert: no primary-key conflict).
    GoWrote(bool),
    /// The statement failed.
    Error,
    /// A batch skipped the check: another transaction held its row's lock.
    NotAttempted,
    /// The statement was not run: it was the first on a new connection, and this is the
    /// server it reached (the driver tells the core, which sends it again).
    Connected(leadership_core::Server),
}

/// The parts of a process the world manages, Rust and Go alike.
#[derive(Clone, Debug)]
pub struct Host {
    /// The process name: the `holder` it writes.
    pub name: String,
    /// Its local monotonic clock.
    pub clock: LocalClock,
    /// Bumped at every crash and exit: events of an earlier life are dropped.
    pub inc: u32,
    /// Running (not crashed, not exited).
    pub up: bool,
    /// Paused until this true time (SIGSTOP): its events wait until then.
    pub paused_until: u64,
    /// Every statement fails until this true time.
    pub conn_down_until: u64,
    /// Bumped when the timer is re-armed: older wake-ups are stale.
    pub gen: u64,
    /// The local instant the timer is armed for.
    pub armed: Option<Instant>,
    /// Statements sent so far (ids).
    pub next_id: u64,
    /// The statement the driver waits for.
    pub inflight: Option<(u64, Op)>,
    /// Its reply, once the database ran it.
    pub reply: Option<Reply>,
    /// The database timeline its core heard of (0: none yet): a statement on a newer one is
    /// answered with `Reply::Connected` first.
    pub known_timeline: u32,
}

impl Host {
    /// A process that has not started yet.
    pub fn new(name: String, clock: LocalClock) -> Host {
        Host {
            name,
            clock,
            inc: 0,
            up: false,
            paused_until: 0,
            conn_down_until: 0,
            gen: 0,
            armed: None,
            next_id: 0,
            inflight: None,
            reply: None,
            known_timeline: 0,
        }
    }

    /// Forgets everything of this life: a crash or an exit.
    pub fn die(&mut self) {
        self.up = false;
        self.inc += 1;
        self.gen += 1;
        self.armed = None;
        self.inflight = None;
        self.reply = None;
        self.paused_until = 0;
        self.known_timeline = 0;
    }

    /// Whether the process is paused at `t`.
    pub fn paused(&self, t: u64) -> bool {
        t < self.paused_until
    }
}

/// The core of a Rust process, plain or wrapped in the core's own auditor
/// ([`AuditedFlag`]: every promise of the core checked on every call, at some cost).
#[derive(Clone, Debug)]
pub struct Core {
    inner: Inner,
    /// The first promise the core broke, if audited.
    broken: Cell<Option<Broken>>,
}

// The plain core is the hot path, kept inline; the audited one is boxed as the cold case.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Inner {
    Plain(Flag),
    Audited(Box<AuditedFlag>),
}

impl Core {
    /// A fresh core (`Flag::new`), audited or not.
    pub fn new(config: Config, seed: u64, now: Instant, audit: bool) -> Core {
        let inner = if audit {
            Inner::Audited(Box::new(AuditedFlag::new(config, seed, now)))
        } else {
            Inner::Plain(Flag::new(config, seed, now))
        };
        Core {
            inner,
            broken: Cell::new(None),
        }
    }

    /// The flag, for queries.
    pub fn flag(&self) -> &Flag {
        match &self.inner {
            Inner::Plain(f) => f,
            Inner::Audited(a) => a.flag(),
        }
    }

    /// The first promise the core broke (audited cores only).
    pub fn broken(&self) -> Option<Broken> {
        self.broken.get()
    }

    fn note<T>(&self, r: Result<T, Broken>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(b) => {
                if self.broken.get().is_none() {
                    self.broken.set(Some(b));
                }
                None
            }
        }
    }

    /// `Flag::lease_at`.
    pub fn lease_at(&self, now: Instant) -> Option<Lease> {
        self.flag().lease_at(now)
    }

    /// `Flag::is_leader`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.flag().is_leader(now)
    }

    /// `Flag::handle_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.inner {
            Inner::Plain(f) => f.handle_timeout(now),
            Inner::Audited(a) => {
                let r = a.handle_timeout(now);
                self.note(r);
            }
        }
    }

    /// `Flag::handle_input`.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), ContractError> {
        match &mut self.inner {
            Inner::Plain(f) => f.handle_input(now, input),
            Inner::Audited(a) => {
                let r = a.handle_input(now, input);
                self.note(r).unwrap_or(Ok(()))
            }
        }
    }

    /// `Flag::poll_command`.
    pub fn poll_command(&mut self) -> Option<Command> {
        match &mut self.inner {
            Inner::Plain(f) => f.poll_command(),
            Inner::Audited(a) => {
                let r = a.poll_command();
                self.note(r).flatten()
            }
        }
    }

    /// `Flag::poll_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.inner {
            Inner::Plain(f) => f.poll_timeout(),
            Inner::Audited(a) => self.note(a.poll_timeout()).flatten(),
        }
    }
}

/// A Rust process: the core, and what the judge needs to know about it.
#[derive(Clone, Debug)]
pub struct RustProc {
    /// The shared parts.
    pub host: Host,
    /// The core; `None` while down.
    pub flag: Option<Core>,
    /// Raised by the commands handled so far (`Raise` … `Lower`): the judge's view with the
    /// local-deadline safeguard off.
    pub belief: Belief,
    /// What the judge said at the last event.
    pub leads: bool,
    /// While it leads: the local instant its belief ends unless renewed, so the end of a
    /// lapse between two events is known exactly.
    pub lead_until: Option<Instant>,
    /// Notifications handed to the core.
    pub notified: u64,
    /// The deadline of the latest lease raised or renewed (local): the work is killed then.
    pub lease_deadline: Instant,
    /// Bumped when the deadline moves: older deadline events are stale.
    pub deadline_gen: u64,
    /// The leader-only work of its latest term, until it has ended.
    pub work: Option<Work>,
    /// Numbers the work, so that an event of older work is not taken for newer.
    pub works: u64,
    /// The highest row version this life of the process has received: a token below it would
    /// go backwards for a process that knew better.
    pub observed: Option<i64>,
    /// Whether its latest check reply showed the row (the `delete` fault's precondition).
    pub saw_row: bool,
    /// With the `join-before-send` safeguard off: the statement (its id) that carries the
    /// renew the driver put into a batch for this core, unknown to the core, and that renew.
    /// Until it returns, the driver does not wake the core for it.
    pub joined: Option<(u64, Check)>,
}

/// The leader-only work of a term, modelled on `leadership run`'s command: a process group of
/// its own, so it runs on while its supervisor is paused. It starts when the term is raised.
/// It is told to stop (SIGTERM) when the lease is at risk, when leadership ends, and before a
/// release, and then ends after a time the seed draws (mostly quickly, sometimes longer than
/// the lease). At its lease's deadline it is killed (SIGKILL, by the supervisor or, while
/// that is frozen, by the watchdog), and is gone a kill latency later. A crash of its process
/// kills it at once (the parent-death signal); a close does not (it ends the work first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// Its number.
    pub id: u64,
    /// Told to stop: it ends by itself at this true time.
    pub stops_at: Option<u64>,
    /// Killed: it is gone at this true time.
    pub dies_at: Option<u64>,
    /// The fencing token of the term it runs for (its `LEADERSHIP_TOKEN`).
    pub token: Option<i64>,
}

impl Work {
    /// When it ends, if that is decided.
    pub fn ends_at(&self) -> Option<u64> {
        match (self.stops_at, self.dies_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl RustProc {
    /// A Rust process that has not started.
    pub fn new(host: Host) -> RustProc {
        RustProc {
            host,
            flag: None,
            belief: Belief::NONE,
            leads: false,
            lead_until: None,
            notified: 0,
            lease_deadline: Instant::ZERO,
            deadline_gen: 0,
            work: None,
            works: 0,
            observed: None,
            saw_row: false,
            joined: None,
        }
    }
}
