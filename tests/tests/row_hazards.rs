//! What others do to the flag's row: a session holding its row lock (the leader's renew waits,
//! times out on the client, and must not commit later as a zombie), and a `DELETE` of the row.

use std::time::{Duration, Instant};

use leadership_testkit::helpers::{psql, server, wait_until};
use leadership_testkit::observe::Observer;
use leadership_testkit::pg::PgServer;
use leadership_tokio::{Flag, FlagBuilder};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

const TIMEOUT: Duration = Duration::from_millis(500);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn builder(pg: &PgServer, process: &str, interval: Duration) -> FlagBuilder {
    Flag::builder("job", process)
        .connect_str(&pg.conn_string())
        .interval(interval)
        .timeout(TIMEOUT)
}

fn row(pg: &PgServer) -> String {
    psql(
        pg,
        "SELECT holder, version, \"timestamp\" < '2000-01-01' FROM leadership_flags WHERE name = 'job'",
    )
}

/// Backends of `process` waiting for a lock.
fn waiting(pg: &PgServer, process: &str) -> i64 {
    psql(
        pg,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'leadership:{process}' \
             AND wait_event_type = 'Lock'"
        ),
    )
    .parse()
    .unwrap()
}

/// Another session holds the row lock (`SELECT … FOR UPDATE`); the leader's renew waits for it
/// and times out on the client, and the server abandons it too (the driver sets the server's
/// `lock_timeout` and `statement_timeout` and cancels what it abandons). Then the leader closes
/// while the lock is still held, and the lock holder commits: the close's look at the row (a
/// renew was in doubt) and its release go through, the follower is notified and leads within
/// milliseconds, and the closed process holds no fresh lease. A zombie renew committing after
/// the release would leave the row to the closed process for a whole lease.
#[test]
fn a_renew_stuck_on_a_row_lock_is_no_zombie_after_close() {
    // Renews every 2 s: the lock is taken right after one and released long before the lease
    // (4 s) expires, so the follower never wants the row meanwhile.
    let interval = Duration::from_secs(4);
    let rt = runtime();
    let pg = server();
    let leader = rt
        .block_on(builder(&pg, "L", interval).seed(1).start(NoTls))
        .unwrap();
    wait_until("L leads", interval, || leader.is_raised());
    let follower = rt
        .block_on(builder(&pg, "F", interval).seed(2).start(NoTls))
        .unwrap();
    let observer = Observer::start();
    observer.add("L", leader.clone());
    observer.add("F", follower.clone());
    let (blocker, connection) = rt
        .block_on(tokio_postgres::connect(&pg.conn_string(), NoTls))
        .unwrap();
    rt.spawn(connection);
    let v = leader.lease().unwrap().version;
    wait_until("a renew", interval * 2, || {
        leader.lease().is_some_and(|l| l.version > v)
    });
    rt.block_on(
        blocker
            .batch_execute("BEGIN; SELECT * FROM leadership_flags WHERE name = 'job' FOR UPDATE"),
    )
    .unwrap();
    let locked = Instant::now();
    wait_until("L's renew waits for the lock", interval, || {
        waiting(&pg, "L") > 0
    });
    let renew_waits = Instant::now();
    // The client gives up at the timeout; so does the server (lock_timeout), and the driver's
    // cancel: nothing of L waits any more, until its retry (a retry interval later) waits again.
    let mut abandoned = None;
    wait_until("the server abandons the renew", TIMEOUT * 4, || {
        let gone = waiting(&pg, "L") == 0;
        if gone {
            abandoned = Some(Instant::now());
        }
        gone
    });
    let closing = Instant::now();
    let close = rt.spawn({
        let leader = leader.clone();
        async move { leader.close().await }
    });
    std::thread::sleep(Duration::from_millis(150));
    let committed = Instant::now();
    rt.block_on(blocker.batch_execute("COMMIT")).unwrap();
    let closed = rt.block_on(close).unwrap();
    wait_until("F leads", interval, || follower.is_raised());
    let f_leads = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let record = observer.finish();
    let after = row(&pg);
    eprintln!(
        "zombie: renew waited {:?} after the lock; the server let go of it {:?} later; close \
         {:?}; F led {:?} after the commit ({:?} after close began); row now {after}\n{}",
        renew_waits - locked,
        abandoned.map(|a| a - renew_waits),
        closed,
        f_leads - committed,
        f_leads - closing,
        record.describe_from(closing)
    );
    closed.expect("close released the row");
    assert!(
        f_leads - committed < interval / 4,
        "the follower was notified, not left to wait for the lease"
    );
    assert!(!leader.is_raised());
    assert!(
        after.starts_with("F|"),
        "the closed process holds no fresh lease: {after}"
    );
    assert!(record.sampled_overlaps.is_empty() && record.deadline_overlaps().is_empty());
    rt.block_on(follower.close()).unwrap();
}

/// A `DELETE` of the row: every token handed out afterwards is above every token handed out
/// before. Three terms first (A, then whoever takes over from it, so the tokens are above 0),
/// then the delete, then a new term once the leader closes. It checks tokens only: two leaders
/// after the delete are possible (see the finding `a_deleted_row_never_gives_two_leaders`).
#[test]
fn after_a_deleted_row_tokens_still_grow() {
    let interval = Duration::from_secs(2);
    let rt = runtime();
    let pg = server();
    let observer = Observer::start();
    let mut flags = Vec::new();
    for (i, name) in ["A", "B", "C"].iter().enumerate() {
        let f = rt
            .block_on(builder(&pg, name, interval).seed(i as u64).start(NoTls))
            .unwrap();
        observer.add(name, f.clone());
        if i == 0 {
            wait_until("A leads", interval, || f.is_raised());
        }
        flags.push(f);
    }
    let leader_of = |flags: &[Flag]| flags.iter().position(|f| f.is_raised());
    rt.block_on(flags[0].close()).unwrap();
    wait_until("another leads", interval * 2, || {
        leader_of(&flags).is_some()
    });
    let second = leader_of(&flags).unwrap();
    // A few renews, so the row's version is well above the term's token.
    let v = flags[second].lease().unwrap().version;
    wait_until("renews", interval * 3, || {
        flags[second].lease().is_some_and(|l| l.version >= v + 2)
    });
    let before: Vec<i64> = observer.terms().iter().map(|t| t.token).collect();
    let highest_version = flags[second].lease().unwrap().version;
    let deleted = Instant::now();
    psql(&pg, "DELETE FROM leadership_flags");
    // Whoever checks first inserts the row again: the leader (its renew) or a follower.
    wait_until("the row is back", interval * 2, || !row(&pg).is_empty());
    let reinserted = row(&pg);
    std::thread::sleep(interval);
    // A new term: the current leader closes.
    if let Some(i) = leader_of(&flags) {
        rt.block_on(flags[i].close()).unwrap();
    }
    wait_until("a new term", interval * 3, || {
        observer
            .terms()
            .iter()
            .any(|t| t.began > deleted && !before.contains(&t.token))
    });
    let record = observer.finish();
    let highest_before = *before.iter().max().unwrap();
    let after: Vec<_> = record.terms.iter().filter(|t| t.began > deleted).collect();
    eprintln!(
        "deleted row: tokens before {before:?} (row at version {highest_version}), row after the \
         delete {reinserted}, terms after {:?}\n{}",
        after
            .iter()
            .map(|t| (&t.process, t.token))
            .collect::<Vec<_>>(),
        record.describe_from(deleted)
    );
    for t in &after {
        assert!(
            t.token > highest_before,
            "{} token {} not above {highest_before}",
            t.process,
            t.token
        );
    }
    assert!(
        record.token_regressions().is_empty(),
        "{}",
        record.describe()
    );
    rt.block_on(async {
        for f in &flags {
            let _ = f.close().await;
        }
    });
}

/// FINDING (core and SQL; left as they are, reported): after a `DELETE` of the row, a follower
/// whose check comes before the leader's next renew inserts the row again at once and leads,
/// while the leader still believes until its deadline. The core treats a vanished row as
/// evidence of lost writes (a fence of one lease) only when its check did *not* win, but a
/// check that may take (`$6`) inserts a missing row in the same statement, so the follower
/// never gets to judge it. The `NOTIFY` here only makes the follower check at once (a
/// follower's scheduled check does the same about half the time, as in
/// `after_a_deleted_row_tokens_still_grow`, which saw 850 ms of overlap).
///
/// Trace of this test (interval 2 s; times from the delete, which came right after a renew of
/// L's to version 1):
/// ```text
/// L token 0 (Created)  -0.922s .. +0.956s (deadline +1.894s; lowered when its renew found
///                                          the row, now F's, at version 1)
/// F token 1 (TookOver) +0.034s .. : notified, F's check found no row and inserted it at its
///                                   floor 1 (it had seen version 0)
/// OVERLAP +0.034s .. +0.956s: L and F
/// ```
/// A fix needs the check to tell inserting from taking over: e.g. a `$7` "may insert" that the
/// core sets only while it has never seen the row (or once the fence after a vanished row has
/// passed), so that a follower's check that finds no row after seeing one returns `found =
/// false`, and the core's existing rule (a vanished row: take nothing for a lease) applies. A
/// process started after the delete cannot tell a deleted row from a new table; that residue
/// stays.
#[test]
#[ignore = "finding: a follower re-inserts a deleted row while the leader still believes (core/SQL)"]
fn a_deleted_row_never_gives_two_leaders() {
    let interval = Duration::from_secs(2);
    let rt = runtime();
    let pg = server();
    let observer = Observer::start();
    let leader = rt
        .block_on(builder(&pg, "L", interval).seed(1).start(NoTls))
        .unwrap();
    observer.add("L", leader.clone());
    wait_until("L leads", interval, || leader.is_raised());
    let follower = rt
        .block_on(builder(&pg, "F", interval).seed(2).start(NoTls))
        .unwrap();
    observer.add("F", follower.clone());
    let v = leader.lease().unwrap().version;
    wait_until("a renew", interval * 2, || {
        leader.lease().is_some_and(|l| l.version > v)
    });
    let deleted = Instant::now();
    psql(
        &pg,
        "BEGIN; DELETE FROM leadership_flags; SELECT pg_notify('leadership_flags', 'job'); COMMIT",
    );
    std::thread::sleep(interval * 2);
    let record = observer.finish();
    eprintln!("{}", record.describe_from(deleted));
    assert!(
        record.sampled_overlaps.is_empty() && record.deadline_overlaps().is_empty(),
        "two leaders after a DELETE:\n{}",
        record.describe_from(deleted)
    );
    rt.block_on(async {
        let _ = leader.close().await;
        let _ = follower.close().await;
    });
}
