//! `leadership status`: the flags table as an operator wants to read it.

use std::time::Duration;

use serde_json::json;

use crate::args::Status;
use crate::connect::{connect, table};
use crate::exit::{Failure, FAILURE};
use leadership_core::sql::Statements;
use leadership_core::DbTime;
use leadership_tokio::internal::{Chain, PgTime};

/// One row, judged.
struct Line {
    name: String,
    holder: Option<String>,
    version: Option<i64>,
    /// The lease's age by the database's clock, in microseconds (`None`: NULL or infinite).
    age_micros: Option<i64>,
    expired: bool,
}

pub async fn status(args: Status) -> Result<i32, Failure> {
    let client = connect(&args.connection).await?;
    let statements = Statements::new(&table(&args.connection)?);
    let rows = client
        .query(&statements.status, &[&args.name])
        .await
        .map_err(|e| Failure::new(FAILURE, Chain(&e).to_string()))?;
    let lease = i64::try_from(args.interval.as_micros()).unwrap_or(i64::MAX);
    let lines: Vec<Line> = rows
        .iter()
        .map(|row| {
            let timestamp: Option<PgTime> = row.get("timestamp");
            let now: PgTime = row.get("now");
            let age = timestamp
                .filter(|t| !t.0.is_infinite())
                .map(|t| now.0.micros_since(t.0));
            Line {
                name: row.get("name"),
                holder: row.get("holder"),
                version: row.get("version"),
                age_micros: age,
                // The Go flag's rule; `-infinity` is expired, `infinity` and NULL never.
                expired: timestamp
                    .is_some_and(|t| t.0 == DbTime::NEG_INFINITY || age.is_some_and(|a| a > lease)),
            }
        })
        .collect();
    if args.json {
        for l in &lines {
            println!(
                "{}",
                json!({
                    "name": l.name,
                    "holder": l.holder,
                    "version": l.version,
                    "lease_age_ms": l.age_micros.map(|a| a / 1000),
                    "expired": l.expired,
                })
            );
        }
    } else {
        println!(
            "{:<24} {:<24} {:>10} {:>14} expired",
            "name", "holder", "version", "lease age"
        );
        for l in &lines {
            let age = l.age_micros.map_or("-".to_string(), |a| {
                format!("{:.3?}", Duration::from_micros(a.unsigned_abs()))
            });
            println!(
                "{:<24} {:<24} {:>10} {:>14} {}",
                l.name,
                l.holder.as_deref().unwrap_or("NULL"),
                l.version.map_or("NULL".to_string(), |v| v.to_string()),
                age,
                if l.expired { "yes" } else { "no" },
            );
        }
    }
    Ok(0)
}
