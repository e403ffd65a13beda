//! `leadership status`: the flags table as an operator wants to read it.

use std::time::Duration;

use serde_json::json;

use crate::args::Status;
use crate::exit::Failure;

/// A lease older than this was released (its timestamp is the Unix epoch).
const RELEASED: Duration = Duration::from_secs(365 * 24 * 3600);

pub async fn status(args: Status) -> Result<i32, Failure> {
    let inspector = crate::flag::inspect(&args.connection, args.interval, args.timeout).await?;
    let flags = inspector.flags(args.name.as_deref()).await?;
    if args.json {
        for (name, h) in &flags {
            println!(
                "{}",
                json!({
                    "name": name,
                    "holder": h.name,
                    "version": h.version,
                    "lease_age_ms": h.lease_age.map(|a| a.as_millis()),
                    "expired": h.expired,
                })
            );
        }
    } else {
        println!(
            "{:<24} {:<24} {:>10} {:>14} expired",
            "name", "holder", "version", "lease age"
        );
        for (name, h) in &flags {
            let age = match h.lease_age {
                None => "-".to_string(),
                // A release writes the Unix epoch: decades old.
                Some(a) if a > RELEASED => "released".to_string(),
                Some(a) => format!("{:.3?}", Duration::from_micros(a.as_micros() as u64)),
            };
            let holder = match h.name.as_deref() {
                None => "NULL",
                Some("") => "(revoked)",
                Some(name) => name,
            };
            println!(
                "{:<24} {:<24} {:>10} {:>14} {}",
                name,
                holder,
                h.version.map_or("NULL".to_string(), |v| v.to_string()),
                age,
                if h.expired { "yes" } else { "no" },
            );
        }
    }
    Ok(0)
}
