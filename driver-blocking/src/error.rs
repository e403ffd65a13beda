//! The errors of the blocking driver: what can go wrong before the flag runs, and on close.
//! Once running, database failures are not errors: the core handles them as inputs and the
//! driver reconnects.

use leadership_core::sql::{ShapeError, TableError};
use leadership_core::ConfigError;

/// Why a flag could not start or close cleanly.
///
/// Messages never contain the password: the connection settings are not printed.
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
    #[error("invalid connection string: {0}")]
    ConnectString(#[source] postgres::Error),
    /// No connection string or `postgres::Config` was given to the builder.
    #[error("no database given: call connect_str or pg_config on the builder")]
    NoDatabase,
    /// The server refused the credentials or the role (SQLSTATE class 28).
    #[error("the database refused the login: {0}")]
    Authentication(#[source] postgres::Error),
    /// The server could not be reached or the connection failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] postgres::Error),
    /// The table exists but cannot hold flags.
    #[error("table {table} cannot hold flags: {source}")]
    Shape {
        /// The table, quoted.
        table: String,
        /// Which column is wrong.
        #[source]
        source: ShapeError,
    },
    /// A statement run while setting up failed (creating or inspecting the table, preparing
    /// the statements, `LISTEN`).
    #[error("{what} failed: {source}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: postgres::Error,
    },
    /// Setting up the first connection (connecting, creating or inspecting the table,
    /// preparing the statements) took longer than the bound: the server or a lock on the
    /// table holds it up.
    #[error("{what} took longer than {after:?}")]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The bound.
        after: std::time::Duration,
    },
    /// The driver's thread could not be spawned.
    #[error("cannot spawn the driver thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The release statement failed on close: the row stays until its lease expires, so the
    /// next leader waits up to one interval. Leadership was given up all the same.
    #[error("the flag was lowered, but releasing the row failed; others take over when the lease expires")]
    ReleaseFailed,
    /// Close did not finish in time (a statement hung): the flag is lowered, the driver
    /// thread was left to finish alone.
    #[error("close did not finish within {0:?}; the flag is lowered, the row is left to expire")]
    CloseTimedOut(std::time::Duration),
    /// The driver thread is gone (it panicked).
    #[error("the driver thread is gone")]
    DriverGone,
}

impl Error {
    /// Classifies a failed connection attempt: a refused login (SQLSTATE class 28) or
    /// anything else.
    pub(crate) fn connect(e: postgres::Error) -> Error {
        if leadership_tokio::pg::is_login_refused(&e) {
            Error::Authentication(e)
        } else {
            Error::Connect(e)
        }
    }
}
