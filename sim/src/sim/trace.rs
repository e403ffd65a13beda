//! The event log: compact records, a ring of the latest ones for failure reports, an optional
//! full log, a digest of everything, and the readable form of each record.
//!
//! Records are plain data and formatted only when shown, so recording costs a copy, not a
//! `format!`. The digest (FNV-1a over every record) is what the determinism test compares.

use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};

use leadership_core::{Anomaly, LowerReason, WonBy};

use crate::check::Check;

/// How many of the latest records a failure report shows.
pub const RING: usize = 64;

/// Who an event is about.
pub type Pid = u16;

/// A statement, as the trace names it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// The Rust check, as sent.
    Check(Check),
    /// The Rust release.
    Release {
        /// The version released.
        version: i64,
    },
    /// The Go flag's `select now()`.
    GoNow,
    /// The Go flag's load of the row.
    GoLoad,
    /// The Go flag's insert at its `now`.
    GoInsert,
    /// The Go flag's renew (compare-and-set on holder and version).
    GoUpdateTimestamp {
        /// The version read.
        version: i64,
    },
    /// The Go flag's takeover (compare-and-set on version).
    GoUpdateHolder {
        /// The version read.
        version: i64,
    },
}

/// A check reads `Check { renew: …, … }` in the trace, as it did when its fields were the
/// variant's own.
impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Check(check) => fmt::Debug::fmt(check, f),
            Op::Release { version } => f.debug_struct("Release").field("version", version).finish(),
            Op::GoNow => f.write_str("GoNow"),
            Op::GoLoad => f.write_str("GoLoad"),
            Op::GoInsert => f.write_str("GoInsert"),
            Op::GoUpdateTimestamp { version } => f
                .debug_struct("GoUpdateTimestamp")
                .field("version", version)
                .finish(),
            Op::GoUpdateHolder { version } => f
                .debug_struct("GoUpdateHolder")
                .field("version", version)
                .finish(),
        }
    }
}

/// What a statement did at the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It changed the row; the row's version after.
    Wrote(i64),
    /// It changed nothing; the row's version, if any.
    Unchanged(Option<i64>),
    /// It only read.
    Read,
    /// It failed (stall that ends in an error, broken connection).
    Error,
    /// A batch skipped it: another transaction held the row's lock.
    NotAttempted,
    /// It waits for the row's lock, which another transaction holds.
    Waits,
}

/// One thing that happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum What {
    /// A process started (or restarted) with a fresh core.
    Start,
    /// A statement left the process.
    Send(Op),
    /// A statement ran at the database.
    Exec(Op, Outcome),
    /// A reply reached the process and was handed to it.
    Reply(Op),
    /// A message was lost on the way.
    Lost,
    /// The driver gave up on a statement after the timeout.
    Timeout,
    /// A notification reached the process.
    Notified,
    /// The core raised (Rust) with this fencing token.
    Raise(i64, WonBy),
    /// The core renewed up to this version.
    Renewed(i64),
    /// The core lowered.
    Lower(LowerReason),
    /// The core reported an anomaly.
    Anomaly(Anomaly),
    /// The judge's view of this process changed: it now leads (true) or not.
    Leads(bool),
    /// The Go model raised (true) or lowered (false) its flag.
    GoRaised(bool),
    /// The process is paused until the given true time.
    Pause(u64),
    /// The process crashed; it restarts at the given true time.
    Crash(u64),
    /// The process was asked to close.
    Close,
    /// The core finished closing; the process exits and comes back at the given time.
    Closed(u64),
    /// The database stalls until the given time; then the held statements fail (true) or run.
    Stall(u64, bool),
    /// The stall ended.
    StallEnd,
    /// The process's connection fails every statement until the given time.
    ConnDown(u64),
    /// Messages are lost with this probability (ppm) until the given time.
    Loss(u64, u64),
    /// Replies are slow (up to the given ns) until the given time.
    Slow(u64, u64),
    /// The process's clock now runs at this rate error (ppm).
    Drift(i64),
    /// The process's clock stepped forward by this many ns.
    Step(u64),
    /// The database's clock stepped forward by this many ns.
    DbStep(u64),
    /// The database failed over to a standby this many ns behind.
    Failover(u64),
    /// An operator deleted the flag's row.
    Delete,
    /// The precheck answered (only refusals and errors are shown in the timeline).
    Precheck(leadership_core::Precheck),
    /// The lease is at risk: no renew has won by its at-risk instant.
    AtRisk,
    /// The leader-only work was told to stop (SIGTERM); it stops at the given true time.
    StopWork(u64),
    /// The leader-only work was killed at its lease's deadline (SIGKILL).
    KillWork,
    /// The leader-only work ended (the driver then tells the core `WorkStopped`).
    WorkStopped,
    /// The process's driver sends its next statement as a batch of this many checks; each
    /// member's `Send` follows.
    Batch(u16),
    /// The core joined a batch early (`Input::Batching`): its renew goes now.
    Joins,
    /// Another transaction holds this core's flag's row lock until the given time.
    RowLock(u64),
}

/// One record: when (true ns), who, what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// True time in ns.
    pub t: u64,
    /// The process (`u16::MAX` for the database).
    pub who: Pid,
    /// What happened.
    pub what: What,
}

/// The database, in [`Record::who`].
pub const DB: Pid = Pid::MAX;

/// A fixed, word-at-a-time hasher (FNV-1a's constants, one multiply per word), so the digest
/// does not depend on a random hasher state and costs little on the hot path.
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

impl Fnv {
    #[inline]
    fn word(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.word(u64::from(*b));
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.word(u64::from(x));
    }
    fn write_u16(&mut self, x: u16) {
        self.word(u64::from(x));
    }
    fn write_u32(&mut self, x: u32) {
        self.word(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.word(x);
    }
    fn write_i64(&mut self, x: i64) {
        self.word(x as u64);
    }
    fn write_usize(&mut self, x: usize) {
        self.word(x as u64);
    }
    fn write_isize(&mut self, x: isize) {
        self.word(x as u64);
    }
}

/// The log of one run.
#[derive(Clone, Debug)]
pub struct Trace {
    ring: Box<[Record; RING]>,
    len: usize,
    digest: Fnv,
    full: Option<Vec<Record>>,
    notable: Vec<Record>,
    names: Vec<String>,
}

impl Trace {
    /// A log for processes named `names`; `full` keeps every record (tests, `--trace`).
    pub fn new(names: Vec<String>, full: bool) -> Trace {
        let blank = Record {
            t: 0,
            who: DB,
            what: What::StallEnd,
        };
        Trace {
            ring: Box::new([blank; RING]),
            len: 0,
            digest: Fnv(0xcbf2_9ce4_8422_2325),
            full: full.then(|| Vec::with_capacity(1 << 16)),
            notable: Vec::with_capacity(256),
            names,
        }
    }

    /// Records one event.
    #[inline]
    pub fn push(&mut self, t: u64, who: Pid, what: What) {
        let r = Record { t, who, what };
        self.ring[self.len % RING] = r;
        self.len += 1;
        r.hash(&mut self.digest);
        if let Some(full) = &mut self.full {
            full.push(r);
        }
        if is_notable(&what) {
            self.notable.push(r);
        }
    }

    /// How many records were pushed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of every record so far.
    pub fn digest(&self) -> u64 {
        self.digest.0
    }

    /// The latest records, oldest first (at most [`RING`]).
    pub fn last(&self, n: usize) -> Vec<Record> {
        let n = n.min(RING).min(self.len);
        (self.len - n..self.len)
            .map(|i| self.ring[i % RING])
            .collect()
    }

    /// Every record, if the full log was kept.
    pub fn full(&self) -> Option<&[Record]> {
        self.full.as_deref()
    }

    /// The records worth a timeline: leadership changes and faults.
    pub fn notable(&self) -> &[Record] {
        &self.notable
    }

    /// The process names, by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// One record in readable form.
    pub fn line(&self, r: &Record) -> String {
        let mut s = String::with_capacity(64);
        let who = if r.who == DB {
            "db"
        } else {
            self.names
                .get(usize::from(r.who))
                .map_or("?", String::as_str)
        };
        let _ = write!(s, "{:>10}  {:<4} {}", Secs(r.t), who, Describe(&r.what));
        s
    }

    /// Records in readable form, one a line.
    pub fn render(&self, records: &[Record]) -> String {
        let mut out = String::new();
        for r in records {
            out.push_str(&self.line(r));
            out.push('\n');
        }
        out
    }
}

fn is_notable(what: &What) -> bool {
    !matches!(
        what,
        What::Send(_)
            | What::Exec(..)
            | What::Reply(_)
            | What::Renewed(_)
            | What::Notified
            | What::Lost
            | What::Timeout
            | What::Start
            | What::Drift(_)
            | What::Precheck(leadership_core::Precheck::Pass)
            | What::Batch(_)
            | What::Joins
    )
}

/// True nanoseconds as seconds with milliseconds.
pub struct Secs(pub u64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 / 1_000_000;
        let s = format!("{}.{:03}s", ms / 1000, ms % 1000);
        f.pad(&s)
    }
}

struct Describe<'a>(&'a What);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            What::Start => write!(f, "starts (fresh core)"),
            What::Send(op) => write!(f, "sends {op:?}"),
            What::Exec(op, out) => write!(f, "db runs {op:?}: {out:?}"),
            What::Reply(op) => write!(f, "gets the reply to {op:?}"),
            What::Lost => write!(f, "message lost"),
            What::Timeout => write!(f, "driver timeout: Failed(Timeout)"),
            What::Notified => write!(f, "notified: flag released"),
            What::Raise(token, by) => write!(f, "Raise token {token} ({by:?})"),
            What::Renewed(v) => write!(f, "Renewed at version {v}"),
            What::Lower(reason) => write!(f, "Lower ({reason:?})"),
            What::Anomaly(a) => write!(f, "Anomaly {a:?}"),
            What::Leads(true) => write!(f, "LEADS"),
            What::Leads(false) => write!(f, "no longer leads"),
            What::GoRaised(true) => write!(f, "go flag RAISED"),
            What::GoRaised(false) => write!(f, "go flag lowered"),
            What::Pause(until) => write!(f, "PAUSED until {}", Secs(until)),
            What::Crash(until) => write!(f, "CRASHED, restarts at {}", Secs(until)),
            What::Close => write!(f, "close() asked"),
            What::AtRisk => write!(f, "lease at risk: no renew has won"),
            What::Failover(lag) => write!(f, "FAILOVER to a standby {} behind", Secs(lag)),
            What::Delete => write!(f, "DELETE of the flag's row"),
            What::StopWork(at) => write!(f, "work told to stop; stops at {}", Secs(at)),
            What::KillWork => write!(f, "work killed at the deadline"),
            What::WorkStopped => write!(f, "work ended"),
            What::Closed(until) => write!(f, "closed; comes back at {}", Secs(until)),
            What::Stall(until, fail) => write!(
                f,
                "database STALLS until {}, then {}",
                Secs(until),
                if fail { "fails them" } else { "runs them" }
            ),
            What::StallEnd => write!(f, "database stall ends"),
            What::ConnDown(until) => write!(f, "connection FAILS until {}", Secs(until)),
            What::Loss(until, ppm) => {
                write!(
                    f,
                    "messages lost at {}% until {}",
                    ppm / 10_000,
                    Secs(until)
                )
            }
            What::Slow(until, max) => {
                write!(
                    f,
                    "slow network (up to {}) until {}",
                    Secs(max),
                    Secs(until)
                )
            }
            What::Drift(ppm) => write!(f, "clock rate error now {ppm} ppm"),
            What::Step(ns) => write!(f, "clock steps forward {} µs", ns / 1000),
            What::DbStep(ns) => write!(f, "database clock steps forward {} µs", ns / 1000),
            What::Precheck(answer) => write!(f, "precheck: {answer:?}"),
            What::Batch(n) => write!(f, "sends a batch of {n} checks:"),
            What::Joins => write!(f, "joins the batch early (Batching): renews now"),
            What::RowLock(until) => {
                write!(
                    f,
                    "its row LOCKED by another transaction until {}",
                    Secs(until)
                )
            }
        }
    }
}
