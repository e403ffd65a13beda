//! Proptest over the simulator: random fleets, settings, fault mixes and seeds. Every
//! invariant is checked after every event of every case; a failure prints the seed and the
//! replay command. Each bug found this way becomes a named `regression_*` test below, with
//! its seed and settings written in.

use std::time::Duration;

use leadership_sim::sim::{self, Faults, SimConfig, FAULT_NAMES};
use proptest::prelude::*;

fn fleet() -> impl Strategy<Value = SimConfig> {
    (
        any::<u64>(),
        1usize..=7,
        0usize..=2,
        0u32..(1 << FAULT_NAMES.len()),
        prop::sample::select(vec![1_000u64, 2_000, 5_000, 30_000]),
        // Up to 40%: a precheck and a check (each bounded by the timeout) fit in a renew.
        prop::sample::select(vec![5u64, 30, 40]),
        prop::sample::select(vec![0.0, 0.2, 1.0]),
        prop::option::of(prop::sample::select(vec![5u64, 10])),
        prop::sample::select(vec![1u32, 3, 10]),
    )
        .prop_map(
            |(
                seed,
                processes,
                go_peers,
                mask,
                interval_ms,
                timeout_pct,
                jitter,
                margin_pct,
                intensity,
            )| {
                let names: Vec<&str> = FAULT_NAMES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, n)| *n)
                    .collect();
                SimConfig {
                    seed,
                    processes,
                    go_peers,
                    duration: Duration::from_secs(300),
                    interval: Duration::from_millis(interval_ms),
                    timeout: Duration::from_millis(interval_ms * timeout_pct / 100),
                    jitter,
                    margin: margin_pct.map(|p| Duration::from_millis(interval_ms * p / 100)),
                    faults: Faults::parse(&names.join(",")).expect("known"),
                    intensity,
                    audit: true,
                    ..SimConfig::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_invariant_holds_in_random_fleets(config in fleet()) {
        let report = sim::run(&config);
        if let Some(f) = &report.failure {
            prop_assert!(false, "{}\nsettings: {:?}", f, config);
        }
    }
}

/// Found by the proptest above (seed 8138449291055653529): the liveness check fired 2.9 s into
/// a mixed fleet with jitter 1. Not a core bug but a checker bug: the Go flag with jitter 1
/// renews a whole interval after reading `now()`, so its own lease lapses and a Rust
/// process takes over after a leaderless microsecond. With Go peers the check now bounds
/// leaderless stretches instead of demanding a leader at every instant.
#[test]
fn regression_go_peer_with_jitter_1_lets_its_own_lease_lapse() {
    let config = SimConfig {
        seed: 8138449291055653529,
        processes: 3,
        go_peers: 2,
        duration: Duration::from_secs(300),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(50),
        jitter: 1.0,
        faults: Faults::parse("pause,crash,stall,conn,close").expect("known"),
        ..SimConfig::default()
    };
    let report = sim::run(&config);
    assert!(report.failure.is_none(), "{}", report.failure.unwrap());
    // The lapse that tripped the old check is still there: a Rust process took the row
    // from a Go holder whose flag was still raised.
    assert!(report.stats.took_from_raised_go >= 1);
}

/// Found by the proptest above (seed 7637660130802010960): two Rust leaders. Not a core bug but
/// a fault-model bug: database clock steps of up to half the margin each came four times
/// within one 30 s lease (intensity 10), 4.5 s in all against a 3 s margin, which breaks the
/// stated safety condition (the steps within one lease stay within what drift leaves of the
/// margin). The default steps now keep a budget per lease; larger steps stay available, as
/// an explicit maximum, to show what breaking the condition does.
#[test]
fn regression_db_steps_add_up_within_one_lease() {
    let config = SimConfig {
        seed: 7637660130802010960,
        processes: 3,
        go_peers: 2,
        duration: Duration::from_secs(300),
        interval: Duration::from_secs(30),
        // 13.5 s when found; a precheck and a check must now fit in a renew (issue 12), so
        // half of it. The bug was in the fault model, which no timeout reaches.
        timeout: Duration::from_millis(6_750),
        margin: Some(Duration::from_secs(3)),
        faults: Faults::parse("loss,crash,stall,precheck,dbstep").expect("known"),
        intensity: 10,
        audit: true,
        ..SimConfig::default()
    };
    let report = sim::run(&config);
    assert!(report.failure.is_none(), "{}", report.failure.unwrap());
    assert!(report.stats.faults[9] > 10, "the database clock stepped");
}
