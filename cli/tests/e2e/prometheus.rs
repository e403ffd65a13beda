//! The alerting rules of `deploy/prometheus/` in a real Prometheus (Debian's `prometheus`, which
//! `./test` installs) scraping real `leadership watch` processes (`--metrics-listen`) on real
//! servers, read through Prometheus's HTTP API:
//!
//! - three handovers of one flag (two revokes, whose leader lowers at its deadline and the next
//!   one takes over after it, and a graceful exit, whose release wakes the next one within
//!   milliseconds) never make `LeadershipSeveralLeaders` fire, though Prometheus saw both
//!   processes lead;
//! - two processes each leading a flag of the same name on two different servers, as a
//!   misconfigured fleet would, make it fire, with the value 2.
//!
//! Every query of the Grafana dashboard (`deploy/grafana/`) runs in the same Prometheus.
//!
//! One change to the rules, made in the copy Prometheus loads: `LeadershipSeveralLeaders`'s
//! `for: 1m` becomes `for: 5s` ([`SHORT_FOR`]), so the test takes seconds. The real rule's
//! margin is 1 min against scrape intervals up to 30 s (2x); here 5 s against a 500 ms scrape
//! interval (10x), so a handover's sampling skew is as far from firing as in production or
//! further. Every other rule is loaded as it is, and the judgment uses Prometheus's own
//! record of its evaluations (the `ALERTS` series), not samples taken by the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leadership_pgkit::pg::PgServer;
use serde_json::Value;

use crate::common::*;

/// The scrape and evaluation interval of the test's Prometheus.
const INTERVAL: &str = "500ms";
/// `LeadershipSeveralLeaders`'s `for:` in the test (1m in the rules as shipped).
const SHORT_FOR: &str = "5s";
const SHORT_FOR_SECONDS: f64 = 5.0;
/// Every wait's bound: generous, the machine may be slow.
const LIMIT: Duration = Duration::from_secs(90);

/// The rules as shipped, with `LeadershipSeveralLeaders`'s `for: 1m` replaced by
/// [`SHORT_FOR`]: the first `for: 1m` after `alert: LeadershipSeveralLeaders`, which must lie
/// before the next alert.
fn rules_with_a_short_for() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/leadership.rules.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let at = text
        .find("alert: LeadershipSeveralLeaders")
        .expect("the alert");
    let next = text[at + 1..]
        .find("- alert:")
        .map_or(text.len(), |n| at + 1 + n);
    let rel = text[at..next]
        .find("for: 1m")
        .expect("LeadershipSeveralLeaders has `for: 1m`; if it changed, change this test");
    let mut short = text.clone();
    short.replace_range(
        at + rel..at + rel + "for: 1m".len(),
        &format!("for: {SHORT_FOR}"),
    );
    short
}

/// A Prometheus of its own: a temp dir for its configuration, rules and storage, a free port.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(targets: &[u16]) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("leadership-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules = dir.join("leadership.rules.yml");
        std::fs::write(&rules, rules_with_a_short_for()).unwrap();
        let targets: Vec<String> = targets
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {INTERVAL}\n  scrape_timeout: {INTERVAL}\n  \
             evaluation_interval: {INTERVAL}\nrule_files: [\"{}\"]\nscrape_configs:\n  \
             - job_name: leadership\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus { child, port, dir };
        prometheus.until("Prometheus ready", || {
            http_get(port, "/-/ready").is_some_and(|(status, _)| status == 200)
        });
        prometheus
    }

    /// Waits for `what`, with Prometheus's log in the failure.
    fn until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + LIMIT;
        while !cond() {
            if Instant::now() > end {
                let log =
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
                panic!("{what}: not within {LIMIT:?}; Prometheus's log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /api/v1/<path>`'s `data`.
    fn api(&self, path: &str) -> Value {
        let (status, body) =
            http_get(self.port, &format!("/api/v1/{path}")).expect("Prometheus answers");
        let value: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(status, 200, "{path}: {body}");
        value["data"].clone()
    }

    /// An instant query's result: each series' labels and value.
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let data = self.api(&format!("query?query={}", encode(promql)));
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["metric"].clone(), value(&r["value"][1])))
            .collect()
    }

    /// The alerts pending or firing now, as `/api/v1/alerts` lists them.
    fn alerts(&self, alert: &str, flag: &str) -> Vec<Value> {
        self.api("alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == alert && a["labels"]["name"] == flag)
            .cloned()
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A sample value, as the API writes it (a string).
fn value(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A `watch` of `flag` on `url` as `process`, serving metrics on `port`.
struct Watcher {
    process: &'static str,
    port: u16,
    child: Child,
    lines: Lines,
}

impl Watcher {
    fn start(url: &str, flag: &str, process: &'static str, port: u16) -> Watcher {
        let listen = format!("127.0.0.1:{port}");
        let mut child = watch(
            url,
            flag,
            process,
            &["--interval", "1s", "--metrics-listen", &listen],
        );
        let lines = Lines::of(&mut child);
        Watcher {
            process,
            port,
            child,
            lines,
        }
    }

    /// Waits to lead a term other than `not`; its token.
    fn leads(&mut self, not: Option<i64>) -> i64 {
        self.lines
            .until(LIMIT, |l| l["raised"] == true && l["token"].as_i64() != not)["token"]
            .as_i64()
            .unwrap()
    }

    /// A graceful exit: it releases the flag, which wakes a follower at once.
    fn stop(&mut self) {
        signal(&self.child, libc::SIGTERM);
        assert_eq!(
            exit_within(&mut self.child, LIMIT),
            Some(0),
            "{}",
            self.process
        );
    }
}

/// Waits for either watcher to lead a term above `after`; which one, and the token.
fn next_term(watchers: &mut [Watcher; 2], after: i64) -> (usize, i64) {
    let end = Instant::now() + LIMIT;
    loop {
        for (i, w) in watchers.iter_mut().enumerate() {
            w.lines.during(Duration::from_millis(50));
            let term =
                w.lines.seen.iter().rev().find_map(|(_, l)| {
                    (l["raised"] == true).then(|| l["token"].as_i64()).flatten()
                });
            if let Some(token) = term.filter(|t| *t > after) {
                return (i, token);
            }
        }
        assert!(Instant::now() < end, "no new term within {LIMIT:?}");
    }
}

fn revoke(url: &str, flag: &str, process: &str) {
    let out = output(&[
        "release",
        "--url",
        url,
        "--name",
        flag,
        "--process",
        process,
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn the_several_leaders_alert_stays_silent_through_handovers_and_fires_for_one_name_on_two_databases(
) {
    if !Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("SKIPPED: prometheus not found (Debian package `prometheus`; ./test installs it)");
        return;
    }
    let started = Instant::now();
    let (a, b) = (PgServer::start().unwrap(), PgServer::start().unwrap());
    let (url_a, url_b) = (a.url(), b.url());
    let ports = [free_port(), free_port(), free_port(), free_port()];
    // One flag, two processes, one database: handovers.
    let mut h = [
        Watcher::start(&url_a, "handover", "h1", ports[0]),
        Watcher::start(&url_a, "handover", "h2", ports[1]),
    ];
    let (mut leader, mut token) = next_term(&mut h, 0);
    // One name on two databases: each leads its own.
    let mut twins = [
        Watcher::start(&url_a, "twin", "t1", ports[2]),
        Watcher::start(&url_b, "twin", "t2", ports[3]),
    ];
    for twin in &mut twins {
        twin.leads(None);
    }

    let prometheus = Prometheus::start(&ports);
    let seen_leading = |process: &str| {
        prometheus.until(&format!("Prometheus sees {process} lead, and 2 processes"), || {
            let led = prometheus.query(&format!(
                r#"{{__name__=~".+_leadership_flag_state", name="handover", process="{process}"}} == 1"#
            ));
            let count = prometheus.query(r#"leadership:processes:count{name="handover"}"#);
            !led.is_empty() && count.first().is_some_and(|c| c.1 == 2.0)
        })
    };
    seen_leading(h[leader].process);

    // A revoke: the leader lowers at its deadline, and a process (either: the revoked one may
    // take the expired lease again) takes over after it.
    revoke(&url_a, "handover", h[leader].process);
    (leader, token) = next_term(&mut h, token);
    seen_leading(h[leader].process);
    // Two graceful exits: the release wakes the other at once; the one that left comes back
    // as a follower on its port.
    for _ in 0..2 {
        let (old, new) = (leader, 1 - leader);
        h[old].stop();
        token = h[new].leads(Some(token));
        leader = new;
        let (process, port) = (h[old].process, h[old].port);
        h[old] = Watcher::start(&url_a, "handover", process, port);
        seen_leading(h[leader].process);
    }
    let last_handover = unix_now();

    // The twin fires: LeadershipSeveralLeaders, 2 leaders of "twin".
    prometheus.until("LeadershipSeveralLeaders fires for twin", || {
        prometheus
            .alerts("LeadershipSeveralLeaders", "twin")
            .iter()
            .any(|a| a["state"] == "firing")
    });
    let twin = prometheus.alerts("LeadershipSeveralLeaders", "twin");
    assert_eq!(value(&twin[0]["value"]), 2.0, "{twin:?}");
    let fired_after = started.elapsed();

    // Judged once Prometheus has evaluated the alerts a `for:` (and a recording round) after
    // the last handover: the time of its own latest evaluation, read from the ALERTS series.
    let settled = last_handover + SHORT_FOR_SECONDS + 2.0;
    prometheus.until("an evaluation a `for:` after the last handover", || {
        prometheus
            .query(r#"timestamp(ALERTS{alertname="LeadershipSeveralLeaders", name="twin"})"#)
            .iter()
            .any(|(_, at)| *at >= settled)
    });
    // Prometheus saw both processes lead the handed-over flag ...
    for process in ["h1", "h2"] {
        let led = prometheus.query(&format!(
            r#"max_over_time({{__name__=~".+_leadership_flag_state", name="handover", process="{process}"}}[10m])"#
        ));
        assert_eq!(led.first().map(|l| l.1), Some(1.0), "{process}: {led:?}");
    }
    // ... and the alert never fired for it, in any evaluation (ALERTS holds each one), nor now.
    let fired = prometheus.query(
        r#"count_over_time(ALERTS{alertname="LeadershipSeveralLeaders", alertstate="firing", name="handover"}[10m])"#,
    );
    assert!(fired.is_empty(), "fired during a handover: {fired:?}");
    let now = prometheus.alerts("LeadershipSeveralLeaders", "handover");
    assert!(now.is_empty(), "{now:?}");
    // The same query finds the twin's firing: the silence above is not a query that cannot see.
    let twin_fired = prometheus.query(
        r#"count_over_time(ALERTS{alertname="LeadershipSeveralLeaders", alertstate="firing", name="twin"}[10m])"#,
    );
    assert!(!twin_fired.is_empty());
    let pending = prometheus.query(
        r#"count_over_time(ALERTS{alertname="LeadershipSeveralLeaders", alertstate="pending", name="handover"}[10m])"#,
    );
    println!(
        "the twin fired {fired_after:?} after the start; the handovers left the alert pending in \
         {} evaluation(s), never firing; {:?} in all",
        pending.first().map_or(0.0, |p| p.1),
        started.elapsed()
    );

    // Every query of the Grafana dashboard parses in this Prometheus; who leads and the
    // renew latency have data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/leadership.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let promql = expr
                .replace("$flag", ".*")
                .replace("$__rate_interval", "1m");
            let result = prometheus.query(&promql);
            let title = panel["title"].as_str().unwrap();
            if title == "Who leads each flag" {
                assert!(result.len() >= 4, "{title}: {result:?}");
            }
            if title == "Renew latency" {
                assert!(!result.is_empty(), "{title}: {expr}");
            }
            queried += 1;
        }
    }
    assert!(queried >= 10, "{queried} queries");

    for w in h.iter_mut().chain(&mut twins) {
        w.stop();
    }
}
