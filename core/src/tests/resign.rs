//! Resigning: the leader steps down without closing, its work stops first, the row is handed
//! over, and it takes nothing back during the hold-off.

use super::harness::{db, ms, row, Harness, PROCESS};
use crate::{Command, Input, LowerReason};

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
