//! `bench cost`: what a check costs the server, with `fsync = on` and `synchronous_commit = on`
//! (a [durable](leadership_pgkit::pg::ServerOptions::durable) server on disk), for our check,
//! the candidate not chosen, our check as it was before, and the Go flag's statements.
//!
//! 1. Per check: one client, one row, `--checks N` checks of each statement and role through
//!    `pgbench -c 1 -t N` (ours prepared, as both drivers do; the Go flag's over the extended
//!    protocol with unnamed statements, as lib/pq sends them). Around each run: transaction IDs
//!    (`pg_snapshot_xmax(pg_current_snapshot())`), WAL bytes (`pg_current_wal_insert_lsn()`),
//!    WAL records by type (`pg_walinspect`), `fdatasync` calls (`pg_stat_wal.wal_sync`), the
//!    server's CPU (`/proc` ticks of the postmaster and its children), pgbench's mean latency.
//!    A leader renews the version it holds (`\gset` carries the returned version over); the
//!    Go flag's leader runs `select now()`, the `select` of the row and its `UPDATE` with the
//!    values read, a follower the first two. Then whether a follower's check waits behind a
//!    row lock another transaction holds (`lock_timeout`).
//! 2. The ceiling: `pgbench -j 2` for `--secs` per run, on 1,000 and 10,000 flags, 16 and 64
//!    clients, a random flag per check: followers, leaders (ours take the row over with lease
//!    0: the same write as a renew; the Go flag's leader does its read and compare-and-set
//!    `UPDATE`), and the mix of a fleet of 10 processes per flag at the default interval.
//!    Besides checks/s: CPU, transaction IDs, WAL and fsyncs per check, and how many backends
//!    were waiting for a lock (`pg_stat_activity`, sampled every 200 ms).
//! 3. The fleet: the per-check figures times the schedule the core follows (the simulator,
//!    fault-free, a simulated day per fleet), beside the Go flag's; and what the server
//!    sustains at the default interval from the mix's ceiling.
//!
//! ```sh
//! cargo run --release -p leadership-bench --bin bench -- cost [--checks 5000] [--secs 10] \
//!     [--rounds 3] [--sizes 1000,10000] [--clients 16,64] [--who ours,a,before,go]
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use ceiling::ceiling;
use fleet::fleet;
use leadership_pgkit::pg::{PgServer, ServerOptions};
use per_check::per_check;
use script::Who;

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
/// A follower's lease: an hour, so the rows (written at most minutes ago) stay live.
const LONG_LEASE: &str = "3600000000";
/// `autovacuum_freeze_max_age`'s default: transaction IDs between anti-wraparound vacuums.
const FREEZE_MAX_AGE: f64 = 200e6;

mod ceiling;
pub(crate) mod counters;
pub(crate) mod fleet;
mod per_check;
mod script;

/// `bench cost`'s options.
#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Checks per statement shape in part 1 (per-check costs).
    #[arg(long, default_value_t = 5000)]
    checks: u64,
    /// Seconds per pgbench run in part 2 (the ceiling).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// pgbench runs per point (the best is kept).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Numbers of flags in the table.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<usize>,
    /// pgbench clients.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    clients: Vec<usize>,
    /// Which checks to compare (ours, go, before, ...; default: all).
    #[arg(long, value_delimiter = ',')]
    who: Vec<String>,
}

/// `bench cost`: parts 1 to 3 on one durable server; prints markdown.
pub fn run(options: &Options) {
    let Options {
        checks,
        secs,
        rounds,
        sizes,
        clients,
        who,
    } = options.clone();
    let who_list: Vec<Who> = if who.is_empty() {
        Who::ALL.to_vec()
    } else {
        who.iter()
            .filter_map(|w| {
                Who::ALL
                    .into_iter()
                    .find(|x| x.short().eq_ignore_ascii_case(w))
            })
            .collect()
    };
    let started = Instant::now();
    let pg = PgServer::start_with(&ServerOptions::new().durable(true)).expect("start PostgreSQL");
    pg.psql(&super::table()).expect("create the table");
    pg.psql("create extension if not exists pg_walinspect")
        .expect("pg_walinspect");
    let settings = pg
        .psql("select string_agg(name || '=' || setting, ', ' order by name) from pg_settings where name in ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'autovacuum', 'wal_level', 'checkpoint_timeout')")
        .unwrap_or_default();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("leadership-bench-cost-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut out = format!(
        "## cost\n\nServer: {} (data dir {}), {}\n\n",
        pg.psql("select version()").unwrap_or_default().trim(),
        pg.data_dir().display(),
        settings.trim()
    );
    let costs = per_check(&pg, &dir, checks, &mut out);
    print!("{out}");
    let _ = std::io::stdout().flush();
    let mut more = String::new();
    // The mix of a fleet of 10 processes per flag at 30 s: per lease, ours one leader renews
    // twice and nine followers check once (2:9); the Go flag's ten each check twice (2:18).
    let ceilings = ceiling(
        &pg,
        &dir,
        &sizes,
        &clients,
        secs,
        rounds,
        &who_list,
        (2, 9, 1, 9),
        &mut more,
    );
    fleet(&costs, &ceilings, &mut more);
    print!("{more}");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}
