//! `leadership status`: the flags table as an operator wants to read it.

use std::collections::BTreeMap;
use std::time::Duration;

use leadership_core::balance::{self, Entry};
use leadership_tokio::Holder;
use serde_json::json;

use crate::args::Status;
use crate::exit::Failure;

/// A lease older than this was released (its timestamp is the Unix epoch).
const RELEASED: Duration = Duration::from_secs(365 * 24 * 3600);

pub async fn status(args: Status) -> Result<i32, Failure> {
    let inspector = crate::flag::inspect(&args.connection, args.interval, args.timeout).await?;
    let flags = inspector.flags(args.name.as_deref()).await?;
    if let Some(group) = &args.group {
        return by_holder(group, &flags, args.json);
    }
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

/// `status --group G`: the group's shards grouped by holder.
fn by_holder(group: &str, flags: &[(String, Holder)], json: bool) -> Result<i32, Failure> {
    // holder → (member row live?, shards held with a live lease)
    let mut holders: BTreeMap<String, (Option<bool>, Vec<usize>)> = BTreeMap::new();
    let mut free = Vec::new();
    for (name, h) in flags {
        match balance::parse(group, name) {
            Some(Entry::Member(process)) => {
                holders.entry(process.to_string()).or_default().0 =
                    Some(!h.expired && h.name.as_deref() == Some(process));
            }
            Some(Entry::Shard(i)) => match h.name.as_deref() {
                Some(holder) if !h.expired => {
                    holders.entry(holder.to_string()).or_default().1.push(i)
                }
                _ => free.push(i),
            },
            None => {}
        }
    }
    free.sort_unstable();
    if json {
        for (holder, (member, shards)) in &holders {
            println!(
                "{}",
                json!({"holder": holder, "member": member, "count": shards.len(), "shards": shards})
            );
        }
        println!(
            "{}",
            json!({"holder": null, "count": free.len(), "shards": free})
        );
        return Ok(0);
    }
    println!("{:<24} {:<8} {:>6}  shards", "holder", "member", "count");
    for (holder, (member, shards)) in &mut holders {
        shards.sort_unstable();
        let member = match member {
            Some(true) => "live",
            Some(false) => "expired",
            None => "none", // a Go flag or another holder that is no member
        };
        println!(
            "{:<24} {:<8} {:>6}  {}",
            holder,
            member,
            shards.len(),
            ranges(shards)
        );
    }
    println!(
        "{:<24} {:<8} {:>6}  {}",
        "(free)",
        "-",
        free.len(),
        ranges(&free)
    );
    Ok(0)
}

/// `0-3,7,9-10`.
fn ranges(sorted: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        out.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    if out.is_empty() {
        "-".to_string()
    } else {
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shard_lists_are_compressed_into_ranges() {
        assert_eq!(super::ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(super::ranges(&[]), "-");
    }
}
