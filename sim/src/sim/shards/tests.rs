//! The shard simulator's own tests: a fleet balances, and the same seed gives the same run.

use super::*;

#[test]
fn a_fault_free_fleet_balances_after_every_join_and_leave() {
    let report = run(&ShardConfig {
        seed: 3,
        shards: 32,
        processes: 4,
        duration: Duration::from_secs(300),
        ..ShardConfig::default()
    });
    assert!(report.failure.is_none(), "{}", report.failure.unwrap());
    assert!(report.episodes.len() > 10);
    assert!(report.episodes.iter().all(|e| e.to_balance.is_some()));
}

#[test]
fn every_fault_keeps_one_leader_per_shard_and_balance_after_each_quiet_stretch() {
    for seed in 0..6 {
        let report = run(&ShardConfig {
            seed,
            shards: 24,
            processes: 4,
            max_processes: 6,
            duration: Duration::from_secs(900),
            faults: ShardFaults::parse("all").unwrap(),
            ..ShardConfig::default()
        });
        assert!(report.failure.is_none(), "{}", report.failure.unwrap());
        let kinds: std::collections::BTreeSet<Kind> =
            report.episodes.iter().map(|e| e.kind).collect();
        assert!(kinds.len() >= 6, "seed {seed}: {kinds:?}");
    }
}

#[test]
fn the_same_seed_gives_the_same_figures() {
    let cfg = ShardConfig {
        seed: 9,
        shards: 16,
        processes: 3,
        duration: Duration::from_secs(120),
        faults: ShardFaults::parse("all").unwrap(),
        ..ShardConfig::default()
    };
    let (a, b) = (run(&cfg), run(&cfg));
    assert_eq!(a.timeline, b.timeline);
    assert_eq!(a.summary(16), b.summary(16));
}
