//! Next to a connection pool (deadpool-postgres, bb8, sqlx): leadership keeps a session of its
//! own, and reuses the pool's settings.
//!
//! Why not borrow a pooled connection: the flag `LISTEN`s for hand-overs, which needs one
//! session that stays open; each statement is bounded by a timeout after which its connection
//! is abandoned (closed, so a hung backend cannot hold it), which a pool would count as a
//! broken connection of its own; and a pool that is exhausted by the service's load must not
//! starve the lease renewal (the leader would lose its lease under load, when it matters). One
//! more connection per process (or per `FlagSet` for many flags) is the price.
//!
//! With deadpool-postgres the pool's `tokio_postgres::Config` is the one to reuse:
//!
//! ```ignore
//! let pg: tokio_postgres::Config = url.parse()?;
//! let pool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(pg.clone(), NoTls)).build()?;
//! let flag = Flag::builder("jobs", "").pg_config(pg).start(NoTls).await?;
//! ```
//!
//! With sqlx, give both the same URL (`PgConnectOptions` and `connect_str` read the same libpq
//! keys). This example shares one `Config` between a stand-in pool and the flag.
//!
//! ```sh
//! cargo run -p leadership-tokio --example shared_pool_settings -- "host=localhost user=postgres"
//! ```

use std::time::Duration;

use leadership_tokio::Flag;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "host=localhost".into());
    let mut pg: tokio_postgres::Config = url.parse()?;
    pg.application_name("my-service");

    // The service's own connection (a pool's, in a real service).
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);

    // The flag: same settings, its own session. It sets its own application name, keepalives
    // and timeouts on its copy.
    let flag = Flag::builder("jobs", "")
        .pg_config(pg.clone())
        .interval(Duration::from_secs(10))
        .start(tokio_postgres::NoTls)
        .await?;
    let guard = flag.raised().await?;
    let n: i64 = client.query_one("SELECT 1::int8", &[]).await?.get(0);
    println!(
        "leading with token {}; the service's query returned {n}",
        guard.token()
    );
    drop(guard);
    flag.close().await?;
    Ok(())
}
