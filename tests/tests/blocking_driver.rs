//! The blocking driver against a real PostgreSQL: election, failover, handover, a hung
//! backend, lost connections, a cold-start race, bad input, and statements per check.
//! Each test starts its own server; intervals are 1–2 s and the timing bounds generous.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use leadership_blocking::{Error, Flag, ShapeError, TableError};
use leadership_core::ConfigError;
use leadership_testkit::helpers::{psql, server};
use leadership_testkit::pg::{PgServer, Signal};

const SECOND: Duration = Duration::from_secs(1);

/// A flag with a 1 s lease (timeout 300 ms, so a renew fits before the deadline).
fn flag(server: &PgServer, process: &str) -> Flag {
    flag_with(server, "jobs", process, SECOND)
}

fn flag_with(server: &PgServer, name: &str, process: &str, interval: Duration) -> Flag {
    Flag::builder(name, process)
        .interval(interval)
        .timeout(interval * 3 / 10)
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap_or_else(|e| panic!("starting {process}: {e}"))
}

fn raised(flags: &[Flag]) -> Vec<usize> {
    (0..flags.len()).filter(|&i| flags[i].is_raised()).collect()
}

/// Polls `f` every 2 ms until it returns `Some`, or panics after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until exactly one is raised and returns it.
fn leader(flags: &[Flag], timeout: Duration) -> usize {
    wait_for("one leader", timeout, || match raised(flags)[..] {
        [one] => Some(one),
        _ => None,
    })
}

/// Samples every millisecond for `duration`: never two raised at once.
fn assert_never_two(flags: &[Flag], duration: Duration) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let r = raised(flags);
        assert!(r.len() <= 1, "two raised at once: {r:?}");
        thread::sleep(Duration::from_millis(1));
    }
}

fn row(server: &PgServer, name: &str) -> String {
    psql(
        server,
        &format!(
            "select holder, version, \"timestamp\" from leadership_flags where name = '{name}'"
        ),
    )
}

#[test]
fn election_raises_exactly_one_and_it_stays() {
    let server = server();
    let flags: Vec<Flag> = (0..4).map(|i| flag(&server, &format!("p{i}"))).collect();
    let first = leader(&flags, 3 * SECOND);
    let token = flags[first].lease().expect("leader has a lease").token;
    // Several leases long: the same leader renews, nobody else raises, the term goes on.
    let end = Instant::now() + 4 * SECOND;
    while Instant::now() < end {
        assert_eq!(raised(&flags), vec![first], "leadership moved or doubled");
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        flags[first].lease().map(|l| l.token),
        Some(token),
        "same term"
    );
    assert!(
        flags[first].lease().unwrap().version > token + 4,
        "renewed every half lease"
    );
}

#[test]
fn a_crashed_leader_is_replaced_after_about_one_lease() {
    let server = server();
    let mut flags: Vec<Flag> = (0..3).map(|i| flag(&server, &format!("p{i}"))).collect();
    let first = leader(&flags, 3 * SECOND);
    thread::sleep(SECOND / 2);
    let old = flags.remove(first);
    let crashed = Instant::now();
    drop(old); // no release: the row stays until its lease expires
    assert!(
        crashed.elapsed() < Duration::from_millis(50),
        "drop does not block"
    );
    let next = leader(&flags, 4 * SECOND);
    let failover = crashed.elapsed();
    println!("crash failover: {failover:?} (lease 1 s)");
    assert!(
        failover >= SECOND / 4,
        "the lease was respected: {failover:?}"
    );
    assert!(failover < 2500 * Duration::from_millis(1), "{failover:?}");
    assert_never_two(&flags, SECOND);
    assert_eq!(raised(&flags), vec![next]);
}

#[test]
fn a_closed_leader_hands_over_at_once() {
    let server = server();
    let mut flags: Vec<Flag> = (0..3).map(|i| flag(&server, &format!("p{i}"))).collect();
    let first = leader(&flags, 3 * SECOND);
    thread::sleep(SECOND / 2);
    let old = flags.remove(first);
    let closing = Instant::now();
    old.close().expect("close releases the row");
    let closed = closing.elapsed();
    let next = leader(&flags, 3 * SECOND);
    let handover = closing.elapsed();
    println!("graceful handover: close took {closed:?}, next raised after {handover:?}");
    assert!(
        handover < SECOND / 2,
        "release + NOTIFY wakes a follower at once: {handover:?}"
    );
    assert!(!row(&server, "jobs").is_empty());
    assert_eq!(raised(&flags), vec![next]);
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

#[test]
fn a_hung_database_lowers_the_leader_by_its_deadline_before_anyone_else_raises() {
    let server = server();
    // The Go peer's settings: with a 1 s timeout a hung renew runs into the deadline, so a
    // fresh connection cannot save the lease (with a short timeout it can, legitimately).
    let interval = 2 * SECOND;
    let flags: Vec<Flag> = (0..2)
        .map(|i| {
            Flag::builder("jobs", format!("p{i}"))
                .interval(interval)
                .timeout(SECOND)
                .connect_str(&server.conn_string())
                .start(postgres::NoTls)
                .unwrap()
        })
        .collect();
    let first = leader(&flags, 3 * SECOND);
    let other = 1 - first;
    thread::sleep(SECOND / 3);
    let pid = backend_pid(&server, &format!("p{first}"));
    server.signal_backend(pid, Signal::Stop).unwrap();
    let stopped = Instant::now();
    // A renew answered just before the stop may still land: read the deadline after it.
    thread::sleep(Duration::from_millis(50));
    let deadline = flags[first].lease().expect("leads").deadline;
    // Sample both every millisecond: the leader must lower by its deadline, and before the
    // other one raises.
    let mut lowered = None;
    let mut other_raised = None;
    while other_raised.is_none() && stopped.elapsed() < 4 * interval {
        let now = Instant::now();
        let (l, o) = (flags[first].is_raised(), flags[other].is_raised());
        assert!(!(l && o), "both raised");
        if !l && lowered.is_none() {
            lowered = Some(now);
        }
        if o {
            other_raised = Some(now);
        }
        if now >= deadline {
            assert!(lowered.is_some(), "still raised after its deadline");
        }
        // The old leader may win again on a fresh connection (its renew is legal); then the
        // hang is over for it and there is nothing more to observe.
        if lowered.is_some() && l {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    server.signal_backend(pid, Signal::Cont).unwrap();
    let lowered = lowered.expect("the leader lowered");
    assert!(
        lowered <= deadline + Duration::from_millis(5),
        "lowered late"
    );
    println!(
        "hung backend: leader lowered {:?} after the stop ({:?} before its deadline); \
         other raised {:?} after the stop",
        lowered - stopped,
        deadline.saturating_duration_since(lowered),
        other_raised.map(|t| t - stopped)
    );
    if let Some(o) = other_raised {
        assert!(
            o > lowered,
            "the other raised only after the leader lowered"
        );
    }
    // After SIGCONT everybody carries on: one leader, never two; the old leader, once
    // replaced, stays a follower.
    let now_leading = leader(&flags, 3 * interval);
    if other_raised.is_some() {
        assert_eq!(now_leading, other, "the old leader came back as a follower");
    }
    assert_never_two(&flags, interval * 2);
    assert_eq!(raised(&flags), vec![now_leading]);
}

/// The highest row version any of `flags` holds a lease on.
fn max_version(flags: &[Flag]) -> i64 {
    flags
        .iter()
        .filter_map(|f| f.lease())
        .map(|l| l.version)
        .max()
        .unwrap_or(-1)
}

/// Waits until one of `flags` leads on a row written after `version`: a statement went
/// through, not just a lease that has not run out yet.
fn wait_for_write(flags: &[Flag], version: i64, timeout: Duration) {
    wait_for("a new write", timeout, || {
        (raised(flags).len() == 1 && max_version(flags) > version).then_some(())
    });
}

#[test]
fn lost_connections_and_a_server_restart_are_survived() {
    let mut server = server();
    let flags: Vec<Flag> = (0..2).map(|i| flag(&server, &format!("p{i}"))).collect();
    leader(&flags, 3 * SECOND);
    let version = max_version(&flags);
    let killing = Instant::now();
    psql(
        &server,
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name like 'leadership:%'",
    );
    // Both reconnect; one leads (the same one, usually, on a fresh connection).
    wait_for_write(&flags, version, 4 * SECOND);
    println!("a write {:?} after pg_terminate_backend", killing.elapsed());
    assert_never_two(&flags, SECOND);
    let before: i64 = psql(
        &server,
        "select count(*) from pg_stat_activity where application_name like 'leadership:%'",
    )
    .parse()
    .unwrap();
    assert_eq!(before, 2, "one connection each after reconnecting");

    let version = max_version(&flags);
    let restarting = Instant::now();
    server.restart().expect("restart");
    println!("server restarted in {:?}", restarting.elapsed());
    wait_for_write(&flags, version, 8 * SECOND);
    let up = leader(&flags, SECOND);
    println!("a write {:?} after the restart began", restarting.elapsed());
    assert_never_two(&flags, 2 * SECOND);
    assert_eq!(raised(&flags), vec![up]);
}

#[test]
fn a_cold_start_race_on_an_empty_database_brings_everyone_up_with_one_leader() {
    let server = server();
    let url = server.conn_string();
    for round in 0..3 {
        psql(&server, "drop table if exists leadership_flags");
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (barrier, url) = (Arc::clone(&barrier), url.clone());
                thread::spawn(move || {
                    barrier.wait();
                    Flag::builder("jobs", format!("p{i}"))
                        .interval(SECOND)
                        .timeout(Duration::from_millis(300))
                        .connect_str(&url)
                        .start(postgres::NoTls)
                })
            })
            .collect();
        let flags: Vec<Flag> = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"))
            })
            .collect();
        leader(&flags, 3 * SECOND);
        assert_never_two(&flags, SECOND / 2);
    }
}

fn start_err(builder: leadership_blocking::FlagBuilder) -> Error {
    match builder.start(postgres::NoTls) {
        Ok(_) => panic!("started"),
        Err(e) => e,
    }
}

#[test]
fn bad_input_gives_typed_errors_and_leaves_rows_alone() {
    let server = server();
    let url = server.conn_string();
    let b = |name: &str, process: &str| {
        Flag::builder(name, process)
            .interval(SECOND)
            .timeout(Duration::from_millis(300))
            .connect_str(&url)
    };

    // Names.
    assert!(matches!(
        start_err(b("a\0b", "p")),
        Error::Config(ConfigError::Nul {
            field: "name",
            at: 1
        })
    ));
    assert!(matches!(
        start_err(b("n", &"x".repeat(2000))),
        Error::Config(ConfigError::TooLong {
            field: "process",
            len: 2000,
            ..
        })
    ));
    assert!(matches!(
        start_err(b("n", "p").table("")),
        Error::Table(TableError::Empty)
    ));
    assert!(matches!(
        start_err(b("n", "p").table(&"t".repeat(64))),
        Error::Table(TableError::TooLong { .. })
    ));
    assert!(matches!(
        start_err(b("n", "p").table("a\0")),
        Error::Table(TableError::Nul(_))
    ));
    assert!(matches!(
        start_err(b("n", "p").timeout(2 * SECOND)),
        Error::Config(ConfigError::TimeoutNotBelowInterval { .. })
    ));
    assert!(matches!(
        start_err(Flag::builder("n", "p")),
        Error::NoDatabase
    ));
    assert!(matches!(
        start_err(Flag::builder("n", "p").connect_str("host=127.0.0.1 port=notaport")),
        Error::ConnectString(_)
    ));

    // Wrong table shape: the error names the column; the table and its row are untouched.
    psql(&server, "create table wrong (name text primary key, holder text not null, version bigint not null, \"timestamp\" timestamp not null)");
    psql(
        &server,
        "insert into wrong values ('n', 'someone', 7, '2020-01-01')",
    );
    match start_err(b("n", "p").table("wrong")) {
        Error::Shape {
            source:
                ShapeError::WrongType {
                    column: "timestamp",
                    ..
                },
            ..
        } => {}
        e => panic!("expected a wrong timestamp type, got {e}"),
    }
    psql(
        &server,
        "create table unkeyed (name text, holder text, version bigint, \"timestamp\" timestamptz)",
    );
    assert!(matches!(
        start_err(b("n", "p").table("unkeyed")),
        Error::Shape {
            source: ShapeError::NameNotUnique,
            ..
        }
    ));
    assert_eq!(
        psql(&server, "select holder, version from wrong"),
        "someone|7"
    );

    // Odd rows in a nullable table made by hand: no panic, never raised, rows untouched.
    // (A NULL holder alone does not stop a takeover once the timestamp is old: the row is
    // then simply rewritten; here its timestamp is in the future.)
    psql(&server, "create table odd (name text primary key, holder text, version bigint, \"timestamp\" timestamptz)");
    psql(
        &server,
        "insert into odd values ('null-holder', NULL, 5, now() + interval '1 hour'), \
         ('max-version', 'x', 9223372036854775807, now() - interval '1 hour'), \
         ('infinite', 'x', 3, 'infinity'), ('null-version', 'x', NULL, now() - interval '1 hour'), \
         ('null-timestamp', 'x', 4, NULL)",
    );
    let before = psql(&server, "select * from odd order by name");
    let names = [
        "null-holder",
        "max-version",
        "infinite",
        "null-version",
        "null-timestamp",
    ];
    let odd: Vec<Flag> = names
        .iter()
        .map(|n| {
            b(n, "p")
                .table("odd")
                .start(postgres::NoTls)
                .unwrap_or_else(|e| panic!("{n}: {e}"))
        })
        .collect();
    let end = Instant::now() + 5 * SECOND / 2;
    while Instant::now() < end {
        let taken: Vec<&str> = raised(&odd).into_iter().map(|i| names[i]).collect();
        assert!(taken.is_empty(), "odd rows taken: {taken:?}");
        thread::sleep(Duration::from_millis(5));
    }
    drop(odd);
    assert_eq!(psql(&server, "select * from odd order by name"), before);

    // A lock on the table holds up the start: it gives up after its bound.
    let mut locker = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    locker
        .batch_execute(
            "create table locked (name text primary key, holder text not null, \
             version bigint not null, \"timestamp\" timestamptz not null)",
        )
        .unwrap();
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("lock table locked in access exclusive mode")
        .unwrap();
    let starting = Instant::now();
    let e = start_err(b("n", "p").table("locked"));
    let took = starting.elapsed();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(took < 3 * SECOND, "start gave up after {took:?}");
    tx.rollback().unwrap();

    // Unreachable: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = start_err(
        Flag::builder("n", "p")
            .interval(SECOND)
            .timeout(Duration::from_millis(300))
            .connect_str(&format!("host=127.0.0.1 port={port} user=postgres")),
    );
    assert!(matches!(e, Error::Connect(_)), "{e}");

    // Wrong password: one role checked by scram-sha-256 instead of trust.
    psql(&server, "set password_encryption = 'scram-sha-256'; create role alice login superuser password 'right-horse'");
    let hba = server.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all alice 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    psql(&server, "select pg_reload_conf()");
    thread::sleep(Duration::from_millis(300));
    let with = |password: &str| {
        Flag::builder("pw", "p")
            .interval(SECOND)
            .timeout(Duration::from_millis(300))
            .connect_str(&format!(
                "host=127.0.0.1 port={} user=alice password={password} dbname=postgres",
                server.port()
            ))
    };
    let e = start_err(with("wrong-battery"));
    assert!(matches!(e, Error::Authentication(_)), "{e}");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("wrong-battery"),
        "the password leaked: {text}"
    );
    with("right-horse")
        .start(postgres::NoTls)
        .expect("the right password works")
        .close()
        .unwrap();
}

#[test]
fn one_statement_per_check_for_leader_and_follower() {
    let server = server();
    for role in ["pa", "pb"] {
        psql(&server, &format!("create role {role} login superuser"));
    }
    let flags: Vec<Flag> = ["pa", "pb"]
        .iter()
        .map(|role| {
            Flag::builder("jobs", *role)
                .interval(SECOND)
                .timeout(Duration::from_millis(300))
                .connect_str(&format!(
                    "host=127.0.0.1 port={} user={role} dbname=postgres",
                    server.port()
                ))
                .start(postgres::NoTls)
                .unwrap()
        })
        .collect();
    let first = leader(&flags, 3 * SECOND);
    thread::sleep(SECOND / 2);
    let version = |s: &PgServer| -> i64 {
        psql(s, "select version from leadership_flags")
            .parse()
            .unwrap()
    };
    psql(&server, "select pg_stat_statements_reset()");
    let v0 = version(&server);
    thread::sleep(5 * SECOND);
    let v1 = version(&server);
    assert_eq!(raised(&flags), vec![first], "steady state throughout");
    let stats = psql(
        &server,
        "select r.rolname, (s.query like 'WITH seen AS%')::int, sum(s.calls) \
         from pg_stat_statements s join pg_roles r on r.oid = s.userid \
         where r.rolname in ('pa', 'pb') group by 1, 2 order by 1, 2",
    );
    let mut calls = std::collections::BTreeMap::new();
    for line in stats.lines() {
        let f: Vec<&str> = line.split('|').collect();
        calls.insert(
            (f[0].to_string(), f[1] == "1"),
            f[2].parse::<i64>().unwrap(),
        );
    }
    let leader_role = ["pa", "pb"][first];
    let follower_role = ["pa", "pb"][1 - first];
    for role in [leader_role, follower_role] {
        let checks = calls.get(&(role.to_string(), true)).copied().unwrap_or(0);
        let others = calls.get(&(role.to_string(), false)).copied().unwrap_or(0);
        let kind = if role == leader_role {
            "leader"
        } else {
            "follower"
        };
        println!(
            "{kind}: {checks} checks in 5 s, {others} other statements: {} statements per check",
            (checks + others) as f64 / checks as f64
        );
        assert!(checks >= 4, "{kind} checked: {checks}");
        assert_eq!(others, 0, "{kind} ran statements other than the check");
    }
    let renewals = v1 - v0;
    let leader_checks = calls[&(leader_role.to_string(), true)];
    println!("leader: {renewals} renewals, {leader_checks} check statements");
    assert!(
        (renewals - leader_checks).abs() <= 1,
        "every leader check is one renew"
    );
}

#[test]
fn close_is_bounded_when_the_backend_hangs() {
    let server = server();
    let timeout = Duration::from_millis(300);
    let flag = flag(&server, "p0");
    leader(std::slice::from_ref(&flag), 3 * SECOND);
    let pid = backend_pid(&server, "p0");
    server.signal_backend(pid, Signal::Stop).unwrap();
    let closing = Instant::now();
    let result = flag.close();
    let took = closing.elapsed();
    server.signal_backend(pid, Signal::Cont).unwrap();
    println!("close with a hung backend: {result:?} after {took:?}");
    assert!(
        took < 3 * timeout + Duration::from_millis(300),
        "close took {took:?}"
    );
    match result {
        // The release went through a fresh connection, or it was the one that hung.
        Ok(()) | Err(Error::ReleaseFailed) => {}
        Err(e) => panic!("unexpected: {e}"),
    }
}

#[test]
fn a_refusing_precheck_keeps_the_flag_down_until_it_passes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = server();
    let pass = Arc::new(AtomicBool::new(false));
    let answer = Arc::clone(&pass);
    let flag = Flag::builder("jobs", "p0")
        .interval(SECOND)
        .timeout(Duration::from_millis(300))
        .precheck(move || Ok::<_, std::io::Error>(answer.load(Ordering::SeqCst)))
        .connect_str(&server.conn_string())
        .start(postgres::NoTls)
        .unwrap();
    let end = Instant::now() + 3 * SECOND / 2;
    while Instant::now() < end {
        assert!(!flag.is_raised(), "raised although the precheck refuses");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        row(&server, "jobs"),
        "",
        "a refusing process writes nothing"
    );
    pass.store(true, Ordering::SeqCst);
    wait_for("raised once the precheck passes", 2 * SECOND, || {
        flag.is_raised().then_some(())
    });
    // Refusing again steps down and releases the row at once.
    pass.store(false, Ordering::SeqCst);
    wait_for("lowered once the precheck refuses", 2 * SECOND, || {
        (!flag.is_raised()).then_some(())
    });
    wait_for("released", SECOND, || {
        row(&server, "jobs")
            .ends_with("1970-01-01 00:00:00+00")
            .then_some(())
    });
}
