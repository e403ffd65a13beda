//! Routes requests to the leader without competing: a follower-side proxy, a dashboard or a
//! sidecar watches who holds the flag (told of handovers through `LISTEN`, and of expiries on
//! the lease's schedule; no polling) and forwards to it.
//!
//! ```sh
//! cargo run -p leadership-tokio --example observer_router -- "host=localhost user=postgres"
//! ```
//!
//! The holder names here are addresses (`10.0.0.7:8080`): the processes competing for the
//! flag use their own address as their process name.

use leadership_tokio::Flag;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "host=localhost".into());
    let observer = Flag::builder("api-writer", "router")
        .connect_str(&url)
        .observe(tokio_postgres::NoTls)
        .await?;
    let mut holder = observer.subscribe();
    loop {
        let target = match &*holder.borrow_and_update() {
            Some(h) if !h.expired => h.name.clone(),
            _ => None,
        };
        match target {
            Some(address) => println!("forwarding writes to {address}"),
            None => println!("no leader: holding writes (or answering 503)"),
        }
        tokio::select! {
            changed = holder.changed() => if changed.is_err() { break },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}
