//! The tokio driver against a real PostgreSQL: election, failover, handover, a hung backend,
//! restarts, the cold-start race, bad input, and statements per check.
//!
//! Each test starts its own server. Intervals are short (1–2 s); timing assertions check
//! orderings and generous bounds, since the machine may be slow.

use std::time::{Duration, Instant};

use leadership_core::sql::ShapeError;
use leadership_core::ConfigError;
use leadership_driver_testkit::observe::Logs;
use leadership_pgkit::helpers::{login_as, psql, server};
use leadership_pgkit::pg::{PgServer, Signal};
use leadership_tokio::{Error, Flag, FlagBuilder};
use tokio_postgres::NoTls;

const INTERVAL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_millis(500);
/// The leader's deadline after it sends a renew: interval - margin (interval/20).
const DEADLINE: Duration = Duration::from_millis(1900);

fn builder(pg: &PgServer, process: &str) -> FlagBuilder {
    Flag::builder("job", process)
        .connect_str(&pg.conn_string())
        .interval(INTERVAL)
        .timeout(TIMEOUT)
}

/// Like [`builder`], but connecting as role `process` (created as a superuser), so that
/// `pg_stat_statements` and `ALTER ROLE … NOLOGIN` can single the process out.
fn builder_as_role(pg: &PgServer, process: &str) -> FlagBuilder {
    Flag::builder("job", process)
        .connect_str(&login_as(pg, process))
        .interval(INTERVAL)
        .timeout(TIMEOUT)
}

async fn start_all(pg: &PgServer, n: usize) -> Vec<Flag> {
    let mut flags = Vec::new();
    for i in 0..n {
        flags.push(
            builder(pg, &format!("p{i}"))
                .seed(i as u64)
                .start(NoTls)
                .await
                .unwrap_or_else(|e| panic!("p{i}: {e}")),
        );
    }
    flags
}

fn raised(flags: &[Option<Flag>]) -> Vec<usize> {
    flags
        .iter()
        .enumerate()
        .filter(|(_, f)| f.as_ref().is_some_and(|f| f.is_raised()))
        .map(|(i, _)| i)
        .collect()
}

/// Panics if two of `flags` believed they led at one instant, judged from the instants their
/// drivers recorded (a pass of `raised` reads the flags one after another, so it may read a
/// handover as two leaders: it finds who leads, it does not judge).
fn assert_one_at_a_time(flags: &[Option<Flag>]) {
    Logs::of(flags).assert_safe();
}

/// Polls every 5 ms until exactly one flag is raised; panics after `within`, or if two ever
/// led at once.
async fn wait_for_leader(flags: &[Option<Flag>], within: Duration) -> (usize, Instant) {
    let until = Instant::now() + within;
    loop {
        let now = raised(flags);
        assert_one_at_a_time(flags);
        if let [leader] = now[..] {
            return (leader, Instant::now());
        }
        assert!(Instant::now() < until, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Watches for `during`: never two leaders at once; returns every index seen raised.
async fn watch(flags: &[Option<Flag>], during: Duration) -> Vec<usize> {
    let until = Instant::now() + during;
    let mut seen = Vec::new();
    while Instant::now() < until {
        let now = raised(flags);
        assert_one_at_a_time(flags);
        for i in now {
            if !seen.contains(&i) {
                seen.push(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_one_at_a_time(flags);
    seen
}

/// The pid of `process`'s backend other than `not` (a frozen backend lingers in
/// `pg_stat_activity` until it runs again), waiting up to five seconds for it to connect.
async fn backend_pid(pg: &PgServer, process: &str, not: Option<i32>) -> i32 {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = psql(
            pg,
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'leadership:{process}' \
                 AND pid <> {}",
                not.unwrap_or(0)
            ),
        );
        let pids: Vec<i32> = pids.lines().map(|l| l.parse().unwrap()).collect();
        match pids[..] {
            [pid] => return pid,
            [] => assert!(Instant::now() < until, "{process} has no backend"),
            _ => panic!("{process} has several backends: {pids:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn somes(flags: Vec<Flag>) -> Vec<Option<Flag>> {
    flags.into_iter().map(Some).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_raises_exactly_one_and_it_stays() {
    let pg = server();
    let flags = somes(start_all(&pg, 5).await);
    let (leader, _) = wait_for_leader(&flags, Duration::from_secs(5)).await;
    // Three leases: a leader that failed to renew would show as a gap or a second raiser.
    let until = Instant::now() + INTERVAL * 3;
    while Instant::now() < until {
        assert_eq!(raised(&flags), vec![leader], "the leader must stay raised");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let row = psql(
        &pg,
        "SELECT holder FROM leadership_flags WHERE name = 'job'",
    );
    assert_eq!(row, format!("p{leader}"));
    let token = flags[leader].as_ref().unwrap().lease().unwrap().token;
    // The first term's token is the inserted version: the server's clock in µs (issue 25).
    let version: i64 = psql(
        &pg,
        "SELECT version FROM leadership_flags WHERE name = 'job'",
    )
    .parse()
    .unwrap();
    let clock: i64 = psql(&pg, "SELECT (extract(epoch FROM now()) * 1000000)::bigint")
        .parse()
        .unwrap();
    assert!(
        token <= version && version - token <= 10,
        "{token} {version}"
    );
    assert!(
        token > clock - 60_000_000 && token <= clock,
        "{token} vs {clock}"
    );
    for f in flags.into_iter().flatten() {
        f.close().await.unwrap();
    }
}

/// A flag on a runtime of its own, so that the test can crash it: shutting the runtime down
/// drops the driver mid-flight, without a release, as a killed process would.
struct Crashable {
    runtime: tokio::runtime::Runtime,
    flag: Flag,
}

fn start_crashable(builder: FlagBuilder) -> Crashable {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let flag = runtime.block_on(builder.start(NoTls)).unwrap();
        Crashable { runtime, flag }
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_fails_over_after_about_the_lease() {
    let pg = server();
    let crashable: Vec<Crashable> = (0..3)
        .map(|i| start_crashable(builder(&pg, &format!("p{i}")).seed(i)))
        .collect();
    let mut flags: Vec<Option<Flag>> = crashable.iter().map(|c| Some(c.flag.clone())).collect();
    let logs = Logs::of(&flags);
    let (leader, _) = wait_for_leader(&flags, Duration::from_secs(5)).await;
    let token = flags[leader].as_ref().unwrap().lease().unwrap().token;
    let mut crashable: Vec<Option<Crashable>> = crashable.into_iter().map(Some).collect();
    let crashed = Instant::now();
    let victim = crashable[leader].take().unwrap();
    victim.runtime.shutdown_background();
    flags[leader] = None;
    drop(victim.flag);
    let (next, at) = wait_for_leader(&flags, INTERVAL * 3).await;
    let took = at - crashed;
    eprintln!("crash failover: {took:?}");
    assert_ne!(next, leader);
    // The lease's remaining life (≤ interval) plus a follower's jitter: well under two leases.
    assert!(took <= INTERVAL * 2, "failover took {took:?}");
    assert!(
        took >= Duration::from_millis(100),
        "no release: the lease had to run out"
    );
    let lease = flags[next].as_ref().unwrap().lease().unwrap();
    assert!(
        lease.token > token,
        "fencing tokens grow: {} > {token}",
        lease.token
    );
    assert_eq!(lease.won_by, leadership_tokio::WonBy::TookOver);
    logs.assert_safe();
    drop(flags);
    for c in crashable.into_iter().flatten() {
        let Crashable { runtime, flag } = c;
        std::thread::spawn(move || {
            runtime.block_on(flag.close()).unwrap();
        })
        .join()
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_releases_the_row_in_the_background() {
    let pg = server();
    let mut flags = somes(start_all(&pg, 2).await);
    let logs = Logs::of(&flags);
    let (leader, _) = wait_for_leader(&flags, Duration::from_secs(5)).await;
    let other = 1 - leader;
    tokio::time::timeout(INTERVAL, async {
        while flags[other].as_ref().unwrap().current_holder().is_none() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the follower checked");
    // Two clones; only dropping the last one lets go of the flag.
    let clone = flags[leader].clone().unwrap();
    flags[leader] = None;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(clone.is_raised(), "a clone still holds the flag");
    let dropped = Instant::now();
    drop(clone);
    let (next, at) = wait_for_leader(&flags, INTERVAL).await;
    let took = at - dropped;
    eprintln!("last handle dropped -> follower raised: {took:?}");
    assert_eq!(next, other);
    assert!(
        took < Duration::from_millis(500),
        "released, not expired: {took:?}"
    );
    logs.assert_safe();
    flags[other].take().unwrap().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_the_row_and_another_takes_over() {
    let pg = server();
    let mut flags = somes(start_all(&pg, 3).await);
    let logs = Logs::of(&flags);
    let (leader, _) = wait_for_leader(&flags, Duration::from_secs(5)).await;
    // Let every follower run its first check, so none checks by chance right after the close.
    watch(&flags, Duration::from_millis(500)).await;
    let closing = Instant::now();
    flags[leader].take().unwrap().close().await.unwrap();
    let closed = closing.elapsed();
    assert!(
        closed < TIMEOUT,
        "close waits for one statement: {closed:?}"
    );
    // Released (timestamp 1970, version + 1, holder kept), and already taken over by a
    // notified follower, or about to be.
    let row = psql(
        &pg,
        "SELECT holder, extract(epoch from \"timestamp\")::bigint FROM leadership_flags",
    );
    assert!(
        row == format!("p{leader}|0") || !row.starts_with(&format!("p{leader}|")),
        "{row}"
    );
    let (next, at) = wait_for_leader(&flags, INTERVAL * 2).await;
    eprintln!(
        "graceful handover: {:?} (close itself {closed:?})",
        at - closing
    );
    assert_ne!(next, leader);
    // The release's notification wakes the followers (tokio_notify.rs holds the tight bound);
    // without it they would check when the old lease expires, at most one lease later.
    assert!(at - closing <= INTERVAL + Duration::from_millis(500));
    logs.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_lowers_the_leader_by_its_deadline_before_anyone_else_raises() {
    let pg = server();
    let mut flags = Vec::new();
    for i in 0..3 {
        let f = builder_as_role(&pg, &format!("r{i}"))
            .seed(i)
            .start(NoTls)
            .await
            .unwrap();
        flags.push(Some(f));
    }
    let logs = Logs::of(&flags);
    let (leader, _) = wait_for_leader(&flags, Duration::from_secs(5)).await;
    let name = format!("r{leader}");
    let pid = backend_pid(&pg, &name, None).await;
    // Its reconnects must fail too, or it would simply renew on a fresh connection (see the
    // next test): the leader is cut off from the database.
    psql(&pg, &format!("ALTER ROLE \"{name}\" NOLOGIN"));
    pg.signal_backend(pid, Signal::Stop).unwrap();
    let frozen = Instant::now();
    let next = loop {
        assert_one_at_a_time(&flags);
        if let Some(&i) = raised(&flags).iter().find(|&&i| i != leader) {
            break i;
        }
        assert!(frozen.elapsed() < INTERVAL * 4, "nobody took over");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // When the leader stopped believing and the next began, as both recorded them.
    let record = logs.record();
    let term = |p: usize| {
        let p = format!("p{p}");
        record
            .terms
            .iter()
            .rfind(|t| t.process == p)
            .unwrap()
            .clone()
    };
    let (old, new) = (term(leader), term(next));
    let lowered = old.believed_until().saturating_duration_since(frozen);
    let raised_at = new.began.saturating_duration_since(frozen);
    eprintln!(
        "frozen backend: leader lowered after {lowered:?}, r{next} raised after {raised_at:?}"
    );
    // Its last renew was sent before the freeze, so its deadline is at most DEADLINE later.
    assert!(
        lowered <= DEADLINE + Duration::from_millis(100),
        "lowered {lowered:?} after the freeze"
    );
    assert!(old.ended_ns < new.began_ns, "{}", record.describe());

    pg.signal_backend(pid, Signal::Cont).unwrap();
    psql(&pg, &format!("ALTER ROLE \"{name}\" LOGIN"));
    // It reconnects and follows: a new backend, never raised while the other leads.
    let seen = watch(&flags, INTERVAL * 2).await;
    assert_eq!(seen, vec![next], "only the new leader may be raised");
    backend_pid(&pg, &name, Some(pid)).await;
    for f in flags.iter_mut() {
        f.take().unwrap().close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_is_abandoned_and_the_leader_renews_on_a_new_connection() {
    let pg = server();
    let flags = somes(start_all(&pg, 2).await);
    let (leader, _) = wait_for_leader(&flags, Duration::from_secs(5)).await;
    let pid = backend_pid(&pg, &format!("p{leader}"), None).await;
    pg.signal_backend(pid, Signal::Stop).unwrap();
    // The hung statement is abandoned after the timeout and a new connection renews the lease
    // (its compare-and-set still matches); no one else may be raised meanwhile.
    let seen = watch(&flags, INTERVAL * 2).await;
    assert!(
        seen.iter().all(|&i| i == leader) || seen.len() == 1,
        "{seen:?}"
    );
    // A new connection replaced the frozen one.
    backend_pid(&pg, &format!("p{leader}"), Some(pid)).await;
    pg.signal_backend(pid, Signal::Cont).unwrap();
    // The frozen backend's stale renew, run after SIGCONT, must not disturb anything.
    let seen = watch(&flags, INTERVAL).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_and_a_server_restart_are_survived() {
    let mut pg = server();
    let flags = somes(start_all(&pg, 3).await);
    let (leader, _) = wait_for_leader(&flags, Duration::from_secs(5)).await;
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(backend_pid(&pg, &format!("p{i}"), None).await);
    }
    psql(
        &pg,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name LIKE 'leadership:%'",
    );
    // The leader renews on a new connection before its deadline: it stays the only one.
    let seen = watch(&flags, INTERVAL * 2).await;
    assert_eq!(seen, vec![leader], "{seen:?}");
    for (i, old) in before.iter().enumerate() {
        // p{i} reconnected.
        backend_pid(&pg, &format!("p{i}"), Some(*old)).await;
    }

    pg.restart().unwrap();
    let restarted = Instant::now();
    let (after, at) = wait_for_leader(&flags, INTERVAL * 5).await;
    eprintln!(
        "server restart: p{after} raised {:?} after the restart",
        at - restarted
    );
    let seen = watch(&flags, INTERVAL * 2).await;
    assert_eq!(seen, vec![after], "stable after the restart: {seen:?}");
    for f in flags.into_iter().flatten() {
        f.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_race_all_come_up_with_one_leader() {
    let pg = server();
    for round in 0..4 {
        psql(&pg, "DROP TABLE IF EXISTS leadership_flags");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let b = builder(&pg, &format!("p{i}")).seed(i);
            tasks.push(tokio::spawn(b.start(NoTls)));
        }
        // Two processes creating the table the Go way (no lock) in the same instant.
        let conn = pg.conn_string();
        let go_like: Vec<_> = (0..2)
            .map(|_| {
                let conn = conn.clone();
                tokio::spawn(async move {
                    let (client, c) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
                    tokio::spawn(c);
                    // It may lose the race, as the Go flag does; we only want the collision.
                    let _ = client
                        .batch_execute(
                            &leadership_core::sql::Statements::new(&Default::default())
                                .create_table,
                        )
                        .await;
                })
            })
            .collect();
        let mut flags = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let flag = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}, p{i}: {e}"));
            flags.push(Some(flag));
        }
        for g in go_like {
            g.await.unwrap();
        }
        wait_for_leader(&flags, Duration::from_secs(5)).await;
        watch(&flags, Duration::from_millis(300)).await;
        for f in flags.into_iter().flatten() {
            f.close().await.unwrap();
        }
    }
}

/// A process that creates the table without the creation lock (as the Go flag does) and commits
/// while we create it too: our `CREATE` fails on the catalog's unique index, and we find the
/// table instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_table_survives_a_process_that_creates_it_without_the_lock() {
    let pg = server();
    let (mut go, conn) = tokio_postgres::connect(&pg.conn_string(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tx = go.transaction().await.unwrap();
    tx.batch_execute(&leadership_core::sql::Statements::new(&Default::default()).create_table)
        .await
        .unwrap();
    // Not committed: invisible to our TABLE_EXISTS, and our CREATE waits on it.
    let ours = tokio::spawn(builder(&pg, "p").start(NoTls));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = psql(
        &pg,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'leadership:p' \
         AND wait_event_type = 'Lock'",
    );
    tx.commit().await.unwrap();
    let flag = ours.await.unwrap().unwrap();
    assert_eq!(waiting, "1", "our CREATE waited for the other transaction");
    wait_for_leader(&[Some(flag)], Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_the_wrong_shape_is_a_typed_error_naming_the_column() {
    let pg = server();
    let cases = [
        (
            "CREATE TABLE t1 (name text PRIMARY KEY, holder text NOT NULL, version bigint NOT NULL, \
             \"timestamp\" timestamp NOT NULL)",
            "t1",
            "timestamp",
        ),
        (
            "CREATE TABLE t2 (name text PRIMARY KEY, version bigint, \"timestamp\" timestamptz)",
            "t2",
            "holder",
        ),
        (
            "CREATE TABLE t3 (name text PRIMARY KEY, holder text, version integer, \"timestamp\" timestamptz)",
            "t3",
            "version",
        ),
    ];
    for (ddl, table, column) in cases {
        psql(&pg, ddl);
        let err = builder(&pg, "p")
            .table(table)
            .start(NoTls)
            .await
            .unwrap_err();
        match &err {
            Error::Shape { source, .. } => {
                let named = match source {
                    ShapeError::WrongType { column, .. } | ShapeError::MissingColumn { column } => {
                        *column
                    }
                    other => panic!("{table}: {other:?}"),
                };
                assert_eq!(named, column, "{err}");
            }
            other => panic!("{table}: expected a shape error, got {other:?}"),
        }
        assert!(err.to_string().contains(column), "{err}");
    }
    psql(
        &pg,
        "CREATE TABLE t4 (name text, holder text, version bigint, \"timestamp\" timestamptz)",
    );
    let err = builder(&pg, "p")
        .table("t4")
        .start(NoTls)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                source: ShapeError::NameNotUnique,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_typed_errors_and_hostile_table_names_are_quoted() {
    let pg = server();
    let err = |r: Result<Flag, Error>| r.unwrap_err();
    let b = || builder(&pg, "p");
    assert!(matches!(
        err(Flag::builder("a\0b", "p")
            .connect_str(&pg.conn_string())
            .start(NoTls)
            .await),
        Error::Config(ConfigError::Nul {
            field: "name",
            at: 1
        })
    ));
    assert!(matches!(
        err(Flag::builder("job", "x".repeat(1025))
            .connect_str(&pg.conn_string())
            .start(NoTls)
            .await),
        Error::Config(ConfigError::TooLong {
            field: "process",
            ..
        })
    ));
    assert!(matches!(
        err(b().table("t\0").start(NoTls).await),
        Error::Table(_)
    ));
    assert!(matches!(
        err(b().table(&"t".repeat(64)).start(NoTls).await),
        Error::Table(_)
    ));
    assert!(matches!(
        err(b().timeout(INTERVAL).start(NoTls).await),
        Error::Config(ConfigError::TimeoutNotBelowInterval { .. })
    ));
    assert!(matches!(
        err(Flag::builder("job", "p").start(NoTls).await),
        Error::NoDatabase
    ));
    assert!(matches!(
        err(Flag::builder("job", "p")
            .connect_str("host=x port=notanumber")
            .start(NoTls)
            .await),
        Error::ConnectString(_)
    ));

    // A hostile table name is quoted: it creates exactly that table and nothing else happens.
    psql(&pg, "CREATE TABLE victim (x int)");
    let hostile = r#"x"; DROP TABLE victim; --"#;
    let flag = b().table(hostile).start(NoTls).await.unwrap();
    wait_for_leader(&[Some(flag)], Duration::from_secs(5)).await;
    assert_eq!(psql(&pg, "SELECT count(*) FROM victim"), "0");
    assert_eq!(
        psql(
            &pg,
            &format!("SELECT holder FROM \"{}\"", hostile.replace('"', "\"\""))
        ),
        "p"
    );
    // Long names up to the limit work and are stored intact, multi-byte characters included.
    let long = "é".repeat(512);
    let flag = Flag::builder(long.clone(), long.clone())
        .connect_str(&pg.conn_string())
        .start(NoTls)
        .await
        .unwrap();
    wait_for_leader(&[Some(flag)], Duration::from_secs(5)).await;
    assert_eq!(
        psql(
            &pg,
            &format!(
                "SELECT count(*) FROM leadership_flags WHERE name = '{long}' AND holder = '{long}'"
            )
        ),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_rows_never_raise_and_are_left_intact() {
    let pg = server();
    // A hand-made table that allows NULLs.
    psql(
        &pg,
        "CREATE TABLE leadership_flags (name text PRIMARY KEY, holder text, version bigint, \
         \"timestamp\" timestamptz); \
         INSERT INTO leadership_flags VALUES \
         ('null-version', 'other', NULL, '1970-01-01Z'), \
         ('null-timestamp', 'other', 3, NULL), \
         ('exhausted', 'other', 9223372036854775807, '1970-01-01Z'), \
         ('forever', 'other', 5, 'infinity'), \
         ('null-holder', NULL, 7, '1970-01-01Z'), \
         ('almost', 'other', 9223372036854775806, '1970-01-01Z')",
    );
    let before = psql(
        &pg,
        "SELECT name, holder, version, \"timestamp\" FROM leadership_flags \
         WHERE name NOT IN ('null-holder', 'almost') ORDER BY name",
    );
    let start = |name: &'static str| {
        let b = Flag::builder(name, "p")
            .connect_str(&pg.conn_string())
            .interval(INTERVAL)
            .timeout(TIMEOUT);
        async move { Some(b.start(NoTls).await.unwrap()) }
    };
    let mut stuck = Vec::new();
    for name in ["null-version", "null-timestamp", "exhausted", "forever"] {
        stuck.push(start(name).await);
    }
    let null_holder = [start("null-holder").await];
    let almost = [start("almost").await];
    // An expired row with a NULL holder is an ordinary takeover: version + 1, holder set.
    wait_for_leader(&null_holder, Duration::from_secs(5)).await;
    // One below the maximum is taken over once, at i64::MAX, and can never be renewed.
    wait_for_leader(&almost, Duration::from_secs(5)).await;
    let seen = watch(&stuck, INTERVAL * 2).await;
    assert!(seen.is_empty(), "an odd row raised {seen:?}");
    assert_eq!(
        psql(
            &pg,
            "SELECT name, holder, version, \"timestamp\" FROM leadership_flags \
         WHERE name NOT IN ('null-holder', 'almost') ORDER BY name"
        ),
        before,
        "rows it could not take are untouched"
    );
    assert!(
        !almost[0].as_ref().unwrap().is_raised(),
        "lowered at the deadline"
    );
    assert_eq!(
        psql(
            &pg,
            "SELECT holder, version FROM leadership_flags WHERE name = 'almost'"
        ),
        "p|9223372036854775807"
    );
    assert_eq!(
        psql(
            &pg,
            "SELECT holder, version >= 8 FROM leadership_flags WHERE name = 'null-holder'"
        ),
        "p|t"
    );
    for f in stuck.into_iter().chain(null_holder).chain(almost).flatten() {
        f.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_hosts_and_refused_logins_are_typed_errors() {
    let pg = server();
    let started = Instant::now();
    let err = Flag::builder("job", "p")
        .connect_str("host=127.0.0.1 port=1 user=x")
        .start(NoTls)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    eprintln!("refused: {err}");
    // A black-holed address: bounded by the timeout whatever the network does.
    let err = Flag::builder("job", "p")
        .connect_str("host=192.0.2.1 port=5432 user=x")
        .timeout(TIMEOUT)
        .start(NoTls)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Connect(_) | Error::Timeout { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Password authentication for one role over TCP; the rest of the file stays trust.
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all pw 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    psql(
        &pg,
        "CREATE ROLE pw LOGIN PASSWORD 'right-secret'; SELECT pg_reload_conf()",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = |password: &str| {
        format!(
            "host=127.0.0.1 port={} user=pw password={password} dbname=postgres",
            pg.port()
        )
    };
    let err = Flag::builder("job", "p")
        .connect_str(&url("wrong-secret"))
        .start(NoTls)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    eprintln!("wrong password: {err}");
    assert!(
        text.contains("28P01"),
        "the SQLSTATE is in the message: {text}"
    );
    assert!(
        !text.contains("wrong-secret") && !text.contains("right-secret"),
        "{text}"
    );
    let err = Flag::builder("job", "p")
        .connect_str(&format!(
            "host=127.0.0.1 port={} user=nobody dbname=postgres",
            pg.port()
        ))
        .start(NoTls)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Authentication(_)),
        "unknown role: {err:?}"
    );
    // The right password works (the role may not create the table: create it first).
    psql(
        &pg,
        "CREATE TABLE leadership_flags (name text PRIMARY KEY, holder text NOT NULL, \
               version bigint NOT NULL, \"timestamp\" timestamptz NOT NULL); \
               GRANT ALL ON leadership_flags TO pw",
    );
    let flag = Flag::builder("job", "p")
        .connect_str(&url("right-secret"))
        .start(NoTls)
        .await
        .unwrap();
    wait_for_leader(&[Some(flag)], Duration::from_secs(5)).await;
}

/// Runs a leader and a follower as separate roles for `checks` leader checks and counts, with
/// `pg_stat_statements`, the statements each ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_is_one_statement_for_leader_and_follower() {
    let pg = server();
    let interval = Duration::from_secs(1);
    let start = |role: &'static str| {
        let b = builder_as_role(&pg, role)
            .interval(interval)
            .timeout(Duration::from_millis(300));
        async move { b.start(NoTls).await.unwrap() }
    };
    let leader = [Some(start("leader").await)];
    wait_for_leader(&leader, Duration::from_secs(5)).await;
    let follower = start("follower").await;
    psql(&pg, "SELECT pg_stat_statements_reset()");
    let version_before: i64 = psql(&pg, "SELECT version FROM leadership_flags")
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let version_after: i64 = psql(&pg, "SELECT version FROM leadership_flags")
        .parse()
        .unwrap();
    let stats = psql(
        &pg,
        "SELECT r.rolname, s.calls, s.query LIKE 'WITH server AS%' FROM pg_stat_statements s \
         JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname IN ('leader', 'follower')",
    );
    let mut checks = [0i64; 2];
    for line in stats.lines() {
        let cols: Vec<&str> = line.split('|').collect();
        let role = usize::from(cols[0] == "follower");
        assert_eq!(
            cols[2], "t",
            "{} ran a statement other than the check: {line}",
            cols[0]
        );
        checks[role] += cols[1].parse::<i64>().unwrap();
    }
    let renews = version_after - version_before;
    eprintln!(
        "5 s: leader {} check statements for {renews} renews; follower {} check statements",
        checks[0], checks[1]
    );
    // The version moves once per renew, and each renew was one statement.
    assert!(renews >= 5, "the leader renews about every 0.5 s: {renews}");
    assert!(
        checks[0] <= renews + 1,
        "leader: {} statements for {renews} checks",
        checks[0]
    );
    // A follower checks when the lease would expire: about once a second, never more.
    assert!(
        (2..=8).contains(&checks[1]),
        "follower statements: {}",
        checks[1]
    );
    assert!(leader[0].as_ref().unwrap().is_raised() && !follower.is_raised());
}

/// The driver's runtime stops running (as in a process whose executor is blocked): `is_raised`,
/// asked from another thread, still turns false at the lease's deadline.
#[test]
fn is_raised_turns_false_at_the_deadline_even_when_the_driver_cannot_run() {
    let pg = server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let flag = rt.block_on(async {
        let flag = builder(&pg, "p").start(NoTls).await.unwrap();
        while !flag.is_raised() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        flag
    });
    // The winning check was sent just before this, and nothing runs the driver from here on.
    let raised = Instant::now();
    while flag.is_raised() {
        assert!(
            raised.elapsed() < DEADLINE + Duration::from_millis(50),
            "still raised"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let lowered = raised.elapsed();
    eprintln!("driver frozen: lowered {lowered:?} after the raise");
    assert!(
        lowered > DEADLINE - Duration::from_millis(300),
        "{lowered:?}"
    );
    assert!(flag.lease().is_none());
    // Driven again, it catches up: lowers, checks, and renews its own row.
    rt.block_on(async {
        wait_for_leader(&[Some(flag)], Duration::from_secs(5)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_precheck_keeps_the_process_from_leading() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let pg = server();
    let allow = Arc::new(AtomicBool::new(false));
    let a = allow.clone();
    let flag = builder(&pg, "p")
        .precheck(move || {
            let a = a.clone();
            async move { Ok::<_, std::convert::Infallible>(a.load(Ordering::SeqCst)) }
        })
        .start(NoTls)
        .await
        .unwrap();
    let flags = [Some(flag)];
    assert!(watch(&flags, Duration::from_secs(1)).await.is_empty());
    allow.store(true, Ordering::SeqCst);
    wait_for_leader(&flags, Duration::from_secs(3)).await;
    allow.store(false, Ordering::SeqCst);
    // The next renew's precheck refuses: lowered within one renew period.
    let refused = Instant::now();
    while flags[0].as_ref().unwrap().is_raised() {
        assert!(refused.elapsed() < INTERVAL, "still raised");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The pid of the backend of role `role` other than `not`, waiting up to five seconds for it.
async fn backend_of_role(pg: &PgServer, role: &str, not: i32) -> i32 {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = psql(
            pg,
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE usename = '{role}' \
                 AND application_name LIKE 'leadership:%' AND pid <> {not}"
            ),
        );
        let pids: Vec<i32> = pids.lines().map(|l| l.parse().unwrap()).collect();
        match pids[..] {
            [pid] => return pid,
            [] => assert!(Instant::now() < until, "{role} has no backend"),
            _ => panic!("{role} has several backends: {pids:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 25: two processes given one explicit name (connecting as roles `ra` and `rb`, so
/// their backends can be told apart). The second finds the first's live row under its name at
/// start and, after its own check failed (its backend frozen past the timeout), again; the
/// first's renew fails too (its backend frozen mid-renew). Neither may lead while the other
/// does, judged from the instants both drivers recorded. With the core before issue 25 the
/// second adopted the first's lease at its first check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_name_never_both_lead_through_failed_statements() {
    let pg = server();
    let twin = |role: &str, seed: u64| {
        Flag::builder("job", "twin")
            .connect_str(&login_as(&pg, role))
            .interval(INTERVAL)
            .timeout(TIMEOUT)
            .seed(seed)
    };
    let logs = Logs::new();
    let first = twin("rb", 1).start(NoTls).await.unwrap();
    logs.add("first", &first);
    let until = Instant::now() + Duration::from_secs(5);
    while !first.is_raised() {
        assert!(Instant::now() < until, "the first never led");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = twin("ra", 2).start(NoTls).await.unwrap();
    logs.add("second", &second);
    tokio::time::sleep(INTERVAL / 2).await;
    logs.assert_safe();

    // The second's check fails: its backend frozen past the timeout.
    let pid = backend_of_role(&pg, "ra", 0).await;
    pg.signal_backend(pid, Signal::Stop).unwrap();
    tokio::time::sleep(INTERVAL + TIMEOUT).await;
    pg.signal_backend(pid, Signal::Cont).unwrap();
    logs.assert_safe();

    // The first's renew fails: its backend frozen mid-renew, past the timeout.
    let pid = backend_of_role(&pg, "rb", 0).await;
    pg.signal_backend(pid, Signal::Stop).unwrap();
    tokio::time::sleep(INTERVAL).await;
    pg.signal_backend(pid, Signal::Cont).unwrap();
    tokio::time::sleep(INTERVAL * 2).await;

    let record = logs.record();
    eprintln!("twins:\n{}", record.describe());
    logs.assert_safe();
    first.close().await.unwrap();
    second.close().await.unwrap();
}
