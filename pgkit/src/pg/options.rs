//! [`ServerOptions`]: what a test asks of its server, written into the data dir.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

#[cfg(doc)]
use super::PgServer;
use super::{io_err, PgError, DURABLE};

/// How [`PgServer::start_with`] sets a server up; [`Default`] is what [`PgServer::start`] does.
///
/// Everything is applied to the data dir before the first start and stays there, so
/// [`PgServer::restart`] keeps it. Config lines are appended to `postgresql.conf` after the kit's
/// own, so they win over them (PostgreSQL takes the last setting of a name).
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    pub(super) durable: bool,
    pub(super) own_initdb: bool,
    pub(super) config: Vec<String>,
    pub(super) hba: Option<String>,
    pub(super) hba_lines: Vec<String>,
    pub(super) files: Vec<(PathBuf, Vec<u8>)>,
    pub(super) listen: Vec<IpAddr>,
    pub(super) client_env: Vec<(String, String)>,
}

impl ServerOptions {
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    /// `fsync = on` and `synchronous_commit = on`, with the data dir on disk (`/var/tmp` or `/tmp` when one is not a tmpfs): for benchmarks of what a
    /// commit costs the server. Slower; off by default.
    pub fn durable(mut self, on: bool) -> ServerOptions {
        self.durable = on;
        self
    }

    /// A cluster of its own: `initdb` for this server instead of a copy of the per-process
    /// template. Every server copied from the template has the template's
    /// `pg_control_system().system_identifier` (as a standby has its primary's); one with its
    /// own initdb has another, as two clusters in production do. Slower (an initdb).
    pub fn own_initdb(mut self) -> ServerOptions {
        self.own_initdb = true;
        self
    }

    /// Appends one line to `postgresql.conf`, e.g. `"wal_level = replica"`.
    pub fn config(mut self, line: impl Into<String>) -> ServerOptions {
        self.config.push(line.into());
        self
    }

    /// Replaces `pg_hba.conf` with `text`. The kit's own `psql` connects over TCP to 127.0.0.1
    /// as `postgres` to database `postgres` (with libpq's default `sslmode=prefer`), so `text`
    /// must let that in for [`PgServer::psql`] (and the start, which creates an extension) to
    /// work.
    pub fn hba(mut self, text: impl Into<String>) -> ServerOptions {
        self.hba = Some(text.into());
        self
    }

    /// Appends one line to `pg_hba.conf` (after a replacement, if any), e.g.
    /// `"host all all 10.0.0.0/30 trust"`.
    pub fn hba_line(mut self, line: impl Into<String>) -> ServerOptions {
        self.hba_lines.push(line.into());
        self
    }

    /// Writes `contents` to `name` (relative, inside the data dir; parent dirs are created) with
    /// mode 0600, owned by the server's OS user: what PostgreSQL demands of a key file.
    pub fn file(mut self, name: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> ServerOptions {
        self.files.push((name.into(), contents.into()));
        self
    }

    /// Listens on `addr` too (127.0.0.1 always). The address must exist on this host when the
    /// server starts (e.g. the host end of a [`NetNs`](crate::netns::NetNs)).
    pub fn listen_on(mut self, addr: IpAddr) -> ServerOptions {
        self.listen.push(addr);
        self
    }

    /// Sets `key=value` in the environment of the kit's own psql for this server
    /// ([`PgServer::psql`], [`PgServer::psql_command`]), e.g. `PGSSLCERT` for a server that
    /// demands a client certificate. The caller's own PG* variables never reach psql.
    pub fn client_env(mut self, key: impl Into<String>, value: impl Into<String>) -> ServerOptions {
        self.client_env.push((key.into(), value.into()));
        self
    }

    /// What a primary of streaming replication needs, explicitly (PostgreSQL 15's defaults
    /// already allow it, but a test should not depend on that): `wal_level = replica`,
    /// `max_wal_senders = 10`, `hot_standby = on` (used by its standbys, which copy this
    /// config), `wal_keep_size = 256MB` (so a standby paused or detached for a while can catch
    /// up without a slot), and a `host replication all 127.0.0.1/32 trust` line in `pg_hba.conf`.
    pub fn replication(self) -> ServerOptions {
        self.config("wal_level = replica")
            .config("max_wal_senders = 10")
            .config("hot_standby = on")
            .config("wal_keep_size = '256MB'")
            .hba_line("host replication all 127.0.0.1/32 trust")
    }

    /// Writes the options into `data` (a data dir not yet started).
    pub(super) fn apply(&self, data: &Path, run_as: Option<(u32, u32)>) -> Result<(), PgError> {
        let mut conf = String::from("\n# leadership test kit: ServerOptions\n");
        if self.durable {
            conf.push_str(DURABLE);
        }
        for line in &self.config {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf)?;
        let hba = data.join("pg_hba.conf");
        if let Some(text) = &self.hba {
            // Truncating keeps the file's owner (the server's user).
            fs::write(&hba, text)?;
        }
        if !self.hba_lines.is_empty() {
            let mut lines = String::from("\n# leadership test kit: ServerOptions\n");
            for line in &self.hba_lines {
                lines.push_str(line);
                lines.push('\n');
            }
            append(&hba, &lines)?;
        }
        for (name, contents) in &self.files {
            let inside = name.components().all(|c| matches!(c, Component::Normal(_)));
            if !inside || name.as_os_str().is_empty() {
                return Err(PgError::Options(format!(
                    "file {} must be a relative path inside the data dir",
                    name.display()
                )));
            }
            let path = data.join(name);
            if let Some(parent) = path.parent().filter(|p| !p.exists()) {
                fs::create_dir_all(parent)?;
                chown(parent, run_as)?;
            }
            fs::write(&path, contents)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            chown(&path, run_as)?;
        }
        Ok(())
    }
}

pub(super) fn append(path: &Path, text: &str) -> Result<(), PgError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| io_err(format!("appending to {}: {e}", path.display())))
}

pub(super) fn chown(path: &Path, run_as: Option<(u32, u32)>) -> io::Result<()> {
    match run_as {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// How a new server's data dir comes to be: a copy of the template (or initdb), or `fill`, which
/// creates `data` itself (a base backup).
pub(crate) type Fill<'a> = &'a dyn Fn(&Path) -> Result<(), PgError>;
