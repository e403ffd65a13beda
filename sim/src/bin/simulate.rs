//! The simulator's command line. With no database and no setup beyond cargo:
//!
//! ```text
//! cargo run --release -p leadership-sim --bin simulate -- [--processes N] [--seed S]
//!     [--seeds K] [--duration 1h] [--faults pause,crash,stall,drift,loss] [--go-peers M]
//!     [--svg out.svg]
//! ```
//!
//! One run prints its seed, a timeline of who held the flag and the faults, and a summary.
//! `--seeds K` sweeps K seeds from the seed on, prints every failure and the throughput.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use leadership_sim::sim::report::distribution;
use leadership_sim::sim::shards;
use leadership_sim::sim::{
    self, parse_duration, svg, Faults, Safeguards, SimConfig, FAULT_NAMES, MORE_FAULT_NAMES,
    SAFEGUARD_NAMES,
};

const USAGE: &str = "usage: simulate [--processes N] [--go-peers M] [--seed S] [--seeds K]
                [--duration 10m] [--faults pause,crash,stall,drift,loss,conn,close,slow|all]
                [--interval 2s] [--timeout 1s] [--jitter 0.2] [--margin 100ms] [--stop-ahead interval/4]
                [--drift-ppm PPM] [--db-step-max 10ms] [--unsafe SAFEGUARDS]
                [--intensity F] [--assert-handover] [--audit] [--undeclared-outage 60s]
                [--effects 200ms] [--twins] [--pooler] [--flags N] [--batch]
                [--svg out.svg] [--trace] [--quiet]
       simulate --shards N [--processes M] [--max-processes K] [--seed S] [--seeds K]
                [--duration 10m] [--interval 2s] [--timeout 500ms]
                [--faults join,leave,crash,pause,blip,loss,stall,drift|all] [--quiet]

  --seed S        the run's seed (default: from the clock, printed first)
  --seeds K       sweep K seeds S, S+1, …; print failures and throughput
  --faults LIST   faults at their default rates (none by default)
  --drift-ppm P   bound on the clocks' rate error under `drift` (default 40000 = 4%;
                  above margin/interval (5%) the safety condition no longer holds)
  --intensity F   faults F times as often as their defaults
  --db-step-max D largest forward step of the database's clock (implies dbstep;
                  default 10ms, what 4% drift leaves of the 100 ms margin)
  --unsafe LIST   switch safeguards off to watch the checker fail
  --effects T     the leader-only work writes a transaction every T, fenced (unless
                  --unsafe fence); one in twenty is held up to two leases by the link;
                  checked: none commits after a newer term began
  --twins         r0 and r1 share one name (two containers with one default name)
  --pooler        failovers swap the server under open connections (a pooler): no
                  process is told
  --flags N       each process runs N flags (rows sim, sim.1, …), every process
                  competing for each; a pause, crash, close or broken connection hits
                  all of a process's flags
  --batch         each process sends its flags' checks as one statement (issue 28):
                  the renews whose early window opened join (Batching); one reply, one
                  fate; with the rowlock fault a batch skips a locked row (NotAttempted)
                  where a single check waits
  --undeclared-outage T  the database goes silent at T, unknown to the liveness
                  check (a self-test: it must report nobody leading)
  --audit         check the core's own promises on every call (slower)
  --trace         print every event, not only the timeline
  --quiet         print the summary only
  --shards N      a balanced group of N shards (issue 19): M processes start one by one,
                  then episodes (--faults; default join,leave) each followed by a quiet
                  stretch; checks one leader per shard and balance within one of N/M after
                  each stretch; prints time to balance and handovers per episode";

struct Args {
    config: SimConfig,
    seed_given: bool,
    seeds: Option<u64>,
    svg: Option<String>,
    trace: bool,
    quiet: bool,
    shards: Option<usize>,
    max_processes: Option<usize>,
    faults: Option<String>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        config: SimConfig {
            duration: Duration::from_secs(600),
            ..SimConfig::default()
        },
        seed_given: false,
        seeds: None,
        svg: None,
        trace: false,
        quiet: false,
        shards: None,
        max_processes: None,
        faults: None,
    };
    let mut drift_ppm = None;
    let mut db_step_max = None;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("bad number {v:?}"));
        match flag.as_str() {
            "--processes" | "-n" => a.config.processes = number(value()?)? as usize,
            "--go-peers" => a.config.go_peers = number(value()?)? as usize,
            "--seed" => {
                a.config.seed = number(value()?)?;
                a.seed_given = true;
            }
            "--seeds" => a.seeds = Some(number(value()?)?),
            "--duration" => a.config.duration = parse_duration(&value()?)?,
            "--interval" => a.config.interval = parse_duration(&value()?)?,
            "--timeout" => a.config.timeout = parse_duration(&value()?)?,
            "--margin" => a.config.margin = Some(parse_duration(&value()?)?),
            "--stop-ahead" => a.config.stop_ahead = Some(parse_duration(&value()?)?),
            "--jitter" => {
                let v = value()?;
                a.config.jitter = v.parse().map_err(|_| format!("bad jitter {v:?}"))?;
                if !(0.0..=1.0).contains(&a.config.jitter) {
                    return Err("--jitter must be in [0, 1]".into());
                }
            }
            "--faults" => a.faults = Some(value()?),
            "--shards" => a.shards = Some(number(value()?)? as usize),
            "--max-processes" => a.max_processes = Some(number(value()?)? as usize),
            "--drift-ppm" => drift_ppm = Some(number(value()?)?),
            "--db-step-max" => db_step_max = Some(parse_duration(&value()?)?),
            "--unsafe" => a.config.safeguards = Safeguards::without(&value()?)?,
            "--assert-handover" => a.config.assert_handover = true,
            "--audit" => a.config.audit = true,
            "--undeclared-outage" => {
                a.config.undeclared_outage = Some(parse_duration(&value()?)?);
            }
            "--intensity" => a.config.intensity = number(value()?)?.clamp(1, 1000) as u32,
            "--effects" => a.config.effects = Some(parse_duration(&value()?)?),
            "--twins" => a.config.twins = true,
            "--pooler" => a.config.pooler = true,
            "--flags" => a.config.flags = number(value()?)? as usize,
            "--batch" => a.config.batch = true,
            "--svg" => a.svg = Some(value()?),
            "--trace" => a.trace = true,
            "--quiet" | "-q" => a.quiet = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.shards.is_some() {
        return Ok(a);
    }
    if let Some(faults) = &a.faults {
        a.config.faults = Faults::parse(faults)?;
    }
    if let Some(ppm) = drift_ppm {
        a.config.faults.drift.max_ppm = ppm;
    }
    if let Some(max) = db_step_max {
        let step = a.config.faults.db_step.get_or_insert(
            Faults::parse("dbstep")
                .expect("known")
                .db_step
                .expect("set"),
        );
        step.max = max;
    }
    if a.config.processes + a.config.go_peers == 0 || a.config.processes > 1000 {
        return Err("--processes must be 1..=1000 (or give --go-peers)".into());
    }
    a.config.validate()?;
    Ok(a)
}

fn main() -> ExitCode {
    // Die quietly when the reader goes away (`simulate … | head`), like other Unix tools,
    // instead of panicking on a broken pipe.
    // SAFETY: restores the default disposition of a signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("simulate: {e}");
            }
            eprintln!(
                "{USAGE}\n  faults: {} (all), {}\n  safeguards: {}",
                FAULT_NAMES.join(","),
                MORE_FAULT_NAMES.join(","),
                SAFEGUARD_NAMES.join(",")
            );
            return ExitCode::from(2);
        }
    };
    if !args.seed_given {
        // The only use of the wall clock: choosing a seed, which is printed first.
        args.config.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000_000);
    }
    if let Some(shards) = args.shards {
        return sharded(&args, shards);
    }
    match args.seeds {
        Some(k) => sweep(&args, k),
        None => single(&args),
    }
}

/// `--shards N`: a balanced group; one run prints its episodes and figures, `--seeds K` sweeps.
fn sharded(args: &Args, shards: usize) -> ExitCode {
    let faults = match args
        .faults
        .as_deref()
        .map(shards::ShardFaults::parse)
        .transpose()
    {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    if shards == 0 || args.config.processes == 0 {
        eprintln!("simulate: --shards and --processes must be at least 1");
        return ExitCode::from(2);
    }
    let base = shards::ShardConfig {
        seed: args.config.seed,
        shards,
        processes: args.config.processes,
        max_processes: args
            .max_processes
            .unwrap_or(args.config.processes * 2)
            .max(args.config.processes),
        duration: args.config.duration,
        interval: args.config.interval,
        timeout: args.config.timeout,
        faults,
        ..shards::ShardConfig::default()
    };
    let seeds = args.seeds.unwrap_or(1);
    let mut all = shards::ShardReport::default();
    let mut failed = 0;
    for seed in base.seed..base.seed.saturating_add(seeds) {
        let config = shards::ShardConfig {
            seed,
            ..base.clone()
        };
        let report = shards::run(&config);
        if seeds == 1 {
            println!("{}", report.header);
            if !args.quiet {
                println!(
                    "episodes (start, kind, live processes after, time to balance, handovers):"
                );
                for line in &report.timeline {
                    println!("{line}");
                }
            }
        }
        if let Some(f) = &report.failure {
            failed += 1;
            println!("{f}");
        }
        all.episodes.extend(report.episodes);
        all.checks += report.checks;
        all.scans += report.scans;
        all.releases += report.releases;
        all.compared += report.compared;
    }
    if seeds > 1 {
        println!(
            "swept {seeds} seeds from {}: {} clean, {failed} failed",
            base.seed,
            seeds - failed,
        );
    }
    all.failed_runs = failed;
    println!("{}", all.summary(shards));
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn single(args: &Args) -> ExitCode {
    let mut config = args.config.clone();
    config.full_trace = args.trace;
    println!("seed {}", config.seed);
    println!("{config}");
    let started = Instant::now();
    let report = sim::run(&config);
    let wall = started.elapsed();
    if !args.quiet {
        if let Some(full) = report.trace.full() {
            print!("{}", report.trace.render(full));
        } else {
            println!("timeline (leadership changes and faults):");
            print!("{}", report.timeline());
        }
    }
    print!("{}", report.summary());
    println!(
        "  wall time          {:.3}s ({:.0} simulated checks/s)",
        wall.as_secs_f64(),
        (report.stats.checks + report.stats.go_checks) as f64 / wall.as_secs_f64().max(1e-9)
    );
    if let Some(path) = &args.svg {
        match std::fs::write(path, svg::render(&report)) {
            Ok(()) => println!("  svg                {path}"),
            Err(e) => {
                eprintln!("simulate: cannot write {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if report.failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn sweep(args: &Args, k: u64) -> ExitCode {
    let base = args.config.seed;
    println!(
        "seed {base} (sweeping seeds {base}..{})",
        base.saturating_add(k)
    );
    println!("{}", args.config);
    let started = Instant::now();
    let (mut clean, mut failed, mut checks, mut sim_ns) = (0u64, 0u64, 0u64, 0u64);
    let (mut gaps, mut handovers, mut go_overlaps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut events, mut invariant_checks) = (0u64, 0u64);
    // Batches, checks in them, renews joined early, checks skipped, statements that waited.
    let mut batching = [0u64; 5];
    for seed in base..base.saturating_add(k) {
        let config = SimConfig {
            seed,
            ..args.config.clone()
        };
        let report = sim::run(&config);
        checks += report.stats.checks + report.stats.go_checks;
        sim_ns += report.stats.simulated_ns;
        events += report.stats.events;
        invariant_checks += report.stats.invariant_checks;
        let s = &report.stats;
        let more = [
            s.batches,
            s.batched_checks,
            s.joined_early,
            s.not_attempted,
            s.lock_waits,
        ];
        batching.iter_mut().zip(more).for_each(|(t, n)| *t += n);
        gaps.extend_from_slice(&report.stats.gaps);
        handovers.extend_from_slice(&report.stats.handovers);
        go_overlaps.extend_from_slice(&report.stats.go_overlaps);
        match &report.failure {
            None => clean += 1,
            Some(f) => {
                failed += 1;
                println!("{f}");
            }
        }
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "swept {k} seeds in {wall:.2}s: {clean} clean, {failed} failed; {:.0} seeds/minute, {:.0} simulated checks/s, {:.0}× real time",
        k as f64 * 60.0 / wall,
        checks as f64 / wall,
        sim_ns as f64 / 1e9 / wall
    );
    println!("  events             {events} ({invariant_checks} invariant checks)");
    if args.config.batch || args.config.faults.rowlock.is_some() {
        let [batches, batched, joined, skipped, waited] = batching;
        println!(
            "  batches            {batches} ({batched} checks, {joined} renews joined early); {skipped} checks skipped for a row lock, {waited} statements waited for one"
        );
    }
    println!("  failover latency   {}", distribution(&gaps));
    println!("  handover latency   {}", distribution(&handovers));
    if args.config.go_peers > 0 {
        println!("  Go two-leader      {}", distribution(&go_overlaps));
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
