//! The reference table: an in-memory `leadership_flags` with PostgreSQL's semantics for the
//! statements in [`leadership_core::sql`], executed one at a time in arrival order (as the row
//! lock serialises them on a real server). The simulator runs on it; the driver tests check
//! it against a real server (same statement, same starting row, same result).

use std::collections::BTreeMap;

use leadership_core::{Checked, DbTime, Identity, Row, Server, WonBy};

/// One row. Fields are optional because a table created by hand may allow NULLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefRow {
    /// `holder`.
    pub holder: Option<String>,
    /// `version`.
    pub version: Option<i64>,
    /// `timestamp`.
    pub timestamp: Option<DbTime>,
    /// The term column ([`TERM_COLUMN`](leadership_core::sql::TERM_COLUMN)): the fencing token
    /// of the term the row's lease belongs to; `None` in a row the Go flag inserted.
    pub term: Option<i64>,
}

impl RefRow {
    /// A row with every field set, in the term won at `version`.
    pub fn new(holder: &str, version: i64, timestamp: DbTime) -> RefRow {
        RefRow {
            holder: Some(holder.to_string()),
            version: Some(version),
            timestamp: Some(timestamp),
            term: Some(version),
        }
    }
}

/// What [`sql::CHECK`](leadership_core::sql::CHECK) returns: its one row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckResult {
    /// `won`.
    pub won: bool,
    /// `found`: a row was there (before, or inserted by this statement).
    pub found: bool,
    /// The row after the statement if won, as of its start otherwise.
    pub row: Option<RefRow>,
    /// `now()`.
    pub now: DbTime,
    /// `won_by`.
    pub won_by: Option<WonBy>,
    /// The server that ran it (`system`, `timeline`, `started`, `durable`), or `None` where
    /// the caller models a statement that does not say (the server in the statement
    /// switched off).
    pub server: Option<Server>,
}

impl CheckResult {
    /// The core's view of this result, borrowing the holder.
    pub fn as_input(&self) -> Checked<'_> {
        Checked {
            won: self.won,
            won_by: self.won_by,
            row: self.row.as_ref().map(|r| Row {
                holder: r.holder.as_deref(),
                version: r.version,
                timestamp: r.timestamp,
            }),
            now: self.now,
            server: self.server,
        }
    }
}

/// The table: flag name → row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefTable {
    rows: BTreeMap<String, RefRow>,
    /// A new term's token is at least the server's clock in µs, as [`sql::CHECK`] writes it.
    /// Off (a model of the statement without it): `greatest(version + 1, floor)`, and an
    /// insert writes the floor, as before issue 25.
    ///
    /// [`sql::CHECK`]: leadership_core::sql::CHECK
    pub clock_floor: bool,
}

impl Default for RefTable {
    fn default() -> RefTable {
        RefTable {
            rows: BTreeMap::new(),
            clock_floor: true,
        }
    }
}

/// The parameters of [`sql::CHECK`](leadership_core::sql::CHECK), `$1` to `$11`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckArgs<'a> {
    /// `$1`.
    pub name: &'a str,
    /// `$2`.
    pub process: &'a str,
    /// `$3`.
    pub renew: Option<i64>,
    /// `$4`.
    pub lease_micros: i64,
    /// `$5`.
    pub floor: i64,
    /// `$6`.
    pub may_take: bool,
    /// `$7`.
    pub may_insert: bool,
    /// `$8`.
    pub continues: Option<i64>,
    /// `$9`, `$10`, `$11`.
    pub expect: Option<Identity>,
}

/// The server the reference table's statements run on when a test names none: durable,
/// timeline 1, started at the Unix epoch.
pub const DEFAULT_SERVER: Server = Server {
    system: Some(1),
    timeline: Some(1),
    started: Some(DbTime::UNIX_EPOCH),
    durable: true,
    promoted_ago: None,
};

impl RefTable {
    /// An empty table.
    pub fn new() -> RefTable {
        RefTable::default()
    }

    /// An empty table whose statements do not raise a new term's token to the clock (the
    /// statement before issue 25): what the tests of other rules compare exact versions with.
    pub fn without_clock_floor() -> RefTable {
        let mut table = RefTable::new();
        table.clock_floor = false;
        table
    }

    /// Sets a row as an operator would by hand (odd rows included).
    pub fn put(&mut self, name: &str, row: RefRow) {
        self.rows.insert(name.to_string(), row);
    }

    /// Deletes a row.
    pub fn delete(&mut self, name: &str) {
        self.rows.remove(name);
    }

    /// The row of a flag.
    pub fn get(&self, name: &str) -> Option<&RefRow> {
        self.rows.get(name)
    }

    /// All rows, by name.
    pub fn rows(&self) -> impl Iterator<Item = (&str, &RefRow)> {
        self.rows.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Executes [`sql::CHECK`](leadership_core::sql::CHECK) at database time `now` on
    /// [`DEFAULT_SERVER`], expecting no server in particular, with its other parameters: the
    /// version to renew, the lease, the floor (`$5`: the lowest version a win may write), may
    /// take (`$6`: whether an expired row may be taken over; a renew is allowed either way),
    /// may insert (`$7`: whether a missing row may be inserted) and the term a renew
    /// continues (`$8`).
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        now: DbTime,
        name: &str,
        process: &str,
        renew: Option<i64>,
        lease_micros: i64,
        floor: i64,
        may_take: bool,
        may_insert: bool,
        continues: Option<i64>,
    ) -> CheckResult {
        let args = CheckArgs {
            name,
            process,
            renew,
            lease_micros,
            floor,
            may_take,
            may_insert,
            continues,
            expect: None,
        };
        self.check_on(now, &DEFAULT_SERVER, &args)
    }

    /// Executes [`sql::CHECK`](leadership_core::sql::CHECK) at database time `now` on
    /// `server` (what the statement computes about the server it runs on).
    pub fn check_on(&mut self, now: DbTime, server: &Server, a: &CheckArgs<'_>) -> CheckResult {
        let (same, settled) = allowed(now, server, a);
        let clock = now.as_unix_micros();
        let reply = |won: bool, row: Option<RefRow>, won_by: Option<WonBy>| CheckResult {
            won,
            found: row.is_some(),
            row,
            now,
            won_by,
            server: Some(*server),
        };
        let Some(row) = self.rows.get_mut(a.name) else {
            if !a.may_insert || !same || !settled {
                return reply(false, None, None);
            }
            let version = match self.clock_floor {
                true => a.floor.max(clock),
                false => a.floor,
            };
            let row = RefRow::new(a.process, version, now);
            self.rows.insert(a.name.to_string(), row.clone());
            return reply(true, Some(row), Some(WonBy::Created));
        };
        if !wins(row, now, a, same, settled) {
            return reply(false, Some(row.clone()), None);
        }
        let renewable = renewable(row, a);
        let v = row.version.unwrap_or_default(); // wins: incrementable, so NOT NULL
                                                 // A renew to the next version that says which term it continues keeps the term;
                                                 // every other win starts a new one, at a token that follows the clock.
        let continuing = renewable && a.floor <= v + 1 && a.continues.is_some();
        let next = match (continuing, self.clock_floor) {
            (true, _) => v + 1,
            (false, true) => (v + 1).max(a.floor).max(clock),
            (false, false) => (v + 1).max(a.floor),
        };
        row.term = match a.continues {
            Some(term) if continuing => Some(term),
            _ => Some(next),
        };
        row.version = Some(next);
        row.holder = Some(a.process.to_string());
        row.timestamp = Some(now);
        let won_by = match renewable {
            true => WonBy::Renewed,
            false => WonBy::TookOver,
        };
        reply(true, Some(row.clone()), Some(won_by))
    }

    /// Whether the check's `UPDATE` would write the row as it stands: the row exists and
    /// passes [`sql::CHECK`]'s condition. Those are the rows it locks, so the rows it waits
    /// for while another transaction holds their lock, and the rows
    /// [`sql::CHECK_BATCH`] locks (`candidates`) and skips when another transaction holds
    /// them. A check that would not write locks nothing and waits for nobody.
    ///
    /// [`sql::CHECK`]: leadership_core::sql::CHECK
    /// [`sql::CHECK_BATCH`]: leadership_core::sql::CHECK_BATCH
    pub fn would_update(&self, now: DbTime, server: &Server, a: &CheckArgs<'_>) -> bool {
        let (same, settled) = allowed(now, server, a);
        self.rows
            .get(a.name)
            .is_some_and(|row| wins(row, now, a, same, settled))
    }

    /// Executes [`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH) at database time `now`
    /// on `server`: the checks of one process's flags (distinct names) in one statement.
    /// Each flag gets exactly what [`check_on`](RefTable::check_on) would give it alone at
    /// the same `now`, except that a row [`would_update`](RefTable::would_update) would
    /// write while `locked` says another transaction holds its lock is skipped: not
    /// attempted, not won, the row as it stands (the snapshot's). One row per check, in order.
    pub fn check_batch_on(
        &mut self,
        now: DbTime,
        server: &Server,
        checks: &[CheckArgs<'_>],
        locked: impl Fn(&str) -> bool,
    ) -> Vec<BatchRow> {
        checks
            .iter()
            .map(|a| {
                if locked(a.name) && self.would_update(now, server, a) {
                    let row = self.rows.get(a.name).cloned();
                    return BatchRow {
                        attempted: false,
                        result: CheckResult {
                            won: false,
                            found: row.is_some(),
                            row,
                            now,
                            won_by: None,
                            server: Some(*server),
                        },
                    };
                }
                BatchRow {
                    attempted: true,
                    result: self.check_on(now, server, a),
                }
            })
            .collect()
    }

    /// Whether [`sql::RELEASE`](leadership_core::sql::RELEASE) would write the row (and so
    /// wait for its lock): it names `process` at `version`.
    pub fn would_release(&self, name: &str, process: &str, version: i64) -> bool {
        self.rows.get(name).is_some_and(|row| {
            row.holder.as_deref() == Some(process)
                && row.version == Some(version)
                && version < i64::MAX
        })
    }

    /// Executes [`sql::FENCE`](leadership_core::sql::FENCE) at database time `now` (its
    /// `clock_timestamp()`): whether the transaction may go on, that is whether the row names
    /// `process` in term `token` with a live lease. The lock it takes is the simulator's to
    /// model (no write commits while a fenced transaction is open).
    pub fn fence(
        &self,
        now: DbTime,
        name: &str,
        process: &str,
        token: i64,
        lease_micros: i64,
    ) -> bool {
        self.rows.get(name).is_some_and(|row| {
            row.holder.as_deref() == Some(process)
                && row.term == Some(token)
                && row.timestamp.is_some_and(|t| {
                    t < DbTime::INFINITY
                        && t >= DbTime::from_unix_micros(
                            now.as_unix_micros().saturating_sub(lease_micros),
                        )
                })
        })
    }

    /// Executes [`sql::RELEASE`](leadership_core::sql::RELEASE); returns whether a row was
    /// released (and a notification sent).
    pub fn release(&mut self, name: &str, process: &str, version: i64) -> bool {
        if !self.would_release(name, process, version) {
            return false;
        }
        let row = self
            .rows
            .get_mut(name)
            .expect("would_release: the row exists");
        row.version = row.version.map(|v| v + 1);
        row.timestamp = Some(DbTime::UNIX_EPOCH);
        true
    }
}

/// One flag's row of [`sql::CHECK_BATCH`](leadership_core::sql::CHECK_BATCH)'s reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BatchRow {
    /// `attempted`: false when the row was skipped because another transaction held its lock
    /// (the core is told [`Failure::NotAttempted`](leadership_core::Failure::NotAttempted)).
    pub attempted: bool,
    /// The single check's columns: what [`RefTable::check_on`] returns, or, not attempted,
    /// the row as it stood and not won.
    pub result: CheckResult,
}

/// The statement's `allowed`: whether `server` is the one the check expects (`same`) and
/// may take or insert (`settled`: durable, or started a lease ago by `now`).
fn allowed(now: DbTime, server: &Server, a: &CheckArgs<'_>) -> (bool, bool) {
    let same = a
        .expect
        .is_none_or(|e| e.system.is_none() || e == server.identity());
    // A server that may have lost commits in a crash takes nothing for a lease from its
    // start: `durable OR started <= now() - lease`.
    let settled = server.durable
        || server.started.is_some_and(|s| {
            s <= DbTime::from_unix_micros(now.as_unix_micros().saturating_sub(a.lease_micros))
        });
    (same, settled)
}

/// The row names the process at the version to renew (SQL's three-valued logic: a
/// comparison with NULL is not true).
fn renewable(row: &RefRow, a: &CheckArgs<'_>) -> bool {
    row.holder.as_deref() == Some(a.process) && row.version.is_some() && row.version == a.renew
}

/// The `UPDATE`'s condition (`WINS` in `sql/check.rs`) on `row`.
fn wins(row: &RefRow, now: DbTime, a: &CheckArgs<'_>, same: bool, settled: bool) -> bool {
    // `timestamp < now() - lease`; `now() - lease` saturates like PostgreSQL's infinities.
    let expired = row.timestamp.is_some_and(|t| {
        t < DbTime::from_unix_micros(now.as_unix_micros().saturating_sub(a.lease_micros))
    });
    let incrementable = row.version.is_some_and(|v| v < i64::MAX);
    same && incrementable && (renewable(row, a) || (a.may_take && settled && expired))
}

#[cfg(test)]
mod tests;
