//! The supervised command: in its own process group, so the whole group can be signalled, and
//! on Linux with a parent-death signal, so it cannot outlive this tool as an unfenced leader.

use std::process::ExitStatus;

use crate::exit::{Failure, SPAWN};

/// A running command.
pub struct Child {
    child: tokio::process::Child,
    group: libc::pid_t,
}

/// Starts `argv` with `env` added to the environment; with `cgroup` (a `cgroup.procs`), moved
/// into that cgroup before exec, so that everything it forks is born inside.
///
/// On Linux the child gets `PR_SET_PDEATHSIG = SIGKILL`: if this tool dies, even by SIGKILL,
/// the kernel kills the command too. The signal follows the *thread* that forked, so the tool
/// forks from its main thread, which lives as long as the process (the runtime is
/// single-threaded). Elsewhere there is no such signal: a killed tool leaves the command
/// running, fenced only by its token (documented in the README).
pub fn spawn(
    argv: &[String],
    env: &[(&str, String)],
    cgroup: Option<std::ffi::CString>,
) -> Result<Child, Failure> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Failure::new(SPAWN, "no command given"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls are made (prctl, getppid,
        // open, write, close), and nothing is allocated.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The tool may have died before prctl took effect: then do not start at all.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the supervising process is gone"));
                }
                if let Some(procs) = &cgroup {
                    crate::tree::enter(procs)?;
                }
                Ok(())
            });
        }
    }
    let child = command
        .spawn()
        .map_err(|e| Failure::new(SPAWN, format!("cannot start {program:?}: {e}")))?;
    let group = child
        .id()
        .and_then(|id| libc::pid_t::try_from(id).ok())
        .ok_or_else(|| Failure::new(SPAWN, format!("{program:?} exited at once")))?;
    Ok(Child { child, group })
}

impl Child {
    /// The command's process group (its pid).
    pub fn group(&self) -> libc::pid_t {
        self.group
    }

    /// Sends `signal` to the command's whole process group.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-self.group, signal);
        }
    }

    /// The command's pid (its status is waited for here, never reaped elsewhere).
    pub fn pid(&self) -> libc::pid_t {
        self.group
    }

    /// Waits for the command to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }
}

/// The shell's convention: the exit code, or 128 + the signal that ended the command.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(crate::exit::FAILURE)
}
