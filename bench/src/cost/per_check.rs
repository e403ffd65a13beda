//! Part 1: what one check costs, one client on one row.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use super::counters::{counters, records_text, spent, Spent};
use super::script::{pgbench, script, Role, Who};
use leadership_pgkit::pg::PgServer;

/// The single row of the per-check runs: `x`, held by `p1` at version 5, renewed now.
pub(super) fn one_row(pg: &PgServer) -> i64 {
    pg.psql(
        "delete from leadership_flags; \
         insert into leadership_flags values ('x', 'p1', 5, now())",
    )
    .expect("reset the row");
    // Outside a transaction block, so in a psql call of its own.
    pg.psql("vacuum analyze leadership_flags").expect("vacuum");
    5
}

/// Whether a follower's check waits while another transaction holds the row (`FOR UPDATE`).
pub(super) fn waits_behind_a_row_lock(pg: &PgServer, dir: &Path, who: Who) -> bool {
    one_row(pg);
    let mut holder = pg
        .psql_command()
        .arg("-c")
        .arg(
            "begin; select 1 from leadership_flags where name = 'x' for update; \
             select pg_sleep(1.5); commit;",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    thread::sleep(Duration::from_millis(300));
    let b = pgbench(
        pg,
        dir,
        &[(script(who, Role::Follower, false), 1)],
        1,
        who.mode(),
        &["-t", "1"],
        &["n=x".into()],
        &[("PGOPTIONS", "-c lock_timeout=500")],
    );
    let _ = holder.wait();
    !b.ok || b.latency_ms > 400.0
}

/// Part 1: one client, one row.
pub(super) fn per_check(
    pg: &PgServer,
    dir: &Path,
    checks: u64,
    out: &mut String,
) -> BTreeMap<(Who, &'static str), Spent> {
    let mut table = BTreeMap::new();
    let _ = writeln!(
        out,
        "### Per check: 1 client, one row, {} checks of each follower and {checks} of each leader, fsync and synchronous_commit on\n\n\
         | role | statements | transaction IDs | WAL bytes | WAL records | fdatasync | waits behind a row lock | server CPU µs | latency µs (1 client) |\n\
         |---|---|---|---|---|---|---|---|---|",
        checks * 4
    );
    for (role, name) in [
        (Role::Follower, "follower"),
        (Role::Leader, "leader (renew)"),
    ] {
        // Followers are cheap: more of them, for CPU ticks of 10 ms to count.
        let checks = if role == Role::Follower {
            checks * 4
        } else {
            checks
        };
        for who in Who::ALL {
            let version = one_row(pg);
            let defines = vec![
                "n=x".to_string(),
                "me=p1".into(),
                format!("version={version}"),
            ];
            let s = script(who, role, false);
            // Warm up: plans cached, hint bits set, the row's page pruned.
            pgbench(
                pg,
                dir,
                &[(s.clone(), 1)],
                1,
                who.mode(),
                &["-t", "200"],
                &defines,
                &[],
            );
            let version: i64 = pg
                .psql("select version from leadership_flags where name = 'x'")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let defines = vec![
                "n=x".to_string(),
                "me=p1".into(),
                format!("version={version}"),
            ];
            let a = counters(pg);
            let b = pgbench(
                pg,
                dir,
                &[(s, 1)],
                1,
                who.mode(),
                &["-t", &checks.to_string()],
                &defines,
                &[],
            );
            let sp = spent(pg, &a, b.transactions, true);
            if !b.ok || b.transactions != checks {
                eprintln!("pgbench {who:?} {role:?}: {}", b.output);
            }
            let after: i64 = pg
                .psql("select version from leadership_flags where name = 'x'")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let won = after - version;
            let expected = if role == Role::Leader {
                b.transactions as i64
            } else {
                0
            };
            assert_eq!(
                won, expected,
                "{who:?} {role:?}: {won} wins of {} checks",
                b.transactions
            );
            let waits = if role == Role::Follower {
                if waits_behind_a_row_lock(pg, dir, who) {
                    "yes"
                } else {
                    "no"
                }
            } else {
                "yes (it writes)"
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {:.3} | {:.1} | {} | {:.3} | {waits} | {:.0} | {:.0} |",
                who.label(),
                sp.xids,
                sp.wal,
                records_text(&sp),
                sp.syncs,
                sp.cpu_us,
                b.latency_ms * 1000.0
            );
            table.insert(
                (
                    who,
                    if role == Role::Leader {
                        "leader"
                    } else {
                        "follower"
                    },
                ),
                sp,
            );
        }
    }
    table
}
