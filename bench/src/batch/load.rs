//! `bench batch-load`: how many flags one server sustains at the default interval with 10
//! processes per flag, each flag's leader in one of them.
//!
//! Ten times a million flag tasks do not fit in this machine, so a load generator sends what
//! such a fleet sends: one connection per process, and every tick one statement per process
//! with the rows that fell due in it: each of its leaders' renews once per renew period, each
//! of its followers' checks once per follower period, at phases spread over the period. The
//! statement is the real one, `Statements::check_batch` (or, batch off, the single
//! `Statements::check`, prepared, one per row, pipelined on the connection as a set with
//! `batch(false)` sends them), with the parameters a flag's core gives: a renew names the
//! version it holds, the floor above it and the term it continues; a follower renews nothing
//! and may take over an expired lease. Rows come back as the driver reads them: a renew's new
//! version is kept for the next one, a renew not won and a follower's win (a takeover: the
//! load did not fit) are counted.
//!
//! The periods are what real `FlagSet`s did in the cross-check of the same run ([`super::sets`]),
//! or the simulator's schedule when it is skipped.

use leadership_tokio::internal::CHECK_TYPES;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::explain::explain;
use super::sets::{cross_check, Measured};
use super::statement::Variant;
use super::{
    conn_string, durable_server, median, own_cpu, parse_duration, rates, records, settings,
    settle_and_read, thousands, Rates,
};
use leadership_core::sql::{Statements, Table};
use leadership_pgkit::pg::PgServer;

/// `bench batch-load`'s options.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Options {
    /// Numbers of flags for the generator, batched, in rising order: the sweep of each
    /// variant stops after the first size that does not fit (0: none; the same for the next
    /// two).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,20000,50000,100000,200000,500000,1000000"
    )]
    flags: Vec<usize>,
    /// The statements the generator sends in its sweeps and split runs.
    #[arg(long, value_delimiter = ',', default_value = "as-is,fixed")]
    variants: Vec<Variant>,
    /// Table sizes for `EXPLAIN (ANALYZE)` of single batches (0: none).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    explain: Vec<usize>,
    /// Numbers of flags for the generator with single checks (batch off).
    #[arg(long, value_delimiter = ',', default_value = "10000,20000")]
    single: Vec<usize>,
    /// Numbers of flags at which renews alone and follower checks alone run too, batched:
    /// the server's cost per renew row and per follower row.
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    split: Vec<usize>,
    /// Flags of the cross-check with real `FlagSet`s (every process holds all of them;
    /// 0: skip it, and take the periods from the simulator).
    #[arg(long, default_value_t = 10_000)]
    sets: usize,
    /// Processes per flag.
    #[arg(long, default_value_t = 10)]
    processes: usize,
    /// The lease interval.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    interval: Duration,
    /// How often each generated process sends the rows due, one sweep each: `auto` (as often
    /// as each real set sent a statement in the cross-check; 1 s without it) or a duration.
    #[arg(long, value_delimiter = ',', default_value = "auto,1s", value_parser = parse_tick)]
    ticks: Vec<Tick>,
    /// Run before each window opens.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    warmup: Duration,
    /// The measured window of each run.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    window: Duration,
    /// Server settings added (`;` between them).
    #[arg(long, value_delimiter = ';', default_value = "shared_buffers = 1GB")]
    config: Vec<String>,
}

/// A generator's tick: `None` is `auto`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tick(Option<Duration>);

fn parse_tick(s: &str) -> Result<Tick, String> {
    match s.trim() {
        "auto" => Ok(Tick(None)),
        d => parse_duration(d).map(|d| Tick(Some(d))),
    }
}

/// Which rows the generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// A fleet's: every leader's renews and every follower's checks.
    Fleet,
    /// The leaders' renews alone.
    Renews,
    /// The followers' checks alone.
    Checks,
}

impl Rows {
    fn label(self) -> &'static str {
        match self {
            Rows::Fleet => "fleet",
            Rows::Renews => "renews only",
            Rows::Checks => "follower checks only",
        }
    }
}

/// How often a leader renews and a follower checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Periods {
    pub(crate) renew: Duration,
    pub(crate) check: Duration,
}

/// One generator run.
#[derive(Clone, Debug)]
struct Gen {
    flags: usize,
    processes: usize,
    interval: Duration,
    tick: Duration,
    rows: Rows,
    batch: bool,
    variant: Variant,
    periods: Periods,
}

/// What the generated processes saw in the window.
#[derive(Clone, Debug, Default)]
struct Stats {
    statements: u64,
    renew_rows: u64,
    check_rows: u64,
    renews_lost: u64,
    takeovers: u64,
    skipped: u64,
    errors: u64,
    /// Each statement's time, or each tick's for single checks (send to last reply), ms.
    durations: Vec<f64>,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.statements += o.statements;
        self.renew_rows += o.renew_rows;
        self.check_rows += o.check_rows;
        self.renews_lost += o.renews_lost;
        self.takeovers += o.takeovers;
        self.skipped += o.skipped;
        self.errors += o.errors;
        self.durations.extend(o.durations);
    }
}

/// A run's figures.
struct Outcome {
    r: Rates,
    /// WAL records by type per renew row (runs with renews).
    records: String,
    stats: Stats,
    client_cpu: f64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(crate) fn flag_name(i: usize) -> String {
    format!("flag-{i}")
}

/// The process leading flag `i` (named `p<n>`).
pub(crate) fn leader_of(i: usize, processes: usize) -> usize {
    i % processes
}

/// Positions in `phases` (sorted) of the phases in `[from, to)` modulo `period`.
fn due(phases: &[u32], from: u64, to: u64, period: u64) -> Vec<usize> {
    if to <= from {
        return Vec::new();
    }
    if to - from >= period {
        return (0..phases.len()).collect();
    }
    let (a, b) = ((from % period) as u32, (to % period) as u32);
    let lo = phases.partition_point(|&p| p < a);
    let hi = phases.partition_point(|&p| p < b);
    if a <= b {
        (lo..hi).collect()
    } else {
        (lo..phases.len()).chain(0..hi).collect()
    }
}

/// One leader's state in the generator.
struct Lead {
    /// The flag's index in the names.
    name: u32,
    version: i64,
    term: i64,
}

/// The expected server, as a flag's core passes it once known.
#[derive(Clone)]
struct Expect {
    system: Option<String>,
    timeline: Option<i32>,
    started: Option<SystemTime>,
}

/// One generated process: sends the rows due every tick until `stop`.
#[allow(clippy::too_many_arguments)]
async fn process(
    p: usize,
    gen: Arc<Gen>,
    names: Arc<Vec<String>>,
    conn: String,
    start: tokio::time::Instant,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
) {
    let (client, connection) = tokio_postgres::connect(&conn, NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    if !gen.variant.session().is_empty() {
        client
            .batch_execute(gen.variant.session())
            .await
            .expect("session settings");
    }
    let client = Arc::new(client);
    let statements = Statements::new(&Table::default());
    let batch_text = gen.variant.text();
    let row = client
        .query_one(leadership_core::sql::SERVER, &[])
        .await
        .expect("the server's identity");
    let expect = Expect {
        system: row.get("system"),
        timeline: row.get("timeline"),
        started: row.get("started"),
    };
    let process = format!("p{p}");
    let lease = gen.interval.as_micros() as i64;
    let (renew_ms, check_ms) = (
        gen.periods.renew.as_millis().max(1) as u64,
        gen.periods.check.as_millis().max(1) as u64,
    );
    // Its leaders and its followers, each sorted by the phase of its period.
    let mut leads: Vec<(u32, Lead)> = Vec::new();
    let mut follows: Vec<(u32, u32)> = Vec::new();
    for i in 0..gen.flags {
        let h = splitmix(i as u64);
        if leader_of(i, gen.processes) == p {
            if gen.rows != Rows::Checks {
                let lead = Lead {
                    name: i as u32,
                    version: 1,
                    term: 1,
                };
                leads.push(((h % renew_ms) as u32, lead));
            }
        } else if gen.rows != Rows::Renews {
            follows.push((((h >> 20) % check_ms) as u32, i as u32));
        }
    }
    leads.sort_by_key(|l| l.0);
    follows.sort_by_key(|f| f.0);
    let lead_phases: Vec<u32> = leads.iter().map(|l| l.0).collect();
    let follow_phases: Vec<u32> = follows.iter().map(|f| f.0).collect();
    let single = match gen.batch {
        true => None,
        false => Some(
            client
                .prepare_typed(&statements.check, &CHECK_TYPES)
                .await
                .expect("prepare the check"),
        ),
    };
    // The processes' ticks are spread over a tick, as independent processes' are.
    let offset = gen.tick * p as u32 / gen.processes as u32;
    let mut from = 0u64;
    let mut k = 1u32;
    while !stop.load(Ordering::Relaxed) {
        let at = start + offset + gen.tick * k;
        tokio::time::sleep_until(at).await;
        let now = tokio::time::Instant::now();
        // A tick that came late takes everything due since the last one, as a batcher
        // takes what queued while its batch was in flight.
        k = ((now.duration_since(start + offset).as_nanos() / gen.tick.as_nanos()) as u32) + 1;
        let to = now.duration_since(start).as_millis() as u64;
        let lead_due = due(&lead_phases, from, to, renew_ms);
        let follow_due = due(&follow_phases, from, to, check_ms);
        from = to;
        if lead_due.is_empty() && follow_due.is_empty() {
            continue;
        }
        let sent = Instant::now();
        let mut s = Stats {
            renew_rows: lead_due.len() as u64,
            check_rows: follow_due.len() as u64,
            ..Stats::default()
        };
        match &single {
            None => {
                s.statements = 1;
                let names: Vec<&str> = lead_due
                    .iter()
                    .map(|&i| names[leads[i].1.name as usize].as_str())
                    .chain(
                        follow_due
                            .iter()
                            .map(|&i| names[follows[i].1 as usize].as_str()),
                    )
                    .collect();
                let n = names.len();
                let mut renew: Vec<Option<i64>> = Vec::with_capacity(n);
                let mut floor: Vec<i64> = Vec::with_capacity(n);
                let mut continues: Vec<Option<i64>> = Vec::with_capacity(n);
                for &i in &lead_due {
                    let l = &leads[i].1;
                    renew.push(Some(l.version));
                    floor.push(l.version + 1);
                    continues.push(Some(l.term));
                }
                renew.resize(n, None);
                floor.resize(n, 0);
                continues.resize(n, None);
                let yes = vec![true; n];
                let params: [(&(dyn ToSql + Sync), Type); 11] = [
                    (&names, Type::TEXT_ARRAY),
                    (&process, Type::TEXT),
                    (&renew, Type::INT8_ARRAY),
                    (&lease, Type::INT8),
                    (&floor, Type::INT8_ARRAY),
                    (&yes, Type::BOOL_ARRAY),
                    (&yes, Type::BOOL_ARRAY),
                    (&continues, Type::INT8_ARRAY),
                    (&expect.system, Type::TEXT),
                    (&expect.timeline, Type::INT4),
                    (&expect.started, Type::TIMESTAMPTZ),
                ];
                match client.query_typed(&batch_text, &params).await {
                    Ok(rows) => {
                        drop(names);
                        for (j, row) in rows.iter().enumerate() {
                            let (won, version, attempted): (bool, Option<i64>, bool) =
                                (row.get(1), row.get(4), row.get(12));
                            if !attempted {
                                s.skipped += 1;
                            }
                            if j < lead_due.len() {
                                match (won, version) {
                                    (true, Some(v)) => leads[lead_due[j]].1.version = v,
                                    _ => s.renews_lost += 1,
                                }
                            } else if won {
                                s.takeovers += 1;
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("p{p}: batch of {n}: {e}");
                        s.errors += 1;
                    }
                }
            }
            Some(check) => {
                let mut tasks = tokio::task::JoinSet::new();
                for (j, &i) in lead_due.iter().enumerate() {
                    let l = &leads[i].1;
                    let name = names[l.name as usize].clone();
                    let args = (name, Some(l.version), l.version + 1, Some(l.term));
                    tasks.spawn(single_check(
                        client.clone(),
                        check.clone(),
                        process.clone(),
                        lease,
                        expect.clone(),
                        args,
                        j,
                    ));
                }
                for &i in &follow_due {
                    let args = (names[follows[i].1 as usize].clone(), None, 0, None);
                    tasks.spawn(single_check(
                        client.clone(),
                        check.clone(),
                        process.clone(),
                        lease,
                        expect.clone(),
                        args,
                        usize::MAX,
                    ));
                }
                s.statements = (lead_due.len() + follow_due.len()) as u64;
                while let Some(done) = tasks.join_next().await {
                    match done {
                        Ok((j, Ok((won, version)))) if j != usize::MAX => match (won, version) {
                            (true, Some(v)) => leads[lead_due[j]].1.version = v,
                            _ => s.renews_lost += 1,
                        },
                        Ok((_, Ok((won, _)))) => s.takeovers += u64::from(won),
                        _ => s.errors += 1,
                    }
                }
            }
        }
        s.durations.push(sent.elapsed().as_secs_f64() * 1e3);
        stats.lock().unwrap().add(s);
    }
}

type SingleArgs = (String, Option<i64>, i64, Option<i64>);

async fn single_check(
    client: Arc<Client>,
    check: tokio_postgres::Statement,
    process: String,
    lease: i64,
    expect: Expect,
    (name, renew, floor, continues): SingleArgs,
    j: usize,
) -> (usize, Result<(bool, Option<i64>), tokio_postgres::Error>) {
    let r = client
        .query_one(
            &check,
            &[
                &name,
                &process,
                &renew,
                &lease,
                &floor,
                &true,
                &true,
                &continues,
                &expect.system,
                &expect.timeline,
                &expect.started,
            ],
        )
        .await
        .map(|row| (row.get::<_, bool>(0), row.get::<_, Option<i64>>(3)));
    (j, r)
}

/// Fills the table with `flags` rows, flag `i` held by `p<leader_of(i)>` at version 1, term 1,
/// with a lease written an hour ahead (so no row expires before its first renew; a renew
/// writes `now()`); vacuumed, analyzed and checkpointed.
pub(crate) fn fill(pg: &PgServer, flags: usize, processes: usize) {
    pg.psql("drop table if exists leadership_flags")
        .expect("drop");
    pg.psql(&crate::peers::table()).expect("create the table");
    pg.psql(&format!(
        "insert into leadership_flags (name, holder, version, \"timestamp\", term) \
         select 'flag-' || i, 'p' || (i % {processes}), 1, now() + interval '1 hour', 1 \
         from generate_series(0, {}) i",
        flags.saturating_sub(1)
    ))
    .expect("fill the table");
    pg.psql("vacuum analyze leadership_flags").expect("vacuum");
    pg.psql("checkpoint").expect("checkpoint");
}

/// One generator run on a filled table: warm-up, then the window.
fn generate(pg: &PgServer, gen: Gen, warmup: Duration, window: Duration) -> Outcome {
    fill(pg, gen.flags, gen.processes);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let gen = Arc::new(gen);
    let names: Arc<Vec<String>> = Arc::new((0..gen.flags).map(flag_name).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let stats: Vec<Arc<Mutex<Stats>>> = (0..gen.processes).map(|_| Arc::default()).collect();
    let start = runtime.block_on(async { tokio::time::Instant::now() });
    let tasks: Vec<_> = (0..gen.processes)
        .map(|p| {
            runtime.spawn(process(
                p,
                gen.clone(),
                names.clone(),
                conn_string(pg),
                start,
                stop.clone(),
                stats[p].clone(),
            ))
        })
        .collect();
    std::thread::sleep(warmup);
    for s in &stats {
        std::mem::take(&mut *s.lock().unwrap());
    }
    let (a, cpu_a) = (settle_and_read(pg), own_cpu());
    std::thread::sleep(window.saturating_sub(Duration::from_millis(1100)));
    let (b, cpu_b) = (settle_and_read(pg), own_cpu());
    let mut total = Stats::default();
    for s in &stats {
        total.add(std::mem::take(&mut *s.lock().unwrap()));
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    });
    runtime.shutdown_background();
    let r = rates(&a, &b);
    let records = match total.renew_rows {
        0 => String::new(),
        n => records(pg, &a, &b, n as f64),
    };
    Outcome {
        client_cpu: (cpu_b - cpu_a) / r.secs,
        r,
        records,
        stats: total,
    }
}

/// Whether a run fitted: server CPU within half the machine, every renew won, nothing taken
/// over, and at most 1 % of the statements over the timeout (the driver would have cancelled
/// them, failing every flag in them); else why not.
fn fits(o: &Outcome, budget: f64, timeout: Duration) -> Result<(), String> {
    let over = o
        .stats
        .durations
        .iter()
        .filter(|&&d| d > timeout.as_secs_f64() * 1e3)
        .count();
    let mut why = Vec::new();
    if o.r.cpu > budget {
        why.push(format!("server CPU {:.2} cores", o.r.cpu));
    }
    if o.stats.renews_lost + o.stats.takeovers > 0 {
        why.push(format!(
            "{} renews lost, {} takeovers",
            o.stats.renews_lost, o.stats.takeovers
        ));
    }
    if over * 100 > o.stats.durations.len() {
        why.push(format!(
            "{over} of {} statements over {timeout:?}",
            o.stats.durations.len()
        ));
    }
    if o.stats.errors > 0 {
        why.push(format!("{} errors", o.stats.errors));
    }
    match why.is_empty() {
        true => Ok(()),
        false => Err(why.join(", ")),
    }
}

/// `bench batch-load`: prints markdown.
pub(crate) fn run(options: &Options) {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let budget = cores / 2.0;
    let pg = durable_server(&options.config);
    let timeout = leadership_core::Config::builder("f", "p")
        .interval(options.interval)
        .build()
        .expect("the default settings")
        .timeout();
    let say = |text: &str| {
        print!("{text}");
        let _ = std::io::stdout().flush();
    };
    say(&format!(
        "## batch-load\n\nServer: {}\n\nMachine: {cores} cores (server, clients and anything else \
         running share them); 50 % of the machine = {budget:.1} cores of server CPU. Interval \
         {:?}, {} processes per flag, a statement's timeout {timeout:?} (the default at this \
         interval).\n",
        settings(&pg),
        options.interval,
        options.processes
    ));
    let sizes: Vec<usize> = options.explain.iter().copied().filter(|&n| n > 0).collect();
    if !sizes.is_empty() {
        say(&explain(&pg, &sizes, options.processes));
    }
    let measured: Option<Measured> = (options.sets > 0).then(|| {
        let m = cross_check(
            &pg,
            options.sets,
            options.processes,
            options.interval,
            options.warmup,
            options.window,
        );
        say(&format!("\n{}", m.text));
        m
    });
    // Without batches a renew never goes early: the simulator's schedule.
    let schedule = crate::cost::fleet::schedule(options.interval);
    let single_periods = Periods {
        renew: Duration::from_secs_f64(86_400.0 / schedule.leader),
        check: Duration::from_secs_f64(86_400.0 / schedule.follower),
    };
    let periods = measured.as_ref().map_or(single_periods, |m| m.periods);
    say(&format!(
        "\n### The generator: {} processes, each sending the rows due every tick (a tick that \
         comes late takes what fell due since the last), window {:?} after {:?}\n\n\
         Batched: a leader renews every {:.2} s and a follower checks every {:.2} s ({}); single \
         checks (batch off, no early renews): every {:.2} s and {:.2} s (the simulator's \
         schedule). A run fits when the server's CPU stays within {budget:.1} cores, every renew \
         wins, nothing is taken over, and at most 1 % of the statements take longer than the \
         timeout; each sweep stops at the first size that does not fit.\n\n\
         | flags | rows | statement | tick | statements/s | rows/s (renews + follower checks) | server CPU \
         (cores) | % of machine | server CPU µs per row | µs per statement | plan ms / exec ms \
         per statement | fdatasync/s | transaction IDs/s | WAL bytes/s | WAL bytes per renew | \
         statement ms: median / max | renews lost, takeovers, skipped, errors | client CPU \
         (cores) | fits |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        options.processes,
        options.window,
        options.warmup,
        periods.renew.as_secs_f64(),
        periods.check.as_secs_f64(),
        if measured.is_some() {
            "as the real sets did above"
        } else {
            "the simulator's schedule"
        },
        single_periods.renew.as_secs_f64(),
        single_periods.check.as_secs_f64(),
    ));
    let ticks: Vec<Duration> = options
        .ticks
        .iter()
        .map(|t| {
            t.0.unwrap_or_else(|| match &measured {
                Some(m) => {
                    Duration::from_secs_f64(options.processes as f64 / m.rates.statements.max(1e-3))
                        .min(Duration::from_secs(1))
                }
                None => Duration::from_secs(1),
            })
        })
        .collect();
    let gen = |flags, rows, batch, variant, tick| Gen {
        flags,
        processes: options.processes,
        interval: options.interval,
        tick,
        rows,
        batch,
        variant,
        periods: if batch { periods } else { single_periods },
    };
    let mut runs: Vec<(Gen, Outcome)> = Vec::new();
    let one = |g: Gen, runs: &mut Vec<(Gen, Outcome)>| -> bool {
        eprintln!(
            "generator: {} flags, {}, batch {}, {}, tick {}",
            g.flags,
            g.rows.label(),
            g.batch,
            g.variant.short(),
            ms(g.tick)
        );
        let o = generate(&pg, g.clone(), options.warmup, options.window);
        let fit = fits(&o, budget, timeout);
        say(&row(&g, &o, cores, &fit));
        let ok = fit.is_ok();
        runs.push((g, o));
        ok
    };
    let first = ticks.first().copied().unwrap_or(Duration::from_secs(1));
    for &n in options.single.iter().filter(|&&n| n > 0) {
        if !one(gen(n, Rows::Fleet, false, Variant::AsIs, first), &mut runs) {
            break;
        }
    }
    for &tick in &ticks {
        for &variant in &options.variants {
            for &n in options.split.iter().filter(|&&n| n > 0) {
                one(gen(n, Rows::Renews, true, variant, tick), &mut runs);
                one(gen(n, Rows::Checks, true, variant, tick), &mut runs);
            }
            for &n in options.flags.iter().filter(|&&n| n > 0) {
                if !one(gen(n, Rows::Fleet, true, variant, tick), &mut runs) {
                    break;
                }
            }
        }
    }
    say(&summary(
        &runs,
        measured.as_ref(),
        budget,
        timeout,
        periods,
        options.processes,
        &ticks,
    ));
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}

/// `196.55ms` as `197 ms`.
fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn row(gen: &Gen, o: &Outcome, cores: f64, fit: &Result<(), String>) -> String {
    let r = &o.r;
    let s = &o.stats;
    let secs = r.secs.max(1e-9);
    let rows = (s.renew_rows + s.check_rows) as f64 / secs;
    let d = s.durations.clone();
    let max = d.iter().copied().fold(f64::NAN, f64::max);
    format!(
        "| {} | {} | {} | {} | {:.1} | {} ({} + {}) | {:.3} | {:.1} % | {:.2} | {:.0} | {:.1} / {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.0} / {:.0} | {}, {}, {}, {} | {:.2} | {} |\n",
        thousands(gen.flags as f64),
        gen.rows.label(),
        if gen.batch { gen.variant.short() } else { "single checks (batch off)" },
        ms(gen.tick),
        r.statements,
        thousands(rows),
        thousands(s.renew_rows as f64 / secs),
        thousands(s.check_rows as f64 / secs),
        r.cpu,
        r.cpu / cores * 100.0,
        r.cpu * 1e6 / rows.max(1e-9),
        r.cpu * 1e6 / r.statements.max(1e-9),
        r.plan_ms,
        r.exec_ms,
        r.syncs,
        r.xids,
        thousands(r.wal),
        r.wal / (s.renew_rows as f64 / secs).max(1e-9),
        median(d),
        max,
        s.renews_lost,
        s.takeovers,
        s.skipped,
        s.errors,
        o.client_cpu,
        match fit {
            Ok(()) => "yes".to_string(),
            Err(why) => format!("no: {why}"),
        }
    )
}

/// The costs per row, and the flags one server sustains at half the machine.
fn summary(
    runs: &[(Gen, Outcome)],
    measured: Option<&Measured>,
    budget: f64,
    timeout: Duration,
    periods: Periods,
    processes: usize,
    ticks: &[Duration],
) -> String {
    let mut out = String::new();
    // Rows per flag per second: one leader's renews and the followers' checks.
    let renew_rate = 1.0 / periods.renew.as_secs_f64();
    let check_rate = (processes - 1) as f64 / periods.check.as_secs_f64();
    let _ = writeln!(
        out,
        "\n### The costs per row, and the ceiling\n\n\
         Per flag and second, batched: {renew_rate:.4} renew rows + {check_rate:.4} follower \
         rows ({processes} processes). Half the machine: {budget:.1} cores of server CPU.\n"
    );
    let variants: Vec<Variant> = runs
        .iter()
        .filter(|(g, _)| g.batch)
        .map(|(g, _)| g.variant)
        .fold(Vec::new(), |mut v, x| {
            if !v.contains(&x) {
                v.push(x);
            }
            v
        });
    for (tick, variant) in ticks
        .iter()
        .flat_map(|&t| variants.iter().map(move |&v| (t, v)))
    {
        let this = |g: &Gen| g.batch && g.variant == variant && g.tick == tick;
        let label = format!("{}, tick {}", variant.label(), ms(tick));
        let per_row = |rows: Rows| -> Option<(usize, f64)> {
            runs.iter()
                .filter(|(g, _)| g.rows == rows && this(g))
                .map(|(g, o)| {
                    let n = (o.stats.renew_rows + o.stats.check_rows) as f64 / o.r.secs;
                    (g.flags, o.r.cpu * 1e6 / n.max(1e-9))
                })
                .next_back()
        };
        if let (Some((n, renew_us)), Some((_, check_us))) =
            (per_row(Rows::Renews), per_row(Rows::Checks))
        {
            let per_flag = renew_rate * renew_us + check_rate * check_us;
            let _ = writeln!(
                out,
                "- {}: from the split runs at {} flags, {renew_us:.1} µs of server CPU per \
                 renew row and {check_us:.1} µs per follower row (each with its share of its \
                 statement's planning, commit and fdatasync at that size): {per_flag:.2} µs per \
                 flag and second, so about {} flags in {budget:.1} cores if the costs per row \
                 held at that size.",
                label,
                thousands(n as f64),
                thousands(budget * 1e6 / per_flag)
            );
        }
        if let Some((g, o)) = runs.iter().find(|(g, _)| g.rows == Rows::Renews && this(g)) {
            let _ = writeln!(
                out,
                "- {}: WAL records per renew row, renews alone at {} flags: {} ({:.0} % of the \
                 updates HOT).",
                label,
                thousands(g.flags as f64),
                o.records,
                o.r.hot / o.r.updated.max(1e-9) * 100.0
            );
        }
        let largest = runs
            .iter()
            .filter(|(g, o)| g.rows == Rows::Fleet && this(g) && fits(o, budget, timeout).is_ok())
            .map(|(g, _)| g.flags)
            .max();
        let _ = writeln!(
            out,
            "- {}: the largest fleet that fitted: {}.",
            label,
            largest.map_or("none".to_string(), |n| format!(
                "{} flags",
                thousands(n as f64)
            ))
        );
    }
    for (g, o) in runs.iter().filter(|(g, _)| !g.batch).take(1) {
        let _ = writeln!(
            out,
            "- Single checks at {} flags: WAL records per renew: {} ({:.0} % of the updates HOT).",
            thousands(g.flags as f64),
            o.records,
            o.r.hot / o.r.updated.max(1e-9) * 100.0
        );
    }
    let largest_single = runs
        .iter()
        .filter(|(g, o)| !g.batch && fits(o, budget, timeout).is_ok())
        .map(|(g, _)| g.flags)
        .max();
    let _ = writeln!(
        out,
        "- Single checks (batch off): the largest fleet that fitted: {}.",
        largest_single.map_or("none".to_string(), |n| format!(
            "{} flags",
            thousands(n as f64)
        ))
    );
    if let Some(m) = measured {
        if let Some((g, o)) = runs.iter().find(|(g, _)| {
            g.flags == m.flags
                && g.rows == Rows::Fleet
                && g.batch
                && g.variant == Variant::AsIs
                && Some(&g.tick) == ticks.first()
        }) {
            let rows = (o.stats.renew_rows + o.stats.check_rows) as f64 / o.r.secs;
            let _ = writeln!(
                out,
                "- Cross-check at {} flags: the real sets {:.1} µs of server CPU per row ({} \
                 rows/s in {:.1} statements/s), the generator {:.1} µs ({} rows/s in {:.1} \
                 statements/s).",
                thousands(g.flags as f64),
                m.rates.cpu * 1e6 / m.rates.rows.max(1e-9),
                thousands(m.rates.rows),
                m.rates.statements,
                o.r.cpu * 1e6 / rows.max(1e-9),
                thousands(rows),
                o.r.statements
            );
        }
    }
    out
}
