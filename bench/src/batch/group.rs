//! `bench batch-group`: a balanced group of 256 shards over 8 processes, batched and not:
//! what the whole group costs the server per second.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use super::process::{SetProcess, SetSettings};
use super::{conn_string, durable_server, parse_duration, rates, settings, settle_and_read, Rates};
use leadership_tokio::Balanced;

/// `bench batch-group`'s options.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Options {
    /// Lease intervals (`2s`, `30s`, …; seconds without a unit).
    #[arg(long, value_delimiter = ',', default_value = "2s,30s", value_parser = parse_duration)]
    intervals: Vec<Duration>,
    /// The window of each run, in leases, one per interval (the last repeats).
    #[arg(long, value_delimiter = ',', default_value = "8,2")]
    leases: Vec<u32>,
    /// Runs of each (batch on, batch off) pair, one per interval (the last repeats).
    #[arg(long, value_delimiter = ',', default_value = "3,1")]
    rounds: Vec<u32>,
    /// Shards of the group.
    #[arg(long, default_value_t = 256)]
    shards: usize,
    /// Processes (`FlagSet`s in this process, each with its runtime and connection).
    #[arg(long, default_value_t = 8)]
    processes: usize,
}

struct Member {
    process: SetProcess,
    group: Balanced,
}

/// Whether every shard has exactly one leader and each process leads between floor and ceil,
/// by each process's own `is_raised`.
fn balanced(fleet: &[Member], shards: usize) -> bool {
    let (floor, ceil) = (shards / fleet.len(), shards.div_ceil(fleet.len()));
    let mut counts = vec![0; fleet.len()];
    for s in 0..shards {
        let leaders: Vec<usize> = (0..fleet.len())
            .filter(|&p| fleet[p].group.shard(s).is_raised())
            .collect();
        if leaders.len() != 1 {
            return false;
        }
        counts[leaders[0]] += 1;
    }
    counts.iter().all(|c| (floor..=ceil).contains(c))
}

/// `bench batch-group`: prints markdown.
pub(crate) fn run(options: &Options) {
    let started = Instant::now();
    let pg = durable_server(&[]);
    let mut out = format!(
        "## batch-group\n\nServer: {}\n\n{} shards over {} processes (`FlagSet::balanced`; each a \
         `FlagSet` with its own runtime and connection, all in the bench process), timeout \
         interval/4 (as `driver-tokio/tests/balanced.rs`), started together; the window opens \
         once the group is balanced and one more interval has passed.\n\n\
         | interval | batch | window | statements/s | of them batches/s | checks/s | scans/s | \
         rows/s (all statements) | rows per batch | server CPU % of one core | fdatasync/s | transaction IDs/s | WAL bytes/s | \
         plan ms/statement | balanced after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        settings(&pg),
        options.shards,
        options.processes
    );
    print!("{out}");
    let _ = std::io::stdout().flush();
    for (i, &interval) in options.intervals.iter().enumerate() {
        let leases = options
            .leases
            .get(i)
            .or(options.leases.last())
            .copied()
            .unwrap_or(4);
        let rounds = options
            .rounds
            .get(i)
            .or(options.rounds.last())
            .copied()
            .unwrap_or(1);
        for _ in 0..rounds {
            for batch in [true, false] {
                let (row, r) = one_run(&pg, options, interval, leases, batch);
                print!("{row}");
                let _ = std::io::stdout().flush();
                out.push_str(&row);
                eprintln!(
                    "interval {interval:?}, batch {batch}: {:.1} statements/s",
                    r.statements
                );
            }
        }
    }
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}

fn one_run(
    pg: &leadership_pgkit::pg::PgServer,
    options: &Options,
    interval: Duration,
    leases: u32,
    batch: bool,
) -> (String, Rates) {
    let _ = pg.psql("delete from leadership_flags");
    let settings = SetSettings {
        conn: conn_string(pg),
        interval,
        timeout: Some(interval / 4),
        batch,
    };
    let t0 = Instant::now();
    let fleet: Vec<Member> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..options.processes)
            .map(|p| {
                let settings = &settings;
                s.spawn(move || {
                    let process = SetProcess::start(settings, &format!("p{p}"));
                    let group = process
                        .runtime
                        .block_on(async { process.set.balanced("orders", options.shards) })
                        .expect("join the group");
                    Member { process, group }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let until = t0 + interval * 30;
    while !balanced(&fleet, options.shards) {
        assert!(Instant::now() < until, "not balanced within 30 leases");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    std::thread::sleep(interval);
    let a = settle_and_read(pg);
    let b0 = Instant::now();
    let classes = |pg: &leadership_pgkit::pg::PgServer| -> (f64, f64, f64, f64) {
        let s = pg
            .psql(&format!(
                "select coalesce(sum(calls) filter (where query like '%unnest(%'), 0) || '|' || \
                 coalesce(sum(calls) filter (where query like 'WITH server AS%' and query not like '%unnest(%'), 0) || '|' || \
                 coalesce(sum(calls) filter (where query like '%left(name%'), 0) || '|' || \
                 coalesce(sum(rows) filter (where query like '%unnest(%'), 0) \
                 from pg_stat_statements s join pg_roles r on r.oid = s.userid where r.rolname = '{}'",
                super::ROLE
            ))
            .unwrap_or_default();
        let f: Vec<f64> = s
            .trim()
            .split('|')
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        (f[0], f[1], f[2], f[3])
    };
    let c0 = classes(pg);
    std::thread::sleep((interval * leases).saturating_sub(b0.elapsed()));
    let b = settle_and_read(pg);
    let c1 = classes(pg);
    let still = balanced(&fleet, options.shards);
    let r = rates(&a, &b);
    let per = |x: f64, y: f64| (y - x) / r.secs;
    let checks_per_s = per(c0.1, c1.1);
    let batches_per_s = per(c0.0, c1.0);
    let scans_per_s = per(c0.2, c1.2);
    let rows_per_batch = (c1.3 - c0.3) / (c1.0 - c0.0).max(1.0);
    for m in fleet {
        let _ = m.process.runtime.block_on(m.group.close());
    }
    let mut row = String::new();
    let _ = writeln!(
        row,
        "| {interval:?} | {} | {:.0} s ({leases} leases) | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.1} s{} |",
        if batch { "on" } else { "off" },
        r.secs,
        r.statements,
        batches_per_s,
        checks_per_s,
        scans_per_s,
        r.rows,
        rows_per_batch,
        r.cpu * 100.0,
        r.syncs,
        r.xids,
        r.wal,
        r.plan_ms,
        took.as_secs_f64(),
        if still { "" } else { " (unbalanced at the end)" }
    );
    (row, r)
}
