//! One-shot jobs: `run --wait 0 --hold-at-least` started on several hosts at once runs the job
//! once; the others exit 75 (held elsewhere) at once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use leadership_pgkit::pg::PgServer;
use leadership_pgkit::scratch::ScratchDir;

use crate::common::*;

#[test]
fn a_job_started_on_three_hosts_at_once_runs_once() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let dir = ScratchDir::new("cli-once").unwrap();
    let log = dir.path().join("runs.log");
    let job = format!(
        "echo \"$LEADERSHIP_PROCESS $LEADERSHIP_TOKEN\" >> {}",
        log.display()
    );
    let start = |host: &str| {
        leadership(&[
            "run",
            "--url",
            &url,
            "--name",
            "nightly",
            "--process",
            host,
            "--interval",
            "2s",
            "--wait",
            "0",
            "--hold-at-least",
            "5s",
            "--",
            "sh",
            "-c",
            &job,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let started = Instant::now();
    let mut hosts: Vec<_> = ["h1", "h2", "h3"].into_iter().map(start).collect();
    // Each host's exit code and when it exited.
    let mut outcomes = vec![None; hosts.len()];
    wait_until("every host exits", Duration::from_secs(30), || {
        for (host, outcome) in hosts.iter_mut().zip(&mut outcomes) {
            if outcome.is_none() {
                if let Some(status) = host.try_wait().unwrap() {
                    *outcome = Some((status.code(), started.elapsed()));
                }
            }
        }
        outcomes.iter().all(Option::is_some)
    });
    let outcomes: Vec<_> = outcomes.into_iter().flatten().collect();
    let runs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(runs.lines().count(), 1, "the job ran once: {runs:?}");
    let winners: Vec<_> = outcomes.iter().filter(|(c, _)| *c == Some(0)).collect();
    let held = outcomes.iter().filter(|(c, _)| *c == Some(75)).count();
    assert_eq!((winners.len(), held), (1, 2), "{outcomes:?}");
    // The winner kept the flag for 5 s from the job's start, then released it.
    assert!(winners[0].1 >= Duration::from_secs(5), "{outcomes:?}");
    for (code, took) in &outcomes {
        if *code == Some(75) {
            assert!(
                *took < Duration::from_secs(5),
                "held elsewhere is told at once: {took:?}"
            );
        }
    }
    let status = output(&["status", "--url", &url, "--json", "--name", "nightly"]);
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&status.stdout).trim()).unwrap();
    assert_eq!(row["expired"], true, "released after the hold: {row}");
}

#[test]
fn a_wait_longer_than_the_holders_hold_runs_the_job_after_it() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let args = |host: &'static str, wait: &'static str| {
        let url = url.clone();
        move || {
            leadership(&[
                "run",
                "--url",
                &url,
                "--name",
                "queue",
                "--process",
                host,
                "--interval",
                "2s",
                "--wait",
                wait,
                "--hold-at-least",
                "2s",
                "--",
                "true",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
        }
    };
    let mut first = args("first", "0")();
    wait_until("the first job", Duration::from_secs(10), || {
        pg.psql("select holder from leadership_flags where name = 'queue'")
            .unwrap_or_default()
            .trim()
            == "first"
    });
    let mut waited = args("second", "20s")();
    let mut impatient = args("third", "100ms")();
    assert_eq!(
        exit_within(&mut impatient, Duration::from_secs(10)),
        Some(75)
    );
    assert_eq!(exit_within(&mut first, Duration::from_secs(10)), Some(0));
    assert_eq!(exit_within(&mut waited, Duration::from_secs(20)), Some(0));
}
