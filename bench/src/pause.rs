//! `bench pause` and `bench hung`: SIGSTOP the leader (5 s) or its backends (10 s): how long
//! two believe they lead, and when a follower raised.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::peers::{sleep_ms, unix_ns, Fleet, Impl, MS};
use crate::report::{summary, Csv, Rng};
use leadership_pgkit::pg::{PgServer, Signal};

/// SIGSTOP of the leader process (`backend == false`, 5 s) or of its PostgreSQL backends
/// (10 s): overlap of beliefs, and when a follower raised.
pub(crate) fn pause(
    imp: &Arc<Impl>,
    pg: &PgServer,
    trials: usize,
    backend: bool,
    csv: &mut Csv,
) -> String {
    let mut f = Fleet::new(imp, pg, 3);
    f.spawn_all();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut overlaps, mut takeovers, mut lowers) = (Vec::new(), Vec::new(), Vec::new());
    let mut misses = 0;
    let stop_for = if backend { 10_000 } else { 5_000 };
    while overlaps.len() < trials && misses < 5 {
        let Some(leader) = f.settle(Duration::from_secs(15)) else {
            misses += 1;
            continue;
        };
        sleep_ms(300 + rng.below(1500));
        let t0 = unix_ns();
        let mut stopped = Vec::new();
        if backend {
            let pids = pg
                .psql(&format!(
                    "select pid from pg_stat_activity where usename = 'p{}'",
                    leader + 1
                ))
                .unwrap_or_default();
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                if pg.signal_backend(pid, Signal::Stop).is_ok() {
                    stopped.push(pid);
                }
            }
        } else {
            f.signal(leader, libc::SIGSTOP);
        }
        sleep_ms(stop_for);
        let t1 = unix_ns();
        for pid in &stopped {
            let _ = pg.signal_backend(*pid, Signal::Cont);
        }
        if !backend {
            f.signal(leader, libc::SIGCONT);
        }
        sleep_ms(3000);
        let t2 = unix_ns();
        overlaps.push(f.overlap(t0, t2) as f64 / MS);
        if let Some(r) = f.next_raise(t0, leader, Duration::from_millis(1)) {
            takeovers.push((r - t0) as f64 / MS);
        }
        if let Some(l) = f.lowered(leader, t0) {
            lowers.push((l - t0) as f64 / MS);
        }
        let _ = t1;
    }
    let what = if backend {
        "backend SIGSTOP 10 s"
    } else {
        "SIGSTOP 5 s"
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        summary(&format!("{what}: overlap"), &imp.name, &overlaps, csv)
    );
    let _ = writeln!(
        out,
        "{}",
        summary(
            &format!("{what}: stop → follower raised"),
            &imp.name,
            &takeovers,
            csv
        )
    );
    out + &summary(
        &format!("{what}: stop → old leader's belief ends"),
        &imp.name,
        &lowers,
        csv,
    )
}
