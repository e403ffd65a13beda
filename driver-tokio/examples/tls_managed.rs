//! TLS to a managed server (RDS, Cloud SQL, Azure): the libpq settings in the connection
//! string (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, or `PGSSL*` in the environment) give
//! the connector; `verify-full` checks the server's name against its certificate.
//!
//! ```sh
//! DATABASE_URL="postgres://app@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/ssl/rds-ca.pem" \
//!     cargo run -p leadership-tokio --features rustls --example tls_managed
//! ```
//!
//! It tries once to lead flag `tls-example`, prints the outcome and hands the flag back. The
//! test kit runs it against a TLS-only server with certificates it makes
//! (`driver-tokio/tests/tokio_service.rs`).

use leadership_tokio::tls::TlsSettings;
use leadership_tokio::{Flag, TryLead};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    // The TLS keys come out of the string; the rest is tokio-postgres's `Config`.
    let (pg, tls) = TlsSettings::from_conn_str(&url, |key| std::env::var(key).ok())?;
    let flag = Flag::builder("tls-example", "")
        .pg_config(pg)
        .start(tls.connector()?)
        .await?;
    match flag.try_lead().await? {
        TryLead::Led(guard) => println!(
            "led over TLS ({}), token {}",
            tls.mode().as_str(),
            guard.token()
        ),
        TryLead::HeldBy(holder) => println!("held by {:?}", holder.name),
    }
    flag.close().await?;
    Ok(())
}
