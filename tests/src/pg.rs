//! Throwaway PostgreSQL servers for integration tests.
//!
//! [`PgServer::start`] creates a private cluster in a fresh temp dir (trust auth, UTF8, C locale,
//! `fsync=off`, `max_connections=300`, `pg_stat_statements` preloaded and created in db
//! `postgres`), listening on 127.0.0.1 on a free port, its unix socket inside the temp dir.
//! Dropping it stops the server and deletes the dir. [`shared`] is one lazily started server per
//! test process.
//!
//! **Cleanup even when the test process dies hard.** Every server (and the template data dir)
//! gets a *watchdog*: a tiny `/bin/sh` child blocked reading its stdin, a pipe whose only write
//! end is in this process (std opens it close-on-exec, so no other child inherits it). The kernel
//! closes that end on *any* exit of this process (normal exit without destructors, as for the
//! `static` shared server; panic; abort; SIGKILL from a nextest timeout), the watchdog reads EOF
//! and runs `pg_ctl stop -m immediate` and `rm -rf`. It has its own process group and ignores
//! HUP/INT/QUIT/TERM, so signals sent to the test's process group (Ctrl-C, nextest killing a
//! timed-out test) do not take it down first. Unlike polling `kill -0 $PPID`, there is no
//! PID-reuse race and no polling delay. `Drop` just closes the pipe and waits for the watchdog,
//! so the crash path is the path every test exercises.
//!
//! **Root.** PostgreSQL refuses to run as root. When `geteuid() == 0`, `initdb` and `pg_ctl` (and
//! so `postgres`) run via `runuser -u postgres --` (util-linux, always on Debian; as root it
//! needs no password or tty), and the temp dir is chowned to that user, mode 700; its parent is
//! `/dev/shm` or `/tmp`, never `$TMPDIR` (which may sit under `/root`, untraversable for
//! `postgres`). `psql` is a plain client and runs as the current user.
//!
//! **Speed.** Clusters live on `/dev/shm` when it is a tmpfs with at least 1 GiB free (ext4
//! `/tmp` is 2-4x slower here). `initdb` runs once per process into a template dir, and each
//! server gets a `cp -a` of it (set `LEADERSHIP_PG_NO_TEMPLATE=1` to initdb every server instead).
//!
//! Binaries come from `$PGBIN`, else the newest `/usr/lib/postgresql/*/bin`, else `$PATH`.

use std::ffi::{CString, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::{fs::PermissionsExt, process::CommandExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{atomic::AtomicU64, atomic::Ordering, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOST: &str = "127.0.0.1";
/// Database superuser created by initdb, and the OS user servers run as when we are root.
const PG_USER: &str = "postgres";
const PORT_ATTEMPTS: usize = 10;
const CONFIG: &str =
    "\n# leadership test kit: throwaway test server\nfsync = off\nmax_connections = 300\n\
    shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n";

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL binaries (initdb, pg_ctl, postgres, psql) not found (searched: {searched}). \
         Install them with `apt-get install postgresql` (Debian/Ubuntu), or set PGBIN to the \
         directory holding them, e.g. PGBIN=/usr/lib/postgresql/15/bin"
    )]
    NotInstalled { searched: String },
    #[error(
        "running as root, but PostgreSQL refuses to run as root and the OS user `{user}` to run \
         it as does not exist; `apt-get install postgresql` creates it (or run as non-root)"
    )]
    NoUnprivilegedUser { user: String },
    #[error("initdb failed:\n{log}")]
    Initdb { log: String },
    /// pg_ctl start failed or the port never answered; `log` has pg_ctl's output and the tail
    /// of server.log.
    #[error("PostgreSQL server failed to start:\n{log}")]
    Start { log: String },
    #[error("psql failed: {stderr}")]
    Psql { stderr: String },
    #[error("test PostgreSQL: {0}")]
    Io(#[from] io::Error),
}

fn io_err(msg: String) -> PgError {
    PgError::Io(io::Error::other(msg))
}

/// Signals [`PgServer::signal_backend`] can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Signal {
    Stop = libc::SIGSTOP,
    Cont = libc::SIGCONT,
    Term = libc::SIGTERM,
    Int = libc::SIGINT,
    Kill = libc::SIGKILL,
}

/// Where the binaries are and whom to run the server as; found once per process.
struct Env {
    bin: PathBuf,
    /// `Some((uid, gid))` of `postgres` when we are root.
    run_as: Option<(u32, u32)>,
}

fn env() -> Result<&'static Env, PgError> {
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

fn find_bin_dir() -> Result<PathBuf, PgError> {
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

fn lookup_user(name: &str) -> Option<(u32, u32)> {
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
    fn server_argv(&self, tool: &str) -> Vec<OsString> {
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

    fn server_cmd(&self, tool: &str) -> Command {
        let argv = self.server_argv(tool);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        sanitized(cmd)
    }
}

/// Children must not pick up the developer's PG* settings (PGDATA, PGOPTIONS, PGSSLMODE...);
/// cwd `/` because `postgres` may not be allowed into the caller's cwd (e.g. under /root).
fn sanitized(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir("/").stdin(Stdio::null());
    cmd
}

/// stdout + stderr of a finished command, for error messages.
fn output_text(out: &Output) -> String {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.trim_end().to_string()
}

fn make_temp_dir(env: &Env, kind: &str) -> Result<PathBuf, PgError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = match (roomy_tmpfs("/dev/shm"), env.run_as) {
        (true, _) => PathBuf::from("/dev/shm"),
        (false, Some(_)) => PathBuf::from("/tmp"),
        (false, None) => std::env::temp_dir(),
    };
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "leadership-pg-{kind}{}-{n}-{nanos:x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("creating {}: {e}", dir.display()))),
            Ok(()) => {}
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = env.run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        return Ok(dir);
    }
}

/// Whether `dir` is a writable tmpfs with at least 1 GiB free (Docker's default /dev/shm is 64 MiB).
fn roomy_tmpfs(dir: &str) -> bool {
    let c = CString::new(dir).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe {
        libc::statfs(c.as_ptr(), &mut st) == 0
            && libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0
    };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
    let tmpfs = st.f_type as i64 == libc::TMPFS_MAGIC as i64;
    ok && tmpfs && (st.f_bavail as u64).saturating_mul(st.f_bsize as u64) >= 1 << 30
}

/// Spawns the watchdog described in the module docs for `dir`; with `stop_server` it first
/// stops the server in `dir/data`. On failure `dir` is removed here.
fn spawn_watchdog(env: &Env, dir: &Path, stop_server: bool) -> Result<Child, PgError> {
    const SCRIPT: &str = r#"trap '' HUP INT QUIT TERM PIPE
read -r _ || true  # returns at EOF: the owning process closed the pipe or died
dir=$1; shift
[ $# -gt 0 ] && "$@" -D "$dir/data" stop -m immediate -w -t 30
rm -rf -- "$dir""#;
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", SCRIPT, "leadership-pg-watchdog"]).arg(dir);
    if stop_server {
        cmd.args(env.server_argv("pg_ctl"));
    }
    let spawned = sanitized(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    spawned.map_err(|e| {
        let _ = fs::remove_dir_all(dir);
        io_err(format!("spawning watchdog /bin/sh: {e}"))
    })
}

fn initdb(env: &Env, data: &Path) -> Result<(), PgError> {
    let args = format!("--no-sync -U {PG_USER} --auth=trust -E UTF8 --locale=C -D");
    let out = env
        .server_cmd("initdb")
        .args(args.split(' '))
        .arg(data)
        .output()?;
    if !out.status.success() {
        return Err(PgError::Initdb {
            log: output_text(&out),
        });
    }
    OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?
        .write_all(CONFIG.as_bytes())?;
    Ok(())
}

/// The per-process template data dir: initdb'd once, removed by its watchdog at process exit.
fn template(env: &Env) -> Result<&'static Path, PgError> {
    static TEMPLATE: OnceLock<Result<(PathBuf, Child), String>> = OnceLock::new();
    let t = TEMPLATE.get_or_init(|| {
        let dir = make_temp_dir(env, "template-").map_err(|e| e.to_string())?;
        let watchdog = spawn_watchdog(env, &dir, false).map_err(|e| e.to_string())?;
        initdb(env, &dir.join("data")).map_err(|e| e.to_string())?;
        Ok((dir.join("data"), watchdog))
    });
    t.as_ref()
        .map(|(data, _)| data.as_path())
        .map_err(|e| PgError::Initdb {
            log: format!("(template) {e}"),
        })
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((HOST, 0))?.local_addr()?.port())
}

fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The last `n` lines of `path` after byte offset `from`.
fn log_tail(path: &Path, from: u64, n: usize) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f
            .seek(SeekFrom::Start(from))
            .and_then(|_| f.read_to_end(&mut bytes));
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A throwaway PostgreSQL server; see the module docs.
pub struct PgServer {
    /// The temp dir: socket dir and parent of `data`; removed on drop.
    root: PathBuf,
    data: PathBuf,
    port: u16,
    running: bool,
    watchdog: Option<Child>,
    env: &'static Env,
}

impl PgServer {
    /// Starts a fresh cluster on a free port, with `pg_stat_statements` created in db `postgres`.
    pub fn start() -> Result<PgServer, PgError> {
        let env = env()?;
        let root = make_temp_dir(env, "")?;
        let watchdog = Some(spawn_watchdog(env, &root, true)?);
        let data = root.join("data");
        // From here on, Drop cleans up whatever happens.
        let mut s = PgServer {
            root,
            data,
            port: 0,
            running: false,
            watchdog,
            env,
        };
        if std::env::var_os("LEADERSHIP_PG_NO_TEMPLATE").is_some() {
            initdb(env, &s.data)?;
        } else {
            let out = Command::new("cp")
                .arg("-a")
                .arg(template(env)?)
                .arg(&s.data)
                .output()?;
            if !out.status.success() {
                return Err(io_err(format!(
                    "cp -a of the template failed: {}",
                    output_text(&out)
                )));
            }
        }
        s.start_server(true)?;
        s.psql("create extension if not exists pg_stat_statements")?;
        Ok(s)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        HOST
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://{PG_USER}@{HOST}:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub fn conn_string(&self) -> String {
        format!(
            "host={HOST} port={} user={PG_USER} dbname=postgres",
            self.port
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// `psql -X -A -t -v ON_ERROR_STOP=1` connected to this server; add `-c SQL` (or pipe
    /// stdin) and spawn it, e.g. for a long-running session in a separate process.
    pub fn psql_command(&self) -> Command {
        let args = format!(
            "-X -A -t -v ON_ERROR_STOP=1 -h {HOST} -p {} -U {PG_USER} -d postgres",
            self.port
        );
        let mut cmd = sanitized(Command::new(self.env.bin.join("psql")));
        cmd.args(args.split(' ')).env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Runs `sql` with `psql -c` and returns its stdout verbatim (`-A -t`: unaligned, tuples
    /// only, so `select 1` gives `"1\n"`).
    pub fn psql(&self, sql: &str) -> Result<String, PgError> {
        let out = self.psql_command().arg("-c").arg(sql).output()?;
        if !out.status.success() {
            return Err(PgError::Psql {
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().into(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `pg_ctl stop -m fast`, falling back to `-m immediate`, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        if self.running && !self.pg_ctl_stop("fast") && !self.pg_ctl_stop("immediate") {
            self.kill_postmaster();
        }
        self.running = false;
    }

    /// Stops and starts the server again on the same port and data dir. If another process
    /// took the port meanwhile, retries for a few seconds, then fails.
    pub fn restart(&mut self) -> Result<(), PgError> {
        self.stop();
        self.start_server(false)
    }

    /// The postmaster's pid, from the first line of `postmaster.pid` (None when stopped).
    pub fn server_pid(&self) -> Option<u32> {
        let s = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        s.lines().next()?.trim().parse().ok()
    }

    /// Sends `sig` to a backend of this server (a pid from `pg_backend_pid()` or
    /// `pg_stat_activity`). Refuses pids that are not children of this server's postmaster, so a
    /// stale pid never hits an unrelated process (we may be root).
    pub fn signal_backend(&self, backend_pid: i32, sig: Signal) -> Result<(), PgError> {
        let postmaster = self
            .server_pid()
            .ok_or_else(|| io_err("server is not running".into()))?;
        let stat = fs::read_to_string(format!("/proc/{backend_pid}/stat"))
            .map_err(|e| io_err(format!("no process {backend_pid}: {e}")))?;
        // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if backend_pid <= 0 || ppid != Some(postmaster) {
            return Err(io_err(format!(
                "pid {backend_pid} is not a backend of postmaster {postmaster}"
            )));
        }
        if unsafe { libc::kill(backend_pid, sig as i32) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io_err(format!("kill({backend_pid}, {sig:?}): {e}")));
        }
        Ok(())
    }

    /// `pg_ctl start` on `self.port` (a new free one first if `new_port`), retrying when another
    /// process won the race for the port: one may take it between our probe and the bind.
    fn start_server(&mut self, new_port: bool) -> Result<(), PgError> {
        let mut last = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            if new_port {
                self.port = free_port()?;
            } else if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            match self.pg_ctl_start() {
                Err(PgError::Start { log }) if log.contains("could not bind") => last = log,
                other => return other,
            }
        }
        let log = format!("port still in use after {PORT_ATTEMPTS} attempts; last:\n{last}");
        Err(PgError::Start { log })
    }

    fn pg_ctl_start(&mut self) -> Result<(), PgError> {
        let log = self.data.join("server.log");
        let from = fs::metadata(&log).map_or(0, |m| m.len());
        let opts = format!("-p {} -k '{}' -h {HOST}", self.port, self.root.display());
        let mut cmd = self.env.server_cmd("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(opts);
        let out = cmd.args(["-w", "-t", "60", "start"]).output()?;
        // Set even on failure: a postmaster still coming up (pg_ctl timeout) must be stopped.
        self.running = true;
        if out.status.success() && wait_for_port(self.port, Duration::from_secs(10)) {
            return Ok(());
        }
        self.stop();
        Err(PgError::Start {
            log: format!("{}\n{}", output_text(&out), log_tail(&log, from, 20)),
        })
    }

    fn pg_ctl_stop(&self, mode: &str) -> bool {
        let mut cmd = self.env.server_cmd("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", mode, "-w", "-t", "30"]);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Last resort: SIGKILL the postmaster, but only if that pid's cwd is still our data dir
    /// (the postmaster chdirs there), so a stale postmaster.pid never hits a recycled pid.
    fn kill_postmaster(&self) {
        let Some(pid) = self.server_pid() else { return };
        let cwd = fs::read_link(format!("/proc/{pid}/cwd"));
        if matches!((cwd, fs::canonicalize(&self.data)), (Ok(a), Ok(b)) if a == b) {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

impl Drop for PgServer {
    /// Closing the watchdog's pipe makes it do what it would do if this process died
    /// (`pg_ctl stop -m immediate`, `rm -rf`); waiting for it keeps Drop synchronous.
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            drop(w.stdin.take());
            let _ = w.wait();
        }
        if self.root.exists() {
            // The watchdog was killed or failed: clean up here.
            if self.running && !self.pg_ctl_stop("immediate") {
                self.kill_postmaster();
            }
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// One server per test process, started on first use; panics (failing the test) if it cannot
/// start. Never dropped: its watchdog stops it and deletes its dir when the process exits.
/// Under `cargo nextest` every test is its own process, so each gets its own "shared" server.
pub fn shared() -> &'static PgServer {
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        PgServer::start()
            .unwrap_or_else(|e| panic!("test PostgreSQL: starting the shared server: {e}"))
    })
}
