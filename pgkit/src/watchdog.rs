//! Cleanup that happens even when the test process dies hard, shared by every component of the
//! kit that leaves something behind (a server, a pooler, a temp dir, a network namespace).
//!
//! A `Watchdog` is a tiny `/bin/sh` child blocked reading its stdin, a pipe whose only write
//! end is in this process (std opens it close-on-exec, so no other child inherits it). The kernel
//! closes that end on *any* exit of this process (normal exit without destructors, as for a
//! `static`; panic; abort; SIGKILL from a nextest timeout), the watchdog reads EOF, runs its
//! cleanup and removes its directory. It has its own process group and ignores HUP/INT/QUIT/TERM,
//! so signals sent to the test's process group (Ctrl-C, nextest killing a timed-out test) do not
//! take it down first. Unlike polling `kill -0 $PPID`, there is no PID-reuse race and no polling
//! delay. Dropping it (or `Watchdog::fire`) closes the pipe and waits, so the crash path is the
//! path every test exercises.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::command::sanitized;

/// A shell child that runs a cleanup when this process closes its stdin or dies; see the module
/// docs.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Option<Child>,
}

impl Watchdog {
    /// Spawns a watchdog that, on EOF, runs the shell snippet `cleanup` (with `$dir` set to
    /// `dir`, or empty, and `"$@"` set to `args`), then `rm -rf` of `dir`. If the spawn fails,
    /// `dir` is removed here.
    pub(crate) fn spawn(
        dir: Option<&Path>,
        cleanup: &str,
        args: &[OsString],
    ) -> io::Result<Watchdog> {
        let script = format!(
            "trap '' HUP INT QUIT TERM PIPE\n\
             read -r _ || true  # returns at EOF: the owning process closed the pipe or died\n\
             dir=$1; shift\n\
             {cleanup}\n\
             [ -n \"$dir\" ] && rm -rf -- \"$dir\"\n\
             exit 0"
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script, "leadership-watchdog"])
            .arg(dir.map_or_else(OsString::new, |d| d.as_os_str().to_owned()))
            .args(args);
        let spawned = sanitized(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => Ok(Watchdog { child: Some(child) }),
            Err(e) => {
                if let Some(dir) = dir {
                    let _ = fs::remove_dir_all(dir);
                }
                Err(io::Error::other(format!("spawning watchdog /bin/sh: {e}")))
            }
        }
    }

    /// Runs the cleanup now and waits for it to finish. Idempotent.
    pub(crate) fn fire(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.fire();
    }
}
