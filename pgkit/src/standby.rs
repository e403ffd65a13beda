//! A streaming standby of a throwaway server: for tests of failover, lost writes and what a
//! client can learn about a promotion.
//!
//! [`Standby::start`] makes a base backup of a running primary with `pg_basebackup -R -X
//! stream` (as the server's OS user when we are root) into its own temp dir and starts it on
//! its own free port with its own watchdog: a standby *is* a [`PgServer`] (it derefs to one),
//! built from a base backup instead of initdb, with the same cleanup guarantees. [`pair`] starts
//! a primary with [`ServerOptions::replication`] and one standby. The standby streams from the
//! primary under the `application_name` [`Standby::name`]; with [`ReplicationMode::Sync`] the
//! primary's `synchronous_standby_names` names it (and `synchronous_commit = on`), so a commit
//! on the primary returns only once the standby has flushed its WAL.
//!
//! **Paused replay is not a lost write.** With replay paused ([`Standby::pause_replay`]) a write
//! on the primary reaches the standby's disk but is not visible there, and [`Standby::lag_bytes`]
//! grows. But `pg_ctl promote` ends a pause and replays all WAL already received before the
//! standby leaves recovery (PostgreSQL 15 documents this: "any WAL immediately available in the
//! archive or in pg_wal will be restored"), so the promoted server *has* that write. A write is
//! lost only if it never reached the standby: [`Standby::detach`] stops the WAL receiver
//! (`primary_conninfo = ''`), and a write made on the primary after that is missing on the
//! standby once promoted (see the kit's tests, which prove both).
//!
//! **What a client can learn about a promotion** (PostgreSQL 15, measured by the kit's tests):
//!
//! | evidence | after `pg_ctl promote -w` returns | who may read it |
//! |---|---|---|
//! | `pg_is_in_recovery()` | `false` at once | anyone |
//! | `pg_walfile_name(pg_current_wal_lsn())` | its first 8 hex digits are the new timeline at once (`00000002…`); an error during recovery | anyone |
//! | `pg_ls_waldir()`: `0000000N.history` and its `modification` time | present at once; the time is that of the promotion | superuser or `pg_monitor` only (`permission denied for function pg_ls_waldir` for a plain role) |
//! | `pg_control_checkpoint()`: `timeline_id`, `checkpoint_time` | **still the old timeline** until the end-of-recovery checkpoint completes (a spread checkpoint: seconds here), then the new one, with `checkpoint_time` about the promotion; `CHECKPOINT` (superuser or `pg_checkpoint`) forces it | anyone |
//! | `pg_control_system()`: `system_identifier` | unchanged: a standby has the **same** system identifier as its primary, so it cannot tell them apart | anyone |
//! | `pg_postmaster_start_time()` | unchanged: promotion is no restart (it differs between primary and standby, so it shows a switch to another server, not a promotion in place) | anyone |
//! | `pg_last_xact_replay_timestamp()` | stays the commit time of the last transaction replayed before promotion (NULL on a server that never replayed) | anyone |
//!
//! A plain `LOGIN` role without any grant can read all of these but `pg_ls_waldir()`; a role in
//! `pg_monitor` can read them all.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::pg::{output_text, psql_at, server_command, PgError, PgServer, ServerOptions};

/// Whether a commit on the primary waits for the standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationMode {
    /// The primary commits without waiting: a write may be lost at failover.
    Async,
    /// The standby is the primary's synchronous standby (`synchronous_standby_names`,
    /// `synchronous_commit = on`): a commit waits until the standby has flushed it. Without the
    /// standby the wait is endless: `statement_timeout` does not bound it (the server disables
    /// the timeout before committing); a cancel request ends it with `WARNING:  canceling wait
    /// for synchronous replication due to user request` and the transaction committed locally.
    Sync,
}

/// How long the kit waits for replication states (streaming, paused, caught up, promoted).
const WAIT: Duration = Duration::from_secs(30);

/// A streaming standby; see the module docs. Derefs to its [`PgServer`] (port, psql, stop...).
pub struct Standby {
    server: PgServer,
    name: String,
    primary_port: u16,
}

/// A primary started with [`ServerOptions::replication`] and one standby of it.
pub fn pair(mode: ReplicationMode) -> Result<(PgServer, Standby), PgError> {
    let primary = PgServer::start_with(&ServerOptions::new().replication())?;
    let standby = Standby::start(&primary, mode)?;
    Ok((primary, standby))
}

/// A libpq/tokio-postgres connection string listing `servers` in order (`host=127.0.0.1,127.0.0.1
/// port=P1,P2 user=postgres dbname=postgres target_session_attrs=...`). A client tries the hosts
/// in order and keeps the first that fits `target_session_attrs`: `read-write` (a primary),
/// `any`, or `read-only`; libpq also knows `primary`, `standby`, `prefer-standby`, which
/// tokio-postgres 0.7 does not.
pub fn multi_host_conn_string(servers: &[&PgServer], target_session_attrs: &str) -> String {
    let hosts: Vec<&str> = servers.iter().map(|s| s.host()).collect();
    let ports: Vec<String> = servers.iter().map(|s| s.port().to_string()).collect();
    let user = servers.first().map_or("postgres", |s| s.user());
    format!(
        "host={} port={} user={user} dbname=postgres target_session_attrs={target_session_attrs}",
        hosts.join(","),
        ports.join(",")
    )
}

impl Standby {
    /// A standby of `primary`, streaming once this returns. The primary must allow replication
    /// connections from 127.0.0.1 and have a free WAL sender ([`ServerOptions::replication`];
    /// PostgreSQL 15's defaults do too). With [`ReplicationMode::Sync`] this changes the
    /// primary's `synchronous_standby_names` (`ALTER SYSTEM`) to this standby's name; while the
    /// standby is detached, stopped or gone, commits on the primary then wait.
    pub fn start(primary: &PgServer, mode: ReplicationMode) -> Result<Standby, PgError> {
        Standby::start_with(primary, mode, &ServerOptions::new())
    }

    /// [`start`](Standby::start) with `options` applied to the standby on top of the config it
    /// copies from the primary.
    pub fn start_with(
        primary: &PgServer,
        mode: ReplicationMode,
        options: &ServerOptions,
    ) -> Result<Standby, PgError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("kit_standby_{}", N.fetch_add(1, Ordering::Relaxed));
        let primary_port = primary.port();
        let fill = |data: &Path| base_backup(primary_port, &name, data);
        let server = PgServer::create(options, Some(&fill))?;
        let standby = Standby {
            server,
            name,
            primary_port,
        };
        standby.wait_streaming()?;
        if mode == ReplicationMode::Sync {
            // One statement per psql call: `-c` with several runs them in one transaction,
            // where ALTER SYSTEM is refused.
            primary.psql(&format!(
                "alter system set synchronous_standby_names = '\"{}\"'",
                standby.name
            ))?;
            primary.psql("alter system set synchronous_commit = on")?;
            primary.psql("select pg_reload_conf()")?;
            let state = format!(
                "select sync_state from pg_stat_replication where application_name = '{}'",
                standby.name
            );
            wait_for("the standby to be synchronous", || {
                Ok(primary.psql(&state)?.trim() == "sync")
            })?;
        }
        Ok(standby)
    }

    /// The standby's `application_name` on the primary (`pg_stat_replication`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port of the primary it follows.
    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    /// `pg_wal_replay_pause()`; returns once replay has paused. WAL still arrives (and, in
    /// Sync mode, commits on the primary still return), but is not applied.
    pub fn pause_replay(&self) -> Result<(), PgError> {
        self.psql("select pg_wal_replay_pause()")?;
        wait_for("replay to pause", || {
            Ok(self.psql("select pg_get_wal_replay_pause_state()")?.trim() == "paused")
        })
    }

    /// `pg_wal_replay_resume()`.
    pub fn resume_replay(&self) -> Result<(), PgError> {
        self.psql("select pg_wal_replay_resume()").map(drop)
    }

    /// Stops receiving WAL (`primary_conninfo = ''` and a reload); returns once the WAL receiver
    /// is gone. Writes on the primary from now on never reach this standby (in Sync mode,
    /// commits on the primary wait), until [`attach`](Standby::attach).
    pub fn detach(&self) -> Result<(), PgError> {
        self.set_conninfo("")?;
        wait_for("the WAL receiver to stop", || {
            Ok(self
                .psql("select count(*) from pg_stat_wal_receiver")?
                .trim()
                == "0")
        })
    }

    /// Streams from the primary again; returns once streaming.
    pub fn attach(&self) -> Result<(), PgError> {
        self.set_conninfo(&conninfo(self.primary_port, &self.name))?;
        self.wait_streaming()
    }

    /// Bytes of WAL the primary has written that this standby has not replayed
    /// (`pg_current_wal_lsn()` on the primary minus `pg_last_wal_replay_lsn()` here); an error if
    /// the primary is down.
    pub fn lag_bytes(&self) -> Result<u64, PgError> {
        let primary = psql_at(self.primary_port, "select pg_current_wal_lsn()")?;
        let sql = format!(
            "select greatest(pg_wal_lsn_diff('{}', pg_last_wal_replay_lsn()), 0)::bigint",
            primary.trim()
        );
        parse_u64(&self.psql(&sql)?)
    }

    /// Bytes received but not yet replayed (both on this standby; 0 when detached and caught up).
    pub fn replay_backlog_bytes(&self) -> Result<u64, PgError> {
        let sql = "select greatest(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), \
                   pg_last_wal_replay_lsn()), 0)::bigint";
        parse_u64(&self.psql(sql)?)
    }

    /// Waits until [`lag_bytes`](Standby::lag_bytes) is 0: everything committed on the primary
    /// before the call is visible here.
    pub fn wait_caught_up(&self) -> Result<(), PgError> {
        wait_for("the standby to catch up", || Ok(self.lag_bytes()? == 0))
    }

    /// `pg_ctl promote -w`; returns once the server accepts writes (`pg_is_in_recovery()` is
    /// false). A paused replay ends, and WAL already received is replayed first (module docs).
    /// The primary is left alone: stop it first to model a failover.
    pub fn promote(&mut self) -> Result<(), PgError> {
        let mut cmd = server_command("pg_ctl")?;
        cmd.arg("-D").arg(self.server.data_dir());
        let out = cmd.args(["promote", "-w", "-t", "60"]).output()?;
        if !out.status.success() {
            return Err(PgError::Failed {
                what: "pg_ctl promote".into(),
                log: output_text(&out),
            });
        }
        wait_for("the promoted server to accept writes", || {
            Ok(self.psql("select pg_is_in_recovery()")?.trim() == "f")
        })
    }

    /// [`promote`](Standby::promote) without pg_ctl's wait (which polls every 100 ms): `pg_ctl
    /// promote -W`, then `pg_is_in_recovery()` polled every 5 ms until false. For failovers
    /// whose length matters (the clients' checks that fall inside it see the outage).
    pub fn promote_now(&mut self) -> Result<(), PgError> {
        let mut cmd = server_command("pg_ctl")?;
        cmd.arg("-D").arg(self.server.data_dir());
        let out = cmd.args(["promote", "-W"]).output()?;
        if !out.status.success() {
            return Err(PgError::Failed {
                what: "pg_ctl promote -W".into(),
                log: output_text(&out),
            });
        }
        wait_every(
            "the promoted server to accept writes",
            Duration::from_millis(5),
            || Ok(self.psql("select pg_is_in_recovery()")?.trim() == "f"),
        )
    }

    /// The server, to keep after promotion without the standby's methods.
    pub fn into_server(self) -> PgServer {
        self.server
    }

    fn wait_streaming(&self) -> Result<(), PgError> {
        wait_for("the standby to stream", || {
            Ok(self.psql("select status from pg_stat_wal_receiver")?.trim() == "streaming")
        })
    }

    /// Rewrites `primary_conninfo` in `postgresql.auto.conf` (read after `postgresql.conf`, and
    /// where `pg_basebackup -R` put it) and reloads.
    fn set_conninfo(&self, conninfo: &str) -> Result<(), PgError> {
        write_standby_settings(self.server.data_dir(), conninfo)?;
        self.psql("select pg_reload_conf()").map(drop)
    }
}

impl Deref for Standby {
    type Target = PgServer;

    fn deref(&self) -> &PgServer {
        &self.server
    }
}

impl DerefMut for Standby {
    fn deref_mut(&mut self) -> &mut PgServer {
        &mut self.server
    }
}

fn conninfo(primary_port: u16, name: &str) -> String {
    format!("host=127.0.0.1 port={primary_port} user=postgres application_name={name}")
}

/// `pg_basebackup -R` of the primary into `data`, then the standby's own settings.
fn base_backup(primary_port: u16, name: &str, data: &Path) -> Result<(), PgError> {
    let mut cmd = server_command("pg_basebackup")?;
    cmd.arg("-D").arg(data);
    let port = primary_port.to_string();
    let args = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    // -R: standby.signal and primary_conninfo; -X stream: the WAL of the backup's own span;
    // -c fast: an immediate checkpoint instead of a spread one; --no-sync: throwaway data.
    let out = cmd
        .args(args)
        .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
        .output()?;
    if !out.status.success() {
        return Err(PgError::Failed {
            what: format!(
                "pg_basebackup from port {primary_port} (does the primary allow replication? \
                 ServerOptions::replication)"
            ),
            log: output_text(&out),
        });
    }
    // The primary's log came along in the copy; the standby starts its own.
    let _ = std::fs::remove_file(data.join("server.log"));
    write_standby_settings(data, &conninfo(primary_port, name))
}

/// Rewrites the standby's lines of `postgresql.auto.conf`, keeping any others: our
/// `primary_conninfo` (with an `application_name` the primary can name), and no synchronous
/// standbys of its own, so that once promoted its commits do not wait for a standby that does
/// not exist (the primary's setting may have come along in the copy).
fn write_standby_settings(data: &Path, conninfo: &str) -> Result<(), PgError> {
    let path = data.join("postgresql.auto.conf");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("primary_conninfo") && !l.starts_with("synchronous_standby_names")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "primary_conninfo = '{conninfo}'\nsynchronous_standby_names = ''\n"
    ));
    // Truncating keeps the owner (the server's user), which must be able to rewrite it.
    std::fs::write(&path, text).map_err(|e| PgError::Failed {
        what: format!("writing {}", path.display()),
        log: e.to_string(),
    })
}

fn parse_u64(text: &str) -> Result<u64, PgError> {
    text.trim().parse().map_err(|_| PgError::Failed {
        what: "reading a WAL position difference".into(),
        log: format!("unexpected psql output {text:?}"),
    })
}

/// Polls `cond` every 20 ms for up to [`WAIT`]; its errors end the wait.
fn wait_for(what: &str, cond: impl FnMut() -> Result<bool, PgError>) -> Result<(), PgError> {
    wait_every(what, Duration::from_millis(20), cond)
}

/// Polls `cond` every `period` for up to [`WAIT`]; its errors end the wait.
fn wait_every(
    what: &str,
    period: Duration,
    mut cond: impl FnMut() -> Result<bool, PgError>,
) -> Result<(), PgError> {
    let deadline = Instant::now() + WAIT;
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(PgError::Failed {
                what: format!("waiting for {what}"),
                log: format!("not within {WAIT:?}"),
            });
        }
        std::thread::sleep(period);
    }
}
