//! Checks in a batch: a leader's renew joins a batch early ([`Input::Batching`]), never late;
//! a row the batch skipped ([`Failure::NotAttempted`]) fails that flag alone and leaves nothing
//! in doubt.

use super::harness::{db, ms, renew_check, row, Harness, OTHER, PROCESS};
use crate::{Anomaly, Command, Config, Failure, Input, LowerReason};

#[test]
fn a_leaders_renew_joins_a_batch_within_its_early_window_and_not_before() {
    let mut h = Harness::leader();
    let start = h.now;
    let early = h.flag.config().renew_early();
    assert_eq!(early, ms(500), "half the 1 s renew interval");
    let due = h.flag.poll_timeout().unwrap();
    assert_eq!(due, start + ms(1000));
    assert_eq!(h.flag.poll_early_check(), Some(due - early));

    // Before the window opens, a batch leaves the renew where it is.
    h.at(ms(1000) - early - ms(1));
    assert_eq!(h.input(Input::Batching), []);
    assert_eq!(h.flag.poll_timeout(), Some(due));

    // Inside it, the renew goes now; its lease counts from now, like any check's.
    let sent = h.at(ms(1));
    assert_eq!(h.input(Input::Batching), [renew_check(0)]);
    assert_eq!(h.flag.poll_early_check(), None, "a check is pending");
    let c = h.checked(true, Some(row(PROCESS, 1, db(750))), db(750));
    match c[..] {
        [Command::Renewed(lease)] => assert_eq!(lease.deadline, sent + ms(2000) - ms(100)),
        _ => panic!("{c:?}"),
    }
    assert_eq!(
        h.flag.poll_timeout(),
        Some(sent + ms(1000)),
        "the next renew counts from the early one"
    );
}

#[test]
fn a_follower_joins_a_batch_once_the_lease_can_have_expired_and_a_retry_never_goes_early() {
    // A follower sleeps until the holder's lease can expire; its jitter (which spreads the
    // processes) is what a batch lets it skip.
    let mut f = Harness::with(
        Config::builder("flag", PROCESS)
            .interval(ms(2000))
            .timeout(ms(500))
            .jitter(1.0),
    );
    let _ = f.commands();
    let read = f.now;
    // Renewed 500 ms before the read: it can expire 1.5 s (and the strict rule's 1 ms) later.
    f.checked(false, Some(row(OTHER, 3, db(-500))), db(0));
    let expires = read + ms(1501);
    assert_eq!(f.flag.poll_early_check(), Some(expires));
    assert!(
        f.flag.poll_timeout().unwrap() > expires,
        "jittered after the expiry"
    );
    f.at(ms(1500));
    assert_eq!(f.input(Input::Batching), [], "the lease may still be live");
    f.at(ms(1));
    assert!(
        matches!(
            f.input(Input::Batching)[..],
            [Command::Check {
                renew: None,
                may_take: true,
                ..
            }]
        ),
        "once it can have expired, the check goes with the batch"
    );

    // A leader's retry after a failed renew waits its interval.
    let mut h = Harness::leader();
    h.wake();
    h.input(Input::Failed(Failure::Error));
    assert!(h.flag.is_leader(h.now));
    assert_eq!(h.flag.poll_early_check(), None, "a retry");
    h.at(ms(150));
    assert_eq!(h.input(Input::Batching), []);
}

#[test]
fn a_skipped_row_fails_that_check_alone_and_leaves_nothing_in_doubt() {
    let mut h = Harness::leader();
    assert_eq!(h.wake(), [renew_check(0)]);
    // The batch skipped the row (another transaction held its lock): the lease stands until
    // its deadline, and the flag retries as after any failure.
    assert_eq!(h.input(Input::Failed(Failure::NotAttempted)), []);
    assert!(h.flag.is_leader(h.now));
    assert_eq!(h.wake(), [renew_check(0)]);
    // Version 1 under our name is not ours: that renew was never attempted, so whoever wrote
    // it shares our name. After an ordinary failure the core would adopt it as its renew in
    // doubt; here it steps aside.
    let c = h.checked(false, Some(row(PROCESS, 1, db(1300))), db(1300));
    assert_eq!(
        c,
        [
            Command::Anomaly(Anomaly::DuplicateProcess),
            Command::Lower(LowerReason::Lost)
        ]
    );
}

#[test]
fn after_an_ordinary_failure_the_renew_in_doubt_is_adopted() {
    // The contrast of the test above: the same reply after `Failure::Error` is our own renew,
    // committed unseen.
    let mut h = Harness::leader();
    assert_eq!(h.wake(), [renew_check(0)]);
    h.input(Input::Failed(Failure::Error));
    assert_eq!(h.wake(), [renew_check(0)]);
    let c = h.checked(false, Some(row(PROCESS, 1, db(1300))), db(1300));
    assert_eq!(c, [renew_check(1)], "adopted and renewed at once");
}
