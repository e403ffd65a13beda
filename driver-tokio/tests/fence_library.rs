//! `Guard::fence_in` with running flags on a real server, judged by what a user sees: which
//! rows of `effects` (each tagged with the token of the term that wrote it) committed, and
//! when, by the server's commit timestamps (`track_commit_timestamp`): a row of an old term
//! that committed after a newer term's takeover committed is the failure fencing prevents.
//! Each test also runs its transaction without the safeguard and sees that late row.

use std::time::Duration;

use leadership_core::sql::Table;
use leadership_pgkit::helpers::psql;
use leadership_pgkit::pg::{PgServer, ServerOptions};
use leadership_pgkit::proxy::Proxy;
use leadership_sim::check_variants::{fence_without, FenceWithout};
use leadership_tokio::{FenceError, Flag, Guard};
use tokio_postgres::{Client, NoTls};

const INTERVAL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_millis(500);

fn server() -> PgServer {
    let pg = PgServer::start_with(&ServerOptions::new().config("track_commit_timestamp = on"))
        .unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    psql(
        &pg,
        "create table effects (term bigint not null, at timestamptz default clock_timestamp())",
    );
    pg
}

fn direct(pg: &PgServer) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.port()
    )
}

async fn start(conn: &str, process: &str) -> Flag {
    Flag::builder("job", process)
        .connect_str(conn)
        .interval(INTERVAL)
        .timeout(TIMEOUT)
        .start(NoTls)
        .await
        .expect("start")
}

async fn client(pg: &PgServer) -> Client {
    let (client, conn) = tokio_postgres::connect(&direct(pg), NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// Writes one row of `effects` for the guard's term in a transaction fenced by `fence`
/// (`None`: not fenced).
async fn write(db: &mut Client, guard: &Guard, fence: Option<&str>) -> Result<(), FenceError> {
    let tx = db.transaction().await.expect("begin");
    if let Some(sql) = fence {
        let f = guard.fence();
        tx.query_typed(sql, &f.params())
            .await
            .map_err(|e| f.error(e))?;
    }
    tx.execute("insert into effects (term) values ($1)", &[&guard.token()])
        .await
        .map_err(|e| guard.fence().error(e))?;
    tx.commit().await.map_err(|e| guard.fence().error(e))
}

/// Rows of `term` that committed after the first row of a later term: late rows.
async fn late_rows(db: &Client, term: i64) -> i64 {
    db.query_one(
        "select count(*) from effects e where e.term = $1 and pg_xact_commit_timestamp(e.xmin) > \
         (select min(pg_xact_commit_timestamp(l.xmin)) from effects l where l.term > $1)",
        &[&term],
    )
    .await
    .unwrap()
    .get(0)
}

/// The new leader's first fenced row, as soon as it leads: when its term began, for the
/// user's data.
async fn first_row(flag: &Flag, db: &mut Client) -> i64 {
    let guard = tokio::time::timeout(Duration::from_secs(20), flag.raised())
        .await
        .expect("the follower leads within 20 s")
        .unwrap();
    let tx = db.transaction().await.unwrap();
    guard.fence_in(&tx).await.expect("the new term's fence");
    tx.execute("insert into effects (term) values ($1)", &[&guard.token()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    guard.token()
}

/// A leader whose work pauses between its last renew and its commit, past its deadline, while
/// another process takes over: its fenced write fails with the typed error, locally (the guard
/// is lost) and at the server; unfenced, the same write lands in the new term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leaders_fenced_commit_fails_with_the_typed_error() {
    let pg = server();
    let proxy = Proxy::start(([127, 0, 0, 1], pg.port())).unwrap();
    let via_proxy = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        proxy.port()
    );
    let a = start(&via_proxy, "a").await;
    let guard = tokio::time::timeout(Duration::from_secs(10), a.raised())
        .await
        .unwrap()
        .unwrap();
    let b = start(&direct(&pg), "b").await;
    let (mut da, mut db) = (client(&pg).await, client(&pg).await);
    write(&mut da, &guard, Some(guard.fence().sql()))
        .await
        .expect("the live term writes");
    // The pause: a's driver cannot renew, its work does nothing until b leads.
    proxy.black_hole(true).unwrap();
    let b_token = first_row(&b, &mut db).await;
    assert!(b_token > guard.token());
    let local = write_in(&mut da, &guard).await;
    assert!(
        matches!(local, Err(FenceError::TermOver { token, .. }) if token == guard.token()),
        "{local:?}"
    );
    let at_server = write(&mut da, &guard, Some(guard.fence().sql())).await;
    assert!(
        matches!(at_server, Err(FenceError::TermOver { .. })),
        "{at_server:?}"
    );
    assert_eq!(late_rows(&da, guard.token()).await, 0);
    // Without the fence the paused work's row lands after the takeover.
    write(&mut da, &guard, None).await.unwrap();
    assert_eq!(
        late_rows(&da, guard.token()).await,
        1,
        "the late row, unfenced"
    );
    proxy.black_hole(false).unwrap();
    b.close().await.unwrap();
    // a's connection went through the hole: its close may not manage to release (nothing).
    let _ = a.close().await;
}

async fn write_in(db: &mut Client, guard: &Guard) -> Result<(), FenceError> {
    let tx = db.transaction().await.unwrap();
    guard.fence_in(&tx).await?;
    tx.execute("insert into effects (term) values ($1)", &[&guard.token()])
        .await
        .unwrap();
    tx.commit().await.map_err(|e| guard.fence().error(e))
}

/// A fenced transaction open across the lease's expiry (its statements each within the fence's
/// bound) keeps the follower from taking over until it commits; then the follower leads. With
/// `FOR KEY SHARE` the takeover does not wait, and the old term's row commits in the new term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_fenced_transaction_keeps_followers_off_until_it_commits() {
    for safeguard in [true, false] {
        let pg = server();
        let proxy = Proxy::start(([127, 0, 0, 1], pg.port())).unwrap();
        let via_proxy = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            proxy.port()
        );
        let a = start(&via_proxy, "a").await;
        let guard = tokio::time::timeout(Duration::from_secs(10), a.raised())
            .await
            .unwrap()
            .unwrap();
        let b = start(&direct(&pg), "b").await;
        let (mut da, mut db) = (client(&pg).await, client(&pg).await);
        let fence = match safeguard {
            true => guard.fence().sql().to_string(),
            false => fence_without(FenceWithout::ShareLock, &Table::default()),
        };
        let tx = da.transaction().await.unwrap();
        let f = guard.fence();
        tx.query_typed(&fence, &f.params()).await.expect("fence");
        tx.execute("insert into effects (term) values ($1)", &[&guard.token()])
            .await
            .unwrap();
        // a's driver is cut off: its lease runs out, and b would take over at its expiry.
        proxy.black_hole(true).unwrap();
        let follower = tokio::spawn(async move {
            let token = first_row(&b, &mut db).await;
            (b, db, token)
        });
        // Busy past the lease's expiry, each statement well within the fence's bound.
        let until = tokio::time::Instant::now() + INTERVAL + Duration::from_millis(2500);
        while tokio::time::Instant::now() < until {
            tx.execute("select pg_sleep(0.2)", &[]).await.expect("busy");
        }
        tx.commit().await.expect("the fenced transaction commits");
        let (b, _db, b_token) = follower.await.unwrap();
        assert!(b_token > guard.token(), "the follower led after");
        let late = late_rows(&da, guard.token()).await;
        if safeguard {
            assert_eq!(late, 0, "the takeover waited for the fenced transaction");
        } else {
            assert_eq!(
                late, 1,
                "FOR KEY SHARE: the old term's row committed in the new one"
            );
        }
        proxy.black_hole(false).unwrap();
        b.close().await.unwrap();
        let _ = a.close().await; // through the hole, like the other test's
    }
}
