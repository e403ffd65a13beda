//! A throwaway pgbouncer in front of a throwaway server, for tests of the drivers behind a
//! connection pooler.
//!
//! [`PgBouncer::start`] writes `pgbouncer.ini` and a user list into a fresh temp dir, picks a
//! free port on 127.0.0.1, runs `pgbouncer` in the foreground as a child (as the server's OS
//! user when we are root: pgbouncer refuses to run as root) and returns once it accepts
//! connections. Every database name maps to the same name on the server (`postgres = ...` and
//! `* = ...`); [`PgBouncer::repoint`] points them at another server under open clients; users
//! listed in the user list (`postgres`, plus [`BouncerOptions::user`]) log in with
//! `auth_type = trust`; `postgres` is also an admin (`SHOW POOLS` via [`PgBouncer::show`]).
//! Dropping it stops pgbouncer and deletes the dir; a [watchdog](crate::watchdog) does the same
//! if the test process dies. [`PgBouncer::restart`] keeps the port.
//!
//! **Facts about pgbouncer 1.18** (each proved by the kit's tests in `pgkit/tests/kit/pgbouncer.rs`):
//! - *Named prepared statements in transaction mode.* A protocol-level named statement lives on
//!   the server connection that parsed it, and in transaction mode a client gets whichever
//!   server connection is free at each transaction (here `Sync`). Two clients that each `Parse`
//!   a statement `s0` over the same server connection: the second gets `ERROR: prepared
//!   statement "s0" already exists` (SQLSTATE 42P05), and its `Bind` of `s0` then runs the
//!   *other* client's statement. A client whose statement was parsed on a connection now busy
//!   with another client gets `prepared statement "sN" does not exist` (26000) on execute.
//!   tokio-postgres names statements `s0`, `s1`, ... from one counter per process, so two
//!   processes collide, and one process's `query()` (parse, then bind in a second round trip)
//!   can land on two different server connections. Session mode has none of this.
//! - *LISTEN/NOTIFY in transaction mode.* `LISTEN` succeeds, but the server connection that
//!   listens goes back to the pool, still listening. A notification arriving while it is idle
//!   in the pool is dropped (pgbouncer logs `WARNING S-...: got packet 'A' from server when
//!   not linked` and keeps the connection). A notification arriving while another client uses
//!   that connection (e.g. that client's own `NOTIFY`) is delivered to *that* client. The
//!   listening client never gets one. Session mode delivers them as a server does.
//! - *The `options` startup parameter* (e.g. `PGOPTIONS` or tokio-postgres
//!   `Config::options("-c statement_timeout=1000")`) is refused at login unless listed in
//!   `ignore_startup_parameters`, in both modes: `FATAL: unsupported startup parameter:
//!   options`, SQLSTATE 08P01 (protocol violation), from pgbouncer itself (the server never
//!   sees the client). Listed there, it is accepted and silently **ignored**: the setting does
//!   not reach the server (`SHOW statement_timeout` gives `0`).
//! - *BackendKeyData.* pgbouncer gives each client its own random cancel key: the process id a
//!   client receives is not `pg_backend_pid()` of its server connection, nor any backend's pid
//!   (it may be negative), in both modes. A client can detect a pooler by comparing the two
//!   (directly connected, they are equal).
//! - *Cancel requests* sent to pgbouncer with the client's key are forwarded to the server
//!   connection the client is using, in both modes, **if the sender keeps its socket open**
//!   until pgbouncer closes it, as libpq's `PQcancel` does: the running `pg_sleep` ends with
//!   SQLSTATE 57014 (`canceling statement due to user request`). A sender that shuts down its
//!   write side right after the request, as tokio-postgres 0.7's `cancel_query` does, mostly
//!   loses the cancel: pgbouncer logs `closing because: client unexpected eof` and the query
//!   runs on. Sometimes (measured here: 15 of 100 tokio-postgres cancels, 5 of 100 sent by
//!   hand) the cancel is forwarded and then pgbouncer **exits** with `FATAL
//!   @src/objects.c:1060 in function disconnect_client(): bad client state: 0`, dropping every
//!   client. The server itself honours such a request. pgbouncer PR #928 (1.21: stop reading
//!   the client socket once the cancel key is in) looks like the fix; not verified here.
//! - *Repointing.* [`PgBouncer::repoint`] rewrites the `[databases]` entries and sends `RELOAD`:
//!   an idle client in transaction mode keeps its connection across a crash of the old server
//!   and the repoint, and its next transaction runs on the new server, unannounced (the kit's
//!   test `repoint_swaps_the_server_under_an_open_client`). After a failed connect pgbouncer
//!   waits `server_login_retry` (15 s by default) before it connects again, and in
//!   `pooler_failover` a `RELOAD` to another server did not end that wait: no client's query
//!   reached the new server for the 3 s observed after one had reached the crashed server (so
//!   that test sets it to 0).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pg::{
    free_port, log_tail, sanitized, server_user, tool_path, wait_for_port, PgError, PgServer,
};
use crate::watchdog::Watchdog;

/// pgbouncer's `pool_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client for the client's whole session.
    Session,
    /// A server connection per transaction (outside one: per statement, up to `Sync`).
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// How a [`PgBouncer`] is configured; [`BouncerOptions::new`] gives the defaults named there.
#[derive(Clone, Debug)]
pub struct BouncerOptions {
    mode: PoolMode,
    ignore_startup_parameters: Vec<String>,
    pool_size: u32,
    max_client_conn: u32,
    users: Vec<String>,
    config: Vec<String>,
}

impl BouncerOptions {
    /// `pool_mode = mode`, `default_pool_size = 16` (no reserve, no minimum: enough for a
    /// dozen clients in session mode), `max_client_conn = 64`, `ignore_startup_parameters =
    /// extra_float_digits` (what most deployments list, as JDBC and others send it). A client
    /// that waits for a server connection longer than 15 s is disconnected
    /// (`query_wait_timeout`; pgbouncer's default of 120 s would hang a test that outgrew the
    /// pool for two minutes).
    pub fn new(mode: PoolMode) -> BouncerOptions {
        BouncerOptions {
            mode,
            ignore_startup_parameters: vec!["extra_float_digits".into()],
            pool_size: 16,
            max_client_conn: 64,
            users: Vec::new(),
            config: Vec::new(),
        }
    }

    /// Replaces `ignore_startup_parameters`; e.g. `&["extra_float_digits", "options"]`, or
    /// `&[]` for none.
    pub fn ignore_startup_parameters(mut self, names: &[&str]) -> BouncerOptions {
        self.ignore_startup_parameters = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// `default_pool_size`: server connections per database and user.
    pub fn pool_size(mut self, n: u32) -> BouncerOptions {
        self.pool_size = n;
        self
    }

    pub fn max_client_conn(mut self, n: u32) -> BouncerOptions {
        self.max_client_conn = n;
        self
    }

    /// Lets `name` log in too (it must exist on the server).
    pub fn user(mut self, name: impl Into<String>) -> BouncerOptions {
        self.users.push(name.into());
        self
    }

    /// Appends a line to the `[pgbouncer]` section, e.g. `"server_round_robin = 1"`.
    pub fn config(mut self, line: impl Into<String>) -> BouncerOptions {
        self.config.push(line.into());
        self
    }
}

/// A running pgbouncer; see the module docs.
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    server_port: u16,
    mode: PoolMode,
    options: BouncerOptions,
    child: Option<Child>,
    watchdog: Watchdog,
}

/// Where pgbouncer is: `$PGBOUNCER`, else `/usr/sbin/pgbouncer`, else `$PATH`.
fn binary() -> Result<PathBuf, PgError> {
    if let Some(p) = std::env::var_os("PGBOUNCER").map(PathBuf::from) {
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/sbin"))
        .chain(std::env::split_paths(&path))
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
        .ok_or_else(|| PgError::Missing {
            what: "pgbouncer (searched $PGBOUNCER, /usr/sbin, $PATH)".into(),
            fix: "install it with `apt-get install pgbouncer` (Debian/Ubuntu), or set PGBOUNCER \
                  to its path"
                .into(),
        })
}

/// Kills the pgbouncer whose pid is in `$dir/pgbouncer.pid`, if that pid still runs our config
/// (so a recycled pid is never hit), and waits up to 5 s for it to go.
const CLEANUP: &str = r#"pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null) \
  && grep -qa -- "$dir/pgbouncer.ini" "/proc/$pid/cmdline" 2>/dev/null \
  && kill -TERM "$pid" && i=0 \
  && while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done"#;

impl PgBouncer {
    /// pgbouncer in `mode` in front of `server`, with the defaults of [`BouncerOptions::new`].
    pub fn start(server: &PgServer, mode: PoolMode) -> Result<PgBouncer, PgError> {
        PgBouncer::start_with(server, &BouncerOptions::new(mode))
    }

    pub fn start_with(server: &PgServer, options: &BouncerOptions) -> Result<PgBouncer, PgError> {
        let bin = binary()?;
        let dir = crate::pg::make_temp_dir("bouncer-", false)?;
        let watchdog = Watchdog::spawn(Some(&dir), CLEANUP, &[])?;
        let mut b = PgBouncer {
            dir,
            port: 0,
            server_port: server.port(),
            mode: options.mode,
            options: options.clone(),
            child: None,
            watchdog,
        };
        let mut users = vec![server.user().to_string()];
        users.extend(options.users.iter().cloned());
        let list: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        fs::write(b.dir.join("userlist.txt"), list)?;
        let mut last = String::new();
        for _ in 0..10 {
            b.port = free_port()?;
            b.write_config(options)?;
            match b.spawn(&bin) {
                Err(PgError::Failed { log, .. }) if log.contains("Address already in use") => {
                    last = log
                }
                other => return other.map(|()| b),
            }
        }
        Err(PgError::Failed {
            what: "pgbouncer start (port still in use after 10 attempts)".into(),
            log: last,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    /// The port of the server behind it.
    pub fn server_port(&self) -> u16 {
        self.server_port
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub fn conn_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// pgbouncer's pid (None when stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// pgbouncer's log (`logfile`), appended to across restarts.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }

    /// Repoints pgbouncer to `server` without closing its clients, as an operator does at a
    /// failover: rewrites the `[databases]` entries (the explicit `postgres` one and the `*`
    /// fallback) to the new port and sends `RELOAD` on the admin console; returns once `SHOW
    /// DATABASES` lists the new port. A client connection stays open throughout and its next
    /// transaction runs on `server`; no client is told. Server connections to the old server
    /// are closed as they come back to the pool (pgbouncer tags them `close_needed`; one that
    /// is dead already, a crashed server's, is dropped at its first use).
    pub fn repoint(&mut self, server: &PgServer) -> Result<(), PgError> {
        self.repoint_port(server.port())
    }

    /// [`repoint`](PgBouncer::repoint) to the server on `port` of 127.0.0.1.
    pub fn repoint_port(&mut self, port: u16) -> Result<(), PgError> {
        self.server_port = port;
        let options = self.options.clone();
        self.write_config(&options)?;
        self.admin("RELOAD")?;
        let want = port.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let dbs = self.show("databases")?;
            let mut lines = dbs.lines();
            let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
            let (name, port) = (
                header.iter().position(|h| *h == "name"),
                header.iter().position(|h| *h == "port"),
            );
            let repointed = match (name, port) {
                (Some(n), Some(p)) => lines
                    .map(|l| l.split('|').collect::<Vec<_>>())
                    .filter(|row| row.get(n) == Some(&"postgres"))
                    .all(|row| row.get(p) == Some(&want.as_str())),
                _ => false,
            };
            if repointed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PgError::Failed {
                    what: format!("pgbouncer did not repoint to port {want} within 10 s"),
                    log: dbs,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs a command on the admin console (`RELOAD`, `PAUSE`, `RESUME`, ...).
    pub fn admin(&self, command: &str) -> Result<String, PgError> {
        let port = self.port.to_string();
        let out = sanitized(Command::new(tool_path("psql")?))
            .args(["-X", "-A", "-h", "127.0.0.1", "-p", &port])
            .args(["-U", "postgres", "-d", "pgbouncer", "-c"])
            .arg(command)
            .output()?;
        if !out.status.success() {
            return Err(PgError::Psql {
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().into(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `SHOW <what>` on the admin console (e.g. `"pools"`, `"servers"`, `"clients"`), as psql's
    /// unaligned output with a header line.
    pub fn show(&self, what: &str) -> Result<String, PgError> {
        self.admin(&format!("SHOW {what}"))
    }

    /// Stops pgbouncer (SIGTERM: immediate shutdown, clients are disconnected) and starts it
    /// again on the same port, retrying for a few seconds if the port is taken meanwhile.
    pub fn restart(&mut self) -> Result<(), PgError> {
        self.stop();
        let bin = binary()?;
        let mut last = String::new();
        for _ in 0..10 {
            match self.spawn(&bin) {
                Err(PgError::Failed { log, .. }) if log.contains("Address already in use") => {
                    last = log;
                    std::thread::sleep(Duration::from_millis(300));
                }
                other => return other,
            }
        }
        Err(PgError::Failed {
            what: format!("pgbouncer restart (port {} still in use)", self.port),
            log: last,
        })
    }

    /// SIGTERM and wait (SIGKILL after 10 s). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Our own unreaped child: the pid cannot have been reused.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.wait();
            let _ = fs::remove_file(self.dir.join("pgbouncer.pid"));
        }
    }

    fn write_config(&self, o: &BouncerOptions) -> Result<(), PgError> {
        let d = self.dir.display();
        let mut ini = format!(
            "[databases]\n\
             postgres = host=127.0.0.1 port={server}\n\
             * = host=127.0.0.1 port={server}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {d}/userlist.txt\n\
             admin_users = postgres\n\
             pool_mode = {mode}\n\
             default_pool_size = {pool}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = {max}\n\
             query_wait_timeout = 15\n\
             ignore_startup_parameters = {ignore}\n\
             logfile = {d}/pgbouncer.log\n",
            server = self.server_port,
            port = self.port,
            mode = o.mode.as_str(),
            pool = o.pool_size,
            max = o.max_client_conn,
            ignore = o.ignore_startup_parameters.join(","),
        );
        for line in &o.config {
            ini.push_str(line);
            ini.push('\n');
        }
        fs::write(self.dir.join("pgbouncer.ini"), ini)?;
        Ok(())
    }

    /// Starts pgbouncer on `self.port` and waits until it accepts connections, or fails with
    /// the new part of its log.
    fn spawn(&mut self, bin: &Path) -> Result<(), PgError> {
        let log = self.log_file();
        let from = fs::metadata(&log).map_or(0, |m| m.len());
        let stderr = fs::File::create(self.dir.join("stderr.log"))?;
        let mut cmd = sanitized(Command::new(bin));
        cmd.arg(self.dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some((uid, gid)) = server_user()? {
            // Directly, not through runuser, so that the child is pgbouncer itself.
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().map_err(|e| PgError::Failed {
            what: format!("spawning {}", bin.display()),
            log: e.to_string(),
        })?;
        fs::write(self.dir.join("pgbouncer.pid"), child.id().to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let stderr = fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
                return Err(PgError::Failed {
                    what: format!("pgbouncer ({status})"),
                    log: format!("{}\n{}", stderr.trim_end(), log_tail(&log, from, 20)),
                });
            }
            // Its own log line, not just an open port: another process may hold the port.
            let listening = format!("listening on 127.0.0.1:{}", self.port);
            if log_tail(&log, from, 50).contains(&listening)
                && wait_for_port(self.port, Duration::from_millis(50))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
            if Instant::now() > deadline {
                self.stop();
                return Err(PgError::Failed {
                    what: format!("pgbouncer did not listen on port {} within 10 s", self.port),
                    log: log_tail(&log, from, 20),
                });
            }
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
        self.watchdog.fire();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
