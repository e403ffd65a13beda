//! Starting a flag from the command line's settings.

use leadership_tokio::Flag;

use crate::args::FlagArgs;
use crate::connect::{pg_config, table};
use crate::exit::{Failure, CONFIG};
use leadership_core::ConfigError;

/// This process's default name: host name and pid, unique on one host and across hosts.
pub fn default_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// Starts competing for the flag, with `grace` as the stop-ahead (`run`); a bad setting, an
/// unreachable server or a wrong table comes back as a typed failure with its exit code.
pub async fn start(
    args: &FlagArgs,
    process: &str,
    grace: Option<std::time::Duration>,
) -> Result<Flag, Failure> {
    let table = table(&args.connection)?;
    let mut builder = Flag::builder(args.name.clone(), process)
        .pg_config(pg_config(&args.connection, |k| std::env::var(k).ok())?)
        .interval(args.interval)
        .jitter(args.jitter);
    if let Some(timeout) = args.timeout {
        builder = builder.timeout(timeout);
    }
    builder = match &args.connection.schema {
        Some(schema) => builder.table_in_schema(schema, table.name()),
        None => builder.table(table.name()),
    };
    if let Some(margin) = args.margin {
        builder = builder.margin(margin);
    }
    if let Some(retry) = args.retry_interval {
        builder = builder.retry_interval(retry);
    }
    if let Some(grace) = grace {
        builder = builder.stop_ahead(grace);
    }
    builder
        .start(tokio_postgres::NoTls)
        .await
        .map_err(|e| match e {
            leadership_tokio::Error::Config(ConfigError::StopAheadTooLong {
                stop_ahead,
                interval,
                margin,
                attempt,
            }) => Failure::new(
                CONFIG,
                format!(
                    "--grace {stop_ahead:?} is more than the lease can give: --interval \
                     {interval:?} minus the margin ({margin:?}) minus one renew ({attempt:?}) \
                     must exceed it, or a healthy leader would stop its command on every \
                     renew; shorten --grace or lengthen --interval"
                ),
            ),
            e => e.into(),
        })
}
