//! `--metrics-listen`: `run` and `watch` serve the flag's metrics under the names the rules of
//! `deploy/prometheus/` read, and an address that cannot be served is refused at start, naming
//! the option (exit 78), before any server is reached.

use std::process::Stdio;
use std::time::Duration;

use leadership_pgkit::pg::PgServer;
use leadership_tokio::metrics;

use crate::common::*;

/// The value of the series `name{…labels…}` whose labels include every one of `labels`.
pub fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|l| l == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

#[test]
fn a_bad_address_a_port_in_use_or_a_bad_prefix_is_refused_naming_the_option() {
    // No server: the listener is bound before connecting.
    let url = "postgres://postgres@127.0.0.1:1/postgres";
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (extra, says) in [
        (
            &["--metrics-listen", "9898"][..],
            "--metrics-listen \"9898\"",
        ),
        (&["--metrics-listen", "127.0.0.1:99999"], "--metrics-listen"),
        (&["--metrics-listen", "no such host:1"], "--metrics-listen"),
        (&["--metrics-listen", &taken], "cannot listen there"),
        (
            &["--metrics-listen", "127.0.0.1:0", "--metrics-prefix", "a-b"],
            "--metrics-prefix \"a-b\"",
        ),
    ] {
        for subcommand in [&["watch"][..], &["run"]] {
            let mut args = subcommand.to_vec();
            args.extend(["--url", url, "--name", "m"]);
            args.extend(extra);
            if subcommand == ["run"] {
                args.extend(["--", "true"]);
            }
            let out = output(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        }
    }
    // An observer records no metrics: asking for them is a usage error.
    let out = output(&[
        "watch",
        "--url",
        url,
        "--name",
        "m",
        "--observe",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn watch_and_run_serve_the_flag_metrics_under_the_names_the_rules_read() {
    let pg = PgServer::start().unwrap();
    let url = pg.url();
    let (watch_port, run_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{watch_port}");
    let mut watcher = watch(
        &url,
        "m",
        "w1",
        &["--interval", "1s", "--metrics-listen", &listen],
    );
    let mut lines = Lines::of(&mut watcher);
    lines.until(Duration::from_secs(20), |l| l["raised"] == true);
    let listen = format!("127.0.0.1:{run_port}");
    let mut runner = leadership(&[
        "run",
        "--url",
        &url,
        "--name",
        "m",
        "--process",
        "r1",
        "--interval",
        "1s",
        "--metrics-listen",
        &listen,
        "--metrics-prefix",
        "jobs",
        "--",
        "sleep",
        "600",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let name = |suffix: &str| format!("leadership_{suffix}");
    // The leader's page: its state 1, a won check, a renew's time, not at risk, the check's
    // error counters at 0 and its latency as a histogram.
    let mut page = String::new();
    wait_until("the leader's metrics", Duration::from_secs(30), || {
        page = http_get(watch_port, "/metrics").map_or(String::new(), |(_, body)| body);
        sample(&page, &name(metrics::LAST_RENEW), &[("name", "m")]).is_some()
    });
    let me = [("name", "m"), ("process", "w1")];
    assert_eq!(
        sample(&page, &name(metrics::STATE), &me),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, &name(metrics::AT_RISK), &me),
        Some(0.0),
        "{page}"
    );
    let won = [("name", "m"), ("process", "w1"), ("outcome", "won")];
    assert!(sample(&page, &name(metrics::CHECKS), &won).unwrap() >= 1.0);
    let errors = [("process", "w1"), ("statement", "check"), ("kind", "error")];
    assert_eq!(
        sample(&page, &name(metrics::STATEMENT_ERRORS), &errors),
        Some(0.0)
    );
    let bucket = format!("{}_bucket", name(metrics::STATEMENT_SECONDS));
    assert!(
        sample(&page, &bucket, &[("statement", "check"), ("le", "+Inf")]).unwrap() >= 1.0,
        "{page}"
    );
    let renewed = sample(&page, &name(metrics::LAST_RENEW), &me).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - renewed).abs() < 60.0, "{renewed} vs {now}");
    // The follower, `run` under its own prefix: state 0, checks not won.
    wait_until("the follower's metrics", Duration::from_secs(30), || {
        page = http_get(run_port, "/anything").map_or(String::new(), |(_, body)| body);
        let not_won = [("process", "r1"), ("outcome", "not_won")];
        sample(&page, "jobs_leadership_checks_total", &not_won).is_some()
    });
    assert_eq!(
        sample(
            &page,
            "jobs_leadership_flag_state",
            &[("name", "m"), ("process", "r1")]
        )
        .unwrap_or(0.0),
        0.0,
        "{page}"
    );
    signal(&runner, libc::SIGTERM);
    signal(&watcher, libc::SIGTERM);
    assert_eq!(exit_within(&mut runner, Duration::from_secs(20)), Some(0));
    assert_eq!(exit_within(&mut watcher, Duration::from_secs(20)), Some(0));
}
