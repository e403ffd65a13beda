//! [`MakeTls`]: the bounds a TLS connector meets to be moved into the driver's task, named once.

use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

/// A `tokio_postgres` TLS connector the driver can keep and use from its own task:
/// `tokio_postgres::NoTls`, [`tls::TlsSettings::connector`](crate::tls) (feature `rustls`),
/// `tokio_postgres_rustls::MakeRustlsConnect`, `postgres_native_tls::MakeTlsConnector`.
/// Implemented for every type that qualifies; generic code names it instead of the four
/// bounds it stands for.
///
/// ```
/// use leadership_tokio::{Flag, FlagBuilder, MakeTls};
///
/// async fn start_with(builder: FlagBuilder, tls: impl MakeTls) -> Result<Flag, leadership_tokio::Error> {
///     builder.start(tls).await
/// }
/// ```
pub trait MakeTls:
    MakeTlsConnect<
        Socket,
        Stream: Send + 'static,
        TlsConnect: Send + TlsConnect<Socket, Future: Send>,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> MakeTls for T where
    T: MakeTlsConnect<
            Socket,
            Stream: Send + 'static,
            TlsConnect: Send + TlsConnect<Socket, Future: Send>,
        > + Clone
        + Send
        + Sync
        + 'static
{
}
