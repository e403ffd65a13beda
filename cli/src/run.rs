//! `leadership run`: wait to lead, run the command while leading, stop it before the lease can
//! end, and wait again (or exit with `--once`).
//!
//! The timeline of a lease (see the README): the leader renews; if no renew has won by the
//! deadline minus `--grace`, the lease is at risk and the command's process tree gets SIGTERM;
//! at the deadline it gets SIGKILL (from this tool, or from the watchdog if this tool is
//! frozen); another process can take over no sooner than a margin after the deadline.
//!
//! A term ends when the command's tree is empty, not when the command exits: whatever it left
//! behind gets SIGTERM, `--grace` (bounded by the deadline), then SIGKILL, while the lease is
//! still renewed; only then does the tool release, retake or exit.

use std::time::{Duration, Instant};

use leadership_tokio::{boot_clock, Flag, Guard, LastRun, TryLead};
use tracing::{error, info, warn};

use crate::args::Run;
use crate::child::{self, Child};
use crate::exit::{Failure, CONFIG, FAILURE, HELD, LOST, SPAWN};
use crate::output::unix_ns_at;
use crate::signals::Signals;
use crate::tree::{Member, Tree};
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
    // Before the first command starts: a subreaper must be one before orphans appear.
    let mut tree = Tree::contain(args.contain).map_err(|e| Failure::new(CONFIG, e.to_string()))?;
    info!(
        containment = %tree.kind(),
        cgroups_in = ?tree.parent(),
        "the command's process tree is contained by: {}",
        tree.kind()
    );
    // Bound before connecting: a bad address is refused at start, never half served.
    let metrics_prefix = crate::metrics::serve(&args.metrics)?;
    let flag = crate::flag::start(&args.flag, &process, args.grace, metrics_prefix).await?;
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
        let spawned = tree
            .begin()
            .map_err(|e| Failure::new(SPAWN, e.to_string()))
            .and_then(|()| child::spawn(&args.command, &env, tree.procs()))
            .and_then(|child| Ok((Watchdog::start(child.group(), tree.cgroup())?, child)));
        let (mut watchdog, mut child) = match spawned {
            Ok(running) => running,
            Err(e) => {
                // Hand the flag over rather than hold it with nothing running.
                drop(guard);
                close(&flag).await;
                return Err(e);
            }
        };
        let mut term = Term {
            flag: &flag,
            guard: &guard,
            tree: &tree,
            watchdog: &mut watchdog,
            told: None,
        };
        let ended = match term.supervise(&mut child, &mut signals).await {
            Ok(ended) => ended,
            Err(left) => {
                let pids: Vec<_> = left
                    .iter()
                    .map(|m| format!("{} ({})", m.pid, m.name))
                    .collect();
                // Not released: the lease expires by itself, the latest a survivor can be trusted
                // to be harmless is no sooner. The watchdog, left armed, kills again when the tool
                // exits.
                std::mem::forget(guard);
                std::mem::forget(flag);
                return Err(Failure::new(
                FAILURE,
                format!(
                    "processes of the command survived SIGKILL past the lease's deadline: {}; the flag is left to expire",
                    pids.join(", ")
                ),
            ));
            }
        };
        watchdog.disarm();
        tree.end();
        match ended {
            Ended::Exited(code) => {
                if let Some(hold) = args.hold_at_least {
                    // Keep the flag until `hold` after the start, so that a job started on
                    // many hosts at once runs once; unless the term ends first.
                    tokio::select! {
                        () = boot_clock::sleep_until(started + hold) => {}
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
    /// The command exited by itself (or after a forwarded signal), and its tree is empty: its
    /// exit code.
    Exited(i32),
    /// The command was stopped because the lease was at risk or leadership ended; its tree is
    /// empty.
    Stopped,
}

/// One term's supervision: the lease, the tree, the watchdog.
struct Term<'a> {
    flag: &'a Flag,
    guard: &'a Guard,
    tree: &'a Tree,
    watchdog: &'a mut Watchdog,
    /// The last deadline the watchdog was told.
    told: Option<Instant>,
}

/// How often the tree is looked at while it drains (it has no readiness to wait on).
const DRAIN_POLL: Duration = Duration::from_millis(10);

impl Term<'_> {
    /// Tells the watchdog the current deadline, if it moved.
    fn tell(&mut self) -> Instant {
        let deadline = self.guard.deadline();
        if self.told != Some(deadline) {
            self.watchdog.deadline(deadline);
            self.told = Some(deadline);
        }
        deadline
    }

    fn members(&self, child: &Child) -> Vec<Member> {
        self.tree.members(child.group(), &[self.watchdog.pid()])
    }

    /// Runs the lease's timeline for the command: SIGTERM to the tree when the lease is at
    /// risk (or lost), SIGKILL at the deadline; the watchdog is told each new deadline. Signals
    /// to the tool are forwarded to the command. Then drains the tree; the processes that
    /// outlived SIGKILL until the deadline (uninterruptible sleep) are an error.
    async fn supervise(
        &mut self,
        child: &mut Child,
        signals: &mut Signals,
    ) -> Result<Ended, Vec<Member>> {
        let mut leases = self.flag.subscribe_lease();
        let (mut termed, mut killed) = (false, false);
        let status = loop {
            let deadline = if killed {
                self.guard.deadline()
            } else {
                self.tell()
            };
            tokio::select! {
                status = child.wait() => break status,
                () = self.guard.at_risk(), if !termed => {
                    warn!("the lease is at risk (no renew has won): SIGTERM to the command's tree, SIGKILL at the deadline");
                    self.tree.signal(&self.members(child), libc::SIGTERM);
                    termed = true;
                }
                () = boot_clock::sleep_until(deadline), if !killed => {
                    if self.guard.deadline() <= Instant::now() {
                        warn!("the lease's deadline passed: SIGKILL to the command's tree");
                        // Found before the group dies: its orphans would leave the tree's
                        // reach (to init) unless this tool is their subreaper.
                        let members = self.members(child);
                        child.signal(libc::SIGKILL);
                        self.tree.signal(&members, libc::SIGKILL);
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
        };
        self.drain(child, &mut leases, signals).await?;
        Ok(match status {
            _ if termed => Ended::Stopped,
            Ok(status) => Ended::Exited(child::exit_code(status)),
            Err(_) => Ended::Exited(FAILURE),
        })
    }

    /// After the command's exit: SIGTERM to what it left behind, SIGKILL after `--grace` (by
    /// the deadline at the latest), until the tree is empty; the lease is renewed meanwhile
    /// and the watchdog stays armed. The survivors of SIGKILL at the deadline, if any.
    async fn drain(
        &mut self,
        child: &Child,
        leases: &mut tokio::sync::watch::Receiver<Option<leadership_tokio::Lease>>,
        signals: &mut Signals,
    ) -> Result<(), Vec<Member>> {
        // The command's status is tokio's and the watchdog's is ours to wait for: never reaped
        // as orphans.
        let spared = [child.pid(), self.watchdog.pid()];
        self.tree.reap(&spared);
        let left = self.members(child);
        if left.is_empty() {
            return Ok(());
        }
        for m in &left {
            warn!(pid = m.pid, name = %m.name, "left behind by the command: SIGTERM, SIGKILL after the grace");
        }
        self.tree.signal(&left, libc::SIGTERM);
        let mut termed = left;
        let grace = self.flag.lease().map_or(Duration::ZERO, |l| {
            l.deadline.saturating_duration_since(l.at_risk)
        });
        let kill_at = Instant::now() + grace;
        // Once killed: survivors are given until the deadline at the kill (a moment at least,
        // when that has passed already: the flag is not released meanwhile anyway).
        let mut killed_until: Option<Instant> = None;
        loop {
            let deadline = self.tell();
            let kill = kill_at.min(deadline);
            tokio::select! {
                () = tokio::time::sleep(DRAIN_POLL) => {}
                () = boot_clock::sleep_until(kill), if killed_until.is_none() => {
                    warn!("the command's leftovers outlived the grace (or the deadline came): SIGKILL");
                    self.tree.signal(&self.members(child), libc::SIGKILL);
                    killed_until = Some(deadline.max(Instant::now() + Duration::from_millis(500)));
                }
                _ = leases.changed() => {}
                signal = signals.recv() => {
                    self.tree.signal(&self.members(child), signal);
                }
            }
            self.tree.reap(&spared);
            let left = self.members(child);
            if left.is_empty() {
                return Ok(());
            }
            match killed_until {
                Some(until) => {
                    // A fork may have raced the kill.
                    self.tree.signal(&left, libc::SIGKILL);
                    if Instant::now() >= until {
                        for m in &left {
                            error!(pid = m.pid, name = %m.name, "survived SIGKILL until the lease's deadline (uninterruptible sleep?)");
                        }
                        return Err(left);
                    }
                }
                None => {
                    let new: Vec<Member> =
                        left.into_iter().filter(|m| !termed.contains(m)).collect();
                    self.tree.signal(&new, libc::SIGTERM);
                    termed.extend(new);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every wait on a lease's deadline counts `CLOCK_BOOTTIME`, the deadline's own clock
    /// (`boot_clock::sleep_until`, a timerfd whose clock its own test checks; the watchdog's
    /// timerfd), never tokio's timer (`CLOCK_MONOTONIC`), which a suspend would delay.
    #[test]
    fn every_wait_on_a_deadline_uses_the_deadlines_clock() {
        let monotonic = concat!("tokio::time::", "sleep_until");
        let boottime = concat!("boot_clock::", "sleep_until(");
        for (file, text, waits) in [
            // The kill at the deadline, the drain's kill, the hold.
            ("cli/src/run.rs", include_str!("run.rs"), 3),
            ("cli/src/watch.rs", include_str!("watch.rs"), 1),
            // The driver's timer; the guards' lost() and at_risk().
            (
                "driver-tokio/src/driver.rs",
                include_str!("../../driver-tokio/src/driver.rs"),
                1,
            ),
            (
                "driver-tokio/src/signals.rs",
                include_str!("../../driver-tokio/src/signals.rs"),
                1,
            ),
            (
                "driver-tokio/src/guard.rs",
                include_str!("../../driver-tokio/src/guard.rs"),
                0,
            ),
        ] {
            assert!(!text.contains(monotonic), "{file} waits on CLOCK_MONOTONIC");
            assert_eq!(text.matches(boottime).count(), waits, "{file}");
        }
        let watchdog = include_str!("watchdog.rs");
        assert!(watchdog.contains(concat!("timerfd_create(libc::", "CLOCK_BOOTTIME")));
    }
}
