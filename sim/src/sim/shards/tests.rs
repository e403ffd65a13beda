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

#[test]
fn a_shard_failure_reads_as_the_shard_simulator_always_wrote_it() {
    let fail = |violation| {
        ShardFailure {
            violation,
            shards: 64,
            seed: 7,
        }
        .to_string()
    };
    assert_eq!(
        fail(Violation::TwoShardLeaders {
            shard: 3,
            at: 12_345_678_901,
            leaders: vec!["p00".into(), "p02".into()],
            raised_by: "p02".into(),
        }),
        r#"two leaders of shard 3 at 12.346 s: ["p00", "p02"] (raised by p02); replay: simulate --shards 64 --seed 7"#
    );
    assert_eq!(
        fail(Violation::Unbalanced {
            quiet_leases: 6,
            after: Kind::Stall.name(),
            at: 90_000_000_000,
            counts: vec![("p00".into(), 20), ("p01".into(), 44)],
        }),
        r#"not balanced 6 leases after stall at 90.000 s: [("p00", 20), ("p01", 44)]; replay: simulate --shards 64 --seed 7"#
    );
    assert_eq!(
        fail(Violation::BlipMovedShards {
            at: 1_500_000_000,
            moved: 2,
        }),
        "a blip at 1.500 s moved 2 shards; replay: simulate --shards 64 --seed 7"
    );
}
