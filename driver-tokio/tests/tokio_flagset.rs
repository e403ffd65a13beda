//! `FlagSet`: many flags of one process over one connection, against a real PostgreSQL.
//!
//! The figure (run with `--nocapture`): statements/s on the server and backends for 100 flags
//! in one `FlagSet` against 100 separate `Flag`s. `LEADERSHIP_FIGURES_WINDOW_SECS` sets the
//! window (default 4 s):
//!
//! ```sh
//! LEADERSHIP_FIGURES_WINDOW_SECS=20 cargo test --release -p leadership-tokio \
//!     --test tokio_flagset -- --nocapture statements_per_second
//! ```

use std::time::{Duration, Instant};

use leadership_driver_testkit::observe::Logs;
use leadership_pgkit::helpers::{psql, server};
use leadership_pgkit::pg::{PgServer, Signal};
use leadership_tokio::{Error, Flag, FlagSet};
use tokio_postgres::NoTls;

const INTERVAL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_millis(500);

async fn set(pg: &PgServer, process: &str) -> FlagSet {
    FlagSet::builder(process)
        .connect_str(&pg.conn_string())
        .interval(INTERVAL)
        .timeout(TIMEOUT)
        .start(NoTls)
        .await
        .unwrap()
}

fn backends(pg: &PgServer, process: &str) -> usize {
    psql(
        pg,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'leadership:{process}'"
        ),
    )
    .parse()
    .unwrap()
}

async fn all_raised(flags: &[Flag], within: Duration) {
    let until = Instant::now() + within;
    while !flags.iter().all(Flag::is_raised) {
        assert!(Instant::now() < until, "not all raised within {within:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_runs_its_flags_on_one_connection_and_hands_them_over_on_close() {
    let pg = server();
    const SHARDS: usize = 20;
    let a = set(&pg, "a").await;
    let a_flags: Vec<Flag> = (0..SHARDS)
        .map(|i| a.add(format!("shard-{i}")).unwrap())
        .collect();
    all_raised(&a_flags, INTERVAL).await;
    // One running flag per name in a set.
    assert!(matches!(a.add("shard-0"), Err(Error::DuplicateFlag(n)) if n == "shard-0"));
    assert!(matches!(a.add(""), Err(Error::Config(_))));

    let b = set(&pg, "b").await;
    let b_flags: Vec<Flag> = (0..SHARDS)
        .map(|i| b.add(format!("shard-{i}")).unwrap())
        .collect();
    let until = Instant::now() + INTERVAL;
    while !b_flags.iter().all(|f| f.current_holder().is_some()) {
        assert!(Instant::now() < until, "b's first checks");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(b_flags.iter().all(|f| !f.is_raised()));
    for (i, f) in b_flags.iter().enumerate() {
        let holder = f.current_holder().unwrap();
        assert_eq!(holder.name.as_deref(), Some("a"), "shard-{i}");
    }
    assert_eq!((backends(&pg, "a"), backends(&pg, "b")), (1, 1));

    // Closing a's flags releases each row; the notifications, routed by name over b's one
    // connection, wake each of b's flags long before its schedule (about INTERVAL away).
    let started = Instant::now();
    for f in a_flags {
        f.close().await.unwrap();
    }
    all_raised(&b_flags, Duration::from_millis(1500)).await;
    eprintln!("{SHARDS} flags handed over in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_millis(1500));
    // A closed flag's name can be added again.
    let again = a.add("shard-0").unwrap();
    drop(again);
    for f in b_flags {
        f.close().await.unwrap();
    }
}

fn backend_pid(pg: &PgServer, process: &str) -> i32 {
    psql(
        pg,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'leadership:{process}'"
        ),
    )
    .parse()
    .unwrap()
}

/// Samples for `during`: every flag stays raised.
async fn stay_raised(flags: &[Flag], during: Duration) {
    let until = Instant::now() + during;
    while Instant::now() < until {
        let lowered: Vec<usize> = (0..flags.len())
            .filter(|&i| !flags[i].is_raised())
            .collect();
        assert!(lowered.is_empty(), "lowered: {lowered:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_replaces_a_killed_or_hung_connection_once_and_its_leaders_keep_leading() {
    let pg = server();
    let s = set(&pg, "a").await;
    let flags: Vec<Flag> = (0..20)
        .map(|i| s.add(format!("shard-{i}")).unwrap())
        .collect();
    all_raised(&flags, INTERVAL).await;

    // Killed: the next statements find it closed and open one new connection for all.
    let killed = backend_pid(&pg, "a");
    psql(&pg, &format!("SELECT pg_terminate_backend({killed})"));
    stay_raised(&flags, INTERVAL * 2).await;
    let replaced = backend_pid(&pg, "a");
    assert_ne!(replaced, killed);

    // Hung: the statements in flight time out, the connection is abandoned once, and the
    // renews go through on a new one (normally before the deadlines, with about 150 ms to
    // spare: too little to assert on a loaded machine, so only recovery is asserted).
    pg.signal_backend(replaced, Signal::Stop).unwrap();
    tokio::time::sleep(INTERVAL).await;
    all_raised(&flags, INTERVAL).await;
    pg.signal_backend(replaced, Signal::Cont).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while backends(&pg, "a") != 1 {
        assert!(Instant::now() < until, "the hung backend lingers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(backend_pid(&pg, "a"), replaced);
    for f in flags {
        f.close().await.unwrap();
    }
}

/// Counts the check and release statements the server ran over `window`, with the flags
/// already running, and the backends of `process`.
async fn measure(pg: &PgServer, process: &str, window: Duration) -> (f64, usize) {
    psql(pg, "SELECT pg_stat_statements_reset()");
    tokio::time::sleep(window).await;
    let calls: f64 = psql(
        pg,
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements \
         WHERE query LIKE '%leadership_flags%' AND query NOT LIKE '%pg_stat_statements%'",
    )
    .parse()
    .unwrap();
    (calls / window.as_secs_f64(), backends(pg, process))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_per_second_for_100_flags_in_one_set_and_as_100_handles() {
    const FLAGS: usize = 100;
    let window = Duration::from_secs(
        std::env::var("LEADERSHIP_FIGURES_WINDOW_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
    );
    let pg = server();

    let s = set(&pg, "one-set").await;
    let flags: Vec<Flag> = (0..FLAGS)
        .map(|i| s.add(format!("set-{i}")).unwrap())
        .collect();
    all_raised(&flags, INTERVAL * 2).await;
    let (set_rate, set_backends) = measure(&pg, "one-set", window).await;
    assert!(
        flags.iter().all(Flag::is_raised),
        "a lease lapsed in the set"
    );
    for f in flags {
        f.close().await.unwrap();
    }

    let mut flags = Vec::new();
    for i in 0..FLAGS {
        flags.push(
            Flag::builder(format!("handle-{i}"), "handles")
                .connect_str(&pg.conn_string())
                .interval(INTERVAL)
                .timeout(TIMEOUT)
                .start(NoTls)
                .await
                .unwrap(),
        );
    }
    all_raised(&flags, INTERVAL * 2).await;
    let (handles_rate, handles_backends) = measure(&pg, "handles", window).await;
    for f in flags {
        f.close().await.unwrap();
    }

    eprintln!(
        "{FLAGS} flags, all leading, {INTERVAL:?} interval, over {window:?}: \
         one FlagSet {set_rate:.1} statements/s on {set_backends} connection(s); \
         {FLAGS} Flags {handles_rate:.1} statements/s on {handles_backends} connections"
    );
    assert_eq!(set_backends, 1);
    assert_eq!(handles_backends, FLAGS);
    // Each leader renews about once a second. As handles, each renew is a statement; in the
    // set, the renews that fall due together go as one batch, and a renew joins the batch
    // early (never late), so the set's leaders renew together: about one statement a second
    // for all of them (generous bounds, for a loaded machine that splits a batch now and then).
    assert!(
        (FLAGS as f64 * 0.7..=FLAGS as f64 * 1.5).contains(&handles_rate),
        "handles: {handles_rate} statements/s"
    );
    assert!(set_rate <= 5.0, "set: {set_rate} statements/s");
}

/// The flags' table, as the tests' sets use it.
const TABLE: &str = "leadership_flags";

/// A set of `n` flags named `prefix-i`, once all of them lead.
async fn leading(pg: &PgServer, process: &str, prefix: &str, n: usize) -> (FlagSet, Vec<Flag>) {
    let set = set(pg, process).await;
    let flags: Vec<Flag> = (0..n)
        .map(|i| set.add(format!("{prefix}-{i}")).unwrap())
        .collect();
    all_raised(&flags, INTERVAL * 2).await;
    (set, flags)
}

/// The backends of `process`'s connections: the same list before and after means it never
/// reconnected.
fn backend_pids(pg: &PgServer, process: &str) -> String {
    psql(
        pg,
        &format!(
            "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity \
             WHERE application_name = 'leadership:{process}'"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_locked_by_another_transaction_fails_its_flag_alone_and_keeps_the_connection() {
    const FLAGS: usize = 10;
    let pg = server();
    let (_set, flags) = leading(&pg, "locked", "lock", FLAGS).await;
    let pids = || backend_pids(&pg, "locked");
    let before = pids();

    // Another transaction holds row 3's lock for longer than a lease.
    let (client, connection) = tokio_postgres::connect(&pg.conn_string(), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            &format!("SELECT 1 FROM {TABLE} WHERE name = 'lock-3' FOR UPDATE"),
            &[],
        )
        .await
        .unwrap();
    let locked_at = Instant::now();
    let hold = INTERVAL + INTERVAL / 2;
    let mut lowered_at = None;
    while locked_at.elapsed() < hold {
        for (i, f) in flags.iter().enumerate() {
            if i != 3 {
                assert!(
                    f.is_raised(),
                    "flag {i} lost its lease {:?} into the lock on another row",
                    locked_at.elapsed()
                );
            }
        }
        if lowered_at.is_none() && !flags[3].is_raised() {
            lowered_at = Some(locked_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The locked flag could not renew: its lease ran to its deadline, no further.
    let lowered_at = lowered_at.expect("the flag whose row was locked lowered at its deadline");
    assert!(
        lowered_at <= INTERVAL,
        "lowered {lowered_at:?} into the lock"
    );
    // Every renew of the other nine went on the same connection throughout.
    assert_eq!(pids(), before, "the set reconnected");
    client.batch_execute("ROLLBACK").await.unwrap();
    all_raised(&flags, INTERVAL * 2).await;
    assert_eq!(pids(), before, "the set reconnected");
    let terms: Vec<usize> = flags.iter().map(|f| f.terms().len()).collect();
    eprintln!("locked for {hold:?}: flag 3 lowered {lowered_at:?} in, terms per flag {terms:?}");
    for (i, n) in terms.iter().enumerate() {
        assert_eq!(*n, if i == 3 { 2 } else { 1 }, "flag {i}: terms {terms:?}");
    }
    for f in flags {
        f.close().await.unwrap();
    }
}

/// One process of the fleet test: a set of flags on a runtime of its own, so that a crash
/// (the runtime shut down under it) stops its tasks mid-statement, releasing nothing.
struct Process {
    runtime: tokio::runtime::Runtime,
    flags: Vec<Flag>,
    set: FlagSet,
}

impl Process {
    fn start(pg: &PgServer, name: &str, incarnation: &str, logs: &[Logs]) -> Process {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (set, flags) = runtime.block_on(async {
            let set = set(pg, name).await;
            let flags: Vec<Flag> = (0..logs.len())
                .map(|i| set.add(format!("fleet-{i:04}")).unwrap())
                .collect();
            (set, flags)
        });
        for (log, flag) in logs.iter().zip(&flags) {
            log.add(incarnation, flag);
        }
        Process {
            runtime,
            flags,
            set,
        }
    }

    /// Killed: nothing is released, every lease is left to expire.
    fn crash(self) {
        let Process {
            runtime,
            flags,
            set,
        } = self;
        // Nothing of the process may run again: not even the handles' drop.
        std::mem::forget(flags);
        std::mem::forget(set);
        runtime.shutdown_background();
    }

    /// Closed: every flag it leads is released for the next leader.
    fn close(self) {
        let Process {
            runtime,
            flags,
            set,
        } = self;
        runtime.block_on(async {
            for f in flags {
                f.close().await.unwrap();
            }
        });
        drop(set);
    }
}

#[test]
fn a_thousand_batched_flags_across_four_processes_never_overlap_through_crashes_and_handovers() {
    const FLAGS: usize = 1000;
    let pg = server();
    let logs: Vec<Logs> = (0..FLAGS).map(|_| Logs::new()).collect();
    let mut incarnations = [0; 4];
    let start = |p: usize, incarnations: &mut [usize; 4]| {
        incarnations[p] += 1;
        Process::start(
            &pg,
            &format!("p{p}"),
            &format!("p{p}#{}", incarnations[p]),
            &logs,
        )
    };
    let mut fleet: Vec<Option<Process>> =
        (0..4).map(|p| Some(start(p, &mut incarnations))).collect();
    let step = |what: &str| {
        eprintln!("{what}");
        std::thread::sleep(INTERVAL * 2);
    };
    step("four processes started");
    fleet[0].take().unwrap().crash();
    step("p0 crashed");
    fleet[0] = Some(start(0, &mut incarnations));
    fleet[1].take().unwrap().close();
    step("p0 restarted, p1 closed (its flags handed over)");
    fleet[1] = Some(start(1, &mut incarnations));
    fleet[2].take().unwrap().crash();
    step("p1 restarted, p2 crashed");
    fleet[3].take().unwrap().crash();
    fleet[2] = Some(start(2, &mut incarnations));
    step("p3 crashed, p2 restarted");
    for p in fleet.into_iter().flatten() {
        p.close();
    }

    let (mut terms, mut overlaps, mut regressions, mut handed_on) = (0, 0, 0, 0);
    for (i, log) in logs.iter().enumerate() {
        let record = log.record();
        terms += record.terms.len();
        handed_on += usize::from(record.terms.len() > 1);
        if !record.overlaps().is_empty() || !record.token_regressions().is_empty() {
            eprintln!("fleet-{i:04}:\n{}", record.describe());
        }
        overlaps += record.overlaps().len();
        regressions += record.token_regressions().len();
    }
    eprintln!(
        "{FLAGS} flags, 4 processes: {terms} terms, {handed_on} flags changed hands, \
         {overlaps} overlaps, {regressions} token regressions"
    );
    assert_eq!(overlaps, 0, "two leaders of one flag at one instant");
    assert_eq!(
        regressions, 0,
        "a token not above what its process had seen"
    );
    assert!(
        handed_on >= FLAGS / 2,
        "only {handed_on} flags changed hands"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_error_about_the_batch_keeps_the_connection() {
    const FLAGS: usize = 5;
    let pg = server();
    let (_set, flags) = leading(&pg, "erring", "err", FLAGS).await;
    let pids = || backend_pids(&pg, "erring");
    let before = pids();
    // Every renew now fails with the server's error, on a connection that works.
    psql(
        &pg,
        &format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$; \
             CREATE TRIGGER refuse BEFORE UPDATE ON {TABLE} FOR EACH ROW EXECUTE FUNCTION refuse()"
        ),
    );
    let until = Instant::now() + INTERVAL * 2;
    while !flags.iter().all(|f| f.health().consecutive_failures > 0) {
        assert!(Instant::now() < until, "no renew failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    psql(&pg, &format!("DROP TRIGGER refuse ON {TABLE}"));
    assert_eq!(
        pids(),
        before,
        "the set reconnected after the server's error"
    );
    let until = Instant::now() + INTERVAL * 2;
    while !flags.iter().all(|f| f.health().consecutive_failures == 0) {
        assert!(Instant::now() < until, "the renews did not recover");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pids(), before, "the set reconnected");
    for f in flags {
        f.close().await.unwrap();
    }
}
