//! A job that runs once across the fleet: every host starts it from cron at the same minute;
//! the first to check leads and runs it, the others see who does and exit. The winner keeps
//! the flag for at least a few minutes, so a host whose clock or cron runs late does not run
//! it again after a fast job has released the flag.
//!
//! ```sh
//! # crontab on every host
//! 0 3 * * *  DATABASE_URL=... /usr/local/bin/nightly-report
//! cargo run -p leadership-tokio --example cron_once
//! ```
//!
//! (`leadership run --once --hold-at-least 10m -- ./report.sh` is this, as a command.)

use std::time::Duration;

use leadership_tokio::{Flag, TryLead};

/// Longer than the spread of the hosts' clocks and cron start times.
const HOLD_AT_LEAST: Duration = Duration::from_secs(5 * 60);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "host=localhost".into());
    let flag = Flag::builder("nightly-report", "")
        .connect_str(&url)
        .start(tokio_postgres::NoTls)
        .await?;
    match flag.try_lead().await? {
        TryLead::HeldBy(holder) => {
            println!("{} runs it; nothing to do", holder.name.unwrap_or_default());
        }
        TryLead::Led(guard) => {
            let started = tokio::time::Instant::now();
            let run = async {
                println!("running the report, token {}", guard.token());
                tokio::time::sleep(Duration::from_secs(2)).await; // the job
            };
            tokio::select! {
                () = run => {}
                () = guard.at_risk() => eprintln!("lease at risk: stopped the report"),
            }
            // Keep the flag (renewing) until the hold ends, unless it was lost meanwhile.
            tokio::select! {
                () = tokio::time::sleep_until(started + HOLD_AT_LEAST) => {}
                () = guard.lost() => {}
            }
            drop(guard);
        }
    }
    flag.close_within(Duration::from_secs(10)).await?;
    Ok(())
}
