//! Exit codes, one per kind of failure an operator or a script must tell apart.

use std::fmt;

// The documented exit codes (also in `leadership --help`); 2 is clap's, for bad arguments,
// and 8 is `run --once`'s (`run::LOST`).

/// Invalid configuration: a bad duration, name, table name or URL.
pub const CONFIG: i32 = 3;
/// The server cannot be reached or refuses the login.
pub const CONNECT: i32 = 4;
/// The table exists with the wrong shape.
pub const SHAPE: i32 = 5;
/// `release`: the process named does not hold the flag.
pub const NOT_HOLDER: i32 = 6;
/// `run`: the command cannot be started.
pub const SPAWN: i32 = 7;
/// Anything else that went wrong at run time.
pub const FAILURE: i32 = 1;

/// An error to report on standard error, with its exit code. Its text never includes a
/// password: connection settings are never formatted.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<leadership_tokio::Error> for Failure {
    fn from(e: leadership_tokio::Error) -> Failure {
        use leadership_tokio::Error as E;
        let code = match &e {
            E::Config(_) | E::Table(_) | E::ConnectString(_) => CONFIG,
            E::NoDatabase | E::Authentication(_) | E::Connect(_) | E::Timeout { .. } => CONNECT,
            E::Shape { .. } => SHAPE,
            _ => FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        // Before a session exists, every error is about reaching the server or logging in.
        Failure::new(CONNECT, leadership_tokio::internal::Chain(&e).to_string())
    }
}
