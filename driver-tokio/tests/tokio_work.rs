//! Leader-only work under the tokio driver, against a real PostgreSQL: the lease at risk
//! before it is lost, `lead` stopping the work in time and waiting for it, and a close that
//! never releases while the work runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadership_pgkit::helpers::{login_as, psql, server};
use leadership_pgkit::pg::{PgServer, Signal};
use leadership_tokio::{Error, Flag, FlagBuilder};
use tokio_postgres::NoTls;

const INTERVAL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_millis(300);
const STOP_AHEAD: Duration = Duration::from_millis(800);

/// A flag connecting as its own role, so the test can cut it off (`NOLOGIN` and a frozen
/// backend).
fn builder(pg: &PgServer, name: &str, role: &str) -> FlagBuilder {
    Flag::builder(name, role)
        .connect_str(&login_as(pg, role))
        .interval(INTERVAL)
        .timeout(TIMEOUT)
        .stop_ahead(STOP_AHEAD)
}

/// Cuts `role` off the database: no new logins, its backend frozen. Returns the backend.
fn cut_off(pg: &PgServer, role: &str) -> i32 {
    let pid: i32 = psql(
        pg,
        &format!("SELECT pid FROM pg_stat_activity WHERE application_name = 'leadership:{role}'"),
    )
    .parse()
    .unwrap();
    psql(pg, &format!("ALTER ROLE \"{role}\" NOLOGIN"));
    pg.signal_backend(pid, Signal::Stop).unwrap();
    pid
}

fn released(pg: &PgServer, name: &str) -> bool {
    psql(
        pg,
        &format!("SELECT \"timestamp\" < '2000-01-01' FROM leadership_flags WHERE name = '{name}'"),
    ) == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_risk_fires_a_stop_ahead_before_lost_when_the_database_hangs() {
    let pg = server();
    let a = builder(&pg, "risk", "a").start(NoTls).await.unwrap();
    let guard = a.raised().await.unwrap();
    // Right after a renew, so the whole lease lies ahead.
    let mut state = a.subscribe();
    a.lease().unwrap();
    let pid = cut_off(&pg, "a");
    let cut = Instant::now();
    let deadline = a.lease().unwrap().deadline;
    tokio::time::timeout(INTERVAL, guard.at_risk())
        .await
        .expect("at risk before the deadline");
    let at_risk = Instant::now();
    assert!(!guard.is_lost() && a.is_raised(), "still the leader");
    assert!(state.borrow_and_update().is_raised());
    tokio::time::timeout(INTERVAL, guard.lost())
        .await
        .expect("lost at the deadline");
    let lost = Instant::now();
    pg.signal_backend(pid, Signal::Cont).unwrap();
    eprintln!(
        "cut off -> at risk {:?}, -> lost {:?}",
        at_risk - cut,
        lost - cut
    );
    assert!(
        // The wake-ups' scheduling on a loaded machine is the tolerance.
        lost - at_risk >= STOP_AHEAD - Duration::from_millis(150),
        "the work had the stop-ahead to stop: {:?}",
        lost - at_risk
    );
    assert!(
        lost >= deadline && lost < deadline + Duration::from_millis(300),
        "lost {:?} after the deadline",
        lost.checked_duration_since(deadline)
    );
    drop(guard);
    a.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_stops_the_work_when_at_risk_and_the_next_leader_starts_after_it_ended() {
    let pg = server();
    let a = builder(&pg, "lead", "a").start(NoTls).await.unwrap();
    // What the work did, in order: ("start"|"stop", who, token, when).
    let log = Arc::new(Mutex::new(Vec::<(&str, &str, i64, Instant)>::new()));
    let work = |who: &'static str, log: Arc<Mutex<Vec<_>>>| {
        move |guard: leadership_tokio::Guard| {
            let log = log.clone();
            async move {
                let token = guard.token();
                log.lock()
                    .unwrap()
                    .push(("start", who, token, Instant::now()));
                guard.stop_token().cancelled().await;
                // The work needs a while to stop: less than the stop-ahead.
                tokio::time::sleep(Duration::from_millis(500)).await;
                log.lock()
                    .unwrap()
                    .push(("stop", who, token, Instant::now()));
            }
        }
    };
    let lead_a = tokio::spawn({
        let (a, log) = (a.clone(), log.clone());
        async move { a.lead(work("a", log)).await }
    });
    tokio::time::timeout(INTERVAL, async {
        while log.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("a's work started");
    let b = builder(&pg, "lead", "b").start(NoTls).await.unwrap();
    let lead_b = tokio::spawn({
        let (b, log) = (b.clone(), log.clone());
        async move { b.lead(work("b", log)).await }
    });
    let pid = cut_off(&pg, "a");
    tokio::time::timeout(INTERVAL * 3, async {
        while !log.lock().unwrap().iter().any(|e| e.1 == "b") {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("b took over");
    pg.signal_backend(pid, Signal::Cont).unwrap();
    let events = log.lock().unwrap().clone();
    eprintln!("{events:?}");
    let a_stop = events
        .iter()
        .find(|e| e.0 == "stop" && e.1 == "a")
        .expect("a stopped");
    let b_start = events
        .iter()
        .find(|e| e.0 == "start" && e.1 == "b")
        .unwrap();
    assert!(
        a_stop.3 < b_start.3,
        "b's work started before a's had stopped"
    );
    assert!(b_start.2 > a_stop.2, "fencing tokens grow");
    b.close().await.unwrap();
    assert_eq!(lead_b.await.unwrap().map_err(|e| e.to_string()), Ok(()));
    a.close().await.ok();
    let _ = lead_a.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_only_after_the_lead_work_returned() {
    let pg = server();
    let a = builder(&pg, "close", "a").start(NoTls).await.unwrap();
    let stopped = Arc::new(AtomicBool::new(false));
    let lead = tokio::spawn({
        let (a, stopped) = (a.clone(), stopped.clone());
        async move {
            a.lead(|guard| {
                let stopped = stopped.clone();
                async move {
                    guard.at_risk().await; // a close ends the term: at risk and lost at once
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    stopped.store(true, Ordering::SeqCst);
                }
            })
            .await
        }
    });
    a.raised().await.map(drop).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let watcher = tokio::spawn({
        let (conn, stopped) = (pg.conn_string(), stopped.clone());
        async move {
            let (client, connection) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
            tokio::spawn(connection);
            let mut early = false;
            while !stopped.load(Ordering::SeqCst) {
                let row = client
                    .query_one(
                        "SELECT \"timestamp\" < '2000-01-01' FROM leadership_flags WHERE name = 'close'",
                        &[],
                    )
                    .await
                    .unwrap();
                // The work says it stopped before it returns, and the release can only follow
                // that: a release seen while the flag still says "running" came early. (Read
                // after the query: the release may land between the loop's test and the read.)
                early |= row.get::<_, bool>(0) && !stopped.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            early
        }
    });
    let closing = Instant::now();
    a.close().await.expect("released");
    assert!(
        stopped.load(Ordering::SeqCst),
        "close returned before the work"
    );
    assert!(closing.elapsed() >= Duration::from_millis(300));
    assert!(!watcher.await.unwrap(), "released while the work ran");
    assert!(released(&pg, "close"));
    assert_eq!(lead.await.unwrap().map_err(|e| e.to_string()), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_that_never_stops_leaves_the_lease_to_expire_unreleased() {
    let pg = server();
    let a = builder(&pg, "stuck", "a").start(NoTls).await.unwrap();
    let guard = a.raised().await.unwrap();
    let b = builder(&pg, "stuck", "b").start(NoTls).await.unwrap();
    let closing = Instant::now();
    let result = a.close_within(Duration::from_millis(100)).await;
    let took = closing.elapsed();
    assert!(matches!(result, Err(Error::CloseTimedOut(_))), "{result:?}");
    assert!(took < Duration::from_millis(300), "{took:?}");
    assert!(!a.is_raised() && guard.is_lost());
    // The guard lives on: the row must stay unreleased until the lease expires by itself,
    // and b takes it over then.
    let b_guard = loop {
        assert!(!released(&pg, "stuck"), "released while the work still ran");
        if let Some(g) = b.lease() {
            break g;
        }
        assert!(closing.elapsed() < INTERVAL * 2, "b never led");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let b_led = closing.elapsed();
    eprintln!("close_within returned after {took:?}; b led after {b_led:?}");
    assert_eq!(b_guard.won_by, leadership_tokio::WonBy::TookOver);
    drop(guard);
    b.close().await.unwrap();
}
