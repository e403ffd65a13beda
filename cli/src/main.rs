//! `leadership`: make any program a singleton on PostgreSQL, like `consul lock` or
//! `etcdctl elect`. See `leadership --help` and the README.

mod args;
mod child;
mod connect;
mod exit;
mod flag;
mod manual;
mod metrics;
mod output;
mod release;
mod run;
mod signals;
mod status;
mod tree;
mod watch;
mod watchdog;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The most log lines waiting for a blocked standard error before new ones are dropped. The
/// appender's default, 128,000, allocates its whole queue at start (a 4 MB array of slots, most
/// of the tool's anonymous memory); a tool that logs a few lines per failure needs far fewer.
const LOG_QUEUE: usize = 1024;

/// Logs to standard error through a thread of its own (a blocked pipe loses log lines rather
/// than stalling the renewals): warnings and errors by default (a failed check, a reconnect, a
/// lowering and why), `-v` info, `-vv` debug, `-q` errors only; `RUST_LOG` overrides. Never a
/// password: connection settings are never logged.
fn logging(cli: &args::Cli) -> tracing_appender::non_blocking::WorkerGuard {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE)
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        // Plain text, whatever another crate of the build enables: logs go to files and
        // collectors more often than to a terminal, and scripts read their `key=value` pairs.
        .with_ansi(false)
        .init();
    guard
}

fn main() {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to standard output and succeed; bad arguments are EX_USAGE.
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // Neither needs logs, a runtime or a server.
    let printed = match &cli.command {
        args::Command::Watchdog { group, cgroup } => watchdog::serve(*group, cgroup.clone()),
        args::Command::Completions { shell } => Some(manual::completions(*shell)),
        args::Command::Man(a) => Some(manual::man(a)),
        _ => None,
    };
    if let Some(result) = printed {
        match result {
            Ok(code) => std::process::exit(code),
            Err(failure) => {
                eprintln!("leadership: {failure}");
                std::process::exit(failure.code);
            }
        }
    }
    let log = logging(&cli);
    // One thread: the command is forked from it, and its parent-death signal follows it.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("leadership: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            args::Command::Run(a) => run::run(a).await,
            args::Command::Watch(a) => watch::watch(a).await,
            args::Command::Status(a) => status::status(a).await,
            args::Command::Release(a) => release::release(a).await,
            args::Command::Watchdog { .. }
            | args::Command::Completions { .. }
            | args::Command::Man(_) => unreachable!("served above"),
        }
    });
    drop(runtime);
    drop(log); // flushes the log lines still queued
    match result {
        Ok(code) => std::process::exit(code),
        Err(failure) => {
            eprintln!("leadership: {failure}");
            std::process::exit(failure.code);
        }
    }
}
