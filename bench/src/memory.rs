//! `bench memory`: resident memory with 1 and 100 flags.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::peers::{sleep_ms, Fleet, Impl};
use leadership_pgkit::pg::PgServer;

pub(crate) fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn memory(imp: &Arc<Impl>, pg: &PgServer) -> String {
    let mut out = String::new();
    for n in [1usize, 100] {
        if imp.name == "go" && n > 1 {
            let _ = writeln!(
                out,
                "| {n} flags | go | seedpeer holds one flag per process |"
            );
            continue;
        }
        let mut f = Fleet::new(imp, pg, 1);
        if n > 1 {
            f.extra = vec!["--flags".into(), n.to_string()];
        }
        f.spawn(0);
        let end = Instant::now() + Duration::from_secs(60);
        while !f.started(0) && Instant::now() < end {
            sleep_ms(20);
        }
        sleep_ms(5000);
        let kib = rss_kib(f.pid(0));
        let _ = writeln!(
            out,
            "| {n} flag(s) | {} | RSS {:.1} MiB |",
            imp.name,
            kib as f64 / 1024.0
        );
        f.kill_all();
    }
    out
}
