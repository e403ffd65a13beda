//! An exhaustive model checker over the real core (issue 18): every interleaving of a small
//! fleet within a time horizon and fault budgets, not a sample.
//!
//! Each process runs the real [`leadership_core::Flag`] (wrapped in the core's auditor) behind
//! the simulator's driver model, with the same safeguard switches ([`Safeguards`]); the
//! database is the reference table. Time is discretized: a tick (interval/20 by default) of
//! true time, the database's clock reading true time, and each local clock running at its own
//! rate (±`drift_ppm`, within the margin). The search is breadth-first over states stored by
//! a 64-bit hash, so the first violation found is one of the shortest traces (in events),
//! replayed event by event to print it.
//!
//! ```text
//! cargo run --release -p leadership-sim --bin model-check -- --processes 2 --depth 50
//! cargo run --release -p leadership-sim --bin model-check -- --unsafe local-deadline
//! # two flags per process, checks batched (issue 28), with the faults a batch meets
//! cargo run --release -p leadership-sim --bin model-check -- --batch --depth 20 --closes 0 --failovers 0 --deletes 0 --writes 0
//! ```
//!
//! # What is modelled: batched checks
//!
//! With `--batch` ([`Params::batch`], issue 28) each process runs two flags, `sim` and
//! `sim.1`, each a core of its own on the process's one clock, every process competing for
//! both; a pause, a crash or a close is the process's. Its driver sends one statement at a
//! time (`model/batch.rs`): the checks its cores asked for meanwhile go together, after a core
//! whose timer is due is served and a renew whose `poll_early_check()` has passed joins
//! (`Input::Batching`). A batch is one message: one event runs both checks at one `now()`
//! (each as the single check), it is lost or late as a whole, one reply returns to both
//! cores, and a timeout fails both. The row-lock event ([`Budget::rowlocks`]) runs a batch
//! while another transaction holds one of its rows: the batch skips that row if it would
//! write it, and that core alone is told `Failed(NotAttempted)`. (A single check waiting for
//! a lock is a statement held, as any may be here; the simulator models the wait.) The second
//! flag opens a tick after the first, so every trace's first renew takes the other along early.
//! Properties are judged per flag. Figures: `docs/benchmarks.md`, "Model check".
//!
//! Why a search of our own and not `stateright`: the state is the core's own (`Flag` derives
//! `Hash`), the events and the driver are the simulator's, and what the checker must add is
//! small (a queue, a set of hashes, parent pointers for the shortest trace); a dependency
//! with its own actor model would have cost a translation layer and build time on small CI
//! machines, and its symmetry reduction needs a canonical renaming of processes, which the
//! real core cannot offer (its name is inside its configuration and the row). Symmetry is
//! used where it is free: clock rates are assigned in non-decreasing order over processes that
//! are otherwise alike.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

mod batch;
mod driver;
pub mod events;
pub mod properties;
pub mod trace;
mod work;
pub mod world;

pub use crate::violation::Violation;
pub use events::Event;
pub use world::{Budget, World};

use crate::sim::{Safeguards, SimConfig};

/// The model's settings.
#[derive(Clone, Debug)]
pub struct Params {
    /// Processes (2 or 3 are practical).
    pub processes: usize,
    /// Flags per process: 1, or 2 whose checks go as one statement (issue 28; see
    /// [`Params::batch`]).
    pub flags: usize,
    /// The time horizon, in ticks.
    pub depth: u32,
    /// A tick of true time, ns.
    pub tick_ns: u64,
    /// The bound on the clocks' rate error: each clock runs at −ppm, 0 or +ppm.
    pub drift_ppm: i64,
    /// Faults per trace.
    pub budget: Budget,
    /// The simulator's settings the cores and the driver use (lease, timeout, safeguards).
    pub sim: SimConfig,
    /// The core's configuration (process names aside).
    pub core_config: leadership_core::Config,
    /// The lease the table applies, µs (minus a century without the expiry check).
    pub lease_micros: i64,
    /// Liveness: someone must lead after this many quiet ticks.
    pub liveness_ticks: u32,
    /// Stop after this many states (incomplete search).
    pub max_states: usize,
}

impl Params {
    /// The defaults, for `processes` processes to `depth` ticks, with `safeguards`.
    pub fn new(processes: usize, depth: u32, safeguards: Safeguards) -> Params {
        let sim = SimConfig {
            processes,
            jitter: 0.0,
            safeguards,
            ..SimConfig::default()
        };
        let core_config = sim.core_config("r0");
        let mut p = Params {
            processes,
            flags: 1,
            depth,
            tick_ns: 0,
            drift_ppm: 40_000,
            budget: Budget {
                pauses: 1,
                crashes: 1,
                closes: 1,
                failovers: 1,
                poolers: 0,
                deletes: 1,
                losses: 1,
                lates: 1,
                rowlocks: 1,
                total: 1,
                writes: 1,
            },
            lease_micros: 0,
            liveness_ticks: 0,
            max_states: usize::MAX,
            sim,
            core_config,
        };
        p.set_tick(p.sim.interval / 20);
        p
    }

    /// Two flags per process, `sim` and `sim.1`, every process competing for each, whose
    /// checks go as one statement (issue 28): its driver sends one statement at a time, the
    /// checks its cores asked for meanwhile together, after a renew whose early window has
    /// opened joins (`Input::Batching`). The second flag opens a tick after the first (a flag
    /// added to the set later), so its renews fall due a tick after the first's, inside the
    /// early window (2.25 ticks): the first to fall due takes the other along. (The jitter
    /// stays 0: its 90 ms would not set two renews a tick apart.) The row-lock budget
    /// (`rowlocks`) makes a batch skip one of its rows.
    pub fn batch(processes: usize, depth: u32, safeguards: Safeguards) -> Params {
        let mut p = Params::new(processes, depth, safeguards);
        p.flags = 2;
        p.sim.flags = 2;
        p.sim.batch = true;
        p
    }

    /// Sets the tick and what depends on it.
    pub fn set_tick(&mut self, tick: Duration) {
        self.tick_ns = tick.as_nanos() as u64;
        self.lease_micros = if self.sim.safeguards.expiry_check {
            self.core_config.interval_micros()
        } else {
            -3_155_760_000_000_000
        };
        let c = &self.core_config;
        let stretched =
            c.interval().as_nanos() as u64 * (1_000_000 + self.drift_ppm as u64) / 1_000_000;
        let window = stretched
            + c.renew_interval().as_nanos() as u64
            + 2 * c.retry_interval().as_nanos() as u64
            + c.timeout().as_nanos() as u64;
        self.liveness_ticks = window.div_ceil(self.tick_ns) as u32 + 1;
    }

    /// The lease in ticks (rounded up).
    pub fn interval_ticks(&self) -> u32 {
        (self.sim.interval.as_nanos() as u64).div_ceil(self.tick_ns) as u32
    }

    /// The initial worlds: one per assignment of clock rates, in non-decreasing order (the
    /// processes are alike but for their names, so the other orders add nothing).
    pub fn initial(&self) -> Vec<World> {
        let rates = [-self.drift_ppm, 0, self.drift_ppm];
        let mut out = Vec::new();
        let mut pick = vec![0usize; self.processes];
        loop {
            if pick.windows(2).all(|w| w[0] <= w[1]) {
                let r: Vec<i64> = pick.iter().map(|&i| rates[i]).collect();
                out.push(World::new(self, &r));
            }
            // Next combination (odometer).
            let mut i = 0;
            loop {
                if i == pick.len() {
                    return dedup(out);
                }
                pick[i] += 1;
                if pick[i] < rates.len() {
                    break;
                }
                pick[i] = 0;
                i += 1;
            }
        }
    }
}

fn dedup(mut v: Vec<World>) -> Vec<World> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|w| seen.insert(fingerprint(w)));
    v
}

/// A state's 64-bit fingerprint (SipHash of the whole state).
pub fn fingerprint(w: &World) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    w.hash(&mut h);
    h.finish()
}

/// Keys are fingerprints already: hash them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What a search found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Distinct states reached.
    pub states: usize,
    /// Transitions followed (events applied).
    pub transitions: usize,
    /// The deepest level reached, in events.
    pub max_steps: u32,
    /// The latest tick reached.
    pub max_tick: u32,
    /// Wall time.
    pub elapsed: Duration,
    /// Every state within the horizon and budgets was explored.
    pub complete: bool,
    /// The shortest violating trace, if any.
    pub counterexample: Option<trace::Counterexample>,
}

/// Explores every state reachable within the horizon and budgets, breadth first; stops at the
/// first violation (a shortest trace to it).
pub fn check(params: &Params) -> Outcome {
    let start = Instant::now();
    let initial = params.initial();
    let mut index: HashMap<u64, u32, BuildHasherDefault<Identity>> = HashMap::default();
    // parent (u32::MAX for an initial state, then the event is unused) and event.
    let mut nodes: Vec<(u32, u32, Event)> = Vec::new();
    let mut frontier: Vec<(u32, World)> = Vec::new();
    let mut outcome = Outcome {
        states: 0,
        transitions: 0,
        max_steps: 0,
        max_tick: 0,
        elapsed: Duration::ZERO,
        complete: true,
        counterexample: None,
    };
    for (i, w) in initial.iter().enumerate() {
        let id = nodes.len() as u32;
        index.insert(fingerprint(w), id);
        nodes.push((u32::MAX, i as u32, Event::Tick));
        if let Some(v) = properties::judge(w, params) {
            outcome.counterexample = Some(trace::rebuild(params, &initial, &nodes, id, v));
            outcome.states = nodes.len();
            outcome.elapsed = start.elapsed();
            return outcome;
        }
        frontier.push((id, w.clone()));
    }
    let mut events = Vec::new();
    let mut level = 0;
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for (id, w) in &frontier {
            w.enabled(params, &mut events);
            for &e in &events {
                let s = w.step(params, e);
                outcome.transitions += 1;
                let fp = fingerprint(&s);
                if index.contains_key(&fp) {
                    continue;
                }
                let sid = nodes.len() as u32;
                index.insert(fp, sid);
                nodes.push((*id, 0, e));
                outcome.max_tick = outcome.max_tick.max(s.tick);
                if let Some(v) = properties::judge(&s, params) {
                    outcome.max_steps = level + 1;
                    outcome.states = nodes.len();
                    outcome.counterexample = Some(trace::rebuild(params, &initial, &nodes, sid, v));
                    outcome.elapsed = start.elapsed();
                    return outcome;
                }
                if nodes.len() >= params.max_states {
                    outcome.complete = false;
                    outcome.max_steps = level + 1;
                    outcome.states = nodes.len();
                    outcome.elapsed = start.elapsed();
                    return outcome;
                }
                next.push((sid, s));
            }
        }
        if !next.is_empty() {
            level += 1;
        }
        frontier = next;
    }
    outcome.max_steps = level;
    outcome.states = nodes.len();
    outcome.elapsed = start.elapsed();
    outcome
}
