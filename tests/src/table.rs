//! The reference table: an in-memory `leadership_flags` with PostgreSQL's semantics for the
//! statements in [`leadership_core::sql`], executed one at a time in arrival order (as the row
//! lock serialises them on a real server). The simulator runs on it; the driver tests check
//! it against a real server (same statement, same starting row, same result).

use std::collections::BTreeMap;

use leadership_core::{Checked, DbTime, Row};

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
}

impl CheckResult {
    /// The core's view of this result, borrowing the holder.
    pub fn as_input(&self) -> Checked<'_> {
        Checked {
            won: self.won,
            row: self.row.as_ref().map(|r| Row {
                holder: r.holder.as_deref(),
                version: r.version,
                timestamp: r.timestamp,
            }),
            now: self.now,
        }
    }
}

/// The table: flag name → row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RefTable {
    rows: BTreeMap<String, RefRow>,
}

impl RefTable {
    /// An empty table.
    pub fn new() -> RefTable {
        RefTable::default()
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

    /// Executes [`sql::CHECK`](leadership_core::sql::CHECK) at database time `now`, with its
    /// parameters: the version to renew, the lease, the floor (`$5`: the lowest version a win
    /// may write), may take (`$6`: whether an expired row may be taken over; a renew is
    /// allowed either way), may insert (`$7`: whether a missing row may be inserted) and the
    /// term a renew continues (`$8`).
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
        let Some(row) = self.rows.get_mut(name) else {
            if !may_insert {
                return CheckResult {
                    won: false,
                    found: false,
                    row: None,
                    now,
                };
            }
            let row = RefRow::new(process, floor, now);
            self.rows.insert(name.to_string(), row.clone());
            return CheckResult {
                won: true,
                found: true,
                row: Some(row),
                now,
            };
        };
        let seen = row.clone();
        // SQL's three-valued logic: a comparison with NULL is not true.
        let renewable =
            row.holder.as_deref() == Some(process) && row.version.is_some() && row.version == renew;
        // `timestamp < now() - lease`; `now() - lease` saturates like PostgreSQL's infinities.
        let expired = row.timestamp.is_some_and(|t| {
            t < DbTime::from_unix_micros(now.as_unix_micros().saturating_sub(lease_micros))
        });
        let incrementable = row.version.is_some_and(|v| v < i64::MAX);
        if incrementable && (renewable || (may_take && expired)) {
            // `greatest(version + 1, floor)` with the version NOT NULL and below i64::MAX.
            let next = row.version.map(|v| (v + 1).max(floor));
            // The term continues only for a renew to the next version that says which term.
            row.term = match continues {
                Some(term) if renewable && row.version.map(|v| v + 1) == next => Some(term),
                _ => next,
            };
            row.version = next;
            row.holder = Some(process.to_string());
            row.timestamp = Some(now);
            return CheckResult {
                won: true,
                found: true,
                row: Some(row.clone()),
                now,
            };
        }
        CheckResult {
            won: false,
            found: true,
            row: Some(seen),
            now,
        }
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

    #[test]
    fn insert_renew_takeover_release() {
        let mut table = RefTable::new();
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
        let mut table = RefTable::new();
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
        let mut table = RefTable::new();
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
        let mut table = RefTable::new();
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
        let mut table = RefTable::new();
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
        let mut table = RefTable::new();
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
