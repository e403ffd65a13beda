//! The Go flag (`leadership.Flag` of ocm-sdk-go, /work/shared/reference/flag.go) as a rival
//! actor, step for step.
//!
//! Each check, when its timer fires: `select now()` (its own statement and round trip), load
//! the row, then one of: insert it (version 0, `timestamp` = that `now`) if absent; renew it
//! (`update … where holder = me and version = v`, `timestamp` = that `now`) if it names this
//! process; take it over (`update … where version = v`) if `now - timestamp > interval`.
//! `Raised()` turns true on a write that changed one row, false on a conflict, an error, or a
//! lease found live; it keeps its value until the next check, however late. The next check
//! comes after interval/2 on success or conflict, interval/10 after an error, each ±jitter.
//! Each statement has the timeout; a timed-out statement may still run at the database.
//! `Close()` only stops the loop (no release), so a closing Go process is modelled as exiting.

use std::time::Duration;

use leadership_core::DbTime;

use super::process::{Host, Reply};
use super::rng::SimRng;
use super::trace::Op;
use crate::table::{RefRow, RefTable};

/// Where the Go flag is in its check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoStep {
    /// Waiting for its timer.
    Idle,
    /// Waiting for `select now()`.
    Now,
    /// Waiting for the row.
    Load,
    /// Waiting for its write.
    Write,
}

/// What the Go flag does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoNext {
    /// Send this statement (Go writes carry the `now` read first).
    Send(Op, DbTime),
    /// Sleep this long (local clock), then check.
    Sleep(Duration),
}

/// One Go process.
#[derive(Clone, Debug)]
pub struct GoProc {
    /// The shared parts.
    pub host: Host,
    /// `Raised()`.
    pub raised: bool,
    /// Where it is in its check.
    pub step: GoStep,
    /// The `now` its current check read.
    pub now_read: DbTime,
    /// `math/rand` for the jitter.
    pub rng: SimRng,
    /// Checks started.
    pub checks: u64,
}

impl GoProc {
    /// A Go process that has not started.
    pub fn new(host: Host, rng: SimRng) -> GoProc {
        GoProc {
            host,
            raised: false,
            step: GoStep::Idle,
            now_read: DbTime::UNIX_EPOCH,
            rng,
            checks: 0,
        }
    }

    /// A fresh start (`Build`): lowered, its timer fires at once.
    pub fn start(&mut self) {
        self.raised = false;
        self.step = GoStep::Idle;
    }

    /// The timer fired: start a check (`select now()`).
    pub fn on_timer(&mut self) -> GoNext {
        self.checks += 1;
        self.step = GoStep::Now;
        GoNext::Send(Op::GoNow, DbTime::UNIX_EPOCH)
    }

    /// A statement's reply (`Reply::Error` for errors and timeouts).
    pub fn on_reply(&mut self, reply: Reply, interval: Duration, jitter: f64) -> GoNext {
        let check = interval / 2;
        let retry = interval / 10;
        match (self.step, reply) {
            (_, Reply::Error) => {
                self.raised = false;
                self.sleep(retry, jitter)
            }
            (GoStep::Now, Reply::GoNow(now)) => {
                self.now_read = now;
                self.step = GoStep::Load;
                GoNext::Send(Op::GoLoad, now)
            }
            (GoStep::Load, Reply::GoLoad(None)) => {
                self.step = GoStep::Write;
                GoNext::Send(Op::GoInsert, self.now_read)
            }
            (GoStep::Load, Reply::GoLoad(Some(row))) => {
                let (Some(holder), Some(version), Some(ts)) =
                    (row.holder.as_deref(), row.version, row.timestamp)
                else {
                    // lib/pq cannot scan a NULL into string/int64/time: an error.
                    self.raised = false;
                    return self.sleep(retry, jitter);
                };
                if holder == self.host.name {
                    self.step = GoStep::Write;
                    return GoNext::Send(Op::GoUpdateTimestamp { version }, self.now_read);
                }
                // `excess := now.Sub(timestamp) - f.renewInterval; if excess > 0`.
                let age = self.now_read.micros_since(ts);
                if age > interval.as_micros() as i64 {
                    self.step = GoStep::Write;
                    return GoNext::Send(Op::GoUpdateHolder { version }, self.now_read);
                }
                self.raised = false;
                self.sleep(check, jitter)
            }
            (GoStep::Write, Reply::GoWrote(changed)) => {
                self.raised = changed;
                self.sleep(check, jitter)
            }
            (step, reply) => unreachable!("Go model got {reply:?} while in {step:?}"),
        }
    }

    /// `schedule(d)`: `d + d × jitter × (1 - 2 × rand.Float64())`.
    fn sleep(&mut self, d: Duration, jitter: f64) -> GoNext {
        self.step = GoStep::Idle;
        let jitter_ppm = (jitter * 1e6) as i128;
        let u = self.rng.below(1_000_000) as i128; // rand.Float64() in ppm
        let d_ns = d.as_nanos() as i128;
        let delta = d_ns * jitter_ppm * (1_000_000 - 2 * u) / 1_000_000_000_000;
        GoNext::Sleep(Duration::from_nanos((d_ns + delta).max(0) as u64))
    }
}

/// The Go flag's `loadState`.
pub fn load(table: &RefTable, name: &str) -> Option<RefRow> {
    table.get(name).cloned()
}

/// The Go flag's `createState`: a plain insert; a primary-key conflict (23505) means "not
/// created".
pub fn insert(table: &mut RefTable, name: &str, process: &str, ts: DbTime) -> bool {
    if table.get(name).is_some() {
        return false;
    }
    // The Go flag names its four columns: the term column stays NULL.
    table.put(
        name,
        RefRow {
            term: None,
            ..RefRow::new(process, 0, ts)
        },
    );
    true
}

/// The Go flag's `updateTimestamp`: `set version = v + 1, timestamp = ts where name, holder =
/// me, version = v`.
pub fn update_timestamp(
    table: &mut RefTable,
    name: &str,
    process: &str,
    version: i64,
    ts: DbTime,
) -> bool {
    match table.get(name) {
        Some(row) if row.holder.as_deref() == Some(process) && row.version == Some(version) => {
            let term = row.term;
            table.put(
                name,
                RefRow {
                    term,
                    ..RefRow::new(process, version + 1, ts)
                },
            );
            true
        }
        _ => false,
    }
}

/// The Go flag's `updateHolder`: `set version = v + 1, holder = me, timestamp = ts where name,
/// version = v` (no expiry test at the database: it was judged on the earlier read).
pub fn update_holder(
    table: &mut RefTable,
    name: &str,
    process: &str,
    version: i64,
    ts: DbTime,
) -> bool {
    match table.get(name) {
        Some(row) if row.version == Some(version) => {
            // The term column is left as it was: the holder, which the fence compares, changed.
            let term = row.term;
            table.put(
                name,
                RefRow {
                    term,
                    ..RefRow::new(process, version + 1, ts)
                },
            );
            true
        }
        _ => false,
    }
}
