//! Handing the flag over, one phase for four reasons: close, resign, no longer wanted, a
//! refused precheck. The leader lowers at once, its work stops first, the row is released, and
//! the flag runs again (taking nothing during a resign's hold-off) or closes.

use super::harness::{db, ms, row, Harness, OTHER, PROCESS};
use crate::{Command, Config, Failure, Input, LowerReason, Precheck};

#[test]
fn a_resigning_leader_releases_once_its_work_stopped_and_takes_nothing_during_the_hold_off() {
    let mut h = Harness::leader();
    assert!(h.flag.is_leader(h.now));
    let resigned = h.now;
    let c = h.input(Input::Resign {
        hold_off: Some(ms(5000)),
    });
    assert_eq!(
        c,
        [Command::Lower(LowerReason::Resigned), Command::StopWork]
    );
    assert!(!h.flag.is_leader(h.now));
    assert!(h.flag.is_resigning(), "the release waits for the work");
    assert_eq!(
        h.input(Input::WorkStopped),
        [Command::Release { version: 0 }]
    );
    assert_eq!(h.input(Input::Released { released: true }), []);
    assert!(!h.flag.is_resigning());
    // Still competing, but taking nothing while the hold-off lasts.
    let c = h.wake();
    assert!(
        matches!(
            c[..],
            [Command::Check {
                may_take: false,
                may_insert: false,
                ..
            }]
        ),
        "{c:?}"
    );
    h.checked(false, Some(row("other", 2, db(-60_000))), db(0));
    let mut took = false;
    for _ in 0..40 {
        let c = h.wake();
        let [Command::Check { may_take, .. }] = c[..] else {
            continue;
        };
        assert_eq!(may_take, h.now >= resigned + ms(5000), "at {:?}", h.now);
        if may_take {
            took = true;
            break;
        }
        h.checked(false, Some(row("other", 2, db(-60_000))), db(0));
    }
    assert!(took, "competes again once the hold-off ended");
}

#[test]
fn a_resign_during_a_renew_releases_the_version_that_renew_won() {
    let mut h = Harness::leader();
    assert!(matches!(
        h.wake()[..],
        [Command::Check { renew: Some(0), .. }]
    ));
    assert_eq!(
        h.input(Input::Resign { hold_off: None }),
        [Command::Lower(LowerReason::Resigned), Command::StopWork]
    );
    assert!(
        !h.flag.is_leader(h.now),
        "lowered at once, not at the reply"
    );
    assert_eq!(
        h.input(Input::WorkStopped),
        [],
        "the renew is still in flight"
    );
    let c = h.checked(true, Some(row(PROCESS, 1, db(1000))), db(1000));
    assert_eq!(c, [Command::Release { version: 1 }], "no raise, a release");
    assert_eq!(h.input(Input::Released { released: true }), []);
    assert!(!h.flag.is_resigning());
    assert!(!h.flag.is_leader(h.now));
}

#[test]
fn a_follower_that_resigns_only_holds_off() {
    let mut h = Harness::new();
    h.commands();
    h.checked(false, Some(row("other", 3, db(0))), db(0));
    assert_eq!(
        h.input(Input::Resign {
            hold_off: Some(ms(60_000))
        }),
        []
    );
    assert!(!h.flag.is_resigning());
    let c = h.wake();
    assert!(
        matches!(
            c[..],
            [Command::Check {
                may_take: false,
                ..
            }]
        ),
        "{c:?}"
    );
}

#[test]
fn closing_lowers_first_stops_the_work_then_releases() {
    let mut h = Harness::leader();
    let c = h.input(Input::Close);
    assert_eq!(c, [Command::Lower(LowerReason::Closed), Command::StopWork]);
    assert!(!h.flag.is_leader(h.now));
    h.at(ms(30));
    assert_eq!(
        h.input(Input::WorkStopped),
        [Command::Release { version: 0 }]
    );
    assert_eq!(
        h.input(Input::Released { released: true }),
        [Command::Closed]
    );
    assert!(h.flag.is_closed());
    assert_eq!(h.flag.poll_timeout(), None);
    assert_eq!(h.input(Input::Notified), []);
    assert_eq!(h.input(Input::Close), []);
}

#[test]
fn closing_during_a_check_releases_what_it_won_without_raising() {
    let mut h = Harness::leader();
    h.wake();
    let c = h.input(Input::Close);
    assert_eq!(c, [Command::Lower(LowerReason::Closed), Command::StopWork]);
    let c = h.checked(true, Some(row(PROCESS, 1, db(1000))), db(1000));
    assert_eq!(c, [], "no raise; the release waits for the work");
    assert_eq!(
        h.input(Input::WorkStopped),
        [Command::Release { version: 1 }]
    );
    assert_eq!(h.input(Input::Failed(Failure::Timeout)), [Command::Closed]);
}

#[test]
fn closing_as_a_follower_closes_at_once() {
    let mut h = Harness::new();
    h.commands();
    h.checked(false, Some(row(OTHER, 3, db(0))), db(0));
    assert_eq!(h.input(Input::Close), [Command::Closed]);
}

/// Closing after a renew in doubt looks at the row again and releases it only if it is ours:
/// after the lease lapsed, a row under our name may be a twin's lease, which a release would
/// hand over while the twin still leads.
#[test]
fn closing_releases_no_row_it_cannot_tell_from_a_twins() {
    let mut h = Harness::leader();
    loop {
        let c = h.wake();
        if c == [Command::Lower(LowerReason::DeadlinePassed)] {
            break;
        }
        h.input(Input::Failed(Failure::Timeout));
    }
    h.at(ms(200));
    h.input(Input::Close);
    let c = h.checked(false, Some(row(PROCESS, 1, db(2300))), db(2300));
    assert_eq!(c, [Command::Closed], "no release of version 1");
}

#[test]
fn the_precheck_runs_before_each_check_and_a_refusal_releases() {
    let mut h = Harness::with(
        Config::builder("flag", PROCESS)
            .interval(ms(2000))
            .timeout(ms(500))
            .jitter(0.0)
            .precheck(true),
    );
    assert_eq!(h.commands(), [Command::RunPrecheck]);
    assert_eq!(
        h.input(Input::Precheck(Precheck::Pass)),
        [Command::Check {
            renew: None,
            floor: 0,
            may_take: true,
            may_insert: true,
            continues: None,
            expect: None,
        }]
    );
    h.checked(true, Some(row(PROCESS, 0, db(0))), db(0));
    assert_eq!(h.wake(), [Command::RunPrecheck]);
    let c = h.input(Input::Precheck(Precheck::Refuse));
    assert_eq!(
        c,
        [
            Command::Lower(LowerReason::PrecheckRefused),
            Command::StopWork
        ]
    );
    assert_eq!(
        h.input(Input::WorkStopped),
        [Command::Release { version: 0 }]
    );
    assert_eq!(h.input(Input::Released { released: true }), []);
    assert_eq!(
        h.flag.poll_timeout(),
        Some(h.now + ms(200)),
        "retries after the retry interval"
    );
    assert_eq!(h.wake(), [Command::RunPrecheck]);
    assert_eq!(
        h.input(Input::Precheck(Precheck::Error)),
        [],
        "nothing held, nothing released"
    );
}

/// A close asked for while a resign waits for its statement takes the hand-over over: the
/// resign is over (a caller waiting on it is answered), and the flag closes once the row is
/// released.
#[test]
fn a_close_during_a_resign_ends_the_resign_and_closes() {
    let mut h = Harness::leader();
    assert!(matches!(
        h.wake()[..],
        [Command::Check { renew: Some(0), .. }]
    ));
    h.input(Input::Resign { hold_off: None });
    assert!(h.flag.is_resigning());
    assert_eq!(
        h.input(Input::Close),
        [],
        "already lowered, work already told"
    );
    assert!(!h.flag.is_resigning(), "the close took the resign over");
    assert_eq!(h.input(Input::WorkStopped), [], "the renew is in flight");
    let c = h.checked(true, Some(row(PROCESS, 1, db(1000))), db(1000));
    assert_eq!(c, [Command::Release { version: 1 }]);
    assert_eq!(
        h.input(Input::Released { released: true }),
        [Command::Closed]
    );
    assert!(h.flag.is_closed());
    assert!(!h.flag.is_resigning());
}

/// Unwanted by a balanced set, a leader hands the flag over like a resign and then rests,
/// dormant: no check until it is wanted again, and then one at once.
#[test]
fn an_unwanted_leader_hands_over_then_rests_until_wanted() {
    let mut h = Harness::leader();
    assert_eq!(
        h.input(Input::Wanted(false)),
        [Command::Lower(LowerReason::Unwanted), Command::StopWork]
    );
    assert_eq!(
        h.input(Input::WorkStopped),
        [Command::Release { version: 0 }]
    );
    assert_eq!(h.input(Input::Released { released: true }), []);
    assert!(!h.flag.is_resigning());
    assert_eq!(h.flag.poll_timeout(), None, "dormant: no check");
    h.at(ms(60_000));
    let c = h.input(Input::Wanted(true));
    assert!(matches!(c[..], [Command::Check { .. }]), "{c:?}");
}

/// Wanted again, or notified, while the hand-over still waits for the work or the release:
/// the flag looks at the row once the hand-over is done, not a retry interval later.
#[test]
fn news_during_a_hand_over_is_answered_once_it_is_done() {
    for news in [Input::Wanted(true), Input::Notified] {
        let mut h = Harness::leader();
        let first = if news == Input::Notified {
            Input::Resign { hold_off: None }
        } else {
            Input::Wanted(false)
        };
        assert_eq!(h.input(first).len(), 2, "lower, stop the work");
        assert_eq!(h.input(news), [], "{news:?}: nothing while handing over");
        assert_eq!(
            h.input(Input::WorkStopped),
            [Command::Release { version: 0 }]
        );
        let c = h.input(Input::Released { released: true });
        assert!(matches!(c[..], [Command::Check { .. }]), "{news:?}: {c:?}");
    }
}

/// A release that fails ends the hand-over as a release that answers does: a resigning
/// process runs again, a closing one closes.
#[test]
fn a_failed_release_ends_the_hand_over() {
    let mut h = Harness::leader();
    h.input(Input::Resign { hold_off: None });
    h.input(Input::WorkStopped);
    assert_eq!(h.input(Input::Failed(Failure::Timeout)), []);
    assert!(!h.flag.is_resigning());
    assert_eq!(h.flag.poll_timeout(), Some(h.now + ms(200)), "a retry");
    let c = h.wake();
    assert!(matches!(c[..], [Command::Check { .. }]), "{c:?}");
    h.checked(false, Some(row(OTHER, 2, db(0))), db(0));
    assert_eq!(h.input(Input::Close), [Command::Closed]);
}
