//! The default process name: two containers on one host (each the first process of its own PID
//! namespace, one host name) never both run the command.

use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use leadership_pgkit::pg::PgServer;
use leadership_pgkit::scratch::ScratchDir;

use crate::common::*;

/// Root and `unshare` are needed to give each tool a PID namespace of its own; otherwise the test
/// says why it is skipped and passes.
fn can_unshare(test: &str) -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping {test}: needs root (unshare --pid)");
        return false;
    }
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("skipping {test}: `unshare --pid --fork --mount-proc` is unavailable");
        return false;
    }
    true
}

/// The command's own record: one line every 20 ms with the twin, the token and the wall-clock
/// instant in nanoseconds (both twins share the host's clock).
fn ticking_child(log: &std::path::Path) -> String {
    format!(
        r#"while :; do echo "$TWIN $LEADERSHIP_TOKEN $LEADERSHIP_PROCESS $(date +%s%N)" >> {}; sleep 0.02; done"#,
        log.display()
    )
}

/// [first, last] tick of each (twin, token) run of the command.
fn runs(log: &std::path::Path) -> Vec<(String, i64, String, u128, u128)> {
    let mut runs: Vec<(String, i64, String, u128, u128)> = Vec::new();
    for line in log_lines(log) {
        let [twin, token, process, at] = &line[..] else {
            continue; // a line cut by the kill
        };
        let (Ok(token), Ok(at)) = (token.parse::<i64>(), at.parse::<u128>()) else {
            continue;
        };
        match runs.iter_mut().find(|r| &r.0 == twin && r.1 == token) {
            Some(run) => {
                run.3 = run.3.min(at);
                run.4 = run.4.max(at);
            }
            None => runs.push((twin.clone(), token, process.clone(), at, at)),
        }
    }
    runs
}

#[test]
fn two_containers_with_the_default_name_never_both_run_the_command() {
    if !can_unshare("two_containers_with_the_default_name_never_both_run_the_command") {
        return;
    }
    let pg = PgServer::start().unwrap();
    let dir = ScratchDir::new("cli-names").unwrap();
    let log = dir.path().join("ticks.log");
    std::fs::write(&log, "").unwrap();
    let url = pg.url();
    let script = ticking_child(&log);
    // As a container runtime starts them: pid 1 of a fresh PID namespace, the host's name, no
    // --process. `--kill-child` ends the namespace when the test kills `unshare`.
    let twin = |name: &str| -> Child {
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN])
            .args(["run", "--url", &url, "--name", "job", "--interval", "2s"])
            // The default containment: these twins share the host's cgroup tree (as
            // containers without a cgroup namespace do), so their cgroups must not clash.
            .args(["--", "sh", "-c", &script])
            .env("TWIN", name)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("LEADERSHIP_") || key.starts_with("PG") || key == "DATABASE_URL" {
                command.env_remove(&*key);
            }
        }
        command.spawn().unwrap()
    };
    let mut a = twin("a");
    wait_until("a's command", Duration::from_secs(10), || {
        !runs(&log).is_empty()
    });
    let mut b = twin("b");
    // More than two leases: b's tool starts, finds the row and renews or waits.
    sleep(Duration::from_secs(5));
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    sleep(Duration::from_millis(300)); // the namespaces' last ticks land
    let runs = runs(&log);
    assert!(!runs.is_empty(), "no command ran");
    for x in &runs {
        for y in &runs {
            if x.0 < y.0 {
                let both = x.3.max(y.3) as i128 - x.4.min(y.4) as i128;
                assert!(
                    both > 0,
                    "both twins ran the command for {} ms at once: {x:?} and {y:?} (all: {runs:?})",
                    -both / 1_000_000
                );
            }
        }
    }
    // Each twin named itself differently although both are pid 1 of one host name.
    let names: Vec<&str> = runs.iter().map(|r| r.2.as_str()).collect();
    assert!(names.iter().all(|n| n.contains("-1-")), "{names:?}");
}
