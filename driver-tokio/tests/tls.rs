//! TLS against a throwaway PostgreSQL that accepts only `hostssl` connections (feature
//! `rustls`): each sslmode connects or fails as libpq's would, a plain login is told apart as
//! refused for lack of TLS, a client certificate is presented, and a flag raises over TLS.
//!
//! Each test starts its own server from the server kit (`leadership-pgkit`), with certificates made by the `openssl`
//! CLI (a CA, a server certificate for `localhost` and `127.0.0.1`, a client certificate, and a
//! second CA that signed nothing).

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use leadership_pgkit::tls::{Certs, TlsServer};

use leadership_tokio::internal::Chain;
use leadership_tokio::tls::{refused_for_lack_of_tls, SslMode, TlsError, TlsSettings};
use leadership_tokio::{Error, Flag};

/// A host name the server's certificate does not name; `hostaddr` still reaches the server.
const FOREIGN_NAME: &str = "db.not-in-the-certificate.test";

/// The kit's TLS-only server (`hostssl` lines only), with a second CA that signed nothing.
struct Server {
    tls: TlsServer,
    other: Certs,
}

impl Server {
    fn start() -> Server {
        Server::with(TlsServer::start())
    }

    /// A server that asks every login for a client certificate signed by its CA.
    fn requiring_client_cert() -> Server {
        Server::with(TlsServer::start_requiring_client_cert())
    }

    fn with(tls: Result<TlsServer, leadership_pgkit::pg::PgError>) -> Server {
        Server {
            tls: tls.unwrap_or_else(|e| panic!("TLS server: {e}")),
            other: Certs::generate().unwrap_or_else(|e| panic!("certificates: {e}")),
        }
    }

    fn ca(&self) -> PathBuf {
        self.tls.ca_file()
    }

    fn other_ca(&self) -> PathBuf {
        self.other.ca()
    }

    /// A key=value connection string as `user` to `host` (reaching 127.0.0.1 whatever the name).
    fn conn(&self, host: &str, user: &str, tls: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user={user} dbname=postgres connect_timeout=10 {tls}",
            self.tls.port()
        )
    }
}

#[derive(Debug)]
enum ConnectError {
    Settings(TlsError),
    Server(tokio_postgres::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Settings(e) => write!(f, "{e}"),
            ConnectError::Server(e) => write!(f, "{}", Chain(e)),
        }
    }
}

/// The TLS library a connection goes through: rustls always, native-tls too when its feature is
/// on (`--features rustls,native-tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Rustls,
    #[cfg(feature = "native-tls")]
    NativeTls,
}

const STACKS: &[Stack] = &[
    Stack::Rustls,
    #[cfg(feature = "native-tls")]
    Stack::NativeTls,
];

/// Connects the way a user of the module would: settings from the string (the environment left
/// out, so this machine's `PGSSL*` and `~/.postgresql` play no part), then its connector.
async fn connect(conn: &str) -> Result<tokio_postgres::Client, ConnectError> {
    connect_with(Stack::Rustls, conn).await
}

async fn connect_with(stack: Stack, conn: &str) -> Result<tokio_postgres::Client, ConnectError> {
    let (pg, tls) = TlsSettings::from_conn_str(conn, |_| None).map_err(ConnectError::Settings)?;
    let client = match stack {
        Stack::Rustls => {
            let connector = tls.connector().map_err(ConnectError::Settings)?;
            let (client, connection) = pg.connect(connector).await.map_err(ConnectError::Server)?;
            tokio::spawn(connection);
            client
        }
        #[cfg(feature = "native-tls")]
        Stack::NativeTls => {
            let connector = tls.native_tls_connector().map_err(ConnectError::Settings)?;
            let (client, connection) = pg.connect(connector).await.map_err(ConnectError::Server)?;
            tokio::spawn(connection);
            client
        }
    };
    Ok(client)
}

/// Whether this session's backend reports TLS in `pg_stat_ssl`.
async fn encrypted(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn connects_encrypted_with(stack: Stack, conn: &str) {
    let client = connect_with(stack, conn)
        .await
        .unwrap_or_else(|e| panic!("{stack:?} {conn}: {e}"));
    assert!(encrypted(&client).await, "{stack:?} {conn}: not encrypted");
}

/// Why a certificate is refused, in the words of each library.
#[derive(Clone, Copy)]
enum Refusal {
    /// A CA that did not sign the server's certificate (the kit's other CA has the same name,
    /// so rustls finds it and the signature does not match).
    UnknownIssuer,
    WrongName,
}

async fn fails_on_the_certificate(stack: Stack, conn: &str, why: Refusal) {
    let expected = match (stack, why) {
        (Stack::Rustls, Refusal::UnknownIssuer) => "BadSignature",
        (Stack::Rustls, Refusal::WrongName) => "certificate not valid for name",
        #[cfg(feature = "native-tls")]
        (Stack::NativeTls, Refusal::UnknownIssuer) => "certificate verify failed",
        #[cfg(feature = "native-tls")]
        (Stack::NativeTls, Refusal::WrongName) => "hostname mismatch",
    };
    match connect_with(stack, conn).await {
        Err(ConnectError::Server(e)) => {
            let message = Chain(&e).to_string();
            assert!(message.contains(expected), "{stack:?} {conn}: {message}");
        }
        Err(e) => panic!("{stack:?} {conn}: failed before connecting: {e}"),
        Ok(_) => panic!("{stack:?} {conn}: connected"),
    }
}

#[tokio::test]
async fn each_sslmode_checks_the_server_as_libpq_does() {
    let server = Server::start();
    let ca = server.ca().display().to_string();
    let other_ca = server.other_ca().display().to_string();

    for &stack in STACKS {
        // require: encrypted, nothing checked, whatever the name.
        connects_encrypted_with(
            stack,
            &server.conn("localhost", "postgres", "sslmode=require"),
        )
        .await;
        connects_encrypted_with(
            stack,
            &server.conn(FOREIGN_NAME, "postgres", "sslmode=require"),
        )
        .await;
        // prefer (the default): the server offers TLS, so TLS.
        connects_encrypted_with(
            stack,
            &server.conn("localhost", "postgres", "sslmode=prefer"),
        )
        .await;
        connects_encrypted_with(stack, &server.conn("localhost", "postgres", "")).await;

        // verify-full: chain and name, for a DNS name and an IP address.
        for host in ["localhost", "127.0.0.1"] {
            let tls = format!("sslmode=verify-full sslrootcert={ca}");
            connects_encrypted_with(stack, &server.conn(host, "postgres", &tls)).await;
        }
        let url = format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
            server.tls.port()
        );
        connects_encrypted_with(stack, &url).await;
        fails_on_the_certificate(
            stack,
            &server.conn(
                "localhost",
                "postgres",
                &format!("sslmode=verify-full sslrootcert={other_ca}"),
            ),
            Refusal::UnknownIssuer,
        )
        .await;
        fails_on_the_certificate(
            stack,
            &server.conn(
                FOREIGN_NAME,
                "postgres",
                &format!("sslmode=verify-full sslrootcert={ca}"),
            ),
            Refusal::WrongName,
        )
        .await;

        // verify-ca: the chain only, so a name the certificate does not hold passes.
        connects_encrypted_with(
            stack,
            &server.conn(
                FOREIGN_NAME,
                "postgres",
                &format!("sslmode=verify-ca sslrootcert={ca}"),
            ),
        )
        .await;
        fails_on_the_certificate(
            stack,
            &server.conn(
                FOREIGN_NAME,
                "postgres",
                &format!("sslmode=verify-ca sslrootcert={other_ca}"),
            ),
            Refusal::UnknownIssuer,
        )
        .await;

        // require with a root certificate checks the chain, as libpq (verify-ca).
        connects_encrypted_with(
            stack,
            &server.conn(
                FOREIGN_NAME,
                "postgres",
                &format!("sslmode=require sslrootcert={ca}"),
            ),
        )
        .await;
        fails_on_the_certificate(
            stack,
            &server.conn(
                "localhost",
                "postgres",
                &format!("sslmode=require sslrootcert={other_ca}"),
            ),
            Refusal::UnknownIssuer,
        )
        .await;
    }
}

#[tokio::test]
async fn a_plain_login_is_refused_and_told_apart_as_lacking_tls() {
    let server = Server::start();

    let conn = server.conn("localhost", "postgres", "sslmode=disable");
    let Err(ConnectError::Server(e)) = connect(&conn).await else {
        panic!("{conn}: a plain connection was not refused by the server");
    };
    let db = e.as_db_error().expect("the server's refusal");
    eprintln!(
        "the server says: {} (SQLSTATE {})",
        db.message(),
        db.code().code()
    );
    assert_eq!(db.code().code(), "28000");
    assert_eq!(
        db.message(),
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"postgres\", database \"postgres\", no encryption"
    );
    assert!(refused_for_lack_of_tls(&e));

    // Through the driver's error too.
    let started = Flag::builder("tls", "pod-a")
        .connect_str(&conn)
        .start(tokio_postgres::NoTls)
        .await;
    let Err(err) = started else {
        panic!("a flag started over a plain connection");
    };
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    assert!(refused_for_lack_of_tls(&err), "{err}");

    // Other refusals are not mistaken for it: an encrypted login that no line allows.
    let conn = server.conn("localhost", "nobody", "sslmode=require");
    let Err(ConnectError::Server(e)) = connect(&conn).await else {
        panic!("{conn}: connected");
    };
    assert!(e.as_db_error().is_some(), "{}", Chain(&e));
    assert!(!refused_for_lack_of_tls(&e), "{}", Chain(&e));
    let err: &(dyn StdError + 'static) = &std::io::Error::other("unrelated");
    assert!(!refused_for_lack_of_tls(err));
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_the_server_asks_for_one() {
    let server = Server::requiring_client_cert();
    let ca = server.ca().display().to_string();
    let without = server.conn(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    );
    let certs = server.tls.certs();
    let with = format!(
        "{without} sslcert={} sslkey={}",
        certs.client_cert().display(),
        certs.client_key().display()
    );
    for &stack in STACKS {
        assert!(
            connect_with(stack, &without).await.is_err(),
            "{stack:?}: connected without a client certificate"
        );
        connects_encrypted_with(stack, &with).await;
    }
}

#[tokio::test]
async fn a_flag_raises_over_tls() {
    let server = Server::start();
    let ca = server.ca().display().to_string();

    // connect_str with a string tokio_postgres understands; the root certificate from the
    // environment turns `require` into a chain check, as libpq's PGSSLROOTCERT would.
    let conn = server.conn("localhost", "postgres", "sslmode=require");
    let env = |name: &str| (name == "PGSSLROOTCERT").then(|| ca.clone());
    let (_, tls) = TlsSettings::from_conn_str(&conn, env).unwrap();
    assert_eq!(tls.mode(), SslMode::Require);
    let flag = Flag::builder("tls", "pod-a")
        .connect_str(&conn)
        .interval(Duration::from_secs(2))
        .start(tls.connector().unwrap())
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let guard = tokio::time::timeout(Duration::from_secs(10), flag.raised())
        .await
        .expect("raised within 10 s")
        .unwrap();
    assert!(flag.is_raised());
    drop(guard);
    flag.close().await.unwrap();

    // verify-full through pg_config, the way for every TLS key.
    let conn = server.conn(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    );
    let (pg, tls) = TlsSettings::from_conn_str(&conn, |_| None).unwrap();
    let flag = Flag::builder("tls", "pod-b")
        .pg_config(pg)
        .interval(Duration::from_secs(2))
        .start(tls.connector().unwrap())
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    tokio::time::timeout(Duration::from_secs(10), flag.raised())
        .await
        .expect("raised within 10 s")
        .unwrap();
    flag.close().await.unwrap();
}
