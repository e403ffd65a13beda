//! The errors of the tokio driver: what can go wrong before the flag runs, and on close.
//!
//! Once the flag runs, database failures are not errors of the API: the core handles them as
//! inputs (a leader keeps its lease until its deadline) and the driver reconnects. Messages never
//! contain the password: connection settings are never printed, and `tokio_postgres` errors do
//! not carry them.

use std::time::Duration;

use leadership_core::sql::{ShapeError, TableError};
use leadership_core::ConfigError;

use crate::pg::Chain;

/// Why a flag could not start, or did not close cleanly.
///
/// Messages include the database's own message and SQLSTATE;
/// the cause is also available as the error's `source()`.
///
/// ```no_run
/// # async fn demo() {
/// use leadership_tokio::{Error, Flag};
/// use tokio_postgres::NoTls;
/// match Flag::builder("report", "pod-a").connect_str("host=db user=app").start(NoTls).await {
///     Ok(flag) => drop(flag),
///     Err(Error::Authentication(e)) => eprintln!("check the credentials: {e}"),
///     Err(Error::Shape { table, source }) => eprintln!("fix table {table}: {source}"),
///     Err(e) => eprintln!("cannot start: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (names, durations, jitter).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The table or schema name cannot be used.
    #[error("invalid table name: {0}")]
    Table(#[from] TableError),
    /// The connection string could not be parsed.
    #[error("invalid connection string: {}", Chain(.0))]
    ConnectString(#[source] tokio_postgres::Error),
    /// Neither a connection string nor a `tokio_postgres::Config` was given to the builder.
    #[error("no database given: call connect_str or pg_config on the builder")]
    NoDatabase,
    /// The server refused the credentials or the role (SQLSTATE class 28).
    #[error("the database refused the login: {}", Chain(.0))]
    Authentication(#[source] tokio_postgres::Error),
    /// The server could not be reached, or the connection failed while being set up.
    #[error("cannot connect to the database: {}", Chain(.0))]
    Connect(#[source] tokio_postgres::Error),
    /// No server of the list accepts writes (each is a hot standby, or read-only by
    /// `default_transaction_read_only`): a process competing for a flag needs a writable one.
    /// The driver connects with `target_session_attrs=read-write` unless the settings ask for
    /// another value, so it skips read-only servers when the list has a writable one.
    #[error("no writable server: {servers} accepted the connection read-only (a standby, or default_transaction_read_only); a process competing for a flag needs the primary in the host list: {}", Chain(.source))]
    ReadOnly {
        /// The servers tried, `host:port`, in order.
        servers: String,
        /// The error of the last attempt.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server accepted the connection but takes no writes (a standby, or
    /// `default_transaction_read_only`), and the settings did not ask to skip such servers (one
    /// host, or `target_session_attrs` other than `read-write`): a process competing there can
    /// never lead, so start refuses it.
    #[error("{servers}: the server that answered takes no writes (a standby, or default_transaction_read_only); a process competing for a flag needs the primary: name it, or list it with the others (read-only hosts of a list are skipped)")]
    ReadOnlyServer {
        /// The servers of the settings, `host:port`, in order.
        servers: String,
    },
    /// The table exists but cannot hold flags; the error names the column.
    #[error("table {table} cannot hold flags: {source}")]
    Shape {
        /// The table, quoted.
        table: String,
        /// Which column is wrong.
        #[source]
        source: ShapeError,
    },
    /// A statement run while setting up failed (creating or inspecting the table, preparing
    /// the statements).
    #[error("{what} failed: {}", Chain(.source))]
    Database {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A step of the start-up (connecting, creating or inspecting the table, preparing) took
    /// longer than its bound: the connect budget (the connect timeout for each host, and one
    /// more for the set-up).
    #[error("{what} took longer than {after:?}; raise the builder's {setting} if the server is far or slow")]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The bound.
        after: Duration,
        /// The setting that sets the bound.
        setting: &'static str,
    },
    /// The server refused the startup parameter `options` (with the server's own statement and
    /// lock timeouts): a connection pooler such as pgbouncer is in between, but the builder
    /// says the connection is direct.
    #[error("the server refused the startup parameter `options`, so a connection pooler is in between: set pooler(Pooler::Transaction) or pooler(Pooler::Session) (or leave it to Pooler::Auto): {}", Chain(.0))]
    PoolerRefusedOptions(#[source] tokio_postgres::Error),
    /// The release statement failed on close: the row stays until its lease expires, so the
    /// next leader waits up to one interval. Leadership was given up all the same.
    #[error("the flag was lowered, but releasing the row failed; others take over when the lease expires")]
    ReleaseFailed,
    /// Close did not finish in time: the flag is lowered and the driver stopped; the row is left
    /// to expire.
    #[error("close did not finish within {0:?}; the flag is lowered, the row is left to expire")]
    CloseTimedOut(Duration),
    /// [`FlagSet::add`](crate::FlagSet::add) was given the name of a flag of the set that is
    /// still running: one process holds a flag once.
    #[error("the set already runs flag {0:?}")]
    DuplicateFlag(String),
    /// The flag was closed (by a clone's `close`, the last handle's drop or the shutdown
    /// token): it no longer competes, so there is no term to wait for.
    #[error("the flag is closed")]
    Closed,
    /// The driver task is gone (it panicked or its runtime shut down).
    #[error("the driver task is gone")]
    DriverGone,
    /// The thread that runs the driver for blocking code (`leadership-blocking`) could not be
    /// started.
    #[error("cannot start the driver's thread: {0}")]
    DriverThread(#[source] std::io::Error),
}

impl Error {
    /// Classifies a failed connection attempt: a refused login (SQLSTATE class 28, e.g. a wrong
    /// password or an unknown role) or anything else.
    pub(crate) fn from_connect(error: tokio_postgres::Error) -> Error {
        if crate::pg::is_login_refused(&error) {
            Error::Authentication(error)
        } else {
            Error::Connect(error)
        }
    }
}
