//! Batched checks in the simulator (issue 28): processes with several flags whose checks go
//! as one statement (`SimConfig::batch`), under every fault and row locks held by other
//! transactions; and the checker failing when a renew that joins a batch counts its lease from
//! the batch's reply instead of its send (`--unsafe join-before-send`).
//!
//! Every failing assertion prints the seed and the command that replays it.

use std::time::{Duration, Instant};

use leadership_sim::sim::{self, Faults, Report, Safeguards, SimConfig, Violation};

/// Three processes of three flags each, batched, five minutes, every core audited.
fn batched(seed: u64, faults: &str) -> SimConfig {
    SimConfig {
        seed,
        processes: 3,
        flags: 3,
        batch: true,
        duration: Duration::from_secs(300),
        faults: Faults::parse(faults).expect("known faults"),
        audit: true,
        ..SimConfig::default()
    }
}

fn clean(report: &Report) {
    if let Some(f) = &report.failure {
        panic!("{f}");
    }
}

#[test]
fn a_set_renews_its_flags_in_one_statement() {
    let report = sim::run(&batched(3, "none"));
    clean(&report);
    let s = &report.stats;
    assert_eq!(s.raises, 3, "one term per flag for the whole run");
    assert_eq!(s.leaderless_ns, 0);
    // After the first renew, the leader's three renews go together: the first to fall due
    // takes the other two along, early.
    assert!(s.batches > 300, "{}", s.batches);
    let per_batch = s.batched_checks as f64 / s.batches as f64;
    assert!(per_batch > 2.9, "{per_batch} checks a batch");
    assert!(s.joined_early * 10 >= s.batches * 19, "{s:?}");
    assert!(report.summary().contains("batches"), "{}", report.summary());
}

#[test]
fn the_same_seed_gives_the_same_batched_run() {
    let make = |seed| SimConfig {
        full_trace: true,
        ..batched(seed, "all,rowlock")
    };
    let (a, b) = (sim::run(&make(5)), sim::run(&make(5)));
    assert!(a.stats.batches > 10 && a.stats.faults.iter().sum::<u64>() > 10);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.summary(), b.summary());
    let lean = sim::run(&SimConfig {
        full_trace: false,
        audit: false,
        ..make(5)
    });
    assert_eq!(lean.digest(), a.digest());
}

/// The batch's fate is its flags' (one message lost, late, stalled or failed for all of
/// them, one reply), a row lock skips one flag of a batch (`Failed(NotAttempted)`) and holds
/// a single check back until it ends: every invariant holds, per flag, after every event.
#[test]
fn batched_flags_under_every_fault_and_row_locks_hold_every_invariant() {
    let started = Instant::now();
    let (mut batches, mut joined, mut skipped, mut waited, mut locks, mut raises) =
        (0, 0, 0, 0, 0, 0);
    for seed in 0..400 {
        let report = sim::run(&batched(seed, "all,rowlock"));
        clean(&report);
        let s = &report.stats;
        batches += s.batches;
        joined += s.joined_early;
        skipped += s.not_attempted;
        waited += s.lock_waits;
        raises += s.raises;
        locks += s.faults[sim::report::FAULT_COUNTERS.len() - 1];
    }
    println!(
        "400 seeds × 3 processes × 3 flags × 5 min, every fault and row locks: {batches} batches, \
         {joined} renews joined early, {locks} row locks, {skipped} checks skipped, {waited} \
         statements waited, {raises} raises, {:.2}s",
        started.elapsed().as_secs_f64()
    );
    assert!(batches > 50_000 && joined > 50_000, "{batches} {joined}");
    assert!(
        locks > 1_000 && skipped > 100 && waited > 100,
        "{locks} {skipped} {waited}"
    );
}

/// Without batches, the same flags' single checks wait for a row lock, and hold.
#[test]
fn unbatched_flags_under_every_fault_and_row_locks_hold_every_invariant() {
    let mut waited = 0;
    for seed in 0..100 {
        let report = sim::run(&SimConfig {
            batch: false,
            ..batched(seed, "all,rowlock")
        });
        clean(&report);
        assert_eq!(report.stats.batches, 0);
        waited += report.stats.lock_waits;
    }
    assert!(waited > 100, "{waited}");
}

/// With the renews that join a batch told only when it returns, their leases count from the
/// reply: a slow reply stretches one past its row's, and a pause then lets another process
/// take the row while the paused one still answers `is_leader`.
#[test]
fn without_join_before_send_a_slow_batch_gives_two_leaders() {
    let make = |seed| SimConfig {
        safeguards: Safeguards::without("join-before-send").unwrap(),
        intensity: 5,
        ..batched(seed, "pause,slow")
    };
    let found = (0..200).find_map(|seed| sim::run(&make(seed)).failure);
    let f = found.expect("two leaders within 200 seeds");
    println!("{f}");
    assert!(matches!(f.violation, Violation::TwoLeaders { .. }), "{f}");
    assert!(
        f.replay.contains("--unsafe join-before-send"),
        "{}",
        f.replay
    );
    assert!(f.replay.contains("--flags 3 --batch"), "{}", f.replay);
    // The same seeds with the safeguard on: clean.
    for seed in 0..50 {
        let safe = SimConfig {
            safeguards: Safeguards::default(),
            ..make(seed)
        };
        clean(&sim::run(&safe));
    }
}
