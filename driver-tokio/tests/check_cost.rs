//! What one check costs the server, compared around N checks on a quiet server (autovacuum off,
//! `wal_level = minimal`: nothing else assigns transaction IDs or writes WAL meanwhile):
//! a follower's check assigns no transaction ID, writes no WAL and waits for no row lock, and a
//! leader's renew writes what the Go flag's `UPDATE` writes.
//!
//! Each test also runs the check as it was before it wrote only when it wins
//! ([`check_variants::BEFORE`]) and requires the same measurement to see that one's cost: the
//! proof that the test can fail.

use std::time::{Duration, Instant};

use leadership_core::sql::{Statements, Table};
use leadership_pgkit::pg::{PgServer, ServerOptions};
use leadership_sim::check_variants::{self, BEFORE};
use leadership_tokio::internal::PgTime;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls};

const FLAG: &str = "flag";
/// Checks per measurement.
const N: usize = 200;
/// 30 s: the leader's lease stays live throughout.
const LEASE: i64 = 30_000_000;

fn quiet_server() -> PgServer {
    PgServer::start_with(
        &ServerOptions::new()
            .config("autovacuum = off")
            .config("wal_level = minimal")
            .config("max_wal_senders = 0"),
    )
    .unwrap_or_else(|e| panic!("test PostgreSQL: {e}"))
}

fn connect(server: &PgServer) -> Client {
    let mut c = Client::connect(&server.conn_string(), NoTls).expect("connect");
    c.batch_execute(&Statements::new(&Table::default()).create_table)
        .expect("create table");
    c.batch_execute("create extension if not exists pg_walinspect")
        .expect("pg_walinspect (PostgreSQL 15 contrib)");
    c
}

/// The row held by `leader` at version 5, renewed just now.
fn held_by_leader(c: &mut Client) {
    c.batch_execute(
        "delete from leadership_flags; \
         insert into leadership_flags values ('flag', 'leader', 5, now())",
    )
    .unwrap();
}

/// The check under test, prepared: the core's, or the one before (four parameters).
struct Check {
    text: String,
    before: bool,
}

impl Check {
    fn ours() -> Check {
        Check {
            text: Statements::new(&Table::default()).check,
            before: false,
        }
    }

    fn before() -> Check {
        Check {
            text: check_variants::render(BEFORE, &Table::default()),
            before: true,
        }
    }

    /// One check by `process`, renewing `renew`; `won`.
    fn run(
        &self,
        c: &mut Client,
        process: &str,
        renew: Option<i64>,
    ) -> Result<bool, postgres::Error> {
        let floor = renew.map_or(0, |v| v + 1);
        // A renew continues the term of the leader's row (`held_by_leader`: version 5).
        let continues = renew.map(|_| 5i64);
        // No server expected (NULLs): one server here.
        let (system, timeline, started): (Option<String>, Option<i32>, Option<PgTime>) =
            (None, None, None);
        let all: [&(dyn ToSql + Sync); 11] = [
            &FLAG, &process, &renew, &LEASE, &floor, &true, &true, &continues, &system, &timeline,
            &started,
        ];
        // Each text takes the parameters it names: the check before 4, the variants 6, ours 11.
        let statement = c.prepare(self.text.as_str())?;
        let params = &all[..statement.params().len()];
        c.query_one(&statement, params).map(|r| r.get(0))
    }
}

/// What the server did around some statements.
#[derive(Debug)]
struct Cost {
    /// Transaction IDs assigned (the next one's advance).
    xids: i64,
    /// WAL bytes inserted.
    wal_bytes: i64,
    /// WAL records by `resource manager/record type`: count and bytes without full pages.
    records: Vec<(String, i64, i64)>,
}

impl Cost {
    fn records_of(&self, kind: &str) -> i64 {
        self.records
            .iter()
            .filter(|r| r.0 == kind)
            .map(|r| r.1)
            .sum()
    }

    /// The bytes of every record except `Heap2` (page pruning, which any reader may do).
    fn bytes_of_the_writes(&self) -> i64 {
        self.records
            .iter()
            .filter(|r| !r.0.starts_with("Heap2/"))
            .map(|r| r.2)
            .sum()
    }
}

fn cost(c: &mut Client, mut body: impl FnMut(&mut Client)) -> Cost {
    let mark = |c: &mut Client| -> (i64, String) {
        let r = c
            .query_one(
                "select pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
                 pg_current_wal_insert_lsn()::text",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let (x0, l0) = mark(c);
    for _ in 0..N {
        body(c);
    }
    let (x1, l1) = mark(c);
    let wal_bytes: i64 = c
        .query_one(
            "select pg_wal_lsn_diff($2::text::pg_lsn, $1::text::pg_lsn)::bigint",
            &[&l0, &l1],
        )
        .unwrap()
        .get(0);
    let records = if wal_bytes > 0 {
        c.query(
            "select \"resource_manager/record_type\", count, record_size \
             from pg_get_wal_stats($1::text::pg_lsn, $2::text::pg_lsn, true) where count > 0",
            &[&l0, &l1],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    } else {
        Vec::new()
    };
    Cost {
        xids: x1 - x0,
        wal_bytes,
        records,
    }
}

fn follower_cost(c: &mut Client, check: &Check) -> Cost {
    held_by_leader(c);
    // Warm up: the plan cached, hint bits set on the row.
    for _ in 0..10 {
        assert!(!check.run(c, "follower", None).unwrap());
    }
    cost(c, |c| {
        assert!(!check.run(c, "follower", None).unwrap(), "a follower won")
    })
}

#[test]
fn a_follower_check_assigns_no_transaction_id_and_writes_no_wal() {
    let server = quiet_server();
    let mut c = connect(&server);
    let ours = follower_cost(&mut c, &Check::ours());
    let before = follower_cost(&mut c, &Check::before());
    println!("{N} follower checks: ours {ours:?}\nbefore {before:?}");
    // The measurement sees a follower's cost where there is one.
    assert_eq!(before.xids, N as i64, "before: {before:?}");
    assert!(before.wal_bytes > 0, "before: {before:?}");
    assert_eq!(before.records_of("Heap/LOCK"), N as i64, "{before:?}");
    // Ours has none.
    assert_eq!(ours.xids, 0, "ours assigned transaction IDs: {ours:?}");
    assert_eq!(ours.wal_bytes, 0, "ours wrote WAL: {ours:?}");
}

#[test]
fn a_follower_check_waits_for_no_row_lock() {
    let server = quiet_server();
    let mut c = connect(&server);
    let mut holder = Client::connect(&server.conn_string(), NoTls).unwrap();
    // Another transaction holds the row: a reader that locked it, and the leader's renew not
    // yet committed (with fsync on, the commit's flush is what a follower would queue behind).
    let holds = [
        "select 1 from leadership_flags where name = 'flag' for update",
        "update leadership_flags set version = version + 1, \"timestamp\" = now() \
         where name = 'flag'",
    ];
    for hold in holds {
        for check in [Check::ours(), Check::before()] {
            held_by_leader(&mut c);
            c.batch_execute("set lock_timeout = '300ms'").unwrap();
            let mut tx = holder.transaction().unwrap();
            tx.batch_execute(hold).unwrap();
            let started = Instant::now();
            let r = check.run(&mut c, "follower", None);
            let took = started.elapsed();
            tx.rollback().unwrap();
            if check.before {
                // The same measurement catches a check that waits.
                let e = r.expect_err("before: the check must wait for the row lock");
                assert_eq!(e.code(), Some(&SqlState::LOCK_NOT_AVAILABLE), "{e}");
            } else {
                let won =
                    r.unwrap_or_else(|e| panic!("ours waited for the row lock ({hold}): {e}"));
                assert!(!won, "a follower won");
                assert!(took < Duration::from_millis(300), "{took:?}");
            }
        }
    }
}

/// Renews by `leader` of its own row, `N` times, each naming the version it holds.
fn renew_cost(c: &mut Client, check: &Check) -> Cost {
    held_by_leader(c);
    let mut version = 5;
    let mut renew = |c: &mut Client| {
        assert!(
            check.run(c, "leader", Some(version)).unwrap(),
            "a renew lost"
        );
        version += 1;
    };
    for _ in 0..10 {
        renew(c);
    }
    cost(c, renew)
}

/// The Go flag's renew (`updateTimestamp` in `flag.go`): `select now()`, the `select` of the
/// row, then this `UPDATE`, `N` times.
fn go_renew_cost(c: &mut Client) -> Cost {
    held_by_leader(c);
    let now = c.prepare("select now()").unwrap();
    let load = c
        .prepare("select holder, version, timestamp from leadership_flags where name = $1")
        .unwrap();
    let update = c
        .prepare(
            "update leadership_flags set version = $1, timestamp = $2 \
             where name = $3 and holder = $4 and version = $5",
        )
        .unwrap();
    let renew = |c: &mut Client| {
        let t: std::time::SystemTime = c.query_one(&now, &[]).unwrap().get(0);
        let version: i64 = c.query_one(&load, &[&FLAG]).unwrap().get(1);
        let n = c
            .execute(&update, &[&(version + 1), &t, &FLAG, &"leader", &version])
            .unwrap();
        assert_eq!(n, 1, "the Go flag's renew lost");
    };
    for _ in 0..10 {
        renew(c);
    }
    cost(c, renew)
}

#[test]
fn a_renew_writes_what_the_go_flags_update_writes() {
    let server = quiet_server();
    let mut c = connect(&server);
    let ours = renew_cost(&mut c, &Check::ours());
    let go = go_renew_cost(&mut c);
    let before = renew_cost(&mut c, &Check::before());
    println!("{N} renews: ours {ours:?}\nGo flag {go:?}\nbefore {before:?}");
    for cost in [&ours, &go, &before] {
        assert_eq!(cost.xids, N as i64, "one transaction per renew: {cost:?}");
        assert_eq!(cost.records_of("Transaction/COMMIT"), N as i64, "{cost:?}");
    }
    // An update record's size varies by a byte or two with the values written (the prefix and
    // suffix the new tuple shares with the old one are left out), so equal means within that.
    let luck = 2 * N as i64;
    // The measurement sees the lock record (54 bytes) `ON CONFLICT DO UPDATE` writes first.
    assert_eq!(before.records_of("Heap/LOCK"), N as i64, "{before:?}");
    assert!(before.bytes_of_the_writes() > go.bytes_of_the_writes() + luck);
    // Ours: an update and a commit per renew, no lock record, no more bytes than Go's.
    assert_eq!(ours.records_of("Heap/LOCK"), 0, "{ours:?}");
    assert_eq!(
        ours.records_of("Heap/HOT_UPDATE") + ours.records_of("Heap/UPDATE"),
        N as i64,
        "{ours:?}"
    );
    assert!(
        ours.bytes_of_the_writes() <= go.bytes_of_the_writes() + luck,
        "ours {} bytes, Go {} bytes",
        ours.bytes_of_the_writes(),
        go.bytes_of_the_writes()
    );
}
