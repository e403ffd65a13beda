//! Watching and inspecting flags without competing: [`Observer`] (who holds one flag, and tell
//! me when it changes) and [`Inspector`] (the operator's reads and revokes).

use std::sync::Arc;
use std::time::Duration;

use leadership_core::observe::Observation;
use leadership_core::{DbTime, Row};
use tokio::sync::{mpsc, watch};
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use crate::error::Error;
use crate::link::Link;
use crate::pg::PgTime;
use crate::signals::Signals;
use crate::state::Holder;

/// Reads and revokes for operators and tools, on one connection of their own; from
/// [`FlagBuilder::inspect`](crate::FlagBuilder::inspect). Every statement is bounded by the
/// builder's timeout and runs unnamed, so it never collides with another client's behind a
/// pooler.
///
/// ```no_run
/// # async fn demo() -> Result<(), leadership_tokio::Error> {
/// let inspector = leadership_tokio::Flag::builder("nightly-report", "ops")
///     .connect_str("host=db user=app")
///     .inspect(tokio_postgres::NoTls)
///     .await?;
/// for (name, holder) in inspector.flags(None).await? {
///     println!("{name}: {:?} (expired: {})", holder.name, holder.expired);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Inspector {
    link: Arc<Link>,
    timeout: Duration,
    lease: Duration,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector").finish_non_exhaustive()
    }
}

impl Inspector {
    pub(crate) fn new(link: Arc<Link>, timeout: Duration, lease: Duration) -> Inspector {
        Inspector {
            link,
            timeout,
            lease,
        }
    }

    async fn bounded<T, F, Fut>(&self, what: &'static str, run: F) -> Result<T, Error>
    where
        F: FnOnce(Arc<crate::connection::Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let conn =
            match tokio::time::timeout(self.link.connector().connect_budget(), self.link.get())
                .await
            {
                Ok(Ok((conn, _))) => conn,
                Ok(Err(crate::link::NoConn::Connect(e))) => return Err(Error::from_connect(e)),
                Ok(Err(crate::link::NoConn::BackingOff)) | Err(_) => {
                    return Err(Error::Timeout {
                        what: "connecting",
                        after: self.link.connector().connect_budget(),
                        setting: "connect_timeout",
                    })
                }
            };
        match tokio::time::timeout(self.timeout, run(conn.clone())).await {
            Ok(Ok(v)) => {
                self.link.succeeded();
                Ok(v)
            }
            Ok(Err(source)) => {
                self.link.abandon(&conn);
                Err(Error::Database { what, source })
            }
            Err(_) => {
                self.link.abandon(&conn);
                Err(Error::Timeout {
                    what,
                    after: self.timeout,
                    setting: "timeout",
                })
            }
        }
    }

    /// Every flag's row (or only `name`'s), as (flag, holder), ordered by name; expiry judged
    /// with the builder's interval.
    pub async fn flags(&self, name: Option<&str>) -> Result<Vec<(String, Holder)>, Error> {
        let checked_at = std::time::Instant::now();
        Ok(self
            .rows(name)
            .await?
            .into_iter()
            .map(|(flag, holder, version, timestamp, now)| {
                let row = Row {
                    holder: holder.as_deref(),
                    version,
                    timestamp,
                };
                (
                    flag,
                    Holder::from_row(Some(row), now, self.lease, checked_at),
                )
            })
            .collect())
    }

    /// The rows, decoded.
    async fn rows(&self, name: Option<&str>) -> Result<Vec<StatusRow>, Error> {
        let rows = self
            .bounded("reading the flags", |conn| async move {
                conn.status(name).await
            })
            .await?;
        rows.iter()
            .map(|row| {
                decode_status(row).map_err(|source| Error::Database {
                    what: "reading the flags",
                    source,
                })
            })
            .collect()
    }

    /// Revokes `holder`'s lease on flag `name`: the row keeps its timestamp, so nobody takes
    /// over before the lease runs out (no overlap with a live holder), and gets a holder no
    /// process has and a new version, so the holder's next renew fails (a Go holder's too) and
    /// it steps down. `Some(new version)`, or `None` if `holder` did not hold the flag.
    pub async fn revoke(&self, name: &str, holder: &str) -> Result<Option<i64>, Error> {
        self.bounded("revoking the lease", |conn| async move {
            conn.revoke(name, holder, false).await
        })
        .await
    }

    /// Releases `holder`'s lease on flag `name` at once and wakes the followers: for a holder
    /// known to be dead. A live holder goes on believing until its deadline while a follower
    /// leads: two leaders. `Some(new version)`, or `None` if `holder` did not hold the flag.
    pub async fn release_now(&self, name: &str, holder: &str) -> Result<Option<i64>, Error> {
        self.bounded("releasing the lease", |conn| async move {
            conn.revoke(name, holder, true).await
        })
        .await
    }
}

type StatusRow = (String, Option<String>, Option<i64>, Option<DbTime>, DbTime);

fn decode_status(row: &tokio_postgres::Row) -> Result<StatusRow, tokio_postgres::Error> {
    Ok((
        row.try_get("name")?,
        row.try_get("holder")?,
        row.try_get("version")?,
        row.try_get::<_, Option<PgTime>>("timestamp")?.map(|t| t.0),
        row.try_get::<_, PgTime>("now")?.0,
    ))
}

/// Who holds one flag, kept up to date without competing for it, from
/// [`FlagBuilder::observe`](crate::FlagBuilder::observe): a dashboard, a sidecar, a follower
/// that forwards work to the leader. It reads the row at once, again at every release (it
/// `LISTEN`s, unless behind a transaction pooler) and just after the lease it saw expires
/// (the only moment a takeover can come), and every retry interval while the row stays
/// expired: no polling in between. Cheap to clone; the watching ends when the last clone is
/// dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), leadership_tokio::Error> {
/// let observer = leadership_tokio::Flag::builder("nightly-report", "router")
///     .connect_str("host=db user=app")
///     .observe(tokio_postgres::NoTls)
///     .await?;
/// let mut holder = observer.subscribe();
/// while holder.changed().await.is_ok() {
///     if let Some(h) = &*holder.borrow() {
///         println!("{:?} leads", h.name);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Observer {
    holder: watch::Receiver<Option<Holder>>,
    _task: Arc<AbortOnDropHandle<()>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("holder", &*self.holder.borrow())
            .finish_non_exhaustive()
    }
}

impl Observer {
    pub(crate) fn spawn(
        inspector: Inspector,
        name: String,
        config: &leadership_core::Config,
        notifications: Option<mpsc::Receiver<()>>,
    ) -> Observer {
        let signals = Signals::new(); // only for its clock (CLOCK_BOOTTIME)
        let mut watching = Observation::new(config, signals.cell.now());
        let (tx, holder) = watch::channel(None);
        let lease = config.interval();
        let task = tokio::spawn(async move {
            let mut notifications = notifications;
            loop {
                if watching.poll_read(signals.cell.now()) {
                    match inspector.rows(Some(&name)).await {
                        Ok(rows) => {
                            let (now, checked_at) = (signals.cell.now(), std::time::Instant::now());
                            let found = rows.first();
                            let row = found.map(|(_, holder, version, timestamp, _)| Row {
                                holder: holder.as_deref(),
                                version: *version,
                                timestamp: *timestamp,
                            });
                            // With no row, the database's time does not matter.
                            let db_now = found.map_or(DbTime::UNIX_EPOCH, |r| r.4);
                            watching.read(now, row, db_now);
                            let holder = Holder::from_row(row, db_now, lease, checked_at);
                            tx.send_if_modified(|h| {
                                let changed = h.as_ref().map(key) != Some(key(&holder));
                                *h = Some(holder);
                                changed
                            });
                        }
                        Err(e) => {
                            debug!(name = %name, error = %e, "observer: reading the flag failed");
                            watching.failed(signals.cell.now());
                        }
                    }
                    continue;
                }
                let wake = watching
                    .poll_timeout()
                    .and_then(|t| signals.cell.at(t))
                    .map(tokio::time::Instant::from_std);
                tokio::select! {
                    note = recv(&mut notifications), if notifications.is_some() => match note {
                        Some(()) => watching.notified(signals.cell.now()),
                        None => notifications = None,
                    },
                    () = sleep_until(wake) => {}
                }
            }
        });
        Observer {
            holder,
            _task: Arc::new(AbortOnDropHandle::new(task)),
        }
    }

    /// Who held the flag at the last read; `None` before the first read returns.
    pub fn holder(&self) -> Option<Holder> {
        self.holder.borrow().clone()
    }

    /// A receiver of the holder, changed when the holder, its version or its expiry changes
    /// (not on each renewal's new lease age).
    pub fn subscribe(&self) -> watch::Receiver<Option<Holder>> {
        self.holder.clone()
    }
}

/// What makes a holder different for watchers: not its lease age or when it was read.
fn key(h: &Holder) -> (Option<&str>, Option<i64>, bool) {
    (h.name.as_deref(), h.version, h.expired)
}

async fn recv(notifications: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match notifications {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
