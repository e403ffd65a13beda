//! Starting a flag (or an observer, or an inspector) from the command line's settings.

use std::time::Duration;

use leadership_core::ConfigError;
use leadership_tokio::{Flag, FlagBuilder, Inspector, Observer};

use crate::args::{Connection, FlagArgs};
use crate::connect::{builder, settings};
use crate::exit::{Failure, CONFIG, UNAVAILABLE};

pub use leadership_tokio::default_process;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// The builder for `args`, with `grace` as the stop-ahead (`run`), recording metrics under
/// `metrics_prefix` (`--metrics-listen`).
fn flag_builder(
    args: &FlagArgs,
    process: &str,
    grace: Option<Duration>,
    metrics_prefix: Option<String>,
) -> Result<(FlagBuilder, leadership_tokio::tls::RustlsConnector, String), Failure> {
    let (pg, tls) = settings(&args.connection, env)?;
    let servers = leadership_tokio::internal::servers(&pg);
    // The command line fills the library's one list of settings; unset ones keep its defaults.
    let mut set = leadership_tokio::Settings::default();
    set.interval = Some(args.interval);
    set.jitter = Some(args.jitter);
    set.timeout = args.timeout;
    set.margin = args.margin;
    set.retry_interval = args.retry_interval;
    set.stop_ahead = grace;
    set.metrics_prefix = metrics_prefix;
    let builder = builder(&args.name, process, &args.connection, pg)?.settings(&set);
    Ok((builder, tls, servers))
}

/// Names the command line's settings in the library's configuration errors, and the servers
/// tried when none could be reached.
fn failure(e: leadership_tokio::Error, servers: &str) -> Failure {
    match e {
        leadership_tokio::Error::Config(ConfigError::StopAheadTooLong {
            stop_ahead,
            interval,
            margin,
            attempt,
        }) => Failure::new(
            CONFIG,
            format!(
                "--grace {stop_ahead:?} is more than the lease can give: --interval {interval:?} \
                 minus the margin ({margin:?}) minus one renew ({attempt:?}) must exceed it, or a \
                 healthy leader would stop its command on every renew; shorten --grace or \
                 lengthen --interval"
            ),
        ),
        leadership_tokio::Error::Config(ConfigError::MarginBelowFloor {
            margin,
            floor,
            interval,
        }) => Failure::new(
            CONFIG,
            format!(
                "--margin {margin:?} is below its floor {floor:?} (--interval {interval:?}/1000): \
                 the margin absorbs the clocks' rate difference over one lease; give at least \
                 {floor:?} or leave --margin unset (interval/20)"
            ),
        ),
        leadership_tokio::Error::Config(ConfigError::IntervalTooShort {
            interval,
            timeout,
            floor,
            min_interval,
        }) => Failure::new(
            CONFIG,
            format!(
                "--interval {interval:?} is too short to run a statement: its default --timeout \
                 (interval/10 = {timeout:?}) is below the floor of one statement, {floor:?} (a \
                 round trip and a commit); give --interval {min_interval:?} or more, or --timeout \
                 {floor:?} or more"
            ),
        ),
        leadership_tokio::Error::Config(ConfigError::TimeoutBelowFloor { timeout, floor }) => {
            Failure::new(
                CONFIG,
                format!(
                    "--timeout {timeout:?} is below the floor of one statement, {floor:?} (a \
                     round trip and a commit): healthy statements would be cancelled"
                ),
            )
        }
        e => {
            let mut failure = Failure::from(e);
            if failure.code == UNAVAILABLE {
                failure.message = format!(
                    "{} (tried {servers}: set by --url, LEADERSHIP_URL, DATABASE_URL or PGHOST and PGPORT)",
                    failure.message
                );
            }
            failure
        }
    }
}

/// Starts competing for the flag, recording metrics under `metrics_prefix` if given; a bad
/// setting, an unreachable server or a wrong table comes back as a typed failure with its exit
/// code.
pub async fn start(
    args: &FlagArgs,
    process: &str,
    grace: Option<Duration>,
    metrics_prefix: Option<String>,
) -> Result<Flag, Failure> {
    let (builder, tls, servers) = flag_builder(args, process, grace, metrics_prefix)?;
    builder.start(tls).await.map_err(|e| failure(e, &servers))
}

/// Watches the flag without competing.
pub async fn observe(args: &FlagArgs, process: &str) -> Result<Observer, Failure> {
    let (builder, tls, servers) = flag_builder(args, process, None, None)?;
    builder.observe(tls).await.map_err(|e| failure(e, &servers))
}

/// An operator's connection: `interval` judges expiry.
pub async fn inspect(
    connection: &Connection,
    interval: Option<Duration>,
    timeout: Option<Duration>,
) -> Result<Inspector, Failure> {
    let (pg, tls) = settings(connection, env)?;
    let servers = leadership_tokio::internal::servers(&pg);
    let mut builder = builder("flags", &default_process(), connection, pg)?;
    if let Some(interval) = interval {
        builder = builder.interval(interval);
    }
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.inspect(tls).await.map_err(|e| failure(e, &servers))
}
