//! `bench handover`: SIGTERM the leader, time until another leads.

use std::sync::Arc;
use std::time::Duration;

use crate::peers::{sleep_ms, unix_ns, Fleet, Impl, MS};
use crate::report::{summary, Csv, Rng};
use leadership_pgkit::pg::PgServer;

pub(crate) fn handover(imp: &Arc<Impl>, pg: &PgServer, trials: usize, csv: &mut Csv) -> String {
    handover_with(imp, pg, trials, csv, 3, &[], "SIGTERM → another raised")
}

/// [`handover`] with `processes` peers, each given `extra` arguments, the row labelled `label`
/// (`batch-handover` runs a set of flags per peer).
pub(crate) fn handover_with(
    imp: &Arc<Impl>,
    pg: &PgServer,
    trials: usize,
    csv: &mut Csv,
    processes: usize,
    extra: &[String],
    label: &str,
) -> String {
    let mut f = Fleet::new(imp, pg, processes);
    f.extra = extra.to_vec();
    f.spawn_all();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut lat = Vec::new();
    let mut misses = 0;
    while lat.len() < trials && misses < 5 {
        let Some(leader) = f.settle(Duration::from_secs(15)) else {
            misses += 1;
            continue;
        };
        sleep_ms(300 + rng.below(1500));
        let t = unix_ns();
        f.signal(leader, libc::SIGTERM);
        match f.next_raise(t, leader, Duration::from_secs(15)) {
            Some(r) => lat.push((r - t) as f64 / MS),
            None => misses += 1,
        }
        f.reap(leader, Duration::from_secs(5));
        f.spawn(leader);
    }
    summary(label, &imp.name, &lat, csv)
}
