//! The command line. Every competing subcommand takes the library's whole configuration, with
//! the library's defaults (which adapt to the interval: only values given can clash); every
//! setting can also come from the environment (`LEADERSHIP_*`); validation is the library's.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Leadership on PostgreSQL: run a command only while this process leads, watch and inspect
/// flags. Compatible with the Go `leadership.Flag` table.
///
/// Connection settings come from --url (or LEADERSHIP_URL, DATABASE_URL), completed by the
/// standard PG* environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGPASSFILE and
/// ~/.pgpass, PGDATABASE, PGAPPNAME, PGCONNECT_TIMEOUT) and TLS settings: sslmode, sslrootcert,
/// sslcert, sslkey in the URL or PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY. PGSERVICE is not
/// supported.
///
/// Exit codes (the tool's own are in the sysexits band, 64-78, so they stay apart from a
/// command's): 0 success (`run`: otherwise the command's own status; 128+N if a signal N ended
/// it), 64 bad arguments, 65 table of the wrong shape, 67 `release`: the process named does not
/// hold the flag, 69 server unreachable, 70 failure at run time, 71 the command cannot be
/// started, 74 `run --once`: leadership ended while the command ran, 75 `run --wait`: the flag
/// is held elsewhere, 77 login refused (also: the server requires TLS), 78 invalid
/// configuration.
#[derive(Debug, Parser)]
#[command(name = "leadership", version)]
pub struct Cli {
    /// More logging (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging: errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Wait to lead, run CMD while leading, stop it before the lease can end, then wait again.
    ///
    /// CMD gets SIGTERM when no renew has won by --grace before the lease's deadline, SIGKILL
    /// at the deadline (also from a watchdog process if the tool itself is frozen), so it is
    /// dead before another process can lead. Its environment has LEADERSHIP_TOKEN (the fencing
    /// token), LEADERSHIP_DEADLINE_UNIX_NS (the lease's deadline when CMD started, in Unix
    /// nanoseconds: renewals move it later, and CMD is stopped before any deadline passes),
    /// LEADERSHIP_NAME, LEADERSHIP_PROCESS, and LEADERSHIP_FENCE_SQL: a statement to run first
    /// in each transaction CMD makes on the database holding the flags, so that it commits only
    /// while this term holds the flag:
    ///
    ///   psql "$DB" -c "BEGIN; $LEADERSHIP_FENCE_SQL; INSERT INTO runs VALUES ($LEADERSHIP_TOKEN); COMMIT"
    ///
    /// A job that must run once across a fleet (cron on N hosts):
    ///
    ///   leadership run --name nightly --wait 0 --hold-at-least 10m -- ./report.sh
    ///
    /// One host runs it; the others exit 75 (held elsewhere) at once; the winner keeps the flag
    /// for 10 minutes from the job's start, so a late host does not run it again.
    Run(Run),
    /// Compete (or only observe) and print one JSON line per change of state.
    ///
    /// Lines are written by a thread of their own: a reader that stops reading never delays a
    /// renewal. At most 16 lines wait for a stalled reader; beyond that the oldest waiting
    /// line is dropped, and the next line written carries "dropped":N, the number of lines
    /// (changes of state) dropped before it.
    Watch(Watch),
    /// Print the flags table: holder, version, lease age by the database's clock, expired.
    Status(Status),
    /// Revoke the lease a process holds: its next renew fails, and another process takes over
    /// once the lease has run out (no overlap); --now releases at once instead.
    Release(Release),
    /// Print a completion script for a shell to standard output.
    ///
    ///   leadership completions bash > /etc/bash_completion.d/leadership
    ///   leadership completions zsh > /usr/local/share/zsh/site-functions/_leadership
    ///   leadership completions fish > ~/.config/fish/completions/leadership.fish
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, leadership(1), to standard output, or write every page (one per
    /// subcommand too) into a directory.
    ///
    ///   leadership man > /usr/local/share/man/man1/leadership.1
    ///   leadership man --out-dir /usr/local/share/man/man1
    Man(Man),
    /// The watchdog of `run` (internal): kills the command's tree (its cgroup, its
    /// process group and every descendant of the tool) at the deadlines it reads.
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The command's process group.
        group: i32,
        /// The command's cgroup directory, killed whole through its `cgroup.kill`.
        #[arg(long)]
        cgroup: Option<std::path::PathBuf>,
    },
}

/// Whether a connection pooler sits between this process and PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoolerArg {
    /// Find out (pgbouncer is detected, and its pooling mode probed).
    Auto,
    /// Straight to PostgreSQL.
    Direct,
    /// A pooler in session pooling.
    Session,
    /// A pooler in transaction pooling.
    Transaction,
}

/// Where the table is, and how to reach it.
#[derive(Debug, Args)]
pub struct Connection {
    /// Connection URL (postgres://user:password@host:port/dbname?sslmode=...) or key=value
    /// string; LEADERSHIP_URL, else DATABASE_URL.
    #[arg(long, env = "LEADERSHIP_URL")]
    pub url: Option<String>,
    /// The flags table.
    #[arg(long, env = "LEADERSHIP_TABLE", default_value = leadership_core::sql::DEFAULT_TABLE)]
    pub table: String,
    /// The table's schema (default: the connection's search_path).
    #[arg(long, env = "LEADERSHIP_SCHEMA")]
    pub schema: Option<String>,
    /// The bound on connecting to each host of the URL (default: twice the timeout, or half
    /// the interval up to 5s if longer).
    #[arg(long, env = "LEADERSHIP_CONNECT_TIMEOUT", value_parser = duration)]
    pub connect_timeout: Option<Duration>,
    /// Whether a connection pooler (pgbouncer) sits in between.
    #[arg(long, env = "LEADERSHIP_POOLER", value_enum, default_value_t = PoolerArg::Auto)]
    pub pooler: PoolerArg,
}

/// The library's configuration of one flag.
#[derive(Debug, Args)]
pub struct FlagArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The flag's name.
    #[arg(long, env = "LEADERSHIP_NAME")]
    pub name: String,
    /// This process's name, unique among those sharing the flag (default: host name, pid and a random suffix).
    #[arg(long, env = "LEADERSHIP_PROCESS")]
    pub process: Option<String>,
    /// The lease: others take over when the holder has not renewed for this long. At least
    /// 100ms with the default timeout (interval/10), as a statement's timeout is at least 10ms.
    #[arg(long, env = "LEADERSHIP_INTERVAL", value_parser = duration, default_value = "30s")]
    pub interval: Duration,
    /// The bound on each statement (default: 1s, or a tenth of the interval if shorter; at
    /// least 10ms, a round trip and a commit).
    #[arg(long, env = "LEADERSHIP_TIMEOUT", value_parser = duration)]
    pub timeout: Option<Duration>,
    /// Randomisation of the schedule, between 0 and 1.
    #[arg(long, env = "LEADERSHIP_JITTER", default_value_t = leadership_core::DEFAULT_JITTER)]
    pub jitter: f64,
    /// How much earlier than the lease's end this process stops believing it leads (default:
    /// interval/20; at least interval/1000, the clocks' rate drift over one lease).
    #[arg(long, env = "LEADERSHIP_MARGIN", value_parser = duration)]
    pub margin: Option<Duration>,
    /// The wait after a failure (default: interval/10).
    #[arg(long, env = "LEADERSHIP_RETRY_INTERVAL", value_parser = duration)]
    pub retry_interval: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct Run {
    #[command(flatten)]
    pub flag: FlagArgs,
    /// The time the command gets to stop: SIGTERM when no renew has won by this long before
    /// the lease's deadline (the lease is at risk), SIGKILL at the deadline. Default: as long as
    /// one failed renew and its retry leave (7.5s at the default 30s interval; about interval/8
    /// for short ones), so a blip never stops the command. A longer grace makes the leader renew
    /// earlier; one the lease cannot give is refused.
    #[arg(long, env = "LEADERSHIP_GRACE", value_parser = duration)]
    pub grace: Option<Duration>,
    /// Exit when leadership ends (or is at risk) while the command runs, instead of waiting to
    /// lead again.
    #[arg(long)]
    pub once: bool,
    /// Wait at most this long to lead; 0 tries once (one check). If another process holds the
    /// flag by then, exit 75 without running the command.
    #[arg(long, value_parser = duration)]
    pub wait: Option<Duration>,
    /// After the command finishes, keep the flag until this long after it started, then
    /// release it: a job started on many hosts at once runs once (ShedLock's lockAtLeastFor).
    #[arg(long, value_parser = duration)]
    pub hold_at_least: Option<Duration>,
    /// How the command's process tree is contained, so that nothing it started outlives the
    /// term: auto tries a cgroup of its own, then a child subreaper, then the process group
    /// alone (the one used is logged at start with -v).
    #[arg(long, env = "LEADERSHIP_CONTAIN", value_enum, default_value_t = ContainArg::Auto)]
    pub contain: ContainArg,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// `run` and `watch`: the flag's metrics for Prometheus.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve the flag's metrics for Prometheus over HTTP at ADDR (host:port, e.g.
    /// `127.0.0.1:9898` or `[::]:9898`; any path answers): `<prefix>_leadership_flag_state{name,
    /// process}` (1 while leading) and the others of deploy/prometheus/README.md. An address
    /// that cannot be read or listened on (a port in use) is refused at start (exit 78).
    #[arg(long, env = "LEADERSHIP_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// The metrics' names start with this (`leadership` gives
    /// `leadership_leadership_flag_state`); letters, digits and `_`, as Prometheus names.
    /// The rules of deploy/prometheus/ read any prefix.
    #[arg(
        long,
        env = "LEADERSHIP_METRICS_PREFIX",
        value_name = "PREFIX",
        default_value = "leadership"
    )]
    pub metrics_prefix: String,
}

/// `run --contain`: how the command's process tree is contained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ContainArg {
    /// The best the host allows: cgroup, else subreaper, else group.
    Auto,
    /// A cgroup v2 of its own (Linux 5.14 or later, a writable cgroup2 mount); an error if
    /// not available.
    Cgroup,
    /// The tool as a child subreaper (Linux): orphans reparent to it.
    Subreaper,
    /// The command's process group alone.
    Group,
}

#[derive(Debug, Args)]
pub struct Watch {
    #[command(flatten)]
    pub flag: FlagArgs,
    /// Do not compete: only report who holds the flag. (An observer records no metrics, so
    /// it takes no --metrics-listen.)
    #[arg(long, conflicts_with = "metrics_listen")]
    pub observe: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct Man {
    /// Write leadership.1 and one page per subcommand (leadership-run.1, ...) into this
    /// directory instead of printing leadership.1.
    #[arg(long)]
    pub out_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct Status {
    #[command(flatten)]
    pub connection: Connection,
    /// Only this flag.
    #[arg(long, conflicts_with = "group")]
    pub name: Option<String>,
    /// A balanced group (`FlagSet::balanced`): its shards grouped by holder, with each
    /// holder's member row (live or not), the free shards and those of non-members.
    #[arg(long)]
    pub group: Option<String>,
    /// The lease used to judge expiry (the processes' --interval; default the library's, 30s).
    #[arg(long, env = "LEADERSHIP_INTERVAL", value_parser = duration)]
    pub interval: Option<Duration>,
    /// The bound on each statement.
    #[arg(long, env = "LEADERSHIP_TIMEOUT", value_parser = duration)]
    pub timeout: Option<Duration>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Release {
    #[command(flatten)]
    pub connection: Connection,
    /// The flag's name.
    #[arg(long, env = "LEADERSHIP_NAME")]
    pub name: String,
    /// The process whose lease to revoke; refused if it does not hold the flag.
    #[arg(long)]
    pub process: String,
    /// Release at once, so another process leads immediately: only for a holder known to be
    /// dead (a live one goes on believing until its deadline while the next one leads).
    #[arg(long)]
    pub now: bool,
    /// The bound on each statement.
    #[arg(long, env = "LEADERSHIP_TIMEOUT", value_parser = duration)]
    pub timeout: Option<Duration>,
}

/// `30s`, `1500ms`, `2m`, `1h 30m`; a bare number is seconds.
pub fn duration(text: &str) -> Result<Duration, String> {
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
        assert_eq!(run.flag.timeout, None, "the library's default, adapted");
        assert!(
            Cli::try_parse_from(["leadership", "run", "--name", "n"]).is_err(),
            "no command"
        );
    }
}
