//! `run`: the command runs only on the leader and moves when the leader dies.

use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use leadership_pgkit::pg::PgServer;
use leadership_pgkit::scratch::ScratchDir;

use crate::common::*;

#[test]
fn the_command_runs_only_on_the_leader_and_moves_when_the_leader_is_killed() {
    let pg = PgServer::start().unwrap();
    let dir = ScratchDir::new("cli-run").unwrap();
    let log = dir.path().join("children.log");
    std::fs::write(&log, "").unwrap();
    let url = pg.url();
    let script = logging_child(&log);
    let tool = |process: &str| {
        leadership(&[
            "run",
            "--url",
            &url,
            "--name",
            "job",
            "--process",
            process,
            "--interval",
            "2s",
            "--grace",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
    };
    let mut a = tool("a");
    wait_until("a's child", Duration::from_secs(10), || {
        log_lines(&log).len() == 1
    });
    let mut b = tool("b");
    sleep(Duration::from_secs(3)); // b competes for more than a lease: a renews, b waits
    assert_eq!(
        log_lines(&log).len(),
        1,
        "only the leader's child runs: {:?}",
        log_lines(&log)
    );

    // Kill the leader's tool outright: its child must die with it, and b take over.
    let first = log_lines(&log)[0].clone();
    assert_eq!(first[3], "a");
    signal(&a, libc::SIGKILL);
    a.wait().unwrap();
    let killed = Instant::now();
    wait_until("b's child", Duration::from_secs(10), || {
        log_lines(&log).len() >= 2
    });
    let took = killed.elapsed();
    let lines = log_lines(&log);
    assert!(
        lines.iter().all(|l| l[0] != "overlap"),
        "two children alive at once: {lines:?}"
    );
    let second = &lines[1];
    assert_eq!((second[0].as_str(), second[3].as_str()), ("start", "b"));
    let (t1, t2): (i64, i64) = (first[1].parse().unwrap(), second[1].parse().unwrap());
    assert!(t2 > t1, "fencing tokens increase: {t1} then {t2}");
    // About the lease (2 s): the killed tool did not release; generous for a slow machine.
    assert!(
        took > Duration::from_millis(500) && took < Duration::from_secs(8),
        "{took:?}"
    );

    // SIGTERM to b is forwarded to its child; the child stops, b releases and exits 0.
    signal(&b, libc::SIGTERM);
    assert_eq!(exit_within(&mut b, Duration::from_secs(10)), Some(0));
    let lines = log_lines(&log);
    assert_eq!(
        lines.last().map(|l| l[0].as_str()),
        Some("stop"),
        "{lines:?}"
    );
    // status needs no --interval: the library's default (30 s) judges expiry, and a released
    // flag is expired whatever the interval.
    let status = output(&["status", "--url", &url, "--json"]);
    assert_eq!(status.status.code(), Some(0));
    let text = String::from_utf8_lossy(&status.stdout);
    let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(row["name"], "job");
    assert_eq!(
        row["expired"], true,
        "b released the flag on its way out: {row}"
    );
}

#[test]
fn the_command_sees_its_token_deadline_name_and_process() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let o = output(&[
        "run",
        "--url",
        &url,
        "--name",
        "env",
        "--process",
        "me",
        "--interval",
        "4s",
        "--",
        "sh",
        "-c",
        "echo $LEADERSHIP_TOKEN $LEADERSHIP_DEADLINE_UNIX_NS $LEADERSHIP_NAME $LEADERSHIP_PROCESS",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{text}");
    assert!(words[0].parse::<i64>().unwrap() >= 0);
    let deadline: i64 = words[1].parse().unwrap();
    // The lease's deadline, in the future when the command started, and within one lease.
    assert!(
        deadline > before && deadline < before + 4_000_000_000 + 2_000_000_000,
        "{text}"
    );
    assert_eq!(&words[2..], ["env", "me"]);
}
