//! `deploy/prometheus/`: the alerting and recording rules pass their `promtool test rules` unit
//! tests (alerts fire on what they are about and not on handovers), and every metric they name
//! is one the code exports (`leadership_tokio::metrics::ALL`), so renaming a metric breaks
//! this test rather than the alerts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The metric names (after their prefix) a file uses: every `…_leadership_<suffix>`.
pub(super) fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("_leadership_")
        .map(|(at, _)| {
            let rest = &text[at + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A histogram's series add `_sum` and `_count` (and `_bucket`) to its name.
pub(super) fn exported(name: &str) -> bool {
    let all = leadership_tokio::metrics::ALL;
    all.contains(&name)
        || ["_sum", "_count", "_bucket"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|n| all.contains(&n)))
}

#[test]
fn every_metric_the_rules_and_their_tests_use_is_exported_by_the_code() {
    for file in ["leadership.rules.yml", "leadership.rules.test.yml"] {
        let names = metric_names(&read(file));
        assert!(
            names.len() >= 4,
            "{file}: found only {names:?}: is the scan still right?"
        );
        for name in names {
            assert!(
                exported(&name),
                "{file} uses {name}, which leadership_tokio::metrics does not export (renamed?)"
            );
        }
    }
    // Each alert the rules promise is there.
    let rules = read("leadership.rules.yml");
    for alert in [
        "LeadershipSeveralLeaders",
        "LeadershipNoLeader",
        "LeadershipRenewFailures",
        "LeadershipLeaseAtRisk",
        "LeadershipOutOfBalance",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
        assert!(
            read("leadership.rules.test.yml").contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }
}

#[test]
fn the_scan_finds_a_name_that_is_not_exported() {
    let names = metric_names(r#"rate({__name__=~".+_leadership_checks_totals"}[5m])"#);
    assert_eq!(names, ["leadership_checks_totals"]);
    assert!(!exported(&names[0]));
    assert!(exported("leadership_statement_seconds_sum"));
}

#[test]
fn the_rules_pass_their_promtool_unit_tests() {
    let promtool = match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => "promtool",
        _ => {
            println!(
                "SKIPPED: promtool not found (Debian package `prometheus`; ./test installs it)"
            );
            return;
        }
    };
    for args in [
        &["check", "rules", "leadership.rules.yml"][..],
        &["test", "rules", "leadership.rules.test.yml"],
    ] {
        let out = Command::new(promtool)
            .args(args)
            .current_dir(dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
