//! The README's Rust code, verbatim, so that it compiles in CI: `driver-tokio/tests/readme.rs` checks
//! that every `rust` block of the README is here, line for line.
//!
//! ```sh
//! DATABASE_URL="postgres://app@db/app?sslmode=verify-full&sslrootcert=/etc/ca.pem" \
//!     cargo run -p leadership-tokio --features rustls --example readme
//! ```

// The README's two fragments are bodies of the functions below, which `main` (the README's
// first block) does not call.
#![allow(dead_code)]

use leadership_tokio::{tls::TlsSettings, Flag, Guard};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // libpq's settings: "postgres://app@db/app?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    let url = std::env::var("DATABASE_URL")?;
    let (pg, tls) = TlsSettings::from_conn_str(&url, |key| std::env::var(key).ok())?;
    let flag = Flag::builder("nightly-report", "") // "": host name, pid and a random suffix
        .pg_config(pg.clone())
        .interval(Duration::from_secs(10))
        .start(tls.connector()?)
        .await?;
    let (db, connection) = pg.connect(tls.connector()?).await?; // the service's own session
    tokio::spawn(connection);
    let db = &Mutex::new(db);
    let shutdown = flag.clone(); // cheap: every clone drives the same flag
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = shutdown.close_within(Duration::from_secs(20)).await; // hands over at once
    });
    flag.lead(|guard| async move {
        let stop = guard.stop_token(); // cancelled when the lease is at risk or lost
        while !stop.is_cancelled() {
            if let Err(e) = step(db, &guard).await {
                eprintln!("step not written: {e}"); // e.g. the term is over: nothing committed
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await?; // returns once the flag is closed
    Ok(())
}

/// One step of leader-only work: its row commits while this term holds the flag, or not at all.
async fn step(db: &Mutex<Client>, guard: &Guard) -> Result<(), Box<dyn std::error::Error>> {
    let mut db = db.lock().await;
    let tx = db.transaction().await?;
    guard.fence_in(&tx).await?; // first in the transaction: fails once the term is over
    tx.execute("INSERT INTO steps (token) VALUES ($1)", &[&guard.token()])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The README's "with a guard of your own" (as the README lays it out).
#[rustfmt::skip]
async fn with_a_guard_of_your_own(flag: Flag) -> Result<(), leadership_tokio::Error> {
    let guard = flag.raised().await?;          // resolves when this process leads
    tokio::select! {
        _ = guard.at_risk() => eprintln!("stopping: the lease is at risk"),
        _ = do_the_work(guard.token()) => {}    // fence writes elsewhere with the token
    }
    drop(guard);
    flag.close().await?; // ends every guard, waits for them, releases (never while one lives)
    Ok(())
}

/// Stands for the leader-only work, fenced with `token`.
async fn do_the_work(token: i64) {
    let _ = token;
}

/// The README's balanced shards (as the README lays them out, one level less indented).
#[rustfmt::skip]
async fn balanced_shards() -> Result<(), leadership_tokio::Error> {
    use tokio_postgres::NoTls;
    let set = leadership_tokio::FlagSet::builder("pod-a")
        .connect_str("host=db user=app")
        .interval(Duration::from_secs(10))
        .start(NoTls)
        .await?;
    let shards = set.balanced("orders", 256)?;
    let mut changes = shards.subscribe_ownership();
    while let Ok(change) = changes.recv().await {
        if let leadership_tokio::Ownership::Owning(i) = change {
            let flag = shards.shard(i).clone();
            tokio::spawn(async move {
                // leader-only work for shard i, stopped in time; fence writes with the token
                let _ = flag.lead(|guard| async move { guard.at_risk().await }).await;
            });
        }
    }
    Ok(())
}
