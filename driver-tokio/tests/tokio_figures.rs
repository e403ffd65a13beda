//! Figures of the tokio driver, printed (run with `--nocapture`): statements and round trips per
//! check for leader and follower, graceful handover and crash failover times. Every figure is
//! also checked loosely, so this file fails rather than prints nonsense.
//!
//! `LEADERSHIP_FIGURES_TRIALS` sets the number of handover and failover trials (default 3).

use std::time::{Duration, Instant};

use leadership_pgkit::helpers::{psql, server};
use leadership_pgkit::pg::PgServer;
use leadership_pgkit::proxy::Proxy;
use leadership_tokio::Flag;
use tokio_postgres::NoTls;

const INTERVAL: Duration = Duration::from_secs(2);

fn check_calls(pg: &PgServer, role: &str) -> (i64, i64) {
    let out = psql(
        pg,
        &format!(
            "SELECT coalesce(sum(calls) FILTER (WHERE query LIKE 'WITH server AS%'), 0), \
             coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
             WHERE r.rolname = '{role}'"
        ),
    );
    let (a, b) = out.split_once('|').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_round_trips_per_check() {
    let pg = server();
    let mut flags = Vec::new();
    let mut proxies = Vec::new();
    for role in ["leader", "follower"] {
        psql(&pg, &format!("CREATE ROLE {role} LOGIN SUPERUSER"));
        // Counts the client's writes as the server receives them: with the client's requests
        // pipelined into one write per exchange, each is one round trip.
        let proxy = Proxy::start(([127, 0, 0, 1], pg.port())).unwrap();
        let flag = Flag::builder("job", role)
            .connect_str(&format!(
                "host=127.0.0.1 port={} user={role} dbname=postgres",
                proxy.port()
            ))
            .interval(INTERVAL)
            .start(NoTls)
            .await
            .unwrap();
        // The leader first, so the roles are what their names say.
        while role == "leader" && !flag.is_raised() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        flags.push(flag);
        proxies.push(proxy);
    }
    psql(&pg, "SELECT pg_stat_statements_reset()");
    let writes: Vec<u64> = proxies.iter().map(|p| p.client_writes()).collect();
    let window = Duration::from_secs(12);
    tokio::time::sleep(window).await;
    for (i, role) in ["leader", "follower"].into_iter().enumerate() {
        let (checks, statements) = check_calls(&pg, role);
        let trips = proxies[i].client_writes() - writes[i];
        eprintln!(
            "FIGURE {role}: {window:?}, {checks} checks, {statements} statements \
             ({:.2}/check), {trips} round trips ({:.2}/check)",
            statements as f64 / checks as f64,
            trips as f64 / checks as f64
        );
        assert!(checks >= 5, "{role}: {checks} checks");
        assert_eq!(statements, checks, "{role}: only check statements");
        assert!(
            trips <= checks as u64 + 1,
            "{role}: {trips} round trips for {checks} checks"
        );
    }
    assert!(flags[0].is_raised() && !flags[1].is_raised());
}

fn trials() -> usize {
    std::env::var("LEADERSHIP_FIGURES_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

async fn three(pg: &PgServer) -> Vec<Option<Flag>> {
    let mut flags = Vec::new();
    for i in 0..3 {
        let f = Flag::builder("job", format!("p{i}"))
            .connect_str(&pg.conn_string())
            .interval(INTERVAL)
            .start(NoTls)
            .await
            .unwrap();
        flags.push(Some(f));
    }
    flags
}

fn raised(flags: &[Option<Flag>]) -> Vec<usize> {
    (0..flags.len())
        .filter(|&i| flags[i].as_ref().is_some_and(|f| f.is_raised()))
        .collect()
}

/// Waits for one leader, lets followers settle for a random part of a renew period (so trials
/// sample the lease's age), then ends it with `end` and times until another is raised.
async fn handover(pg: &PgServer, graceful: bool) -> Duration {
    psql(pg, "DELETE FROM leadership_flags");
    let mut flags = three(pg).await;
    let leader = loop {
        if let [l] = raised(&flags)[..] {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    tokio::time::sleep(Duration::from_millis(500 + nanos % 1000)).await;
    let flag = flags[leader].take().unwrap();
    let t0 = Instant::now();
    if graceful {
        flag.close().await.unwrap();
    } else {
        drop(flag);
    }
    loop {
        let now = raised(&flags);
        assert!(now.len() <= 1);
        if !now.is_empty() {
            break;
        }
        assert!(t0.elapsed() < INTERVAL * 3, "nobody took over");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_and_failover_times() {
    let pg = server();
    // Create the table once, so DELETE works in every trial.
    drop(three(&pg).await);
    for graceful in [true, false] {
        let mut times = Vec::new();
        for _ in 0..trials() {
            times.push(handover(&pg, graceful).await);
        }
        times.sort();
        eprintln!(
            "FIGURE {} (interval {INTERVAL:?}, {} trials): min {:?}, median {:?}, max {:?}",
            if graceful {
                "graceful close -> other raised"
            } else {
                "crash (drop) -> other raised"
            },
            times.len(),
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
        assert!(times[times.len() - 1] < INTERVAL * 2);
    }
}
