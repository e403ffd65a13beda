//! The fence statement (`leadership_core::sql::FENCE`) on a real server, judged by what a user
//! sees: whether a row written in the fenced transaction committed. Rows of the flag are made
//! by the check itself, so the term column holds what our processes write.
//!
//! Each safeguard is switched off in turn (`check_variants::fence_without`) and the same test
//! then sees the row it must not see: the proof that each test can fail.

use std::thread;
use std::time::{Duration, Instant};

use leadership_core::sql::{fence_literal, Statements, Table, FENCE_MESSAGE, FENCE_SQLSTATE};
use leadership_pgkit::helpers::server;
use leadership_pgkit::pg::PgServer;
use leadership_sim::check_variants::{fence_without, FenceWithout};
use postgres::error::SqlState;
use postgres::{Client, NoTls};

const SECOND: i64 = 1_000_000;

/// A server with the flags table `table` and an `effects` table for the user's writes.
fn setup(server: &PgServer, table: &Table) -> (Client, Statements) {
    let mut c = Client::connect(&server.conn_string(), NoTls).expect("connect");
    let st = Statements::new(table);
    c.batch_execute(
        "create schema if not exists \"we\"\"ird\"; \
         create table if not exists effects (term bigint, at timestamptz default clock_timestamp())",
    )
    .unwrap();
    c.batch_execute(&st.create_table).unwrap();
    (c, st)
}

fn client(server: &PgServer) -> Client {
    Client::connect(&server.conn_string(), NoTls).expect("connect")
}

/// Runs the check; returns the version won, if it won.
#[allow(clippy::too_many_arguments)]
fn check(
    c: &mut Client,
    st: &Statements,
    name: &str,
    process: &str,
    renew: Option<i64>,
    lease: i64,
    floor: i64,
    continues: Option<i64>,
) -> Option<i64> {
    let r = c
        .query_one(
            &st.check,
            &[
                &name,
                &process,
                &renew,
                &lease,
                &floor,
                &true,
                &true,
                &continues,
                &None::<String>,
                &None::<i32>,
                &None::<leadership_tokio::internal::PgTime>,
            ],
        )
        .expect("the check");
    r.get::<_, bool>("won").then(|| r.get("version"))
}

/// A transaction that runs `fence` for the term, then writes one row of `effects` tagged with
/// the token, then commits; the fence's error, if any.
fn fenced_write(
    c: &mut Client,
    fence: &str,
    name: &str,
    process: &str,
    token: i64,
    lease: i64,
) -> Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    tx.query(fence, &[&name, &process, &token, &lease])?;
    tx.execute("insert into effects (term) values ($1)", &[&token])?;
    tx.commit()
}

fn effects(c: &mut Client, token: i64) -> i64 {
    c.query_one("select count(*) from effects where term = $1", &[&token])
        .unwrap()
        .get(0)
}

/// The fence's own refusal: its SQLSTATE and its message.
fn is_refusal(e: &postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.code().code() == FENCE_SQLSTATE && db.message().contains(FENCE_MESSAGE)
    })
}

#[test]
fn the_fence_passes_only_its_terms_live_lease_and_fails_closed_on_hostile_and_odd_input() {
    let server = &server();
    let table = Table::qualified("we\"ird", "fl\"ags").unwrap();
    let (mut c, st) = setup(server, &table);
    let (name, p, q) = ("n'a\"me", "o'brien \"p\" \\", "q");
    let lease = 30 * SECOND;
    // Term t0: inserted (at the server's clock in µs, above the floor 0).
    let t0 = check(&mut c, &st, name, p, None, lease, 0, None).expect("inserted");
    fenced_write(&mut c, &st.fence, name, p, t0, lease).expect("term t0 holds the flag");
    assert_eq!(effects(&mut c, t0), 1);
    for (process, token, what) in [
        (p, i64::MAX, "a token of i64::MAX"),
        (p, t0 + 1, "a token above the term"),
        (p, -1, "a negative token"),
        (q, t0, "another process"),
        ("", t0, "the empty process"),
    ] {
        let e = fenced_write(&mut c, &st.fence, name, process, token, lease).expect_err(what);
        assert!(is_refusal(&e), "{what}: {e:?}");
    }
    // The literal form, through a simple query as psql sends it: the same verdicts.
    let batch = |process: &str, token: i64| {
        format!(
            "BEGIN; {}; INSERT INTO effects (term) VALUES ({token}); COMMIT",
            fence_literal(&table, name, process, token, lease)
        )
    };
    c.batch_execute(&batch(p, t0))
        .expect("the literal fence of term t0");
    assert_eq!(effects(&mut c, t0), 2);
    let e = c.batch_execute(&batch(p, 7)).expect_err("another term");
    assert!(is_refusal(&e), "{e:?}");
    let _ = c.batch_execute("ROLLBACK");
    assert_eq!(
        effects(&mut c, 7),
        0,
        "the write after a failed fence never commits"
    );

    // A token of i64::MAX is an ordinary term when it is the term.
    assert_eq!(
        check(&mut c, &st, "max", p, None, lease, i64::MAX, None),
        Some(i64::MAX)
    );
    fenced_write(&mut c, &st.fence, "max", p, i64::MAX, lease).expect("term i64::MAX");

    // Released, revoked, deleted, missing, expired, infinite: closed.
    c.execute(&st.release, &[&name, &p, &t0, &st.channel])
        .unwrap();
    let e = fenced_write(&mut c, &st.fence, name, p, t0, lease).expect_err("released");
    assert!(is_refusal(&e), "{e:?}");
    let tr = check(&mut c, &st, "r", p, None, lease, 0, None).expect("inserted");
    fenced_write(&mut c, &st.fence, "r", p, tr, lease).expect("term tr holds the flag");
    c.execute(&st.revoke, &[&"r", &p]).unwrap();
    let e = fenced_write(&mut c, &st.fence, "r", p, tr, lease).expect_err("revoked");
    assert!(is_refusal(&e), "{e:?}");
    let td = check(&mut c, &st, "d", p, None, lease, 0, None).expect("inserted");
    c.execute(
        &format!("delete from {} where name = 'd'", table.quoted()),
        &[],
    )
    .unwrap();
    let e = fenced_write(&mut c, &st.fence, "d", p, td, lease).expect_err("deleted");
    assert!(is_refusal(&e), "{e:?}");
    let e = fenced_write(&mut c, &st.fence, "never", p, 0, lease).expect_err("no row");
    assert!(is_refusal(&e), "{e:?}");
    let tx_ = check(&mut c, &st, "x", p, None, SECOND, 0, None).expect("inserted");
    c.execute(
        &format!(
            "update {} set \"timestamp\" = now() - interval '2 seconds' where name = 'x'",
            table.quoted()
        ),
        &[],
    )
    .unwrap();
    let e = fenced_write(&mut c, &st.fence, "x", p, tx_, SECOND).expect_err("expired");
    assert!(is_refusal(&e), "{e:?}");
    c.execute(
        &format!(
            "update {} set \"timestamp\" = 'infinity' where name = 'x'",
            table.quoted()
        ),
        &[],
    )
    .unwrap();
    let e = fenced_write(&mut c, &st.fence, "x", p, tx_, SECOND).expect_err("infinite");
    assert!(is_refusal(&e), "{e:?}");

    // What it needs: a read-write transaction, and the term column.
    let tro = check(&mut c, &st, "ro", p, None, lease, 0, None).expect("inserted");
    let mut tx = c.build_transaction().read_only(true).start().unwrap();
    let e = tx
        .query(&st.fence, &[&"ro", &p, &tro, &lease])
        .expect_err("read-only");
    assert_eq!(
        e.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{e:?}"
    );
    drop(tx);
    c.batch_execute(
        "create table goshaped (name text primary key, holder text not null, \
         version bigint not null, \"timestamp\" timestamptz not null); \
         insert into goshaped values ('g', 'p', 0, now())",
    )
    .unwrap();
    let go = Statements::new(&Table::new("goshaped").unwrap());
    let e = fenced_write(&mut c, &go.fence, "g", "p", 0, lease).expect_err("no term column");
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_COLUMN), "{e:?}");
    assert_eq!(
        effects(&mut c, t0),
        2,
        "no refused transaction wrote anything"
    );
}

/// `run` retakes under the same name; a transaction of the old term delivered in the new one
/// must fail. Without the term column (`holder = me AND version >= token`) it commits.
#[test]
fn a_later_term_of_the_same_process_fails_an_earlier_terms_fence() {
    let server = &server();
    let table = Table::default();
    let (mut c, st) = setup(server, &table);
    let lease = 30 * SECOND;
    let t = check(&mut c, &st, "n", "p", None, lease, 0, None).unwrap();
    let renewed = check(&mut c, &st, "n", "p", Some(t), lease, t + 1, Some(t)).unwrap();
    fenced_write(&mut c, &st.fence, "n", "p", t, lease).expect("a renew continues the term");
    // The lease lapsed for the core (it lowered at its deadline); its next win is a new term
    // although the row still names it: a renew that continues nothing.
    let t2 = check(
        &mut c,
        &st,
        "n",
        "p",
        Some(renewed),
        lease,
        renewed + 1,
        None,
    )
    .unwrap();
    assert!(t2 > t);
    fenced_write(&mut c, &st.fence, "n", "p", t2, lease).expect("the new term holds the flag");
    let e = fenced_write(&mut c, &st.fence, "n", "p", t, lease).expect_err("the old term");
    assert!(is_refusal(&e), "{e:?}");
    assert_eq!(
        effects(&mut c, t),
        1,
        "only the write made while term {t} held the flag"
    );

    let naive = fence_without(FenceWithout::Term, &table);
    fenced_write(&mut c, &naive, "n", "p", t, lease).expect("the naive fence lets it through");
    assert_eq!(
        effects(&mut c, t),
        2,
        "without the term column the late write commits"
    );
}

/// While a fenced transaction is open, no write to the row commits: the term's own renew and
/// another process's takeover wait for it. With `FOR KEY SHARE` they do not.
#[test]
fn an_open_fenced_transaction_holds_off_renewals_until_it_ends() {
    let server = &server();
    let table = Table::default();
    let (mut c, st) = setup(server, &table);
    let lease = 30 * SECOND;
    let t = check(&mut c, &st, "n", "p", None, lease, 0, None).unwrap();
    let hold = Duration::from_millis(1500);
    // Whether the renew committed before the fenced transaction's commit was sent: judged by
    // the order of the two, not by how long the renew took.
    let renewed_before_the_commit = |fence: String| {
        let mut a = client(server);
        let mut tx = a.transaction().unwrap();
        tx.query(&fence, &[&"n", &"p", &t, &lease]).expect("fence");
        tx.execute("insert into effects (term) values ($1)", &[&t])
            .unwrap();
        let (conn, st2) = (server.conn_string(), st.clone());
        let (ready, sending) = std::sync::mpsc::channel();
        let renew = thread::spawn(move || {
            let mut b = Client::connect(&conn, NoTls).unwrap();
            let v: i64 = b
                .query_one("select version from leadership_flags where name = 'n'", &[])
                .unwrap()
                .get(0);
            ready.send(()).unwrap();
            let won = check(&mut b, &st2, "n", "p", Some(v), lease, v + 1, Some(t));
            (won, Instant::now())
        });
        sending.recv().unwrap();
        thread::sleep(hold); // the renew is sent meanwhile
        let commit_sent = Instant::now();
        tx.commit().unwrap();
        let (won, renewed) = renew.join().unwrap();
        assert!(won.is_some(), "the renew wins in the end");
        renewed < commit_sent
    };
    assert!(
        !renewed_before_the_commit(st.fence.clone()),
        "the renew waited for the fenced transaction"
    );
    assert!(
        renewed_before_the_commit(fence_without(FenceWithout::ShareLock, &table)),
        "FOR KEY SHARE does not hold the renew off"
    );
}

/// A hung client cannot hold the flag: the fence ends the transaction when the lease it found
/// expires by the server's clock, and a takeover waiting for it then wins.
#[test]
fn the_fence_bounds_the_transaction_by_the_lease_it_found() {
    let server = &server();
    let table = Table::default();
    let (mut c, st) = setup(server, &table);
    let lease = 2 * SECOND;
    let t = check(&mut c, &st, "n", "p", None, lease, 0, None).unwrap();
    let mut a = client(server);
    let mut tx = a.transaction().unwrap();
    let row = tx.query_one(&st.fence, &[&"n", &"p", &t, &lease]).unwrap();
    let ms: i64 = row.get("timeout_ms");
    assert!(
        (1..=2000).contains(&ms),
        "bounded by the lease left: {ms} ms"
    );
    let shown: String = tx.query_one("show statement_timeout", &[]).unwrap().get(0);
    assert!(shown.ends_with("ms") || shown.ends_with('s'), "{shown}");
    tx.execute("insert into effects (term) values ($1)", &[&t])
        .unwrap();
    // A takeover sent now waits for the fenced transaction (its lease is still live when it
    // starts; it tries again until it wins, as a follower does).
    let (conn, st2) = (server.conn_string(), st.clone());
    let started = Instant::now();
    let takeover = thread::spawn(move || {
        let mut b = Client::connect(&conn, NoTls).unwrap();
        loop {
            if let Some(v) = check(&mut b, &st2, "n", "q", None, lease, 0, None) {
                return (v, started.elapsed());
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    // The client hangs past the lease.
    thread::sleep(Duration::from_millis(3000));
    let e = tx.commit().expect_err("the transaction was ended");
    assert!(
        e.is_closed() || e.as_db_error().is_some() || e.to_string().contains("closed"),
        "{e:?}"
    );
    let (v, after) = takeover.join().unwrap();
    assert!(v > t);
    assert!(after < Duration::from_secs(10), "took over {after:?} after");
    assert_eq!(
        effects(&mut c, t),
        0,
        "nothing of the hung transaction committed"
    );
}

/// The lease is judged at the fence's own instant, not at the transaction's start: a
/// transaction begun while the lease was live and fenced after it expired fails.
#[test]
fn the_fence_judges_the_lease_by_the_clock_not_the_transactions_start() {
    let server = &server();
    let table = Table::default();
    let (mut c, st) = setup(server, &table);
    let lease = SECOND;
    let t = check(&mut c, &st, "n", "p", None, lease, 0, None).unwrap();
    let late = |fence: &str, c: &mut Client| {
        let mut tx = c.transaction().unwrap();
        tx.query_one("select 1", &[]).unwrap(); // the transaction's start
        thread::sleep(Duration::from_millis(1500));
        tx.query(fence, &[&"n", &"p", &t, &lease])?;
        tx.execute("insert into effects (term) values ($1)", &[&t])?;
        tx.commit()
    };
    let e = late(&st.fence, &mut c).expect_err("the lease expired before the fence");
    assert!(is_refusal(&e), "{e:?}");
    assert_eq!(effects(&mut c, t), 0);
    // Renewed: the same term, live again when the next transaction begins.
    let v: i64 = c
        .query_one("select version from leadership_flags where name = 'n'", &[])
        .unwrap()
        .get(0);
    assert!(check(&mut c, &st, "n", "p", Some(v), lease, v + 1, Some(t)).is_some());
    late(&fence_without(FenceWithout::Clock, &table), &mut c)
        .expect("judged at the transaction's start, the stale lease passes");
    assert_eq!(effects(&mut c, t), 1);
}

/// The blocking driver fences a `postgres` transaction from its guard (whatever its search_path): the live term's write
/// commits; once the flag is closed (the row released), the same guard's fence fails with the
/// typed error at the server (its statement and values run by hand, as with another client).
#[test]
fn the_blocking_guard_fences_a_postgres_transaction() {
    let server = &server();
    let (mut c, _) = setup(server, &Table::default());
    let flag = leadership_blocking::Flag::builder("job", "p")
        .connect_str(&server.conn_string())
        .interval(Duration::from_secs(2))
        .start(NoTls)
        .expect("start");
    let guard = flag.wait_raised(Duration::from_secs(10)).expect("leads");
    let mut tx = c.transaction().unwrap();
    // The caller's search_path need not find the flags: the fence names the table's schema.
    tx.batch_execute("SET LOCAL search_path = nowhere").unwrap();
    guard.fence_in(&mut tx).expect("the live term");
    assert!(guard
        .fence()
        .sql()
        .contains(r#"FROM "public"."leadership_flags""#));
    tx.execute(
        "insert into public.effects (term) values ($1)",
        &[&guard.token()],
    )
    .unwrap();
    tx.commit().unwrap();
    let fence = guard.fence();
    drop(guard);
    flag.close().unwrap();
    let mut tx = c.transaction().unwrap();
    let e = tx
        .query_typed(fence.sql(), &fence.params())
        .map_err(|e| fence.error(e))
        .expect_err("released");
    assert!(
        matches!(e, leadership_blocking::FenceError::TermOver { .. }),
        "{e:?}"
    );
    drop(tx);
    assert_eq!(effects(&mut c, fence.token()), 1);
}

/// A table made by the Go flag gets the term column at start-up where the role owns it; where
/// it does not, the flag elects without it and every fence fails closed with the typed error
/// naming the statement an owner can run.
#[test]
fn the_term_column_is_added_where_the_role_may_and_fences_fail_closed_where_not() {
    let server = &server();
    let go_table = |c: &mut Client, name: &str| {
        c.batch_execute(&format!(
            "create table {name} (name text primary key, holder text not null, \
             version bigint not null, \"timestamp\" timestamptz not null)"
        ))
        .unwrap();
    };
    let mut c = client(server);
    go_table(&mut c, "owned");
    go_table(&mut c, "not_owned");
    c.batch_execute(
        "create role app login; grant select, insert, update, delete on not_owned to app",
    )
    .unwrap();
    let has_term = |c: &mut Client, table: &str| -> bool {
        c.query_one(
            "select count(*) = 1 from pg_attribute where attrelid = to_regclass($1) \
             and attname = 'term' and not attisdropped",
            &[&table],
        )
        .unwrap()
        .get(0)
    };
    let start = |conn: &str, table: &str| {
        leadership_blocking::Flag::builder("job", "p")
            .connect_str(conn)
            .table(table)
            .interval(Duration::from_secs(2))
            .start(NoTls)
            .expect("start")
    };
    let owner = start(&server.conn_string(), "owned");
    assert!(has_term(&mut c, "owned"), "added at start-up");
    let guard = owner.wait_raised(Duration::from_secs(10)).expect("leads");
    let mut tx = c.transaction().unwrap();
    guard
        .fence_in(&mut tx)
        .expect("fenced on the altered table");
    drop(tx);
    drop(guard);
    owner.close().unwrap();

    let app = format!(
        "host={} port={} user=app dbname=postgres",
        server.host(),
        server.port()
    );
    let flag = start(&app, "not_owned");
    assert!(!has_term(&mut c, "not_owned"), "only its owner may add it");
    let guard = flag
        .wait_raised(Duration::from_secs(10))
        .expect("elects without it");
    let mut tx = c.transaction().unwrap();
    let e = guard
        .fence_in(&mut tx)
        .expect_err("no term column, no fence");
    assert!(
        matches!(&e, leadership_blocking::FenceError::NoTermColumn { add, .. } if add.contains("ADD COLUMN IF NOT EXISTS \"term\" bigint")),
        "{e}"
    );
    drop(tx);
    drop(guard);
    flag.close().unwrap();
}

/// Behind pgbouncer in transaction pooling the fence works as on the server: its bounds are
/// settings of the transaction, on the server connection the pooler lends it, so they hold
/// there; and they end with it, leaving nothing behind for the next client of that connection.
#[test]
fn behind_a_transaction_pooler_the_fence_holds_and_its_bounds_end_with_the_transaction() {
    use leadership_pgkit::pgbouncer::{PgBouncer, PoolMode};
    let server = &server();
    let table = Table::default();
    let (mut c, st) = setup(server, &table);
    let lease = 2 * SECOND;
    let t = check(&mut c, &st, "n", "p", None, lease, 0, None).unwrap();
    let bouncer = PgBouncer::start(server, PoolMode::Transaction).unwrap();
    let mut b = Client::connect(&bouncer.conn_string(), NoTls).expect("through pgbouncer");
    let fence = fence_literal(&table, "n", "p", t, lease);
    let mut tx = b.transaction().unwrap();
    tx.batch_execute(&fence)
        .expect("the fence through the pooler");
    let shown: String = tx
        .query_one("show idle_in_transaction_session_timeout", &[])
        .unwrap()
        .get(0);
    assert_ne!(shown, "0", "bounded inside the transaction");
    tx.batch_execute("insert into effects (term) values (0)")
        .unwrap();
    tx.commit().unwrap();
    let after: String = b
        .query_one("show idle_in_transaction_session_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(after, "0", "nothing left on the pooled connection");
    // A client that hangs inside a fenced transaction is cut off at the lease's end.
    let mut tx = b.transaction().unwrap();
    tx.batch_execute(&fence).unwrap();
    thread::sleep(Duration::from_millis(2500));
    assert!(
        tx.batch_execute("insert into effects (term) values (0)")
            .and_then(|()| tx.commit())
            .is_err(),
        "the hung transaction was ended"
    );
    assert_eq!(effects(&mut c, 0), 1);
}
