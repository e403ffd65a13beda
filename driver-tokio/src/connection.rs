//! The driver's connection: connecting, preparing the two statements, and the connection task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use leadership_core::sql::{Statements, Table};
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Socket, Statement};
use tracing::debug;

use crate::error::Error;
use crate::schema::{bounded, ensure_table};

type Connecting =
    Pin<Box<dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>> + Send>>;

/// A live connection with the check and the release prepared, so each statement is one
/// Bind/Execute round trip.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) check: Statement,
    pub(crate) release: Statement,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    // Dropping a connection must close its socket now, even if a statement hangs on it: the
    // task owns the socket, so abort it rather than wait for the server.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens connections with the user's settings and TLS; the TLS type is erased here so the
/// driver is not generic.
#[derive(Clone)]
pub(crate) struct Connector {
    connect: Arc<dyn Fn() -> Connecting + Send + Sync>,
    statements: Arc<Statements>,
    timeout: Duration,
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
        let connect = move || -> Connecting {
            let (pg, tls) = (pg.clone(), tls.clone());
            Box::pin(async move {
                let (client, connection) = pg.connect(tls).await?;
                // The connection task drives the socket. A notification source (LISTEN, the
                // next issue) would forward `poll_message` notifications from here to one more
                // `select!` arm of the driver.
                let task = tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        debug!(error = %crate::pg::Chain(&error), "connection closed");
                    }
                });
                Ok((client, task))
            })
        };
        Connector {
            connect: Arc::new(connect),
            statements,
            timeout,
        }
    }

    pub(crate) fn statements(&self) -> &Statements {
        &self.statements
    }

    /// Connects and prepares, unbounded: the driver bounds it together with the statement it
    /// connects for.
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

async fn prepare(
    client: &Client,
    statements: &Statements,
) -> Result<(Statement, Statement), tokio_postgres::Error> {
    // Pipelined: both Parse/Describe exchanges share the round trips.
    let (check, release) = tokio::join!(
        client.prepare(&statements.check),
        client.prepare(&statements.release)
    );
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
