//! Leader-only writes fenced where they land: the leader appends to a ledger in the database
//! that holds the flags, and each transaction runs the term's fence first, so a row commits
//! only while this term holds the flag. A leader paused, partitioned or slow (its transaction
//! delayed in the network past the next takeover) gets `FenceError::TermOver` instead of a row
//! in someone else's term.
//!
//! ```sh
//! DATABASE_URL="host=localhost user=app" cargo run -p leadership-tokio --example fenced_write
//! ```
//!
//! With another client (sqlx, diesel, deadpool) run `guard.fence().sql()` with its four
//! parameters as the first statement of the transaction; from a shell, `leadership run` gives
//! the command the statement with its values filled in (`LEADERSHIP_FENCE_SQL`):
//!
//! ```sh
//! leadership run --name ledger -- sh -c \
//!   'psql "$DB" -v ON_ERROR_STOP=1 -c "BEGIN; $LEADERSHIP_FENCE_SQL; INSERT INTO ledger (token) VALUES ($LEADERSHIP_TOKEN); COMMIT"'
//! ```

use std::time::Duration;

use leadership_tokio::{FenceError, Flag, Guard};
use tokio_postgres::{Client, NoTls};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "host=localhost".into());
    let flag = Flag::builder("ledger", "")
        .connect_str(&url)
        .interval(Duration::from_secs(10))
        .start(NoTls)
        .await?;
    // The application's own session, on the database that holds the flags.
    let (mut db, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS ledger (token bigint NOT NULL, at timestamptz DEFAULT now())",
    )
    .await?;
    let shutdown = flag.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = shutdown.close_within(Duration::from_secs(20)).await;
    });
    let guard = flag.raised().await?;
    let fence = guard.fence();
    println!(
        "leading, token {}; the fence for other clients: {} with ({:?}, {:?}, {}, {})",
        guard.token(),
        fence.sql().lines().next().unwrap_or_default(),
        fence.name(),
        fence.process(),
        fence.token(),
        fence.lease_micros()
    );
    loop {
        match append(&mut db, &guard).await {
            Ok(()) => {}
            Err(Appended::Fence(FenceError::TermOver { token, .. })) => {
                // Nothing of this step committed: stop leader-only work for this term.
                eprintln!("term {token} is over; nothing written");
                break;
            }
            Err(e) => eprintln!("step not written, retrying: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = guard.at_risk() => break,
        }
    }
    drop(guard);
    flag.close().await?;
    Ok(())
}

/// One step: a short transaction (the term's own renew waits for it), fenced first.
async fn append(db: &mut Client, guard: &Guard) -> Result<(), Appended> {
    let tx = db.transaction().await?;
    guard.fence_in(&tx).await?;
    tx.execute("INSERT INTO ledger (token) VALUES ($1)", &[&guard.token()])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Why a step was not written.
#[derive(Debug, thiserror::Error)]
enum Appended {
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}
