//! Configuration of one flag, validated once by [`ConfigBuilder::build`].
//!
//! The defaults are the Go flag's: interval 30 s, timeout 1 s, jitter 0.2. The Go flag's
//! `interval` is the lease: others may take the flag over once the holder has not renewed it
//! for longer than `interval` by the database's clock. Everything else is derived from it unless
//! set, so a setting the user did not give never clashes with one they did: the timeout (1 s, or
//! interval/10 for leases under 10 s), the retry interval (interval/10, as in Go), the deadline
//! margin (interval/20), the stop-ahead (see [`Config::stop_ahead`]) and the renew interval
//! (interval/2 as in Go, or less where a renew would otherwise not finish before the lease is
//! at risk).
//!
//! # The lease's timeline
//!
//! A term's lease runs from the moment the winning statement was sent (`s`):
//!
//! ```text
//! s ──── renew ──── at risk ──── deadline ── expiry
//!        s + renew  deadline     s + interval s + interval, by the database's clock:
//!                   - stop_ahead - margin     the earliest another process takes over
//! ```
//!
//! - the leader renews at `s + renew`; each renew that wins starts the timeline again;
//! - if no renew has won by the *at-risk* instant, the leader-only work is told to begin
//!   stopping, so that it is over by the deadline ([`Command::AtRisk`](crate::Command::AtRisk));
//! - at the *deadline* the leader stops believing it leads;
//! - a margin later the lease expires by the database's clock, and another process may take over.
//!
//! A renew attempt takes at most one timeout (two with a precheck, which is bounded by the
//! timeout too); the renew interval leaves room for one attempt before the at-risk instant.

use alloc::string::String;
use core::time::Duration;

use crate::time::duration_micros;

mod build;
mod error;
#[cfg(test)]
mod tests;

use build::attempt;
pub use error::ConfigError;

/// Default lease (the Go flag's `interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default bound on one statement (the Go flag's); leases shorter than ten times this get a
/// tenth of the lease instead (as much as the retry interval), so that a failed renew and its
/// retry still leave the leader-only work time to stop before the deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default jitter factor.
pub const DEFAULT_JITTER: f64 = 0.2;

/// Longest flag or process name, in bytes.
///
/// PostgreSQL `text` takes up to 1 GB, but `name` is the primary key and a B-tree entry must fit
/// in a third of a page (about 2,700 bytes), and a release sends the name as a `NOTIFY` payload
/// (under 8,000 bytes). 1,024 bytes is far below both and above any Kubernetes
/// `cluster/namespace/pod` name.
pub const MAX_NAME_BYTES: usize = 1024;

/// Shortest lease: PostgreSQL timestamps count microseconds, and a lease shorter than a
/// millisecond cannot outlive one round trip. The timeout's floor, [`MIN_TIMEOUT`], is the
/// stricter bound in practice: a lease longer than it, and [`MIN_DEFAULT_INTERVAL`] unless a
/// timeout is given.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Shortest statement timeout. One statement is a network round trip and, for a write, a
/// commit's WAL flush; the first ones a process runs also create the table and prepare the
/// check. A check was measured at 0.13 ms alone but 8.7 ms at the 99th percentile on a server
/// saturated by checks, so a bound below 10 ms cancels healthy statements (`canceling statement
/// due to statement timeout`) instead of hung ones. With the default timeout (interval/10 for
/// leases under 10 s), leases shorter than [`MIN_DEFAULT_INTERVAL`] are refused unless a timeout
/// of at least this is given.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// Shortest lease whose default timeout (interval/10) reaches [`MIN_TIMEOUT`]: 100 ms.
pub const MIN_DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// The margin is at least interval / 1000 (so never 0: the interval is at least 1 ms). The
/// margin is what absorbs the difference in rate between this host's monotonic clock and the
/// database's clock over one lease: NTP daemons slew a clock by at most 500 ppm and quartz errs
/// by well under 100 ppm, so two clocks drift apart by at most 1000 ppm, interval/1000 of a
/// lease. The default, interval/20, is fifty times this floor.
pub const MARGIN_FLOOR_DIVISOR: u32 = 1000;

/// Longest lease or timeout: one year keeps every computation far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A validated configuration. Build one with [`Config::builder`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    name: String,
    process: String,
    interval: Duration,
    timeout: Duration,
    jitter_ppm: u64,
    margin: Duration,
    retry: Duration,
    stop_ahead: Duration,
    renew: Duration,
    renew_late: Duration,
    precheck: bool,
}

impl Config {
    /// Starts a configuration for flag `name` competed for by process `process` (unique among
    /// the processes sharing the flag, e.g. a pod name).
    ///
    /// ```
    /// use core::time::Duration;
    /// use leadership_core::Config;
    /// let config = Config::builder("scheduler", "pod-a")
    ///     .interval(Duration::from_secs(10))
    ///     .build()?;
    /// assert_eq!(config.timeout(), Duration::from_secs(1));
    /// assert_eq!(config.retry_interval(), Duration::from_secs(1));
    /// # Ok::<(), leadership_core::ConfigError>(())
    /// ```
    pub fn builder(name: impl Into<String>, process: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder {
            name: name.into(),
            process: process.into(),
            interval: DEFAULT_INTERVAL,
            timeout: None,
            jitter: DEFAULT_JITTER,
            margin: None,
            retry: None,
            stop_ahead: None,
            precheck: false,
        }
    }

    /// The flag's name: the row's primary key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This process's name: what it writes as `holder`.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// The lease (the Go flag's `interval`): a holder that has not renewed for longer than this,
    /// by the database's clock, may be replaced.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The bound the driver puts on each statement.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The jitter factor, in `[0, 1]`.
    pub fn jitter(&self) -> f64 {
        self.jitter_ppm as f64 / 1e6
    }

    /// How much earlier than the lease's end, by its own clock, a leader stops believing it
    /// leads. It must exceed how far the local clock's rate can drift from the database's over
    /// one lease.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// How long to wait after a failed statement or a negative precheck.
    pub fn retry_interval(&self) -> Duration {
        self.retry
    }

    /// How long before the deadline the leader-only work is told to begin stopping when no
    /// renew has won ([`Command::AtRisk`](crate::Command::AtRisk)): the time the work gets to
    /// stop before the leader stops believing it leads.
    ///
    /// By default, the longest that keeps one failed renew (a whole attempt, the longest
    /// jittered retry interval, another attempt) clear of the at-risk instant at the Go flag's
    /// renew interval (interval/2), capped at interval/4, and zero when the lease leaves no such
    /// room (the work is then told at the deadline): with the default 30 s lease, 7.5 s, and a
    /// blip never puts the lease at risk.
    pub fn stop_ahead(&self) -> Duration {
        self.stop_ahead
    }

    /// The longest a renew attempt takes: the timeout, or twice it with a precheck (which is
    /// bounded by the timeout too).
    pub fn attempt(&self) -> Duration {
        attempt(self.timeout, self.precheck)
    }

    /// How often the leader renews (before jitter): half the interval as in the Go flag, or
    /// `interval - margin - stop_ahead - attempt` when that is shorter, so a renew attempt
    /// that takes its whole time still wins before the lease is at risk.
    pub fn renew_interval(&self) -> Duration {
        self.renew
    }

    /// How much later than the [renew interval](Config::renew_interval) a renew may start and,
    /// should it fail, its retry still win before the lease is at risk: the room the schedule
    /// has to jitter a renew both ways (0.4 s with the defaults).
    pub fn renew_slack(&self) -> Duration {
        self.renew_late
    }

    /// How much earlier than it falls due a leader's renew may be sent to join a batch
    /// ([`Input::Batching`](crate::Input::Batching)): half the
    /// [renew interval](Config::renew_interval) (7.5 s with the defaults).
    ///
    /// Half, so that a set's leaders end up renewing together whenever each took its flag:
    /// two groups of renews that repeat every renew interval are within half of it of each
    /// other one way round, so the first of them to fall due takes the other along, and from
    /// then on they renew as one (each one's jitter is well inside the window). Early is never
    /// late: a renew sent early counts its lease from when it was sent, like any other, and
    /// leaves more of it before the at-risk instant. The cost is writes, once: a renew pulled
    /// into another group's batch comes up to half an interval sooner; after that the group
    /// renews about every renew interval, as a single flag does.
    pub fn renew_early(&self) -> Duration {
        self.renew / 2
    }

    /// Whether the driver runs a precheck before each check.
    pub fn has_precheck(&self) -> bool {
        self.precheck
    }

    /// The lease in microseconds: the check statement's fourth parameter.
    pub fn interval_micros(&self) -> i64 {
        duration_micros(self.interval)
    }

    pub(crate) fn jitter_ppm(&self) -> u64 {
        self.jitter_ppm
    }
}

/// Builds a [`Config`]; every setter has the Go flag's default.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigBuilder {
    name: String,
    process: String,
    interval: Duration,
    timeout: Option<Duration>,
    jitter: f64,
    margin: Option<Duration>,
    retry: Option<Duration>,
    stop_ahead: Option<Duration>,
    precheck: bool,
}

impl ConfigBuilder {
    /// The same settings for another flag, `name` (a flag set's settings, one flag at a time).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The flag's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process, as given.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// The lease (default 30 s). Every process on one flag must use the same interval (or the
    /// leader a shorter one): the safety argument in the crate docs needs it.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The bound on each statement (default 1 s, or interval/10 if that is shorter); must be
    /// shorter than the interval, and at least [`MIN_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Randomisation of the schedule, in `[0, 1]` (default 0.2).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The deadline margin (default interval/20).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The retry interval after a failure (default interval/10, as in the Go flag).
    pub fn retry_interval(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// How long before the deadline leader-only work is told to stop when no renew has won
    /// (default: see [`Config::stop_ahead`]). Give it the time the work needs to stop.
    pub fn stop_ahead(mut self, stop_ahead: Duration) -> Self {
        self.stop_ahead = Some(stop_ahead);
        self
    }

    /// Whether the driver runs a precheck before each check (default no).
    pub fn precheck(mut self, precheck: bool) -> Self {
        self.precheck = precheck;
        self
    }
}
