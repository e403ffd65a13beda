//! The reference table (`leadership_sim::table::RefTable`, which the simulator runs on)
//! against a real server: the same starting row, the same statement, the same result and the
//! same row left behind.
//!
//! Each case runs in one transaction that is rolled back, so `now()` is the same for the
//! setup (timestamps relative to `now()`) and the statement, and the reference table is given
//! exactly the server's `now()`.

use leadership_core::sql::{Statements, Table, SERVER};
use leadership_core::{DbTime, Identity, Server};
use leadership_pgkit::helpers::server;
use leadership_pgkit::pg::PgServer;
use leadership_sim::table::{CheckArgs, CheckResult, RefRow, RefTable};
use leadership_tokio::internal::{CheckRow, PgTime};
use postgres::{Client, NoTls, Transaction};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

const FLAG: &str = "flag";
/// A neighbour row that no statement may touch.
const OTHER: &str = "other";
const SECOND: i64 = 1_000_000;
const YEAR: i64 = 365 * 24 * 3600 * SECOND;

/// A starting timestamp, relative to the transaction's `now()` where finite.
#[derive(Clone, Copy, Debug)]
enum Ts {
    Null,
    Rel(i64),
    Epoch,
    Inf,
    NegInf,
}

/// A starting row.
#[derive(Clone, Copy, Debug)]
struct Start {
    holder: Option<&'static str>,
    version: Option<i64>,
    ts: Ts,
    /// The term column.
    term: Option<i64>,
}

#[derive(Clone, Copy, Debug)]
enum Call {
    Check {
        process: &'static str,
        renew: Option<i64>,
        lease: i64,
        /// `$5`: the lowest version a win may write.
        floor: i64,
        /// `$6`: whether an expired row may be taken over.
        may_take: bool,
        /// `$7`: whether a missing row may be inserted.
        may_insert: bool,
        /// `$8`: the term a renew continues.
        continues: Option<i64>,
        /// `$9`–`$11`: the server the check expects.
        expect: Expect,
    },
    Release {
        process: &'static str,
        version: i64,
    },
}

/// Which server a check expects to run on.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// None known: NULLs, nothing compared.
    Unknown,
    /// The one that runs it.
    Same,
    /// Another cluster (system identifier 1).
    Other,
}

/// The server as [`SERVER`] and the check compute it.
fn this_server(tx: &mut Transaction<'_>) -> Server {
    let r = tx.query_one(SERVER, &[]).unwrap();
    Server {
        system: r
            .get::<_, Option<String>>("system")
            .and_then(|s| s.parse().ok()),
        timeline: r.get::<_, Option<i32>>("timeline").map(|t| t as u32),
        started: r.get::<_, Option<PgTime>>("started").map(|t| t.0),
        durable: r.get("durable"),
        promoted_ago: None,
    }
}

fn client(server: &PgServer) -> Client {
    let mut c = Client::connect(&server.conn_string(), NoTls).expect("connect");
    // Nullable columns, as a table made by hand may have; the statements are the same.
    c.batch_execute(
        "create table if not exists conformance (name text primary key, holder text, \
         version bigint, \"timestamp\" timestamptz, term bigint)",
    )
    .expect("create table");
    c
}

fn statements() -> Statements {
    Statements::new(&Table::new("conformance").unwrap())
}

fn ts_sql(ts: Ts) -> String {
    match ts {
        Ts::Null => "NULL".into(),
        Ts::Rel(us) => format!("now() + {us} * interval '1 microsecond'"),
        Ts::Epoch => "'1970-01-01 00:00:00+00'".into(),
        Ts::Inf => "'infinity'".into(),
        Ts::NegInf => "'-infinity'".into(),
    }
}

fn ts_ref(ts: Ts, now: DbTime) -> Option<DbTime> {
    match ts {
        Ts::Null => None,
        Ts::Rel(us) => Some(DbTime::from_unix_micros(now.as_unix_micros() + us)),
        Ts::Epoch => Some(DbTime::UNIX_EPOCH),
        Ts::Inf => Some(DbTime::INFINITY),
        Ts::NegInf => Some(DbTime::NEG_INFINITY),
    }
}

fn put(tx: &mut Transaction<'_>, name: &str, start: &Start) {
    tx.execute(
        &format!(
            "insert into conformance values ($1, $2, $3, {}, $4)",
            ts_sql(start.ts)
        ),
        &[&name, &start.holder, &start.version, &start.term],
    )
    .expect("insert the starting row");
}

fn rows(tx: &mut Transaction<'_>) -> Vec<(String, RefRow)> {
    tx.query(
        "select name, holder, version, \"timestamp\", term from conformance order by name",
        &[],
    )
    .expect("read rows")
    .iter()
    .map(|r| {
        let ts: Option<PgTime> = r.get(3);
        (
            r.get(0),
            RefRow {
                holder: r.get(1),
                version: r.get(2),
                timestamp: ts.map(|t| t.0),
                term: r.get(4),
            },
        )
    })
    .collect()
}

/// Runs one case on both sides; returns a description of any difference.
fn compare(
    client: &mut Client,
    st: &Statements,
    start: Option<Start>,
    call: Call,
) -> Result<(), String> {
    let mut tx = client.transaction().map_err(|e| e.to_string())?;
    tx.batch_execute("delete from conformance").unwrap();
    let neighbour = Start {
        holder: Some("z"),
        version: Some(1),
        ts: Ts::Rel(-10 * YEAR),
        term: Some(1),
    };
    put(&mut tx, OTHER, &neighbour);
    if let Some(start) = &start {
        put(&mut tx, FLAG, start);
    }
    let now: DbTime = tx
        .query_one("select now()", &[])
        .map(|r| r.get::<_, PgTime>(0).0)
        .unwrap();
    let server = this_server(&mut tx);
    let mut table = RefTable::new();
    let to_ref = |s: &Start| RefRow {
        holder: s.holder.map(str::to_string),
        version: s.version,
        timestamp: ts_ref(s.ts, now),
        term: s.term,
    };
    table.put(OTHER, to_ref(&neighbour));
    if let Some(start) = &start {
        table.put(FLAG, to_ref(start));
    }

    let outcome = match call {
        Call::Check {
            process,
            renew,
            lease,
            floor,
            may_take,
            may_insert,
            continues,
            expect,
        } => {
            let expect = match expect {
                Expect::Unknown => None,
                Expect::Same => Some(server.identity()),
                Expect::Other => Some(Identity {
                    system: Some(1),
                    ..server.identity()
                }),
            };
            let system = expect.and_then(|e| e.system).map(|s| s.to_string());
            let timeline = expect.and_then(|e| e.timeline).map(|t| t as i32);
            let started = expect.and_then(|e| e.started).map(PgTime);
            let got = tx
                .query_one(
                    &st.check,
                    &[
                        &FLAG,
                        &process,
                        &renew,
                        &lease,
                        &floor,
                        &may_take,
                        &may_insert,
                        &continues,
                        &system,
                        &timeline,
                        &started,
                    ],
                )
                .map_err(|e| format!("server error: {e}"))
                .and_then(|r| CheckRow::decode(&r).map_err(|e| e.to_string()));
            let args = CheckArgs {
                name: FLAG,
                process,
                renew,
                lease_micros: lease,
                floor,
                may_take,
                may_insert,
                continues,
                expect,
            };
            let want = table.check_on(now, &server, &args);
            match got {
                Err(e) => Err(format!("{e}; reference: {want:?}")),
                Ok(got) if !same(&got, &want) => Err(format!("server {got:?}\nreference {want:?}")),
                Ok(_) => Ok(()),
            }
        }
        Call::Release { process, version } => {
            let got = tx
                .query(&st.release, &[&FLAG, &process, &version, &st.channel])
                .map(|r| r.len())
                .map_err(|e| format!("server error: {e}"));
            let want = table.release(FLAG, process, version);
            match got {
                Err(e) => Err(format!("{e}; reference released {want}")),
                Ok(n) if (n == 1) != want || n > 1 => {
                    Err(format!("server released {n} rows, reference {want}"))
                }
                Ok(_) => Ok(()),
            }
        }
    };
    let after = rows(&mut tx);
    tx.rollback().unwrap();
    outcome?;
    let want: Vec<(String, RefRow)> = table
        .rows()
        .map(|(n, r)| (n.to_string(), r.clone()))
        .collect();
    if after != want {
        return Err(format!("rows left: server {after:?}\nreference {want:?}"));
    }
    Ok(())
}

fn same(got: &CheckRow, want: &CheckResult) -> bool {
    let row = want.row.clone().unwrap_or(RefRow {
        holder: None,
        version: None,
        timestamp: None,
        term: None,
    });
    got.won == want.won
        && got.found == want.found
        && got.holder == row.holder
        && got.version == row.version
        && got.timestamp == row.timestamp
        && got.now == want.now
        && got.won_by == want.won_by
        && Some(got.server) == want.server
}

fn starts() -> Vec<Option<Start>> {
    // The term column at 2: kept by what does not win, replaced by a new term.
    let s = |holder, version, ts| {
        Some(Start {
            holder,
            version,
            ts,
            term: Some(2),
        })
    };
    let lease = SECOND;
    vec![
        None,
        s(Some("a"), Some(3), Ts::Rel(-lease / 2)),
        s(Some("a"), Some(3), Ts::Rel(-lease)),
        s(Some("a"), Some(3), Ts::Rel(-lease - 1)),
        s(Some("a"), Some(3), Ts::Rel(-lease + 1)),
        s(Some("a"), Some(0), Ts::Rel(0)),
        s(Some("b"), Some(7), Ts::Rel(-10 * SECOND)),
        s(Some("b"), Some(7), Ts::Rel(-lease / 10)),
        s(Some("b"), Some(7), Ts::Rel(3600 * SECOND)),
        s(Some("a"), Some(8), Ts::Epoch),
        s(Some("b"), Some(8), Ts::Epoch),
        s(None, Some(5), Ts::Rel(-lease / 2)),
        s(None, Some(5), Ts::Rel(-10 * SECOND)),
        s(Some("a"), None, Ts::Rel(-10 * SECOND)),
        s(Some("a"), Some(5), Ts::Null),
        s(None, None, Ts::Null),
        s(Some("a"), Some(i64::MAX), Ts::Rel(-10 * SECOND)),
        s(Some("a"), Some(i64::MAX - 1), Ts::Rel(-10 * SECOND)),
        s(Some("a"), Some(i64::MAX - 1), Ts::Rel(-lease / 2)),
        s(Some("a"), Some(-4), Ts::Rel(-10 * SECOND)),
        s(Some("a"), Some(3), Ts::Inf),
        s(Some("b"), Some(3), Ts::Inf),
        s(Some("a"), Some(3), Ts::NegInf),
        s(Some("b"), Some(3), Ts::NegInf),
    ]
}

fn calls(start: &Option<Start>) -> Vec<Call> {
    let v = start.and_then(|s| s.version).unwrap_or(0);
    // The floor below, at and above the row's version + 1 (deduplicated near i64::MAX).
    let mut floors: Vec<i64> = [Some(v), v.checked_add(1), v.checked_add(5)]
        .into_iter()
        .flatten()
        .collect();
    floors.dedup();
    let mut calls = Vec::new();
    for process in ["a", "b"] {
        for renew in [None, Some(v), v.checked_add(1), v.checked_sub(1)] {
            for lease in [SECOND, 30 * SECOND, YEAR] {
                for &floor in &floors {
                    for may_take in [true, false] {
                        // May insert matters only without a row: both there, as may take
                        // elsewhere.
                        let inserts = if start.is_none() {
                            vec![true, false]
                        } else {
                            vec![may_take]
                        };
                        // A term continues only with a renew: both there.
                        let terms = match renew {
                            Some(_) => vec![None, Some(7)],
                            None => vec![None],
                        };
                        // The server expected: another only where a win is possible at all.
                        let expects = match (lease, may_take || start.is_none()) {
                            (SECOND, true) => &[Expect::Same, Expect::Other, Expect::Unknown][..],
                            _ => &[Expect::Same][..],
                        };
                        for may_insert in inserts {
                            for &continues in &terms {
                                for &expect in expects {
                                    calls.push(Call::Check {
                                        process,
                                        renew,
                                        lease,
                                        floor,
                                        may_take,
                                        may_insert,
                                        continues,
                                        expect,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        for version in [Some(v), v.checked_add(1), v.checked_sub(1)]
            .into_iter()
            .flatten()
        {
            calls.push(Call::Release { process, version });
        }
    }
    calls
}

#[test]
fn the_reference_table_matches_the_server_on_every_listed_case() {
    // Its own server: the tests run in parallel and each clears the table per case.
    let server = &server();
    let mut client = client(server);
    let st = statements();
    let mut failures = Vec::new();
    let mut count = 0;
    for start in starts() {
        for call in calls(&start) {
            count += 1;
            if let Err(e) = compare(&mut client, &st, start, call) {
                failures.push(format!("start {start:?}, call {call:?}:\n{e}"));
            }
        }
    }
    println!("{count} cases, {} differences", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {count} cases differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn ts_strategy() -> impl Strategy<Value = Ts> {
    prop_oneof![
        6 => (-3 * SECOND..3 * SECOND).prop_map(Ts::Rel),
        2 => prop_oneof![Just(-SECOND), Just(-SECOND - 1), Just(-SECOND + 1)].prop_map(Ts::Rel),
        1 => Just(Ts::Null),
        1 => Just(Ts::Epoch),
        1 => Just(Ts::Inf),
        1 => Just(Ts::NegInf),
    ]
}

fn version_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![4 => 0..10i64, 1 => Just(i64::MAX), 1 => Just(i64::MAX - 1), 1 => any::<i64>()]
}

fn start_strategy() -> impl Strategy<Value = Option<Start>> {
    let holder = prop_oneof![4 => Just(Some("a")), 4 => Just(Some("b")), 1 => Just(None)];
    let version = prop_oneof![8 => version_strategy().prop_map(Some), 1 => Just(None)];
    prop_oneof![
        1 => Just(None),
        8 => (holder, version, ts_strategy(), proptest::option::of(version_strategy())).prop_map(|(holder, version, ts, term)| Some(Start { holder, version, ts, term })),
    ]
}

/// A floor near the row's version `v` (below, at or above `v + 1`), or anywhere.
fn floor_strategy(v: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => (-2i64..4).prop_map(move |d| v.saturating_add(d)),
        1 => Just(0i64),
        1 => version_strategy(),
    ]
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![4 => Just(Expect::Same), 1 => Just(Expect::Other), 1 => Just(Expect::Unknown)]
}

fn call_strategy(v: i64) -> impl Strategy<Value = Call> {
    let process = prop_oneof![Just("a"), Just("b")];
    let lease = prop_oneof![Just(SECOND), 1..3 * SECOND, Just(YEAR)];
    let may = || prop_oneof![3 => Just(true), 1 => Just(false)];
    prop_oneof![
        3 => (process.clone(), proptest::option::of(version_strategy()), lease, floor_strategy(v), may(), may(), proptest::option::of(version_strategy()), expect_strategy())
            .prop_map(|(process, renew, lease, floor, may_take, may_insert, continues, expect)| Call::Check { process, renew, lease, floor, may_take, may_insert, continues, expect }),
        1 => (process, version_strategy()).prop_map(|(process, version)| Call::Release { process, version }),
    ]
}

#[test]
fn the_reference_table_matches_the_server_on_random_cases() {
    // Its own server: the tests run in parallel and each clears the table per case.
    let server = &server();
    let client = std::cell::RefCell::new(client(server));
    let st = statements();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // Renews mostly name the starting version, so that renews are exercised, not just misses.
    let case = start_strategy().prop_flat_map(|start| {
        let v = start.and_then(|s| s.version).unwrap_or(0);
        let call = prop_oneof![
            2 => call_strategy(v),
            1 => (prop_oneof![Just("a"), Just("b")], Just(v), floor_strategy(v), any::<bool>(), any::<bool>(), proptest::option::of(version_strategy()), expect_strategy())
                .prop_map(|(process, v, floor, may_take, may_insert, continues, expect)| Call::Check { process, renew: Some(v), lease: SECOND, floor, may_take, may_insert, continues, expect }),
            1 => (prop_oneof![Just("a"), Just("b")], Just(v))
                .prop_map(|(process, version)| Call::Release { process, version }),
        ];
        (Just(start), call)
    });
    let result = runner.run(&case, |(start, call)| {
        compare(&mut client.borrow_mut(), &st, start, call).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Where the term column cannot be added, the check runs without it on the Go flag's own table
/// (prepared with the driver's types) and wins as the full one: a new term at the server's
/// clock, a renew one above.
#[test]
fn the_check_without_the_term_column_runs_on_the_go_flags_table() {
    let server = &server();
    let mut c = Client::connect(&server.conn_string(), NoTls).expect("connect");
    c.batch_execute(
        "create table goshaped (name text primary key, holder text not null, \
         version bigint not null, \"timestamp\" timestamptz not null)",
    )
    .unwrap();
    let st = Statements::new(&Table::new("goshaped").unwrap());
    // The driver's own parameter types.
    let types = leadership_tokio::internal::CHECK_TYPES;
    let check = c.prepare_typed(&st.check_without_term, &types).unwrap();
    let none: Option<i64> = None;
    let (system, timeline, started): (Option<String>, Option<i32>, Option<PgTime>) =
        (None, None, None);
    let r = c
        .query_one(
            &check,
            &[
                &FLAG, &"a", &none, &SECOND, &0i64, &true, &true, &none, &system, &timeline,
                &started,
            ],
        )
        .unwrap();
    assert!(r.get::<_, bool>("won"));
    let token = r.get::<_, i64>("version");
    let r = c
        .query_one(
            &check,
            &[
                &FLAG,
                &"a",
                &Some(token),
                &SECOND,
                &(token + 1),
                &true,
                &true,
                &Some(token),
                &system,
                &timeline,
                &started,
            ],
        )
        .unwrap();
    assert!(r.get::<_, bool>("won") && r.get::<_, i64>("version") == token + 1);
    assert!(
        c.prepare(&st.check).is_err(),
        "the full check needs the column"
    );
}

/// Issue 25: a server that is not durable (`fsync = off`) and started less than a lease ago
/// may have lost commits in a crash, on the same timeline: the check inserts nothing and takes
/// nothing over until a lease after `pg_postmaster_start_time()`, and the reference table says
/// the same. A renewal is not refused. (The kit's servers run with `fsync = on` for this
/// reason.) Fails if the statement's `settled` condition is removed.
#[test]
fn a_fresh_server_that_is_not_durable_takes_nothing_for_a_lease_after_its_start() {
    use leadership_pgkit::pg::ServerOptions;
    let server = PgServer::start_with(&ServerOptions::new().config("fsync = off"))
        .unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    let mut c = client(&server);
    let st = statements();
    let mut tx = c.transaction().unwrap();
    let this = this_server(&mut tx);
    assert!(!this.durable, "{this:?}");
    let started = this.started.expect("a start time");
    let now: DbTime = tx
        .query_one("select now()", &[])
        .map(|r| r.get::<_, PgTime>(0).0)
        .unwrap();
    let up_for = now.micros_since(started);
    let check = |tx: &mut Transaction<'_>, lease: i64| {
        let expect = this.identity();
        let row = tx
            .query_one(
                &st.check,
                &[
                    &FLAG,
                    &"a",
                    &None::<i64>,
                    &lease,
                    &0i64,
                    &true,
                    &true,
                    &None::<i64>,
                    &expect.system.map(|s| s.to_string()),
                    &expect.timeline.map(|t| t as i32),
                    &expect.started.map(PgTime),
                ],
            )
            .unwrap();
        let got = CheckRow::decode(&row).unwrap();
        let args = CheckArgs {
            name: FLAG,
            process: "a",
            renew: None,
            lease_micros: lease,
            floor: 0,
            may_take: true,
            may_insert: true,
            continues: None,
            expect: Some(expect),
        };
        let want = RefTable::new().check_on(got.now, &this, &args);
        assert_eq!(
            got.won, want.won,
            "lease {lease} µs: server {got:?}, reference {want:?}"
        );
        got.won
    };
    // A lease longer than the server has been up: no insert.
    assert!(
        !check(&mut tx, up_for + YEAR),
        "inserted on a fresh non-durable server"
    );
    // A lease it has outlived: the insert goes ahead.
    assert!(
        check(&mut tx, up_for / 2),
        "refused although a lease has passed"
    );
    tx.rollback().unwrap();
}
