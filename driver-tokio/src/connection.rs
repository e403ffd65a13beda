//! The driver's connection: connecting, preparing the two statements, `LISTEN`, the
//! connection task, which routes notifications to the flags by name, and the [`Link`] through
//! which every flag of a set shares one connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use leadership_core::sql::{Statements, Table};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Socket, Statement};
use tracing::debug;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::schema::{bounded, ensure_table};

type Connecting =
    Pin<Box<dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>> + Send>>;

/// A live connection with the check and the release prepared, so each statement is one
/// Bind/Execute round trip, and listening on the table's channel.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) check: Statement,
    pub(crate) release: Statement,
    task: JoinHandle<()>,
}

impl Conn {
    /// Closes the socket now: statements of other flags in flight on it fail at once rather
    /// than at their timeouts, and retry on a new connection.
    pub(crate) fn abandon(&self) {
        self.task.abort();
    }
}

impl Drop for Conn {
    // Dropping a connection must close its socket now, even if a statement hangs on it: the
    // task owns the socket, so abort it rather than wait for the server.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The flags listening through one connector, by name: a notification's payload is the name
/// of the released flag. Each entry holds one pending wake-up at most (more would say nothing
/// new), so a flood of releases cannot grow memory; a dropped one only costs time.
type Routes = Arc<Mutex<HashMap<String, mpsc::Sender<()>>>>;

/// Opens connections with the user's settings and TLS; the TLS type is erased here so the
/// driver is not generic. Every connection it opens routes its notifications to the flags
/// registered with [`Connector::listen`].
#[derive(Clone)]
pub(crate) struct Connector {
    connect: Arc<dyn Fn() -> Connecting + Send + Sync>,
    statements: Arc<Statements>,
    timeout: Duration,
    routes: Routes,
}

impl Connector {
    pub(crate) fn new<T>(
        pg: tokio_postgres::Config,
        tls: T,
        statements: Arc<Statements>,
        timeout: Duration,
    ) -> Connector
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let pg = Arc::new(pg);
        let routes = Routes::default();
        let forward = routes.clone();
        let connect = move || -> Connecting {
            let (pg, tls, forward) = (pg.clone(), tls.clone(), forward.clone());
            Box::pin(async move {
                let (client, mut connection) = pg.connect(tls).await?;
                // The connection task drives the socket. `connection.await` would drop
                // notifications; polling messages hands them to the driver instead.
                let task = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => route(&forward, n.payload()),
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                debug!(error = %crate::pg::Chain(&error), "connection closed");
                                break;
                            }
                            None => break,
                        }
                    }
                });
                Ok((client, task))
            })
        };
        Connector {
            connect: Arc::new(connect),
            statements,
            timeout,
            routes,
        }
    }

    /// Registers flag `name` for notifications: the receiver gets a wake-up whenever a
    /// release of that flag is notified on any connection of this connector. `None` if a
    /// running flag already listens under that name (one connection, one name, one flag).
    pub(crate) fn listen(&self, name: &str) -> Option<mpsc::Receiver<()>> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if routes.get(name).is_some_and(|tx| !tx.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::channel(1);
        routes.insert(name.to_string(), tx);
        Some(rx)
    }

    pub(crate) fn statements(&self) -> &Statements {
        &self.statements
    }

    /// Connects, prepares and listens, unbounded: the driver bounds it together with the
    /// statement it connects for.
    pub(crate) fn open(&self) -> impl Future<Output = Result<Conn, tokio_postgres::Error>> + Send {
        let connecting = (self.connect)();
        let statements = self.statements.clone();
        async move {
            let (client, task) = connecting.await?;
            let (check, release) = prepare(&client, &statements).await?;
            Ok(Conn {
                client,
                check,
                release,
                task,
            })
        }
    }

    /// The first connection, at start-up: every step bounded by the timeout and failing with a
    /// typed error, and the table created or checked.
    pub(crate) async fn start(&self, table: &Table) -> Result<Conn, Error> {
        let (mut client, task) = match tokio::time::timeout(self.timeout, (self.connect)()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(Error::from_connect(e)),
            Err(_) => {
                return Err(Error::Timeout {
                    what: "connecting",
                    after: self.timeout,
                })
            }
        };
        // From here on, `task` must not outlive a failure: wrap it at once.
        let guard = AbortOnDrop(Some(task));
        debug!(table = %table.quoted(), "connected; checking the table");
        ensure_table(&mut client, &self.statements, self.timeout).await?;
        let (check, release) = bounded(
            "preparing the statements",
            self.timeout,
            prepare(&client, &self.statements),
        )
        .await?;
        Ok(Conn {
            client,
            check,
            release,
            task: guard.take(),
        })
    }
}

/// Prepares the check and the release and listens on the table's channel: a connection
/// opened after a release was notified misses it, and the core's schedule covers that.
/// Wakes the flag a notification names, if it listens here. Full: a wake-up is pending
/// already. Closed: its driver is gone, forget it.
fn route(routes: &Routes, payload: &str) {
    let mut routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(tx) = routes.get(payload) {
        if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
            routes.remove(payload);
        }
    }
}

/// One connection shared by every flag of a set (or by one flag), opened again on demand after
/// a failure, with one backoff. Each flag's statement takes the current connection, so the
/// statements of different flags are pipelined on it.
///
/// The backoff counts incidents, not statements: a connection that fails counts once however
/// many flags had statements on it, and each failed attempt to connect counts once, so a set
/// of 100 flags backs off like a single flag.
pub(crate) struct Link {
    connector: Connector,
    conn: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so flags that need a connection at once open one, not many.
    connecting: tokio::sync::Mutex<()>,
    backoff: Mutex<Backoff>,
}

/// Why no connection could be had.
pub(crate) enum NoConn {
    /// Backing off after consecutive failures: nothing was attempted.
    BackingOff,
    /// Connecting or preparing failed.
    Connect(tokio_postgres::Error),
}

impl Link {
    pub(crate) fn new(connector: Connector, conn: Conn, backoff: Backoff) -> Link {
        Link {
            connector,
            conn: Mutex::new(Some(Arc::new(conn))),
            connecting: tokio::sync::Mutex::new(()),
            backoff: Mutex::new(backoff),
        }
    }

    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    fn current(&self) -> Option<Arc<Conn>> {
        // A connection the server closed (terminated backend, restart) is replaced before use,
        // rather than failing one statement on it first.
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|c| !c.client.is_closed())
    }

    /// The connection for a statement: the current one, or a new one unless backing off; and
    /// whether it is new. Unbounded: the caller bounds it with the statement.
    pub(crate) async fn get(&self) -> Result<(Arc<Conn>, bool), NoConn> {
        if let Some(conn) = self.current() {
            return Ok((conn, false));
        }
        let _connecting = self.connecting.lock().await;
        // Another flag may have connected while this one waited.
        if let Some(conn) = self.current() {
            return Ok((conn, false));
        }
        if !self.backoff().ready(std::time::Instant::now()) {
            return Err(NoConn::BackingOff);
        }
        // An attempt that fails, or is abandoned at the statement's timeout (dropped mid-way),
        // counts as one failure.
        let attempt = Attempt(Some(self));
        let conn = Arc::new(self.connector.open().await.map_err(NoConn::Connect)?);
        attempt.succeeded();
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok((conn, true))
    }

    /// A statement on `conn` failed or timed out: close it, so the next statement reconnects.
    /// The first flag to give up on a connection counts the failure.
    pub(crate) fn abandon(&self, conn: &Arc<Conn>) {
        conn.abandon();
        let mut current = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
            self.backoff().failed(std::time::Instant::now());
        }
    }

    /// A statement returned: the connection works, start the backoff over.
    pub(crate) fn succeeded(&self) {
        self.backoff().succeeded();
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a failure on drop, unless the attempt succeeded.
struct Attempt<'a>(Option<&'a Link>);

impl Attempt<'_> {
    fn succeeded(mut self) {
        self.0 = None;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.0 {
            link.backoff().failed(std::time::Instant::now());
        }
    }
}

async fn prepare(
    client: &Client,
    statements: &Statements,
) -> Result<(Statement, Statement), tokio_postgres::Error> {
    // Pipelined: the three exchanges share the round trips.
    let (check, release, listen) = tokio::join!(
        client.prepare(&statements.check),
        client.prepare(&statements.release),
        client.batch_execute(&statements.listen)
    );
    listen?;
    Ok((check?, release?))
}

struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    fn take(mut self) -> JoinHandle<()> {
        self.0.take().expect("taken once")
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector() -> Connector {
        let table = Table::default();
        Connector::new(
            tokio_postgres::Config::new(),
            tokio_postgres::NoTls,
            Arc::new(Statements::new(&table)),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn notifications_wake_only_the_flag_they_name_and_coalesce() {
        let c = connector();
        let mut a = c.listen("a").unwrap();
        let mut b = c.listen("b").unwrap();
        assert!(c.listen("a").is_none(), "one running flag per name");
        route(&c.routes, "a");
        route(&c.routes, "a");
        route(&c.routes, "other-flag");
        assert_eq!(a.try_recv(), Ok(()));
        assert!(a.try_recv().is_err(), "one pending wake-up says it all");
        assert!(b.try_recv().is_err());
        // A closed flag's name is free again, and its route forgotten.
        drop(b);
        route(&c.routes, "b");
        assert!(!c.routes.lock().unwrap().contains_key("b"));
        assert!(c.listen("b").is_some());
    }
}
