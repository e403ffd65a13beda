//! [`Link`]: the one connection every flag of a set (or one flag) shares, opened again on
//! demand after a failure, with one backoff.

use std::sync::{Arc, Mutex, PoisonError};

use crate::backoff::Backoff;
use crate::connection::Conn;
use crate::connector::Connector;
use crate::pooler::Route;

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
        // An attempt that fails, or is abandoned at the connect budget (dropped mid-way),
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
        self.connector.abandon(conn);
        let mut current = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
            self.backoff().failed(std::time::Instant::now());
        }
    }

    /// Keeps a connection open while the link lives and its flags listen, so that a release's
    /// notification reaches them between their statements. Without it a connection lost to a
    /// restart (of the server or of a pooler) is replaced only by the next statement, and a
    /// follower's next check may be a lease away: until then it hears nothing, and a handover
    /// takes up to a lease instead of milliseconds. Opening a connection changes nothing in the
    /// table; the core hears of it with the next statement ([`Input::Connected`]). Attempts
    /// share the link's backoff, and wait at least its base after a loss. Not behind a
    /// transaction pooler, where nothing listens.
    ///
    /// [`Input::Connected`]: leadership_core::Input::Connected
    pub(crate) fn keep_listening(self: &Arc<Self>) {
        let link = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(closed) = link.upgrade().map(|l| l.closed()) else {
                    return;
                };
                if let Some(closed) = closed {
                    closed.cancelled().await;
                }
                let Some(l) = link.upgrade() else { return };
                if l.connector.route() == Route::Transaction {
                    return;
                }
                // The flags' own statements may reconnect first; never spin.
                let base = l.backoff().base();
                drop(l);
                tokio::time::sleep(base).await;
                let Some(l) = link.upgrade() else { return };
                if l.current().is_some() {
                    continue;
                }
                let budget = l.connector.connect_budget();
                let _ = tokio::time::timeout(budget, l.get()).await;
                let wait = l.backoff().not_before();
                drop(l);
                if let Some(at) = wait {
                    tokio::time::sleep_until(at.into()).await;
                }
            }
        });
    }

    /// The token of the current connection (cancelled once it is gone), or `None` if there is
    /// none.
    fn closed(&self) -> Option<tokio_util::sync::CancellationToken> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.closed())
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
