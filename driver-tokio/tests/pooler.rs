//! The tokio driver behind pgbouncer 1.18, in transaction and in session pooling: `Pooler::Auto`
//! finds the pooler (one log line per process), transaction pooling runs unnamed statements
//! without `LISTEN`, session pooling keeps both; renewals go on, a close hands over (after the
//! lease in transaction pooling, in milliseconds in session pooling), a restart of pgbouncer is
//! survived, and two processes never lead at once. The explicit settings work too, and
//! `Pooler::Direct` behind a pooler fails the start naming the setting.
//!
//! How they can fail: the control case (`Pooler::Auto` straight to PostgreSQL) must log no
//! pooler line and `LISTEN`; a driver that prepared named statements under transaction pooling
//! would leave `prepared statement "sN" …` errors in the server's log, which is checked empty.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadership_driver_testkit::observe::Observer;
use leadership_pgkit::helpers::{psql, server, wait_until};
use leadership_pgkit::pg::PgServer;
use leadership_pgkit::pgbouncer::{PgBouncer, PoolMode};
use leadership_tokio::{Error, Flag, Pooler};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

const INTERVAL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_millis(500);
const PROCESSES: usize = 5;
/// What the driver logs once it knows it is behind a pooler.
const POOLER_LINE: &str = "connected through a connection pooler in";

/// The driver's log lines, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter(self.0.clone())
    }
}

impl Logs {
    fn lines(&self, containing: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(containing))
            .map(str::to_string)
            .collect()
    }
}

/// A runtime whose threads (and the caller's, while the guard lives) log into `logs`: the
/// capture is this test's own, whatever the other tests of the binary log.
fn runtime(logs: &Logs) -> (Runtime, tracing::dispatcher::DefaultGuard) {
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );
    let d = dispatch.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&d)))
        .build()
        .unwrap();
    (rt, tracing::dispatcher::set_default(&dispatch))
}

fn builder(conn: &str, process: &str, pooler: Pooler) -> leadership_tokio::FlagBuilder {
    Flag::builder("job", process)
        .connect_str(conn)
        .interval(INTERVAL)
        .timeout(TIMEOUT)
        .pooler(pooler)
}

/// Starts `PROCESSES` processes at once (as a deployment does).
fn start_fleet(rt: &Runtime, conn: &str, pooler: Pooler, observer: &Observer) -> Vec<Flag> {
    let flags = rt.block_on(async {
        let handles: Vec<_> = (0..PROCESSES)
            .map(|i| {
                let b = builder(conn, &format!("p{i}"), pooler).seed(i as u64);
                tokio::spawn(b.start(NoTls))
            })
            .collect();
        let mut flags = Vec::new();
        for (i, h) in handles.into_iter().enumerate() {
            flags.push(h.await.unwrap().unwrap_or_else(|e| panic!("p{i}: {e}")));
        }
        flags
    });
    for (i, f) in flags.iter().enumerate() {
        observer.add(&format!("p{i}"), f.clone());
    }
    flags
}

fn leaders(flags: &[Option<Flag>]) -> Vec<usize> {
    (0..flags.len())
        .filter(|&i| flags[i].as_ref().is_some_and(|f| f.is_raised()))
        .collect()
}

/// Waits for exactly one leader; returns it and when it was seen.
fn one_leader(flags: &[Option<Flag>], within: Duration) -> (usize, Instant) {
    let mut found = None;
    wait_until("one leader", within, || match leaders(flags)[..] {
        [one] => {
            found = Some((one, Instant::now()));
            true
        }
        _ => false,
    });
    found.unwrap()
}

fn row_version(pg: &PgServer) -> i64 {
    psql(
        pg,
        "SELECT version FROM leadership_flags WHERE name = 'job'",
    )
    .parse()
    .unwrap()
}

fn listens(pg: &PgServer) -> i64 {
    psql(
        pg,
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE 'LISTEN%'",
    )
    .parse()
    .unwrap()
}

/// Errors about named prepared statements in the server's log: what a driver that prepared
/// statements under transaction pooling would cause.
fn prepared_statement_errors(pg: &PgServer) -> Vec<String> {
    std::fs::read_to_string(pg.log_file())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("prepared statement \""))
        .map(str::to_string)
        .collect()
}

/// What a fleet behind pgbouncer did.
struct Figures {
    handovers: Vec<Duration>,
    restart_gap: Duration,
    restart_kept: bool,
}

/// Five processes behind pgbouncer in `mode`, with `Pooler::Auto`: detection, renewals, a
/// restart of pgbouncer, then three closes in a row (each hands over to another process).
fn fleet_behind_pgbouncer(mode: PoolMode) -> Figures {
    let logs = Logs::default();
    let (rt, _guard) = runtime(&logs);
    let pg = server();
    let mut bouncer = PgBouncer::start(&pg, mode).unwrap();
    let observer = Observer::start();
    let flags = start_fleet(&rt, &bouncer.conn_string(), Pooler::Auto, &observer);
    let mut flags: Vec<Option<Flag>> = flags.into_iter().map(Some).collect();

    // One line per process says what it found, and none says otherwise.
    let (expected, other) = match mode {
        PoolMode::Transaction => ("transaction pooling", "session pooling"),
        PoolMode::Session => ("session pooling", "transaction pooling"),
    };
    let lines = logs.lines(POOLER_LINE);
    eprintln!("{mode:?}: {}", lines.first().map_or("", String::as_str));
    assert_eq!(
        lines.iter().filter(|l| l.contains(expected)).count(),
        PROCESSES,
        "one line per process: {lines:#?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains(other)),
        "misdetected: {lines:#?}"
    );

    let (leader, _) = one_leader(&flags, INTERVAL * 3);
    let v0 = row_version(&pg);
    wait_until("renewals go on", INTERVAL * 3, || {
        row_version(&pg) >= v0 + 2
    });
    let listened = listens(&pg);
    match mode {
        PoolMode::Transaction => assert_eq!(listened, 0, "no LISTEN under transaction pooling"),
        PoolMode::Session => assert!(listened >= PROCESSES as i64, "LISTEN: {listened}"),
    }

    // A restart of pgbouncer drops every client: the processes reconnect, and the leader
    // renews its own row (or someone leads again after the lease).
    let token = flags[leader].as_ref().unwrap().lease().unwrap().token;
    let restarted = Instant::now();
    bouncer.restart().unwrap();
    let v1 = row_version(&pg);
    wait_until("a renewal after the restart", INTERVAL * 3, || {
        row_version(&pg) > v1
    });
    let (after, seen) = one_leader(&flags, INTERVAL * 3);
    let restart_kept = after == leader
        && flags[after]
            .as_ref()
            .unwrap()
            .lease()
            .is_some_and(|l| l.token == token);
    let restart_gap = observer_gap(&observer, restarted, seen);

    // Three handovers: close the leader, time until another leads.
    let mut handovers = Vec::new();
    for _ in 0..3 {
        let (leader, _) = one_leader(&flags, INTERVAL * 3);
        // Let the new term settle (one renew): right after a takeover the other followers'
        // checks, scheduled for the same expiry, are still arriving and would take over a
        // release at once, which says nothing about notifications.
        let v = flags[leader]
            .as_ref()
            .unwrap()
            .lease()
            .map_or(-1, |l| l.version);
        wait_until("a renew", INTERVAL * 3, || {
            flags[leader]
                .as_ref()
                .unwrap()
                .lease()
                .is_some_and(|l| l.version > v)
        });
        let flag = flags[leader].take().unwrap();
        let closing = Instant::now();
        rt.block_on(flag.close()).unwrap();
        let (_, next) = one_leader(&flags, INTERVAL * 3);
        handovers.push(next - closing);
    }
    let record = observer.finish();
    assert!(
        record.overlaps().is_empty(),
        "two leaders:\n{}",
        record.describe()
    );
    assert!(
        record.token_regressions().is_empty(),
        "{}",
        record.describe()
    );
    let errors = prepared_statement_errors(&pg);
    assert!(errors.is_empty(), "named statements collided: {errors:#?}");
    rt.block_on(async {
        for f in flags.iter().flatten() {
            f.close().await.unwrap();
        }
    });
    Figures {
        handovers,
        restart_gap,
        restart_kept,
    }
}

/// How long nobody led between `from` and `to` (by the observer so far).
fn observer_gap(observer: &Observer, from: Instant, to: Instant) -> Duration {
    let terms = observer.terms();
    leadership_driver_testkit::observe::Record::of_terms(terms, from, to).leaderless(from, to)
}

fn print(mode: PoolMode, f: &Figures) {
    eprintln!(
        "{mode:?} pooling: close -> next leader {:?}; pgbouncer restart: {} (leaderless {:?})",
        f.handovers,
        if f.restart_kept {
            "the leader kept its term"
        } else {
            "leadership regained"
        },
        f.restart_gap
    );
}

#[test]
fn behind_pgbouncer_in_transaction_pooling() {
    let f = fleet_behind_pgbouncer(PoolMode::Transaction);
    print(PoolMode::Transaction, &f);
    // No notification reaches the followers: each takes over at its next scheduled check,
    // at most a lease after the release (plus its jitter and a statement).
    for h in &f.handovers {
        assert!(*h <= INTERVAL + TIMEOUT * 2, "handover {h:?}");
    }
}

#[test]
fn behind_pgbouncer_in_session_pooling() {
    let f = fleet_behind_pgbouncer(PoolMode::Session);
    print(PoolMode::Session, &f);
    // The release notifies the followers: one takes over at once, far within a lease.
    for h in &f.handovers {
        assert!(
            *h < INTERVAL / 4,
            "handover {h:?}: the notification was lost"
        );
    }
}

/// The explicit settings work without detection (no log line); `Pooler::Auto` straight to
/// PostgreSQL logs nothing and listens (the control case); `Pooler::Direct` behind pgbouncer
/// fails the start, naming the setting.
#[test]
fn explicit_pooler_settings() {
    let logs = Logs::default();
    let (rt, _guard) = runtime(&logs);
    let pg = server();
    let transaction = PgBouncer::start(&pg, PoolMode::Transaction).unwrap();
    let session = PgBouncer::start(&pg, PoolMode::Session).unwrap();
    let cases = [
        (transaction.conn_string(), Pooler::Transaction, "t"),
        (session.conn_string(), Pooler::Session, "s"),
        (pg.conn_string(), Pooler::Auto, "d"),
    ];
    for (conn, pooler, name) in &cases {
        let flag = rt
            .block_on(builder(conn, name, *pooler).start(NoTls))
            .unwrap_or_else(|e| panic!("{pooler:?}: {e}"));
        let before = listens(&pg);
        // Each leads in turn on its own flag row... the same row: wait for it, then close.
        wait_until("it leads", INTERVAL * 3, || flag.is_raised());
        let v = flag.lease().unwrap().version;
        wait_until("it renews", INTERVAL * 3, || {
            flag.lease().is_some_and(|l| l.version > v)
        });
        rt.block_on(flag.close()).unwrap();
        eprintln!(
            "{pooler:?}: led and renewed; LISTEN calls so far {before}; pooler log lines {}",
            logs.lines(POOLER_LINE).len()
        );
    }
    assert!(
        logs.lines(POOLER_LINE).is_empty(),
        "an explicit setting (or a direct connection) needs no detection: {:?}",
        logs.lines(POOLER_LINE)
    );
    // Session and Direct listen; Transaction does not (`s` and `d` each listened once).
    assert_eq!(listens(&pg), 2);

    let refused =
        rt.block_on(builder(&transaction.conn_string(), "x", Pooler::Direct).start(NoTls));
    match refused {
        Err(e @ Error::PoolerRefusedOptions(_)) => {
            let message = e.to_string();
            eprintln!("Pooler::Direct behind pgbouncer: {message}");
            assert!(message.contains("pooler(Pooler::Transaction)"), "{message}");
        }
        other => panic!("expected PoolerRefusedOptions, got {:?}", other.err()),
    }
}
