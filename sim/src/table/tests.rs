//! The reference table's rules, statement by statement.

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

// ---- The batch (issue 28) ----------------------------------------------------------------------

fn named<'a>(name: &'a str, process: &'a str, renew: Option<i64>) -> CheckArgs<'a> {
    CheckArgs {
        name,
        renew,
        continues: renew,
        ..args(process, None, None)
    }
}

#[test]
fn every_flag_of_a_batch_gets_what_the_single_check_gives_it() {
    let s = DEFAULT_SERVER;
    let mut single = RefTable::new();
    single.put("b", RefRow::new("a", 7, t(0)));
    single.put("c", RefRow::new("x", 9, t(0)));
    single.put("d", RefRow::new("x", 11, t(-LEASE - 1)));
    let mut batched = single.clone();
    let checks = [
        named("a", "a", None),    // missing: inserted
        named("b", "a", Some(7)), // ours: renewed
        named("c", "a", None),    // another's live lease: not won
        named("d", "a", None),    // another's expired lease: taken over
    ];
    let rows = batched.check_batch_on(t(5), &s, &checks, |_| false);
    for (a, row) in checks.iter().zip(&rows) {
        assert!(row.attempted, "{}", a.name);
        assert_eq!(row.result, single.check_on(t(5), &s, a), "{}", a.name);
    }
    assert_eq!(batched, single);
}

#[test]
fn a_batch_skips_a_locked_row_it_would_write_and_reads_one_it_would_not() {
    let s = DEFAULT_SERVER;
    let mut table = RefTable::new();
    table.put("mine", RefRow::new("a", 7, t(0)));
    table.put("theirs", RefRow::new("x", 9, t(0)));
    table.put("free", RefRow::new("a", 3, t(0)));
    let before = table.clone();
    let checks = [
        named("mine", "a", Some(7)),
        named("theirs", "a", None),
        named("free", "a", Some(3)),
    ];
    assert!(table.would_update(t(5), &s, &checks[0]));
    assert!(!table.would_update(t(5), &s, &checks[1]));
    let rows = table.check_batch_on(t(5), &s, &checks, |name| name != "free");
    // Our renew would write the locked row: skipped, the row as it stood, nothing written.
    assert!(!rows[0].attempted && !rows[0].result.won);
    assert_eq!(rows[0].result.row.as_ref(), before.get("mine"));
    assert_eq!(table.get("mine"), before.get("mine"));
    // A check that would not write locks nothing: attempted, whoever holds the lock.
    assert!(rows[1].attempted && !rows[1].result.won);
    // The rest of the batch proceeds.
    assert!(rows[2].attempted && rows[2].result.won);
    assert_eq!(table.get("free").unwrap().version, Some(4));
}

#[test]
fn a_release_would_write_only_the_row_it_names() {
    let mut table = RefTable::new();
    table.put("f", RefRow::new("a", 7, t(0)));
    assert!(table.would_release("f", "a", 7));
    assert!(!table.would_release("f", "a", 6));
    assert!(!table.would_release("f", "b", 7));
    assert!(!table.would_release("g", "a", 7));
}
