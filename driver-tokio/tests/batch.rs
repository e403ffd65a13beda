//! The batched check (`sql::CHECK_BATCH`, issue 28) against the single check on a real server:
//! for every flag of a batch, the same reply and the same row left behind as the single check
//! run for that flag alone; a row another transaction has locked is skipped, not waited for;
//! batches over the same rows in any order never deadlock.
//!
//! Each case sets up the same rows in two tables and runs, in one transaction (so `now()` is
//! the same for both), the single check once per flag on the first and one batch on the second.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use leadership_core::sql::{Statements, Table};
use leadership_pgkit::helpers::server;
use leadership_pgkit::pg::PgServer;
use leadership_tokio::internal::CHECK_TYPES;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row, Transaction};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

const ME: &str = "me";
const SECOND: i64 = 1_000_000;
const LEASE: i64 = 10 * SECOND;

/// One flag of a case: its starting row (relative to `now()`) and its check's parameters.
#[derive(Clone, Debug)]
struct Flag {
    name: String,
    /// holder, version, timestamp (µs from `now()`), term.
    row: Option<(String, i64, i64, Option<i64>)>,
    renew: Option<i64>,
    floor: i64,
    may_take: bool,
    may_insert: bool,
    continues: Option<i64>,
}

fn tables() -> (Statements, Statements) {
    (
        Statements::new(&Table::new("single_flags").unwrap()),
        Statements::new(&Table::new("batch_flags").unwrap()),
    )
}

fn client(pg: &PgServer) -> Client {
    let mut c = Client::connect(&pg.conn_string(), NoTls).expect("connect");
    let (single, batch) = tables();
    c.batch_execute(&format!("{}; {}", single.create_table, batch.create_table))
        .expect("create the tables");
    c
}

fn put(tx: &mut Transaction<'_>, table: &str, flags: &[Flag]) {
    for f in flags {
        if let Some((holder, version, ts, term)) = &f.row {
            tx.execute(
                &format!(
                    "insert into {table} values ($1, $2, $3, now() + $4 * interval '1 microsecond', $5)"
                ),
                &[&f.name, holder, version, &(*ts as f64), term],
            )
            .expect("insert a starting row");
        }
    }
}

fn single(
    tx: &mut Transaction<'_>,
    st: &postgres::Statement,
    f: &Flag,
    expect: Option<&str>,
) -> Row {
    let params: [(&(dyn ToSql + Sync), Type); 11] = [
        (&f.name, Type::TEXT),
        (&ME, Type::TEXT),
        (&f.renew, Type::INT8),
        (&LEASE, Type::INT8),
        (&f.floor, Type::INT8),
        (&f.may_take, Type::BOOL),
        (&f.may_insert, Type::BOOL),
        (&f.continues, Type::INT8),
        (&expect, Type::TEXT),
        (&None::<i32>, Type::INT4),
        (&None::<std::time::SystemTime>, Type::TIMESTAMPTZ),
    ];
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
    tx.query(st, &values)
        .expect("the single check")
        .pop()
        .expect("one row")
}

/// The batch as `process` with `lease` µs.
fn try_batch(
    tx: &mut Transaction<'_>,
    st: &Statements,
    flags: &[Flag],
    process: &str,
    lease: i64,
    expect: Option<&str>,
) -> Result<Vec<Row>, postgres::Error> {
    let names: Vec<&str> = flags.iter().map(|f| f.name.as_str()).collect();
    let renew: Vec<Option<i64>> = flags.iter().map(|f| f.renew).collect();
    let floor: Vec<i64> = flags.iter().map(|f| f.floor).collect();
    let may_take: Vec<bool> = flags.iter().map(|f| f.may_take).collect();
    let may_insert: Vec<bool> = flags.iter().map(|f| f.may_insert).collect();
    let continues: Vec<Option<i64>> = flags.iter().map(|f| f.continues).collect();
    let params: [(&(dyn ToSql + Sync), Type); 11] = [
        (&names, Type::TEXT_ARRAY),
        (&process, Type::TEXT),
        (&renew, Type::INT8_ARRAY),
        (&lease, Type::INT8),
        (&floor, Type::INT8_ARRAY),
        (&may_take, Type::BOOL_ARRAY),
        (&may_insert, Type::BOOL_ARRAY),
        (&continues, Type::INT8_ARRAY),
        (&expect, Type::TEXT),
        (&None::<i32>, Type::INT4),
        (&None::<std::time::SystemTime>, Type::TIMESTAMPTZ),
    ];
    tx.query_typed(&st.check_batch, &params)
}

/// The batch as this process, with the tests' lease.
fn batch(
    tx: &mut Transaction<'_>,
    st: &Statements,
    flags: &[Flag],
    expect: Option<&str>,
) -> Vec<Row> {
    try_batch(tx, st, flags, ME, LEASE, expect).expect("the batch")
}

/// A reply's columns, as text, in the single check's order.
fn reply(row: &Row, from: usize) -> Vec<Option<String>> {
    (from..from + 11)
        .map(|i| {
            let v: Option<String> = match *row.columns()[i].type_() {
                Type::BOOL => row.get::<_, Option<bool>>(i).map(|b| b.to_string()),
                Type::INT8 => row.get::<_, Option<i64>>(i).map(|b| b.to_string()),
                Type::INT4 => row.get::<_, Option<i32>>(i).map(|b| b.to_string()),
                Type::TIMESTAMPTZ => row
                    .get::<_, Option<std::time::SystemTime>>(i)
                    .map(|t| format!("{t:?}")),
                _ => row.get::<_, Option<String>>(i),
            };
            v
        })
        .collect()
}

fn rows(tx: &mut Transaction<'_>, table: &str) -> Vec<Vec<Option<String>>> {
    tx.query(
        &format!("select name, holder, version::text, \"timestamp\"::text, term::text from {table} order by name"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (0..5).map(|i| r.get(i)).collect())
    .collect()
}

/// Runs one case: the batch gives every flag the single check's reply and row.
fn same(c: &mut Client, flags: &[Flag], expect: Option<&str>) -> Result<(), String> {
    let (single_st, batch_st) = tables();
    let mut tx = c.transaction().unwrap();
    put(&mut tx, "single_flags", flags);
    put(&mut tx, "batch_flags", flags);
    // Prepared once: planning the check each time would cost most of the test's time.
    let prepared = tx.prepare_typed(&single_st.check, &CHECK_TYPES).unwrap();
    let singles: Vec<Row> = flags
        .iter()
        .map(|f| single(&mut tx, &prepared, f, expect))
        .collect();
    let batched = batch(&mut tx, &batch_st, flags, expect);
    let result = (|| {
        if batched.len() != flags.len() {
            return Err(format!("{} rows for {} flags", batched.len(), flags.len()));
        }
        for ((f, s), b) in flags.iter().zip(&singles).zip(&batched) {
            let name: String = b.get("name");
            if name != f.name {
                return Err(format!("row for {name:?} where {:?} was expected", f.name));
            }
            if !b.get::<_, bool>("attempted") {
                return Err(format!("{:?} not attempted, with no lock held", f.name));
            }
            let (want, got) = (reply(s, 0), reply(b, 1));
            if want != got {
                return Err(format!("{f:?}:\n single {want:?}\n batch  {got:?}"));
            }
        }
        let (a, b) = (rows(&mut tx, "single_flags"), rows(&mut tx, "batch_flags"));
        if a != b {
            return Err(format!("rows left:\n single {a:?}\n batch  {b:?}"));
        }
        Ok(())
    })();
    tx.rollback().unwrap();
    result
}

/// Names as users write them, and as nobody should: quotes, backslashes, unicode, 1,000
/// characters.
fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        Just("it's".to_string()),
        Just("back\\slash".to_string()),
        Just("\"quoted\"".to_string()),
        Just("ünïcödé/🦀".to_string()),
        Just("x".repeat(1000)),
        Just("a,b{c}".to_string()),
        Just("NULL".to_string()),
    ]
}

fn flag_strategy() -> impl Strategy<Value = Flag> {
    let row = prop::option::of((
        prop_oneof![Just(ME.to_string()), Just("other".to_string())],
        prop_oneof![
            0i64..5,
            Just(i64::MAX),
            Just(i64::MAX - 1),
            Just(1_700_000_000_000_000)
        ],
        prop_oneof![
            Just(0i64),
            Just(-LEASE - SECOND),
            Just(-LEASE + SECOND),
            Just(-100 * LEASE)
        ],
        prop::option::of(0i64..5),
    ));
    (
        name_strategy(),
        row,
        prop::option::of(prop_oneof![0i64..5, Just(i64::MAX)]),
        prop_oneof![Just(0i64), 0i64..6, Just(i64::MAX)],
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0i64..5),
    )
        .prop_map(
            |(name, row, renew, floor, may_take, may_insert, continues)| Flag {
                name,
                row,
                renew,
                floor,
                may_take,
                may_insert,
                continues,
            },
        )
}

/// Unique names within a batch (the driver's promise).
fn unique(mut flags: Vec<Flag>) -> Vec<Flag> {
    let mut seen = HashSet::new();
    flags.retain(|f| seen.insert(f.name.clone()));
    flags
}

#[test]
fn every_flag_of_a_batch_gets_the_single_checks_reply_and_row() {
    let pg = server();
    let c = std::cell::RefCell::new(client(&pg));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(prop::collection::vec(flag_strategy(), 1..12), any::<bool>()),
            |(flags, wrong_server)| {
                let flags = unique(flags);
                // A server other than the one expected: nothing is written, for any flag.
                let expect = wrong_server.then_some("0");
                same(&mut c.borrow_mut(), &flags, expect).map_err(TestCaseError::fail)
            },
        )
        .unwrap();
}

#[test]
fn a_batch_of_ten_thousand_flags_matches_ten_thousand_single_checks() {
    let pg = server();
    let mut c = client(&pg);
    let mut runner = TestRunner::deterministic();
    let flags: Vec<Flag> = (0..10_000)
        .map(|i| {
            let mut f = flag_strategy().new_tree(&mut runner).unwrap().current();
            f.name = format!("{i}/{}", f.name.chars().take(20).collect::<String>());
            f
        })
        .collect();
    let started = Instant::now();
    same(&mut c, &flags, None).unwrap();
    eprintln!(
        "10,000 flags, single and batched, compared in {:?}",
        started.elapsed()
    );
}

/// A row locked by another transaction: the batch skips it at once (not attempted, not won,
/// the row as the snapshot saw it) and renews the others; the connection stays usable.
#[test]
fn a_locked_row_is_skipped_and_the_others_renew() {
    let pg = server();
    let mut c = client(&pg);
    // Waiting for the lock would fail the test here rather than hang it.
    c.batch_execute("set lock_timeout = '5s'").unwrap();
    let mut locker = client(&pg);
    let flags: Vec<Flag> = (0..5)
        .map(|i| Flag {
            name: format!("f{i}"),
            row: None,
            renew: Some(1),
            floor: 0,
            may_take: false,
            may_insert: false,
            continues: Some(1),
        })
        .collect();
    c.batch_execute(
        "insert into batch_flags select 'f' || i, 'me', 1, now(), 1 from generate_series(0, 4) i",
    )
    .unwrap();
    let mut held = locker.transaction().unwrap();
    held.execute(
        "select 1 from batch_flags where name = 'f2' for update",
        &[],
    )
    .unwrap();
    let (_, st) = tables();
    let mut tx = c.transaction().unwrap();
    let started = Instant::now();
    let replies = batch(&mut tx, &st, &flags, None);
    let took = started.elapsed();
    tx.commit().unwrap();
    held.rollback().unwrap();
    for r in &replies {
        let name: String = r.get("name");
        let (won, attempted): (bool, bool) = (r.get("won"), r.get("attempted"));
        let version: i64 = r.get("version");
        if name == "f2" {
            assert!(
                !won && !attempted,
                "{name}: won {won}, attempted {attempted}"
            );
            assert_eq!(version, 1, "the row as the snapshot saw it");
        } else {
            assert!(won && attempted, "{name}");
            assert_eq!(version, 2);
        }
    }
    assert!(
        took < Duration::from_secs(5),
        "waited for the lock: {took:?}"
    );
    let after: String = c
        .query_one(
            "select string_agg(version::text, ',' order by name) from batch_flags",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(after, "2,2,1,2,2");
}

/// Batches over the same rows in opposite orders, from four connections at once, inserting,
/// renewing and taking over: never a deadlock (40P01), never an error.
#[test]
fn batches_over_the_same_rows_in_any_order_never_deadlock() {
    let pg = server();
    drop(client(&pg));
    let until = Instant::now() + Duration::from_secs(3);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let conn = pg.conn_string();
            std::thread::spawn(move || {
                let mut c = Client::connect(&conn, NoTls).unwrap();
                let (_, st) = tables();
                let mut names: Vec<String> = (0..200).map(|i| format!("n{i:03}")).collect();
                if t % 2 == 1 {
                    names.reverse();
                }
                let flags: Vec<Flag> = names
                    .iter()
                    .map(|n| Flag {
                        name: n.clone(),
                        row: None,
                        renew: None,
                        floor: 0,
                        may_take: true,
                        may_insert: true,
                        continues: None,
                    })
                    .collect();
                let mut batches = 0;
                while Instant::now() < until {
                    // A zero lease: every row is expired, so every batch tries to take all.
                    let mut tx = c.transaction().unwrap();
                    try_batch(&mut tx, &st, &flags, &format!("p{t}"), 0, None)
                        .unwrap_or_else(|e| panic!("batch {batches} of {t}: {e:?}"));
                    tx.commit().unwrap();
                    batches += 1;
                }
                batches
            })
        })
        .collect();
    let batches: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    eprintln!("batches per connection in 3 s, no deadlock: {batches:?}");
    assert!(batches.iter().all(|&b| b > 0));
}
