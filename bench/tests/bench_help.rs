//! `bench <scenario> --help` prints the scenario's options and runs nothing (it used to run the
//! whole benchmark); bad options are refused before anything starts.

use std::process::Command;
use std::time::{Duration, Instant};

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .output()
        .expect("run bench")
}

#[test]
fn every_scenario_answers_help_with_its_options_without_running() {
    for (scenario, option) in [
        ("cost", "--checks"),
        ("failover", "--trials"),
        ("fleet", "--sizes"),
        ("ceiling", "--secs"),
        ("statements", "--impl"),
        ("plot", "--svg"),
    ] {
        let started = Instant::now();
        let out = bench(&[scenario, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{scenario}: {out:?}");
        assert!(text.contains(option), "{scenario} --help: {text}");
        // Nothing started: no server, no build of the peers.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{scenario} --help ran something"
        );
    }
}

#[test]
fn a_bad_option_is_refused_naming_it() {
    let out = bench(&["failover", "--trials", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trials"));
    let out = bench(&["cost", "--sizez", "10"]);
    assert_eq!(out.status.code(), Some(2));
}
