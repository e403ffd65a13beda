//! TLS the way libpq users expect it (features `rustls` and `native-tls`): `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` from a connection string or from `PGSSLMODE`,
//! `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`, and a connector that checks what the mode asks
//! for: `TlsSettings::connector` with rustls (feature `rustls`, no system library needed) or
//! `TlsSettings::native_tls_connector` with the platform's library (feature `native-tls`:
//! OpenSSL on Linux, whose headers it needs to build).
//!
//! `tokio_postgres::Config` knows only `sslmode` `disable`, `prefer` and `require` and refuses the
//! other TLS keys, so [`TlsSettings::from_conn_str`] takes them out of the string, hands the rest
//! to `tokio_postgres` and returns both halves: the `Config` (with the matching
//! `tokio_postgres` mode) for [`FlagBuilder::pg_config`](crate::FlagBuilder::pg_config) and the
//! settings whose connector goes to [`start`](crate::FlagBuilder::start).
//!
//! ```no_run
//! # #[cfg(feature = "rustls")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use leadership_tokio::{tls::TlsSettings, Flag};
//!
//! let conn = "host=db.example.com user=app dbname=app sslmode=verify-full sslrootcert=/etc/ca.pem";
//! let (pg, tls) = TlsSettings::from_conn_str(conn, |name| std::env::var(name).ok())?;
//! let flag = Flag::builder("nightly-report", "pod-a")
//!     .pg_config(pg)
//!     .start(tls.connector()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # How each mode behaves
//!
//! | `sslmode` | TLS | server certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `allow`, `prefer` (default) | if the server offers it, else plain | not checked, unless a root certificate file is given or `~/.postgresql/root.crt` exists: then as `verify-ca` |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | chain checked against the roots; the host name is not |
//! | `verify-full` | always | chain and host name (or IP address) checked |
//!
//! The roots are `sslrootcert` when given (a PEM file, or `system` for the system's store),
//! else `~/.postgresql/root.crt` when it exists, as libpq. Where libpq then fails, `verify-full`
//! uses the system's store (read with `rustls-native-certs`, which honours `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` like OpenSSL) and `verify-ca` fails: a public CA signs certificates for anyone's
//! host names, so checking only its chain proves nothing. For the same reason `sslrootcert=system`
//! makes `verify-full` the default and refuses weaker modes, as libpq 16.
//!
//! A client certificate is `sslcert` with `sslkey`, else `~/.postgresql/postgresql.crt` with
//! `~/.postgresql/postgresql.key` when they exist. As libpq, a key file must not be readable by
//! group or others (`0600`; `0640` when owned by root).
//!
//! Differences from libpq: `allow` behaves as `prefer` (`tokio_postgres` cannot try a plain
//! connection first), `prefer` does not retry without TLS when the server refuses the encrypted
//! login, an `sslcert` or `sslkey` that names a missing file is an error rather than ignored, and
//! the other TLS keys (`sslpassword`, `sslcrl`, `sslcrldir`, `sslsni`, `sslcertmode`,
//! `sslcompression`, `ssl_min_protocol_version`, `ssl_max_protocol_version`) are refused.
//! Both connectors use TLS 1.2 or later.

use std::path::{Path, PathBuf};
use std::str::FromStr;

mod conn_str;
#[cfg(feature = "rustls")]
mod connector;
mod files;
#[cfg(feature = "native-tls")]
mod native;

#[cfg(feature = "rustls")]
pub use connector::RustlsConnector;

/// libpq's `sslmode`: whether to use TLS and what to check of the server's certificate.
///
/// ```
/// use leadership_tokio::tls::SslMode;
/// assert_eq!("verify-full".parse::<SslMode>().unwrap(), SslMode::VerifyFull);
/// assert_eq!(SslMode::VerifyCa.to_string(), "verify-ca");
/// assert!("verify_full".parse::<SslMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// A plain connection.
    Disable,
    /// Behaves as [`Prefer`](SslMode::Prefer): libpq tries a plain connection first, which
    /// `tokio_postgres` cannot do.
    Allow,
    /// TLS if the server offers it, else plain (the default).
    #[default]
    Prefer,
    /// TLS; the certificate is checked as in `verify-ca` only when a root certificate file is
    /// given or `~/.postgresql/root.crt` exists.
    Require,
    /// TLS, and the server's certificate chain is checked against the roots; its host name
    /// is not.
    VerifyCa,
    /// TLS, and the certificate's chain and host name (or IP address) are checked.
    VerifyFull,
}

impl SslMode {
    /// Every mode, weakest first.
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The name libpq uses, e.g. `verify-full`.
    ///
    /// ```
    /// assert_eq!(leadership_tokio::tls::SslMode::Prefer.as_str(), "prefer");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The `tokio_postgres` mode that negotiates TLS as this one does: `verify-ca` and
    /// `verify-full` are `Require` (the checks are the connector's).
    ///
    /// ```
    /// use leadership_tokio::tls::SslMode;
    /// use tokio_postgres::config::SslMode as PgMode;
    /// assert_eq!(SslMode::VerifyFull.negotiation(), PgMode::Require);
    /// assert_eq!(SslMode::Allow.negotiation(), PgMode::Prefer);
    /// ```
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            SslMode::Disable => Pg::Disable,
            SslMode::Allow | SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<SslMode, TlsError> {
        SslMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| TlsError::UnknownMode(s.to_string()))
    }
}

/// Where the trusted roots come from.
///
/// ```
/// use leadership_tokio::tls::RootCert;
/// let roots = RootCert::File("/etc/ssl/pg-ca.pem".into());
/// assert_ne!(roots, RootCert::System);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more CA certificates (`sslrootcert=/path`).
    File(PathBuf),
    /// The system's store (`sslrootcert=system`), read with `rustls-native-certs`.
    System,
}

/// The TLS settings of a connection: mode, roots and client certificate. Build them from a
/// connection string with [`from_conn_str`](TlsSettings::from_conn_str), or by hand.
///
/// ```
/// use leadership_tokio::tls::{RootCert, SslMode, TlsSettings};
/// let tls = TlsSettings::new(SslMode::VerifyFull)
///     .with_root_cert(RootCert::File("/etc/ssl/pg-ca.pem".into()))
///     .with_client_cert("/etc/app/client.crt", "/etc/app/client.key");
/// assert_eq!(tls.mode(), SslMode::VerifyFull);
/// let mut pg = tokio_postgres::Config::new();
/// tls.configure(&mut pg);
/// assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    mode: SslMode,
    root_cert: Option<RootCert>,
    client: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    /// Settings of `mode`, without roots (see the [module](self) docs for what that means) and without a client certificate. Unlike
    /// [`from_conn_str`](TlsSettings::from_conn_str), no default file is looked up.
    ///
    /// ```
    /// let tls = leadership_tokio::tls::TlsSettings::new(leadership_tokio::tls::SslMode::Require);
    /// assert!(tls.root_cert().is_none());
    /// ```
    pub fn new(mode: SslMode) -> TlsSettings {
        TlsSettings {
            mode,
            root_cert: None,
            client: None,
        }
    }

    /// The trusted roots.
    ///
    /// ```
    /// use leadership_tokio::tls::{RootCert, SslMode, TlsSettings};
    /// let tls = TlsSettings::new(SslMode::VerifyFull).with_root_cert(RootCert::System);
    /// assert_eq!(tls.root_cert(), Some(&RootCert::System));
    /// ```
    #[must_use]
    pub fn with_root_cert(mut self, roots: RootCert) -> TlsSettings {
        self.root_cert = Some(roots);
        self
    }

    /// A client certificate (PEM, the chain after the certificate if any) and its private key
    /// (PEM: PKCS#8, PKCS#1 or SEC1), for servers whose `pg_hba.conf` asks for one.
    ///
    /// ```
    /// use leadership_tokio::tls::{SslMode, TlsSettings};
    /// let tls = TlsSettings::new(SslMode::Require)
    ///     .with_client_cert("/etc/app/c.crt", "/etc/app/c.key");
    /// assert_eq!(tls.client_key(), Some(std::path::Path::new("/etc/app/c.key")));
    /// ```
    #[must_use]
    pub fn with_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> TlsSettings {
        self.client = Some((cert.into(), key.into()));
        self
    }

    /// The mode.
    ///
    /// ```
    /// use leadership_tokio::tls::{SslMode, TlsSettings};
    /// assert_eq!(TlsSettings::default().mode(), SslMode::Prefer);
    /// ```
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The trusted roots, if any were given or found.
    ///
    /// ```
    /// assert!(leadership_tokio::tls::TlsSettings::default().root_cert().is_none());
    /// ```
    pub fn root_cert(&self) -> Option<&RootCert> {
        self.root_cert.as_ref()
    }

    /// The client certificate file, if any.
    ///
    /// ```
    /// assert!(leadership_tokio::tls::TlsSettings::default().client_cert().is_none());
    /// ```
    pub fn client_cert(&self) -> Option<&Path> {
        self.client.as_ref().map(|(cert, _)| cert.as_path())
    }

    /// The client key file, if any.
    ///
    /// ```
    /// assert!(leadership_tokio::tls::TlsSettings::default().client_key().is_none());
    /// ```
    pub fn client_key(&self) -> Option<&Path> {
        self.client.as_ref().map(|(_, key)| key.as_path())
    }

    /// Sets the `tokio_postgres` mode that negotiates TLS as this mode does
    /// ([`SslMode::negotiation`]); [`from_conn_str`](TlsSettings::from_conn_str) already did.
    ///
    /// ```
    /// use leadership_tokio::tls::{SslMode, TlsSettings};
    /// let mut pg = tokio_postgres::Config::new();
    /// TlsSettings::new(SslMode::Disable).configure(&mut pg);
    /// assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    /// ```
    pub fn configure(&self, pg: &mut tokio_postgres::Config) {
        pg.ssl_mode(self.mode.negotiation());
    }

    /// Parses a libpq connection string, key=value (`host=db sslmode=verify-full
    /// sslrootcert=/etc/ca.pem`) or URL (`postgres://app@db/app?sslmode=verify-full&sslrootcert=/etc/ca.pem`),
    /// into the `tokio_postgres::Config` of everything but the TLS keys (with the matching
    /// `tokio_postgres` mode set) and the TLS settings.
    ///
    /// A TLS key missing from the string is read from the environment through `env`
    /// (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`); the string wins, as libpq. `env` is
    /// also asked for `HOME`, to find `~/.postgresql/root.crt`, `postgresql.crt` and
    /// `postgresql.key` (used when they exist, see the [module](self) docs). Pass
    /// `|name| std::env::var(name).ok()` for the process's environment. An empty value counts as
    /// not set. Files are only looked up here; the connector reads them.
    ///
    /// `FlagBuilder::connect_str` hands its string to `tokio_postgres` as it is, so it refuses
    /// `verify-ca`, `verify-full` and the file keys: give this function's `Config` to
    /// [`FlagBuilder::pg_config`](crate::FlagBuilder::pg_config) instead.
    ///
    /// Errors name the key and the file, never a value of another key (so never a password).
    ///
    /// ```
    /// use leadership_tokio::tls::{RootCert, SslMode, TlsSettings};
    /// let env = |name: &str| (name == "PGSSLMODE").then(|| "require".to_string());
    ///
    /// let (pg, tls) = TlsSettings::from_conn_str(
    ///     "postgres://app:secret@db/app?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem", env)?;
    /// assert_eq!(tls.mode(), SslMode::VerifyCa);
    /// assert_eq!(tls.root_cert(), Some(&RootCert::File("/etc/ca.pem".into())));
    /// assert_eq!(pg.get_dbname(), Some("app"));
    ///
    /// let (_, tls) = TlsSettings::from_conn_str("host=db user=app", env)?;
    /// assert_eq!(tls.mode(), SslMode::Require);
    ///
    /// let err = TlsSettings::from_conn_str("host=db sslmode=strict", env).unwrap_err();
    /// assert!(err.to_string().contains("sslmode"));
    /// # Ok::<(), leadership_tokio::tls::TlsError>(())
    /// ```
    pub fn from_conn_str(
        conn: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(tokio_postgres::Config, TlsSettings), TlsError> {
        let split = conn_str::split(conn)?;
        let mut pg =
            tokio_postgres::Config::from_str(&split.rest).map_err(TlsError::ConnectString)?;
        let setting = |key: conn_str::Setting| -> Option<String> {
            split
                .get(key)
                .map(str::to_string)
                .or_else(|| env(key.env_var()))
                .filter(|value| !value.is_empty())
        };
        let home = env("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from);
        let default_file = |name: &str| -> Option<PathBuf> {
            let path = home.as_ref()?.join(".postgresql").join(name);
            path.is_file().then_some(path)
        };

        let root_cert = match setting(conn_str::Setting::RootCert) {
            Some(value) if value == "system" => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
            None => None,
        };
        let mode = match setting(conn_str::Setting::Mode) {
            Some(mode) => mode.parse()?,
            None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
            None => SslMode::default(),
        };
        if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(TlsError::WeakModeWithSystemRoots(mode));
        }
        let mut tls = TlsSettings::new(mode);
        tls.configure(&mut pg);
        if mode == SslMode::Disable {
            return Ok((pg, tls));
        }

        tls.root_cert = root_cert.or_else(|| default_file("root.crt").map(RootCert::File));
        if mode == SslMode::VerifyCa && tls.root_cert.is_none() {
            return Err(TlsError::NoRootCert);
        }
        let cert = setting(conn_str::Setting::Cert).map(PathBuf::from);
        let key = setting(conn_str::Setting::Key).map(PathBuf::from);
        tls.client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(cert), None) => Some((
                cert.clone(),
                default_file("postgresql.key").ok_or(TlsError::CertWithoutKey(cert))?,
            )),
            (None, Some(key)) => Some((
                default_file("postgresql.crt")
                    .ok_or_else(|| TlsError::KeyWithoutCert(key.clone()))?,
                key,
            )),
            (None, None) => match default_file("postgresql.crt") {
                Some(cert) => Some((
                    cert.clone(),
                    default_file("postgresql.key").ok_or(TlsError::CertWithoutKey(cert))?,
                )),
                None => None,
            },
        };
        Ok((pg, tls))
    }
}

/// Whether a failed connection was refused because it was not encrypted: the server has a
/// `hostssl` line for this host, user and database but no `host` or `hostnossl` one, and answers
/// a plain connection with SQLSTATE 28000 and `no pg_hba.conf entry for host "…", user "…",
/// database "…", no encryption` (`…, SSL off` before PostgreSQL 14). Looks through the error's
/// causes, so it takes a `tokio_postgres::Error` or a [`crate::Error`] alike.
///
/// The message is the server's: with `lc_messages` other than English this says `false`.
///
/// ```no_run
/// # async fn demo() {
/// use leadership_tokio::{tls::refused_for_lack_of_tls, Flag};
/// match Flag::builder("report", "pod-a").connect_str("host=db user=app sslmode=disable")
///     .start(tokio_postgres::NoTls).await
/// {
///     Err(e) if refused_for_lack_of_tls(&e) => {
///         eprintln!("the server requires TLS: set sslmode=require (or verify-full)");
///     }
///     Err(e) => eprintln!("cannot start: {e}"),
///     Ok(flag) => drop(flag),
/// }
/// # }
/// ```
pub fn refused_for_lack_of_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        let db = error
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .or_else(|| error.downcast_ref::<tokio_postgres::error::DbError>());
        if let Some(db) = db {
            let message = db.message();
            return *db.code()
                == tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && message.starts_with("no pg_hba.conf entry for host")
                && (message.ends_with(", no encryption") || message.ends_with(", SSL off"));
        }
        cause = error.source();
    }
    false
}

/// Why TLS settings could not be read or a connector built. Messages name the setting and the
/// file; they never include a password, nor the content of a key file.
///
/// ```
/// use leadership_tokio::tls::{TlsError, TlsSettings};
/// let err = TlsSettings::from_conn_str("host=db sslcert=/etc/c.crt", |_| None).unwrap_err();
/// assert!(matches!(err, TlsError::CertWithoutKey(_)));
/// assert_eq!(err.to_string(), "sslcert /etc/c.crt given without sslkey");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `sslmode` is not one of libpq's.
    #[error("sslmode {0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    UnknownMode(String),
    /// A libpq TLS key this connector does not implement.
    #[error("{0} is not supported by leadership-tokio: remove it from the connection string")]
    Unsupported(&'static str),
    /// The connection string does not parse; the message names the key or the position, never
    /// a value.
    #[error("invalid connection string: {0}")]
    Syntax(&'static str),
    /// The connection string, less its TLS keys, was refused by `tokio_postgres`.
    #[error("invalid connection string: {}", crate::pg::Chain(.0))]
    ConnectString(#[source] tokio_postgres::Error),
    /// `sslrootcert=system` with a mode weaker than `verify-full`.
    #[error("sslmode {0} may not be used with sslrootcert=system: use verify-full")]
    WeakModeWithSystemRoots(SslMode),
    /// `verify-ca` without a root certificate file.
    #[error("sslmode verify-ca needs a root certificate: set sslrootcert or create ~/.postgresql/root.crt (or use verify-full with the system's roots)")]
    NoRootCert,
    /// A client certificate without its key.
    #[error("sslcert {} given without sslkey", .0.display())]
    CertWithoutKey(PathBuf),
    /// A client key without its certificate.
    #[error("sslkey {} given without sslcert", .0.display())]
    KeyWithoutCert(PathBuf),
    /// A file could not be read.
    #[error("{setting} {}: {source}", path.display())]
    File {
        /// `sslrootcert`, `sslcert` or `sslkey`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key: not PEM, none of the expected kind, or one
    /// that rustls refuses. For a key file the cause is not given (it could quote the key).
    #[error("{setting} {}: {what}", path.display())]
    Content {
        /// `sslrootcert`, `sslcert` or `sslkey`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The key file can be read by group or others.
    #[error("sslkey {}: the file has group or world access; it must have permissions u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) or less if owned by root", .0.display())]
    KeyPermissions(PathBuf),
    /// The system's store gave no usable root certificate.
    #[error("sslrootcert system: no usable certificate in the system's store{0}")]
    SystemRoots(String),
    /// rustls refused the configuration (e.g. a client certificate that does not match its
    /// key).
    #[cfg(feature = "rustls")]
    #[error("TLS configuration: {0}")]
    Rustls(#[source] rustls::Error),
    /// native-tls refused the configuration.
    #[cfg(feature = "native-tls")]
    #[error("TLS configuration: {0}")]
    NativeTls(#[source] native_tls::Error),
}

#[cfg(test)]
mod tests;
