//! A Rust process with several flags (`SimConfig::flags`, issue 28) is a *set* of sibling
//! cores, one per flag, numbered one after the other (`r0`'s flags are cores `0..flags`):
//! each has its own [`RustProc`](super::process::RustProc) (its core, its work, its belief,
//! the judge's view), and the siblings share their machine: one clock, one pause, one crash,
//! one broken connection, one name as the holder. With one flag, a set is one process. Here:
//! which core is whose, and what the judge and the database keep per flag's row.

use std::collections::BTreeMap;

use super::process::Stmt;
use super::trace::Pid;
use crate::belief::Tokens;

/// The flag every process competes for (the first of each set's flags).
pub(super) const FLAG: &str = "sim";

/// What the judge and the database keep per flag's row.
#[derive(Clone, Debug, Default)]
pub(super) struct RowState {
    /// The row's name in the table.
    pub(super) name: String,
    /// Nobody has led the flag since this true time (`None`: someone leads).
    pub(super) leaderless_since: Option<u64>,
    /// Someone has led the flag.
    pub(super) led: bool,
    /// A graceful release of the row ran at the database at this time and nobody else leads
    /// yet.
    pub(super) handover_since: Option<(u64, Pid)>,
    /// The tokens raised on the row so far.
    pub(super) tokens: Tokens,
    /// Terms begun in the row (its holder or term column changed): a count.
    pub(super) epoch: u64,
    /// The epoch at which each Rust term began, by its token.
    pub(super) epoch_of_token: BTreeMap<i64, u64>,
    /// Another transaction holds the row's lock until then (the `rowlock` fault).
    pub(super) locked_until: u64,
    /// Statements that would write the row, waiting for that lock, with the `now()` of their
    /// start, in arrival order.
    pub(super) waiting: Vec<(Stmt, leadership_core::DbTime)>,
}

/// A batch on its way, held by a stall, or waiting for its reply: its members, one statement
/// each as the single check's would be (the same ids, timeouts and replies).
#[derive(Clone, Debug, Default)]
pub(super) struct Batch {
    /// The members.
    pub(super) members: Vec<Stmt>,
}

/// A statement a stalled database holds.
#[derive(Clone, Copy, Debug)]
pub(super) enum Held {
    /// One statement.
    One(Stmt),
    /// A batch (an index into `World::batches`).
    Batch(u32),
}

/// A set's driver in batch mode: what waits to go.
#[derive(Clone, Debug, Default)]
pub(super) struct SetDriver {
    /// Statements its cores asked for while one was on its way: the member and what it sends.
    pub(super) outbox: Vec<(Pid, super::trace::Op)>,
}

/// The name of flag `f`'s row: `sim`, then `sim.1`, `sim.2`, ….
pub(super) fn row_name(f: usize) -> String {
    match f {
        0 => FLAG.to_string(),
        f => format!("{FLAG}.{f}"),
    }
}
