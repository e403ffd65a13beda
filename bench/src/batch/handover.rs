//! `bench batch-handover`: handover (SIGTERM: the peer closes its flags, the first one first)
//! and failover (kill -9) of one flag of a set, batched and not, beside one flag per process,
//! in one run: `bench handover` and `bench failover`'s harness over `tokio_peer` processes,
//! each holding `--flags` flags in one `FlagSet` (`--set`, `--no-batch`); the harness follows
//! the first flag.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::durable_server;
use crate::failover::failover_with;
use crate::handover::handover_with;
use crate::peers::build_impl;
use crate::report::{Csv, HEAD};

/// `bench batch-handover`'s options.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Options {
    /// Trials of each figure.
    #[arg(long, default_value_t = 30)]
    trials: usize,
    /// Flags per process in the sets.
    #[arg(long, default_value_t = 100)]
    flags: usize,
    /// Processes holding the sets.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Which: single (one flag per process, 3 processes, as `bench handover`), single2 (one
    /// flag per process, as many processes as the sets), batched, unbatched.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "single,single2,batched,unbatched"
    )]
    runs: Vec<String>,
    /// Append each sample to this CSV file (for `bench plot`).
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// `bench batch-handover`: prints markdown.
pub(crate) fn run(options: &Options) {
    let started = Instant::now();
    let imp = Arc::new(build_impl("tokio"));
    let mut csv = Csv(options.csv.as_ref().map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("open csv")
    }));
    let set = |batch: bool| {
        let mut a = vec![
            "--set".to_string(),
            "--flags".into(),
            options.flags.to_string(),
        ];
        if !batch {
            a.push("--no-batch".into());
        }
        a
    };
    let mut out = format!(
        "## batch-handover\n\nDurable server (fsync and synchronous_commit on, data on disk), a \
         fresh one per figure and run; tokio_peer, interval 2 s, timeout 1 s, poll 10 ms.\n\n{HEAD}\n"
    );
    print!("{out}");
    let _ = std::io::stdout().flush();
    for run in &options.runs {
        let (processes, extra, what) = match run.as_str() {
            "single" => (
                3,
                Vec::new(),
                "one flag per process, 3 processes".to_string(),
            ),
            "single2" => (
                options.processes,
                Vec::new(),
                format!("one flag per process, {} processes", options.processes),
            ),
            "batched" => (
                options.processes,
                set(true),
                format!(
                    "a set of {} per process, batch on, {} processes",
                    options.flags, options.processes
                ),
            ),
            "unbatched" => (
                options.processes,
                set(false),
                format!(
                    "a set of {} per process, batch off, {} processes",
                    options.flags, options.processes
                ),
            ),
            other => panic!("unknown run {other:?} (single, single2, batched, unbatched)"),
        };
        for figure in ["handover", "failover"] {
            let pg = durable_server(&[]);
            let w = Instant::now();
            let line = match figure {
                "handover" => handover_with(
                    &imp,
                    &pg,
                    options.trials,
                    &mut csv,
                    processes,
                    &extra,
                    &format!("SIGTERM → another raised ({what})"),
                ),
                _ => failover_with(
                    &imp,
                    &pg,
                    options.trials,
                    &mut csv,
                    processes,
                    &extra,
                    &format!("kill -9 → another raised ({what})"),
                ),
            };
            let mut text = String::new();
            let _ = writeln!(text, "{line}");
            print!("{text}");
            let _ = std::io::stdout().flush();
            eprintln!("{figure}, {what}: {:.0} s", w.elapsed().as_secs_f64());
            out.push_str(&text);
        }
    }
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}
