//! The check and its reply, one test per behaviour the protocol promises, driven reply by
//! reply (the hand-over, the history and the work have files of their own).

use alloc::format;

use super::harness::{db, ms, renew_check, retake_check, row, Harness, TestRow, OTHER, PROCESS};
use crate::{
    Anomaly, Checked, Command, ContractError, DbTime, Failure, Input, InputKind, Lease,
    LowerReason, WonBy,
};

fn lease_of(commands: &[Command]) -> Lease {
    match commands {
        [.., Command::Raise(lease)] | [.., Command::Renewed(lease)] => *lease,
        other => panic!("expected a raise or renewal, got {other:?}"),
    }
}

#[test]
fn first_check_takes_a_missing_flag_at_once() {
    let mut h = Harness::new();
    let start = h.now;
    assert_eq!(
        h.commands(),
        [Command::Check {
            renew: None,
            floor: 0,
            may_take: true,
            may_insert: true,
            continues: None,
            expect: None,
        }],
        "no waiting at start-up"
    );
    let c = h.checked(true, Some(row(PROCESS, 0, db(0))), db(0));
    assert_eq!(
        c,
        [Command::Raise(Lease {
            token: 0,
            version: 0,
            deadline: start + ms(2000) - ms(100),
            // 1.9 s leave no room for a failed renew and a retry: no stop-ahead by default.
            at_risk: start + ms(2000) - ms(100),
            won_by: WonBy::Created,
        })]
    );
    assert!(h.flag.is_leader(h.now));
    assert_eq!(
        h.flag.poll_timeout(),
        Some(start + ms(1000)),
        "renews at the renew interval"
    );
}

#[test]
fn leader_renews_with_one_statement_per_check() {
    let mut h = Harness::leader();
    for version in 1..=20 {
        let c = h.wake();
        assert_eq!(
            c,
            [Command::Check {
                renew: Some(version - 1),
                floor: version,
                may_take: true,
                may_insert: false,
                continues: Some(0),
                expect: None,
            }],
            "one statement"
        );
        let renewed = lease_of(&h.checked(true, Some(row(PROCESS, version, db(0))), db(0)));
        assert_eq!(
            (renewed.token, renewed.version),
            (0, version),
            "same term, new version"
        );
        assert_eq!(renewed.deadline, h.now + ms(1900));
    }
}

#[test]
fn follower_checks_with_one_statement_and_wakes_when_the_lease_expires() {
    let mut h = Harness::new();
    h.commands();
    // The other process renewed 500 ms ago by the database's clock: 1.5 s of lease remain.
    assert_eq!(h.checked(false, Some(row(OTHER, 5, db(-500))), db(0)), []);
    assert!(!h.flag.is_leader(h.now));
    let woke_at = h.now + ms(1501);
    assert_eq!(
        h.flag.poll_timeout(),
        Some(woke_at),
        "wakes 1 ms after expiry"
    );
    assert_eq!(
        h.wake(),
        [Command::Check {
            renew: None,
            floor: 6,
            may_take: true,
            may_insert: false,
            continues: None,
            expect: None,
        }],
        "one statement"
    );
    let raised = lease_of(&h.checked(true, Some(row(PROCESS, 6, db(1501))), db(1501)));
    assert_eq!((raised.token, raised.won_by), (6, WonBy::TookOver));
}

#[test]
fn a_follower_never_sleeps_longer_than_an_interval() {
    let mut h = Harness::new();
    h.commands();
    let c = h.checked(false, Some(row(OTHER, 5, DbTime::INFINITY)), db(0));
    assert_eq!(c, [Command::Anomaly(Anomaly::NeverExpires)]);
    assert_eq!(h.flag.poll_timeout(), Some(h.now + ms(2000)));
}

#[test]
fn leader_stops_believing_at_its_deadline_without_any_input() {
    let h = Harness::leader();
    let deadline = h.flag.lease_at(h.now).unwrap().deadline;
    assert!(h
        .flag
        .is_leader(deadline - ms(0) - core::time::Duration::from_nanos(1)));
    assert!(
        !h.flag.is_leader(deadline),
        "nothing was handled, yet the belief is gone"
    );
}

#[test]
fn a_hung_renew_lowers_at_the_deadline() {
    let mut h = Harness::leader();
    let deadline = h.flag.lease_at(h.now).unwrap().deadline;
    assert_eq!(h.wake(), [renew_check(0)]);
    // No reply: the driver is stuck. The next wake-up is the deadline.
    assert_eq!(h.flag.poll_timeout(), Some(deadline));
    assert_eq!(h.wake(), [Command::Lower(LowerReason::DeadlinePassed)]);
    assert!(!h.flag.is_leader(h.now));
    // The statement times out; the next check still tries to renew the row it may hold.
    h.at(ms(100));
    assert_eq!(h.input(Input::Failed(Failure::Timeout)), []);
    assert_eq!(h.wake(), [retake_check(0)], "a win would start a new term");
}

#[test]
fn a_slow_renew_that_wins_after_the_lapse_renews_again_for_a_term_of_its_own() {
    let mut h = Harness::leader();
    h.wake();
    h.wake(); // deadline: lowered while the renew is in flight
    h.at(ms(50));
    // The renew continued term 0 in the row's term column: a new term must write its own
    // token there before it leads, or its fence would fail and term 0's would pass.
    let c = h.checked(true, Some(row(PROCESS, 1, db(1000))), db(1000));
    assert_eq!(c, [retake_check(1)], "no raise on the old term's row");
    let sent = h.now;
    h.at(ms(30));
    // The statement says it renewed our row (a new term's token follows the clock).
    let c = h.checked_on(
        Some(WonBy::Renewed),
        Some(row(PROCESS, 2, db(1050))),
        db(1050),
        None,
    );
    let lease = lease_of(&c);
    assert!(matches!(c[..], [Command::Raise(_)]), "a new term: {c:?}");
    assert_eq!(lease.deadline, sent + ms(1900), "counted from the send");
    assert_eq!((lease.token, lease.won_by), (2, WonBy::Renewed));
}

#[test]
fn a_win_that_arrives_after_its_own_deadline_raises_nothing() {
    let mut h = Harness::new();
    h.commands();
    h.at(ms(1900));
    let c = h.checked(true, Some(row(PROCESS, 0, db(0))), db(0));
    assert_eq!(
        c,
        [retake_check(0)],
        "renews at once instead, for a new term"
    );
    assert!(!h.flag.is_leader(h.now));
    let lease = lease_of(&h.checked(true, Some(row(PROCESS, 1, db(1900))), db(1900)));
    assert_eq!(lease.deadline, h.now + ms(1900));
}

#[test]
fn a_failed_renew_keeps_leadership_until_the_deadline_and_retries() {
    let mut h = Harness::leader();
    let deadline = h.flag.lease_at(h.now).unwrap().deadline;
    let mut retries = 0;
    loop {
        let c = h.wake();
        if c == [Command::Lower(LowerReason::DeadlinePassed)] {
            break;
        }
        assert_eq!(c, [renew_check(0)]);
        assert_eq!(
            h.input(Input::Failed(Failure::Error)),
            [],
            "no flapping on a blip"
        );
        assert!(h.flag.is_leader(h.now));
        retries += 1;
    }
    assert_eq!(h.now, deadline);
    assert_eq!(
        retries, 5,
        "1.0, 1.2, 1.4, 1.6, 1.8 s: every retry interval"
    );
}

#[test]
fn a_lost_compare_and_set_lowers() {
    let mut h = Harness::leader();
    h.wake();
    let c = h.checked(false, Some(row(OTHER, 1, db(900))), db(1000));
    assert_eq!(c, [Command::Lower(LowerReason::Lost)]);
    assert!(!h.flag.is_leader(h.now));
    assert_eq!(h.flag.poll_timeout(), Some(h.now + ms(1901)));
}

#[test]
fn a_row_changed_while_our_renew_waited_for_the_lock_lowers() {
    // A check that loses returns the row as of its start: still ours, at our version.
    let mut h = Harness::leader();
    h.wake();
    let c = h.checked(false, Some(row(PROCESS, 0, db(0))), db(1000));
    assert_eq!(c, [Command::Lower(LowerReason::Lost)]);
}

/// A live row under our name that this incarnation did not write is another's: an earlier
/// incarnation that may still run, or a twin with our name. Reported, and left to expire.
#[test]
fn a_row_naming_us_after_a_restart_is_left_to_expire_then_taken_over() {
    let mut h = Harness::new();
    h.commands();
    let c = h.checked(false, Some(row(PROCESS, 41, db(-100))), db(0));
    assert_eq!(
        c,
        [Command::Anomaly(Anomaly::DuplicateProcess)],
        "not adopted: it may be a twin's live lease"
    );
    let start = h.now;
    let c = h.wake();
    assert_eq!(
        h.now,
        start + ms(1901),
        "at its expiry by the database's clock"
    );
    assert_eq!(
        c,
        [Command::Check {
            renew: None,
            floor: 42,
            may_take: true,
            may_insert: false,
            continues: None,
            expect: None,
        }],
        "a takeover, no renew of a row it did not write"
    );
    let lease = lease_of(&h.checked(true, Some(row(PROCESS, 42, db(1901))), db(1901)));
    assert_eq!((lease.token, lease.won_by), (42, WonBy::TookOver));
}

/// A twin's takeover writes what our renew in doubt would have written, under the same name:
/// once the lease it renewed has lapsed, the row is no longer told apart, so it is not adopted.
#[test]
fn a_renew_in_doubt_seen_only_after_its_lease_lapsed_is_not_adopted() {
    let mut h = Harness::leader();
    loop {
        let c = h.wake();
        if c == [Command::Lower(LowerReason::DeadlinePassed)] {
            break;
        }
        assert_eq!(c, [renew_check(0)]);
        h.input(Input::Failed(Failure::Timeout));
    }
    assert_eq!(h.wake(), [retake_check(0)]);
    // Version 1 under our name: our renew, or a twin's takeover of version 0 once it expired.
    let c = h.checked(false, Some(row(PROCESS, 1, db(2100))), db(2150));
    assert_eq!(c, [Command::Anomaly(Anomaly::DuplicateProcess)]);
    let c = h.wake();
    assert!(
        matches!(
            c[..],
            [Command::Check {
                renew: None,
                floor: 2,
                ..
            }]
        ),
        "waits for its expiry, then takes over: {c:?}"
    );
}

/// A follower's takeover in doubt writes the version a twin's renew or takeover would write:
/// never adopted.
#[test]
fn a_takeover_in_doubt_is_not_adopted() {
    let mut h = Harness::new();
    h.commands();
    assert_eq!(h.input(Input::Failed(Failure::Timeout)), []);
    h.wake();
    let c = h.checked(false, Some(row(PROCESS, 0, db(100))), db(150));
    assert_eq!(c, [Command::Anomaly(Anomaly::DuplicateProcess)]);
    assert!(!h.flag.is_leader(h.now));
}

/// Only the exact version the renew in doubt would have written is ours: a later one under our
/// name is a twin's.
#[test]
fn a_row_past_the_renew_in_doubt_is_not_adopted() {
    let mut h = Harness::leader();
    h.wake();
    h.input(Input::Failed(Failure::Timeout));
    assert_eq!(h.wake(), [renew_check(0)]);
    let c = h.checked(false, Some(row(PROCESS, 2, db(1000))), db(1200));
    assert_eq!(
        c,
        [
            Command::Anomaly(Anomaly::DuplicateProcess),
            Command::Lower(LowerReason::Lost)
        ]
    );
}

#[test]
fn a_renew_whose_reply_was_lost_is_adopted_without_lowering() {
    let mut h = Harness::leader();
    h.wake();
    h.input(Input::Failed(Failure::Timeout)); // it did commit version 1
    assert_eq!(h.wake(), [renew_check(0)]);
    let c = h.checked(false, Some(row(PROCESS, 1, db(1000))), db(1200));
    assert_eq!(c, [renew_check(1)]);
    assert!(h.flag.is_leader(h.now), "the row never left us");
    let lease = lease_of(&h.checked(true, Some(row(PROCESS, 2, db(1200))), db(1200)));
    assert_eq!((lease.token, lease.version), (0, 2));
}

#[test]
fn another_process_using_our_name_is_reported_and_we_step_aside() {
    let mut h = Harness::leader();
    h.wake();
    let c = h.checked(false, Some(row(PROCESS, 5, db(900))), db(1000));
    assert_eq!(
        c,
        [
            Command::Anomaly(Anomaly::DuplicateProcess),
            Command::Lower(LowerReason::Lost)
        ]
    );
    assert_eq!(
        h.wake(),
        [Command::Check {
            renew: None,
            floor: 6,
            may_take: true,
            may_insert: false,
            continues: None,
            expect: None,
        }],
        "no renew of a row it did not write"
    );
}

#[test]
fn a_notification_makes_a_follower_check_at_once() {
    let mut h = Harness::new();
    h.commands();
    h.checked(false, Some(row(OTHER, 3, db(0))), db(0));
    assert_eq!(
        h.input(Input::Notified),
        [Command::Check {
            renew: None,
            floor: 4,
            may_take: true,
            may_insert: false,
            continues: None,
            expect: None,
        }]
    );
    assert_eq!(h.input(Input::Notified), [], "one check at a time");
    let c = h.checked(false, Some(row(OTHER, 3, db(0))), db(10));
    assert_eq!(
        c,
        [Command::Check {
            renew: None,
            floor: 4,
            may_take: true,
            may_insert: false,
            continues: None,
            expect: None,
        }],
        "the waiting notification is served"
    );
}

#[test]
fn a_notification_answered_by_a_win_costs_no_extra_check() {
    let mut h = Harness::new();
    h.commands();
    assert_eq!(h.input(Input::Notified), []);
    let c = h.checked(true, Some(row(PROCESS, 0, db(0))), db(0));
    assert!(matches!(c[..], [Command::Raise(_)]), "{c:?}");
    assert_eq!(h.flag.poll_timeout(), Some(h.now + ms(1000)));
}

#[test]
fn a_leader_ignores_notifications() {
    let mut h = Harness::leader();
    assert_eq!(h.input(Input::Notified), []);
}

#[test]
fn odd_rows_are_reported_and_never_taken() {
    let mut h = Harness::new();
    h.commands();
    let null_holder = TestRow {
        holder: None,
        version: Some(3),
        timestamp: Some(db(-10_000)),
    };
    assert_eq!(
        h.checked(false, Some(null_holder), db(0)),
        [Command::Anomaly(Anomaly::NullInRow)]
    );
    assert_eq!(h.flag.poll_timeout(), Some(h.now + ms(1000)));
    assert_eq!(
        h.wake(),
        [Command::Check {
            renew: None,
            floor: 4,
            may_take: true,
            may_insert: false,
            continues: None,
            expect: None,
        }]
    );
    assert_eq!(
        h.checked(false, Some(row(OTHER, i64::MAX, db(-10_000))), db(0)),
        [Command::Anomaly(Anomaly::VersionExhausted)]
    );
}

#[test]
fn fencing_tokens_increase_across_terms() {
    let mut h = Harness::leader();
    let first = h.flag.lease_at(h.now).unwrap().token;
    h.wake();
    h.checked(false, Some(row(OTHER, 1, db(1000))), db(1000));
    h.wake();
    let second = lease_of(&h.checked(true, Some(row(PROCESS, 2, db(3001))), db(3001))).token;
    assert!(second > first);
}

#[test]
fn contract_breaches_are_refused_and_change_nothing() {
    let mut h = Harness::leader();
    let before = format!("{:?}", h.flag);
    let reply = Input::Checked(Checked {
        won: true,
        won_by: None,
        server: None,
        row: None,
        now: db(0),
    });
    assert_eq!(
        h.flag.handle_input(h.now, reply),
        Err(ContractError::NothingPending {
            got: InputKind::Checked
        })
    );
    assert_eq!(format!("{:?}", h.flag), before, "state unchanged");
    h.wake();
    let before = format!("{:?}", h.flag);
    assert!(matches!(
        h.flag
            .handle_input(h.now, Input::Released { released: true }),
        Err(ContractError::WrongReply {
            got: InputKind::Released,
            ..
        })
    ));
    assert_eq!(
        h.flag.handle_input(h.now, reply),
        Err(ContractError::WonWithoutVersion)
    );
    assert_eq!(format!("{:?}", h.flag), before, "state unchanged");
}

#[test]
fn undrained_commands_are_refused() {
    let mut h = Harness::new();
    let refused = (0..20).find_map(|version| {
        let won = Input::Checked(Checked {
            won: true,
            won_by: None,
            server: None,
            row: Some(crate::Row {
                holder: Some(PROCESS),
                version: Some(version),
                timestamp: Some(db(0)),
            }),
            now: db(0),
        });
        if let Err(e) = h.flag.handle_input(h.now, won) {
            return Some(e);
        }
        h.now = h.flag.poll_timeout().unwrap();
        h.flag.handle_timeout(h.now);
        None
    });
    assert_eq!(refused, Some(ContractError::NotDrained));
}

#[test]
fn time_running_backwards_is_clamped() {
    let mut h = Harness::leader();
    let lease = h.flag.lease_at(h.now).unwrap();
    h.flag.handle_timeout(crate::Instant::ZERO);
    assert_eq!(h.commands(), []);
    assert!(h.flag.is_leader(h.now));
    assert!(h.flag.poll_timeout().unwrap() >= h.now);
    assert_eq!(h.flag.lease_at(h.now), Some(lease));
}
