//! Benchmarks against real PostgreSQL, side by side with the Go flag (`seedpeer`, built from
//! `../shared/peers/go-seed`): every scenario runs the same harness over one implementation's
//! peer processes, which all print `seedpeer`'s JSON lines.
//!
//! ```sh
//! cargo run --release -p leadership-bench --bin bench -- <scenario> [--impl go,tokio,blocking,cli] \
//!     [--trials N] [--csv FILE]
//! cargo run --release -p leadership-bench --bin bench -- plot --csv FILE --svg OUT.svg
//! cargo run --release -p leadership-bench --bin bench -- <scenario> --help   # its options
//! ```
//!
//! Scenarios: `statements` (per check, pg_stat_statements with one role per peer, and client
//! socket writes with strace), `failover` (kill -9 the leader), `handover` (SIGTERM the leader),
//! `pause` (SIGSTOP the leader 5 s), `hung` (SIGSTOP the leader's backends 10 s), `coldstart`
//! (8 peers at once on an empty database), `memory` (RSS with 1 and 100 flags), `fleet`
//! (server statements/s and CPU for N flags), `ceiling` (pgbench, checks/s), `cost` (what a check
//! costs the server with fsync on: transaction IDs, WAL, fsyncs, CPU, lock waits, the ceiling,
//! the fleet per day; `cost/`), `batch-group`, `batch-load`, `batch-handover` (batched checks,
//! issue 28; `batch/`), `all` (the first six).
//!
//! Each run starts its own throwaway PostgreSQL (`leadership_pgkit::pg`). The Rust peers are
//! the `tokio_peer` and `blocking_peer` examples of the two drivers, built here with cargo;
//! `cli` is `leadership watch`, which prints the same lines.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::peers::{build_impl, table, Impl};
use crate::report::{Csv, HEAD};
use ceiling::ceiling;
use coldstart::coldstart;
use failover::failover;
use fleet::fleet;
use handover::handover;
use leadership_pgkit::pg::PgServer;
use memory::memory;
use pause::pause;
use plot::plot;
use statements::statements;

mod batch;
mod ceiling;
mod coldstart;
mod cost;
mod failover;
mod fleet;
mod handover;
mod memory;
mod pause;
mod peers;
mod plot;
mod report;
mod statements;

/// The implementations a scenario runs, and where its samples go.
#[derive(clap::Args, Clone, Debug)]
struct Peers {
    /// The implementations to run side by side: go (the reference flag, `seedpeer`), tokio,
    /// blocking, cli (`leadership watch`).
    #[arg(long = "impl", value_delimiter = ',', default_value = "go,tokio")]
    impls: Vec<String>,
    /// Append each sample to this CSV file (for `bench plot`).
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Benchmarks against real PostgreSQL, side by side with the Go flag.
#[derive(clap::Parser, Debug)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Subcommand, Debug)]
enum Scenario {
    /// Statements and round trips per check (pg_stat_statements, one role per peer; socket
    /// writes with strace).
    Statements(Peers),
    /// Crash failover: kill -9 the leader, time until another leads.
    Failover {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 30)]
        trials: usize,
    },
    /// Graceful handover: SIGTERM the leader, time until another leads.
    Handover {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 30)]
        trials: usize,
    },
    /// SIGSTOP the leader for 5 s: how long two believe they lead.
    Pause {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 9)]
        trials: usize,
    },
    /// SIGSTOP the leader's backends for 10 s (a hung database).
    Hung {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 9)]
        trials: usize,
    },
    /// 8 peers at once on an empty database: failed starts.
    Coldstart {
        #[command(flatten)]
        peers: Peers,
        /// Trials.
        #[arg(long, default_value_t = 30)]
        trials: usize,
    },
    /// Resident memory with 1 and 100 flags.
    Memory(Peers),
    /// Server statements/s and CPU for N flags.
    Fleet {
        #[command(flatten)]
        peers: Peers,
        /// Numbers of flags.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        sizes: Vec<usize>,
        /// The Rust peers hold their flags in one `FlagSet`.
        #[arg(long)]
        set: bool,
    },
    /// The server's ceiling in checks/s (pgbench; no peers).
    Ceiling {
        /// Numbers of flags in the table.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        sizes: Vec<usize>,
        /// Seconds per pgbench run.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// What a check costs the server with fsync on: transaction IDs, WAL, fsyncs, CPU, lock
    /// waits, the ceiling, the fleet per day (`cost/`).
    Cost(cost::Options),
    /// Batched checks: a balanced group of 256 shards over 8 processes, batch on and off, at
    /// 2 s and 30 s: statements/s, server CPU, fdatasync/s, transaction IDs/s, WAL bytes/s
    /// (`batch/group.rs`).
    BatchGroup(batch::group::Options),
    /// Batched checks: the flags one server sustains at the default interval with 10
    /// processes per flag (a load generator, cost per row, a cross-check with real sets;
    /// `batch/load.rs`).
    BatchLoad(batch::load::Options),
    /// Batched checks: handover (SIGTERM) and failover (kill -9) of one flag of a set of 100
    /// per process, batch on and off, beside one flag per process (`batch/handover.rs`).
    BatchHandover(batch::handover::Options),
    /// One process of `batch-load`'s cross-check (run by it).
    #[command(hide = true)]
    BatchSetChild(batch::sets::ChildOptions),
    /// The first six scenarios.
    All {
        #[command(flatten)]
        peers: Peers,
        /// Trials of each (default: each scenario's own).
        #[arg(long)]
        trials: Option<usize>,
    },
    /// Draws the samples of a CSV file as an SVG.
    Plot {
        /// The samples.
        #[arg(long)]
        csv: PathBuf,
        /// The picture to write.
        #[arg(long)]
        svg: PathBuf,
        /// Only these labels, separated by `;`.
        #[arg(long, value_delimiter = ';')]
        only: Vec<String>,
    },
}

fn main() {
    use clap::Parser as _;
    let scenario = Cli::parse().scenario;
    let (peers, list, trials): (Peers, Vec<&str>, Option<usize>) = match &scenario {
        Scenario::Plot { csv, svg, only } => return plot(csv, svg, only),
        // pgbench only, no peers to build.
        Scenario::Cost(options) => return cost::run(options),
        Scenario::BatchGroup(options) => return batch::group::run(options),
        Scenario::BatchLoad(options) => return batch::load::run(options),
        Scenario::BatchHandover(options) => return batch::handover::run(options),
        Scenario::BatchSetChild(options) => return batch::sets::child(options),
        Scenario::Statements(p) => (p.clone(), vec!["statements"], None),
        Scenario::Failover { peers, trials } => (peers.clone(), vec!["failover"], Some(*trials)),
        Scenario::Handover { peers, trials } => (peers.clone(), vec!["handover"], Some(*trials)),
        Scenario::Pause { peers, trials } => (peers.clone(), vec!["pause"], Some(*trials)),
        Scenario::Hung { peers, trials } => (peers.clone(), vec!["hung"], Some(*trials)),
        Scenario::Coldstart { peers, trials } => (peers.clone(), vec!["coldstart"], Some(*trials)),
        Scenario::Memory(p) => (p.clone(), vec!["memory"], None),
        Scenario::Fleet { peers, .. } => (peers.clone(), vec!["fleet"], None),
        // The ceiling runs pgbench, no peers: once, with the first implementation's name.
        Scenario::Ceiling { .. } => (
            Peers {
                impls: vec!["go".into()],
                csv: None,
            },
            vec!["ceiling"],
            None,
        ),
        Scenario::All { peers, trials } => (
            peers.clone(),
            vec![
                "statements",
                "failover",
                "handover",
                "pause",
                "hung",
                "coldstart",
            ],
            *trials,
        ),
    };
    let impls: Vec<Arc<Impl>> = peers
        .impls
        .iter()
        .map(|n| Arc::new(build_impl(n)))
        .collect();
    let mut csv = Csv(peers.csv.as_ref().map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("open csv")
    }));
    let started = Instant::now();
    for sc in list {
        for imp in &impls {
            // A fresh server per scenario and implementation: nothing carries over.
            let pg = PgServer::start().expect("start PostgreSQL");
            let w = Instant::now();
            let out = match (sc, &scenario) {
                ("statements", _) => statements(imp, &pg),
                ("failover", _) => format!(
                    "{HEAD}\n{}",
                    failover(imp, &pg, trials.unwrap_or(30), &mut csv)
                ),
                ("handover", _) => format!(
                    "{HEAD}\n{}",
                    handover(imp, &pg, trials.unwrap_or(30), &mut csv)
                ),
                ("pause", _) => format!(
                    "{HEAD}\n{}",
                    pause(imp, &pg, trials.unwrap_or(9), false, &mut csv)
                ),
                ("hung", _) => format!(
                    "{HEAD}\n{}",
                    pause(imp, &pg, trials.unwrap_or(9), true, &mut csv)
                ),
                ("coldstart", _) => coldstart(imp, &pg, trials.unwrap_or(30)),
                ("memory", _) => memory(imp, &pg),
                ("fleet", Scenario::Fleet { sizes, set, .. }) => {
                    fleet(imp, &pg, sizes, *set && imp.name != "go")
                }
                ("ceiling", Scenario::Ceiling { sizes, secs }) => {
                    let _ = pg.psql(&table());
                    ceiling(&pg, sizes, *secs)
                }
                _ => unreachable!(),
            };
            println!(
                "## {sc} — {} ({:.0} s)\n{out}\n",
                imp.name,
                w.elapsed().as_secs_f64()
            );
            let _ = std::io::stdout().flush();
        }
    }
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}
