//! The watchdog: a small process outside the tool's process group that kills the command's
//! group at the lease's deadline even when the tool itself is frozen (SIGSTOP, a stalled
//! runtime, a blocked output pipe).
//!
//! It is this same binary, started as `leadership __watchdog GROUP`, in a process group of its
//! own. The tool writes it each new deadline, one line per renewal on its standard input, in
//! nanoseconds of `CLOCK_BOOTTIME` (the clock the lease is judged by, the same in every
//! process); `disarm` when the command has ended. When a deadline passes without a later one,
//! or when its input closes without `disarm` (the tool died), it sends SIGKILL to the command's
//! group and exits.

use std::io::Write;
use std::process::{ChildStdin, Stdio};
use std::time::Duration;

use crate::exit::{Failure, SPAWN};

/// The tool's end: tells the watchdog each deadline.
pub struct Watchdog {
    input: Option<ChildStdin>,
    process: std::process::Child,
}

impl Watchdog {
    /// Starts a watchdog for the command's process group `group`.
    pub fn start(group: libc::pid_t) -> Result<Watchdog, Failure> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(SPAWN, format!("cannot find this program: {e}")))?;
        let mut process = std::process::Command::new(exe)
            .arg("__watchdog")
            .arg(group.to_string())
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

    /// The command has ended: the watchdog exits without killing anything.
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

fn kill_group(group: libc::pid_t) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// `leadership __watchdog GROUP`: the watchdog's own loop. Never returns.
pub fn serve(group: libc::pid_t) -> ! {
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
    let mut deadline: Option<u64> = None;
    let mut pending = Vec::<u8>::new();
    loop {
        let wait_ms = match deadline {
            None => -1,
            Some(at) => {
                let now = boottime_nanos();
                if now >= at {
                    kill_group(group);
                    let _ = writeln!(
                        std::io::stderr(),
                        "leadership: watchdog: the lease's deadline passed; killed the command's process group {group}"
                    );
                    std::process::exit(0);
                }
                // Rounded up, so the kill never comes early.
                let left = Duration::from_nanos(at - now);
                i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
            }
        };
        let mut fds = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        let ready = unsafe { libc::poll(&mut fds, 1, wait_ms) };
        if ready <= 0 {
            continue; // timed out (the deadline is checked above) or interrupted
        }
        let mut buf = [0u8; 512];
        // SAFETY: read(2) into a buffer we own.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // The tool is gone without disarming: nobody renews any more.
            kill_group(group);
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
                    }
                }
            }
        }
    }
}
