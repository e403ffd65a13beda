//! `simulate --shards N`: a balanced group (issue 19) of `N` shards shared by a changing fleet,
//! in virtual time, against the reference table.
//!
//! Each process runs the real cores: one [`leadership_core::Flag`] for its member row and one
//! per shard, and the balance of [`leadership_core::balance`] on a scan of the group's rows
//! every half interval (what `leadership-tokio`'s `Balanced` does). The database is the
//! [`RefTable`](crate::table::RefTable); statements execute when they arrive, in arrival order.
//!
//! The run alternates *episodes* and quiet stretches: an episode is one change or fault
//! (`join`, `leave`, `crash` then a later restart, `pause`, `blip` (a few statements of one
//! process fail), `loss`, `stall`, `drift`); the quiet stretch that follows has no fault. It
//! checks:
//!
//! - after every raise and renew, that no shard is believed led by two processes at once
//!   (each asked `is_leader` at its own local time);
//! - at the end of every quiet stretch, that every shard is led and every live process leads
//!   between `floor(N/M)` and `ceil(N/M)`;
//! - for figures: the time from the episode to balance, and the new terms (handovers)
//!   per episode, against `N/M`.
//!
//! Same seed, same output.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::violation::Violation;

const GROUP: &str = "sim";
const MS: u64 = 1_000_000;

/// Which episodes a run draws from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardFaults {
    /// The names, in the order given.
    pub kinds: Vec<Kind>,
}

/// One kind of episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A new process joins (up to the maximum).
    Join,
    /// A process leaves gracefully (closes every flag).
    Leave,
    /// A process crashes; it restarts, under its name, at a later episode.
    Crash,
    /// A crashed process restarts.
    Restart,
    /// A process is paused for 0.2–1.5 leases.
    Pause,
    /// A process's statements fail for up to a quarter lease (it misses a check or two).
    Blip,
    /// Statements and replies are lost (30 %) for up to a lease.
    Loss,
    /// The database holds every statement for 0.1–1.5 leases.
    Stall,
    /// A process's clock rate changes by up to ±4 %.
    Drift,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Crash => "crash",
            Kind::Restart => "restart",
            Kind::Pause => "pause",
            Kind::Blip => "blip",
            Kind::Loss => "loss",
            Kind::Stall => "stall",
            Kind::Drift => "drift",
        }
    }
}

/// The episode names `--faults` takes with `--shards`.
pub const SHARD_FAULT_NAMES: &str = "join,leave,crash,pause,blip,loss,stall,drift|all";

impl ShardFaults {
    /// Parses a comma-separated list (`all` for every kind); `crash` implies restarts.
    pub fn parse(list: &str) -> Result<ShardFaults, String> {
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let more: &[Kind] = match name {
                "join" => &[Kind::Join],
                "leave" => &[Kind::Leave],
                "crash" => &[Kind::Crash, Kind::Restart],
                "pause" => &[Kind::Pause],
                "blip" => &[Kind::Blip],
                "loss" => &[Kind::Loss],
                "stall" => &[Kind::Stall],
                "drift" => &[Kind::Drift],
                "all" => &[
                    Kind::Join,
                    Kind::Leave,
                    Kind::Crash,
                    Kind::Restart,
                    Kind::Pause,
                    Kind::Blip,
                    Kind::Loss,
                    Kind::Stall,
                    Kind::Drift,
                ],
                other => return Err(format!("unknown fault {other:?} ({SHARD_FAULT_NAMES})")),
            };
            for k in more {
                if !kinds.contains(k) {
                    kinds.push(*k);
                }
            }
        }
        Ok(ShardFaults { kinds })
    }
}

/// A sharded run's settings.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Decides everything random.
    pub seed: u64,
    /// Shards in the group.
    pub shards: usize,
    /// Processes at the start (started one by one, a lease apart).
    pub processes: usize,
    /// Most processes at once (joins stop there).
    pub max_processes: usize,
    /// Simulated time.
    pub duration: Duration,
    /// The lease.
    pub interval: Duration,
    /// The statement timeout.
    pub timeout: Duration,
    /// The episodes to draw from; none: joins and leaves only (the fleet changes anyway).
    pub faults: ShardFaults,
    /// A quiet stretch after each episode, in leases.
    pub quiet_leases: u32,
}

impl Default for ShardConfig {
    fn default() -> ShardConfig {
        ShardConfig {
            seed: 1,
            shards: 64,
            processes: 4,
            max_processes: 8,
            duration: Duration::from_secs(600),
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            faults: ShardFaults::default(),
            quiet_leases: 6,
        }
    }
}

/// What one episode led to.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// What happened.
    pub kind: Kind,
    /// Live processes before it.
    pub before: usize,
    /// Live processes after it.
    pub processes: usize,
    /// Time from the episode's start to the first balanced instant, if reached.
    pub to_balance: Option<Duration>,
    /// Handovers (a shard raised by a process other than the one that raised it last) during
    /// the episode and its quiet stretch.
    pub handovers: usize,
}

/// A sharded run's result.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    /// The run's settings, as text.
    pub header: String,
    /// One line per episode.
    pub timeline: Vec<String>,
    /// Every episode.
    pub episodes: Vec<Episode>,
    /// The first broken invariant, if any.
    pub failure: Option<ShardFailure>,
    /// Runs that failed, in a sweep's total (`simulate --shards N --seeds K` sets it).
    pub failed_runs: u64,
    /// Checks run.
    pub checks: u64,
    /// Scans run.
    pub scans: u64,
    /// Releases that released a row.
    pub releases: u64,
    /// Pairwise leadership comparisons made (each raise and renew against every process).
    pub compared: u64,
}

impl ShardReport {
    /// The figures per kind of episode: count, time to balance (median, max) and handovers
    /// (mean) against N/M.
    pub fn summary(&self, shards: usize) -> String {
        let mut out = String::new();
        let mut kinds: BTreeMap<Kind, Vec<&Episode>> = BTreeMap::new();
        for e in &self.episodes {
            kinds.entry(e.kind).or_default().push(e);
        }
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>14} {:>10} {:>16} {:>9}",
            "episode", "count", "balance p50 s", "max s", "handovers mean", "N/M mean"
        );
        for (kind, eps) in kinds {
            let mut times: Vec<f64> = eps
                .iter()
                .filter_map(|e| e.to_balance.map(|d| d.as_secs_f64()))
                .collect();
            times.sort_by(f64::total_cmp);
            let p50 = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
            let max = times.last().copied().unwrap_or(f64::NAN);
            let moves = eps.iter().map(|e| e.handovers as f64).sum::<f64>() / eps.len() as f64;
            let share = eps
                .iter()
                .map(|e| shards as f64 / e.processes.max(e.before).max(1) as f64)
                .sum::<f64>()
                / eps.len() as f64;
            let _ = writeln!(
                out,
                "{:<8} {:>5} {:>14.2} {:>10.2} {:>16.1} {:>9.1}",
                kind.name(),
                eps.len(),
                p50,
                max,
                moves,
                share
            );
        }
        let _ = write!(
            out,
            "checks {}, scans {}, releases {}, leadership comparisons {}; invariants: {}",
            self.checks,
            self.scans,
            self.releases,
            self.compared,
            Held(self)
        );
        out
    }
}

/// What the summary's last line says of the invariants.
struct Held<'a>(&'a ShardReport);

impl fmt::Display for Held<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.failure, self.0.failed_runs) {
            (_, n) if n > 0 => write!(f, "{n} runs failed"),
            (Some(failure), _) => write!(f, "{failure}"),
            (None, _) => write!(f, "all held"),
        }
    }
}

/// A sharded run's first broken invariant, and how to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFailure {
    /// What broke.
    pub violation: Violation,
    /// The run's shards.
    pub shards: usize,
    /// The run's seed.
    pub seed: u64,
}

impl fmt::Display for ShardFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; replay: simulate --shards {} --seed {}",
            self.violation, self.shards, self.seed
        )
    }
}

mod episodes;
mod events;
mod processes;
mod world;

#[cfg(test)]
mod tests;

pub use world::run;
