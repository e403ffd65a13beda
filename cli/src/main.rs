//! `leadership`: make any program a singleton on PostgreSQL, like `consul lock` or
//! `etcdctl elect`. See `leadership --help` and the README.

mod args;
mod child;
mod connect;
mod exit;
mod flag;
mod release;
mod run;
mod signals;
mod status;
mod watch;
mod watchdog;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse(); // exits 2 on bad arguments
    if let args::Command::Watchdog { group } = cli.command {
        watchdog::serve(group);
    }
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
            args::Command::Watchdog { .. } => unreachable!("served above"),
        }
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(failure) => {
            eprintln!("leadership: {failure}");
            std::process::exit(failure.code);
        }
    }
}
