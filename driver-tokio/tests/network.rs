//! The tokio driver over a bad network: a black-holed first host of a multi-host connection
//! string (the kit's [`Proxy`] dropping everything), a partition of the leader from PostgreSQL
//! in a network namespace (the kernel's own TCP: retransmission, connect timeouts), and a slow
//! link (300 ms round trips) with a cut connection.
//!
//! Figures are printed with `--nocapture`. How they can fail: the connect timeout per host is
//! what lets a process reach the second host past a black-holed first one; with the budget for
//! all hosts in one (or the statement timeout as the bound, as before the connect budget), the
//! start would fail with a timeout naming `connect_timeout`, which the slow-link start-up test
//! shows happening when the budget is too short for the link.

use std::time::{Duration, Instant};

use leadership_driver_testkit::observe::Observer;
use leadership_pgkit::helpers::{psql, server, wait_until};
use leadership_pgkit::netns::{require_root, NetNs};
use leadership_pgkit::pg::PgServer;
use leadership_pgkit::proxy::Proxy;
use leadership_tokio::{Error, Flag, FlagBuilder};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

const INTERVAL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_millis(500);
/// The default connect timeout for each host with these settings:
/// `max(2 × timeout, min(interval / 2, 5 s))`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn builder(conn: &str, process: &str) -> FlagBuilder {
    Flag::builder("job", process)
        .connect_str(conn)
        .interval(INTERVAL)
        .timeout(TIMEOUT)
}

/// `host=127.0.0.1,127.0.0.1 port=A,B`: the proxy first, the server second.
fn proxy_first(proxy: &Proxy, pg: &PgServer) -> String {
    format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres",
        proxy.port(),
        pg.port()
    )
}

fn row_version(pg: &PgServer) -> i64 {
    psql(
        pg,
        "SELECT version FROM leadership_flags WHERE name = 'job'",
    )
    .parse()
    .unwrap()
}

/// Processes whose first host drops every packet reach the second within its connect timeout
/// (the default, one second here), not after the whole budget; and a process whose open
/// connection gets black-holed abandons it at the statement timeout, skips the first host at
/// its connect timeout, and renews on the second.
#[test]
fn a_black_holed_first_host_is_skipped_within_its_connect_timeout() {
    let rt = runtime();
    let pg = server();
    let hole = Proxy::start(([127, 0, 0, 1], pg.port())).unwrap();
    hole.black_hole(true).unwrap();
    let conn = proxy_first(&hole, &pg);
    // Three processes starting at once.
    let started: Vec<(Flag, Duration)> = rt.block_on(async {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let b = builder(&conn, &format!("p{i}")).seed(i);
                tokio::spawn(async move {
                    let t = Instant::now();
                    let flag = b.start(NoTls).await;
                    (flag, t.elapsed())
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            let (flag, took) = h.await.unwrap();
            out.push((flag.expect("start past a black-holed first host"), took));
        }
        out
    });
    let took: Vec<Duration> = started.iter().map(|(_, t)| *t).collect();
    eprintln!(
        "start past a black-holed first host: {took:?} (connect timeout {CONNECT_TIMEOUT:?})"
    );
    for t in &took {
        assert!(
            *t >= CONNECT_TIMEOUT * 9 / 10,
            "the first host was tried: {t:?}"
        );
        // The first host's timeout, then the second's set-up: far within the budget (3 s).
        assert!(*t < CONNECT_TIMEOUT * 2 + TIMEOUT, "{t:?}");
    }
    rt.block_on(async {
        for (f, _) in &started {
            f.close().await.unwrap();
        }
    });
    drop(hole);

    // A running leader whose connection goes into a black hole.
    let proxy = Proxy::start(([127, 0, 0, 1], pg.port())).unwrap();
    let conn = proxy_first(&proxy, &pg);
    let observer = Observer::start();
    let leader = rt.block_on(builder(&conn, "leader").start(NoTls)).unwrap();
    observer.add("leader", leader.clone());
    wait_until("it leads", INTERVAL * 3, || leader.is_raised());
    assert_eq!(proxy.open_connections(), 1, "connected through the proxy");
    let mut recoveries = Vec::new();
    let mut kept = Vec::new();
    for round in 0..2 {
        // Right after a renew: the next one hangs.
        let v = leader.lease().map(|l| l.version).unwrap_or(-1);
        wait_until("a renew", INTERVAL * 3, || {
            leader.lease().is_some_and(|l| l.version > v)
        });
        let token = leader.lease().unwrap().token;
        let version = row_version(&pg);
        let holed = Instant::now();
        proxy.black_hole(true).unwrap();
        wait_until("a renew on the second host", INTERVAL * 4, || {
            leader.lease().is_some_and(|l| l.version > version)
        });
        recoveries.push(holed.elapsed());
        kept.push(leader.lease().unwrap().token == token);
        proxy.black_hole(false).unwrap();
        if round == 0 {
            // Back to the first host for the second round: the proxy works again; end the
            // leader's connection to the second host, and the new one goes to the first.
            let accepted = proxy.accepted();
            psql(
                &pg,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'leadership:leader'",
            );
            wait_until("a connection through the proxy", INTERVAL * 4, || {
                proxy.accepted() > accepted && proxy.open_connections() >= 1
            });
        }
    }
    let record = observer.finish();
    eprintln!(
        "a black-holed open connection: renewed on the second host after {recoveries:?} \
         (kept the term: {kept:?})\n{}",
        record.describe()
    );
    assert!(record.overlaps().is_empty(), "{}", record.describe());
    assert!(leader.is_raised(), "leads again");
    rt.block_on(leader.close()).unwrap();
}

/// The leader runs inside a network namespace; the partition drops every packet between it and
/// PostgreSQL. It stops believing at its deadline; a process outside takes over once the lease
/// has expired by the database's clock; never both.
#[test]
fn a_partitioned_leader_lowers_by_its_deadline_and_another_takes_over() {
    if !require_root("a_partitioned_leader_lowers_by_its_deadline_and_another_takes_over") {
        return;
    }
    let ns = NetNs::create().unwrap();
    let pg = PgServer::start_with(&ns.server_options()).unwrap();
    let inside_conn = format!(
        "host={} port={} user=postgres dbname=postgres",
        ns.host_addr(),
        pg.port()
    );
    // The leader: a runtime on a thread inside the namespace, until told to stop.
    let (flag_tx, flag_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let inside = ns
        .spawn(move || {
            let rt = runtime();
            let flag = rt
                .block_on(builder(&inside_conn, "inside").seed(1).start(NoTls))
                .unwrap();
            flag_tx.send(flag.clone()).unwrap();
            rt.block_on(async {
                let _ = stop_rx.await;
                let _ = flag.close_within(Duration::from_secs(1)).await;
            });
        })
        .unwrap();
    let leader: Flag = flag_rx.recv().unwrap();
    wait_until("the inside process leads", INTERVAL * 3, || {
        leader.is_raised()
    });
    let rt = runtime();
    let outside = rt
        .block_on(builder(&pg.conn_string(), "outside").seed(2).start(NoTls))
        .unwrap();
    let observer = Observer::start();
    observer.add("inside", leader.clone());
    observer.add("outside", outside.clone());
    // Partition right after a renew.
    let v = leader.lease().unwrap().version;
    wait_until("a renew", INTERVAL * 3, || {
        leader.lease().is_some_and(|l| l.version > v)
    });
    let deadline_then = leader.lease().unwrap().deadline;
    let cut = Instant::now();
    ns.partition(true).unwrap();
    wait_until("the outside process takes over", INTERVAL * 3, || {
        outside.is_raised()
    });
    let took_over = Instant::now();
    std::thread::sleep(INTERVAL);
    let record = observer.finish();
    let inside_term = record.terms.iter().find(|t| t.process == "inside").unwrap();
    let lowered = inside_term.believed_until();
    eprintln!(
        "partition: the inside leader stopped believing {:?} after the cut (its deadline was {:?} \
         after), the outside process led {:?} after the cut\n{}",
        lowered.saturating_duration_since(cut),
        deadline_then.saturating_duration_since(cut),
        took_over - cut,
        record.describe_from(cut)
    );
    assert!(record.overlaps().is_empty(), "{}", record.describe());
    // No renew moved the deadline after the cut. (`deadline_then` and the record are placed on
    // the test's clock by two different readings of the two clocks, microseconds apart.)
    assert!(
        lowered <= deadline_then + Duration::from_millis(1),
        "the inside leader believed past the deadline it had when cut off"
    );
    // The lease expires by the database's clock a margin after the deadline: judged from the
    // instants both processes recorded.
    let outside_term = record
        .terms
        .iter()
        .find(|t| t.process == "outside")
        .unwrap();
    assert!(
        outside_term.began_ns > inside_term.deadline_ns,
        "took over before the old deadline"
    );
    ns.partition(false).unwrap();
    let _ = stop_tx.send(());
    inside.join().unwrap();
    rt.block_on(outside.close()).unwrap();
}

/// 300 ms round trips: a process leads; a cut drops its connection just before a renew is due;
/// the renew reconnects (connect, set-up: about 1 s, bounded by the connect budget, not by the
/// 1 s statement timeout), then runs (one round trip), and the leader keeps its term.
#[test]
fn a_slow_link_reconnects_within_the_connect_budget() {
    const SLOW_INTERVAL: Duration = Duration::from_secs(4);
    const SLOW_TIMEOUT: Duration = Duration::from_secs(1);
    let rt = runtime();
    let pg = server();
    let proxy = Proxy::start(([127, 0, 0, 1], pg.port())).unwrap();
    proxy.set_latency(Duration::from_millis(150));
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        proxy.port()
    );
    let slow = |process: &str| {
        Flag::builder("job", process)
            .connect_str(&conn)
            .interval(SLOW_INTERVAL)
            .timeout(SLOW_TIMEOUT)
    };
    // Start-up on an empty database: the table is created over the slow link too.
    let t = Instant::now();
    let leader = rt.block_on(slow("far").start(NoTls)).unwrap();
    let startup = t.elapsed();
    // The same (another table, so it is created too) with a 2 s lease and a 500 ms timeout:
    // each step of the start-up is bounded by the default connect budget (1 s per host, one
    // more for the set-up), and each fits.
    let t = Instant::now();
    let short = rt.block_on(builder(&conn, "short").table("empty").start(NoTls));
    let short_took = t.elapsed();
    rt.block_on(
        short
            .expect("a 2 s lease starts over the slow link")
            .close(),
    )
    .unwrap();
    // A connect timeout shorter than a round trip cannot even log in: the error names the
    // setting to raise.
    let t = Instant::now();
    let refused = rt.block_on(
        builder(&conn, "hasty")
            .connect_timeout(Duration::from_millis(100))
            .start(NoTls),
    );
    let refused_took = t.elapsed();
    let message = match refused {
        Err(
            e @ Error::Timeout {
                setting: "connect_timeout",
                ..
            },
        ) => e.to_string(),
        other => panic!(
            "expected a timeout naming connect_timeout, got {:?}",
            other.err()
        ),
    };
    eprintln!(
        "slow link (300 ms RTT): start-up on an empty database {startup:?}; with a 2 s lease \
         {short_took:?}; with a 100 ms connect timeout, after {refused_took:?}: {message}"
    );
    wait_until("it leads", SLOW_INTERVAL * 2, || leader.is_raised());
    let token = leader.lease().unwrap().token;
    let mut reconnects = Vec::new();
    for _ in 0..2 {
        // Cut just before the next renew is due (renews come every 1.8-2 s), so that the renew
        // itself opens the new connection.
        let v = leader.lease().unwrap().version;
        wait_until("a renew", SLOW_INTERVAL * 2, || {
            leader.lease().is_some_and(|l| l.version > v)
        });
        let renewed = Instant::now();
        let v = leader.lease().unwrap().version;
        std::thread::sleep(Duration::from_millis(1750).saturating_sub(renewed.elapsed()));
        let accepted = proxy.accepted();
        let cut = Instant::now();
        assert!(proxy.cut() >= 1);
        let mut reconnected = None;
        wait_until("a renew after the cut", SLOW_INTERVAL * 2, || {
            if reconnected.is_none() && proxy.accepted() > accepted {
                reconnected = Some(Instant::now());
            }
            leader.lease().is_some_and(|l| l.version > v)
        });
        let renewed = Instant::now();
        let connecting = reconnected.unwrap_or(renewed);
        reconnects.push((renewed - cut, renewed.saturating_duration_since(connecting)));
    }
    eprintln!(
        "slow link: cut -> renewed, and new connection -> renewed (connect, set-up, check): \
         {reconnects:?}"
    );
    for (_, reconnect) in &reconnects {
        assert!(
            *reconnect > SLOW_TIMEOUT / 2,
            "at least three round trips: {reconnect:?}"
        );
    }
    assert_eq!(
        leader.lease().map(|l| l.token),
        Some(token),
        "the leader kept its term through the cuts"
    );
    rt.block_on(leader.close()).unwrap();
}
