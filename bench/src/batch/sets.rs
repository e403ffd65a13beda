//! `bench batch-load`'s cross-check: real `FlagSet`s (batched, the core's default settings for
//! the interval), every process competing for every flag, each flag's leader in one of them;
//! what they cost the server per row, and how often a leader renewed and a follower checked
//! (the generator's periods).
//!
//! Each process is a child process (`bench batch-set-child`, hidden): a set of every flag
//! waits on a timer descriptor per flag (`boot_clock.rs`), more than one process may open
//! here (20,000). A child adds the flags it is to lead first, says so, adds the others when
//! told, and reports what it leads when asked.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use leadership_tokio::Flag;

use super::load::{flag_name, leader_of, Periods};
use super::process::{SetProcess, SetSettings};
use super::{conn_string, parse_duration, rates, settle_and_read, thousands, Rates};
use leadership_pgkit::pg::PgServer;

/// What the real sets did.
pub(crate) struct Measured {
    pub(crate) flags: usize,
    pub(crate) periods: Periods,
    pub(crate) rates: Rates,
    pub(crate) text: String,
}

/// `bench batch-set-child`'s options: one process of the cross-check.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ChildOptions {
    #[arg(long)]
    conn: String,
    #[arg(long)]
    process: usize,
    #[arg(long)]
    processes: usize,
    #[arg(long)]
    flags: usize,
    #[arg(long, value_parser = parse_duration)]
    interval: Duration,
}

/// One process of the cross-check: a set, its own flags first, the others on `add` (a line on
/// stdin), what it leads on `report`, exit (no release) at the end of stdin.
pub(crate) fn child(o: &ChildOptions) {
    let settings = SetSettings {
        conn: o.conn.clone(),
        interval: o.interval,
        timeout: None,
        batch: true,
    };
    let set = SetProcess::start(&settings, &format!("p{}", o.process));
    let _guard = set.runtime.enter();
    let add = |mine: bool| -> Vec<Flag> {
        (0..o.flags)
            .filter(|&i| (leader_of(i, o.processes) == o.process) == mine)
            .map(|i| set.set.add(flag_name(i)).expect("add a flag"))
            .collect()
    };
    let mine = add(true);
    let mut others = Vec::new();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "added");
    let _ = out.flush();
    for line in std::io::stdin().lines().map_while(Result::ok) {
        match line.trim() {
            "add" => {
                others = add(false);
                let _ = writeln!(out, "added");
            }
            _ => {
                let led = |f: &[Flag]| f.iter().filter(|f| f.is_raised()).count();
                let _ = writeln!(
                    out,
                    "{} {} {} {}",
                    led(&mine),
                    mine.len(),
                    led(&others),
                    others.len()
                );
            }
        }
        let _ = out.flush();
    }
    std::process::exit(0);
}

struct Kid {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Kid {
    fn say(&mut self, line: &str) -> String {
        let _ = writeln!(self.stdin, "{line}");
        let _ = self.stdin.flush();
        self.read()
    }

    fn read(&mut self) -> String {
        let mut s = String::new();
        let _ = self.stdout.read_line(&mut s);
        s.trim().to_string()
    }

    /// (mine raised, mine, others raised, others).
    fn report(&mut self) -> [usize; 4] {
        let s = self.say("report");
        let v: Vec<usize> = s
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        [0, 1, 2, 3].map(|i| v.get(i).copied().unwrap_or(0))
    }

    /// CPU seconds and resident MiB, from `/proc`.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let (_, rest) = s.rsplit_once(')')?;
                let f: Vec<f64> = rest
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0.0))
                    .collect();
                Some((f.get(11)? + f.get(12)?) / hz)
            })
            .unwrap_or(0.0);
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
                l.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .map_or(0.0, |k| k / 1024.0);
        (cpu, rss)
    }
}

/// `processes` child processes with a set of `flags` flags each. Each first adds the flags it is
/// to lead (`leader_of`) and waits until it leads them all; then every process adds the
/// others, which it follows.
pub(crate) fn cross_check(
    pg: &PgServer,
    flags: usize,
    processes: usize,
    interval: Duration,
    warmup: Duration,
    window: Duration,
) -> Measured {
    pg.psql("drop table if exists leadership_flags")
        .expect("drop");
    pg.psql(&crate::peers::table()).expect("create the table");
    let exe = std::env::current_exe().expect("this program");
    let t0 = Instant::now();
    let mut kids: Vec<Kid> = (0..processes)
        .map(|p| {
            let mut child = Command::new(&exe)
                .arg("batch-set-child")
                .args(["--conn", &conn_string(pg)])
                .args(["--process", &p.to_string()])
                .args(["--processes", &processes.to_string()])
                .args(["--flags", &flags.to_string()])
                .args(["--interval", &format!("{}ms", interval.as_millis())])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a child");
            let stdin = child.stdin.take().unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            Kid {
                child,
                stdin,
                stdout,
            }
        })
        .collect();
    for k in &mut kids {
        assert_eq!(k.read(), "added");
    }
    let until = Instant::now() + interval * 2;
    while !kids.iter_mut().all(|k| {
        let r = k.report();
        r[0] == r[1]
    }) {
        assert!(Instant::now() < until, "the leaders did not all raise");
        std::thread::sleep(Duration::from_millis(200));
    }
    let leading = t0.elapsed();
    for k in &mut kids {
        let _ = writeln!(k.stdin, "add");
        let _ = k.stdin.flush();
    }
    for k in &mut kids {
        assert_eq!(k.read(), "added");
    }
    let added = t0.elapsed();
    std::thread::sleep(warmup);
    let usage = |kids: &[Kid]| {
        kids.iter()
            .map(Kid::usage)
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (a, (cpu_a, _)) = (settle_and_read(pg), usage(&kids));
    std::thread::sleep(window.saturating_sub(Duration::from_millis(1100)));
    let (b, (cpu_b, rss)) = (settle_and_read(pg), usage(&kids));
    let r = rates(&a, &b);
    let client_cpu = (cpu_b - cpu_a) / r.secs;
    // Every flag led by its designated process, by each process's own belief.
    let (mut mine, mut others) = (0, 0);
    for k in &mut kids {
        let r = k.report();
        mine += r[1] - r[0];
        others += r[2];
    }
    for mut k in kids {
        // No release: the next run starts on a new table.
        let _ = k.child.kill();
        let _ = k.child.wait();
    }
    let follower_rows = (r.rows - r.updated).max(1e-9);
    let periods = Periods {
        renew: Duration::from_secs_f64(flags as f64 / r.updated.max(1e-9)),
        check: Duration::from_secs_f64((flags * (processes - 1)) as f64 / follower_rows),
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "### Cross-check: real `FlagSet`s, {processes} processes × {} flags (every process \
         competes for every flag: {} flag tasks), batched, the core's default settings at \
         {interval:?}\n\n\
         Each process is a child process with one set. It added the flags it was to lead first \
         (all led after {:.1} s), then the others (all added after {:.1} s); window {:?} after \
         {warmup:?}. The processes held {rss:.0} MiB in all and spent {client_cpu:.2} cores in \
         the window. At the end, flags of its own a process did not lead: {mine}; flags of \
         others it led: {others}.\n\n\
         | statements/s | rows/s | renews/s (rows updated) | rows per statement | server CPU \
         (cores) | server CPU µs per row | plan ms / exec ms per statement | fdatasync/s | \
         transaction IDs/s | WAL bytes/s | WAL bytes per renew | a leader renews every | a follower checks every |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {:.1} | {} | {} ({:.0} % HOT) | {:.0} | {:.3} | {:.2} | {:.1} / {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.2} s | {:.2} s |",
        thousands(flags as f64),
        thousands((flags * processes) as f64),
        leading.as_secs_f64(),
        added.as_secs_f64(),
        window,
        r.statements,
        thousands(r.rows),
        thousands(r.updated),
        r.hot / r.updated.max(1e-9) * 100.0,
        r.rows / r.statements.max(1e-9),
        r.cpu,
        r.cpu * 1e6 / r.rows.max(1e-9),
        r.plan_ms,
        r.exec_ms,
        r.syncs,
        r.xids,
        thousands(r.wal),
        r.wal / r.updated.max(1e-9),
        periods.renew.as_secs_f64(),
        periods.check.as_secs_f64()
    );
    Measured {
        flags,
        periods,
        rates: r,
        text,
    }
}
