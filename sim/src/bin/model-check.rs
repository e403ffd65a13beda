//! The model checker's command line (issue 18): every interleaving of a small fleet of real
//! cores within a time horizon and fault budgets.
//!
//! ```text
//! cargo run --release -p leadership-sim --bin model-check -- [--processes N] [--depth D]
//!     [--unsafe SAFEGUARD] [--pauses 1] [--crashes 1] [--closes 1] [--failovers 1]
//!     [--poolers 0] [--deletes 1] [--losses 1] [--lates 1] [--faults 1] [--drift-ppm 40000] [--tick 100ms]
//!     [--max-states N] [--twins] [--batch] [--rowlocks 1] [--writes 1]
//! ```
//!
//! Prints the states explored, the depth reached (events and ticks) and the time; on a
//! violation, the shortest trace step by step and a simulator command for the same safeguard
//! and faults, and exits with status 1.

use std::process::ExitCode;

use leadership_sim::model::{self, Budget, Params};
use leadership_sim::sim::{parse_duration, Safeguards, SAFEGUARD_NAMES};

const USAGE: &str = "usage: model-check [--processes N] [--depth TICKS] [--unsafe SAFEGUARDS]
                   [--pauses K] [--crashes K] [--closes K] [--failovers K] [--poolers K] [--deletes K]
                   [--losses K] [--lates K] [--faults K] [--drift-ppm PPM] [--tick 100ms] [--max-states N]
                   [--twins] [--batch] [--rowlocks K] [--writes K]

  --processes N   processes of the fleet (default 2)
  --depth TICKS   the time horizon in ticks (default 50: two and a half leases)
  --unsafe LIST   switch safeguards off (the simulator's names): a counterexample is expected
                  (deadline-from-send: with pauses 1, lates 1, faults 2 and no other fault
                  unless budgets are given)
  --pauses … --lates K   faults of each kind per trace (default 1 each; --lates counts
                  messages held past a tick, --losses statements, replies or notifications lost)
  --faults K      faults of any kind per trace, in all (default 1)
  --drift-ppm P   each clock runs at -P, 0 or +P ppm (default 40000 = 4%, margin 5%)
  --tick D        the tick of true time (default interval/20 = 100ms)
  --max-states N  stop after N states (the search is then incomplete)
  --twins         r0 and r1 share one name (issue 25)
  --batch         each process runs two flags (sim, sim.1) whose checks go as one
                  statement (issue 28): a renew joins early, one reply, one fate; jitter 0.2
  --rowlocks K    batches run while another transaction holds one of their rows, which
                  they skip (NotAttempted), per trace (default 1; with --batch only)
  --writes K      transactions the leader-only work sends per trace (default 1; not a fault)";

fn parse(mut it: impl Iterator<Item = String>) -> Result<Params, String> {
    let mut processes = 2;
    let mut depth = 50;
    let mut safeguards = Safeguards::default();
    let mut twins = false;
    let mut batch = false;
    let mut settings: Vec<(String, String)> = Vec::new();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("bad number {v:?}"));
        match flag.as_str() {
            "--processes" | "-n" => processes = number(value()?)? as usize,
            "--depth" => depth = number(value()?)? as u32,
            "--unsafe" => safeguards = Safeguards::without(&value()?)?,
            "--twins" => twins = true,
            "--batch" => batch = true,
            "--help" | "-h" => return Err(String::new()),
            f @ ("--pauses" | "--crashes" | "--closes" | "--failovers" | "--poolers"
            | "--deletes" | "--losses" | "--lates" | "--faults" | "--drift-ppm" | "--tick"
            | "--max-states" | "--rowlocks" | "--writes") => {
                let f = f.to_string();
                settings.push((f, value()?));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !(1..=4).contains(&processes) {
        return Err("--processes must be 1..=4".into());
    }
    let mut p = match batch {
        true => Params::batch(processes, depth, safeguards),
        false => Params::new(processes, depth, safeguards),
    };
    p.sim.twins = twins;
    if (!safeguards.deadline_from_send || !safeguards.join_before_send) && settings.is_empty() {
        // A belief stretched by a slow reply overlaps only if the leader then fails to renew:
        // two faults, a late reply and a pause (the simulator's test uses pause,slow). The
        // same for a lease counted from a batch's reply (join-before-send).
        p.budget = Budget {
            pauses: 1,
            lates: 1,
            total: 2,
            crashes: 0,
            closes: 0,
            failovers: 0,
            poolers: 0,
            deletes: 0,
            losses: 0,
            rowlocks: 0,
            writes: 1,
        };
    }
    let mut tick = None;
    for (f, v) in settings {
        let count =
            || -> Result<u8, String> { v.parse::<u8>().map_err(|_| format!("bad count {v:?}")) };
        match f.as_str() {
            "--pauses" => p.budget.pauses = count()?,
            "--crashes" => p.budget.crashes = count()?,
            "--closes" => p.budget.closes = count()?,
            "--failovers" => p.budget.failovers = count()?,
            "--poolers" => p.budget.poolers = count()?,
            "--deletes" => p.budget.deletes = count()?,
            "--losses" => p.budget.losses = count()?,
            "--lates" => p.budget.lates = count()?,
            "--rowlocks" => p.budget.rowlocks = count()?,
            "--writes" => p.budget.writes = count()?,
            "--faults" => p.budget.total = count()?,
            "--drift-ppm" => {
                p.drift_ppm = v.parse().map_err(|_| format!("bad ppm {v:?}"))?;
            }
            "--tick" => tick = Some(parse_duration(&v)?),
            "--max-states" => {
                p.max_states = v.parse().map_err(|_| format!("bad number {v:?}"))?;
            }
            _ => unreachable!(),
        }
    }
    p.set_tick(tick.unwrap_or(p.sim.interval / 20));
    Ok(p)
}

fn main() -> ExitCode {
    let params = match parse(std::env::args().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("model-check: {e}");
            }
            eprintln!("{USAGE}\n  safeguards: {}", SAFEGUARD_NAMES.join(","));
            return ExitCode::from(2);
        }
    };
    let c = &params.core_config;
    let b = params.budget;
    println!(
        "model: {} processes, horizon {} ticks of {} ms ({:.1} leases), clocks at ±{} ppm; interval {} ms, margin {} ms, timeout {} ms, renew every {} ms, retry {} ms, stop-ahead {} ms; liveness window {} ticks",
        params.processes,
        params.depth,
        params.tick_ns / 1_000_000,
        f64::from(params.depth) / f64::from(params.interval_ticks()),
        params.drift_ppm,
        c.interval().as_millis(),
        c.margin().as_millis(),
        c.timeout().as_millis(),
        c.renew_interval().as_millis(),
        c.retry_interval().as_millis(),
        c.stop_ahead().as_millis(),
        params.liveness_ticks,
    );
    println!(
        "faults per trace: at most {} in all; of each kind: pauses {}, crashes {}, closes {}, failovers {}, failovers behind a pooler {}, deletes {}, losses {}, late messages {}{}",
        b.total, b.pauses, b.crashes, b.closes, b.failovers, b.poolers, b.deletes, b.losses, b.lates,
        match params.flags {
            1 => String::new(),
            _ => format!(", row locks {}", b.rowlocks),
        }
    );
    if params.flags > 1 {
        println!(
            "two flags per process (sim, sim.1), checks batched, jitter {}",
            params.sim.jitter
        );
    }
    let off = params.sim.safeguards.names_off();
    if !off.is_empty() {
        println!("safeguards OFF: {off}");
    }
    let outcome = model::check(&params);
    println!(
        "{} states, {} transitions, depth {} events / {} ticks, {:.2} s{}",
        outcome.states,
        outcome.transitions,
        outcome.max_steps,
        outcome.max_tick,
        outcome.elapsed.as_secs_f64(),
        if outcome.complete || outcome.counterexample.is_some() {
            ""
        } else {
            " (INCOMPLETE: --max-states reached)"
        }
    );
    match outcome.counterexample {
        Some(cx) => {
            println!("{cx}");
            ExitCode::from(1)
        }
        None if !outcome.complete => {
            println!("no violation in the states explored (the search is incomplete)");
            ExitCode::SUCCESS
        }
        None => {
            println!("no violation: every reachable state within the horizon and budgets holds every property");
            ExitCode::SUCCESS
        }
    }
}
