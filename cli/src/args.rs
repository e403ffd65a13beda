//! The command line. Every competing subcommand takes the library's whole configuration, with
//! the library's defaults; validation is the library's.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Leadership on PostgreSQL: run a command only while this process leads, watch and inspect
/// flags. Compatible with the Go `leadership.Flag` table.
///
/// Connection settings come from the standard PG* environment variables (PGHOST, PGPORT,
/// PGUSER, PGPASSWORD, PGDATABASE, PGAPPNAME, PGCONNECT_TIMEOUT), overridden by --url.
///
/// Exit codes: 0 success (`run`: the command's own status; 128+N if a signal N ended it),
/// 1 failure at run time, 2 bad arguments, 3 invalid configuration, 4 server unreachable or
/// login refused, 5 table of the wrong shape, 6 `release` refused (not the holder), 7 the
/// command cannot be started, 8 `run --once` lost leadership.
#[derive(Debug, Parser)]
#[command(name = "leadership", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Wait to lead, run CMD while leading, stop it when leadership is lost, then wait again.
    Run(Run),
    /// Compete (or only observe) and print one JSON line per change of state.
    Watch(Watch),
    /// Print the flags table: holder, version, lease age by the database's clock, expired.
    Status(Status),
    /// Release the lease a process holds (the operator's escape hatch).
    Release(Release),
    /// The watchdog of `run` (internal): kills process group GROUP at the deadlines it reads.
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The command's process group.
        group: i32,
    },
}

/// Where the table is.
#[derive(Debug, Args)]
pub struct Connection {
    /// Connection URL (postgres://user:password@host:port/dbname) or key=value string.
    #[arg(long)]
    pub url: Option<String>,
    /// The flags table.
    #[arg(long, default_value = leadership_core::sql::DEFAULT_TABLE)]
    pub table: String,
    /// The table's schema (default: the connection's search_path).
    #[arg(long)]
    pub schema: Option<String>,
}

/// The library's configuration of one flag.
#[derive(Debug, Args)]
pub struct FlagArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The flag's name.
    #[arg(long)]
    pub name: String,
    /// This process's name, unique among those sharing the flag (default: host name and pid).
    #[arg(long)]
    pub process: Option<String>,
    /// The lease: others take over when the holder has not renewed for this long.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub interval: Duration,
    /// The bound on each statement (default: 1s, or a quarter of the interval if shorter).
    #[arg(long, value_parser = duration)]
    pub timeout: Option<Duration>,
    /// Randomisation of the schedule, between 0 and 1.
    #[arg(long, default_value_t = leadership_core::DEFAULT_JITTER)]
    pub jitter: f64,
    /// How much earlier than the lease's end this process stops believing it leads (default:
    /// interval/20).
    #[arg(long, value_parser = duration)]
    pub margin: Option<Duration>,
    /// The wait after a failure (default: interval/10).
    #[arg(long, value_parser = duration)]
    pub retry_interval: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct Run {
    #[command(flatten)]
    pub flag: FlagArgs,
    /// The time the command gets to stop: it gets SIGTERM when no renew has won by this long
    /// before the lease's deadline (the lease is at risk), and SIGKILL at the deadline.
    /// Default: as long as one failed renew and its retry leave (7.5s at the default 30s
    /// interval; about interval/8 for short ones), so a blip never stops the command. A longer
    /// grace makes the leader renew earlier; one the lease cannot give is refused.
    #[arg(long, value_parser = duration)]
    pub grace: Option<Duration>,
    /// Exit when leadership is lost instead of waiting to lead again.
    #[arg(long)]
    pub once: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Watch {
    #[command(flatten)]
    pub flag: FlagArgs,
    /// Do not compete: only report who holds the flag.
    #[arg(long)]
    pub observe: bool,
    /// How often the state is sampled.
    #[arg(long, value_parser = duration, default_value = "10ms")]
    pub poll: Duration,
}

#[derive(Debug, Args)]
pub struct Status {
    #[command(flatten)]
    pub connection: Connection,
    /// Only this flag.
    #[arg(long)]
    pub name: Option<String>,
    /// The lease used to judge expiry (the processes' --interval).
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub interval: Duration,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Release {
    #[command(flatten)]
    pub connection: Connection,
    /// The flag's name.
    #[arg(long)]
    pub name: String,
    /// The process whose lease to release; refused if it does not hold the flag.
    #[arg(long)]
    pub process: String,
}

/// `30s`, `1500ms`, `2m`, `1h 30m`; a bare number is seconds.
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(duration("soon").is_err());
        assert!(duration("-1").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["leadership", "run", "--name", "n", "--", "sleep", "1"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!()
        };
        assert_eq!(run.command, ["sleep", "1"]);
        assert_eq!(run.flag.interval, Duration::from_secs(30));
        assert!(
            Cli::try_parse_from(["leadership", "run", "--name", "n"]).is_err(),
            "no command"
        );
    }
}
