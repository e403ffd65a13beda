//! The model checker as a test suite (issue 18): a bounded exhaustive run of the real core
//! holds every property, and with each safeguard switched off the checker finds a shortest
//! counterexample within seconds.
//!
//! Each safeguard's test allows the faults the simulator's test for it uses (see
//! `tests/simulation.rs`), or fewer: the search is exhaustive over those, so the budgets are
//! what keeps it short. The deeper runs and their figures are in `docs/benchmarks.md`.

use std::time::Instant;

use leadership_sim::model::{self, Budget, Params, Violation};
use leadership_sim::sim::{Safeguards, SAFEGUARD_NAMES};

/// Budgets of zero but for `faults` (one each), at most `total` in all. `write` is not a
/// fault (outside `total`): one transaction of the leader-only work, which may land at any
/// later moment.
fn budget(faults: &[&str], total: u8) -> Budget {
    let on = |f: &str| u8::from(faults.contains(&f));
    for f in faults {
        assert!(
            [
                "pause", "crash", "close", "failover", "pooler", "delete", "loss", "late", "write",
                "rowlock"
            ]
            .contains(f),
            "{f}"
        );
    }
    Budget {
        pauses: on("pause"),
        crashes: on("crash"),
        closes: on("close"),
        failovers: on("failover"),
        poolers: on("pooler"),
        deletes: on("delete"),
        losses: on("loss"),
        lates: on("late"),
        rowlocks: on("rowlock"),
        total,
        writes: on("write"),
    }
}

fn params(processes: usize, depth: u32, safeguards: Safeguards, b: Budget) -> Params {
    let mut p = Params::new(processes, depth, safeguards);
    p.budget = b;
    p.set_tick(p.sim.interval / 20);
    p
}

/// Runs the checker with safeguard `name` off and the faults listed; asserts it finds a
/// counterexample and that the trace and its simulator command are printed.
fn counterexample(name: &str, faults: &[&str], total: u8, depth: u32) -> model::Outcome {
    let p = params(
        2,
        depth,
        Safeguards::without(name).unwrap(),
        budget(faults, total),
    );
    let start = Instant::now();
    let outcome = model::check(&p);
    let cx = outcome.counterexample.clone().unwrap_or_else(|| {
        panic!(
            "no counterexample with {name} off: {} states, complete {}",
            outcome.states, outcome.complete
        )
    });
    let text = cx.to_string();
    println!(
        "{name}: {} events, {} states, {:.2} s\n{text}",
        cx.len(),
        outcome.states,
        start.elapsed().as_secs_f64()
    );
    assert!(text.contains("VIOLATION"), "{text}");
    assert!(text.contains(&format!("--unsafe {name}")), "{text}");
    outcome
}

fn is_overlap(v: &Violation) -> bool {
    matches!(
        v,
        Violation::TwoLeaders { .. }
            | Violation::WorkStillRunning { .. }
            | Violation::TookLiveLease { .. }
            | Violation::TokenNotIncreasing { .. }
    )
}

#[test]
fn without_faults_two_and_three_processes_are_explored_to_the_horizon_with_a_leader() {
    for (processes, depth) in [(2, 60), (3, 40)] {
        let p = params(processes, depth, Safeguards::default(), budget(&[], 0));
        let outcome = model::check(&p);
        assert!(outcome.complete, "{processes}");
        assert!(
            outcome.counterexample.is_none(),
            "{}",
            outcome.counterexample.unwrap()
        );
        assert_eq!(outcome.max_tick, depth, "time reached the horizon");
        println!(
            "{processes} processes, {depth} ticks, no faults: {} states",
            outcome.states
        );
    }
}

/// Every fault kind, one per trace, two processes, a bounded horizon: every property holds in
/// every reachable state (the liveness check included). Seconds in a debug build; the deeper
/// run (50 ticks, 3.8 M states) is in `docs/benchmarks.md`.
#[test]
fn a_bounded_exhaustive_run_with_every_fault_holds_every_property() {
    let all = [
        "pause", "crash", "close", "failover", "delete", "loss", "late",
    ];
    let p = params(2, 15, Safeguards::default(), budget(&all, 1));
    let start = Instant::now();
    let outcome = model::check(&p);
    if let Some(cx) = &outcome.counterexample {
        panic!("{cx}");
    }
    assert!(outcome.complete);
    assert!(
        outcome.states > 100_000,
        "the faults were explored: {}",
        outcome.states
    );
    println!(
        "{} states, {} transitions, {} events deep, {:.2} s",
        outcome.states,
        outcome.transitions,
        outcome.max_steps,
        start.elapsed().as_secs_f64()
    );
}

/// Liveness is checked, not assumed: with the database silent (every statement lost, more
/// losses than the run needs) and the liveness window shorter than the horizon, a path where
/// nobody leads is found.
#[test]
fn the_liveness_check_can_fail() {
    let mut p = params(2, 30, Safeguards::default(), budget(&["loss"], 1));
    // A window of 5 ticks: shorter than any election after a lost first check.
    p.liveness_ticks = 5;
    let outcome = model::check(&p);
    let cx = outcome.counterexample.expect("a leaderless path");
    assert!(
        matches!(cx.violation, Violation::NoLeader { .. }),
        "{}",
        cx.violation
    );
}

#[test]
fn without_local_deadline_the_model_finds_a_counterexample() {
    let o = counterexample("local-deadline", &["pause"], 1, 30);
    assert!(matches!(
        o.counterexample.unwrap().violation,
        Violation::TwoLeaders { .. }
    ));
}

#[test]
fn without_expiry_check_the_model_finds_a_counterexample() {
    let o = counterexample("expiry-check", &[], 0, 10);
    assert!(is_overlap(&o.counterexample.unwrap().violation));
}

/// A slow reply (late) stretches the belief counted from its arrival; a pause of the leader
/// then keeps it from renewing. Two faults: the simulator's test uses `pause,slow`.
#[test]
fn without_deadline_from_send_the_model_finds_a_counterexample() {
    let o = counterexample("deadline-from-send", &["pause", "late"], 2, 30);
    assert!(matches!(
        o.counterexample.unwrap().violation,
        Violation::TwoLeaders { .. }
    ));
}

#[test]
fn without_release_after_work_the_model_finds_a_counterexample() {
    let o = counterexample("release-after-work", &["close"], 1, 10);
    assert!(matches!(
        o.counterexample.unwrap().violation,
        Violation::WorkStillRunning { .. }
    ));
}

#[test]
fn without_at_risk_stop_the_model_finds_a_counterexample() {
    let o = counterexample("at-risk-stop", &["pause"], 1, 30);
    assert!(matches!(
        o.counterexample.unwrap().violation,
        Violation::WorkStillRunning { .. }
    ));
}

#[test]
fn without_watchdog_the_model_finds_a_counterexample() {
    let o = counterexample("watchdog", &["pause"], 1, 30);
    assert!(matches!(
        o.counterexample.unwrap().violation,
        Violation::WorkStillRunning { .. }
    ));
}

#[test]
fn without_no_release_while_working_the_model_finds_a_counterexample() {
    let o = counterexample("no-release-while-working", &["close"], 1, 30);
    assert!(matches!(
        o.counterexample.unwrap().violation,
        Violation::WorkStillRunning { .. }
    ));
}

#[test]
fn without_lost_writes_rule_the_model_finds_a_counterexample() {
    let o = counterexample("lost-writes-rule", &["failover"], 1, 30);
    assert!(is_overlap(&o.counterexample.unwrap().violation));
}

/// Issue 25: a failover behind a pooler swaps the server under open connections and no
/// `Connected` arrives. Without the server's identity in the check, a process that never saw
/// the lost writes takes the row over while the leader of the lost history still believes.
#[test]
fn without_server_in_statement_the_model_finds_a_counterexample() {
    let o = counterexample("server-in-statement", &["pooler"], 1, 30);
    assert!(is_overlap(&o.counterexample.unwrap().violation));
}

/// Issue 25: with the server's identity in the check, failovers behind a pooler (to a standby
/// missing any number of the latest writes, at any moment) hold every property. With a crash
/// besides: `tokens_hold_through_a_pooler_failover_and_a_crash` (every property is checked in
/// every state of every run, not only the one a test is named after).
#[test]
fn failovers_behind_a_pooler_hold_every_property() {
    holds(&["pooler"], 1, 30);
}

/// Explores two processes with `faults` (`total` in all) to `depth` ticks: every property holds
/// in every state, and the exploration completes.
fn holds(faults: &[&str], total: u8, depth: u32) {
    let p = params(2, depth, Safeguards::default(), budget(faults, total));
    let start = Instant::now();
    let outcome = model::check(&p);
    if let Some(cx) = &outcome.counterexample {
        panic!("{faults:?}: {cx}");
    }
    assert!(outcome.complete, "{faults:?}");
    println!(
        "{faults:?} to {depth} ticks: {} states, {:.2} s",
        outcome.states,
        start.elapsed().as_secs_f64()
    );
}

/// Issue 25: a new term's token is at least the server's clock. Without it, a process that
/// never saw the lost history's tokens (here a follower that never read the row the lost
/// insert wrote; a newcomer after a crash is the same case) starts a term at or below a token
/// handed out before the failover.
#[test]
fn without_clock_floor_the_model_finds_a_counterexample() {
    let o = counterexample("clock-floor", &["failover"], 1, 30);
    assert!(matches!(
        o.counterexample.unwrap().violation,
        Violation::TokenNotIncreasing { .. }
    ));
}

// Issue 25: with the clock floor, no token raised by our processes is at or below any token
// raised before it, lost history included: failovers to a lagging standby (behind a pooler or
// not) and newcomers (a crash and a restart under the same name). One test per case, so that
// the test threads share them (together about 2.5 minutes of one core). The depths reach past
// the lease of fence that follows the noticed loss.

/// A failover to a lagging standby and a crash (a newcomer restarts): 4.7 M states.
#[test]
fn tokens_hold_through_a_failover_and_a_crash() {
    holds(&["failover", "crash"], 2, 26);
}

/// The same behind a pooler, where nobody reconnects: 4.8 M states.
#[test]
fn tokens_hold_through_a_pooler_failover_and_a_crash() {
    holds(&["pooler", "crash"], 2, 26);
}

/// A failover and a pause (a leader that wakes on the new server): 8.9 M states at 22 ticks
/// (16 M at 26).
#[test]
fn tokens_hold_through_a_failover_and_a_pause() {
    holds(&["failover", "pause"], 2, 22);
}

/// A deleted row and a crash: 0.8 M states.
#[test]
fn tokens_hold_through_a_delete_and_a_crash() {
    holds(&["delete", "crash"], 2, 26);
}

#[test]
fn without_vanished_row_rule_the_model_finds_a_counterexample() {
    let o = counterexample("vanished-row-rule", &["delete"], 1, 30);
    assert!(is_overlap(&o.counterexample.unwrap().violation));
}

/// The case of issue 26: a leader's transaction delayed past its term (here the leader
/// crashes; a pause or a close does as well) lands after the next term began. Unfenced, it
/// commits there.
#[test]
fn without_fence_the_model_finds_a_counterexample() {
    let o = counterexample("fence", &["crash", "write"], 1, 30);
    assert!(matches!(
        o.counterexample.unwrap().violation,
        Violation::LateEffect { .. }
    ));
}

/// With the fence, a transaction of the work that lands at any moment commits only while its
/// term holds the flag: through crashes, pauses, closes and restarts under the same name
/// (a later term of the same process), and failovers.
#[test]
fn with_the_fence_no_transaction_of_a_term_commits_after_a_newer_term_began() {
    for faults in [
        &["crash", "write"][..],
        &["pause", "write"],
        &["close", "write"],
        &["failover", "write"],
        &["late", "write"],
    ] {
        holds(faults, 1, 30);
    }
}

#[test]
fn every_safeguard_has_its_test() {
    let source = include_str!("model_check.rs");
    for name in SAFEGUARD_NAMES {
        let test = format!(
            "fn without_{}_the_model_finds_a_counterexample",
            name.replace('-', "_")
        );
        assert!(source.contains(&test), "missing {test}");
    }
}

/// Issue 25: two processes with one name (the second twin writes the first's name), with a
/// lost statement, a timeout by a late reply, a pause or a crash (one in all): every property
/// holds, one leader at a time included. With the core before issue 25 (which adopted any row
/// under its name at start and after a failed statement) this finds two leaders.
#[test]
fn twins_with_one_name_never_both_lead() {
    let mut p = params(
        2,
        20,
        Safeguards::default(),
        budget(&["loss", "late", "pause", "crash"], 1),
    );
    p.sim.twins = true;
    let start = Instant::now();
    let outcome = model::check(&p);
    if let Some(cx) = &outcome.counterexample {
        panic!("{cx}");
    }
    assert!(outcome.complete);
    println!(
        "twins: {} states, {} transitions, {:.2} s",
        outcome.states,
        outcome.transitions,
        start.elapsed().as_secs_f64()
    );
}

// ---- Batched checks (issue 28) -----------------------------------------------------------------

/// Two processes of two flags each (`sim`, `sim.1`), whose checks go as one statement; the
/// second flag opens a tick after the first, so every first renew takes the other along early
/// (`Input::Batching`).
fn batched(depth: u32, safeguards: Safeguards, b: Budget) -> Params {
    let mut p = Params::batch(2, depth, safeguards);
    p.budget = b;
    p
}

/// A batch that runs, is lost, is late or times out for both its flags together, a row lock
/// that makes a batch skip one flag (`Failed(NotAttempted)`, the other renewed), a pause, a
/// crash: one per trace, every property holds in every state, per flag, to 20 ticks (the
/// first renews, the early join, a retry after a skip and the second renews).
#[test]
fn batched_checks_hold_every_property_through_row_locks_and_shared_fates() {
    let p = batched(
        20,
        Safeguards::default(),
        budget(&["rowlock", "late", "loss", "pause", "crash"], 1),
    );
    let start = Instant::now();
    let outcome = model::check(&p);
    if let Some(cx) = &outcome.counterexample {
        panic!("{cx}");
    }
    assert!(outcome.complete);
    println!(
        "batched, one fault per trace: {} states, {:.2} s",
        outcome.states,
        start.elapsed().as_secs_f64()
    );
}

/// A row lock alone, to 30 ticks (a lease and a half): the skipped flag retries on its own
/// and its renews then fall due apart from the other's, which takes them along early.
#[test]
fn a_row_lock_skips_one_flag_of_a_batch_and_every_property_holds() {
    let p = batched(30, Safeguards::default(), budget(&["rowlock"], 1));
    let outcome = model::check(&p);
    if let Some(cx) = &outcome.counterexample {
        panic!("{cx}");
    }
    assert!(outcome.complete);
    println!("batched, a row lock: {} states", outcome.states);
}

/// Issue 28: a renew that joins a batch unknown to its core, the core told when the batch
/// returns, has a lease counted from the reply: a late reply stretches it past the row's
/// lease, and a pause then lets the other process take the row while the work of the
/// stretched lease still runs (42 events, 16 ticks). Ticks of 200 ms and clocks without drift
/// (the late reply alone does it) keep the search to 2.2 M states, still 40 s and 5.4 GiB in
/// a release build (four cores a world, two faults): ignored in `cargo test`, where the
/// simulator's `without_join_before_send_a_slow_batch_gives_two_leaders` catches the switch
/// in seconds. Run it with `cargo test --release -p leadership-sim --test model_check --
/// --ignored without_join_before_send`.
#[test]
#[ignore = "40 s and 5.4 GiB; the simulator's test covers the switch in cargo test"]
fn without_join_before_send_the_model_finds_a_counterexample() {
    let mut p = batched(
        16,
        Safeguards::without("join-before-send").unwrap(),
        budget(&["pause", "late"], 2),
    );
    p.drift_ppm = 0;
    p.set_tick(std::time::Duration::from_millis(200));
    let start = Instant::now();
    let outcome = model::check(&p);
    let cx = outcome.counterexample.expect("a counterexample");
    let text = cx.to_string();
    println!(
        "join-before-send: {} events, {} states, {:.2} s\n{text}",
        cx.len(),
        outcome.states,
        start.elapsed().as_secs_f64()
    );
    assert!(is_overlap(&cx.violation), "{text}");
    assert!(text.contains("--unsafe join-before-send"), "{text}");
    assert!(text.contains("--flags 2 --batch"), "{text}");
}
