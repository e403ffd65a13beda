//! `leadership run`: wait to lead, run the command while leading, stop it before the lease can
//! end, and wait again (or exit with `--once`).
//!
//! The timeline of a lease (see the README): the leader renews; if no renew has won by the
//! deadline minus `--grace`, the lease is at risk and the command's process group gets
//! SIGTERM; at the deadline it gets SIGKILL (from this tool, or from the watchdog if this tool
//! is frozen); another process can take over no sooner than a margin after the deadline.

use leadership_tokio::{Flag, Guard, LastRun};

use crate::args::Run;
use crate::child::{self, Child};
use crate::exit::{Failure, FAILURE};
use crate::signals::Signals;
use crate::watchdog::Watchdog;

/// `--once`: leadership was lost (or at risk) and the command stopped.
pub const LOST: i32 = 8;

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
        // Wait to lead, with the lease not at risk; a signal now just stops competing.
        let guard = tokio::select! {
            next = flag.next_run(last) => match next? {
                Some(guard) => guard,
                None => return Ok(0),
            },
            _ = signals.recv() => {
                flag.close().await?;
                return Ok(0);
            }
        };
        let token = guard.token();
        eprintln!(
            "leadership: {process} leads {:?} (token {token}); starting {:?}",
            args.flag.name, args.command[0]
        );
        let env = [
            ("LEADERSHIP_TOKEN", token.to_string()),
            ("LEADERSHIP_NAME", args.flag.name.clone()),
            ("LEADERSHIP_PROCESS", process.clone()),
        ];
        let started = child::spawn(&args.command, &env)
            .and_then(|child| Ok((Watchdog::start(child.group())?, child)));
        let (mut watchdog, mut child) = match started {
            Ok(started) => started,
            Err(e) => {
                // Hand the flag over rather than hold it with nothing running.
                drop(guard);
                let _ = flag.close().await;
                return Err(e);
            }
        };
        let ended = supervise(&flag, &guard, &mut child, &mut watchdog, &mut signals).await;
        watchdog.disarm();
        match ended {
            Ended::Exited(code) => {
                // The command is done: release at once so another process takes over.
                drop(guard);
                flag.close().await?;
                return Ok(code);
            }
            Ended::Stopped => {
                let lost = guard.is_lost();
                eprintln!(
                    "leadership: {process}: the command stopped ({})",
                    if lost {
                        "leadership ended"
                    } else {
                        "the lease was at risk"
                    }
                );
                drop(guard);
                if args.once {
                    flag.close().await?;
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
                eprintln!(
                    "leadership: the lease is at risk (no renew has won); SIGTERM to the command, SIGKILL at the deadline"
                );
                child.signal(libc::SIGTERM);
                termed = true;
            }
            () = tokio::time::sleep_until(deadline.into()), if !killed => {
                if guard.deadline() <= std::time::Instant::now() {
                    eprintln!("leadership: the lease's deadline passed; SIGKILL to the command");
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
