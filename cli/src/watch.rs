//! `leadership watch`: one JSON line per change of state, like the Go peer (`seedpeer`), so
//! the same scripts can drive both.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::time::sleep;

use crate::args::Watch;
use crate::connect::{connect, table};
use crate::exit::Failure;
use crate::signals::Signals;
use leadership_core::sql::Statements;
use leadership_tokio::internal::PgTime;

/// Nanoseconds since the Unix epoch, now.
fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The wall-clock instant of a monotonic one: what an observer can compare with its own clock
/// to tell when this process stops believing it leads, even while the process is frozen.
fn unix_ns_at(at: Instant) -> i64 {
    let now = Instant::now();
    let offset = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    if at >= now {
        unix_ns().saturating_add(offset(at - now))
    } else {
        unix_ns().saturating_sub(offset(now - at))
    }
}

fn print(line: serde_json::Value) {
    // One write per line, flushed: a reader may act on each line as it comes.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn watch(args: Watch) -> Result<i32, Failure> {
    let process = args
        .flag
        .process
        .clone()
        .unwrap_or_else(crate::flag::default_process);
    let mut signals = Signals::new()?;
    if args.observe {
        return observe(&args, &process, &mut signals).await;
    }
    let flag = crate::flag::start(&args.flag, &process, None).await?;
    let mut last = None;
    loop {
        let lease = flag.lease();
        let holder = flag.current_holder();
        let state = (
            lease.map(|l| (l.token, l.deadline)),
            holder.as_ref().and_then(|h| h.name.clone()),
            holder.as_ref().and_then(|h| h.token),
        );
        if last.as_ref() != Some(&state) {
            let (held, name, token) = &state;
            let mut line = json!({
                "t_unix_ns": unix_ns(),
                "process": process,
                "raised": held.is_some(),
                "holder": name,
                "token": held.map(|(t, _)| t).or(*token),
            });
            if let Some((_, deadline)) = held {
                line["deadline_unix_ns"] = json!(unix_ns_at(*deadline));
            }
            print(line);
            last = Some(state);
        }
        tokio::select! {
            _ = sleep(args.poll) => {}
            _ = signals.recv() => {
                flag.close().await?;
                return Ok(0);
            }
        }
    }
}

/// Reports the holder without competing: reads the row, at most every 100 ms.
async fn observe(args: &Watch, process: &str, signals: &mut Signals) -> Result<i32, Failure> {
    let client = connect(&args.flag.connection).await?;
    let statements = Statements::new(&table(&args.flag.connection)?);
    let query = client.prepare(&statements.status).await?;
    let mut last = None;
    loop {
        let rows = client
            .query(&query, &[&Some(args.flag.name.as_str())])
            .await
            .map_err(|e| {
                Failure::new(
                    crate::exit::FAILURE,
                    leadership_tokio::internal::Chain(&e).to_string(),
                )
            })?;
        let state = rows.first().map(|row| {
            let holder: Option<String> = row.get("holder");
            let version: Option<i64> = row.get("version");
            (holder, version)
        });
        if last.as_ref() != Some(&state) {
            let (holder, token) = state.clone().unwrap_or((None, None));
            let expired = rows.first().map(|row| {
                let ts: Option<PgTime> = row.get("timestamp");
                let now: PgTime = row.get("now");
                let lease = i64::try_from(args.flag.interval.as_micros()).unwrap_or(i64::MAX);
                ts.is_none_or(|t| now.0.micros_since(t.0) > lease)
            });
            print(json!({
                "t_unix_ns": unix_ns(),
                "process": process,
                "raised": false,
                "holder": holder,
                "token": token,
                "expired": expired,
            }));
            last = Some(state);
        }
        tokio::select! {
            _ = sleep(args.poll.max(Duration::from_millis(100))) => {}
            _ = signals.recv() => return Ok(0),
        }
    }
}
