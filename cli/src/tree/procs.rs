//! Finding and signalling the processes of a tree through `/proc`: a cgroup's members, the
//! descendants of a process and the members of its group, each checked by its start time
//! before it is signalled through a pidfd, so a reused pid is never hit.

use std::path::Path;

use super::Member;

/// The living processes of a cgroup.
pub fn cgroup_members(dir: &Path, spared: &[libc::pid_t]) -> Vec<Member> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
        .filter(|pid| !spared.contains(pid))
        .filter_map(|pid| {
            let stat = stat(pid)?;
            stat.alive().then(|| stat.member(pid))
        })
        .collect()
}

/// The living processes of process group `group` and every living descendant of `root`, not
/// through `spared`.
pub fn descendants(root: libc::pid_t, group: libc::pid_t, spared: &[libc::pid_t]) -> Vec<Member> {
    let all = all_processes();
    let mut inside = vec![root];
    let mut found = Vec::new();
    // Parents are found before children only by chance of pid order: repeat until stable.
    loop {
        let before = found.len();
        for (pid, stat) in &all {
            if spared.contains(pid) || *pid == root || found.iter().any(|m: &Member| m.pid == *pid)
            {
                continue;
            }
            if inside.contains(&stat.ppid) || stat.pgrp == group {
                inside.push(*pid);
                if stat.alive() {
                    found.push(stat.member(*pid));
                }
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// What the tree needs from `/proc/PID/stat`.
pub(super) struct Stat {
    pub(super) name: String,
    pub(super) state: char,
    pub(super) ppid: libc::pid_t,
    pub(super) pgrp: libc::pid_t,
    pub(super) start: u64,
}

impl Stat {
    fn alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    fn member(&self, pid: libc::pid_t) -> Member {
        Member {
            pid,
            name: self.name.clone(),
            start: self.start,
        }
    }
}

pub(super) fn stat(pid: libc::pid_t) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is between the first '(' and the last ')' (it may hold either).
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let name = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(Stat {
        name,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

pub(super) fn all_processes() -> Vec<(libc::pid_t, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// Signals each member (see [`send`]).
pub fn signal_all(members: &[Member], signal: libc::c_int) {
    for member in members {
        send(member, signal);
    }
}

/// Signals one member through a pidfd, if its pid still names the process found.
fn send(member: &Member, signal: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pidfd_open and pidfd_send_signal with integer arguments; the fd is ours and
        // closed here.
        unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, member.pid, 0) as libc::c_int;
            if fd < 0 {
                return; // gone (or no pidfds: a kernel older than 5.3)
            }
            // The pid may have been reused between the scan and the open: the pidfd now pins
            // the process, so one more read tells whether it is the one found.
            if stat(member.pid).is_some_and(|s| s.start == member.start) {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd,
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
            libc::close(fd);
        }
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: kill(2) with integer arguments (no pidfds here: a reused pid is a risk).
    unsafe {
        libc::kill(member.pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_stat_is_read_with_its_name_parent_and_start() {
        let me = std::process::id() as libc::pid_t;
        let s = stat(me).unwrap();
        assert!(s.alive(), "{}", s.state);
        // SAFETY: getppid/getpgrp take no arguments.
        assert_eq!(s.ppid, unsafe { libc::getppid() });
        assert_eq!(s.pgrp, unsafe { libc::getpgrp() });
        assert!(s.start > 0);
    }
}
