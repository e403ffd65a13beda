//! The command's whole process tree: what `run` must see empty before a term can end.
//!
//! The command's process group is not enough: a command that exits 0 may leave a worker in it,
//! and `setsid` workers or double-forked daemons leave it altogether. So the tool contains the
//! tree with the best mechanism the host allows, found by trying at start:
//!
//! - a **cgroup** of its own (cgroup v2 with `cgroup.kill`, Linux ≥ 5.14): every descendant,
//!   whatever its session, stays in it; one write kills them all, also from the watchdog after
//!   the tool was SIGKILLed;
//! - the tool as a **child subreaper**: orphans reparent to the tool instead of init, so every
//!   descendant is found by walking `/proc` from the tool (and reaped by it);
//! - the **process group** alone, plus the descendants still linked to the tool by living
//!   parents.
//!
//! Processes are signalled one by one through pidfds, after checking that the pid still names
//! the process that was found (same start time), so a reused pid is never hit. The watchdog
//! and the command (whose exit statuses the tool waits for) are never reaped here, and the
//! watchdog is never signalled.

use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::args::ContainArg;

mod procs;

use procs::all_processes;
pub use procs::{cgroup_members, descendants, signal_all};

/// How the tree is contained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Containment {
    /// A cgroup v2 of its own.
    Cgroup,
    /// The tool is a child subreaper.
    Subreaper,
    /// The command's process group (and the descendants reachable through living parents).
    Group,
}

impl fmt::Display for Containment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Containment::Cgroup => "cgroup",
            Containment::Subreaper => "subreaper",
            Containment::Group => "group",
        })
    }
}

/// Why a containment cannot be had on this host (`--contain`).
#[derive(Debug)]
pub enum Unavailable {
    /// No cgroup v2 mount in `/proc/self/mountinfo`, or the tool's cgroup is not listed.
    NoCgroup2,
    /// The cgroup2 mount is read-only (containers often mount it so).
    ReadOnly(PathBuf),
    /// The kernel has no `cgroup.kill` (Linux < 5.14).
    NoKill(PathBuf),
    /// Creating the cgroup or moving a process into it failed (no write access to the parent,
    /// or a tree owned by systemd without delegation).
    Refused(PathBuf, std::io::Error),
    /// The tool runs in a systemd unit's cgroup that was not delegated to it (no
    /// `Delegate=yes`): systemd owns that tree, and a cgroup made in it would be fought over.
    NotDelegated(PathBuf),
    /// `PR_SET_CHILD_SUBREAPER` failed (not Linux, or refused).
    NoSubreaper(std::io::Error),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NoCgroup2 => {
                write!(f, "--contain cgroup: no cgroup2 mount holds this process")
            }
            Unavailable::ReadOnly(p) => {
                write!(
                    f,
                    "--contain cgroup: the cgroup2 mount {} is read-only",
                    p.display()
                )
            }
            Unavailable::NoKill(p) => write!(
                f,
                "--contain cgroup: {} has no cgroup.kill (Linux 5.14 or later is needed)",
                p.display()
            ),
            Unavailable::Refused(p, e) => {
                write!(
                    f,
                    "--contain cgroup: cannot use the cgroup {}: {e}",
                    p.display()
                )
            }
            Unavailable::NotDelegated(p) => write!(
                f,
                "--contain cgroup: {} belongs to a systemd unit without Delegate=yes",
                p.display()
            ),
            Unavailable::NoSubreaper(e) => {
                write!(f, "--contain subreaper: PR_SET_CHILD_SUBREAPER failed: {e}")
            }
        }
    }
}

/// The tree of the commands this tool runs.
pub struct Tree {
    kind: Containment,
    /// Where each term's cgroup is made (the tool's own cgroup), with the cgroup kind.
    parent: Option<PathBuf>,
    /// The current term's cgroup, between [`Tree::begin`] and [`Tree::end`].
    cgroup: Option<Cgroup>,
    /// Terms begun, for the cgroups' names.
    terms: u64,
    me: libc::pid_t,
}

/// A process of the tree, as found: its start time tells it from a later one with its pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub pid: libc::pid_t,
    pub name: String,
    /// Its start time, in clock ticks since boot (`/proc/PID/stat`'s 22nd field).
    pub(crate) start: u64,
}

/// A cgroup directory made by this tool for its commands.
struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, ready for the child between fork and exec (no allocation there).
    procs: CString,
}

impl Tree {
    /// Sets up the containment `choice` asks for; `auto` tries a cgroup, then the subreaper,
    /// then falls back on the group, and says why in the log (`-vv`).
    pub fn contain(choice: ContainArg) -> Result<Tree, Unavailable> {
        let me = std::process::id() as libc::pid_t;
        let tree = |kind, parent| Tree {
            kind,
            parent,
            cgroup: None,
            terms: 0,
            me,
        };
        match choice {
            ContainArg::Cgroup => Ok(tree(Containment::Cgroup, Some(Cgroup::parent()?))),
            ContainArg::Subreaper => {
                subreaper()?;
                Ok(tree(Containment::Subreaper, None))
            }
            ContainArg::Group => Ok(tree(Containment::Group, None)),
            ContainArg::Auto => match Cgroup::parent() {
                Ok(parent) => Ok(tree(Containment::Cgroup, Some(parent))),
                Err(why) => {
                    tracing::debug!(%why, "no cgroup of its own; trying the subreaper");
                    match subreaper() {
                        Ok(()) => Ok(tree(Containment::Subreaper, None)),
                        Err(why) => {
                            tracing::debug!(%why, "no subreaper; the process group alone");
                            Ok(tree(Containment::Group, None))
                        }
                    }
                }
            },
        }
    }

    pub fn kind(&self) -> Containment {
        self.kind
    }

    /// Where the terms' cgroups are made, with the cgroup kind.
    pub fn parent(&self) -> Option<&Path> {
        self.parent.as_deref()
    }

    /// A new term: with the cgroup kind, makes its cgroup (`leadership-PID-RANDOM-N`), so that each
    /// term's tree is one directory, removed by [`Tree::end`] (or by the watchdog).
    pub fn begin(&mut self) -> Result<(), Unavailable> {
        if let Some(parent) = &self.parent {
            self.terms += 1;
            let dir = parent.join(format!("leadership-{}-{}", incarnation(), self.terms));
            self.cgroup = Some(Cgroup::make(dir)?);
        }
        Ok(())
    }

    /// The term's tree is empty: removes its cgroup.
    pub fn end(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            if let Err(e) = std::fs::remove_dir(&cgroup.dir) {
                tracing::warn!(error = %e, cgroup = %cgroup.dir.display(), "cannot remove the term's cgroup");
            }
        }
    }

    /// The current term's cgroup directory, if the tree has one.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(|c| c.dir.as_path())
    }

    /// The `cgroup.procs` a new command must write itself into before exec.
    pub fn procs(&self) -> Option<CString> {
        self.cgroup.as_ref().map(|c| c.procs.clone())
    }

    /// The living processes of the tree (zombies count as gone), never the ones in `spared`
    /// (the watchdog): the cgroup's, or the process group's and every descendant of the tool.
    pub fn members(&self, group: libc::pid_t, spared: &[libc::pid_t]) -> Vec<Member> {
        match &self.cgroup {
            Some(cgroup) => cgroup_members(&cgroup.dir, spared),
            None => descendants(self.me, group, spared),
        }
    }

    /// Sends `signal` to every member found (SIGKILL to a cgroup: through `cgroup.kill`, which
    /// also catches a process forked meanwhile).
    pub fn signal(&self, members: &[Member], signal: libc::c_int) {
        if let (Some(cgroup), libc::SIGKILL) = (&self.cgroup, signal) {
            kill_cgroup(&cgroup.dir);
        }
        signal_all(members, signal);
    }

    /// Reaps the orphans that reparented to the tool and have exited, except `spared` (the
    /// command and the watchdog: their statuses are waited for elsewhere).
    pub fn reap(&self, spared: &[libc::pid_t]) {
        if self.kind != Containment::Subreaper {
            return; // without the subreaper, orphans go to init
        }
        for (pid, stat) in all_processes() {
            if stat.ppid == self.me && stat.state == 'Z' && !spared.contains(&pid) {
                // SAFETY: waitpid on one pid that is our exited child and nobody else's to wait
                // for; WNOHANG never blocks.
                unsafe {
                    libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
                }
            }
        }
    }
}

impl Drop for Tree {
    /// Removes the cgroup (only possible once empty; a leftover is logged by `run`).
    fn drop(&mut self) {
        if let Some(cgroup) = &self.cgroup {
            let _ = std::fs::remove_dir(&cgroup.dir);
        }
    }
}

impl Cgroup {
    /// The tool's own cgroup, once proven usable: a cgroup made in it takes a forked probe
    /// (so a command can be moved there too) and has `cgroup.kill`. Empty directories left by
    /// tools that died are removed on the way.
    fn parent() -> Result<PathBuf, Unavailable> {
        let (mount, read_only) = cgroup2_mount().ok_or(Unavailable::NoCgroup2)?;
        if read_only {
            return Err(Unavailable::ReadOnly(mount));
        }
        let own = own_cgroup().ok_or(Unavailable::NoCgroup2)?;
        let parent = mount.join(own.trim_start_matches('/'));
        if !delegated(&parent) {
            return Err(Unavailable::NotDelegated(parent));
        }
        remove_stale(&parent);
        let probe_dir = parent.join(format!("leadership-{}-0", incarnation()));
        let cgroup = Cgroup::make(probe_dir.clone())?;
        let proven = probe(&cgroup.procs).map_err(|e| Unavailable::Refused(probe_dir.clone(), e));
        // The probe has exited and been reaped: the directory is empty.
        let _ = std::fs::remove_dir(&probe_dir);
        proven?;
        Ok(parent)
    }

    /// Makes the cgroup `dir`, which must offer `cgroup.kill`.
    fn make(dir: PathBuf) -> Result<Cgroup, Unavailable> {
        // A directory left by an earlier process with this pid is empty or in use; rmdir
        // succeeds only in the first case.
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).map_err(|e| Unavailable::Refused(dir.clone(), e))?;
        let cleanup = |e| {
            let _ = std::fs::remove_dir(&dir);
            e
        };
        if !dir.join("cgroup.kill").exists() {
            return Err(cleanup(Unavailable::NoKill(dir.clone())));
        }
        let procs = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .map_err(|e| cleanup(Unavailable::Refused(dir.clone(), e.into())))?;
        Ok(Cgroup { dir, procs })
    }
}

/// Whether the tool may make cgroups under `dir`: a systemd unit's cgroup (`*.service`,
/// `*.scope`) only if systemd delegated it (it marks those with a `trusted.delegate` or
/// `user.delegate` attribute); any other cgroup is judged by the kernel (the probe).
fn delegated(dir: &Path) -> bool {
    let unit = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".service") || n.ends_with(".scope"));
    if !unit {
        return true;
    }
    let Ok(path) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    [c"trusted.delegate", c"user.delegate"].iter().any(|name| {
        // SAFETY: getxattr with NUL-terminated strings and no buffer (size 0 asks the size).
        unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
    })
}

/// This tool's part of its cgroups' names: its pid and 32 random bits drawn once, so that two
/// tools with one pid (each pid 1 of its own PID namespace, sharing the host's cgroup tree)
/// never make the same cgroup.
fn incarnation() -> &'static str {
    static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ME.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // `RandomState` is keyed from the operating system's randomness once per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        format!("{}-{:08x}", std::process::id(), h.finish() as u32)
    })
}

/// Removes the empty `leadership-PID-…` cgroups of tools no longer running (killed with their
/// watchdog); a non-empty one is left alone (rmdir refuses it).
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("leadership-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`. Async-signal-safe
/// (open, write, close; no allocation): for a child between fork and exec.
pub fn enter(procs: &CString) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // "0" moves the writer itself.
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}

/// Forks a child that moves itself into the cgroup and exits: the rules (write access to the
/// common ancestor, delegation, the no-internal-process rule) are judged by the kernel, not
/// guessed.
fn probe(procs: &CString) -> std::io::Result<()> {
    // SAFETY: the child only calls async-signal-safe functions (open, write, close, _exit);
    // the parent waits for that one pid.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            let code = match enter(procs) {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(1).clamp(1, 255),
            };
            libc::_exit(code);
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        }
    }
}

fn subreaper() -> Result<(), Unavailable> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
            return Ok(());
        }
        Err(Unavailable::NoSubreaper(std::io::Error::last_os_error()))
    }
    #[cfg(not(target_os = "linux"))]
    Err(Unavailable::NoSubreaper(
        std::io::ErrorKind::Unsupported.into(),
    ))
}

/// The cgroup2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` in systemd's hybrid
/// layout) and whether it is read-only; only a mount of the hierarchy's root is used.
fn cgroup2_mount() -> Option<(PathBuf, bool)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        let (root, point, options) = (fields.get(3)?, fields.get(4)?, fields.get(5)?);
        let read_only = options.split(',').any(|o| o == "ro")
            || right
                .nth(1)
                .is_some_and(|s| s.split(',').any(|o| o == "ro"));
        (*root == "/").then(|| (PathBuf::from(unescape(point)), read_only))
    })
}

/// mountinfo escapes blanks and backslashes as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            out.push(u8::from_str_radix(&field[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The tool's cgroup v2 path (the `0::` line of `/proc/self/cgroup`).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Kills a cgroup's processes at once (also from the watchdog).
pub fn kill_cgroup(dir: &Path) {
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
    {
        let _ = file.write_all(b"1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_systemd_unit_cgroup_is_used_only_when_delegated() {
        let base = std::env::temp_dir().join(format!("leadership-tree-{}", std::process::id()));
        let unit = base.join("job.service");
        std::fs::create_dir_all(&unit).unwrap();
        assert!(
            !delegated(&unit),
            "a unit's cgroup without the delegate mark"
        );
        assert!(delegated(&base), "not a unit's: the kernel judges");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape("/sys/fs/cgroup/a\\040b"), "/sys/fs/cgroup/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
