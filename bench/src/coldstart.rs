//! `bench coldstart`: 8 peers at once on an empty database: failed starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::peers::{sleep_ms, Fleet, Impl};
use leadership_pgkit::pg::PgServer;

pub(crate) fn coldstart(imp: &Arc<Impl>, pg: &PgServer, trials: usize) -> String {
    let (mut failed, mut peers, mut bad_trials, mut leaders_wrong) = (0, 0, 0, 0);
    for _ in 0..trials {
        let mut f = Fleet::new(imp, pg, 8);
        let _ = pg.psql("drop table if exists leadership_flags");
        f.spawn_all();
        let end = Instant::now() + Duration::from_secs(10);
        let mut exited = [false; 8];
        // Until every peer printed its first line or exited.
        while Instant::now() < end {
            for (s, done) in exited.iter_mut().enumerate() {
                if !*done {
                    if let Some(p) = &mut f.peers[s] {
                        if let Ok(Some(st)) = p.child.try_wait() {
                            *done = true;
                            if !st.success() {
                                failed += 1;
                            }
                        }
                    }
                }
            }
            if (0..8).all(|s| exited[s] || f.started(s)) {
                break;
            }
            sleep_ms(5);
        }
        let trial_failed = exited.iter().any(|e| *e);
        sleep_ms(1500);
        let n = f.leaders().len();
        if n != 1 {
            leaders_wrong += 1;
        }
        if trial_failed {
            bad_trials += 1;
        }
        peers += 8;
        f.kill_all();
    }
    format!(
        "| cold start, 8 peers × {trials} | {} | start failed: {failed} of {peers} peers, in {bad_trials} trials; trials without exactly one leader after 1.5 s: {leaders_wrong} |",
        imp.name
    )
}
