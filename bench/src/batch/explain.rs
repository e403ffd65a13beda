//! `bench batch-load`'s part on one statement: where the server's time goes in a batch, by
//! `EXPLAIN (ANALYZE)` of the statement with a given number of renews and follower checks, on
//! a table of a given size, rolled back.

use std::fmt::Write as _;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

use super::load::{fill, flag_name, leader_of};
use super::statement::Variant;
use super::{conn_string, thousands};
use leadership_pgkit::pg::PgServer;

/// The figures read from one plan.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    planning: f64,
    execution: f64,
    jit: f64,
    /// The correlated `EXISTS` of `won_by`: its time per loop × loops.
    subplan: f64,
    /// The `seen` part: the batch's rows read from the table.
    seen: f64,
    /// Whether `seen` scanned the whole table.
    seq_scan: bool,
}

/// `actual time=a..b rows=r loops=n` in a plan line: (b, n).
fn actual(line: &str) -> Option<(f64, f64)> {
    let at = line.find("actual time=")? + "actual time=".len();
    let rest = &line[at..];
    let end: f64 = rest
        .split("..")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let loops: f64 = rest
        .split("loops=")
        .nth(1)?
        .trim_end_matches(')')
        .trim()
        .parse()
        .ok()?;
    Some((end, loops))
}

fn after(line: &str, key: &str) -> Option<f64> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()?.parse().ok()
}

fn read_plan(lines: &[String]) -> Plan {
    let mut p = Plan::default();
    let mut in_seen = false;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if let Some(v) = after(t, "Planning Time:") {
            p.planning = v;
        } else if let Some(v) = after(t, "Execution Time:") {
            p.execution = v;
        } else if t.starts_with("Timing:") {
            p.jit = after(t, "Total").unwrap_or(0.0);
        } else if t.starts_with("SubPlan") {
            if let Some((end, loops)) = lines.get(i + 1).and_then(|l| actual(l)) {
                p.subplan += end * loops;
            }
        } else if t.starts_with("CTE ") {
            in_seen = t == "CTE seen";
            if in_seen {
                p.seen = lines
                    .get(i + 1)
                    .and_then(|l| actual(l))
                    .map_or(0.0, |a| a.0);
            }
        } else if in_seen && t.contains("Seq Scan on leadership_flags") {
            p.seq_scan = true;
        }
    }
    p
}

/// Runs the explains on `sizes` rows; returns markdown.
pub(crate) fn explain(pg: &PgServer, sizes: &[usize], processes: usize) -> String {
    let compositions: [(usize, usize); 7] = [
        (1_000, 0),
        (10_000, 0),
        (0, 1_000),
        (0, 10_000),
        (0, 40_000),
        (1_000, 9_000),
        (4_000, 36_000),
    ];
    let variants = [Variant::AsIs, Variant::JitOff, Variant::Fixed];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Where a batch's time goes: `EXPLAIN (ANALYZE)` of one statement, rolled back\n\n\
         Process `p0` sends a batch of renews (of rows it holds, at the version they have) and \
         follower checks (of rows others hold, live), on a table of the given size. \"won_by\" \
         is the correlated `EXISTS` that tells a renew from a takeover, run once per won row \
         over the batch's `seen` and `req`; \"seen\" reads the batch's rows from the table \
         (\"scan\": by a scan of the whole table and a hash, rather than by the index). The \
         variants: {}.\n\n\
         | table rows | renews | follower rows | statement | planning ms | JIT ms | execution ms | of it won_by ms | of it seen ms | µs per row (planning + execution) |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        variants
            .iter()
            .map(|v| format!("{} = {}", v.short(), v.label()))
            .collect::<Vec<_>>()
            .join("; ")
    );
    for &n in sizes {
        fill(pg, n, processes);
        let mine: Vec<String> = (0..n)
            .filter(|&i| leader_of(i, processes) == 0)
            .map(flag_name)
            .collect();
        let theirs: Vec<String> = (0..n)
            .filter(|&i| leader_of(i, processes) != 0)
            .map(flag_name)
            .collect();
        for &(renews, follows) in &compositions {
            if renews > mine.len() || follows > theirs.len() {
                continue;
            }
            for &variant in &variants {
                let lines = runtime.block_on(one(pg, variant, &mine[..renews], &theirs[..follows]));
                let p = read_plan(&lines);
                let rows = (renews + follows).max(1) as f64;
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0}{} | {:.1} |",
                    thousands(n as f64),
                    thousands(renews as f64),
                    thousands(follows as f64),
                    variant.short(),
                    p.planning,
                    p.jit,
                    p.execution,
                    p.subplan,
                    p.seen,
                    if p.seq_scan { " (scan)" } else { "" },
                    (p.planning + p.execution) * 1e3 / rows
                );
                eprintln!(
                    "explain {n} rows, {renews} renews + {follows} follower rows, {}: {:.0} ms",
                    variant.short(),
                    p.planning + p.execution
                );
            }
        }
    }
    out
}

async fn one(pg: &PgServer, variant: Variant, mine: &[String], theirs: &[String]) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(&conn_string(pg), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    if !variant.session().is_empty() {
        client
            .batch_execute(variant.session())
            .await
            .expect("settings");
    }
    let names: Vec<&str> = mine.iter().chain(theirs).map(String::as_str).collect();
    let n = names.len();
    let mut renew: Vec<Option<i64>> = vec![Some(1); mine.len()];
    let mut floor: Vec<i64> = vec![2; mine.len()];
    let mut continues: Vec<Option<i64>> = vec![Some(1); mine.len()];
    renew.resize(n, None);
    floor.resize(n, 0);
    continues.resize(n, None);
    let yes = vec![true; n];
    let lease: i64 = 30_000_000;
    let none_text: Option<String> = None;
    let none_int: Option<i32> = None;
    let none_time: Option<std::time::SystemTime> = None;
    let params: [(&(dyn ToSql + Sync), Type); 11] = [
        (&names, Type::TEXT_ARRAY),
        (&"p0", Type::TEXT),
        (&renew, Type::INT8_ARRAY),
        (&lease, Type::INT8),
        (&floor, Type::INT8_ARRAY),
        (&yes, Type::BOOL_ARRAY),
        (&yes, Type::BOOL_ARRAY),
        (&continues, Type::INT8_ARRAY),
        (&none_text, Type::TEXT),
        (&none_int, Type::INT4),
        (&none_time, Type::TIMESTAMPTZ),
    ];
    client.batch_execute("BEGIN").await.expect("begin");
    let text = format!("EXPLAIN (ANALYZE, SUMMARY) {}", variant.text());
    let rows = client
        .query_typed(&text, &params)
        .await
        .expect("explain the batch");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}
