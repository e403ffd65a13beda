//! Throwaway PostgreSQL servers for integration tests.
//!
//! [`PgServer::start`] creates a private cluster in a fresh temp dir (trust auth, UTF8, C locale,
//! `fsync=on` (free on the tmpfs it lives on; see below), `max_connections=300`, `pg_stat_statements` preloaded and created in db
//! `postgres`), listening on 127.0.0.1 on a free port, its unix socket inside the temp dir.
//! Dropping it stops the server and deletes the dir. [`PgServer::start_with`] takes
//! [`ServerOptions`]: a durable server (fsync on, on disk), extra `postgresql.conf` lines, a
//! replaced or extended `pg_hba.conf`, files placed in the data dir (certificates), more listen
//! addresses. [`shared`] is one lazily started server per test process.
//!
//! **Cleanup even when the test process dies hard.** Every server (and the template data dir)
//! gets a [watchdog](crate::watchdog): a `/bin/sh` child that runs `pg_ctl stop -m immediate`
//! and `rm -rf` when this process closes its pipe or dies in any way (even SIGKILL). `Drop` just
//! closes the pipe and waits for it, so the crash path is the path every test exercises.
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
//! A [durable](ServerOptions::durable) server lives on disk instead, since an fsync on tmpfs
//! costs nothing and would make a benchmark of the server's cost meaningless.
//!
//! Binaries come from `$PGBIN`, else the newest `/usr/lib/postgresql/*/bin`, else `$PATH`.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::watchdog::Watchdog;

mod dirs;
mod env;
mod options;

pub(crate) use crate::command::{output_text, sanitized};
pub use dirs::is_tmpfs;
pub(crate) use dirs::{free_port, log_tail, make_temp_dir, wait_for_addr, wait_for_port};
use dirs::{initdb, spawn_watchdog, template};
pub use env::tool_path;
use env::{env, psql_command_at, run_psql, Env};
pub(crate) use env::{psql_at, server_command, server_user};
pub(crate) use options::Fill;
pub use options::ServerOptions;

const HOST: &str = "127.0.0.1";
/// Database superuser created by initdb, and the OS user servers run as when we are root.
const PG_USER: &str = "postgres";
const PORT_ATTEMPTS: usize = 10;
/// `fsync = on` although the data is thrown away: the check refuses takeovers and inserts for a
/// lease after a non-durable server starts (issue 25: it may have lost commits in a crash), so
/// a server that says it is not durable would make every test's first election wait a lease.
/// On the tmpfs the clusters live on, an fsync costs nothing.
const CONFIG: &str =
    "\n# leadership test kit: throwaway test server\nfsync = on\nmax_connections = 300\n\
    shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n";
/// What [`ServerOptions::durable`] appends (the template has `fsync = on` already; this keeps
/// the benchmark's server what it says even if the template changes).
const DURABLE: &str = "fsync = on\nsynchronous_commit = on\n";

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
    /// [`ServerOptions`] that cannot be applied (e.g. a file path leaving the data dir).
    #[error("invalid server options: {0}")]
    Options(String),
    /// A program the kit needs (pgbouncer, openssl, ip, iptables...) is not installed.
    #[error("{what} not found: {fix}")]
    Missing { what: String, fix: String },
    /// A kit component or one of its commands failed; `log` has its output.
    #[error("{what} failed:\n{log}")]
    Failed { what: String, log: String },
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

/// A throwaway PostgreSQL server; see the module docs.
pub struct PgServer {
    /// The temp dir: socket dir and parent of `data`; removed on drop.
    root: PathBuf,
    data: PathBuf,
    port: u16,
    /// Addresses listened on besides 127.0.0.1.
    listen: Vec<IpAddr>,
    /// Environment of the kit's psql for this server.
    client_env: Vec<(String, String)>,
    running: bool,
    watchdog: Option<Watchdog>,
    env: &'static Env,
}

impl PgServer {
    /// Starts a fresh cluster on a free port, with `pg_stat_statements` created in db `postgres`.
    pub fn start() -> Result<PgServer, PgError> {
        PgServer::start_with(&ServerOptions::default())
    }

    /// [`start`](PgServer::start) with `options` applied before the first start.
    pub fn start_with(options: &ServerOptions) -> Result<PgServer, PgError> {
        PgServer::create(options, None)
    }

    /// A new server in its own temp dir with its own watchdog and free port: from the template
    /// when `fill` is `None` (then `pg_stat_statements` is created), else from what `fill` puts
    /// into the data dir.
    pub(crate) fn create(options: &ServerOptions, fill: Option<Fill>) -> Result<PgServer, PgError> {
        let env = env()?;
        let root = make_temp_dir("", options.durable)?;
        let watchdog = Some(spawn_watchdog(env, &root, true)?);
        let data = root.join("data");
        // From here on, Drop cleans up whatever happens.
        let mut s = PgServer {
            root,
            data,
            port: 0,
            listen: options.listen.clone(),
            client_env: options.client_env.clone(),
            running: false,
            watchdog,
            env,
        };
        match fill {
            Some(fill) => fill(&s.data)?,
            None if options.own_initdb
                || std::env::var_os("LEADERSHIP_PG_NO_TEMPLATE").is_some() =>
            {
                initdb(env, &s.data)?
            }
            None => {
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
        }
        options.apply(&s.data, env.run_as)?;
        s.start_server(true)?;
        if fill.is_none() {
            s.psql("create extension if not exists pg_stat_statements")?;
        }
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

    /// The superuser the kit connects as (`postgres`, trusted).
    pub fn user(&self) -> &str {
        PG_USER
    }

    /// The data dir (`PGDATA`); `server.log` is in it.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The dir of the server's unix socket (`.s.PGSQL.<port>`): the server's temp dir, parent of
    /// the data dir.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The server's log (`pg_ctl -l`), appended to across restarts.
    pub fn log_file(&self) -> PathBuf {
        self.data.join("server.log")
    }

    /// The addresses the server listens on: 127.0.0.1 first, then those of
    /// [`ServerOptions::listen_on`].
    pub fn listen_addresses(&self) -> Vec<IpAddr> {
        let mut all = vec![IpAddr::from([127, 0, 0, 1])];
        all.extend(&self.listen);
        all
    }

    /// `psql -X -A -t -v ON_ERROR_STOP=1` connected to this server; add `-c SQL` (or pipe
    /// stdin) and spawn it, e.g. for a long-running session in a separate process.
    pub fn psql_command(&self) -> Command {
        self.psql_command_as(PG_USER)
    }

    /// [`psql_command`](PgServer::psql_command) logging in as `user` (trusted by the default
    /// `pg_hba.conf`).
    pub fn psql_command_as(&self, user: &str) -> Command {
        let mut cmd = psql_command_at(self.env, self.port, user);
        cmd.envs(self.client_env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `sql` with `psql -c` and returns its stdout verbatim (`-A -t`: unaligned, tuples
    /// only, so `select 1` gives `"1\n"`).
    pub fn psql(&self, sql: &str) -> Result<String, PgError> {
        self.psql_as(PG_USER, sql)
    }

    /// [`psql`](PgServer::psql) as `user`; the error carries psql's stderr (the server's
    /// message, e.g. `ERROR:  permission denied for function pg_ls_waldir`).
    pub fn psql_as(&self, user: &str, sql: &str) -> Result<String, PgError> {
        run_psql(self.psql_command_as(user), sql)
    }

    /// `pg_ctl stop -m fast`, falling back to `-m immediate`, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        if self.running && !self.pg_ctl_stop("fast") && !self.pg_ctl_stop("immediate") {
            self.kill_postmaster();
        }
        self.running = false;
    }

    /// A crash: an immediate shutdown (SIGQUIT to the postmaster, what `pg_ctl stop -m
    /// immediate` sends: every server process quits at once, without a shutdown checkpoint;
    /// clients see their connections drop), returning once the postmaster is gone (polled every
    /// 2 ms; `pg_ctl`'s own wait polls every 100 ms), falling back to `pg_ctl stop -m immediate`
    /// and SIGKILL. Writes the server acknowledged are in its WAL, but a standby that had not
    /// received them never will. Idempotent.
    pub fn crash(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        if let Some(pid) = self.server_pid().filter(|&pid| self.is_our_postmaster(pid)) {
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) } == 0 {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && self.is_our_postmaster(pid) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if !self.is_our_postmaster(pid) {
                    return;
                }
            }
        }
        if !self.pg_ctl_stop("immediate") {
            self.kill_postmaster();
        }
    }

    /// Whether `pid` runs with our data dir as its cwd (as the postmaster does) and is not a
    /// zombie: a recycled pid never passes.
    fn is_our_postmaster(&self, pid: u32) -> bool {
        let cwd = fs::read_link(format!("/proc/{pid}/cwd"));
        let ours = matches!((cwd, fs::canonicalize(&self.data)), (Ok(a), Ok(b)) if a == b);
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? == "Z"))
            .unwrap_or(true);
        ours && !zombie
    }

    /// `pg_dump` of `table` in database `postgres` (schema and rows as `INSERT`s, no owner):
    /// the table as it is now, to load into another cluster with [`load`](PgServer::load).
    pub fn dump_table(&self, table: &str) -> Result<String, PgError> {
        let port = self.port.to_string();
        let mut cmd = sanitized(Command::new(self.env.bin.join("pg_dump")));
        cmd.args(["-h", HOST, "-p", &port, "-U", PG_USER, "-d", "postgres"])
            .args(["--inserts", "--no-owner", "--no-privileges", "-t", table]);
        cmd.envs(self.client_env.iter().map(|(k, v)| (k, v)));
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(PgError::Failed {
                what: format!("pg_dump -t {table}"),
                log: output_text(&out),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs an SQL script (say, a [`dump_table`](PgServer::dump_table)) with `psql -f -`,
    /// stopping at the first error.
    pub fn load(&self, script: &str) -> Result<(), PgError> {
        let mut child = self
            .psql_command()
            .args(["-q", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(script.as_bytes())?;
        drop(stdin);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(PgError::Psql {
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().into(),
            });
        }
        Ok(())
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
                Err(PgError::Start { log }) if log.contains("Address already in use") => last = log,
                other => return other,
            }
        }
        let log = format!("port still in use after {PORT_ATTEMPTS} attempts; last:\n{last}");
        Err(PgError::Start { log })
    }

    fn pg_ctl_start(&mut self) -> Result<(), PgError> {
        let log = self.data.join("server.log");
        let from = fs::metadata(&log).map_or(0, |m| m.len());
        let hosts: Vec<String> = self
            .listen_addresses()
            .iter()
            .map(|a| a.to_string())
            .collect();
        let opts = format!(
            "-p {} -k '{}' -h {}",
            self.port,
            self.root.display(),
            hosts.join(",")
        );
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
        // With several listen addresses the postmaster starts when any one binds; the kit
        // promises all of them, so a failed bind (in the log since this start) is a failure.
        let listening = self
            .listen_addresses()
            .into_iter()
            .all(|a| wait_for_addr(SocketAddr::new(a, self.port), Duration::from_secs(10)));
        if out.status.success()
            && listening
            && !log_tail(&log, from, 1000).contains("could not bind")
        {
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
            w.fire();
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
