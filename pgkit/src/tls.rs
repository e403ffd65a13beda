//! A throwaway server that accepts only TLS connections, with certificates made by the
//! `openssl` command line for each server.
//!
//! [`Certs::generate`] writes into a fresh temp dir (removed on drop or when the test process
//! dies): a self-signed CA (`ca.crt`), a server certificate for `localhost` and `127.0.0.1`
//! (both as subjectAltName) signed by it (`server.crt`, `server.key`), and a client
//! certificate for the user `postgres` (`client.crt`, `client.key`, CN=postgres) signed by the
//! same CA. Keys are EC P-256 (fast to make); certificates are valid for two days.
//!
//! [`TlsServer::start`] starts a [`PgServer`] with `ssl = on`, the server certificate and key
//! copied into its data dir (mode 0600, owned by the server's user, as PostgreSQL demands),
//! `ssl_ca_file` = the CA (so client certificates are verified when sent), and a `pg_hba.conf`
//! with only `hostssl` lines: a plain connection is refused with
//! `FATAL:  no pg_hba.conf entry for host "127.0.0.1", user "postgres", database "postgres", no
//! encryption` (SQLSTATE 28000, invalid_authorization_specification), which is how a client
//! learns that the server requires TLS: the message ends in `no encryption`.
//! [`TlsServer::start_requiring_client_cert`] uses `cert` authentication instead of `trust`:
//! without a client certificate the server answers `FATAL:  connection requires a valid client
//! certificate`. The kit's own psql for the server ([`PgServer::psql`]) connects with
//! `sslmode=verify-full` against the CA (and with the client certificate when required).

use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pg::{output_text, sanitized, PgError, PgServer, ServerOptions};
use crate::scratch::ScratchDir;

/// A CA and the certificates it signed, in a temp dir; see the module docs.
pub struct Certs {
    dir: ScratchDir,
}

impl Certs {
    /// Makes the CA, server and client certificates with `openssl`.
    pub fn generate() -> Result<Certs, PgError> {
        let dir = ScratchDir::new("certs-")?;
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            d,
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=leadership test CA"],
            ]
            .concat(),
            &["-keyout", "ca.key", "-out", "ca.crt"],
        )?;
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName = DNS:localhost, IP:127.0.0.1\n\
                 extendedKeyUsage = serverAuth\n",
            ),
            ("client", "postgres", "extendedKeyUsage = clientAuth\n"),
        ] {
            let (key, csr, crt, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            let subj = format!("/CN={cn}");
            openssl(
                d,
                &[&["req"][..], &ec, &["-subj", &subj]].concat(),
                &["-keyout", &key, "-out", &csr],
            )?;
            std::fs::write(
                d.join(&extfile),
                format!("basicConstraints = CA:FALSE\n{ext}"),
            )?;
            let sign = ["x509", "-req", "-days", "2", "-CAcreateserial"];
            openssl(
                d,
                &sign,
                &[
                    "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-extfile", &extfile, "-out",
                    &crt,
                ],
            )?;
        }
        // libpq refuses a key file that others may read.
        for key in ["ca.key", "server.key", "client.key"] {
            std::fs::set_permissions(d.join(key), std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(Certs { dir })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate (PEM): what a client verifies the server against
    /// (`sslrootcert`).
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir().join("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir().join("server.key")
    }

    /// A client certificate for user `postgres` (`sslcert`).
    pub fn client_cert(&self) -> PathBuf {
        self.dir().join("client.crt")
    }

    /// Its key (`sslkey`), mode 0600 as libpq demands.
    pub fn client_key(&self) -> PathBuf {
        self.dir().join("client.key")
    }
}

/// Runs `openssl <args> <files>` in `dir`; files are named relative to it.
fn openssl(dir: &Path, args: &[&str], files: &[&str]) -> Result<(), PgError> {
    let mut cmd = sanitized(Command::new("openssl"));
    cmd.current_dir(dir).args(args).args(files);
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PgError::Missing {
            what: "openssl (the command line tool)".into(),
            fix: "install it with `apt-get install openssl`".into(),
        },
        _ => PgError::Io(e),
    })?;
    if !out.status.success() {
        return Err(PgError::Failed {
            what: format!("openssl {}", args.join(" ")),
            log: output_text(&out),
        });
    }
    Ok(())
}

/// A server that only accepts TLS; see the module docs. Derefs to its [`PgServer`].
pub struct TlsServer {
    // Declared first: dropped (stopped) before its certificates go.
    server: PgServer,
    certs: Certs,
}

impl TlsServer {
    /// TLS required (`hostssl ... trust`); a client certificate is optional but verified if
    /// sent.
    pub fn start() -> Result<TlsServer, PgError> {
        TlsServer::start_inner(false)
    }

    /// TLS and a client certificate signed by the CA whose CN is the user name (`hostssl ...
    /// cert`).
    pub fn start_requiring_client_cert() -> Result<TlsServer, PgError> {
        TlsServer::start_inner(true)
    }

    fn start_inner(client_cert: bool) -> Result<TlsServer, PgError> {
        let certs = Certs::generate()?;
        let read = |p: PathBuf| {
            std::fs::read(&p).map_err(|e| PgError::Failed {
                what: format!("reading {}", p.display()),
                log: e.to_string(),
            })
        };
        let method = if client_cert { "cert" } else { "trust" };
        let mut options = ServerOptions::new()
            .config("ssl = on")
            .config("ssl_cert_file = 'server.crt'")
            .config("ssl_key_file = 'server.key'")
            .config("ssl_ca_file = 'ca.crt'")
            .hba(format!(
                "# leadership test kit: TLS only\nhostssl all all 127.0.0.1/32 {method}\n"
            ))
            .file("server.crt", read(certs.server_cert())?)
            .file("server.key", read(certs.server_key())?)
            .file("ca.crt", read(certs.ca())?)
            .client_env("PGSSLMODE", "verify-full")
            .client_env("PGSSLROOTCERT", certs.ca().display().to_string());
        if client_cert {
            options = options
                .client_env("PGSSLCERT", certs.client_cert().display().to_string())
                .client_env("PGSSLKEY", certs.client_key().display().to_string());
        }
        let server = PgServer::start_with(&options)?;
        Ok(TlsServer { server, certs })
    }

    pub fn certs(&self) -> &Certs {
        &self.certs
    }

    /// The CA's PEM file, to verify the server (`sslrootcert`).
    pub fn ca_file(&self) -> PathBuf {
        self.certs.ca()
    }

    /// A connection string with `sslmode=verify-full` and `sslrootcert` (for libpq; tokio-postgres
    /// needs a TLS connector of its own and ignores `sslrootcert`).
    pub fn conn_string_verify_full(&self) -> String {
        format!(
            "{} sslmode=verify-full sslrootcert={}",
            self.server.conn_string(),
            self.certs.ca().display()
        )
    }

    pub fn server(&self) -> &PgServer {
        &self.server
    }
}

impl Deref for TlsServer {
    type Target = PgServer;

    fn deref(&self) -> &PgServer {
        &self.server
    }
}
