//! Exit codes, one per kind of failure an operator or a script must tell apart. The tool's own
//! are in the sysexits band (64-78), so that `run` can pass its command's status through and a
//! script can still tell the tool's failures from the command's.

use std::fmt;

/// Bad arguments (EX_USAGE).
pub const USAGE: i32 = 64;
/// The table exists with the wrong shape (EX_DATAERR).
pub const SHAPE: i32 = 65;
/// `release`: the process named does not hold the flag (EX_NOUSER).
pub const NOT_HOLDER: i32 = 67;
/// The server cannot be reached, or not in time (EX_UNAVAILABLE).
pub const UNAVAILABLE: i32 = 69;
/// Anything else that went wrong at run time (EX_SOFTWARE).
pub const FAILURE: i32 = 70;
/// `run`: the command cannot be started (EX_OSERR).
pub const SPAWN: i32 = 71;
/// `run --once`: leadership ended (or was at risk) while the command ran (EX_IOERR).
pub const LOST: i32 = 74;
/// `run --wait`: another process holds the flag (EX_TEMPFAIL: try again later).
pub const HELD: i32 = 75;
/// The server refused the login (credentials, role, TLS required) (EX_NOPERM).
pub const NO_PERMISSION: i32 = 77;
/// Invalid configuration: a bad duration, name, table name, URL or TLS setting (EX_CONFIG).
pub const CONFIG: i32 = 78;

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
        if leadership_tokio::tls::refused_for_lack_of_tls(&e) {
            return Failure::new(
                NO_PERMISSION,
                format!("{e}; the server requires TLS: set sslmode=require (or verify-full with sslrootcert) in --url, or PGSSLMODE"),
            );
        }
        let code = match &e {
            E::Config(_) | E::Table(_) | E::ConnectString(_) | E::PoolerRefusedOptions(_) => CONFIG,
            E::NoDatabase => CONFIG,
            E::Authentication(_) => NO_PERMISSION,
            E::Connect(_) | E::Timeout { .. } | E::ReadOnly { .. } | E::ReadOnlyServer { .. } => {
                UNAVAILABLE
            }
            E::Shape { .. } => SHAPE,
            _ => FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<leadership_tokio::tls::TlsError> for Failure {
    fn from(e: leadership_tokio::tls::TlsError) -> Failure {
        Failure::new(CONFIG, format!("TLS settings: {e}"))
    }
}
