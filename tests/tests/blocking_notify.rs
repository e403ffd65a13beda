//! The blocking driver's guards, state channel, holder and wake-up on release, against a real
//! PostgreSQL: a graceful handover measured over many trials, a lost notification, every way
//! a guard is lost, and a close that waits for the leader-only work.
//!
//! `LEADERSHIP_FIGURES_TRIALS` sets the number of handover trials (default 5; the figures in
//! the docs come from 30).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use leadership_blocking::{Flag, State};
use leadership_testkit::helpers::{psql, server};
use leadership_testkit::pg::{PgServer, Signal};

const SECOND: Duration = Duration::from_secs(1);

fn flag(server: &PgServer, process: &str, interval: Duration) -> Flag {
    Flag::builder("jobs", process)
        .interval(interval)
        .timeout(interval * 3 / 10)
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap_or_else(|e| panic!("starting {process}: {e}"))
}

fn released(server: &PgServer) -> bool {
    psql(
        server,
        "select \"timestamp\" from leadership_flags where name = 'jobs'",
    )
    .starts_with("1970-01-01")
}

/// The backend pid of `process`'s newest connection.
fn backend_pid(server: &PgServer, process: &str) -> i32 {
    let pid = psql(
        server,
        &format!(
            "select pid from pg_stat_activity where application_name = 'leadership:{process}' \
             order by backend_start desc limit 1"
        ),
    );
    pid.parse()
        .unwrap_or_else(|_| panic!("no backend for {process}: {pid:?}"))
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[((sorted.len() - 1) * p).div_ceil(100)]
}

/// Both started; returns (leader, follower) once one leads and the other has checked (and so
/// listens and knows its schedule).
fn elect(a: Flag, b: Flag) -> (Flag, Flag) {
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        assert!(Instant::now() < deadline, "no leader");
        match (a.is_raised(), b.is_raised()) {
            (true, false) if b.current_holder().is_some() => return (a, b),
            (false, true) if a.current_holder().is_some() => return (b, a),
            _ => thread::sleep(Duration::from_millis(2)),
        }
    }
}

#[test]
fn a_graceful_handover_wakes_the_follower_well_before_its_next_check() {
    let trials: usize = std::env::var("LEADERSHIP_FIGURES_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let interval = 2 * SECOND;
    let server = server();
    let (mut leader, mut follower) =
        elect(flag(&server, "p0", interval), flag(&server, "p1", interval));
    let mut handovers = Vec::with_capacity(trials);
    for trial in 0..trials {
        // Close at varied points of the lease, never right at a renew.
        thread::sleep(Duration::from_millis(100 + (trial as u64 * 137) % 700));
        let waiter = thread::spawn(move || {
            let guard = follower.wait_raised(5 * SECOND);
            let at = Instant::now();
            (guard.map(|g| g.token()), at, follower)
        });
        let holder = leader.current_holder().expect("checked");
        let process = holder.name.clone().expect("a row");
        let started = Instant::now();
        leader.close().expect("close releases the row");
        let (token, raised_at, next) = waiter.join().unwrap();
        let took = raised_at - started;
        assert!(token.is_some(), "trial {trial}: the follower never raised");
        // The follower's own schedule would check only when the lease expires by the
        // database's clock: at least interval/2 after the last renew, so interval/4 is well
        // before it whatever the machine's speed.
        assert!(
            took < interval / 4,
            "trial {trial}: handover took {took:?}: not woken by the notification"
        );
        handovers.push(took);
        // The closed one comes back as the follower.
        follower = flag(&server, &process, interval);
        leader = next;
        let deadline = Instant::now() + 3 * SECOND;
        while follower.current_holder().is_none() {
            assert!(
                Instant::now() < deadline,
                "the restarted process never checked"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
    println!(
        "handovers in order (ms): {:?}",
        handovers
            .iter()
            .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
            .collect::<Vec<_>>()
    );
    handovers.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "graceful handover (blocking, loopback, interval 2 s), {} trials: min {:.1} ms, \
         median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        handovers.len(),
        ms(handovers[0]),
        ms(percentile(&handovers, 50)),
        ms(percentile(&handovers, 90)),
        ms(percentile(&handovers, 99)),
        ms(*handovers.last().unwrap())
    );
    drop((leader, follower));
}

#[test]
fn a_lost_notification_still_hands_over_at_the_next_scheduled_check() {
    let interval = SECOND;
    let server = server();
    let (leader, follower) = elect(flag(&server, "p0", interval), flag(&server, "p1", interval));
    let name = follower
        .current_holder()
        .and_then(|h| h.name)
        .expect("a holder");
    let follower_name = if name == "p0" { "p1" } else { "p0" };
    // The follower's connection, and with it its LISTEN, is gone when the release notifies.
    let pid = backend_pid(&server, follower_name);
    psql(&server, &format!("select pg_terminate_backend({pid})"));
    thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    leader.close().expect("close releases the row");
    let raised = follower.wait_raised(3 * interval).map(|g| g.token());
    let took = started.elapsed();
    println!("handover with the follower's notification lost: {took:?} (lease {interval:?})");
    assert!(
        raised.is_some(),
        "never handed over without the notification"
    );
    // Its schedule checks when the lease it saw expires (within a lease), plus a retry.
    assert!(took < interval + interval / 2, "{took:?}");
}

#[test]
fn a_guard_is_lost_when_the_database_hangs_past_the_deadline() {
    let interval = 2 * SECOND;
    let server = server();
    // A 1 s timeout: a hung renew runs into the deadline.
    let flag = Flag::builder("jobs", "p0")
        .interval(interval)
        .timeout(SECOND)
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap();
    let states = flag.subscribe();
    let guard = flag.wait_raised(3 * SECOND).expect("raised");
    let pid = backend_pid(&server, "p0");
    server.signal_backend(pid, Signal::Stop).unwrap();
    thread::sleep(Duration::from_millis(50));
    let deadline = guard.deadline();
    assert!(guard.wait_lost(2 * interval), "lost by the deadline");
    let now = Instant::now();
    server.signal_backend(pid, Signal::Cont).unwrap();
    assert!(now >= deadline, "lost only at the deadline");
    assert!(
        now < deadline + Duration::from_millis(100),
        "lost {:?} after the deadline",
        now - deadline
    );
    assert!(!guard.is_valid());
    let seen: Vec<State> = states.try_iter().collect();
    assert!(
        matches!(seen.last(), Some(State::Lowered)),
        "the channel says Lowered: {seen:?}"
    );
}

#[test]
fn a_guard_is_lost_when_another_process_takes_the_row() {
    let interval = SECOND;
    let server = server();
    let flag = flag(&server, "p0", interval);
    let guard = flag.wait_raised(3 * SECOND).expect("raised");
    let token = guard.token();
    // Another writer (an operator, a process with another interval) moves the row on.
    psql(
        &server,
        "update leadership_flags set holder = 'intruder', version = version + 1, \
         \"timestamp\" = now() where name = 'jobs'",
    );
    assert!(guard.wait_lost(interval), "lost at the next renew");
    assert!(!guard.is_valid());
    let holder = flag.current_holder().expect("checked");
    assert_eq!(holder.name.as_deref(), Some("intruder"));
    assert!(holder.token > Some(token) && !holder.expired);
    assert!(holder.lease_age.is_some_and(|a| a < interval));
}

#[test]
fn close_ends_the_guards_and_releases_only_after_they_are_dropped() {
    let interval = 2 * SECOND;
    let server = server();
    let flag = flag(&server, "p0", interval);
    let states = flag.subscribe();
    let guard = flag.wait_raised(3 * SECOND).expect("raised");
    let dropped = Arc::new(AtomicBool::new(false));
    let work = thread::spawn({
        let dropped = Arc::clone(&dropped);
        move || {
            assert!(guard.wait_lost(5 * SECOND), "close ends the term");
            // The work takes a while to wind down; the row must stay ours meanwhile.
            thread::sleep(Duration::from_millis(300));
            dropped.store(true, Ordering::SeqCst);
            drop(guard);
        }
    });
    let checker = thread::spawn({
        let dropped = Arc::clone(&dropped);
        let conn = server.conn_string();
        move || {
            let mut client = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            let mut early = false;
            while !dropped.load(Ordering::SeqCst) {
                let row = client
                    .query_one(
                        "select \"timestamp\" < '2000-01-01' from leadership_flags \
                         where name = 'jobs'",
                        &[],
                    )
                    .unwrap();
                early |= row.get::<_, bool>(0);
                thread::sleep(Duration::from_millis(5));
            }
            early
        }
    });
    let started = Instant::now();
    flag.close().expect("close releases the row");
    let took = started.elapsed();
    assert!(
        dropped.load(Ordering::SeqCst),
        "close returned before the guard was dropped"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < interval,
        "close waited for the drop, not the deadline: {took:?}"
    );
    assert!(
        !checker.join().unwrap(),
        "released while the work still ran"
    );
    work.join().unwrap();
    assert!(released(&server));
    let seen: Vec<State> = states.try_iter().collect();
    assert!(matches!(seen.last(), Some(State::Lowered)), "{seen:?}");
}

#[test]
fn close_releases_at_the_deadline_if_a_guard_lingers() {
    let interval = SECOND;
    let server = server();
    let flag = flag(&server, "p0", interval);
    let guard = flag.wait_raised(3 * SECOND).expect("raised");
    let deadline = guard.deadline();
    let started = Instant::now();
    flag.close().expect("the release still happens");
    let closed_at = Instant::now();
    println!(
        "close with a lingering guard: {:?}, {:?} after the deadline",
        closed_at - started,
        closed_at.saturating_duration_since(deadline)
    );
    assert!(closed_at >= deadline, "released before the deadline");
    assert!(closed_at < deadline + interval, "bounded by the deadline");
    assert!(!guard.is_valid());
    assert!(released(&server));
}

#[test]
fn a_refusing_precheck_ends_the_guard_and_releases_after_the_drop() {
    let server = server();
    let pass = Arc::new(AtomicBool::new(true));
    let answer = Arc::clone(&pass);
    let flag = Flag::builder("jobs", "p0")
        .interval(SECOND)
        .timeout(Duration::from_millis(300))
        .precheck(move || Ok::<_, std::io::Error>(answer.load(Ordering::SeqCst)))
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap();
    let guard = flag.wait_raised(3 * SECOND).expect("raised");
    pass.store(false, Ordering::SeqCst);
    assert!(guard.wait_lost(2 * SECOND), "lost at the next precheck");
    // Not released while the guard lives (the lease's deadline is up to a second away).
    thread::sleep(Duration::from_millis(200));
    let still_ours = !released(&server);
    let live = guard.deadline() > Instant::now();
    drop(guard);
    if live {
        assert!(still_ours, "released while the guard was alive");
    }
    let deadline = Instant::now() + SECOND;
    while !released(&server) {
        assert!(Instant::now() < deadline, "not released after the drop");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(!flag.is_raised());
}
