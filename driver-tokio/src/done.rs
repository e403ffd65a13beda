//! What a statement (or a precheck) came back with, whoever ran it: a flag's own driver
//! (`driver.rs`) or its set's batch ([`batch`](crate::batch)); and getting the connection a
//! statement runs on, within the connect budget.

use std::sync::Arc;
use std::time::Duration;

use leadership_core::{Failure, Identity, Precheck, Server};

use crate::connection::Conn;
use crate::link::{Link, NoConn};
use crate::pg::{Chain, CheckRow, DecodeError};
use crate::recorder::Statement;

/// The fields of [`Command::Check`](leadership_core::Command::Check), carried to the statement.
#[derive(Clone, Copy)]
pub(crate) struct CheckCommand {
    pub(crate) renew: Option<i64>,
    pub(crate) floor: i64,
    pub(crate) may_take: bool,
    pub(crate) may_insert: bool,
    pub(crate) continues: Option<i64>,
    pub(crate) expect: Option<Identity>,
}

/// What a statement or precheck came back with.
pub(crate) struct Done {
    pub(crate) reply: Reply,
    /// Which statement (None for a precheck).
    pub(crate) statement: Option<Statement>,
    pub(crate) elapsed: Duration,
    pub(crate) failure: Option<Why>,
    /// A new connection was opened for this statement.
    pub(crate) reconnected: bool,
}

/// An owned [`Input`](leadership_core::Input) reply.
pub(crate) enum Reply {
    Checked(CheckRow),
    Released(bool),
    Failed(Failure),
    Precheck(Precheck),
    /// The statement was not run: its connection (number `id`) is one the core has not heard
    /// of yet ([`Input::Connected`](leadership_core::Input::Connected)).
    Connected {
        id: u64,
        server: Server,
    },
}

/// Why a statement failed, for the log. Cloned to every flag of a batch that failed whole.
#[derive(Clone)]
pub(crate) enum Why {
    BackingOff,
    Connect(Arc<tokio_postgres::Error>),
    Statement(Arc<tokio_postgres::Error>),
    Decode(Arc<DecodeError>),
    Timeout(Duration),
    ConnectTimeout(Duration),
    /// A batch skipped the row: another transaction held its lock.
    NotAttempted,
    /// A batch's reply had no row for this flag (a bug of the statement or the server).
    MissingFromBatch,
}

impl Why {
    /// The core's name for this failure.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            Why::Timeout(_) | Why::ConnectTimeout(_) => Failure::Timeout,
            Why::NotAttempted => Failure::NotAttempted,
            _ => Failure::Error,
        }
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::BackingOff => f.write_str("not reconnecting yet (backing off)"),
            Why::Connect(e) => write!(f, "cannot connect: {}", Chain(e)),
            Why::Statement(e) => write!(f, "{}", Chain(e)),
            Why::Decode(e) => write!(f, "{e}"),
            Why::Timeout(t) => write!(f, "no reply within {t:?}; connection abandoned"),
            Why::ConnectTimeout(t) => write!(
                f,
                "could not connect within {t:?} (the connect timeout for each host, and one for \
                 the set-up); raise connect_timeout if the server is far or slow"
            ),
            Why::NotAttempted => {
                f.write_str("skipped by the batch: another transaction holds the flag's row lock")
            }
            Why::MissingFromBatch => f.write_str("the batch's reply has no row for this flag"),
        }
    }
}

/// The connection for a statement, within the connect budget; and whether it is new.
pub(crate) async fn connection(link: &Link) -> Result<(Arc<Conn>, bool), Why> {
    let budget = link.connector().connect_budget();
    match tokio::time::timeout(budget, link.get()).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(NoConn::BackingOff)) => Err(Why::BackingOff),
        Ok(Err(NoConn::Connect(e))) => Err(Why::Connect(Arc::new(e))),
        Err(_) => Err(Why::ConnectTimeout(budget)),
    }
}

/// A statement on `conn` failed with `why`: the connection is abandoned (its socket closed,
/// the statement cancelled on the server) unless it is known to be fine. A server's error
/// about the statement alone (a lock or statement timeout, a serialization failure, a
/// constraint) leaves it to the next statement: one bad row must not make every flag of a set
/// reconnect. A timeout, a broken connection, a read-only server (the next connect skips it)
/// or a prepared statement gone missing behind a pooler drops it.
pub(crate) fn after_failure(link: &Link, conn: &Arc<Conn>, why: &Why) {
    if let Why::Statement(e) = why {
        if crate::pg::is_read_only_statement(e) {
            tracing::warn!(
                servers = link.connector().servers(),
                system = ?conn.server.system,
                timeline = ?conn.server.timeline,
                "the server answered read-only (SQLSTATE 25006): dropping the connection; the \
                 next connect skips read-only servers of the list"
            );
        } else if crate::pg::keeps_connection(e) {
            return;
        }
    }
    link.abandon(conn);
}
