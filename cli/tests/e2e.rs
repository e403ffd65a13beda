//! The `leadership` binary end to end, against a real PostgreSQL from the test kit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use leadership_testkit::pg::PgServer;

const BIN: &str = env!("CARGO_BIN_EXE_leadership");

fn leadership(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("PGPASSWORD");
    command
}

fn output(args: &[&str]) -> Output {
    leadership(args).output().expect("run leadership")
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// The child both tools run: on start it records any earlier child still alive (an overlap),
/// then its token and pid; on SIGTERM it records its stop and exits. Alive means a process state
/// other than zombie in `/proc/<pid>/stat`: a killed child whose parent died stays a zombie until
/// init reaps it, and `kill -0` would count that corpse as running (stopped still counts).
fn script(log: &Path) -> String {
    let log = log.display();
    format!(
        r#"for p in $(awk '$1 == "start" {{print $3}}' {log}); do s=$(awk '{{print $3}}' /proc/$p/stat 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ] && echo "overlap $p" >> {log}; done
echo "start $LEADERSHIP_TOKEN $$ $LEADERSHIP_PROCESS" >> {log}
trap 'echo "stop $LEADERSHIP_TOKEN $$" >> {log}; exit 0' TERM
while :; do sleep 0.05; done"#
    )
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

fn starts(log: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn the_command_runs_only_on_the_leader_and_moves_when_the_leader_is_killed() {
    let pg = PgServer::start().unwrap();
    let dir = std::env::temp_dir().join(format!("leadership-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("children.log");
    let _ = std::fs::remove_file(&log);
    std::fs::write(&log, "").unwrap();
    let url = pg.url();
    let script = script(&log);
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
    wait_for("a's child", Duration::from_secs(10), || {
        starts(&log).len() == 1
    });
    let mut b = tool("b");
    sleep(Duration::from_secs(3)); // b competes for more than a lease: a renews, b waits
    assert_eq!(
        starts(&log).len(),
        1,
        "only the leader's child runs: {:?}",
        starts(&log)
    );

    // Kill the leader's tool outright: its child must die with it, and b take over.
    let first = starts(&log)[0].clone();
    assert_eq!(first[3], "a");
    signal(&a, libc::SIGKILL);
    a.wait().unwrap();
    let killed = Instant::now();
    wait_for("b's child", Duration::from_secs(10), || {
        starts(&log).len() >= 2
    });
    let took = killed.elapsed();
    let lines = starts(&log);
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
    let status = b.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let lines = starts(&log);
    assert_eq!(
        lines.last().map(|l| l[0].as_str()),
        Some("stop"),
        "{lines:?}"
    );
    let status = output(&["status", "--url", &url, "--json", "--interval", "2s"]);
    let text = String::from_utf8_lossy(&status.stdout);
    let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(row["holder"], "b");
    assert_eq!(
        row["expired"], true,
        "b released the flag on its way out: {row}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watch_prints_one_json_line_per_change_and_status_shows_the_holder() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let mut watch = leadership(&[
        "watch",
        "--url",
        &url,
        "--name",
        "w",
        "--process",
        "watcher",
        "--interval",
        "2s",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = lines.next().expect("watch output").unwrap();
        seen.push(serde_json::from_str::<serde_json::Value>(&line).expect("a JSON line"));
    }
    let raised: Vec<_> = seen.iter().filter(|l| l["raised"] == true).collect();
    assert!(!raised.is_empty(), "{seen:?}");
    for l in &raised {
        assert_eq!(l["process"], "watcher");
        assert!(l["deadline_unix_ns"].as_i64().unwrap() > l["t_unix_ns"].as_i64().unwrap());
        assert!(l["token"].is_i64());
    }
    // A renewal moves the deadline, so it prints a line too.
    let deadlines: Vec<_> = raised
        .iter()
        .map(|l| l["deadline_unix_ns"].as_i64())
        .collect();
    assert!(raised.len() < 2 || deadlines[0] != deadlines[1]);

    let status = output(&["status", "--url", &url]);
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("w ") && l.contains("watcher")),
        "{text}"
    );

    signal(&watch, libc::SIGTERM);
    assert_eq!(watch.wait().unwrap().code(), Some(0));
}

#[test]
fn bad_input_gives_the_documented_exit_codes() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let code = |args: &[&str]| output(args).status.code();
    // 2: no command after `--`.
    assert_eq!(code(&["run", "--url", &url, "--name", "n"]), Some(2));
    // 3: invalid configuration, named.
    let o = output(&["watch", "--url", &url, "--name", "n", "--timeout", "40s"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("timeout"));
    assert_eq!(
        code(&["status", "--url", "postgres://u:hunter2@h:notaport/db"]),
        Some(3)
    );
    let o = output(&["status", "--url", "postgres://u:hunter2@h:notaport/db"]);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("hunter2"),
        "password leaked"
    );
    // 4: nothing listens there.
    assert_eq!(
        code(&[
            "status",
            "--url",
            "postgres://postgres@127.0.0.1:1/postgres"
        ]),
        Some(4)
    );
    // 5: a table of the wrong shape.
    pg.psql("create table wrong (name text primary key, holder text, version int, \"timestamp\" timestamptz)")
        .unwrap();
    let o = output(&["watch", "--url", &url, "--name", "n", "--table", "wrong"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("version"));
    // 7: a command that does not exist (the flag is released, not held).
    assert_eq!(
        code(&[
            "run",
            "--url",
            &url,
            "--name",
            "n",
            "--",
            "/nonexistent/command"
        ]),
        Some(7)
    );
    // 6: release by someone who does not hold the flag.
    let o = output(&[
        "release",
        "--url",
        &url,
        "--name",
        "n",
        "--process",
        "nobody",
    ]);
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not hold"));
}
