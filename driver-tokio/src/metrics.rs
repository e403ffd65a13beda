//! The metrics a flag records, and their names (each lives here, once).
//!
//! Each is `<prefix>_<suffix>` with the labels `name` (the flag) and `process`, as the Go
//! flag's gauge `<prefix>_leadership_flag_state{name, process}` (1 raised, 0 lowered), whose
//! name is kept so existing dashboards keep working. As in Go, no prefix means no metrics:
//! without [`FlagBuilder::metrics_prefix`](crate::FlagBuilder::metrics_prefix) nothing is
//! recorded.
//!
//! Metrics go through the [`metrics`] facade: install any recorder (e.g.
//! `metrics-exporter-prometheus`) to export them; without one they cost almost nothing.
//!
//! | name (after `<prefix>_`) | kind | extra labels | what |
//! |---|---|---|---|
//! | [`STATE`] | gauge | | 1 while raised, 0 otherwise (the Go flag's) |
//! | [`CHECKS`] | counter | `outcome` = `won`, `not_won`, `error`, `timeout`, `not_attempted` | checks finished |
//! | [`STATEMENT_ERRORS`] | counter | `statement` = `check`, `release`; `kind` = `error`, `timeout`, `not_attempted` (a batch skipped a row another transaction had locked) | statements that failed or timed out |
//! | [`STATEMENT_SECONDS`] | histogram | `statement` | latency of statements that returned |
//! | [`AT_RISK`] | gauge | | 1 while the lease is at risk (no renew has won by the deadline minus the stop-ahead: the leader-only work was told to stop), 0 otherwise |
//! | [`LAST_RENEW`] | gauge | | when this process last won a check (a term's first or a renew), in Unix seconds; `time() - it` is the age of the last won renew |
//! | [`TAKEOVERS`] | counter | | terms won by taking over an expired lease |
//! | [`HANDOVERS`] | counter | | releases that freed the row for the next leader |
//! | [`RECONNECTS`] | counter | | connections replaced after a failure |
//! | [`BALANCE_MEMBERS`] | gauge | | a balanced group's live members, as this process last read them |
//! | [`BALANCE_WANTED`] | gauge | | the shards the balance gives this process (it owns them once their flags are raised) |
//! | [`BALANCE_SCAN_ERRORS`] | counter | | reads of the group that failed (the assignment is kept) |
//!
//! The `BALANCE_*` metrics are a [balanced group](crate::Balanced)'s: their `name` label is the
//! group's name. Each shard is an ordinary flag with the flag metrics above, named
//! `<group>/shard/<i>`.
//!
//! ```
//! assert_eq!(leadership_tokio::metrics::STATE, "leadership_flag_state");
//! ```

/// The Go flag's state gauge: 1 raised, 0 lowered.
pub const STATE: &str = "leadership_flag_state";
/// Checks finished, by `outcome`.
pub const CHECKS: &str = "leadership_checks_total";
/// Statements that failed or timed out, by `statement` and `kind`.
pub const STATEMENT_ERRORS: &str = "leadership_statement_errors_total";
/// Latency of the statements that returned, in seconds, by `statement`.
pub const STATEMENT_SECONDS: &str = "leadership_statement_seconds";
/// 1 while the lease is at risk, 0 otherwise.
pub const AT_RISK: &str = "leadership_lease_at_risk";
/// When this process last won a check, in Unix seconds (set on a raise and on each renew).
pub const LAST_RENEW: &str = "leadership_last_renew_timestamp_seconds";
/// Terms won by taking over an expired lease.
pub const TAKEOVERS: &str = "leadership_takeovers_total";
/// Releases that freed the row for the next leader.
pub const HANDOVERS: &str = "leadership_handovers_total";
/// Connections replaced after a failure.
pub const RECONNECTS: &str = "leadership_reconnects_total";
/// A balanced group's live members, as this process last read them.
pub const BALANCE_MEMBERS: &str = "leadership_balance_members";
/// The shards the balance gives this process.
pub const BALANCE_WANTED: &str = "leadership_balance_wanted_shards";
/// Reads of a balanced group that failed.
pub const BALANCE_SCAN_ERRORS: &str = "leadership_balance_scan_errors_total";

/// Every name above: what dashboards and alerting rules may use (`deploy/prometheus/` is
/// checked against it).
pub const ALL: &[&str] = &[
    STATE,
    CHECKS,
    STATEMENT_ERRORS,
    STATEMENT_SECONDS,
    AT_RISK,
    LAST_RENEW,
    TAKEOVERS,
    HANDOVERS,
    RECONNECTS,
    BALANCE_MEMBERS,
    BALANCE_WANTED,
    BALANCE_SCAN_ERRORS,
];
