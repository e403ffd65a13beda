//! `leadership run`: wait to lead, run the command while leading, stop it when leadership is
//! lost, and wait again (or exit with `--once`).

use std::time::Duration;

use tokio::time::sleep;

use crate::args::Run;
use crate::child::{self, Child};
use crate::exit::{Failure, FAILURE};
use crate::signals::Signals;

/// How often leadership is sampled: `is_raised()` turns false at the deadline even while the
/// driver is stuck, so a 10 ms poll stops the command within 10 ms of the lease's local end.
const POLL: Duration = Duration::from_millis(10);

/// `--once`: leadership was lost and the command stopped.
pub const LOST: i32 = 8;

pub async fn run(args: Run) -> Result<i32, Failure> {
    let process = args
        .flag
        .process
        .clone()
        .unwrap_or_else(crate::flag::default_process);
    let mut signals = Signals::new()?;
    let flag = crate::flag::start(&args.flag, &process).await?;
    loop {
        // Wait to lead; a signal now just stops competing.
        let lease = loop {
            if let Some(lease) = flag.lease() {
                break lease;
            }
            tokio::select! {
                _ = sleep(POLL) => {}
                _ = signals.recv() => {
                    flag.close().await?;
                    return Ok(0);
                }
            }
        };
        eprintln!(
            "leadership: {process} leads {:?} (token {}); starting {:?}",
            args.flag.name, lease.token, args.command[0]
        );
        let env = [
            ("LEADERSHIP_TOKEN", lease.token.to_string()),
            ("LEADERSHIP_NAME", args.flag.name.clone()),
            ("LEADERSHIP_PROCESS", process.clone()),
        ];
        let mut child = match child::spawn(&args.command, &env) {
            Ok(child) => child,
            Err(e) => {
                // Hand the flag over rather than hold it with nothing running.
                let _ = flag.close().await;
                return Err(e);
            }
        };
        match supervise(&flag, &mut child, &mut signals).await {
            Ended::Exited(code) => {
                // The command is done: release at once so another process takes over.
                flag.close().await?;
                return Ok(code);
            }
            Ended::Lost => {
                eprintln!(
                    "leadership: {process} lost {:?}; stopping the command",
                    args.flag.name
                );
                stop(&mut child, args.grace).await;
                if args.once {
                    flag.close().await?;
                    return Ok(LOST);
                }
            }
        }
    }
}

enum Ended {
    /// The command exited (by itself, or after a forwarded signal): its exit code.
    Exited(i32),
    /// Leadership ended while the command ran.
    Lost,
}

async fn supervise(
    flag: &leadership_tokio::Flag,
    child: &mut Child,
    signals: &mut Signals,
) -> Ended {
    loop {
        tokio::select! {
            status = child.wait() => {
                return Ended::Exited(status.map_or(FAILURE, child::exit_code));
            }
            _ = sleep(POLL) => {
                if !flag.is_raised() {
                    return Ended::Lost;
                }
            }
            signal = signals.recv() => {
                // Forward, and let the command decide when to exit.
                child.signal(signal);
            }
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop(child: &mut Child, grace: Duration) {
    child.signal(libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        child.signal(libc::SIGKILL);
        let _ = child.wait().await;
    }
}
