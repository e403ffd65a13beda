//! TLS against a throwaway PostgreSQL that accepts only `hostssl` connections (feature
//! `rustls`): each sslmode connects or fails as libpq's would, a plain login is told apart as
//! refused for lack of TLS, a client certificate is presented, and a flag raises over TLS.
//!
//! Each test starts its own server with certificates made by the `openssl` CLI (a CA, a server
//! certificate for `localhost` and `127.0.0.1`, a client certificate, and a second CA that signed
//! nothing). The server is started here with `initdb` and `pg_ctl` to keep this file on its own.
#![cfg(feature = "rustls")]

use std::error::Error as StdError;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use leadership_tokio::pg::Chain;
use leadership_tokio::tls::{refused_for_lack_of_tls, SslMode, TlsError, TlsSettings};
use leadership_tokio::{Error, Flag};

/// A host name the server's certificate does not name; `hostaddr` still reaches the server.
const FOREIGN_NAME: &str = "db.not-in-the-certificate.test";

/// A PostgreSQL with `ssl = on` whose `pg_hba.conf` allows `postgres` over `hostssl` only, and
/// `certuser` over `hostssl` with a client certificate signed by the CA. Stopped and deleted on
/// drop.
struct TlsServer {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl TlsServer {
    fn start() -> TlsServer {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "leadership-tls-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let server = TlsServer {
            port: free_port(),
            bin: bin_dir(),
            dir,
        };
        server.make_certificates();
        server.init_and_start();
        server
    }

    fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The CA that signed the server's and the client's certificates.
    fn ca(&self) -> PathBuf {
        self.certs().join("ca.crt")
    }

    /// A CA that signed nothing of this server.
    fn other_ca(&self) -> PathBuf {
        self.certs().join("other-ca.crt")
    }

    fn make_certificates(&self) {
        let certs = self.certs();
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(&certs));
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=leadership {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        let leaf = |name: &str, cn: &str, ext: &str| {
            std::fs::write(certs.join(format!("{name}.ext")), ext).unwrap();
            openssl(&[
                "req",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &format!("{name}.ext"),
            ]);
        };
        leaf(
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        leaf(
            "client",
            "certuser",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        chmod(&certs.join("client.key"), 0o600);
    }

    fn init_and_start(&self) {
        let data = self.data();
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.dir));
        }
        run(self
            .server_cmd("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg("-D")
            .arg(&data));
        for file in ["server.crt", "server.key", "ca.crt"] {
            std::fs::copy(self.certs().join(file), data.join(file)).unwrap();
        }
        chmod(&data.join("server.key"), 0o600);
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'ca.crt'\nlc_messages = 'C'\nfsync = off\n",
            self.port,
            self.dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 trust clientcert=verify-ca\n\
             hostssl all postgres 127.0.0.1/32 trust\n",
        )
        .unwrap();
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data));
        }
        run(self
            .server_cmd("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
    }

    /// A server tool, run as `postgres` when we are root (PostgreSQL refuses to run as root).
    fn server_cmd(&self, tool: &str) -> Command {
        let tool = self.bin.join(tool);
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(tool);
            cmd
        } else {
            Command::new(tool)
        }
    }

    /// A key=value connection string as `user` to `host` (reaching 127.0.0.1 whatever the name).
    fn conn(&self, host: &str, user: &str, tls: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user={user} dbname=postgres connect_timeout=10 {tls}",
            self.port
        )
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self
            .server_cmd("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // The uid of this process, without a libc dependency: /proc/self is owned by it.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().unwrap_or_default()
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
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
    UnknownIssuer,
    WrongName,
}

async fn fails_on_the_certificate(stack: Stack, conn: &str, why: Refusal) {
    let expected = match (stack, why) {
        (Stack::Rustls, Refusal::UnknownIssuer) => "UnknownIssuer",
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
    let server = TlsServer::start();
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
            server.port
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
    let server = TlsServer::start();

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
    let server = TlsServer::start();
    let admin = connect(&server.conn("localhost", "postgres", "sslmode=require"))
        .await
        .unwrap();
    admin
        .batch_execute("CREATE ROLE certuser LOGIN")
        .await
        .unwrap();

    let ca = server.ca().display().to_string();
    let without = server.conn(
        "localhost",
        "certuser",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    );
    let certs = server.certs();
    let with = format!(
        "{without} sslcert={} sslkey={}",
        certs.join("client.crt").display(),
        certs.join("client.key").display()
    );
    for &stack in STACKS {
        assert!(
            connect_with(stack, &without).await.is_err(),
            "{stack:?}: certuser connected without a client certificate"
        );
        connects_encrypted_with(stack, &with).await;
    }
}

#[tokio::test]
async fn a_flag_raises_over_tls() {
    let server = TlsServer::start();
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
