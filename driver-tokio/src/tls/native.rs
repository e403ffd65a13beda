//! The native-tls connector of [`TlsSettings`] (OpenSSL on Linux): the same settings and checks
//! as the rustls one, through native-tls's switches.

use std::path::Path;

use native_tls::{Certificate, Identity, Protocol, TlsConnector};
use postgres_native_tls::MakeTlsConnector;

use super::files::{check_key_permissions, content, read};
use super::{RootCert, SslMode, TlsError, TlsSettings};

impl TlsSettings {
    /// A `tokio_postgres` TLS connector on the platform's TLS library (feature `native-tls`;
    /// OpenSSL on Linux, TLS 1.2 or later) that checks the server's certificate as
    /// the rustls `connector` does: nothing without roots, the chain with roots,
    /// the name too for `verify-full`. `RootCert::System` and `verify-full` without roots use
    /// the library's own store. The client key must be PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use leadership_tokio::tls::TlsSettings;
    /// let conn = "host=db.example.com user=app sslmode=verify-full sslrootcert=/etc/ca.pem";
    /// let (pg, tls) = TlsSettings::from_conn_str(conn, |name| std::env::var(name).ok())?;
    /// let flag = leadership_tokio::Flag::builder("report", "pod-a")
    ///     .pg_config(pg)
    ///     .start(tls.native_tls_connector()?)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn native_tls_connector(&self) -> Result<MakeTlsConnector, TlsError> {
        let mut builder = TlsConnector::builder();
        builder.min_protocol_version(Some(Protocol::Tlsv12));
        let roots = match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) => None,
            (SslMode::VerifyCa, None) => return Err(TlsError::NoRootCert),
            (SslMode::VerifyFull, None) => Some(&RootCert::System),
            (_, roots) => roots.as_ref(),
        };
        match roots {
            None => {
                builder.danger_accept_invalid_certs(true);
            }
            Some(RootCert::System) => {}
            Some(RootCert::File(path)) => {
                builder.disable_built_in_roots(true);
                for cert in certificates("sslrootcert", path)? {
                    builder.add_root_certificate(cert);
                }
            }
        }
        if self.mode != SslMode::VerifyFull {
            builder.danger_accept_invalid_hostnames(true);
        }
        if let Some((cert, key)) = &self.client {
            if self.mode != SslMode::Disable {
                builder.identity(identity(cert, key)?);
            }
        }
        let connector = builder.build().map_err(TlsError::NativeTls)?;
        Ok(MakeTlsConnector::new(connector))
    }
}

/// Every certificate of a PEM file (native-tls reads one PEM block at a time).
fn certificates(setting: &'static str, path: &Path) -> Result<Vec<Certificate>, TlsError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let pem = read(setting, path)?;
    let text = String::from_utf8_lossy(&pem);
    let mut certs = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(content(setting, path, "a certificate has no END line"));
        };
        let block = &rest[start..start + len + END.len()];
        certs.push(
            Certificate::from_pem(block.as_bytes())
                .map_err(|e| content(setting, path, format!("unusable certificate: {e}")))?,
        );
        rest = &rest[start + len + END.len()..];
    }
    if certs.is_empty() {
        return Err(content(setting, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    certificates("sslcert", cert)?;
    let chain = read("sslcert", cert)?;
    check_key_permissions(key)?;
    let key_pem = read("sslkey", key)?;
    // The library's error could quote the file: say only what was expected.
    Identity::from_pkcs8(&chain, &key_pem).map_err(|_| {
        content(
            "sslkey",
            key,
            "no PKCS#8 PEM private key matching sslcert in the file",
        )
    })
}
