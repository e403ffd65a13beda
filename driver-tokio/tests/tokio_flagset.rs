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
