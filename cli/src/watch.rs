//! `leadership watch`: one JSON line per change of state, like the Go peer (`seedpeer`), so
//! the same scripts can drive both: when this process starts or stops leading, when the
//! holder changes, and when a renewal moves the deadline. Driven by the flag's streams and a
//! timer at the deadline, never by polling.

use std::time::Duration;

use leadership_tokio::lease_clock_ns;
use serde_json::json;

use crate::args::Watch;
use crate::exit::Failure;
use crate::output::{unix_ns, unix_ns_at, Output};
use crate::signals::Signals;

/// What a line says; a new line when it changes.
#[derive(Clone, Debug, PartialEq)]
struct Said {
    raised: bool,
    holder: Option<String>,
    token: Option<i64>,
    deadline: Option<std::time::Instant>,
}

pub async fn watch(args: Watch) -> Result<i32, Failure> {
    let process = args
        .flag
        .process
        .clone()
        .unwrap_or_else(crate::flag::default_process);
    let mut signals = Signals::new()?;
    let out = Output::start();
    if args.observe {
        return observe(&args, &process, &mut signals, &out).await;
    }
    // Bound before connecting: a bad address is refused at start, never half served.
    let metrics_prefix = crate::metrics::serve(&args.metrics)?;
    let flag = crate::flag::start(&args.flag, &process, None, metrics_prefix).await?;
    let mut leases = flag.subscribe_lease();
    let mut holders = flag.subscribe_holder();
    let mut said: Option<Said> = None;
    loop {
        let lease = flag.lease();
        let holder = flag.current_holder();
        let now = Said {
            raised: lease.is_some(),
            holder: match lease {
                Some(_) => Some(process.clone()),
                None => holder.as_ref().and_then(|h| h.name.clone()),
            },
            // A follower names the holder; its version moves with every renewal, so it is
            // printed but is not news.
            token: lease.map(|l| l.token),
            deadline: lease.map(|l| l.deadline),
        };
        if said.as_ref() != Some(&now) {
            let mut line = json!({
                "t_unix_ns": unix_ns(),
                "t_clock_ns": lease_clock_ns(),
                "process": process,
                "raised": now.raised,
                "holder": now.holder,
                "token": now.token.or_else(|| holder.as_ref().and_then(|h| h.version)),
            });
            if let Some(deadline) = now.deadline {
                line["deadline_unix_ns"] = json!(unix_ns_at(deadline));
            }
            // The instants the driver recorded for the term this line starts, goes on with
            // or ends: exact, whenever the line is made.
            let term = |token| flag.terms().into_iter().rfind(|t| t.token == token);
            if let Some(t) = now.token.filter(|_| now.raised).and_then(term) {
                line["began_clock_ns"] = json!(t.began_ns);
                line["deadline_clock_ns"] = json!(t.deadline_ns);
            } else if let Some(t) = said
                .as_ref()
                .filter(|s| s.raised)
                .and_then(|s| s.token)
                .and_then(term)
            {
                line["ended_clock_ns"] = json!(t.ended_ns());
            }
            out.line(line);
            said = Some(now);
        }
        // A timer at the deadline: belief ends then even if the driver is stuck.
        let deadline = lease.map(|l| tokio::time::Instant::from_std(l.deadline));
        tokio::select! {
            _ = leases.changed() => {}
            _ = holders.changed() => {}
            () = sleep_until(deadline) => {}
            _ = signals.recv() => {
                if said.as_ref().is_some_and(|s| s.raised) {
                    // The lowering is printed before the release goes out: a reader must not
                    // believe this process leads after the next one does. The tool stops
                    // claiming the term here, so that is when its reported belief ends.
                    let at = lease_clock_ns();
                    out.line(json!({
                        "t_unix_ns": unix_ns(),
                        "t_clock_ns": at,
                        "process": process,
                        "raised": false,
                        "holder": null,
                        "token": null,
                        "ended_clock_ns": at,
                    }));
                    out.flush_within(Duration::from_millis(100));
                }
                crate::run::close(&flag).await;
                out.flush_within(Duration::from_millis(100));
                return Ok(0);
            }
        }
    }
}

/// Reports the holder without competing, from an observer (no polling: it reads on releases
/// and when a lease expires).
async fn observe(
    args: &Watch,
    process: &str,
    signals: &mut Signals,
    out: &Output,
) -> Result<i32, Failure> {
    let observer = crate::flag::observe(&args.flag, process).await?;
    let mut holders = observer.subscribe();
    let mut said = None;
    loop {
        if let Some(holder) = holders.borrow_and_update().clone() {
            let now = (holder.name.clone(), holder.expired);
            if said.as_ref() != Some(&now) {
                out.line(json!({
                    "t_unix_ns": unix_ns(),
                    "t_clock_ns": lease_clock_ns(),
                    "process": process,
                    "raised": false,
                    "holder": holder.name,
                    "token": holder.version,
                    "expired": holder.expired,
                }));
                said = Some(now);
            }
        }
        tokio::select! {
            changed = holders.changed() => if changed.is_err() { return Ok(0) },
            _ = signals.recv() => {
                out.flush_within(Duration::from_millis(100));
                return Ok(0);
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        // On the lease's clock, so a suspend cannot delay it.
        Some(at) => leadership_tokio::boot_clock::sleep_until(at.into_std()).await,
        None => std::future::pending().await,
    }
}
