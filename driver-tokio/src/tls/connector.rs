//! The rustls connector of [`TlsSettings`]: the files read, and a certificate verifier that
//! checks what the mode asks for (nothing, the chain, or the chain and the name).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::files::{check_key_permissions, content, read};
use super::{RootCert, SslMode, TlsError, TlsSettings};

impl TlsSettings {
    /// A `tokio_postgres` TLS connector (rustls with the `ring` provider, TLS 1.2 and 1.3) that
    /// checks the server's certificate as the mode asks (see the [module](super) docs) and
    /// presents the client certificate if any. Reads the files now, so a missing or unreadable
    /// file is reported here, naming the setting and the file. The connector is cheap to clone
    /// and serves every connection of a flag.
    ///
    /// Without roots (none given, none found), `prefer` and `require` encrypt without checking
    /// the certificate, `verify-ca` fails with [`TlsError::NoRootCert`] and `verify-full` uses the
    /// system's store.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use leadership_tokio::tls::{RootCert, SslMode, TlsSettings};
    /// let tls = TlsSettings::new(SslMode::VerifyFull)
    ///     .with_root_cert(RootCert::File("/etc/ssl/pg-ca.pem".into()));
    /// let mut pg: tokio_postgres::Config = "host=db.example.com user=app".parse()?;
    /// tls.configure(&mut pg);
    /// let flag = leadership_tokio::Flag::builder("report", "pod-a")
    ///     .pg_config(pg)
    ///     .start(tls.connector()?)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn connector(&self) -> Result<RustlsConnector, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) => None,
            (SslMode::VerifyCa, None) => return Err(TlsError::NoRootCert),
            (SslMode::VerifyFull, None) => Some(system_roots()?),
            (_, None) => None,
            (_, Some(RootCert::System)) => Some(system_roots()?),
            (_, Some(RootCert::File(path))) => Some(file_roots(path)?),
        };
        let verifier = Arc::new(Verifier {
            roots: roots.map(Arc::new),
            check_name: self.mode == SslMode::VerifyFull,
            provider: provider.clone(),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            Some((cert, key)) if self.mode != SslMode::Disable => config
                .with_client_auth_cert(client_chain(cert)?, client_key(key)?)
                .map_err(TlsError::Rustls)?,
            _ => config.with_no_client_auth(),
        };
        Ok(RustlsConnector {
            inner: MakeRustlsConnect::new(config),
            mode: self.mode,
        })
    }
}

/// The connector of [`TlsSettings::connector`]: pass it to
/// [`FlagBuilder::start`](crate::FlagBuilder::start) or to `tokio_postgres::connect`. It wraps
/// `tokio_postgres_rustls::MakeRustlsConnect`; cloning it shares the rustls configuration.
///
/// ```
/// use leadership_tokio::tls::{SslMode, TlsSettings};
/// let connector = TlsSettings::new(SslMode::Require).connector()?;
/// assert_eq!(format!("{connector:?}"), "RustlsConnector { mode: Require, .. }");
/// # Ok::<(), leadership_tokio::tls::TlsError>(())
/// ```
#[derive(Clone)]
pub struct RustlsConnector {
    inner: MakeRustlsConnect,
    mode: SslMode,
}

impl std::fmt::Debug for RustlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustlsConnector")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnector
where
    MakeRustlsConnect: MakeTlsConnect<S>,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        self.inner.make_tls_connect(domain)
    }
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            content(
                setting,
                path,
                format!("not a PEM file of certificates: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(content(setting, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn file_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("sslrootcert", path)? {
        roots
            .add(cert)
            .map_err(|e| content("sslrootcert", path, format!("unusable certificate: {e}")))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(TlsError::SystemRoots(why));
    }
    Ok(roots)
}

fn client_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates("sslcert", path)
}

fn client_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check_key_permissions(path)?;
    let pem = read("sslkey", path)?;
    // The parser's error could quote the file: say only what kind of content was expected.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        content(
            "sslkey",
            path,
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file",
        )
    })
}

/// Checks the server's certificate as the mode asks: without roots not at all (`prefer`,
/// `require`: encryption against passive listeners only), with roots the chain, and for
/// `verify-full` the name too. The handshake's signatures are always checked, so the server
/// holds the key of the certificate it shows.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
