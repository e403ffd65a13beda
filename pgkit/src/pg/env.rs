//! Where the server binaries are and how they are run (as the `postgres` user when we are
//! root), and `psql`.

use std::ffi::{CString, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{PgError, HOST, PG_USER};
use crate::command::sanitized;

/// Where the binaries are and whom to run the server as; found once per process.
pub(super) struct Env {
    pub(super) bin: PathBuf,
    /// `Some((uid, gid))` of `postgres` when we are root.
    pub(super) run_as: Option<(u32, u32)>,
}

pub(super) fn env() -> Result<&'static Env, PgError> {
    static ENV: OnceLock<Env> = OnceLock::new();
    if let Some(e) = ENV.get() {
        return Ok(e);
    }
    let run_as = match unsafe { libc::geteuid() } {
        0 => Some(lookup_user(PG_USER).ok_or(PgError::NoUnprivilegedUser {
            user: PG_USER.into(),
        })?),
        _ => None,
    };
    let e = Env {
        bin: find_bin_dir()?,
        run_as,
    };
    Ok(ENV.get_or_init(|| e))
}

pub(super) fn find_bin_dir() -> Result<PathBuf, PgError> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|t| d.join(t).is_file())
    };
    if let Some(dir) = std::env::var_os("PGBIN").map(PathBuf::from) {
        let searched = format!("PGBIN={}", dir.display());
        return has_all(&dir)
            .then_some(dir)
            .ok_or(PgError::NotInstalled { searched });
    }
    // Debian: /usr/lib/postgresql/<major>/bin; pick the highest version.
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let v = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut candidates = versions
        .into_iter()
        .rev()
        .map(|(_, d)| d)
        .chain(std::env::split_paths(&path));
    candidates
        .find(|d| has_all(d))
        .ok_or_else(|| PgError::NotInstalled {
            searched: "$PGBIN (unset), /usr/lib/postgresql/*/bin, $PATH".into(),
        })
}

pub(super) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let (p, len) = (buf.as_mut_ptr(), buf.len());
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, p, len, &mut found) };
    (rc == 0 && !found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

impl Env {
    /// argv for a server-side tool, prefixed with `runuser -u postgres --` when we are root.
    pub(super) fn server_argv(&self, tool: &str) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if self.run_as.is_some() {
            let runuser = ["/usr/sbin/runuser", "/sbin/runuser"]
                .into_iter()
                .find(|p| Path::new(p).exists());
            argv.extend([runuser.unwrap_or("runuser"), "-u", PG_USER, "--"].map(OsString::from));
        }
        argv.push(self.bin.join(tool).into());
        argv
    }

    pub(super) fn server_cmd(&self, tool: &str) -> Command {
        let argv = self.server_argv(tool);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        sanitized(cmd)
    }
}

/// A server-side tool (`pg_basebackup`, `pg_ctl`...) from the kit's PostgreSQL, run as the
/// server's OS user when we are root, without the caller's PG* settings, in cwd `/`.
pub(crate) fn server_command(tool: &str) -> Result<Command, PgError> {
    Ok(env()?.server_cmd(tool))
}

/// The path of a PostgreSQL program (`psql`, `pgbench`...) of the kit's installation.
pub fn tool_path(tool: &str) -> Result<PathBuf, PgError> {
    Ok(env()?.bin.join(tool))
}

/// `(uid, gid)` of the OS user servers (and poolers) run as when we are root; `None` when we
/// are not root and everything runs as ourselves.
pub(crate) fn server_user() -> Result<Option<(u32, u32)>, PgError> {
    Ok(env()?.run_as)
}

pub(super) fn psql_command_at(env: &Env, port: u16, user: &str) -> Command {
    let args = format!("-X -A -t -v ON_ERROR_STOP=1 -h {HOST} -p {port} -d postgres -U");
    let mut cmd = sanitized(Command::new(env.bin.join("psql")));
    cmd.args(args.split(' '))
        .arg(user)
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

pub(super) fn run_psql(mut cmd: Command, sql: &str) -> Result<String, PgError> {
    let out = cmd.arg("-c").arg(sql).output()?;
    if !out.status.success() {
        return Err(PgError::Psql {
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`PgServer::psql`] for a server known only by its port on 127.0.0.1 (say, a primary that a
/// standby follows), as the kit's superuser.
pub(crate) fn psql_at(port: u16, sql: &str) -> Result<String, PgError> {
    run_psql(psql_command_at(env()?, port, PG_USER), sql)
}
