//! A counterexample: the shortest trace to a violation, replayed event by event from its
//! initial state, with what each event did, and the simulator command for the same
//! safeguard and faults.

use std::fmt;
use std::fmt::Write as _;

use super::driver::row_text;
use super::events::{logged, Event};
use super::properties::leads;
use super::world::{Work, World};
use super::Params;
use crate::violation::Violation;

/// One step of a trace.
#[derive(Clone, Debug)]
pub struct Step {
    /// The event.
    pub event: Event,
    /// The tick it happened in (after it, for a tick).
    pub tick: u32,
    /// What it did.
    pub lines: Vec<String>,
    /// The fleet after it, in one line.
    pub after: String,
}

/// The shortest trace to a violation.
#[derive(Clone, Debug)]
pub struct Counterexample {
    /// What broke.
    pub violation: Violation,
    /// The clocks' rate errors (ppm), by process.
    pub rates: Vec<i64>,
    /// Flags per process (how events name cores).
    pub flags: u8,
    /// The events, in order.
    pub steps: Vec<Step>,
    /// The tick, in ns.
    pub tick_ns: u64,
    /// The simulator command that exercises the same safeguard and faults.
    pub replay: String,
}

impl Counterexample {
    /// The number of events.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the initial state itself is the violation.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Rebuilds the trace to node `id` by following the parents and replaying the events.
pub(super) fn rebuild(
    params: &Params,
    initial: &[World],
    nodes: &[(u32, u32, Event)],
    id: u32,
    violation: Violation,
) -> Counterexample {
    let mut path = Vec::new();
    let mut at = id;
    let root = loop {
        let (parent, init, event) = nodes[at as usize];
        if parent == u32::MAX {
            break init;
        }
        path.push(event);
        at = parent;
    };
    path.reverse();
    let mut w = initial[root as usize].clone();
    let flags = w.flags;
    let rates = w
        .procs
        .iter()
        .step_by(usize::from(flags))
        .map(|p| p.clock.ppm)
        .collect();
    let mut steps = Vec::new();
    for event in path {
        let (next, lines) = logged(|| w.step(params, event));
        w = next;
        steps.push(Step {
            event,
            tick: w.tick,
            lines,
            after: summary(&w, params),
        });
    }
    let replay = replay_command(params, &steps);
    Counterexample {
        violation,
        rates,
        flags,
        steps,
        tick_ns: params.tick_ns,
        replay,
    }
}

/// The fleet in one line: who leads, who is down or paused, whose work runs, the row.
pub fn summary(w: &World, params: &Params) -> String {
    let mut s = String::new();
    for (i, p) in w.procs.iter().enumerate() {
        let state = if p.core.is_none() {
            "down"
        } else if p.paused {
            "paused"
        } else {
            "up"
        };
        let _ = write!(s, "{} {state}", w.label(i));
        if leads(w, params, p) {
            s.push_str(" LEADS");
        }
        match p.work {
            Some(Work::Running) => s.push_str(" work:runs"),
            Some(Work::Told { .. }) => s.push_str(" work:stopping"),
            Some(Work::Dying) => s.push_str(" work:killed"),
            None => {}
        }
        s.push_str(" | ");
    }
    match w.rows.len() {
        1 => {
            let _ = write!(s, "row {}", row_text(w.rows[0].as_ref()));
        }
        _ => {
            let rows: Vec<String> = w
                .rows
                .iter()
                .enumerate()
                .map(|(f, row)| format!("{} {}", super::world::ROWS[f], row_text(row.as_ref())))
                .collect();
            let _ = write!(s, "rows {}", rows.join("; "));
        }
    }
    s
}

/// The simulator command for the same safeguard and faults (the simulator draws its timings
/// from a seed, so an exact replay of a model trace is not possible).
fn replay_command(params: &Params, steps: &[Step]) -> String {
    let mut faults: Vec<&str> = Vec::new();
    let mut add = |f: &'static str| {
        if !faults.contains(&f) {
            faults.push(f);
        }
    };
    let pooler = steps
        .iter()
        .any(|s| matches!(s.event, Event::PoolerFailover(_)));
    for s in steps {
        match s.event {
            Event::Pause(_) => add("pause"),
            Event::Crash(_) => add("crash"),
            Event::Close(_) => add("close"),
            Event::Failover(_) => add("failover"),
            Event::PoolerFailover(_) => add("failover"),
            Event::Delete => add("delete"),
            Event::LoseRequest(..) | Event::LoseReply(_) => add("loss"),
            Event::LoseNotify(_) => add("notify"),
            Event::Timeout(_) => add("slow"),
            Event::SkipRow(..) => add("rowlock"),
            _ => {}
        }
    }
    if faults.is_empty() {
        faults.push("none");
    }
    let mut cmd = format!(
        "cargo run --release -p leadership-sim --bin simulate -- --seeds 200 --processes {} --faults {} --intensity 5 --jitter 0 --quiet",
        params.processes.max(3),
        faults.join(",")
    );
    let off = params.sim.safeguards.names_off();
    if !off.is_empty() {
        let _ = write!(cmd, " --unsafe {off}");
    }
    if params.sim.twins {
        cmd += " --twins";
    }
    if pooler {
        cmd += " --pooler";
    }
    if params.flags > 1 {
        let _ = write!(cmd, " --flags {} --batch", params.flags);
    }
    cmd
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VIOLATION ({}): {}",
            self.violation.name(),
            self.violation
        )?;
        let rates: Vec<String> = self
            .rates
            .iter()
            .enumerate()
            .map(|(i, r)| format!("r{i} {:+}%", *r as f64 / 1e4))
            .collect();
        writeln!(
            f,
            "shortest trace: {} events; tick = {} ms; clock rates: {}",
            self.steps.len(),
            self.tick_ns / 1_000_000,
            rates.join(", ")
        )?;
        for (i, s) in self.steps.iter().enumerate() {
            let ms = u64::from(s.tick) * self.tick_ns / 1_000_000;
            writeln!(
                f,
                "{:>3}. [t={}.{:03}s] {}",
                i + 1,
                ms / 1000,
                ms % 1000,
                s.event.describe(self.flags)
            )?;
            for l in &s.lines {
                writeln!(f, "         {l}")?;
            }
            writeln!(f, "         => {}", s.after)?;
        }
        writeln!(
            f,
            "no exact replay in the simulator (it draws its timings from a seed); this sweep\nexercises the same safeguard and faults:\n  {}",
            self.replay
        )
    }
}
