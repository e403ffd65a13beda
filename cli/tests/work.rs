//! `leadership run` keeps the leader's command from outliving the lease, against a real
//! PostgreSQL: the command gets SIGTERM when the lease is at risk and SIGKILL at the deadline,
//! from the watchdog when the tool itself is frozen, and a single failed renew stops nothing.
//!
//! `LEADERSHIP_WORK_TRIALS` sets the number of trials of each overlap test (default 5); they
//! run in parallel, each on a flag and roles of its own.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use leadership_pgkit::helpers::psql;
use leadership_pgkit::pg::{PgServer, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_leadership");

fn trials() -> usize {
    std::env::var("LEADERSHIP_WORK_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// A command that logs its start (after noting any earlier command of the log still alive: an
/// overlap), takes `stop_secs` to stop after SIGTERM, and logs that it stopped.
fn script(log: &Path, stop_secs: f64) -> String {
    let log = log.display();
    format!(
        r#"for p in $(awk '$1 == "start" {{print $3}}' {log}); do s=$(awk '{{print $3}}' /proc/$p/stat 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ] && echo "overlap $p" >> {log}; done
echo "start $LEADERSHIP_TOKEN $$ $LEADERSHIP_PROCESS" >> {log}
trap 'echo "stopping $LEADERSHIP_TOKEN $$" >> {log}; sleep {stop_secs}; echo "stop $LEADERSHIP_TOKEN $$" >> {log}; exit 0' TERM
while :; do sleep 0.05; done"#
    )
}

fn lines(log: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

/// `leadership run` as role `role` for flag `name`, in a process group of its own (so the
/// test can stop the tool's whole group without stopping itself).
fn tool(pg: &PgServer, role: &str, name: &str, extra: &[&str], command: &str) -> Child {
    let url = format!(
        "postgres://{role}@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );
    let mut args = vec!["run", "--url", &url, "--name", name, "--process", role];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", command]);
    Command::new(BIN)
        .args(&args)
        .env_remove("PGPASSWORD")
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn role(pg: &PgServer, role: &str) {
    psql(pg, &format!("CREATE ROLE \"{role}\" LOGIN SUPERUSER"));
}

fn backend(pg: &PgServer, role: &str) -> i32 {
    psql(
        pg,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'leadership:{role}' \
             ORDER BY backend_start DESC LIMIT 1"
        ),
    )
    .parse()
    .unwrap_or_else(|_| panic!("no backend for {role}"))
}

fn kill(child: &mut Child) {
    // SAFETY: kill(2) on the process group of a child we spawned.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.wait();
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leadership-work-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How the old leader is cut off in a trial.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Its backend frozen and its logins refused: it cannot renew, but runs.
    Backend,
    /// The tool's whole process group stopped (SIGSTOP): only the watchdog can act.
    Tool,
}

/// One trial: a leads with a command that needs 3 s to stop; a is cut off; b takes over. The
/// result: when a's command logged its stop (if it could), when b's command started, and any
/// overlap b's command saw at its start.
fn trial(pg: &PgServer, i: usize, cut: Cut) -> (Option<Instant>, Instant, Vec<Vec<String>>) {
    let (a_role, b_role, name) = (format!("a{i}"), format!("b{i}"), format!("job{i}"));
    role(pg, &a_role);
    role(pg, &b_role);
    let dir = scratch(&format!("{cut:?}-{i}"));
    let log = dir.join("commands.log");
    std::fs::write(&log, "").unwrap();
    let command = script(&log, 3.0);
    let settings = ["--interval", "6s", "--grace", "4s"];
    let mut a = tool(pg, &a_role, &name, &settings, &command);
    wait_for("a's command", Duration::from_secs(10), || {
        lines(&log).iter().any(|l| l[0] == "start")
    });
    let mut b = tool(pg, &b_role, &name, &settings, &command);
    sleep(Duration::from_millis(700)); // b is up and following
    let frozen = match cut {
        Cut::Backend => {
            psql(pg, &format!("ALTER ROLE \"{a_role}\" NOLOGIN"));
            let pid = backend(pg, &a_role);
            pg.signal_backend(pid, Signal::Stop).unwrap();
            Some(pid)
        }
        Cut::Tool => {
            // SAFETY: kill(2) on the process group of a child we spawned.
            unsafe {
                libc::kill(-(a.id() as libc::pid_t), libc::SIGSTOP);
            }
            None
        }
    };
    // Watch the log; note when lines appear.
    let (mut a_stop, mut b_start) = (None, None);
    let start = Instant::now();
    while b_start.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "b never started: {:?}",
            lines(&log)
        );
        for l in lines(&log) {
            match (l[0].as_str(), l.get(3).map(String::as_str)) {
                ("start", Some(p)) if *p == b_role && b_start.is_none() => {
                    b_start = Some(Instant::now())
                }
                _ => {}
            }
            if l[0] == "stop" && a_stop.is_none() {
                a_stop = Some(Instant::now());
            }
        }
        sleep(Duration::from_millis(10));
    }
    if let Some(pid) = frozen {
        pg.signal_backend(pid, Signal::Cont).unwrap();
    }
    kill(&mut a);
    kill(&mut b);
    let seen = lines(&log);
    let _ = std::fs::remove_dir_all(&dir);
    (a_stop, b_start.unwrap(), seen)
}

fn trials_in_parallel(cut: Cut) {
    let pg = PgServer::start().unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..trials())
            .map(|i| {
                let pg = &pg;
                s.spawn(move || trial(pg, i, cut))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a_stop, b_start, seen)) in results.iter().enumerate() {
        eprintln!("{cut:?} trial {i}: {seen:?}");
        assert!(
            seen.iter().all(|l| l[0] != "overlap"),
            "trial {i}: b's command started while a's still ran: {seen:?}"
        );
        let starts: Vec<i64> = seen
            .iter()
            .filter(|l| l[0] == "start")
            .map(|l| l[1].parse().unwrap())
            .collect();
        assert!(
            starts.windows(2).all(|w| w[0] < w[1]),
            "tokens grow: {starts:?}"
        );
        if let Cut::Backend = cut {
            // The tool ran: it told the command in time, and the command said it stopped.
            let a_stop =
                a_stop.unwrap_or_else(|| panic!("trial {i}: a's command never stopped: {seen:?}"));
            assert!(
                a_stop < *b_start,
                "trial {i}: b started before a's command had stopped"
            );
            assert!(
                seen.iter().any(|l| l[0] == "stopping"),
                "trial {i}: SIGTERM went out"
            );
        }
    }
}

#[test]
fn the_next_leaders_command_starts_only_after_the_old_one_stopped_when_the_backend_hangs() {
    trials_in_parallel(Cut::Backend);
}

#[test]
fn the_watchdog_kills_the_command_by_the_deadline_when_the_tool_is_frozen() {
    trials_in_parallel(Cut::Tool);
}

#[test]
fn a_single_failed_renew_with_the_default_settings_does_not_stop_the_command() {
    let pg = PgServer::start().unwrap();
    role(&pg, "blip");
    let dir = scratch("blip");
    let log = dir.join("commands.log");
    std::fs::write(&log, "").unwrap();
    // Defaults but the interval: timeout 0.8 s, renew every 4 s, stop-ahead 1.04 s.
    let mut a = tool(
        &pg,
        "blip",
        "blip",
        &["--interval", "8s"],
        &script(&log, 0.1),
    );
    wait_for("the command", Duration::from_secs(10), || {
        lines(&log).iter().any(|l| l[0] == "start")
    });
    let version = || {
        psql(
            &pg,
            "SELECT version FROM leadership_flags WHERE name = 'blip'",
        )
    };
    // Just after a renew, hold the row's lock across the next one (due 3.6–4 s later) for
    // longer than the timeout: that renew fails, its retry (0.64–0.96 s later) wins.
    let v = version();
    wait_for("a renew", Duration::from_secs(10), || version() != v);
    sleep(Duration::from_millis(3_400));
    let mut holder = pg.psql_command();
    let mut holder = holder
        .arg("-c")
        .arg("BEGIN; SELECT 1 FROM leadership_flags WHERE name = 'blip' FOR UPDATE; SELECT pg_sleep(1.4); COMMIT;")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut waited = false;
    let until = Instant::now() + Duration::from_millis(1_400);
    while Instant::now() < until {
        waited |= psql(
            &pg,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'leadership:blip' \
             AND wait_event_type = 'Lock'",
        ) != "0";
        sleep(Duration::from_millis(20));
    }
    holder.wait().unwrap();
    assert!(waited, "the renew waited for the lock");
    sleep(Duration::from_secs(6)); // past the lease the failed renew would have ended
    let seen = lines(&log);
    kill(&mut a);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        seen.iter().filter(|l| l[0] == "start").count(),
        1,
        "one start, no restart: {seen:?}"
    );
    assert!(
        seen.iter().all(|l| l[0] != "stopping"),
        "the blip stopped the command: {seen:?}"
    );
}
