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
        let same = a
            .expect
            .is_none_or(|e| e.system.is_none() || e == server.identity());
        // A server that may have lost commits in a crash takes nothing for a lease from its
        // start: `durable OR started <= now() - lease`.
        let settled = server.durable
            || server.started.is_some_and(|s| {
                s <= DbTime::from_unix_micros(now.as_unix_micros().saturating_sub(a.lease_micros))
            });
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
        let seen = row.clone();
        // SQL's three-valued logic: a comparison with NULL is not true.
        let renewable = row.holder.as_deref() == Some(a.process)
            && row.version.is_some()
            && row.version == a.renew;
        // `timestamp < now() - lease`; `now() - lease` saturates like PostgreSQL's infinities.
        let expired = row.timestamp.is_some_and(|t| {
            t < DbTime::from_unix_micros(now.as_unix_micros().saturating_sub(a.lease_micros))
        });
        let incrementable = row.version.is_some_and(|v| v < i64::MAX);
        if same && incrementable && (renewable || (a.may_take && settled && expired)) {
            let v = row.version.unwrap_or_default(); // incrementable: NOT NULL
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
            return reply(true, Some(row.clone()), Some(won_by));
        }
        reply(false, Some(seen), None)
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
        match self.rows.get_mut(name) {
            Some(row)
                if row.holder.as_deref() == Some(process)
                    && row.version == Some(version)
                    && version < i64::MAX =>
            {
                row.version = row.version.map(|v| v + 1);
                row.timestamp = Some(DbTime::UNIX_EPOCH);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: i64 = 2_000_000;

    fn t(us: i64) -> DbTime {
        DbTime::from_unix_micros(1_700_000_000_000_000 + us)
    }

    fn args<'a>(process: &'a str, renew: Option<i64>, continues: Option<i64>) -> CheckArgs<'a> {
        CheckArgs {
            name: "f",
            process,
            renew,
            lease_micros: LEASE,
            floor: 0,
            may_take: true,
            may_insert: true,
            continues,
            expect: Some(DEFAULT_SERVER.identity()),
        }
    }

    #[test]
    fn new_terms_follow_the_clock_and_renewals_add_one() {
        let mut table = RefTable::new();
        let s = DEFAULT_SERVER;
        let r = table.check_on(t(0), &s, &args("a", None, None));
        let clock = t(0).as_unix_micros();
        assert_eq!((r.won, r.won_by), (true, Some(WonBy::Created)));
        assert_eq!(r.row, Some(RefRow::new("a", clock, t(0))));
        let r = table.check_on(t(10), &s, &args("a", Some(clock), Some(clock)));
        assert_eq!(r.won_by, Some(WonBy::Renewed));
        assert_eq!(
            r.row.map(|r| (r.version, r.term)),
            Some((Some(clock + 1), Some(clock)))
        );
        // A renew of a lapsed lease of ours (no term to continue) is a new term.
        let r = table.check_on(t(20), &s, &args("a", Some(clock + 1), None));
        assert_eq!(r.won_by, Some(WonBy::Renewed));
        assert_eq!(r.row.unwrap().version, Some(t(20).as_unix_micros()));
        let r = table.check_on(t(21 + LEASE), &s, &args("b", None, None));
        assert_eq!(r.won_by, Some(WonBy::TookOver));
        assert_eq!(r.row.unwrap().version, Some(t(21 + LEASE).as_unix_micros()));
    }

    #[test]
    fn another_server_changes_nothing_and_says_which_it_is() {
        let mut table = RefTable::new();
        let s = DEFAULT_SERVER;
        table.check_on(t(0), &s, &args("a", None, None));
        let promoted = Server {
            timeline: Some(2),
            ..s
        };
        let before = table.clone();
        let r = table.check_on(t(1 + LEASE), &promoted, &args("b", None, None));
        assert!(!r.won && r.server == Some(promoted) && table == before);
        let mut fresh = RefTable::new();
        let r = fresh.check_on(t(0), &promoted, &args("a", None, None));
        assert!(!r.won && fresh.get("f").is_none(), "no insert either");
        let unknown = CheckArgs {
            expect: None,
            ..args("b", None, None)
        };
        assert!(table.check_on(t(1 + LEASE), &promoted, &unknown).won);
    }

    #[test]
    fn a_non_durable_server_takes_nothing_for_a_lease_after_its_start() {
        let mut table = RefTable::new();
        let restarted = Server {
            durable: false,
            started: Some(t(0)),
            ..DEFAULT_SERVER
        };
        let a = CheckArgs {
            expect: Some(restarted.identity()),
            ..args("a", None, None)
        };
        assert!(
            !table.check_on(t(LEASE - 1), &restarted, &a).won,
            "no insert"
        );
        assert!(table.check_on(t(LEASE), &restarted, &a).won);
        let b = CheckArgs {
            expect: Some(restarted.identity()),
            ..args("b", None, None)
        };
        let mut again = table.clone();
        let restarted_later = Server {
            started: Some(t(LEASE + 2)),
            ..restarted
        };
        let b_later = CheckArgs {
            expect: Some(restarted_later.identity()),
            ..b
        };
        assert!(
            !again
                .check_on(t(2 * LEASE + 1), &restarted_later, &b_later)
                .won,
            "no takeover of an expired row within a lease of the start"
        );
        assert!(
            again
                .check_on(t(2 * LEASE + 2), &restarted_later, &b_later)
                .won
        );
        let durable = Server {
            durable: true,
            ..restarted_later
        };
        let b_durable = CheckArgs {
            expect: Some(durable.identity()),
            ..b
        };
        assert!(table.check_on(t(2 * LEASE + 1), &durable, &b_durable).won);
    }

    #[test]
    fn insert_renew_takeover_release() {
        let mut table = RefTable::without_clock_floor();
        let r = table.check(t(0), "f", "a", None, LEASE, 0, true, true, None);
        assert!(r.won && r.row == Some(RefRow::new("a", 0, t(0))));
        let r = table.check(t(10), "f", "b", None, LEASE, 0, true, true, None);
        assert!(!r.won && r.row == Some(RefRow::new("a", 0, t(0))));
        let r = table.check(t(20), "f", "a", Some(0), LEASE, 0, true, true, None);
        assert!(r.won && r.row == Some(RefRow::new("a", 1, t(20))));
        assert!(
            !table
                .check(t(30), "f", "a", Some(0), LEASE, 0, true, true, None)
                .won,
            "stale renew"
        );
        assert!(
            !table
                .check(t(20 + LEASE), "f", "b", None, LEASE, 0, true, true, None)
                .won,
            "expiry is strict"
        );
        let r = table.check(t(21 + LEASE), "f", "b", None, LEASE, 0, true, true, None);
        assert!(r.won && r.row == Some(RefRow::new("b", 2, t(21 + LEASE))));
        assert!(!table.release("f", "a", 2));
        assert!(table.release("f", "b", 2));
        assert_eq!(
            table.get("f"),
            Some(&RefRow {
                term: Some(2),
                ..RefRow::new("b", 3, DbTime::UNIX_EPOCH)
            }),
            "a release keeps the term: the lease is over by its timestamp"
        );
        assert!(
            table
                .check(t(LEASE * 3), "f", "a", None, LEASE, 0, true, true, None)
                .won
        );
    }

    #[test]
    fn a_win_writes_at_least_the_floor() {
        let mut table = RefTable::without_clock_floor();
        let r = table.check(t(0), "f", "a", None, LEASE, 7, true, true, None);
        assert!(
            r.won && r.row == Some(RefRow::new("a", 7, t(0))),
            "insert: the floor"
        );
        let r = table.check(t(1), "f", "a", Some(7), LEASE, 3, true, true, None);
        assert!(
            r.won && r.row == Some(RefRow::new("a", 8, t(1))),
            "floor below"
        );
        let r = table.check(t(2), "f", "a", Some(8), LEASE, 9, true, true, None);
        assert!(
            r.won && r.row == Some(RefRow::new("a", 9, t(2))),
            "floor at"
        );
        let r = table.check(t(3), "f", "a", Some(9), LEASE, 20, true, true, None);
        assert!(
            r.won && r.row == Some(RefRow::new("a", 20, t(3))),
            "floor above"
        );
        let r = table.check(t(4 + LEASE), "f", "b", None, LEASE, 30, true, true, None);
        assert!(
            r.won && r.row == Some(RefRow::new("b", 30, t(4 + LEASE))),
            "takeover"
        );
        table.put("max", RefRow::new("x", i64::MAX - 1, t(0)));
        let r = table.check(
            t(0),
            "max",
            "x",
            Some(i64::MAX - 1),
            LEASE,
            i64::MAX,
            true,
            true,
            None,
        );
        assert_eq!(r.row.unwrap().version, Some(i64::MAX));
    }

    #[test]
    fn without_may_take_only_a_renew_wins() {
        let mut table = RefTable::without_clock_floor();
        let r = table.check(t(0), "f", "a", None, LEASE, 0, false, false, None);
        assert!(!r.won && !r.found && r.row.is_none() && table.get("f").is_none());
        table.put("f", RefRow::new("a", 4, t(0)));
        assert!(
            !table
                .check(t(1 + LEASE), "f", "b", None, LEASE, 0, false, false, None)
                .won
        );
        assert!(
            !table
                .check(t(1), "f", "b", None, LEASE, 0, false, false, None)
                .won
        );
        assert!(
            !table
                .check(t(1 + LEASE), "f", "a", None, LEASE, 0, false, false, None)
                .won
        );
        let r = table.check(
            t(1 + LEASE),
            "f",
            "a",
            Some(4),
            LEASE,
            0,
            false,
            false,
            None,
        );
        assert!(r.won && r.row == Some(RefRow::new("a", 5, t(1 + LEASE))));
    }

    #[test]
    fn may_take_and_may_insert_are_apart() {
        let mut table = RefTable::without_clock_floor();
        // May take over, may not insert: a missing row stays missing.
        let r = table.check(t(0), "f", "a", None, LEASE, 3, true, false, None);
        assert!(!r.won && !r.found && table.get("f").is_none());
        // May insert, may not take over: an expired row stays its holder's.
        assert!(
            table
                .check(t(0), "f", "a", None, LEASE, 3, false, true, None)
                .won
        );
        assert!(
            !table
                .check(t(1 + LEASE), "f", "b", None, LEASE, 0, false, true, None)
                .won
        );
        assert!(
            table
                .check(t(1 + LEASE), "f", "b", None, LEASE, 0, true, false, None)
                .won
        );
    }

    #[test]
    fn the_term_column_names_the_term_and_the_fence_passes_only_its_live_lease() {
        let mut table = RefTable::without_clock_floor();
        table.check(t(0), "f", "a", None, LEASE, 4, true, true, None);
        assert_eq!(
            table.get("f").unwrap().term,
            Some(4),
            "an insert starts term 4"
        );
        table.check(t(1), "f", "a", Some(4), LEASE, 5, true, true, Some(4));
        assert_eq!(
            table.get("f").unwrap().term,
            Some(4),
            "a renew continues it"
        );
        assert!(table.fence(t(2), "f", "a", 4, LEASE));
        assert!(
            !table.fence(t(2), "f", "a", 5, LEASE),
            "the term, not the version"
        );
        assert!(!table.fence(t(2), "f", "b", 4, LEASE), "the holder");
        assert!(
            !table.fence(t(2 + LEASE), "f", "a", 4, LEASE),
            "a live lease"
        );
        table.check(t(2), "f", "a", Some(5), LEASE, 9, true, true, Some(4));
        assert_eq!(
            table.get("f").unwrap().term,
            Some(9),
            "a renew past the floor is a new term for the core, so for the row"
        );
        table.check(t(3), "f", "a", Some(9), LEASE, 10, true, true, None);
        assert_eq!(table.get("f").unwrap().term, Some(10), "a retake too");
        assert!(
            !table.fence(t(3), "f", "a", 9, LEASE),
            "the same process's old term"
        );
        table.check(t(4 + LEASE), "f", "b", None, LEASE, 0, true, true, Some(10));
        assert_eq!(table.get("f").unwrap().term, Some(11), "a takeover");
        assert!(table.release("f", "b", 11));
        assert!(!table.fence(t(5 + LEASE), "f", "b", 11, LEASE), "released");
        table.delete("f");
        assert!(!table.fence(t(5 + LEASE), "f", "b", 11, LEASE), "deleted");
    }

    #[test]
    fn odd_rows_are_never_won() {
        let mut table = RefTable::without_clock_floor();
        table.put("inf", RefRow::new("x", 5, DbTime::INFINITY));
        table.put("max", RefRow::new("x", i64::MAX, DbTime::UNIX_EPOCH));
        table.put(
            "null",
            RefRow {
                holder: None,
                version: None,
                term: None,
                timestamp: None,
            },
        );
        table.put("ninf", RefRow::new("x", 5, DbTime::NEG_INFINITY));
        assert!(
            !table
                .check(t(0), "inf", "a", None, LEASE, 0, true, true, None)
                .won
        );
        assert!(
            !table
                .check(t(0), "max", "x", Some(i64::MAX), LEASE, 0, true, true, None)
                .won
        );
        assert!(
            !table
                .check(t(0), "null", "a", None, LEASE, 0, true, true, None)
                .won
        );
        assert!(
            table
                .check(t(0), "ninf", "a", None, LEASE, 0, true, true, None)
                .won
        );
    }
}
