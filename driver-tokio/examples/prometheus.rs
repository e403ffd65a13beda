//! Competes for a flag and exposes its metrics for Prometheus on 127.0.0.1:9898.
//!
//! ```sh
//! cargo run -p leadership-tokio --example prometheus -- "host=localhost user=postgres" pod-a
//! curl -s 127.0.0.1:9898/metrics | grep leadership
//! ```
//!
//! Start it twice with different process names to watch one lead; Ctrl-C closes the flag, so
//! the other takes over.

use std::time::Duration;

use leadership_tokio::Flag;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let mut args = std::env::args().skip(1);
    let conn = args
        .next()
        .unwrap_or_else(|| "host=localhost user=postgres".to_string());
    let process = args
        .next()
        .unwrap_or_else(|| format!("example-{}", std::process::id()));

    // Only on the loopback interface: metrics name the processes.
    PrometheusBuilder::new()
        .with_http_listener(([127, 0, 0, 1], 9898))
        .install()?;

    let flag = Flag::builder("example", process)
        .connect_str(&conn)
        .interval(Duration::from_secs(4))
        .metrics_prefix("example")
        .start(tokio_postgres::NoTls)
        .await?;

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => println!("raised: {}", flag.is_raised()),
        }
    }
    flag.close().await?;
    Ok(())
}
