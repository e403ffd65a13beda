//! The blocking facade (`leadership-blocking`) against a real PostgreSQL: a smoke set of its
//! own API. The behaviour behind it is the tokio driver's, tested once in `tokio_*.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use leadership_blocking::{ConfigError, Error, Flag, FlagSet, State};
use leadership_pgkit::helpers::{psql, server};
use leadership_pgkit::pg::PgServer;

const SECOND: Duration = Duration::from_secs(1);

fn flag(server: &PgServer, process: &str) -> Flag {
    Flag::builder("jobs", process)
        .interval(2 * SECOND)
        .timeout(Duration::from_millis(600))
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap_or_else(|e| panic!("starting {process}: {e}"))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

fn released(server: &PgServer) -> bool {
    psql(
        server,
        "select \"timestamp\" from leadership_flags where name = 'jobs'",
    )
    .starts_with("1970-01-01")
}

#[test]
fn one_leads_and_a_close_hands_over_within_milliseconds() {
    let server = server();
    let (a, b) = (flag(&server, "p0"), flag(&server, "p1"));
    let guard = a
        .wait_raised(5 * SECOND)
        .or_else(|| b.wait_raised(5 * SECOND))
        .expect("someone leads");
    let (leader, follower, name) = if a.is_raised() {
        (a, b, "p0")
    } else {
        (b, a, "p1")
    };
    assert!(!follower.is_raised());
    let token = guard.token();
    assert_eq!(leader.lease().map(|l| l.token), Some(token));
    wait_for("the follower has checked", 3 * SECOND, || {
        follower.current_holder().is_some()
    });
    assert_eq!(
        follower.current_holder().unwrap().name.as_deref(),
        Some(name)
    );
    drop(guard);
    let closed = Instant::now();
    leader.close().expect("close releases the row");
    let next = follower
        .wait_raised(SECOND)
        .expect("the notified follower leads at once, not at its next check");
    let took = closed.elapsed();
    println!("blocking facade: close -> follower raised in {took:?}");
    assert!(next.token() > token);
    assert!(took < SECOND, "{took:?}");
}

#[test]
fn close_waits_for_the_guard_of_the_leader_only_work() {
    let server = server();
    let flag = flag(&server, "p0");
    let guard = flag.wait_raised(3 * SECOND).expect("raised");
    let dropped = Arc::new(AtomicBool::new(false));
    let work = thread::spawn({
        let dropped = Arc::clone(&dropped);
        move || {
            assert!(guard.wait_lost(5 * SECOND), "close ends the term");
            assert!(guard.is_lost());
            thread::sleep(Duration::from_millis(300));
            dropped.store(true, Ordering::SeqCst);
            drop(guard);
        }
    });
    let started = Instant::now();
    flag.close().expect("close releases the row");
    assert!(
        dropped.load(Ordering::SeqCst),
        "close returned before the guard was dropped"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    work.join().unwrap();
    assert!(released(&server));
}

#[test]
fn the_subscription_holds_the_latest_state_only() {
    let server = server();
    let flag = flag(&server, "p0");
    let mut states = flag.subscribe();
    assert_eq!(
        states.recv_timeout(SECOND),
        Some(State::Lowered),
        "the current state at once"
    );
    flag.wait_raised(3 * SECOND).expect("raised");
    // Several renewals pass unread; one read gives the latest, then nothing is queued.
    thread::sleep(3 * SECOND);
    assert!(matches!(
        states.recv_timeout(SECOND),
        Some(State::Raised { .. })
    ));
    assert_eq!(states.recv_timeout(Duration::from_millis(100)), None);
    let reader = thread::spawn(move || states.collect::<Vec<State>>());
    flag.close().unwrap();
    let seen = reader.join().unwrap();
    assert_eq!(seen.last(), Some(&State::Lowered), "{seen:?}");
}

#[test]
fn a_set_runs_its_flags_on_one_connection() {
    let server = server();
    let set = FlagSet::builder("p0")
        .interval(2 * SECOND)
        .timeout(Duration::from_millis(600))
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap();
    let flags: Vec<Flag> = (0..5)
        .map(|i| set.add(format!("shard-{i}")).unwrap())
        .collect();
    assert!(matches!(set.add("shard-0"), Err(Error::DuplicateFlag(_))));
    wait_for("every shard raised", 5 * SECOND, || {
        flags.iter().all(Flag::is_raised)
    });
    let backends = psql(
        &server,
        "select count(*) from pg_stat_activity where application_name = 'leadership:p0'",
    );
    assert_eq!(backends, "1");
    for flag in flags {
        flag.close().unwrap();
    }
}

#[test]
fn a_blocking_precheck_keeps_the_flag_down_until_it_passes() {
    let server = server();
    let pass = Arc::new(AtomicBool::new(false));
    let answer = Arc::clone(&pass);
    let flag = Flag::builder("jobs", "p0")
        .interval(SECOND)
        .timeout(Duration::from_millis(300))
        .precheck(move || {
            thread::sleep(Duration::from_millis(5)); // blocking is fine here
            Ok::<_, std::io::Error>(answer.load(Ordering::SeqCst))
        })
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap();
    assert!(flag.wait_raised(3 * SECOND / 2).is_none());
    pass.store(true, Ordering::SeqCst);
    assert!(flag.wait_raised(2 * SECOND).is_some());
    pass.store(false, Ordering::SeqCst);
    wait_for("lowered once the precheck refuses", 2 * SECOND, || {
        !flag.is_raised()
    });
    wait_for("released", SECOND, || released(&server));
}

#[test]
fn errors_are_the_tokio_drivers_with_the_same_cause_text() {
    let server = server();
    psql(
        &server,
        "create table wrong (name text primary key, holder text not null)",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases: [(&str, String); 3] = [
        ("wrong", server.conn_string()),
        (
            "leadership_flags",
            format!("host=127.0.0.1 port={port} user=postgres"),
        ),
        (
            "leadership_flags",
            format!("{} user=nobody", server.conn_string()),
        ),
    ];
    for (table, conn) in cases {
        let blocking = Flag::builder("n", "p")
            .interval(SECOND)
            .timeout(Duration::from_millis(300))
            .table(table)
            .connect_str(&conn)
            .start(postgres::NoTls)
            .unwrap_err();
        let tokio = runtime
            .block_on(
                leadership_tokio::Flag::builder("n", "p")
                    .interval(SECOND)
                    .timeout(Duration::from_millis(300))
                    .table(table)
                    .connect_str(&conn)
                    .start(tokio_postgres::NoTls),
            )
            .unwrap_err();
        assert_eq!(blocking.to_string(), tokio.to_string());
        println!("{blocking}");
    }
    let e = Flag::builder("n", "p")
        .interval(SECOND)
        .timeout(2 * SECOND)
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Config(ConfigError::TimeoutNotBelowInterval { .. })
        ),
        "{e}"
    );
}

#[test]
fn lead_runs_the_work_on_this_thread_until_a_close_from_another() {
    let server = server();
    let flag = flag(&server, "p0");
    let closer = thread::spawn({
        let flag = flag.clone();
        move || {
            flag.wait_raised(3 * SECOND).expect("raised");
            thread::sleep(Duration::from_millis(200));
            flag.close()
        }
    });
    let mut runs = Vec::new();
    flag.lead(|guard| {
        runs.push(guard.token());
        // Work in steps until told to stop; the close tells it (the term ends).
        while !guard.wait_at_risk(Duration::from_millis(10)) {}
        assert!(guard.is_at_risk());
        thread::sleep(Duration::from_millis(100)); // winding down
    })
    .expect("lead returns once the flag is closed");
    closer
        .join()
        .unwrap()
        .expect("released after the work returned");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(released(&server));
}
