//! Recording the metrics named in [`crate::metrics`] through the `metrics` facade.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leadership_core::{Command, Failure, WonBy};
use metrics::{counter, gauge, histogram, Label};

use crate::metrics::{
    AT_RISK, BALANCE_MEMBERS, BALANCE_SCAN_ERRORS, BALANCE_WANTED, CHECKS, HANDOVERS, LAST_RENEW,
    RECONNECTS, STATE, STATEMENT_ERRORS, STATEMENT_SECONDS, TAKEOVERS,
};

/// Which statement a measurement is about (the `statement` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Statement {
    /// [`sql::CHECK`](leadership_core::sql::CHECK).
    Check,
    /// [`sql::RELEASE`](leadership_core::sql::RELEASE).
    Release,
}

impl Statement {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Statement::Check => "check",
            Statement::Release => "release",
        }
    }
}

/// The metrics of one flag in one process. Cheap to clone; every method is a no-op when built
/// without a prefix.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    prefix: String,
    labels: Vec<Label>,
    /// The check's error counters exist (at 0 until a failure).
    check_errors_registered: AtomicBool,
}

impl Metrics {
    /// Metrics for flag `name` in process `process`, named `<prefix>_…`; `None` (or an empty
    /// prefix, as in Go) records nothing.
    pub(crate) fn new(prefix: Option<&str>, name: &str, process: &str) -> Metrics {
        let inner = prefix.filter(|p| !p.is_empty()).map(|prefix| {
            Arc::new(Inner {
                prefix: prefix.to_string(),
                labels: vec![
                    Label::new("name", name.to_string()),
                    Label::new("process", process.to_string()),
                ],
                check_errors_registered: AtomicBool::new(false),
            })
        });
        Metrics { inner }
    }

    /// Creates the check's error counters at 0, once, with the first check that returns (a
    /// balanced group's metrics never check): Prometheus's `increase()` cannot count a
    /// series' first sample, so a counter born at 1 with the first failure would hide that
    /// failure from the alerts (`deploy/prometheus/`).
    fn register_check_errors(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.check_errors_registered.swap(true, Ordering::Relaxed) {
            return;
        }
        let errors = format!("{}_{STATEMENT_ERRORS}", inner.prefix);
        for kind in ["error", "timeout"] {
            counter!(
                errors.clone(),
                self.labels_with(&[("statement", Statement::Check.as_str()), ("kind", kind)])
            )
            .increment(0);
        }
    }

    /// The full name of metric `suffix` (one of this module's constants), or `None` when
    /// disabled.
    pub(crate) fn metric_name(&self, suffix: &str) -> Option<String> {
        self.inner
            .as_ref()
            .map(|i| format!("{}_{suffix}", i.prefix))
    }

    fn labels_with(&self, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
        let mut labels = self
            .inner
            .as_ref()
            .map(|i| i.labels.clone())
            .unwrap_or_default();
        labels.extend(extra.iter().map(|(k, v)| Label::new(*k, *v)));
        labels
    }

    /// Sets the state gauge: 1 raised, 0 lowered.
    pub(crate) fn state(&self, raised: bool) {
        if let Some(name) = self.metric_name(STATE) {
            gauge!(name, self.labels_with(&[])).set(f64::from(u8::from(raised)));
        }
    }

    /// A check returned: counts it by outcome and records its latency.
    pub(crate) fn checked(&self, won: bool, latency: Duration) {
        let Some(checks) = self.metric_name(CHECKS) else {
            return;
        };
        self.register_check_errors();
        let outcome = if won { "won" } else { "not_won" };
        counter!(checks, self.labels_with(&[("outcome", outcome)])).increment(1);
        self.latency(Statement::Check, latency);
    }

    /// A release returned (`released`: it changed the row): records its latency and counts a
    /// handover if it freed the row.
    pub(crate) fn released(&self, released: bool, latency: Duration) {
        let Some(handovers) = self.metric_name(HANDOVERS) else {
            return;
        };
        if released {
            counter!(handovers, self.labels_with(&[])).increment(1);
        }
        self.latency(Statement::Release, latency);
    }

    /// A statement failed or timed out after `elapsed`.
    pub(crate) fn failed(&self, statement: Statement, failure: Failure, elapsed: Duration) {
        let (Some(errors), Some(checks)) =
            (self.metric_name(STATEMENT_ERRORS), self.metric_name(CHECKS))
        else {
            return;
        };
        let kind = match failure {
            Failure::Error => "error",
            Failure::Timeout => "timeout",
            // A batch skipped the row: another transaction held its lock.
            Failure::NotAttempted => "not_attempted",
        };
        counter!(
            errors,
            self.labels_with(&[("statement", statement.as_str()), ("kind", kind)])
        )
        .increment(1);
        if statement == Statement::Check {
            counter!(checks, self.labels_with(&[("outcome", kind)])).increment(1);
        }
        // The elapsed time of a failure says little about the server: not a latency sample.
        let _ = elapsed;
    }

    /// The connection was replaced.
    pub(crate) fn reconnect(&self) {
        if let Some(name) = self.metric_name(RECONNECTS) {
            counter!(name, self.labels_with(&[])).increment(1);
        }
    }

    /// A balanced group was read (these metrics' `name` is the group): how many members were
    /// live and how many shards the balance gives this process.
    pub(crate) fn balanced(&self, members: usize, wanted: usize) {
        let (Some(m), Some(w)) = (
            self.metric_name(BALANCE_MEMBERS),
            self.metric_name(BALANCE_WANTED),
        ) else {
            return;
        };
        gauge!(m, self.labels_with(&[])).set(members as f64);
        gauge!(w, self.labels_with(&[])).set(wanted as f64);
    }

    /// A read of a balanced group failed.
    pub(crate) fn scan_failed(&self) {
        if let Some(name) = self.metric_name(BALANCE_SCAN_ERRORS) {
            counter!(name, self.labels_with(&[])).increment(1);
        }
    }

    /// Follows a core command: the state gauge on raise and lower, a takeover on a term won
    /// by taking over, the at-risk gauge, and the time of the last won check. Call it for every
    /// command drained.
    pub(crate) fn command(&self, command: &Command) {
        match command {
            Command::Raise(lease) => {
                self.state(true);
                self.at_risk(false);
                self.won_now();
                if lease.won_by == WonBy::TookOver {
                    if let Some(name) = self.metric_name(TAKEOVERS) {
                        counter!(name, self.labels_with(&[])).increment(1);
                    }
                }
            }
            Command::Renewed(_) => {
                self.at_risk(false);
                self.won_now();
            }
            Command::AtRisk(_) => self.at_risk(true),
            Command::Lower(_) | Command::Closed => {
                self.state(false);
                self.at_risk(false);
            }
            _ => {}
        }
    }

    fn at_risk(&self, at_risk: bool) {
        if let Some(name) = self.metric_name(AT_RISK) {
            gauge!(name, self.labels_with(&[])).set(f64::from(u8::from(at_risk)));
        }
    }

    /// A check won now: the wall clock, which is what Prometheus's `time()` compares with.
    fn won_now(&self) {
        if let Some(name) = self.metric_name(LAST_RENEW) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            gauge!(name, self.labels_with(&[])).set(now);
        }
    }

    fn latency(&self, statement: Statement, latency: Duration) {
        if let Some(name) = self.metric_name(STATEMENT_SECONDS) {
            histogram!(name, self.labels_with(&[("statement", statement.as_str())]))
                .record(latency.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadership_core::{Instant, Lease, LowerReason};
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn render(f: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, f);
        handle.render()
    }

    #[test]
    fn the_go_state_gauge_keeps_its_name_and_labels() {
        let out = render(|| {
            let m = Metrics::new(Some("jobs"), "report", "pod-a");
            m.command(&Command::Raise(Lease {
                token: 3,
                version: 3,
                deadline: Instant::from_nanos(1),
                at_risk: Instant::from_nanos(1),
                won_by: WonBy::TookOver,
            }));
            m.checked(true, Duration::from_millis(1));
            m.failed(Statement::Check, Failure::Timeout, Duration::from_secs(1));
            m.released(true, Duration::from_millis(1));
            m.reconnect();
        });
        for line in [
            r#"jobs_leadership_flag_state{name="report",process="pod-a"} 1"#,
            r#"jobs_leadership_takeovers_total{name="report",process="pod-a"} 1"#,
            r#"jobs_leadership_checks_total{name="report",process="pod-a",outcome="won"} 1"#,
            r#"jobs_leadership_checks_total{name="report",process="pod-a",outcome="timeout"} 1"#,
            r#"jobs_leadership_statement_errors_total{name="report",process="pod-a",statement="check",kind="timeout"} 1"#,
            r#"jobs_leadership_handovers_total{name="report",process="pod-a"} 1"#,
            r#"jobs_leadership_reconnects_total{name="report",process="pod-a"} 1"#,
            r#"jobs_leadership_statement_seconds_count{name="report",process="pod-a",statement="release"} 1"#,
        ] {
            assert!(out.contains(line), "missing {line} in\n{out}");
        }
        let out = render(|| {
            Metrics::new(Some("jobs"), "report", "pod-a")
                .command(&Command::Lower(LowerReason::Lost))
        });
        assert!(out.contains(r#"jobs_leadership_flag_state{name="report",process="pod-a"} 0"#));
    }

    fn lease() -> Lease {
        Lease {
            token: 3,
            version: 3,
            deadline: Instant::from_nanos(1),
            at_risk: Instant::from_nanos(1),
            won_by: WonBy::Created,
        }
    }

    #[test]
    fn a_lease_at_risk_is_1_until_a_renew_wins_or_the_flag_lowers_and_a_won_check_is_dated() {
        let value = |out: &str, metric: &str| -> f64 {
            let prefix = format!("jobs_{metric}{{name=\"report\",process=\"pod-a\"}} ");
            out.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {metric} in\n{out}"))
                .parse()
                .unwrap()
        };
        let m = || Metrics::new(Some("jobs"), "report", "pod-a");
        let out = render(|| m().command(&Command::Raise(lease())));
        assert_eq!(value(&out, AT_RISK), 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - value(&out, LAST_RENEW)).abs() < 60.0, "{out}");
        let out = render(|| m().command(&Command::AtRisk(lease())));
        assert_eq!(value(&out, AT_RISK), 1.0);
        let out = render(|| {
            m().command(&Command::AtRisk(lease()));
            m().command(&Command::Renewed(lease()));
        });
        assert_eq!(value(&out, AT_RISK), 0.0);
        assert!(value(&out, LAST_RENEW) > 0.0);
        let out = render(|| {
            m().command(&Command::AtRisk(lease()));
            m().command(&Command::Lower(LowerReason::DeadlinePassed));
        });
        assert_eq!(value(&out, AT_RISK), 0.0);
        assert_eq!(value(&out, STATE), 0.0);
    }

    #[test]
    fn the_check_s_error_counters_exist_at_0_before_the_first_failure() {
        let out = render(|| {
            Metrics::new(Some("jobs"), "report", "pod-a").checked(true, Duration::from_millis(1))
        });
        for kind in ["error", "timeout"] {
            let line = format!(
                r#"jobs_leadership_statement_errors_total{{name="report",process="pod-a",statement="check",kind="{kind}"}} 0"#
            );
            assert!(out.contains(&line), "missing {line} in\n{out}");
        }
    }

    #[test]
    fn every_metric_recorded_is_in_the_list_of_names() {
        let out = render(|| {
            let m = Metrics::new(Some("jobs"), "report", "pod-a");
            m.command(&Command::Raise(Lease {
                won_by: WonBy::TookOver,
                ..lease()
            }));
            m.command(&Command::AtRisk(lease()));
            m.checked(true, Duration::from_millis(1));
            m.failed(Statement::Check, Failure::Error, Duration::from_secs(1));
            m.released(true, Duration::from_millis(1));
            m.reconnect();
            m.balanced(3, 22);
            m.scan_failed();
        });
        let mut recorded: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap())
            .map(|n| n.strip_prefix("jobs_").unwrap())
            .map(|n| {
                // A histogram (rendered as a summary by default) adds its series' suffixes.
                n.strip_suffix("_sum")
                    .or_else(|| n.strip_suffix("_count"))
                    .unwrap_or(n)
            })
            .collect();
        recorded.sort_unstable();
        recorded.dedup();
        let mut all = crate::metrics::ALL.to_vec();
        all.sort_unstable();
        assert_eq!(recorded, all, "metrics::ALL lists exactly what is recorded");
    }

    #[test]
    fn a_balanced_group_reports_its_members_and_this_process_s_shards() {
        let out = render(|| {
            let m = Metrics::new(Some("jobs"), "orders", "pod-a");
            m.balanced(3, 22);
            m.scan_failed();
        });
        for line in [
            r#"jobs_leadership_balance_members{name="orders",process="pod-a"} 3"#,
            r#"jobs_leadership_balance_wanted_shards{name="orders",process="pod-a"} 22"#,
            r#"jobs_leadership_balance_scan_errors_total{name="orders",process="pod-a"} 1"#,
        ] {
            assert!(out.contains(line), "missing {line} in\n{out}");
        }
        assert!(
            !out.contains("statement_errors"),
            "a group runs no checks:\n{out}"
        );
    }

    #[test]
    fn no_prefix_records_nothing() {
        for prefix in [None, Some("")] {
            let out = render(|| {
                let m = Metrics::new(prefix, "report", "pod-a");
                m.state(true);
                m.checked(true, Duration::from_millis(1));
                m.reconnect();
                m.balanced(3, 22);
                m.scan_failed();
            });
            assert!(out.trim().is_empty(), "{out}");
        }
    }
}
