//! `leadership run`: wait to lead, run the command while leading, stop it before the lease can
//! end, and wait again (or exit with `--once`).
//!
//! The timeline of a lease (see the README): the leader renews; if no renew has won by the
//! deadline minus `--grace`, the lease is at risk and the command's process group gets
//! SIGTERM; at the deadline it gets SIGKILL (from this tool, or from the watchdog if this tool
//! is frozen); another process can take over no sooner than a margin after the deadline.

use std::time::{Duration, Instant};

use leadership_tokio::{Flag, Guard, LastRun, TryLead};
use tracing::{info, warn};

use crate::args::Run;
use crate::child::{self, Child};
use crate::exit::{Failure, FAILURE, HELD, LOST};
use crate::output::unix_ns_at;
use crate::signals::Signals;
use crate::watchdog::Watchdog;

/// Closes the flag at the end: a release that fails or takes too long is a warning, not a
/// failure (the flag is lowered anyway, and the lease expires by itself).
pub async fn close(flag: &Flag) {
    match flag.close().await {
        Ok(()) => {}
        Err(e) => {
            warn!(error = %e, "the flag is lowered; the next leader waits for the lease to expire")
        }
    }
}

/// The guard of the next run, or `None` when the tool should exit (with the code given):
/// waits to lead (bounded by `--wait` the first time), never while the lease is at risk.
async fn next_run(
    flag: &Flag,
    last: Option<LastRun>,
    wait: Option<Duration>,
    signals: &mut Signals,
) -> Result<Result<Guard, i32>, Failure> {
    let next = async {
        match (last, wait) {
            // Try once: the first check says who holds it.
            (None, Some(Duration::ZERO)) => match flag.try_lead().await? {
                TryLead::Led(guard) if !guard.is_at_risk() => Ok(Ok(guard)),
                _ => Ok(Err(HELD)),
            },
            (None, Some(wait)) => match tokio::time::timeout(wait, flag.next_run(None)).await {
                Ok(next) => Ok(next?.ok_or(0)),
                Err(_) => Ok(Err(HELD)),
            },
            (last, _) => Ok(flag.next_run(last).await?.ok_or(0)),
        }
    };
    tokio::select! {
        next = next => next,
        // A signal while waiting just stops competing.
        _ = signals.recv() => Ok(Err(0)),
    }
}

pub async fn run(args: Run) -> Result<i32, Failure> {
    let process = args
        .flag
        .process
        .clone()
        .unwrap_or_else(crate::flag::default_process);
    let mut signals = Signals::new()?;
    let flag = crate::flag::start(&args.flag, &process, args.grace).await?;
    let mut last = None;
    loop {
        let guard = match next_run(&flag, last, args.wait, &mut signals).await? {
            Ok(guard) => guard,
            Err(code) => {
                if code == HELD {
                    let holder = flag.current_holder().and_then(|h| h.name);
                    eprintln!(
                        "leadership: {:?} is held by {}; not running the command",
                        args.flag.name,
                        holder.map_or("another process".to_string(), |h| format!("{h:?}"))
                    );
                }
                close(&flag).await;
                return Ok(code);
            }
        };
        let token = guard.token();
        info!(token, command = ?args.command[0], "{process} leads {:?}; starting the command", args.flag.name);
        let env = [
            ("LEADERSHIP_TOKEN", token.to_string()),
            (
                "LEADERSHIP_DEADLINE_UNIX_NS",
                unix_ns_at(guard.deadline()).to_string(),
            ),
            ("LEADERSHIP_NAME", args.flag.name.clone()),
            ("LEADERSHIP_PROCESS", process.clone()),
            // This term's fence, complete, for the command's own transactions.
            ("LEADERSHIP_FENCE_SQL", guard.fence().literal()),
        ];
        let started = Instant::now();
        let spawned = child::spawn(&args.command, &env)
            .and_then(|child| Ok((Watchdog::start(child.group())?, child)));
        let (mut watchdog, mut child) = match spawned {
            Ok(running) => running,
            Err(e) => {
                // Hand the flag over rather than hold it with nothing running.
                drop(guard);
                close(&flag).await;
                return Err(e);
            }
        };
        let ended = supervise(&flag, &guard, &mut child, &mut watchdog, &mut signals).await;
        watchdog.disarm();
        match ended {
            Ended::Exited(code) => {
                if let Some(hold) = args.hold_at_least {
                    // Keep the flag until `hold` after the start, so that a job started on
                    // many hosts at once runs once; unless the term ends first.
                    tokio::select! {
                        () = tokio::time::sleep_until((started + hold).into()) => {}
                        () = guard.lost() => {}
                        _ = signals.recv() => {}
                    }
                }
                // The command is done: release at once so another process takes over.
                drop(guard);
                close(&flag).await;
                return Ok(code);
            }
            Ended::Stopped => {
                let why = if guard.is_lost() {
                    "leadership ended"
                } else {
                    "the lease was at risk"
                };
                warn!("the command stopped: {why}");
                drop(guard);
                if args.once {
                    close(&flag).await;
                    return Ok(LOST);
                }
                last = Some(LastRun {
                    token,
                    stopped: true,
                });
            }
        }
    }
}

enum Ended {
    /// The command exited by itself (or after a forwarded signal): its exit code.
    Exited(i32),
    /// The command was stopped because the lease was at risk or leadership ended.
    Stopped,
}

/// Runs the lease's timeline for the command: SIGTERM when the lease is at risk (or lost),
/// SIGKILL at the deadline; the watchdog is told each new deadline. Signals to the tool are
/// forwarded to the command.
async fn supervise(
    flag: &Flag,
    guard: &Guard,
    child: &mut Child,
    watchdog: &mut Watchdog,
    signals: &mut Signals,
) -> Ended {
    let mut leases = flag.subscribe_lease();
    let (mut termed, mut killed) = (false, false);
    let mut told = None;
    loop {
        let deadline = guard.deadline();
        if told != Some(deadline) && !killed {
            watchdog.deadline(deadline);
            told = Some(deadline);
        }
        tokio::select! {
            status = child.wait() => {
                return match status {
                    _ if termed => Ended::Stopped,
                    Ok(status) => Ended::Exited(child::exit_code(status)),
                    Err(_) => Ended::Exited(FAILURE),
                };
            }
            () = guard.at_risk(), if !termed => {
                warn!("the lease is at risk (no renew has won): SIGTERM to the command, SIGKILL at the deadline");
                child.signal(libc::SIGTERM);
                termed = true;
            }
            () = tokio::time::sleep_until(deadline.into()), if !killed => {
                if guard.deadline() <= std::time::Instant::now() {
                    warn!("the lease's deadline passed: SIGKILL to the command");
                    child.signal(libc::SIGKILL);
                    (termed, killed) = (true, true);
                }
            }
            // A renew moved the deadline: tell the watchdog.
            _ = leases.changed() => {}
            signal = signals.recv() => {
                // Forward, and let the command decide when to exit.
                child.signal(signal);
            }
        }
    }
}
