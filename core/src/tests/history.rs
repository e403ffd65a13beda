//! Lost writes: a database that went back in time (a failover to a lagging standby, a
//! restored backup, a deleted row) or a connection to another server must never give two
//! leaders or a fencing token lower than one handed out before.

use core::time::Duration;

use super::harness::{db, ms, renew_check, row, Harness, OTHER, PROCESS};
use crate::{Anomaly, Command, Input, Instant, LowerReason, Server, WonBy};

fn server(timeline: u32, started_ms: i64) -> Server {
    Server {
        system: Some(7),
        timeline: Some(timeline),
        started: Some(db(started_ms)),
        durable: true,
        promoted_ago: None,
    }
}

/// A check; it may insert only where it may take and this process has seen no row yet
/// (floor 0): see [`check_inserting`] for the other cases.
fn check(renew: Option<i64>, floor: i64, may_take: bool) -> Command {
    check_inserting(renew, floor, may_take, may_take && floor == 0)
}

/// `check` as sent once `server` is known: the statement compares its identity.
fn on(server: Server, check: Command) -> Command {
    match check {
        Command::Check {
            renew,
            floor,
            may_take,
            may_insert,
            continues,
            ..
        } => Command::Check {
            renew,
            floor,
            may_take,
            may_insert,
            continues,
            expect: Some(server.identity()),
        },
        other => other,
    }
}

fn check_inserting(renew: Option<i64>, floor: i64, may_take: bool, may_insert: bool) -> Command {
    Command::Check {
        renew,
        floor,
        may_take,
        may_insert,
        continues: None,
        expect: None,
    }
}

/// A leader that renewed up to version 10.
fn leader_at_10() -> Harness {
    let mut h = Harness::leader();
    for version in 1..=10 {
        assert_eq!(h.wake(), [renew_check(version - 1)]);
        h.checked(true, Some(row(PROCESS, version, db(0))), db(0));
    }
    h
}

#[test]
fn a_row_below_a_version_seen_is_lost_writes_and_fences_takeovers_for_a_lease() {
    let mut h = leader_at_10();
    assert_eq!(h.wake(), [renew_check(10)]);
    // The database lost the last writes: the row names us at version 5, long expired.
    let c = h.checked(false, Some(row(PROCESS, 5, db(-10_000))), db(0));
    assert_eq!(
        c,
        [
            Command::Anomaly(Anomaly::LostWrites),
            Command::Lower(LowerReason::Lost),
        ]
    );
    let fenced_at = h.now;
    // Looking again while fenced (a notification) takes nothing, whatever the row's age.
    h.at(ms(10));
    assert_eq!(h.input(Input::Notified), [check(None, 11, false)]);
    let c = h.checked(false, Some(row(PROCESS, 5, db(-10_000))), db(10));
    assert_eq!(c, []);
    // The next look is when the fence ends, a lease (and a margin) after the evidence.
    let c = h.wake();
    assert_eq!(c, [check(None, 11, true)], "a lease later, it may take");
    assert_eq!(h.now, fenced_at + ms(2000) + ms(100));
    // The takeover writes at least the floor: the token never goes backwards.
    let c = h.checked(true, Some(row(PROCESS, 11, db(2200))), db(2200));
    assert!(
        matches!(c[..], [Command::Raise(l)] if l.token == 11),
        "{c:?}"
    );
}

#[test]
fn a_renew_of_an_intact_row_goes_on_through_a_server_change() {
    // Failover to a current standby: the row is as we left it; the term goes on.
    let mut h = leader_at_10();
    assert_eq!(h.input(Input::Connected(server(1, 0))), []);
    assert_eq!(h.wake(), [on(server(1, 0), renew_check(10))]);
    let c = h.input(Input::Connected(server(2, 0)));
    assert_eq!(
        c,
        [
            Command::Anomaly(Anomaly::LostWrites),
            Command::Check {
                renew: Some(10),
                floor: 11,
                may_take: false,
                may_insert: false,
                continues: Some(0),
                expect: Some(server(2, 0).identity()),
            }
        ],
        "the check was not run: it goes again, fenced, continuing the term"
    );
    let c = h.checked(true, Some(row(PROCESS, 11, db(0))), db(0));
    assert!(
        matches!(c[..], [Command::Renewed(l)] if l.token == 0),
        "{c:?}"
    );
    assert!(h.flag.is_leader(h.now));
}

#[test]
fn another_timeline_or_a_non_durable_restart_is_evidence_a_durable_restart_is_not() {
    let mut h = Harness::new();
    h.commands();
    h.checked(false, Some(row(OTHER, 3, db(0))), db(0));
    assert_eq!(h.input(Input::Connected(server(1, 0))), []);
    assert_eq!(
        h.input(Input::Connected(server(1, 0))),
        [],
        "the same server"
    );
    assert_eq!(
        h.input(Input::Connected(server(1, 500))),
        [],
        "a restart of a durable server loses nothing committed"
    );
    let fragile = Server {
        durable: false,
        ..server(1, 900)
    };
    assert_eq!(
        h.input(Input::Connected(fragile)),
        [Command::Anomaly(Anomaly::LostWrites)]
    );
    assert_eq!(
        h.input(Input::Connected(server(2, 900))),
        [Command::Anomaly(Anomaly::LostWrites)]
    );
    let other = Server {
        system: Some(8),
        ..server(2, 900)
    };
    assert_eq!(
        h.input(Input::Connected(other)),
        [Command::Anomaly(Anomaly::LostWrites)]
    );
}

#[test]
fn a_fresh_process_on_a_recently_promoted_server_takes_nothing_until_a_lease_after_it() {
    let mut h = Harness::new();
    let start = h.now;
    assert_eq!(h.commands(), [check(None, 0, true)]);
    // The first check's connection: a server promoted 500 ms ago. The check was not run.
    let promoted = Server {
        promoted_ago: Some(ms(500)),
        ..server(2, 0)
    };
    assert_eq!(
        h.input(Input::Connected(promoted)),
        [on(promoted, check(None, 0, false))],
        "no insert or takeover yet: the old primary's leases may be believed"
    );
    let c = h.checked(false, Some(row(OTHER, 4, db(-5_000))), db(0));
    assert_eq!(c, []);
    let c = h.wake();
    assert_eq!(c, [on(promoted, check(None, 5, true))]);
    assert!(
        h.now >= start + ms(1500) + ms(100),
        "a lease after the promotion: {}",
        h.now
    );
}

#[test]
fn a_deleted_row_never_brings_the_token_below_one_handed_out() {
    let mut h = leader_at_10();
    assert_eq!(h.wake(), [renew_check(10)]);
    // Someone ran DELETE: the renew inserted the row again, at the floor.
    let c = h.checked(true, Some(row(PROCESS, 11, db(0))), db(0));
    assert!(
        matches!(c[..], [Command::Renewed(l)] if l.version == 11),
        "{c:?}"
    );
    // A follower that saw version 10 and then finds no row may take it, at version 11 or
    // more: never 0.
    let mut f = Harness::new();
    assert_eq!(f.commands(), [check(None, 0, true)]);
    f.checked(false, Some(row(OTHER, 10, db(0))), db(0));
    let c = f.wake();
    assert_eq!(c, [check(None, 11, true)]);
    let _ = Duration::ZERO;
}

#[test]
fn a_row_that_vanished_after_it_was_seen_is_evidence_once() {
    let mut f = Harness::new();
    f.commands();
    f.checked(false, Some(row(OTHER, 10, db(0))), db(0));
    f.at(ms(10));
    assert_eq!(f.input(Input::Notified), [check(None, 11, true)]);
    // It found no row, and did not insert one: the row it saw is gone.
    let c = f.checked(false, None, db(10));
    assert_eq!(c, [Command::Anomaly(Anomaly::LostWrites)]);
    assert_eq!(f.wake(), [check(None, 11, false)]);
    assert_eq!(
        f.checked(false, None, db(300)),
        [],
        "the same evidence, not news"
    );
}

/// Found by the test kit's `row_hazards` test against a real server: a follower whose check
/// inserted a missing row in the same statement that found it gone led while the deleted
/// row's holder still believed. A process that has seen the row learns first, inserts later.
#[test]
fn a_row_that_vanished_is_inserted_only_a_lease_after_it_was_found_gone() {
    let mut f = Harness::new();
    assert_eq!(
        f.commands(),
        [check_inserting(None, 0, true, true)],
        "a process that never saw the row may insert it"
    );
    f.checked(false, Some(row(OTHER, 10, db(0))), db(0));
    f.at(ms(10));
    assert_eq!(
        f.input(Input::Notified),
        [check_inserting(None, 11, true, false)],
        "once seen, a missing row is not inserted by the check that finds it missing"
    );
    assert_eq!(
        f.checked(false, None, db(10)),
        [Command::Anomaly(Anomaly::LostWrites)]
    );
    // Fenced: the deleted row's holder may lead until its lease ends, a lease from now.
    let mut fenced_until = f.now;
    loop {
        let c = f.wake();
        match c[..] {
            [Command::Check {
                may_insert: false, ..
            }] => {
                fenced_until = f.now;
                f.checked(false, None, db(10));
            }
            [Command::Check {
                may_insert: true,
                may_take: true,
                floor: 11,
                ..
            }] => break,
            _ => panic!("{c:?}"),
        }
        assert!(
            f.now < Instant::ZERO + ms(5_000),
            "still fenced at {:?}",
            f.now
        );
    }
    assert!(
        fenced_until >= Instant::ZERO + ms(2_000),
        "no insert before a lease has passed: the last fenced check at {fenced_until:?}"
    );
}

/// Found by the simulator (a failover fault, seed 916907619): a process restarted right after
/// a failover to a lagging standby found the row naming it from an earlier life, adopted it
/// and renewed it, while the leader of the lost history still believed.
#[test]
fn regression_a_fresh_process_renews_no_row_of_an_earlier_life_while_fenced() {
    let mut h = Harness::new();
    assert_eq!(h.commands(), [check(None, 0, true)]);
    let promoted = Server {
        promoted_ago: Some(ms(300)),
        ..server(2, 0)
    };
    assert_eq!(
        h.input(Input::Connected(promoted)),
        [on(promoted, check(None, 0, false))]
    );
    // The row names us at a version this life did not write: another's, never adopted (it
    // was, before issue 25).
    let c = h.checked(false, Some(row(PROCESS, 241, db(-500))), db(0));
    assert_eq!(
        c,
        [Command::Anomaly(Anomaly::DuplicateProcess)],
        "no renew of it"
    );
    let c = h.wake();
    assert_eq!(
        c,
        [on(promoted, check(None, 242, true))],
        "a takeover, a lease after the promotion"
    );
}

/// Behind a transaction pooler the server changes under an open connection and no
/// `Connected` comes (issue 25): the check itself says which server ran it, changed nothing
/// there, and the core fences as on a new connection, then sends it again, expecting that one.
#[test]
fn a_check_answered_by_another_server_is_evidence_and_goes_again_expecting_it() {
    let mut h = Harness::new();
    h.commands();
    h.checked(false, Some(row(OTHER, 3, db(0))), db(0));
    assert_eq!(h.input(Input::Connected(server(1, 0))), []);
    let c = h.wake();
    assert_eq!(c, [on(server(1, 0), check(None, 4, true))]);
    let swapped = server(2, 0);
    let c = h.checked_on(None, Some(row(OTHER, 3, db(-9_000))), db(0), Some(swapped));
    assert_eq!(
        c,
        [
            Command::Anomaly(Anomaly::LostWrites),
            on(swapped, check_inserting(None, 4, false, false)),
        ],
        "fenced, and sent again at once to the server that answered"
    );
    // The same server answering again is no news.
    let c = h.checked_on(None, Some(row(OTHER, 3, db(-9_000))), db(0), Some(swapped));
    assert!(!c.contains(&Command::Anomaly(Anomaly::LostWrites)), "{c:?}");
    assert!(!h.flag.is_leader(h.now));
}

#[test]
fn a_win_on_another_server_than_expected_breaks_the_contract() {
    let mut h = Harness::new();
    h.commands();
    h.input(Input::Connected(server(1, 0)));
    let reply = Input::Checked(crate::Checked {
        won: true,
        won_by: Some(WonBy::Created),
        row: Some(crate::Row {
            holder: Some(PROCESS),
            version: Some(1),
            timestamp: Some(db(0)),
        }),
        now: db(0),
        server: Some(server(2, 0)),
    });
    assert_eq!(
        h.flag.handle_input(h.now, reply),
        Err(crate::ContractError::WonOnAnotherServer)
    );
}

#[test]
fn the_statement_says_a_term_was_created_whatever_its_token() {
    let mut h = Harness::new();
    h.commands();
    let token = db(0).as_unix_micros();
    let c = h.checked_on(
        Some(WonBy::Created),
        Some(row(PROCESS, token, db(0))),
        db(0),
        None,
    );
    assert!(
        matches!(c[..], [Command::Raise(l)] if l.token == token && l.won_by == WonBy::Created),
        "{c:?}"
    );
}
