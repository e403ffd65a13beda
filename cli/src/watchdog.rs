//! The watchdog: a small process outside the tool's process group that kills the command's
//! whole tree at the lease's deadline even when the tool itself is frozen (SIGSTOP, a stalled
//! runtime, a blocked output pipe).
//!
//! It is this same binary, started as `leadership __watchdog GROUP [--cgroup DIR]`, in a
//! process group of its own and outside the command's cgroup. The tool writes it each new
//! deadline, one line per renewal on its standard input, in nanoseconds of `CLOCK_BOOTTIME`
//! (the clock the lease is judged by, the same in every process); `disarm` once the command's
//! tree is empty. When a deadline passes without a later one, or when its input closes without
//! `disarm` (the tool died), it kills the tree (see [`kill_tree`]) until it is empty; then it
//! waits for the tool to disarm it, or removes the term's cgroup and exits if the tool died.
//! It waits on a `CLOCK_BOOTTIME` timer, so a suspend does not delay the kill.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::time::Duration;

use crate::exit::{Failure, SPAWN};

/// The tool's end: tells the watchdog each deadline.
pub struct Watchdog {
    input: Option<ChildStdin>,
    process: std::process::Child,
}

impl Watchdog {
    /// Starts a watchdog for the command's process group `group` and cgroup `cgroup`.
    pub fn start(group: libc::pid_t, cgroup: Option<&Path>) -> Result<Watchdog, Failure> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(SPAWN, format!("cannot find this program: {e}")))?;
        let mut command = std::process::Command::new(exe);
        command.arg("__watchdog").arg(group.to_string());
        if let Some(cgroup) = cgroup {
            command.arg("--cgroup").arg(cgroup);
        }
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Outside the tool's process group: a SIGSTOP of that group does not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| Failure::new(SPAWN, format!("cannot start the watchdog: {e}")))?;
        Ok(Watchdog {
            input: process.stdin.take(),
            process,
        })
    }

    /// The watchdog's pid: never part of the tree, never reaped but by [`Watchdog::disarm`].
    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.process.id()).unwrap_or(0)
    }

    /// The command must be dead by `deadline` (a `std` instant) unless a later one follows.
    pub fn deadline(&mut self, deadline: std::time::Instant) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let at = boottime_nanos().saturating_add(u64::try_from(left.as_nanos()).unwrap_or(0));
        self.send(&format!("{at}\n"));
    }

    fn send(&mut self, line: &str) {
        // A watchdog that cannot be told is gone: the tool still kills at the deadline itself.
        if let Some(input) = &mut self.input {
            if input.write_all(line.as_bytes()).is_err() {
                self.input = None;
            }
        }
    }

    /// The command's tree is empty: the watchdog exits without killing anything.
    pub fn disarm(mut self) {
        self.send("disarm\n");
        self.input = None;
        let _ = self.process.wait();
    }
}

/// Nanoseconds of `CLOCK_BOOTTIME`: monotonic, counting suspends, the same in every process.
fn boottime_nanos() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t);
    }
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// Kills the command's tree: the cgroup through `cgroup.kill`, the process group, and every
/// descendant of the tool (`tool`) it can find, never itself; again until none is left (a fork
/// may race a round), for at most a few seconds (a process in uninterruptible sleep outlives
/// SIGKILL; nothing more can be done here).
fn kill_tree(tool: libc::pid_t, group: libc::pid_t, cgroup: Option<&Path>) {
    let me = [std::process::id() as libc::pid_t];
    let tree = |cgroup: Option<&Path>| {
        let mut all = cgroup.map_or_else(Vec::new, |c| crate::tree::cgroup_members(c, &me));
        for m in crate::tree::descendants(tool, group, &me) {
            if !all.contains(&m) {
                all.push(m);
            }
        }
        all
    };
    for _ in 0..500 {
        // Found before anything is killed: a killed parent's children reparent out of reach
        // (to init) unless the tool is their subreaper.
        let left = tree(cgroup);
        if let Some(cgroup) = cgroup {
            crate::tree::kill_cgroup(cgroup);
        }
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        if left.is_empty() {
            return;
        }
        crate::tree::signal_all(&left, libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `CLOCK_BOOTTIME` timer (a timerfd), to poll beside the input.
struct Timer(libc::c_int);

impl Timer {
    fn new() -> Timer {
        // SAFETY: timerfd_create with integer arguments; -1 (no timer) is handled by `wait_ms`.
        Timer(unsafe { libc::timerfd_create(libc::CLOCK_BOOTTIME, libc::TFD_CLOEXEC) })
    }

    /// Arms the timer at `at` (nanoseconds of `CLOCK_BOOTTIME`, absolute).
    fn set(&self, at: u64) {
        let value = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(at / 1_000_000_000).unwrap_or(libc::time_t::MAX),
                // Never 0.0, which would disarm the timer.
                tv_nsec: libc::c_long::try_from(at % 1_000_000_000)
                    .unwrap_or(0)
                    .max(1),
            },
        };
        // SAFETY: timerfd_settime on our fd with a value we own.
        unsafe {
            libc::timerfd_settime(
                self.0,
                libc::TFD_TIMER_ABSTIME,
                &value,
                std::ptr::null_mut(),
            );
        }
    }
}

/// `leadership __watchdog GROUP [--cgroup DIR]`: the watchdog's own loop. Never returns.
pub fn serve(group: libc::pid_t, cgroup: Option<PathBuf>) -> ! {
    // The tool: its descendants are the tree (the command, and orphans when it is a subreaper).
    // SAFETY: getppid takes no arguments.
    let tool = unsafe { libc::getppid() };
    // SAFETY: setting signal dispositions to SIG_IGN before any thread exists.
    unsafe {
        for signal in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let timer = Timer::new();
    let mut deadline: Option<u64> = None;
    let mut pending = Vec::<u8>::new();
    loop {
        let wait_ms = match deadline {
            None => -1,
            Some(at) => {
                let now = boottime_nanos();
                if now >= at {
                    kill_tree(tool, group, cgroup.as_deref());
                    let _ = writeln!(
                        std::io::stderr(),
                        "leadership: watchdog: the lease's deadline passed; killed the command's process tree (group {group}{})",
                        cgroup.as_ref().map_or(String::new(), |c| format!(", cgroup {}", c.display()))
                    );
                    // Stay until the tool disarms or dies: if it dies, the cgroup is this
                    // process's to remove.
                    deadline = None;
                    continue;
                }
                if timer.0 >= 0 {
                    -1 // the timer wakes the poll, on the deadline's own clock
                } else {
                    // No timerfd: poll's timeout (CLOCK_MONOTONIC), rounded up so the kill
                    // never comes early, and capped so a suspend delays it by a second at most.
                    let left = Duration::from_nanos(at - now).min(Duration::from_secs(1));
                    i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
                }
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: timer.0,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll(2) on pollfds we own (a negative fd is ignored by poll).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if ready <= 0 || fds[0].revents == 0 {
            // Timed out or the timer fired (the deadline is checked above), or interrupted.
            let mut expirations = 0u64;
            if fds[1].revents != 0 {
                // SAFETY: read(2) of the timer's 8-byte count into a u64 we own.
                unsafe {
                    libc::read(timer.0, (&mut expirations as *mut u64).cast(), 8);
                }
            }
            continue;
        }
        let mut buf = [0u8; 512];
        // SAFETY: read(2) into a buffer we own.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // The tool is gone without disarming: nobody renews any more. Its pid may name
            // another process soon: walk from it only while it is still this one's parent.
            // SAFETY: getppid takes no arguments.
            let parent = if unsafe { libc::getppid() } == tool {
                tool
            } else {
                -1
            };
            kill_tree(parent, group, cgroup.as_deref());
            if let Some(cgroup) = &cgroup {
                // Nobody else will remove it now.
                let _ = std::fs::remove_dir(cgroup);
            }
            std::process::exit(0);
        }
        pending.extend_from_slice(&buf[..n as usize]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            match line.trim() {
                "disarm" => std::process::exit(0),
                number => {
                    if let Ok(at) = number.parse() {
                        deadline = Some(at);
                        timer.set(at);
                    }
                }
            }
        }
    }
}
